"""An AsyncAPI 3.0 document of a mesh app, built from what the app registered.

::

    from mesh.asyncapi import asyncapi_document
    doc = asyncapi_document(mesh, title="Supply chain")    # a JSON-ready dict
    # or: mesh docs app.py -o asyncapi.yaml --format yaml

Agents here never call each other, so "the API" of an app is the set of events it
takes and gives. That is already written down in code: ``@mesh.on`` handlers (their
channel patterns, group and filter, and the pydantic model a handler takes),
``mesh.capability`` (request/reply with an input schema) and ``mesh.contract`` (a
JSON Schema per event type). This module turns exactly that into a standard
document, so that teams, catalogues and code generators can use AsyncAPI tooling
instead of reading Python. It is a pure function of the app (no I/O, no broker):
it runs in CI and in ``mesh docs`` before anything is deployed, and the same app
gives the same document.

The mapping (see docs/asyncapi.md):

* ``servers``: the transport URL with every credential and the query removed; the
  protocol, its version and the broker's title are what the transport declares
  (`mesh.WireFormat`, found by URL scheme without connecting).
* ``channels``: one per channel pattern a handler subscribes to (the address is the
  mesh pattern itself: ``*`` one token, ``>`` the rest), one per contracted event
  type and capability output type, ``mesh.request.<capability>``, the reply
  channel, the registry channel, and the dead-letter channel.
* ``operations``: ``receive`` per handler and pattern (group, filter and delivery
  settings under ``x-mesh``), ``send`` per contracted or capability output type,
  ``receive`` with a ``reply`` per capability, and the registry's send/receive.
* ``components.messages``: one message per event type, its payload from the
  contract, else from a handler's pydantic model, else any JSON; headers describe
  the CloudEvents binary content mode of the app's transport (its header prefix and
  binding, from its `mesh.WireFormat`). Pydantic ``$defs``
  become ``components.schemas`` (so ``$ref`` resolves inside the document).
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from mesh.capabilities import (
    ANNOUNCE_TYPE,
    LEAVE_TYPE,
    REGISTRY_CHANNEL,
    REPLY_ERROR_TYPE,
    REPLY_PREFIX,
    REPLY_TO,
    REQUEST_PREFIX,
    RESYNC_TYPE,
    Capability,
)
from mesh import plugins
from mesh.dlq import DL_ERROR, DL_EXTENSIONS, DL_REASON
from mesh.routing.routes import ROUTER_GROUP, Forward, apply_routes
from mesh.transport import WireFormat, is_wildcard, pattern_matcher

if TYPE_CHECKING:
    from mesh.app import HandlerSpec, Mesh

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
CONTENT_TYPE = "application/json"
#: The message used where nothing is known about an event's type or data.
GENERIC_MESSAGE = "CloudEvent"
#: Component names must match this (the AsyncAPI 3.0 components key pattern).
_KEY_UNSAFE = re.compile(r"[^\w.\-]", re.ASCII)

# CloudEvents context attributes and the extensions the mesh sets, as binary-mode headers.
_CE_ATTRIBUTES: dict[str, tuple[dict[str, Any], str]] = {
    "specversion": ({"type": "string", "const": "1.0"}, "CloudEvents version"),
    "id": (
        {"type": "string", "minLength": 1},
        "event id; events a handler emits get ids derived from the input event's id",
    ),
    "source": ({"type": "string", "minLength": 1}, "the emitting app (URI-reference)"),
    "type": ({"type": "string", "minLength": 1}, "event type; also the channel"),
    "time": ({"type": "string", "format": "date-time"}, "RFC 3339 timestamp"),
    "subject": ({"type": "string"}, "subject of the event within the source"),
    "dataschema": (
        {"type": "string", "format": "uri"},
        "URI of the data contract the data was validated against",
    ),
    "correlationid": ({"type": "string"}, "the conversation (first event's id)"),
    "causationid": ({"type": "string"}, "id of the event this one was emitted for"),
    "traceparent": ({"type": "string"}, "W3C trace context"),
    "tracestate": ({"type": "string"}, "W3C trace context"),
    "partitionkey": ({"type": "string"}, "ordering key"),
    "dataref": ({"type": "string"}, "claim-check reference: the data is stored elsewhere"),
    "expirytime": ({"type": "string", "format": "date-time"}, "drop after this time"),
    "meshhops": (
        {"type": "string", "pattern": "^[0-9]+$"},
        "hop counter; past the hop limit the event is dead-lettered",
    ),
}
_CE_REQUIRED = ("specversion", "id", "source", "type")


def asyncapi_document(
    mesh: Mesh, *, title: str | None = None, version: str = "1.0.0"
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``mesh`` (JSON-ready; see the module docstring).

    ``version`` is the version of *your* API (``info.version``), not of AsyncAPI.
    Nothing is started or contacted: registrations, contracts and configuration are
    all the document needs.
    """
    return _Builder(mesh).build(title or f"{mesh.source} (event-mesh app)", version)


