"""Capabilities: agents found and addressed by what they can do, on any transport.

An instance serves a capability by registering a handler for it::

    @mesh.capability("optimize.route", input=RouteRequest, group="route-optimizers")
    async def optimize(request: RouteRequest, ctx: Context) -> RouteChoice: ...

    reply = await mesh.request("optimize.route", {"order": "o-7"}, timeout=30)

How it works, with no infrastructure beyond the transport:

* **Registry.** Every instance announces its capabilities (name, version, input JSON
  Schema, output event types, group, tags, instance) on the ``mesh.registry`` channel
  when it starts and every ``heartbeat`` seconds; every instance listens (broadcast)
  and keeps a directory whose entries expire ``ttl`` seconds (default 3 heartbeats)
  after the last announcement. A starting instance also publishes a resync request,
  which every live instance answers with an announcement, so it sees the registry
  within one round trip. A graceful stop publishes a leave notice.
* **Requests** are ordinary events (auditable, retried, dead-lettered like any other):
  ``mesh.request.<capability>`` on the channel of that name, consumed by the
  capability's group (one member handles each), carrying the caller's instance in
  the ``meshreplyto`` extension. The caller validates the data against the announced
  input schema first (`ContractViolation`, nothing sent) and fails fast with
  `NoProvider` when no live instance serves the name.
* **Replies** go to the caller's reply channel, ``Transport.reply_channel(instance)``:
  a subject per instance on NATS, an exclusive queue per instance on RabbitMQ, one
  shared topic filtered by instance on Kafka. A reply's ``causationid`` is the
  request id; the caller waits on that event, not on a connection. A handler that
  fails for good sends a ``mesh.reply.error`` reply (raised as `RemoteError`) and its
  request goes to the dead-letter channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel

from mesh.context import Context, child_extensions, current_event
from mesh.contracts import SchemaSource, schema_of
from mesh.delivery import RetryPolicy
from mesh.errors import (
    ConfigError,
    ContractViolation,
    MeshError,
    NoProvider,
    RemoteError,
    RequestTimeout,
)
from mesh.event import Event
from mesh.handlers import handler_params
from mesh.transport import Delivery, Subscription

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.subscriptions import SubscriptionHandle

log = logging.getLogger("mesh.capabilities")

REGISTRY_CHANNEL = "mesh.registry"
ANNOUNCE_TYPE = "mesh.registry.announce"
RESYNC_TYPE = "mesh.registry.resync"
LEAVE_TYPE = "mesh.registry.leave"
REQUEST_PREFIX = "mesh.request."
REPLY_PREFIX = "mesh.reply."
REPLY_ERROR_TYPE = "mesh.reply.error"
REPLY_TO = "meshreplyto"

__all__ = [
    "Capability",
    "CapabilityDirectory",
    "from_a2a_skill",
    "from_mcp_tool",
    "to_a2a_skill",
    "to_mcp_tool",
]


@dataclass(frozen=True)
class Capability:
    """What one instance can do, as announced on the registry channel."""

    name: str
    group: str
    version: str = "1.0.0"
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=dict)
    output_types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    instance: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_types"], data["tags"] = list(self.output_types), list(self.tags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capability:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["output_types"] = tuple(known.get("output_types") or ())
        known["tags"] = tuple(known.get("tags") or ())
        return cls(**known)


def to_a2a_skill(capability: Capability) -> dict[str, Any]:
    """An A2A AgentSkill describing ``capability`` (A2A skills carry no input schema:
    it travels under ``x-mesh`` so `from_a2a_skill` can restore it)."""
    return {
        "id": capability.name,
        "name": capability.name,
        "description": capability.description,
        "tags": list(capability.tags),
        "inputModes": ["application/json"],
        "outputModes": ["application/json"],
        "x-mesh": {
            "version": capability.version,
            "group": capability.group,
            "inputSchema": capability.input_schema,
            "outputTypes": list(capability.output_types),
        },
    }


def from_a2a_skill(skill: Mapping[str, Any], *, group: str | None = None) -> Capability:
    """A capability from an A2A AgentSkill (``group`` defaults to ``cap.<id>``)."""
    extra = skill.get("x-mesh") or {}
    name = str(skill.get("id") or skill["name"])
    return Capability(
        name=name,
        group=group or extra.get("group") or f"cap.{name}",
        version=str(extra.get("version", "1.0.0")),
        description=str(skill.get("description", "")),
        input_schema=dict(extra.get("inputSchema") or {}),
        output_types=tuple(extra.get("outputTypes") or ()),
        tags=tuple(skill.get("tags") or ()),
    )


def to_mcp_tool(capability: Capability) -> dict[str, Any]:
    """An MCP tool description (name, description, inputSchema)."""
    return {
        "name": capability.name,
        "description": capability.description,
        "inputSchema": capability.input_schema or {"type": "object"},
    }


def from_mcp_tool(tool: Mapping[str, Any], *, group: str | None = None) -> Capability:
    """A capability from an MCP tool description."""
    name = str(tool["name"])
    return Capability(
        name=name,
        group=group or f"cap.{name}",
        description=str(tool.get("description", "")),
        input_schema=dict(tool.get("inputSchema") or {}),
    )


class CapabilityDirectory:
    """The live registry: capabilities by instance, each expiring ``ttl`` after its
    instance's last announcement."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, list[Capability]]] = {}
        self.changed = asyncio.Event()

    def update(self, instance: str, capabilities: list[Capability], ttl: float) -> None:
        self._entries[instance] = (time.monotonic() + ttl, capabilities)
        self.changed.set()

    def remove(self, instance: str) -> None:
        if self._entries.pop(instance, None) is not None:
            self.changed.set()

    def live(self) -> list[Capability]:
        now = time.monotonic()
        for instance in [i for i, (until, _) in self._entries.items() if until < now]:
            del self._entries[instance]
        return sorted(
            (cap for _, caps in self._entries.values() for cap in caps),
            key=lambda c: (c.name, c.instance),
        )

    def expires_in(self, instance: str) -> float:
        until = self._entries.get(instance, (0.0, []))[0]
        return max(0.0, until - time.monotonic())

    def providers(self, name: str) -> list[Capability]:
        return [cap for cap in self.live() if cap.name == name]


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def input_errors(capability: Capability, data: Any) -> list[str]:
    """Validation errors of ``data`` against the capability's input schema (cached)."""
    if not capability.input_schema:
        return []
    validator = _validator(json.dumps(capability.input_schema, sort_keys=True))
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(data)
    )


