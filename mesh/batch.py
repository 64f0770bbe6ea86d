"""Batch handlers: one handler call for many events, with ack, retry and dead-letter per event.

::

    @mesh.on("doc.uploaded", group="indexers", batch=BatchPolicy(max_size=100, max_wait=0.5))
    async def index(events: list[Event]) -> dict[str, Exception] | None:
        failed = await search.bulk_insert([e.data for e in events])
        return {events[i].id: RetryLater(5) for i in failed}   # the rest succeeded

Every delivery still goes through `mesh.delivery.Consumer` on its own: decoding, the
filter, the hop limit, the contract, the idempotency store, ``max_deliveries``, the
retries with backoff, dead-lettering and the ack stay exactly what they are for a
one-event handler. Only the step "run the handler" differs: the delivery's attempt
hands its event to the subscription's `Batcher` and waits for *that event's* outcome.
The batcher collects events until it holds ``max_size`` of them or ``max_wait``
seconds passed since the first one, calls the handler once with the list, and then
settles each event's outcome: success, or that event's own exception. A failing event
is therefore retried (and rejoins a later batch) or dead-lettered alone, under the
normal policy, while the others are acked; an exception raised by the handler is every
event's outcome (each is retried under the normal policy).

The handler takes ``(events)`` or ``(events, contexts)``: ``events`` is a list of
`Event` (annotate ``list[Event]``), or of validated pydantic models (annotate
``list[Model]``; an event whose data does not fit is dead-lettered alone and left out
of the list); ``contexts`` is a list of `Context` aligned with ``events``, so
``contexts[i].emit(...)`` makes a follow-up of ``events[i]`` (causation, correlation,
derived id). It returns one of:

* ``None``: every event succeeded;
* a list (or tuple) aligned with ``events``: per event ``None`` (success) or an
  exception instance (``RetryLater(5)``, ``DeadLetter("...")``, any other exception:
  a failed attempt);
* a dict ``{event id: exception or None}``: the events it does not name succeeded
  (an id shared by two events of the batch applies to both).

Anything else is a bug in the handler: every event of the batch gets a ``TypeError``
saying what was wrong (a failed attempt, so retried and then dead-lettered with that
reason). Two deliveries of the same event (same source and id) that meet in one
collecting batch are handed to the handler once and share its outcome.

The handler runs in a task of its own with no current event, so ``mesh.request``
inside it starts a conversation (use ``contexts[i]`` to continue one). When every
delivery waiting for a running batch is cancelled (the subscription closes past its
shutdown timeout), the handler call is cancelled too; nothing of it is acked and the
broker redelivers the events. A cancelled delivery still collecting leaves the batch
before it is handed over.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel, ValidationError

from mesh.context import Context
from mesh.errors import ConfigError, DataValidationError
from mesh.handlers import handler_params
from mesh.event import Event

log = logging.getLogger("mesh.delivery")
_LISTS: tuple[object, ...] = (list, Sequence)  # what list[X], Sequence[X] (abc or typing) are


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How a batch handler's events are grouped into calls.

    A call gets at most ``max_size`` events; a batch that is not full is handed over
    ``max_wait`` seconds after its first event arrived. The subscription's
    ``max_in_flight`` must let a batch fill, so it defaults to at least ``max_size``.
    Invalid values raise `ConfigError` at construction.
    """

    max_size: int = 100
    max_wait: float = 0.5

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_size, int)
            or isinstance(self.max_size, bool)
            or self.max_size < 1
        ):
            raise ConfigError(
                f"BatchPolicy(max_size={self.max_size!r}): max_size is the most events per "
                "handler call; give an integer >= 1 (say 100)"
            )
        if (
            not isinstance(self.max_wait, int | float)
            or isinstance(self.max_wait, bool)
            or not math.isfinite(self.max_wait)
            or self.max_wait <= 0
        ):
            raise ConfigError(
                f"BatchPolicy(max_wait={self.max_wait!r}): max_wait is how many seconds the "
                "first event of a batch waits for more; give a number > 0 (say 0.5)"
            )

    @classmethod
    def coerce(cls, value: BatchPolicy | Mapping[str, Any], *, where: str) -> BatchPolicy:
        """``value`` as a policy: a `BatchPolicy` or a dict of its fields. ``where``
        names the call in errors (``"mesh.on(batch=...)"``)."""
        if isinstance(value, BatchPolicy):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: give a BatchPolicy(max_size=..., max_wait=...) or a dict of those "
                f"fields, not {type(value).__name__}"
            )
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown batch field(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        return cls(**value)


def plan_in_flight(
    policy: BatchPolicy | None,
    max_in_flight: int | None,
    *,
    default: int,
    limit: int | None,
    where: str,
) -> int:
    """The ``max_in_flight`` of a handler's subscription, or `ConfigError` naming the fix.

    ``default`` applies when it is not given; ``limit`` is the transport's
    `TransportFeatures.max_in_flight` (None: no limit). A batch handler's (``policy``)
    must let a batch fill: it defaults to at least ``max_size``, and an explicit value
    below ``max_size``, or a ``max_size`` above ``limit``, is refused."""
    if max_in_flight is not None and (
        not isinstance(max_in_flight, int) or isinstance(max_in_flight, bool) or max_in_flight < 1
    ):
        raise ConfigError(
            f"{where}: max_in_flight must be an integer >= 1 (handler calls running at "
            f"once), got {max_in_flight!r}"
        )
    if limit is not None and max_in_flight is not None and max_in_flight > limit:
        raise ConfigError(
            f"{where}: max_in_flight={max_in_flight} is more than the transport can hold "
            f"unsettled on one subscription ({limit}); give at most {limit}"
        )
    if policy is None:
        wanted = max_in_flight or default
        return wanted if limit is None else min(wanted, limit)
    if limit is not None and policy.max_size > limit:
        raise ConfigError(
            f"{where}: batch max_size={policy.max_size} is more than the transport can hold "
            f"unsettled on one subscription ({limit}); lower max_size to {limit} or less"
        )
    if max_in_flight is not None and max_in_flight < policy.max_size:
        raise ConfigError(
            f"{where}: max_in_flight={max_in_flight} is below batch max_size="
            f"{policy.max_size}, so a batch could never fill; raise max_in_flight to at "
            f"least {policy.max_size}, lower max_size, or leave max_in_flight out"
        )
    wanted = max_in_flight or max(default, policy.max_size)
    return wanted if limit is None else min(wanted, limit)


def batch_invoker(
    func: Callable[..., Awaitable[Any]], policy: BatchPolicy, name: str
) -> tuple[
    Callable[[Event, Context | None], Awaitable[None]],
    bool,
    Callable[[Event], Awaitable[None]] | None,
]:
    """What `mesh.delivery.Consumer` needs to run a batch handler: the invoker (a new
    `Batcher`'s ``submit``), whether it takes contexts, and the invoker again as the
    event-only call when it does not (the consumer then builds no `Context`)."""
    batcher = Batcher(adapt_batch(func, name), policy)
    return batcher.submit, batcher.wants_ctx, None if batcher.wants_ctx else batcher.submit


@dataclass(frozen=True, slots=True)
class BatchHandler:
    """A batch handler's signature, read once at registration: the function, whether it
    takes the contexts, and the pydantic model its elements are validated into."""

    func: Callable[..., Awaitable[Any]]
    name: str
    with_ctx: bool
    model: type[BaseModel] | None


def adapt_batch(func: Callable[..., Awaitable[Any]], name: str | None = None) -> BatchHandler:
    """Check a batch handler's signature; `ConfigError` saying how to fix it."""
    qualname = getattr(func, "__qualname__", repr(func))
    params = handler_params(
        func,
        f"batch handler {qualname}",
        "(events) or (events, contexts): a list of events and, optionally, the list of "
        "their contexts",
    )
    try:
        hint = typing.get_type_hints(func).get(params[0].name)
    except Exception as exc:
        if isinstance(params[0].annotation, str) and "Event" not in params[0].annotation:
            raise ConfigError(
                f"cannot resolve the annotation {params[0].annotation!r} of batch handler "
                f"{qualname} ({exc}); define the model at module level"
            ) from None
        hint = None
    model: type[BaseModel] | None = None
    if hint is not None and hint is not Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin not in _LISTS and hint not in _LISTS:
            shown = getattr(hint, "__name__", str(hint))
            raise ConfigError(
                f"batch handler {qualname} gets a list of events, but its first parameter "
                f"is annotated {shown}; annotate it list[Event] (or list[YourModel] for "
                "validated data)"
            )
        element = args[0] if args else None
        if isinstance(element, type) and issubclass(element, BaseModel):
            model = element
    return BatchHandler(func, name or func.__name__, len(params) == 2, model)


class _Entry:
    """One event of a collecting or running batch, and the attempts waiting for it."""

    __slots__ = ("abandoned", "ctx", "event", "futures", "run")

    def __init__(self, event: Event, ctx: Context | None, future: asyncio.Future[None]) -> None:
        self.event = event
        self.ctx = ctx
        self.futures = [future]
        self.run: asyncio.Task[None] | None = None  # the batch call, once handed over
        self.abandoned = False


class Batcher:
    """Collects one subscription's events into handler calls; see the module docstring.

    `submit` is the `mesh.delivery.Consumer`'s invoker: it returns when the event's
    outcome is success and raises the event's exception otherwise. Every method runs
    on the event loop's thread.
    """

    __slots__ = ("_handler", "_live", "_max_size", "_max_wait", "_pending", "_timer")

    def __init__(self, handler: BatchHandler, policy: BatchPolicy) -> None:
        self._handler = handler
        self._max_size = policy.max_size
        self._max_wait = policy.max_wait
        self._pending: dict[tuple[str, str], _Entry] = {}  # collecting, in arrival order
        self._timer: asyncio.TimerHandle | None = None
        self._live: dict[asyncio.Task[None], int] = {}  # running calls -> entries waited for

    @property
    def wants_ctx(self) -> bool:
        """Whether the handler takes the contexts (the consumer builds them only then)."""
        return self._handler.with_ctx

    @property
    def collecting(self) -> int:
        """Events in the batch being collected."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Handler calls running now."""
        return len(self._live)

    async def submit(self, event: Event, ctx: Context | None = None) -> None:
        """Add ``event`` to the collecting batch and wait for its own outcome."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (event.source, event.id)
        entry = self._pending.get(key)
        if entry is not None:  # the same event twice in one batch: handled once
            entry.futures.append(future)
        else:
            entry = self._pending[key] = _Entry(event, ctx, future)
            if len(self._pending) >= self._max_size:
                self.flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._max_wait, self.flush)
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                self._abandon(entry)
            raise

    def flush(self) -> None:
        """Hand the collecting batch to the handler now (no-op when it is empty)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        entries = list(self._pending.values())
        self._pending = {}
        # a context of its own: no current event (the batch is not one event's follow-up)
        task = asyncio.get_running_loop().create_task(
            self._run(entries),
            name=f"mesh-batch-{self._handler.name}",
            context=contextvars.Context(),
        )
        for entry in entries:
            entry.run = task
        self._live[task] = len(entries)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        del self._live[task]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("batch call of %s failed: %r", self._handler.name, exc)  # a bug here

    def _abandon(self, entry: _Entry) -> None:
        """An attempt waiting for ``entry`` was cancelled. Once no attempt waits for it, it
        leaves the collecting batch, or no longer holds its running call: a call that
        nobody waits for is cancelled (nothing of it will be acked)."""
        if entry.abandoned or not all(f.cancelled() for f in entry.futures):
            return
        entry.abandoned = True
        if entry.run is None:
            key = (entry.event.source, entry.event.id)
            if self._pending.get(key) is entry:
                del self._pending[key]
            if not self._pending and self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        task = entry.run
        left = self._live.get(task, 0) - 1
        if left > 0:
            self._live[task] = left
        elif task in self._live:
            self._live[task] = 0
            task.cancel()

    async def _run(self, entries: list[_Entry]) -> None:
        handler = self._handler
        try:
            items: list[Any] = []
            contexts: list[Context] = []
            called: list[_Entry] = []
            for entry in entries:
                if entry.abandoned:
                    continue
                value: Any = entry.event
                if handler.model is not None:
                    try:
                        value = handler.model.model_validate(entry.event.data)
                    except ValidationError as exc:
                        _settle(
                            entry,
                            DataValidationError(
                                f"data of {entry.event.type} does not match "
                                f"{handler.model.__name__}: {exc.error_count()} error(s): "
                                f"{exc.errors(include_url=False)}"
                            ),
                        )
                        continue
                items.append(value)
                if entry.ctx is not None:
                    contexts.append(entry.ctx)
                called.append(entry)
            if not called:
                return
            try:
                if handler.with_ctx:
                    result = await handler.func(items, contexts)
                else:
                    result = await handler.func(items)
            except Exception as exc:  # the whole batch failed: every event's outcome
                for entry in called:
                    _settle(entry, exc)
                return
            try:
                outcomes = _outcomes(result, called, handler.name)
            except TypeError as exc:
                for entry in called:
                    _settle(entry, exc)
                return
            for entry, outcome in zip(called, outcomes, strict=True):
                _settle(entry, outcome)
        finally:  # cancelled (or worse): whoever still waits is not acked
            for entry in entries:
                for future in entry.futures:
                    if not future.done():
                        future.cancel()


def _settle(entry: _Entry, outcome: BaseException | None) -> None:
    for future in entry.futures:
        if not future.done():
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)


