"""The CloudEvents 1.0 event every part of the mesh passes around.

`Event` is immutable (so one instance can be handed to many subscribers of an
in-process transport without copies) and validated on construction, so an
invalid event is rejected at the publisher rather than at some consumer.

It also implements the cloudevents SDK 2.x ``BaseCloudEvent`` protocol
(``get_attributes()``, ``get_data()``, ...), which lets the SDK's protocol
bindings encode it directly; see ``mesh.codec``.

It is a plain slotted class rather than a pydantic model: events are created on
every hop of every message, and construction cost is on the hot path.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from mesh.errors import InvalidEvent

SPECVERSION = "1.0"

#: Context attributes defined by CloudEvents 1.0 (not extensions).
CONTEXT_ATTRIBUTES = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}
)
_RESERVED = CONTEXT_ATTRIBUTES | {"data", "data_base64"}
_EXT_NAME = re.compile(r"[a-z0-9]{1,20}")
_INT32 = (-(2**31), 2**31 - 1)

#: Extensions the mesh itself sets and reads.
MESH_EXTENSIONS = ("correlationid", "causationid", "traceparent", "tracestate", "partitionkey",
                   "meshhops")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _utcnow() -> datetime:
    return datetime.now(UTC)


_ID_POOL = 256  # ids per os.urandom call


class _Ids(threading.local):
    """Random (version 4) UUID strings, as ``str(uuid.uuid4())`` makes them at a third
    of its cost: one ``os.urandom`` call per 256 ids instead of one each, and no
    `uuid.UUID` object. One pool per thread (no lock, no id handed out twice); a
    forked child starts a new pool, so processes never share one."""

    def __init__(self) -> None:
        self.hex, self.pos = "", 0

    def reset(self) -> None:
        self.hex, self.pos = "", 0

    def next(self) -> str:
        pos, h = self.pos, self.hex
        if pos == len(h):
            self.hex = h = os.urandom(16 * _ID_POOL).hex()
            pos = 0
        self.pos = pos + 32
        # version nibble 4; variant bits 10 (one of 8, 9, a, b)
        return (f"{h[pos:pos + 8]}-{h[pos + 8:pos + 12]}-4{h[pos + 13:pos + 16]}-"
                f"{'89ab89ab89ab89ab'[int(h[pos + 16], 16)]}{h[pos + 17:pos + 20]}-"
                f"{h[pos + 20:pos + 32]}")


_ids = _Ids()
new_id = _ids.next
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.reset)


def parse_time(value: Any) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or offset) into an aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidEvent("attribute 'time' must be timezone-aware (use datetime.now(UTC))")
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise InvalidEvent(f"attribute 'time' must be an RFC 3339 timestamp with offset, got {value!r}")


def format_time(value: datetime) -> str:
    """Render an aware datetime as RFC 3339, with ``Z`` for UTC."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _check_str(name: str, value: Any, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise InvalidEvent(f"attribute '{name}' is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"attribute '{name}' must be a non-empty string, got {value!r}")
    return value


def _check_extensions(extensions: Mapping[str, Any]) -> Mapping[str, Any]:
    for name, value in extensions.items():
        if name in _RESERVED or not _EXT_NAME.fullmatch(name):
            raise InvalidEvent(
                f"extension name {name!r} is invalid: CloudEvents extension names are 1-20 "
                "lower-case letters or digits and must not be a context attribute name"
            )
        if isinstance(value, (bool, str)):
            continue
        if isinstance(value, int):
            if not _INT32[0] <= value <= _INT32[1]:
                raise InvalidEvent(f"extension {name!r} is outside the 32-bit Integer range")
            continue
        if isinstance(value, datetime):
            parse_time(value)
            continue
        raise InvalidEvent(
            f"extension {name!r} has type {type(value).__name__}; use str, int, bool or "
            "datetime (encode Binary values as base64 strings)"
        )
    return MappingProxyType(dict(extensions))


