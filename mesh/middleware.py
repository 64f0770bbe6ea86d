"""The middleware chain: one seam every publish and every delivery passes through.

::

    class Timing(mesh.Middleware):
        async def handle(self, attempt, call_next):
            started = time.perf_counter()
            await call_next(attempt)
            print(attempt.handler, attempt.outcome, time.perf_counter() - started)

    app = Mesh("memory://", middleware=[Timing()])      # or app.use(Timing())

A middleware subclasses `Middleware` and overrides any of its hooks; the ones it
leaves alone cost nothing (the chain is built from the overridden hooks only, and with
no middleware installed the core takes the path it took before the chain existed).
The first middleware of the list is the outermost: it sees a publish first and an
attempt's outcome last.

``publish(event, channel, call_next)``
    Around every `Mesh.publish` (so `Mesh.emit`, `Context.emit`, capability requests
    and replies, ``mesh.loop.detected`` alerts too). ``await call_next(event,
    channel)`` sends and returns once the transport confirmed the write; a middleware
    may pass on a different event (``event.replace(traceparent=...)``), or raise
    instead of calling it (nothing is sent, the caller gets the exception). The mesh's
    own bookkeeping (dead-letter copies, registry heartbeats, stats reports) is written
    straight to the transport and does not pass here.

``publish_batch(items, call_next)``
    Around every `Mesh.publish_many`, with its ``(channel, event)`` pairs;
    ``await call_next(items)`` sends them as one pipelined batch and returns once all
    are confirmed. The default runs each event through this middleware's ``publish``
    first, whose ``call_next`` then only queues the (possibly changed) event into the
    batch and returns at once: a middleware that only overrides ``publish`` still sees
    and may change every event, but learns of the batch's confirmation or failure only
    by overriding this hook. Raising stops the whole batch: nothing of it is sent.

``handle(attempt, call_next)``
    Around each attempt of a handler on a delivery (a retried delivery is several
    attempts; a batch handler's delivery is one attempt per event, waiting for its
    batch). ``await call_next(attempt)`` runs the rest of the chain and the handler; it
    does not raise what the handler raised: when it returns, `Attempt.outcome` says
    what the mesh does next (`Outcome.ACKED`, ``RETRIED`` after a backoff,
    ``RETRY_LATER`` given back to the broker, ``DEAD_LETTERED`` with
    `Attempt.reason`, ``DROPPED`` by a dead-letter handler) and `Attempt.error` holds
    the handler's exception. A middleware that raises *before* calling ``call_next``
    (a rate limiter raising `RetryLater`, a guard raising `DeadLetter`) is treated
    exactly as if the handler had raised it, by the middleware outside it too (their
    ``call_next`` returns with that outcome). One that returns without calling
    ``call_next`` fails the attempt (a `RuntimeError` saying so): the handler never
    ran, so the event is not acked. Cancellation (shutdown) propagates.

``request(capability, data, call_next)``
    Around every `Mesh.request`: ``await call_next(capability, data)`` sends the request
    (through the ``publish`` hooks) and returns the reply event; it raises what
    `Mesh.request` raises (`NoProvider`, `RequestTimeout`, `RemoteError`, ...). A
    tracer opens its client span here, so the request's send span and the provider's
    handler span join its trace.

``skipped(attempt)``
    A delivery that never reached its handler: ``FILTERED`` (the residual filter said
    no), ``DUPLICATE`` (the idempotency store had it), ``HOP_LIMITED`` (dead-lettered
    past the hop limit), ``DEAD_LETTERED`` (undecodable, a contract violation, past
    ``max_deliveries``; the reason says which) or ``DROPPED``. `Attempt.number` is 0,
    and `Attempt.event` is None for an undecodable message. Called after the outcome
    was decided, before the ack; it must not block (it is a plain function).

``attach(mesh)`` is called once when a middleware is installed on a mesh (by `Mesh` or
`Mesh.use`), before any hook, so it can read what it needs of the mesh (its transport's
`WireFormat`, its source). ``start()`` runs when the mesh has started (after its
handlers subscribed, before its ``on_start`` hooks), or at once for a middleware
installed on a running mesh; ``stop()`` runs when the mesh stops (after its ``on_stop``
hooks), and also when a start failed half-way, so it must cope with a ``start()`` that
never ran or ran twice: a server or a background task lives between the two.

Exceptions a middleware raises in ``handle`` after ``call_next`` returned, and any
``skipped`` raises, are logged and otherwise ignored: the outcome was already decided,
and a broken metrics exporter must never lose or duplicate an event.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.transport import Delivery

__all__ = [
    "Attempt",
    "HandleNext",
    "Middleware",
    "Outcome",
    "PublishBatchNext",
    "PublishNext",
    "RequestNext",
    "serving",
]

log = logging.getLogger("mesh.middleware")


class Outcome(StrEnum):
    """What the mesh does with a delivery after an attempt (or instead of one)."""

    ACKED = "acked"  # handled; acked (after the idempotency store recorded it)
    RETRIED = "retried"  # the attempt failed; another follows after the backoff
    RETRY_LATER = "retry_later"  # given back to the broker for redelivery (RetryLater)
    DEAD_LETTERED = "dead_lettered"  # a copy goes to the dead-letter channel, then ack
    DROPPED = "dropped"  # a dead-letter handler could not handle it: logged, acked
    FILTERED = "filtered"  # the residual filter rejected it: acked unseen
    DUPLICATE = "duplicate"  # this group handled it already: acked unseen
    HOP_LIMITED = "hop_limited"  # past the hop limit: dead-lettered unrun


@dataclass(slots=True, eq=False)
class Attempt:
    """One handler attempt on one delivery, as the middleware sees it.

    The core fills in ``outcome``, ``error`` and ``reason`` before ``call_next``
    returns; the rest is fixed when the attempt starts. ``state`` is a scratch dict for
    middleware (keyed by something of its own) that lives as long as the attempt.
    """

    event: Event | None
    channel: str
    group: str | None
    handler: str
    number: int  # 1 for the first attempt of this delivery; 0 for `Middleware.skipped`
    redeliveries: int  # earlier deliveries of the message, as the broker counts them
    delivery: Delivery
    outcome: Outcome | None = None
    error: BaseException | None = None
    reason: str | None = None  # why it was dead-lettered or dropped
    state: dict[object, object] | None = None


PublishNext = Callable[[Event, str], Awaitable[None]]
PublishBatchNext = Callable[[list[tuple[str, Event]]], Awaitable[None]]
HandleNext = Callable[[Attempt], Awaitable[None]]
RequestNext = Callable[[str, Any], Awaitable[Event]]
#: what the consumer does with an exception a ``handle`` hook raised (`_handle_wrapper`)
Absorb = Callable[[Attempt, Exception], None]


class Middleware:
    """Base class of a middleware: every hook passes through. See the module docstring
    for the contract of each; override only what you need."""

    async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
        await call_next(event, channel)

    async def publish_batch(
        self, items: list[tuple[str, Event]], call_next: PublishBatchNext
    ) -> None:
        if not _overrides(self, "publish"):
            await call_next(items)
            return
        queued: list[tuple[str, Event]] = []

        async def queue(event: Event, channel: str) -> None:
            queued.append((channel, event))

        for channel, event in items:
            await self.publish(event, channel, queue)
        await call_next(queued)

    async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
        await call_next(attempt)

    async def request(self, capability: str, data: Any, call_next: RequestNext) -> Event:
        return await call_next(capability, data)

    def attach(self, mesh: Mesh) -> None:
        """Called once when installed on ``mesh``, before any other hook."""

    async def start(self) -> None:
        """The mesh started (or it runs already and this was just installed)."""

    async def stop(self) -> None:
        """The mesh stops, or its start failed; idempotent."""

    def skipped(self, attempt: Attempt) -> None:
        """A delivery that ended without reaching its handler (see the module docstring)."""


def serving(middleware: Middleware, bound: Mesh | None, mesh: Mesh) -> Mesh:
    """``mesh``, for `Middleware.attach` of a middleware that keeps per-mesh state (its
    ``messaging.system``, its server, its task): a `ConfigError` when it is ``bound`` to
    another mesh already."""
    if bound is not None and bound is not mesh:
        name = type(middleware).__name__
        raise ConfigError(
            f"this {name} instance already serves another mesh; give each mesh its own {name}()"
        )
    return mesh


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


@dataclass(frozen=True, slots=True)
class Chain:
    """The composed hooks of an ordered list of middleware (None: no middleware has it)."""

    middleware: tuple[Middleware, ...] = ()
    publish: Callable[[PublishNext], PublishNext] | None = None
    publish_batch: Callable[[PublishBatchNext], PublishBatchNext] | None = None
    handle: Callable[[HandleNext, Absorb], HandleNext] | None = None
    request: Callable[[RequestNext], RequestNext] | None = None
    skipped: Callable[[Attempt], None] | None = None

    @classmethod
    def of(cls, middleware: Iterable[Middleware]) -> Chain:
        """Compose ``middleware`` (outermost first); a `ConfigError` for anything that is
        not a `Middleware` (an instance: pass ``Timing()``, not ``Timing``)."""
        items = tuple(middleware)
        for item in items:
            if not isinstance(item, Middleware):
                hint = (
                    f"pass an instance ({item.__name__}()), not the class"
                    if isinstance(item, type) and issubclass(item, Middleware)
                    else "subclass mesh.Middleware and pass an instance"
                )
                raise ConfigError(f"middleware {item!r} is not a mesh.Middleware: {hint}")
        publishers = [m for m in items if _overrides(m, "publish")]
        batchers = [m for m in items if m in publishers or _overrides(m, "publish_batch")]
        handlers = [m for m in items if _overrides(m, "handle")]
        requesters = [m for m in items if _overrides(m, "request")]
        watchers = [m for m in items if _overrides(m, "skipped")]
        return cls(
            items,
            _wrapper(publishers, "publish") if publishers else None,
            _wrapper(batchers, "publish_batch") if batchers else None,
            _handle_wrapper(handlers) if handlers else None,
            _wrapper(requesters, "request") if requesters else None,
            _notifier(watchers) if watchers else None,
        )


def _wrapper(items: list[Middleware], hook: str) -> Callable[[Any], Any]:
    """A function that wraps the innermost call (the send, the handler) in ``items``'
    ``hook``, the first item outermost."""
    methods = [getattr(m, hook) for m in reversed(items)]

    def wrap(inner: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        call = inner
        for method in methods:
            call = functools.partial(method, call_next=call)
        return call

    return wrap


def _handle_wrapper(items: list[Middleware]) -> Callable[[HandleNext, Absorb], HandleNext]:
    """Like `_wrapper` for ``handle``, with each middleware's ``call_next`` guarded: what
    an inner middleware raises never reaches the outer ones. ``absorb(attempt, error)``
    turns it into the attempt's outcome (raised before the outcome was decided: as if
    the handler raised it) or logs it (after), so every ``call_next`` returns with
    `Attempt.outcome` set; cancellation passes through."""
    methods = [m.handle for m in reversed(items)]

    def wrap(inner: HandleNext, absorb: Absorb) -> HandleNext:
        call = inner
        for method in methods:
            call = functools.partial(method, call_next=_guarded(call, absorb))
        return call

    return wrap


def _guarded(call: HandleNext, absorb: Absorb) -> HandleNext:
    async def guarded(attempt: Attempt) -> None:
        try:
            await call(attempt)
        except Exception as exc:
            absorb(attempt, exc)

    return guarded


def _notifier(items: list[Middleware]) -> Callable[[Attempt], None]:
    def notify(attempt: Attempt) -> None:
        for middleware in items:
            try:
                middleware.skipped(attempt)
            except Exception:  # a broken exporter never changes what happens to an event
                log.exception("middleware %r failed in skipped()", middleware)

    return notify
