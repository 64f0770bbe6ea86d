"""The Context handed to a handler: what it is handling, and how to emit follow-ups.

``ctx.emit`` is how agents talk: the child event inherits the conversation
(``correlationid``), names its cause (``causationid`` = the input's id), carries
the trace (``traceparent``/``tracestate``), counts hops (``meshhops`` = input's + 1)
and gets an id derived from the input's id, the handler and its position among
the handler's emits. A redelivered input therefore re-emits identical ids, and
downstream idempotency drops the duplicates (effectively-once without
distributed transactions). ``emit`` returns once the transport confirmed the
write, so by the time the handler returns every emitted event is safe; only
then is the input acked.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mesh.event import Event

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.transport import Delivery

#: Namespace of derived event ids (uuid5).
ID_NAMESPACE = uuid.UUID("6f1d1d1e-5b7c-4a53-9a57-0c9a3e0d4c11")

_INHERITED = ("traceparent", "tracestate")
#: (event, handler name, group) of the handler running in this task
Running = tuple[Event, str, str | None]
_CURRENT: contextvars.ContextVar[Running | None] = contextvars.ContextVar(
    "mesh_current_event", default=None
)


def current_event() -> Event | None:
    """The event whose handler is running in this task (None outside handlers); lets
    ``mesh.request`` inside a handler inherit the conversation."""
    running = _CURRENT.get()
    return None if running is None else running[0]


def current_handler() -> tuple[str, str | None] | None:
    """(handler name, group) of the handler running in this task (None outside
    handlers): what `mesh.logs.JsonFormatter` puts on every line a handler logs."""
    running = _CURRENT.get()
    return None if running is None else (running[1], running[2])


#: ``set_current_event((event, handler, group)) -> token`` and
#: ``reset_current_event(token)``: the ContextVar's own methods (no Python frame of ours
#: per delivery).
set_current_event: Callable[[Running | None], contextvars.Token[Running | None]] = _CURRENT.set
reset_current_event: Callable[[contextvars.Token[Running | None]], None] = _CURRENT.reset


def derive_id(parent: Event, scope: str, position: int) -> str:
    """The deterministic id of the ``position``-th event ``scope`` emits for ``parent``."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{parent.source}\x1f{parent.id}\x1f{scope}\x1f{position}"))


def child_extensions(parent: Event, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Extensions a follow-up of ``parent`` carries (correlation, causation, trace, hops)."""
    ext: dict[str, Any] = {
        "correlationid": parent.extensions.get("correlationid") or parent.id,
        "causationid": parent.id,
        "meshhops": parent.meshhops + 1,
    }
    for name in _INHERITED:
        value = parent.extensions.get(name)
        if value is not None:
            ext[name] = value
    if extra:
        ext.update(extra)
    return ext


class Context:
    """Per-delivery context. ``attempt`` is 1 on the first try of this delivery;
    ``redeliveries`` counts earlier deliveries by the broker."""

    __slots__ = (
        "_delivery",
        "_position",
        "attempt",
        "channel",
        "event",
        "group",
        "mesh",
        "redeliveries",
        "scope",
    )

    def __init__(
        self,
        mesh: Mesh,
        event: Event,
        *,
        channel: str,
        group: str | None,
        scope: str,
        attempt: int,
        redeliveries: int,
        delivery: Delivery | None = None,
    ) -> None:
        self.mesh = mesh
        self.event = event
        self.channel = channel
        self.group = group
        self.scope = scope
        self.attempt = attempt
        self.redeliveries = redeliveries
        self._position = 0
        self._delivery = delivery

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named after the handler's scope that adds the event id and correlation."""
        return logging.LoggerAdapter(
            logging.getLogger(f"mesh.handler.{self.scope}"),
            {"event_id": self.event.id, "correlationid": self.correlationid},
        )

    @property
    def correlationid(self) -> str:
        """The conversation this event belongs to (its own id if it starts one)."""
        return self.event.correlationid or self.event.id

    def child(
        self, type: str, data: Any = None, *, fresh_id: bool = False, **attributes: Any
    ) -> Event:
        """Build (without publishing) the next follow-up event; see the module docstring.

        ``fresh_id=True`` gives a random id instead of the derived one: for events that
        belong to this attempt only (a progress notice), which a redelivery must not
        deduplicate away.
        """
        extensions = child_extensions(self.event, attributes.pop("extensions", None))
        for name in list(attributes):
            if name not in _EVENT_KWARGS:
                extensions[name] = attributes.pop(name)
        if fresh_id:
            event_id = str(uuid.uuid4())
        else:
            event_id = derive_id(self.event, self.scope, self._position)
            self._position += 1
        attributes.setdefault("source", self.mesh.source)
        return Event(type, data=data, id=event_id, extensions=extensions, **attributes)

    async def emit(
        self,
        type: str,
        data: Any = None,
        *,
        channel: str | None = None,
        fresh_id: bool = False,
        **attributes: Any,
    ) -> Event:
        """Publish a follow-up event and wait for the broker's confirmation.

        ``attributes`` are CloudEvents attributes (``subject``, ``datacontenttype``,
        ``dataschema``, ``source``) or extensions (``partitionkey="order-7"``).
        """
        event = self.child(type, data, fresh_id=fresh_id, **attributes)
        await self.mesh.publish(event, channel=channel)
        return event

    async def reply(self, data: Any = None, *, type: str | None = None, **attributes: Any) -> Event:
        """Emit ``<input type>.reply`` (or ``type``) as a follow-up of the input."""
        return await self.emit(type or f"{self.event.type}.reply", data, **attributes)

    async def in_progress(self) -> None:
        """Tell the broker a long handler is still alive (extends ack deadlines)."""
        if self._delivery is not None:
            await self._delivery.in_progress()


_EVENT_KWARGS = frozenset({"source", "subject", "datacontenttype", "dataschema", "time"})