# --- helpers -------------------------------------------------------------------------------


def _key(text: str) -> str:
    """A component/channel key from an event type or pattern (``*``/``>`` spelled out)."""
    tokens = ["_any" if t == "*" else "_rest" if t == ">" else t for t in text.split(".")]
    return _KEY_UNSAFE.sub("_", ".".join(tokens)) or "_"


def _handler_model(func: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model a handler takes as its first parameter (as `mesh.app` sees it)."""
    try:
        params = list(inspect.signature(func).parameters.values())
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: the app itself reports those
        return None
    model = hints.get(params[0].name) if params else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _wire_format(mesh: Mesh) -> WireFormat:
    """What the configured transport puts on the wire, found without connecting: the
    mesh's own transport object when it serves the configured scheme, else the
    installed transport registered for the scheme, else the defaults (``ce-`` headers,
    the scheme as protocol)."""
    url, options = mesh.config.transport_url, mesh.config.transport_options
    scheme = url.partition("://")[0].lower()
    own = type(mesh.transport)
    if scheme in own.schemes:
        return own.wire_format(url, options)
    registry = plugins.transport_registry()
    if scheme in registry.schemes:
        return registry.wire_format(url, options)
    return WireFormat()


@dataclass
class _Channel:
    address: str | None
    description: str
    messages: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class _Builder:
    """Collects channels, operations, messages and schemas, then assembles the document."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.scheme = mesh.config.transport_url.partition("://")[0].lower()
        self.wire = _wire_format(mesh)
        self.prefix = self.wire.header_prefix
        self.channels: dict[str, _Channel] = {}
        self._channel_ids: dict[str, str] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {}
        self._schema_origin: dict[str, str] = {}
        self.capabilities = sorted(mesh.served_capabilities(), key=lambda c: c.name)
        self.contracts = {c.type: c for c in mesh.contracts}

    # --- assembly ---------------------------------------------------------------------

    def build(self, title: str, version: str) -> dict[str, Any]:
        self.schemas["CloudEventHeaders"] = self._headers_schema()
        self._origin_lock("CloudEventHeaders")
        capability_handlers = {f"capability:{c.name}" for c in self.capabilities}
        routed = apply_routes(self.mesh.config.routes, self.mesh.handlers)
        for spec in routed.handlers:
            if spec.name not in capability_handlers:
                self._handler(spec)
        for forward in routed.forwards:
            self._forward_route(forward)
        for capability in self.capabilities:
            self._capability(capability)
        self._sends()
        if self.mesh.config.capabilities.enabled:
            self._registry()
        if self.mesh.handlers:
            self._dead_letter_send()
        document: dict[str, Any] = {
            "asyncapi": ASYNCAPI_VERSION,
            "info": self._info(title, version),
            "servers": self._servers(),
            "defaultContentType": CONTENT_TYPE,
            "channels": {
                cid: self._channel_object(cid, ch) for cid, ch in sorted(self.channels.items())
            },
            "operations": dict(sorted(self.operations.items())),
            "components": {
                "messages": dict(sorted(self.messages.items())),
                "schemas": dict(sorted(self.schemas.items())),
            },
        }
        return document

    def _info(self, title: str, version: str) -> dict[str, Any]:
        actions = [operation["action"] for operation in self.operations.values()]
        counts = (
            f"{actions.count('receive')} receive and {actions.count('send')} send "
            f"operation(s), {len(self.capabilities)} capability(ies), "
            f"{len(self.contracts)} data contract(s)"
        )
        return {
            "title": title,
            "version": version,
            "description": (
                f"Events of the event-mesh app `{self.mesh.source}`: {counts}. Every message "
                "is a CloudEvents 1.0 event in binary content mode (attributes in headers, "
                "data in the body); structured mode is accepted on input. Channels are "
                "event types; `*` in an address matches one dot-separated token and `>` "
                "one or more trailing tokens. Generated from the app's handlers, "
                "capabilities and contracts by `mesh docs`."
            ),
            "x-mesh": {"source": self.mesh.source, "generator": "event-mesh"},
        }

    def _servers(self) -> dict[str, Any]:
        """The transport as a server, with no credential: user info and query dropped
        (a NATS token or ``?password=`` would otherwise leak into published docs)."""
        url = self.mesh.config.transport_url
        rest = url.partition("://")[2]
        netloc, _, path = re.split(r"[?#]", rest, maxsplit=1)[0].partition("/")
        host = netloc.rpartition("@")[2]
        if not host:
            try:
                host = urlsplit(url).hostname or ""
            except ValueError:
                host = ""
        wire = self.wire
        server: dict[str, Any] = {
            "host": host or "localhost",
            "protocol": wire.protocol or self.scheme or "unknown",
            "title": wire.title or f"{self.scheme} transport",
        }
        if wire.protocol_version:
            server["protocolVersion"] = wire.protocol_version
        if path.strip("/"):
            server["pathname"] = "/" + path.strip("/")
        if wire.description:
            server["description"] = wire.description
        return {_key(self.scheme or "default"): server}

    def _channel_object(self, cid: str, channel: _Channel) -> dict[str, Any]:
        obj: dict[str, Any] = {"address": channel.address, "description": channel.description}
        if channel.messages:
            obj["messages"] = {
                mid: {"$ref": f"#/components/messages/{mid}"} for mid in channel.messages
            }
        obj.update(channel.extra)
        return obj

    # --- channels and messages --------------------------------------------------------

    def _channel(self, address: str, description: str) -> str:
        """The id of the channel at ``address`` (created on first use)."""
        if address in self._channel_ids:
            return self._channel_ids[address]
        cid = base = _key(address)
        n = 2
        while cid in self.channels:
            cid, n = f"{base}-{n}", n + 1
        self._channel_ids[address] = cid
        wildcard = is_wildcard(address)
        self.channels[cid] = _Channel(
            address,
            description + (" The address is a channel pattern." if wildcard else ""),
            extra={"x-mesh": {"pattern": True}} if wildcard else {},
        )
        return cid

    def _attach(self, cid: str, mid: str) -> dict[str, str]:
        """Put message ``mid`` on channel ``cid``; the reference an operation uses."""
        channel = self.channels[cid]
        if mid not in channel.messages:
            channel.messages.append(mid)
        return {"$ref": f"#/channels/{cid}/messages/{mid}"}

    def _type_message(self, event_type: str, model: type[BaseModel] | None = None) -> str:
        """The message of ``event_type``: contract first, else a handler's model, else any
        data. A contract is what producers are held to, so it wins over a consumer's view."""
        mid = base = _key(event_type)
        n = 2
        while mid in self.messages:
            if self.messages[mid].get("x-mesh", {}).get("eventType") == event_type:
                return mid
            mid, n = f"{base}-{n}", n + 1
        contract = self.contracts.get(event_type)
        extra: dict[str, Any] = {"eventType": event_type}
        if contract is not None:
            payload = self._adopt(contract.schema, event_type)
            versions = [c.version for c in self.mesh.contracts.versions(event_type)]
            extra.update(
                dataschema=contract.uri, contractVersion=contract.version, contractVersions=versions
            )
            description = (
                f"Data contract {contract.uri} (v{contract.version}): publishers "
                "validate before sending (ContractViolation, nothing sent); "
                "consumers validate again and dead-letter what does not fit."
            )
            header_consts = {"type": event_type, "dataschema": contract.uri}
        elif model is not None:
            payload = self._adopt(model.model_json_schema(), model.__name__)
            extra["model"] = model.__name__
            description = (
                f"Data as the handler's model {model.__name__} expects it (no "
                "contract registered: producers are not checked)."
            )
            header_consts = {"type": event_type}
        else:
            payload = {"description": "any JSON value (no contract or model describes it)"}
            description = "No contract or model describes this event's data."
            header_consts = {"type": event_type}
        self.messages[mid] = self._message(
            event_type, payload, description, header_consts, extra=extra
        )
        return mid

    def _model_message(self, model: type[BaseModel]) -> str:
        """A message for a model a wildcard handler takes (the type is not fixed)."""
        mid = base = _key(model.__name__)
        n = 2
        while (
            mid in self.messages
            and self.messages[mid].get("x-mesh", {}).get("model")
            != f"{model.__module__}.{model.__qualname__}"
        ):
            mid, n = f"{base}-{n}", n + 1
        if mid not in self.messages:
            self.messages[mid] = self._message(
                model.__name__,
                self._adopt(model.model_json_schema(), model.__name__),
                f"Data validated against {model.__name__} by the receiving handler.",
                {},
                extra={"model": f"{model.__module__}.{model.__qualname__}"},
            )
        return mid

    def _generic_message(self) -> str:
        if GENERIC_MESSAGE not in self.messages:
            self.messages[GENERIC_MESSAGE] = self._message(
                GENERIC_MESSAGE,
                {"description": "any JSON value"},
                "Any CloudEvent on a channel pattern; its type is in the type header.",
                {},
            )
        return GENERIC_MESSAGE

    def _message(
        self,
        name: str,
        payload: Any,
        description: str,
        header_consts: Mapping[str, str],
        *,
        required: Iterable[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        headers: dict[str, Any] = {"$ref": "#/components/schemas/CloudEventHeaders"}
        if header_consts or required:
            headers = {
                "allOf": [
                    headers,
                    {
                        "type": "object",
                        "properties": {
                            self.prefix + k: {"type": "string", "const": v}
                            for k, v in header_consts.items()
                        },
                        **({"required": [self.prefix + r for r in required]} if required else {}),
                    },
                ]
            }
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "contentType": CONTENT_TYPE,
            "description": description,
            "headers": headers,
            "payload": payload,
            "correlationId": {
                "description": "correlationid extension: every event of one conversation "
                "carries the id of the event that started it",
                "location": f"$message.header#/{self.prefix}correlationid",
            },
        }
        meta = {"eventType": header_consts["type"]} if "type" in header_consts else {}
        meta.update(extra or {})
        if meta:
            message["x-mesh"] = meta
        return message

    def _headers_schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for name, (schema, description) in _CE_ATTRIBUTES.items():
            properties[self.prefix + name] = {**schema, "description": description}
        properties[self.prefix + REPLY_TO] = {
            "type": "string",
            "description": "on capability requests and replies: the "
            "instance that waits for the reply",
        }
        return {
            "type": "object",
            "description": "CloudEvents 1.0 binary content mode, "
            + (self.wire.binding or f"`{self.prefix}` headers")
            + "; `datacontenttype` travels as the message content type. "
            "Values are strings on the wire.",
            "properties": properties,
            "required": [self.prefix + name for name in _CE_REQUIRED],
        }

    # --- schemas ----------------------------------------------------------------------

    def _origin_lock(self, name: str) -> None:
        self._schema_origin[name] = f"\x00reserved:{name}"

    def _reserve(self, name: str, original: Any) -> str:
        """A components.schemas name for ``original`` (reused when identical)."""
        base = _key(name)
        origin = _json_key(original)
        candidate, n = base, 2
        while candidate in self._schema_origin and self._schema_origin[candidate] != origin:
            candidate, n = f"{base}_{n}", n + 1
        self._schema_origin[candidate] = origin
        return candidate

    def _adopt(self, schema: Mapping[str, Any], name: str) -> Any:
        """``schema`` made valid inside the document: ``$defs``/``definitions`` move to
        ``components.schemas`` with their ``$ref`` rewritten; a schema that refers to its
        own root moves there whole. ``$id``/``$schema`` are dropped, since an ``$id``
        would re-base the rewritten references (the contract URI stays in ``x-mesh``)."""
        root = copy.deepcopy(dict(schema))
        root.pop("$id", None)
        root.pop("$schema", None)
        defs: dict[tuple[str, str], Any] = {}
        for keyword in ("$defs", "definitions"):
            block = root.pop(keyword, None)
            if isinstance(block, Mapping):
                defs.update({(keyword, str(n)): s for n, s in block.items()})
        names = {key: self._reserve(key[1], s) for key, s in defs.items()}
        root_name: list[str] = []

        def ref(target: str) -> str:
            for keyword in ("$defs", "definitions"):
                prefix = f"#/{keyword}/"
                if target.startswith(prefix):
                    head, sep, rest = target[len(prefix) :].partition("/")
                    head = head.replace("~1", "/").replace("~0", "~")
                    if (keyword, head) in names:
                        return f"#/components/schemas/{names[keyword, head]}{sep}{rest}"
            if not root_name:
                root_name.append(self._reserve(name, schema))
            return f"#/components/schemas/{root_name[0]}{target[1:]}"

        def rewrite(node: Any) -> Any:
            if isinstance(node, Mapping):
                return {
                    k: ref(v)
                    if k == "$ref" and isinstance(v, str) and v.startswith("#")
                    else rewrite(v)
                    for k, v in node.items()
                }
            if isinstance(node, list):
                return [rewrite(item) for item in node]
            return node

        for key, sub in defs.items():
            adopted = rewrite(sub)
            if isinstance(adopted, dict):
                adopted.pop("$id", None)
                adopted.pop("$schema", None)
            self.schemas[names[key]] = adopted
        payload = rewrite(root)
        if root_name:
            self.schemas[root_name[0]] = payload
            return {"$ref": f"#/components/schemas/{root_name[0]}"}
        return payload

    # --- handlers ---------------------------------------------------------------------

    def _handler(self, spec: HandlerSpec) -> None:
        model = _handler_model(spec.func)
        for index, pattern in enumerate(spec.patterns):
            if spec.dead_letters:
                cid = self._dead_letter_channel()
                mids = [self._dead_letter_message()]
            else:
                cid = self._channel(
                    pattern,
                    "Events of this type."
                    if not is_wildcard(pattern)
                    else "Events whose type matches the pattern.",
                )
                mids = self._messages_for(pattern, model)
            op_id = _key(
                f"receive.{spec.name}"
                if spec.group is None
                else f"receive.{spec.group}.{spec.name}"
            )
            if len(spec.patterns) > 1:
                op_id = f"{op_id}.{index + 1}"
            delivery = (
                f"Consumer group `{spec.group}`: each event goes to one member of the "
                "group across every running instance (competing consumers)."
                if spec.group is not None
                else "No group: a broadcast subscriber; every running instance receives "
                "every event."
            )
            parts = [f"Handler `{spec.name}`.", delivery]
            if spec.filter is not None:
                parts.append(
                    "Filter (the broker matches the channel, the rest is checked in "
                    f"the client; rejected events are acked unseen): "
                    f"`{_json_key(spec.filter)}`."
                )
            if model is not None:
                parts.append(
                    f"Data is validated against `{model.__name__}`; events that do "
                    "not fit are dead-lettered, never retried."
                )
            x_mesh: dict[str, Any] = {
                "handler": spec.name,
                "group": spec.group,
                "pattern": pattern,
                "filter": spec.filter,
                "maxInFlight": spec.max_in_flight,
                "idempotent": spec.idempotent,
                "deadLetters": spec.dead_letters,
            }
            if model is not None:
                x_mesh["model"] = model.__name__
            self.operations[self._op_id(op_id)] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"{spec.name} ({'group ' + spec.group if spec.group else 'broadcast'})",
                "description": " ".join(parts),
                "messages": [self._attach(cid, mid) for mid in mids],
                "x-mesh": x_mesh,
            }

    def _op_id(self, base: str) -> str:
        op_id, n = base, 2
        while op_id in self.operations:
            op_id, n = f"{base}-{n}", n + 1
        return op_id

    def _messages_for(self, pattern: str, model: type[BaseModel] | None) -> list[str]:
        if not is_wildcard(pattern):
            return [self._type_message(self.mesh.channel_for(pattern), model)]
        matches = pattern_matcher(pattern)
        mids = [self._type_message(t) for t in sorted(self.contracts) if matches(t)]
        mids.append(self._model_message(model) if model is not None else self._generic_message())
        return mids

    def _forward_route(self, forward: Forward) -> None:
        """A route with ``to``: the internal ``mesh.routes`` group republishes matches."""
        route = forward.route
        for index, pattern in enumerate(forward.patterns):
            cid = self._channel(
                pattern,
                "Events whose type matches the pattern."
                if is_wildcard(pattern)
                else "Events of this type.",
            )
            self.operations[self._op_id(_key(f"route.{route.name}.receive.{index + 1}"))] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"route {route.name} (group {ROUTER_GROUP})",
                "description": f"Config route `{route.name}`: events matching "
                f"`{_json_key(route.filter)}` are republished to `{forward.to}`.",
                "messages": [self._attach(cid, m) for m in self._messages_for(pattern, None)],
                "x-mesh": {
                    "route": route.name,
                    "group": ROUTER_GROUP,
                    "filter": route.filter,
                    "to": forward.to,
                },
            }
        cid = self._channel(forward.to, "Events republished by a config route.")
        self.operations[self._op_id(_key(f"route.{route.name}.send"))] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"route {route.name} republishes here",
            "messages": [self._attach(cid, self._generic_message())],
            "x-mesh": {"route": route.name},
        }

    # --- capabilities -------------------------------------------------------------------

    def _reply_channel(self) -> str:
        """The reply channel as the transport names it: per instance (a parameter whose
        value is the ``meshreplyto`` header) or one shared channel (Kafka)."""
        address = "mesh.reply"
        if address in self._channel_ids:
            return self._channel_ids[address]
        transport = self.mesh.transport
        templated = transport.reply_channel("{instance}")
        parameters: dict[str, Any] = {}
        if "{instance}" in templated:
            channel_address: str | None = templated
            parameters["instance"] = {
                "description": "the requesting instance (its reply channel)",
                "location": f"$message.header#/{self.prefix}{REPLY_TO}",
            }
            how = "one channel per requesting instance"
        elif templated == transport.reply_channel("another-instance"):
            channel_address = templated
            how = (
                "one channel shared by every instance; each keeps the replies whose "
                f"`{REPLY_TO}` header names it"
            )
        else:
            channel_address = None
            how = "one channel per requesting instance, named by the transport"
        self._channel_ids[address] = "mesh.reply"
        self.channels["mesh.reply"] = _Channel(
            channel_address,
            f"Capability replies ({how}). A reply's `causationid` is the request's id; the "
            "caller waits on that, not on a connection.",
            extra={"parameters": parameters} if parameters else {},
        )
        return "mesh.reply"

    def _capability(self, capability: Capability) -> None:
        request_type = REQUEST_PREFIX + capability.name
        cid = self._channel(request_type, f"Requests for capability `{capability.name}`.")
        mid = _key(request_type)
        if capability.input_schema:
            payload = self._adopt(capability.input_schema, f"{capability.name}.input")
        else:
            payload = {"description": "any JSON value (the capability declares no input schema)"}
        self.messages[mid] = self._message(
            request_type,
            payload,
            f"A request for `{capability.name}` v{capability.version}. `mesh.request` "
            "validates the data against the input schema before sending (ContractViolation, "
            "nothing sent); the provider validates again.",
            {"type": request_type},
            required=[REPLY_TO],
            extra={"capability": capability.name, "version": capability.version},
        )
        reply_cid = self._reply_channel()
        reply_type = REPLY_PREFIX + capability.name
        reply_mid = _key(reply_type)
        self.messages[reply_mid] = self._message(
            reply_type,
            {"description": "what the capability's handler returned (any JSON)"},
            f"The successful reply of `{capability.name}`.",
            {"type": reply_type},
            required=["causationid", REPLY_TO],
            extra={"capability": capability.name},
        )
        error_mid = self._reply_error_message()
        x_mesh = {
            "capability": capability.name,
            "version": capability.version,
            "group": capability.group,
            "tags": list(capability.tags),
            "outputTypes": list(capability.output_types),
        }
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": capability.description or f"capability {capability.name}",
            "description": (
                f"Capability `{capability.name}` v{capability.version}, served by consumer "
                f"group `{capability.group}` (one member handles each request). Callers use "
                f'`mesh.request("{capability.name}", data)`; the reply goes to the caller\'s '
                "reply channel. A handler that fails for good replies `mesh.reply.error` "
                "(RemoteError at the caller) and its request is dead-lettered."
            ),
            "messages": [self._attach(cid, mid)],
            "reply": {
                "channel": {"$ref": f"#/channels/{reply_cid}"},
                "messages": [
                    self._attach(reply_cid, reply_mid),
                    self._attach(reply_cid, error_mid),
                ],
            },
            "x-mesh": x_mesh,
        }
        if capability.tags:
            operation["tags"] = [{"name": tag} for tag in capability.tags]
        self.operations[self._op_id(_key(f"capability.{capability.name}"))] = operation

    def _reply_error_message(self) -> str:
        mid = _key(REPLY_ERROR_TYPE)
        if mid not in self.messages:
            self.messages[mid] = self._message(
                REPLY_ERROR_TYPE,
                {
                    "type": "object",
                    "required": ["capability", "error_type", "message"],
                    "properties": {
                        "capability": {"type": "string"},
                        "error_type": {
                            "type": "string",
                            "description": "the exception class of the failure",
                        },
                        "message": {"type": "string", "maxLength": 2000},
                    },
                },
                "The provider's handler failed for good; raised as RemoteError.",
                {"type": REPLY_ERROR_TYPE},
                required=["causationid", REPLY_TO],
            )
        return mid

    def _sends(self) -> None:
        """A send operation per contracted type and per capability output type."""
        why: dict[str, list[str]] = {}
        for event_type in self.contracts:
            why.setdefault(event_type, []).append("contract")
        for capability in self.capabilities:
            for event_type in capability.output_types:
                why.setdefault(event_type, []).append(f"output of {capability.name}")
        for event_type, reasons in sorted(why.items()):
            cid = self._channel(self.mesh.channel_for(event_type), "Events of this type.")
            mid = self._type_message(event_type)
            contracted = "contract" in reasons
            self.operations[self._op_id(_key(f"send.{event_type}"))] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"publish {event_type}",
                "description": (
                    f"The app publishes `{event_type}` ({', '.join(reasons)})."
                    + (
                        " Its data is validated against the contract first and "
                        "the event gets `dataschema`."
                        if contracted
                        else ""
                    )
                ),
                "messages": [self._attach(cid, mid)],
                "x-mesh": {"eventType": event_type, "reasons": reasons},
            }

    # --- mesh-internal channels --------------------------------------------------------

    def _registry(self) -> None:
        self.schemas["Capability"] = {
            "type": "object",
            "required": ["name", "group"],
            "properties": {
                "name": {"type": "string"},
                "group": {"type": "string"},
                "version": {"type": "string"},
                "description": {"type": "string"},
                "input_schema": {"type": "object"},
                "output_types": {"type": "array", "items": {"type": "string"}},
                "tags": {"type": "array", "items": {"type": "string"}},
                "instance": {"type": "string"},
                "source": {"type": "string"},
            },
        }
        self._origin_lock("Capability")
        cid = self._channel(
            REGISTRY_CHANNEL,
            (
                "The capability registry: every instance announces its capabilities at start "
                "and every heartbeat, asks for a resync when it starts, and says when it leaves; "
                "entries expire a TTL after the last announcement."
            ),
        )
        instance = {
            "type": "object",
            "required": ["instance"],
            "properties": {"instance": {"type": "string"}},
        }
        bodies = {
            ANNOUNCE_TYPE: (
                {
                    "type": "object",
                    "required": ["instance", "capabilities"],
                    "properties": {
                        "instance": {"type": "string"},
                        "source": {"type": "string"},
                        "ttl": {"type": "number", "description": "seconds the entry stays live"},
                        "capabilities": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Capability"},
                        },
                    },
                },
                "What an instance serves; sent at start, every heartbeat, and in "
                "answer to a resync.",
            ),
            RESYNC_TYPE: (instance, "A starting instance asks every live one to announce."),
            LEAVE_TYPE: (instance, "An instance stopped gracefully; drop its entries."),
        }
        refs = []
        for event_type, (payload, description) in bodies.items():
            mid = _key(event_type)
            self.messages[mid] = self._message(
                event_type, payload, description, {"type": event_type}
            )
            refs.append(self._attach(cid, mid))
        common = {"channel": {"$ref": f"#/channels/{cid}"}, "messages": refs}
        self.operations[self._op_id("registry.send")] = {
            "action": "send",
            **common,
            "summary": "announce, resync, leave",
            "x-mesh": {"heartbeat": self.mesh.config.capabilities.heartbeat},
        }
        self.operations[self._op_id("registry.receive")] = {
            "action": "receive",
            **common,
            "summary": "keep the live registry (broadcast: every instance gets every entry)",
        }

    def _dead_letter_channel(self) -> str:
        return self._channel(
            self.mesh.config.dead_letter_channel,
            (
                "Dead letters: copies of events a handler could not process (after the retries, "
                "or at once for contract violations, hop-limit and undecodable messages), with "
                "the reason in `meshdl*` headers. `mesh dlq list` / `mesh dlq replay` use it."
            ),
        )

    def _dead_letter_message(self) -> str:
        mid = "DeadLetter"
        if mid not in self.messages:
            message = self._message(
                "DeadLetter",
                {"description": "the original event's data, unchanged"},
                "A dead-letter copy: original type and data, fresh id, and why.",
                {},
            )
            message["headers"] = {
                "allOf": [
                    message["headers"],
                    {
                        "type": "object",
                        "properties": {
                            self.prefix + name: {"type": "string"} for name in DL_EXTENSIONS
                        },
                        "required": [self.prefix + DL_ERROR, self.prefix + DL_REASON],
                    },
                ]
            }
            self.messages[mid] = message
        return mid

    def _dead_letter_send(self) -> None:
        cid = self._dead_letter_channel()
        self.operations[self._op_id("deadletter.send")] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": "dead-letter events handlers gave up on",
            "messages": [self._attach(cid, self._dead_letter_message())],
        }
