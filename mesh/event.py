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
from time import time as _wallclock
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
MESH_EXTENSIONS = (
    "correlationid",
    "causationid",
    "traceparent",
    "tracestate",
    "partitionkey",
    "meshhops",
)

#: Mesh extensions that are counters: a non-negative integer on every transport (binary
#: modes carry them as strings; decoding turns them back into ints, strictly).
COUNTER_EXTENSIONS = frozenset({"meshhops", "meshdlattempts"})
#: Other mesh extensions with a type of their own, restored the same way when decoded.
FLAG_EXTENSIONS = frozenset({"meshdlreduced"})
TIME_EXTENSIONS = frozenset({"meshdltime"})
_TYPED = (*sorted(COUNTER_EXTENSIONS), *sorted(FLAG_EXTENSIONS), *sorted(TIME_EXTENSIONS))
_COUNTER_TEXT = re.compile(r"[0-9]{1,10}")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


_fromtimestamp = datetime.fromtimestamp


_ID_POOL = 256  # ids per os.urandom call
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: version nibble 4
_VARIANT_RFC = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: variant bits 10


def _fresh_ids(count: int = _ID_POOL) -> list[str]:
    """``count`` random (version 4) UUID strings, formatted as ``str(uuid.uuid4())``,
    from one ``os.urandom`` call and a few C-level passes over the whole pool (no
    per-id Python formatting)."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_RFC)
    # 'xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-' per id (40 chars); the 8-4-4-4-12
    # layout drops the dashes at 4, 29 and 34, and the one at 39 separates ids
    text = bytearray(raw.hex("-", 2), "ascii")
    text.append(0x2D)
    text[4::40] = text[29::40] = text[34::40] = b"_" * count
    text[39::40] = b" " * count
    return text.replace(b"_", b"").decode("ascii").split()


class _Ids(threading.local):
    """Random (version 4) UUID strings, as ``str(uuid.uuid4())`` makes them at a fraction
    of its cost: one ``os.urandom`` call per 256 ids instead of one each, formatted in
    bulk, and no `uuid.UUID` object. One pool per thread (no lock, no id handed out
    twice); a forked child starts a new pool, so processes never share one."""

    def __init__(self) -> None:
        self.pool: list[str] = []

    def reset(self) -> None:
        self.pool = []

    def next(self) -> str:
        pool = self.pool
        if not pool:
            pool = self.pool = _fresh_ids()
        return pool.pop()


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


def _counter(name: str, value: Any) -> int:
    """A mesh counter extension as an int; `InvalidEvent` unless it is a non-negative
    integer (or its decimal digits, as binary content modes carry it). A forged negative
    or garbled ``meshhops`` would otherwise defeat loop protection."""
    if isinstance(value, str) and _COUNTER_TEXT.fullmatch(value):
        value = int(value)
    if value.__class__ is not int or not 0 <= value <= _INT32[1]:
        raise InvalidEvent(f"extension {name!r} must be a non-negative integer, got {value!r}")
    return int(value)


def _typed(name: str, value: Any) -> Any:
    """A decoded mesh extension as its own type (see `COUNTER_EXTENSIONS`)."""
    if name in COUNTER_EXTENSIONS:
        return _counter(name, value)
    if name in FLAG_EXTENSIONS:
        if not (value is True or value is False or value in ("true", "false")):
            raise InvalidEvent(f"extension {name!r} must be a boolean, got {value!r}")
        return value is True or value == "true"
    return parse_time(value)


def _check_extensions(extensions: Mapping[str, Any]) -> Mapping[str, Any]:
    checked = dict(extensions)
    for name, value in checked.items():
        if name in COUNTER_EXTENSIONS:
            checked[name] = _counter(name, value)  # same keys: safe while iterating
            continue
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
    return MappingProxyType(checked)


class Event:
    """An immutable CloudEvents 1.0 event.

    ``Event(type="order.placed", source="/shop", data={"id": 1})`` fills ``id``
    (a UUID4) and ``time`` (now, UTC) when not given. ``data`` is any JSON value, or
    ``bytes`` (then ``datacontenttype`` defaults to application/octet-stream).
    ``Event(attributes_dict, data)`` (the cloudevents SDK's constructor shape) builds
    one from wire attributes.
    Use `replace` to derive a changed copy.
    """

    __slots__ = (
        "_time",
        "_view",
        "data",
        "datacontenttype",
        "dataschema",
        "extensions",
        "id",
        "source",
        "specversion",
        "subject",
        "type",
    )

    id: str
    source: str
    type: str
    specversion: str
    datacontenttype: str | None
    dataschema: str | None
    subject: str | None
    data: Any
    extensions: Mapping[str, Any]
    _time: datetime | float | None  # a float: the creation instant, made a datetime when read
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
            for slot in Event.__slots__:
                object.__setattr__(self, slot, None if slot == "_view" else getattr(built, slot))
            return
        if specversion != SPECVERSION:
            raise InvalidEvent(f"specversion must be '1.0', got {specversion!r}")
        ext: Mapping[str, Any]
        if more_extensions:
            ext = _check_extensions({**(extensions or {}), **more_extensions})
        elif extensions:
            ext = _check_extensions(extensions)
        else:
            ext = _EMPTY
        # the checks of _check_str, inlined for the common case (a non-empty str)
        if type.__class__ is not str or not type:
            _check_str("type", type, required=True)
        if source.__class__ is not str or not source:
            _check_str("source", source, required=True)
        if id is None:
            pool = _ids.pool
            id = pool.pop() if pool else new_id()
        elif id.__class__ is not str or not id:
            _check_str("id", id, required=True)
        if datacontenttype is None:
            if isinstance(data, (bytes, bytearray)):
                datacontenttype = "application/octet-stream"
        else:
            _check_str("datacontenttype", datacontenttype, required=False)
        if dataschema is not None:
            _check_str("dataschema", dataschema, required=False)
        if subject is not None:
            _check_str("subject", subject, required=False)
        stamp = _wallclock() if time is None else parse_time(time)
        if isinstance(data, bytearray):
            data = bytes(data)
        if self.__class__ is Event:
            # Every check passed: fill the slots as a _Draft (same layout, no __setattr__
            # guard), about a third of the cost of eleven object.__setattr__ calls, then become
            # an Event again. Nothing between the two class switches can raise.
            _as_draft(self, "__class__", _Draft)
            self.type = type
            self.source = source
            self.id = id
            self.specversion = specversion
            self.datacontenttype = datacontenttype
            self.dataschema = dataschema
            self.subject = subject
            self._time = stamp
            self.data = data
            self.extensions = ext
            self._view = None
            self.__class__ = Event
            return
        setter = object.__setattr__  # a subclass: its layout may differ from _Draft's
        setter(self, "type", type)
        setter(self, "source", source)
        setter(self, "id", id)
        setter(self, "specversion", specversion)
        setter(self, "datacontenttype", datacontenttype)
        setter(self, "dataschema", dataschema)
        setter(self, "subject", subject)
        setter(self, "_time", stamp)
        setter(self, "data", data)
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
        for name in _TYPED:  # four lookups, not a pass over the attributes
            if name in attrs:
                attrs[name] = _typed(name, attrs[name])
        event = cls(
            etype,
            source,
            data,
            id=event_id,
            specversion=specversion,
            datacontenttype=attrs.pop("datacontenttype", None),
            dataschema=attrs.pop("dataschema", None),
            subject=attrs.pop("subject", None),
            time=time,
            extensions=attrs,
        )
        if time is None:  # absent on the wire stays absent
            object.__setattr__(event, "_time", None)
        return event

    # --- immutability -----------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Event is immutable; use event.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Event is immutable")

    def _with_trace(self, traceparent: str | None, tracestate: str | None) -> Event:
        """A copy carrying this trace context (None removes an attribute): what
        `mesh.otel` stamps on every send. The values come from the OpenTelemetry
        propagator, so nothing is checked again (`replace` would check every attribute)."""
        ext = dict(self.extensions)
        for name, value in (("traceparent", traceparent), ("tracestate", tracestate)):
            if value is None:
                ext.pop(name, None)
            else:
                ext[name] = value
        copy = object.__new__(Event)
        setter = object.__setattr__
        for slot in Event.__slots__:
            setter(copy, slot, getattr(self, slot))
        setter(copy, "extensions", MappingProxyType(ext))
        setter(copy, "_view", None)
        return copy

    def replace(self, **changes: Any) -> Event:
        """Return a copy with ``changes`` applied.

        Keys are attribute names, ``data``, ``extensions`` (replaces them all), or
        extension names (set one; ``None`` removes it).
        """
        ext = dict(changes.pop("extensions", self.extensions))
        fields = {
            "type": self.type,
            "source": self.source,
            "data": self.data,
            "id": self.id,
            "datacontenttype": self.datacontenttype,
            "dataschema": self.dataschema,
            "subject": self.subject,
            "time": self.time,
        }
        for key, value in changes.items():
            if key in fields:
                fields[key] = value
            elif value is None:
                ext.pop(key, None)
            else:
                ext[key] = value
        keep_no_time = fields["time"] is None
        event = Event(
            fields.pop("type"), fields.pop("source"), fields.pop("data"), extensions=ext, **fields
        )
        if keep_no_time:
            object.__setattr__(event, "_time", None)
        return event

    @property
    def time(self) -> datetime | None:
        """When the event happened (UTC unless given otherwise); None when absent."""
        stamp = self._time
        if isinstance(stamp, float):  # made by the constructor: converted once, when read
            stamp = _fromtimestamp(stamp, UTC)
            object.__setattr__(self, "_time", stamp)
        return stamp

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
        attrs: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
        }
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
        return (
            self.id,
            self.source,
            self.type,
            self.specversion,
            self.datacontenttype,
            self.dataschema,
            self.subject,
            self.time,
            self.data,
            tuple(sorted(self.extensions.items())),
        )

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


class _Draft:
    """An `Event` under construction: the same slots, assignable. ``Event.__init__``
    switches a new event's class to this while it fills the slots, then back."""

    __slots__ = Event.__slots__


_as_draft = object.__setattr__