class Event:
    """An immutable CloudEvents 1.0 event.

    ``Event(type="order.placed", source="/shop", data={"id": 1})`` fills ``id``
    (a UUID4) and ``time`` (now, UTC) when not given. ``data`` is any JSON value, or
    ``bytes`` (then ``datacontenttype`` defaults to application/octet-stream).
    ``Event(attributes_dict, data)`` (the cloudevents SDK's constructor shape) builds
    one from wire attributes.
    Use `replace` to derive a changed copy.
    """

    __slots__ = ("_view", "data", "datacontenttype", "dataschema", "extensions", "id",
                 "source", "specversion", "subject", "time", "type")

    id: str
    source: str
    type: str
    specversion: str
    datacontenttype: str | None
    dataschema: str | None
    subject: str | None
    time: datetime | None
    data: Any
    extensions: Mapping[str, Any]
    _view: Mapping[str, Any] | None

    def __init__(
        self,
        type: str,
        source: str,
        data: Any = None,
        *,
        id: str | None = None,
        specversion: str = SPECVERSION,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        subject: str | None = None,
        time: datetime | str | None = None,
        extensions: Mapping[str, Any] | None = None,
        **more_extensions: Any,
    ) -> None:
        attributes: Any = type
        if attributes.__class__ is dict:  # the SDK protocol's constructor: (attributes, data)
            built = Event.from_attributes(attributes, source)
            for slot in Event.__slots__[1:]:
                object.__setattr__(self, slot, getattr(built, slot))
            object.__setattr__(self, "_view", None)
            return
        if specversion != SPECVERSION:
            raise InvalidEvent(f"specversion must be '1.0', got {specversion!r}")
        if datacontenttype is None and isinstance(data, (bytes, bytearray)):
            datacontenttype = "application/octet-stream"
        ext: Mapping[str, Any]
        if more_extensions:
            ext = _check_extensions({**(extensions or {}), **more_extensions})
        elif extensions:
            ext = _check_extensions(extensions)
        else:
            ext = _EMPTY
        setter = object.__setattr__
        setter(self, "type", _check_str("type", type, required=True))
        setter(self, "source", _check_str("source", source, required=True))
        setter(self, "id", _check_str("id", id, required=True) if id is not None
               else new_id())
        setter(self, "specversion", specversion)
        setter(self, "datacontenttype", _check_str("datacontenttype", datacontenttype,
                                                   required=False))
        setter(self, "dataschema", _check_str("dataschema", dataschema, required=False))
        setter(self, "subject", _check_str("subject", subject, required=False))
        setter(self, "time", _utcnow() if time is None else parse_time(time))
        setter(self, "data", bytes(data) if isinstance(data, bytearray) else data)
        setter(self, "extensions", ext)
        setter(self, "_view", None)

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any], data: Any = None) -> Event:
        """Build an event from a flat attribute map (context attributes plus extensions).

        This is the ``EventFactory`` shape the cloudevents SDK bindings call. Unlike
        the constructor it never invents ``id`` or ``time``: what was on the wire is
        what you get. Known mesh extensions are converted back to their types.
        """
        attrs = dict(attributes)
        try:
            event_id = attrs.pop("id")
            etype = attrs.pop("type")
            source = attrs.pop("source")
        except KeyError as exc:
            raise InvalidEvent(f"attribute {exc.args[0]!r} is required") from None
        time = attrs.pop("time", None)
        specversion = attrs.pop("specversion", None)
        if specversion is None:
            raise InvalidEvent("attribute 'specversion' is required")
        hops = attrs.get("meshhops")
        if isinstance(hops, str):
            try:
                attrs["meshhops"] = int(hops)
            except ValueError:
                raise InvalidEvent(f"extension 'meshhops' must be an integer, got {hops!r}") \
                    from None
        event = cls(etype, source, data, id=event_id, specversion=specversion,
                    datacontenttype=attrs.pop("datacontenttype", None),
                    dataschema=attrs.pop("dataschema", None),
                    subject=attrs.pop("subject", None), time=time, extensions=attrs)
        if time is None:  # absent on the wire stays absent
            object.__setattr__(event, "time", None)
        return event

    # --- immutability -----------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Event is immutable; use event.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Event is immutable")

    def replace(self, **changes: Any) -> Event:
        """Return a copy with ``changes`` applied.

        Keys are attribute names, ``data``, ``extensions`` (replaces them all), or
        extension names (set one; ``None`` removes it).
        """
        ext = dict(changes.pop("extensions", self.extensions))
        fields = {
            "type": self.type, "source": self.source, "data": self.data, "id": self.id,
            "datacontenttype": self.datacontenttype, "dataschema": self.dataschema,
            "subject": self.subject, "time": self.time,
        }
        for key, value in changes.items():
            if key in fields:
                fields[key] = value
            elif value is None:
                ext.pop(key, None)
            else:
                ext[key] = value
        keep_no_time = fields["time"] is None
        event = Event(fields.pop("type"), fields.pop("source"), fields.pop("data"),
                      extensions=ext, **fields)
        if keep_no_time:
            object.__setattr__(event, "time", None)
        return event

    # --- the extensions the mesh uses -------------------------------------------------

    @property
    def correlationid(self) -> str | None:
        """Id shared by every event of one conversation (correlation extension)."""
        value = self.extensions.get("correlationid")
        return None if value is None else str(value)

    @property
    def causationid(self) -> str | None:
        """Id of the event whose handling caused this one."""
        value = self.extensions.get("causationid")
        return None if value is None else str(value)

    @property
    def traceparent(self) -> str | None:
        """W3C trace context (distributed-tracing extension)."""
        value = self.extensions.get("traceparent")
        return None if value is None else str(value)

    @property
    def partitionkey(self) -> str | None:
        """Ordering key: events with the same key are handled in publish order."""
        value = self.extensions.get("partitionkey")
        return None if value is None else str(value)

    @property
    def meshhops(self) -> int:
        """How many handler hops produced this event (0 for an event published from outside)."""
        value = self.extensions.get("meshhops", 0)
        return int(value)

    # --- cloudevents SDK BaseCloudEvent protocol -----------------------------------

    def get_id(self) -> str:
        return self.id

    def get_source(self) -> str:
        return self.source

    def get_type(self) -> str:
        return self.type

    def get_specversion(self) -> str:
        return self.specversion

    def get_datacontenttype(self) -> str | None:
        return self.datacontenttype

    def get_dataschema(self) -> str | None:
        return self.dataschema

    def get_subject(self) -> str | None:
        return self.subject

    def get_time(self) -> datetime | None:
        return self.time

    def get_extension(self, extension_name: str) -> Any:
        return self.extensions.get(extension_name)

    def get_data(self) -> Any:
        return self.data

    @property
    def attributes(self) -> Mapping[str, Any]:
        """Context attributes and extensions as one read-only mapping (computed once;
        what filters and CESQL read)."""
        view = self._view
        if view is None:
            view = MappingProxyType(self.get_attributes())
            object.__setattr__(self, "_view", view)
        return view

    def get_attributes(self) -> dict[str, Any]:
        """Context attributes and extensions in one flat dict (absent ones left out);
        a new dict on each call (the SDK protocol lets callers modify it)."""
        attrs: dict[str, Any] = {"id": self.id, "source": self.source, "type": self.type,
                                 "specversion": self.specversion}
        if self.datacontenttype is not None:
            attrs["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            attrs["dataschema"] = self.dataschema
        if self.subject is not None:
            attrs["subject"] = self.subject
        if self.time is not None:
            attrs["time"] = self.time
        attrs.update(self.extensions)
        return attrs

    # --- value semantics ---------------------------------------------------------------

    def _key(self) -> tuple[Any, ...]:
        return (self.id, self.source, self.type, self.specversion, self.datacontenttype,
                self.dataschema, self.subject, self.time, self.data,
                tuple(sorted(self.extensions.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.source, self.id))

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        yield from self.get_attributes().items()

    def __repr__(self) -> str:
        return f"Event(type={self.type!r}, source={self.source!r}, id={self.id!r})"