_RETURNS = (
    "return None (all handled), a list with one outcome per event (None or an exception "
    "instance such as RetryLater(5)), or a dict {event id: exception}"
)


def _outcome(value: object, handler: str, where: str) -> BaseException | None:
    if value is None or isinstance(value, Exception):
        return value
    if isinstance(value, type) and issubclass(value, Exception):
        raise TypeError(
            f"batch handler {handler} returned the class {value.__name__} {where}; give an "
            f"instance ({value.__name__}(...)): {_RETURNS}"
        )
    raise TypeError(
        f"batch handler {handler} returned {type(value).__name__} {value!r:.80} {where}; {_RETURNS}"
    )


def _outcomes(result: object, entries: list[_Entry], handler: str) -> list[BaseException | None]:
    """Each entry's outcome from what the handler returned; `TypeError` when malformed."""
    if result is None:
        return [None] * len(entries)
    if isinstance(result, list | tuple):
        if len(result) != len(entries):
            raise TypeError(
                f"batch handler {handler} returned {len(result)} outcome(s) for a batch of "
                f"{len(entries)} event(s); {_RETURNS}"
            )
        return [
            _outcome(value, handler, f"for event {entry.event.id}")
            for value, entry in zip(result, entries, strict=True)
        ]
    if isinstance(result, Mapping):
        outcomes: list[BaseException | None] = [None] * len(entries)
        positions: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            positions.setdefault(entry.event.id, []).append(index)
        for key, value in result.items():
            found = positions.get(key) if isinstance(key, str) else None
            if found is None:
                raise TypeError(
                    f"batch handler {handler} returned an outcome for {key!r}, which is not "
                    f"the id of an event in its batch; {_RETURNS}"
                )
            outcome = _outcome(value, handler, f"for event {key}")
            for index in found:
                outcomes[index] = outcome
        return outcomes
    raise TypeError(f"batch handler {handler} returned {type(result).__name__}; {_RETURNS}")