Handler = Callable[..., Awaitable[Any]]


def _capability_call(handler: Handler, where: str) -> Callable[[Any, Context], Awaitable[Any]]:
    """``handler`` as ``call(request, ctx)``: it may take ``(request, ctx)`` or
    ``(request)``; anything else is a `ConfigError` at registration."""
    label = getattr(handler, "__qualname__", repr(handler))
    params = handler_params(handler, f"{where}: handler {label}", "(request) or (request, ctx)")
    if len(params) == 2:
        return handler
    return lambda request, ctx: handler(request)


class Capabilities:
    """The capability machinery of one Mesh (``mesh.capability``/``request``/
    ``capabilities`` delegate here)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.directory = CapabilityDirectory()
        self.local: dict[str, Capability] = {}
        self._pending: dict[str, asyncio.Future[Event]] = {}
        self._subs: list[Subscription] = []
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._handles: dict[str, SubscriptionHandle] = {}  # the subscription of each served name
        self._live = False  # between start() and stop(): announcements go out
        self._announcing = asyncio.Lock()  # one announcement at a time, each the latest list

    @property
    def heartbeat(self) -> float:
        return self.mesh.config.capabilities.heartbeat

    @property
    def ttl(self) -> float:
        return self.mesh.config.capabilities.ttl or 3 * self.heartbeat

    # --- serving ------------------------------------------------------------------------

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        input: SchemaSource | None,
        group: str | None,
        version: str,
        description: str | None,
        output: Sequence[str],
        tags: Sequence[str],
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
        log_failure: bool = True,
    ) -> tuple[Capability, SubscriptionHandle]:
        """Check and record capability ``name`` with its handler on ``mesh.request.<name>``
        (every problem is a `ConfigError` here, with nothing registered). On a started
        mesh the handler subscribes at once and the capability is announced when it is
        live (the handle's ``ready()``); see `Mesh.add_capability`."""
        where = f"capability {name!r}"
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a capability name must be a non-empty string, got {name!r}")
        if name in self.local:
            raise ConfigError(
                f"capability {name!r} is registered twice in this app"
                + ("; remove_capability() it first" if self.mesh.started else "")
            )
        call = _capability_call(handler, where)
        policy = self.mesh._policy.resolve(retry, max_deliveries=max_deliveries, where=where)
        model = input if isinstance(input, type) and issubclass(input, BaseModel) else None
        capability = Capability(
            name=name,
            group=group or f"cap.{name}",
            version=version,
            description=description
            if description is not None
            else (handler.__doc__ or "").strip().split("\n")[0],
            input_schema=schema_of(input) if input is not None else {},
            output_types=tuple(output),
            tags=tuple(tags),
            instance=self.mesh.instance_id,
            source=self.mesh.source,
        )

        async def serve(event: Event, ctx: Context) -> None:
            await self._serve(capability, model, call, policy, event, ctx)

        serve.__name__ = f"capability:{name}"
        make = self.mesh._prepare(
            where,
            REQUEST_PREFIX + name,
            None,
            group=capability.group,
            name=f"capability:{name}",
            max_in_flight=None,
            idempotent=None,
            batch=None,
            retry=policy,
            max_deliveries=None,
        )
        handle = self.mesh._add(make(serve), log_failure=log_failure, after=self.announce_now)
        self.local[name] = capability
        self._handles[name] = handle
        return capability, handle

    def handle(self, name: str) -> SubscriptionHandle:
        """The subscription serving capability ``name``, or `ConfigError` listing them."""
        try:
            return self._handles[name]
        except KeyError:
            raise ConfigError(
                f"this app does not serve capability {name!r}; it serves: "
                f"{', '.join(sorted(self._handles)) or 'none'}"
            ) from None

    def serves(self, handle: SubscriptionHandle) -> bool:
        """Whether ``handle`` is the subscription of one of this app's capabilities."""
        return any(served is handle for served in self._handles.values())

    def forget(self, handle: SubscriptionHandle) -> bool:
        """Drop the capability ``handle`` serves (if it serves one) from this instance's
        list; True when it did. `announce_now` then tells the peers."""
        for name, served in self._handles.items():
            if served is handle:
                del self._handles[name]
                self.local.pop(name, None)
                return True
        return False

    async def _serve(
        self,
        capability: Capability,
        model: type[BaseModel] | None,
        call: Callable[[Any, Context], Awaitable[Any]],
        policy: RetryPolicy,
        event: Event,
        ctx: Context,
    ) -> None:
        try:
            problems = input_errors(capability, event.data)
            if problems:
                raise ContractViolation(
                    f"request data violates the input schema of "
                    f"{capability.name}: " + "; ".join(problems),
                    problems,
                )
            argument: Any = model.model_validate(event.data) if model is not None else event
            result = await call(argument, ctx)
        except Exception as exc:  # tell the caller only when the mesh gives up on it
            if policy.gives_up(exc, ctx.attempt):
                await self._reply(
                    event,
                    ctx,
                    REPLY_ERROR_TYPE,
                    {
                        "capability": capability.name,
                        "error_type": type(exc).__name__,
                        "message": str(exc)[:2000],
                    },
                )
            raise
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        await self._reply(event, ctx, REPLY_PREFIX + capability.name, result)

    async def _reply(self, request: Event, ctx: Context, reply_type: str, data: Any) -> None:
        reply_to = request.extensions.get(REPLY_TO)
        if not reply_to:
            log.warning("request %s has no %s extension; no reply sent", request.id, REPLY_TO)
            return
        await ctx.emit(
            reply_type,
            data,
            channel=self.mesh.transport.reply_channel(str(reply_to)),
            **{REPLY_TO: reply_to},
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> list[Subscription]:
        """Subscribe to the registry and this instance's replies, announce, resync."""
        transport = self.mesh.transport
        self._subs = [
            await transport.subscribe(REGISTRY_CHANNEL, self._on_registry, max_in_flight=4),
            await transport.subscribe(
                transport.reply_channel(self.mesh.instance_id), self._on_reply, max_in_flight=16
            ),
        ]
        self._live = True
        await self._announce()
        await self._publish(RESYNC_TYPE, {"instance": self.mesh.instance_id})
        self._heartbeat_task = asyncio.create_task(self._beat(), name="mesh-heartbeat")
        asyncio.get_running_loop().call_later(
            self.mesh.config.capabilities.resync_wait, self._synced.set
        )
        return self._subs

    async def stop(self, deregister: bool = True) -> None:
        async with self._announcing:  # an announcement being written lands before the LEAVE
            was_live, self._live = self._live, False
        deregister = deregister and was_live
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
            self._heartbeat_task = None
        if deregister:
            with contextlib.suppress(MeshError):
                await self._publish(LEAVE_TYPE, {"instance": self.mesh.instance_id})
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RequestTimeout("the mesh stopped before a reply came"))
        self._pending.clear()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._announce()
            except MeshError as exc:
                log.warning("capability heartbeat failed: %s", exc)

    async def announce_now(self) -> None:
        """Publish this instance's current list at once (a capability added or removed
        at runtime): peers replace their entry for it when they receive it, without
        waiting for the next heartbeat. A no-op unless the registry is running."""
        if self._live:
            await self._announce()

    async def _announce(self) -> None:
        """Announce the list as it is when the announcement is written: one at a time,
        so a slower earlier one never lands after a newer one (the registry events of
        one instance share a partition key, so brokers keep their order too)."""
        async with self._announcing:
            if not self._live:  # stopped while this one waited: no announcement after LEAVE
                return
            # only what is subscribed: a request must never reach a name before its group
            capabilities = [cap for name, cap in self.local.items() if self._handles[name].live]
            self.directory.update(self.mesh.instance_id, capabilities, self.ttl)
            await self._publish(
                ANNOUNCE_TYPE,
                {
                    "instance": self.mesh.instance_id,
                    "source": self.mesh.source,
                    "ttl": self.ttl,
                    "capabilities": [cap.to_dict() for cap in capabilities],
                },
            )

    async def _publish(self, event_type: str, data: Any) -> None:
        await self.mesh.transport.publish(
            REGISTRY_CHANNEL,
            Event(
                event_type,
                self.mesh.source,
                data,
                extensions={"partitionkey": self.mesh.instance_id},
            ),
        )

    async def _on_registry(self, delivery: Delivery) -> None:
        try:
            event = delivery.event
            data = event.data if isinstance(event.data, dict) else {}
            instance = str(data.get("instance", ""))
            if event.type == ANNOUNCE_TYPE and instance:
                caps = [Capability.from_dict(c) for c in data.get("capabilities") or []]
                self.directory.update(instance, caps, float(data.get("ttl") or self.ttl))
                self._synced.set()
            elif event.type == RESYNC_TYPE and instance != self.mesh.instance_id:
                await self._announce()  # a no-op once stopping (see _announce)
            elif event.type == LEAVE_TYPE:
                self.directory.remove(instance)
        except (MeshError, TypeError, ValueError, KeyError) as exc:
            log.warning("ignoring a malformed registry event: %s", exc)
        await delivery.ack()

    async def _on_reply(self, delivery: Delivery) -> None:
        try:
            event = delivery.event
        except MeshError:
            await delivery.ack()
            return
        future = self._pending.get(str(event.causationid))
        if (
            event.extensions.get(REPLY_TO) == self.mesh.instance_id
            and future is not None
            and not future.done()
        ):
            future.set_result(event)
        await delivery.ack()

    # --- calling ------------------------------------------------------------------------

    async def request(self, name: str, data: Any, timeout: float) -> Event:
        """See `mesh.Mesh.request`."""
        if not self._synced.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._synced.wait(), self.mesh.config.capabilities.resync_wait
                )
        providers = self.directory.providers(name)
        if not providers:
            names = sorted({cap.name for cap in self.directory.live()})
            raise NoProvider(name, difflib.get_close_matches(name, names, n=3, cutoff=0.5))
        capability = max(providers, key=lambda c: _version_key(c.version))
        problems = input_errors(capability, data)
        if problems:
            raise ContractViolation(
                f"request data for {name} violates its input schema "
                f"(nothing was sent): " + "; ".join(problems),
                problems,
            )
        parent = current_event()
        extensions: dict[str, Any] = child_extensions(parent) if parent is not None else {}
        extensions[REPLY_TO] = self.mesh.instance_id
        request = Event(
            REQUEST_PREFIX + name,
            self.mesh.source,
            data,
            id=str(uuid.uuid4()),
            extensions=extensions,
        )
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            await self.mesh.publish(request)
            try:
                reply = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise RequestTimeout(
                    f"no reply from capability {name!r} within {timeout:g}s "
                    f"(request {request.id}); it may still be handled"
                ) from None
        finally:
            self._pending.pop(request.id, None)
        if reply.type == REPLY_ERROR_TYPE:
            body = reply.data if isinstance(reply.data, dict) else {}
            raise RemoteError(
                name, str(body.get("error_type", "Error")), str(body.get("message", ""))
            )
        return reply


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)
