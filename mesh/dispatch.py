"""`Dispatcher`: the handler-task pool every broker transport needs, written once.

A subscription hands the dispatcher *items* as the broker client produces them (a
Kafka record, a NATS message, an AMQP delivery); the dispatcher turns each into a
`Delivery` and runs the handler under `deliver`'s contract, so a transport keeps
only what is specific to its broker. It provides:

* **bounded concurrency**: at most ``limit`` handler calls run at once; further
  items wait in arrival order. ``load`` (waiting + running) tells the transport
  how much more to take from the broker (flow control stays the transport's job).
* **per-key order** (optional): items submitted with the same ``key`` run one at a
  time, in submission order; an item holds its key across its retries until it is
  finished, so a retried event is never overtaken by a later one of the same key.
* **in-client retries**: ``retry(item, delay)`` runs the item again after ``delay``
  seconds, ahead of items that never ran (for brokers that cannot redeliver after
  a delay themselves).
* **closing in two steps**: ``stop()`` stops starting items and hands back those
  that never ran or wait for a retry, for the transport to give back to the broker
  at the right moment; ``drain(timeout)`` lets running calls finish for ``timeout``
  seconds, then cancels them (a cancelled delivery is never acked, see `deliver`).

Contracts: ``make(item)`` returns a new `Delivery` for each attempt, or ``None``
to drop the item unrun (say, its partition was revoked). ``before(item)``, when
given, is called as an attempt starts and returns None (the common case: nothing to
do) or an awaitable the attempt awaits before the handler runs: something the broker
must have before the handler may run (Kafka's crash counts), at no cost to the items
that need nothing. ``on_done(item)`` is
called exactly once per item that finished here: its last attempt ended without a
retry being scheduled, or ``make`` dropped it; never for items ``stop()``
returned. Items are told apart by identity (they must be hashable, as plain
objects are). Every method must be called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from mesh.transport import Delivery, DeliveryHandler, cancel_calls, deliver

T = TypeVar("T", bound=Hashable)
log = logging.getLogger("mesh.transport")


class Dispatcher(Generic[T]):
    """Runs one subscription's handler calls; see the module docstring."""

    __slots__ = (
        "_again",
        "_before",
        "_handler",
        "_keys",
        "_make",
        "_on_done",
        "_open",
        "_parked",
        "_queue",
        "_running",
        "_stopped",
        "_timers",
        "limit",
    )

    def __init__(
        self,
        handler: DeliveryHandler,
        limit: int,
        make: Callable[[T], Delivery | None],
        *,
        on_done: Callable[[T], None] | None = None,
        before: Callable[[T], Awaitable[None] | None] | None = None,
    ) -> None:
        self.limit = max(1, limit)
        self._handler, self._make, self._on_done = handler, make, on_done
        self._before = before
        self._queue: deque[T] = deque()  # ready to start, in order
        self._parked: dict[Hashable, deque[T]] = {}  # busy key -> items waiting for it
        self._keys: dict[T, Hashable] = {}  # item -> the key it holds
        self._running: dict[asyncio.Task[None], T] = {}
        self._again: set[T] = set()  # running items with a retry scheduled
        self._timers: dict[T, asyncio.TimerHandle] = {}
        self._open = 0  # submitted, not finished nor returned
        self._stopped = False

    # --- counts -------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Handler calls running now."""
        return len(self._running)

    @property
    def delayed(self) -> int:
        """Items waiting out a retry delay."""
        return len(self._timers)

    @property
    def load(self) -> int:
        """Items waiting to start or running (not those waiting out a retry delay)."""
        return self._open - len(self._timers)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def items(self) -> list[T]:
        """Every item not finished: running ones first, then `waiting` ones (e.g. to
        extend their ack deadlines)."""
        return [*self._running.values(), *self.waiting()]

    def waiting(self) -> list[T]:
        """Items not running yet: queued, behind a busy key, or waiting out a delay."""
        return [*self._queue, *(item for q in self._parked.values() for item in q), *self._timers]

    def resize(self, limit: int) -> None:
        """Run at most ``limit`` calls at once from now on (running ones are not stopped;
        a larger limit starts waiting items at once). A transport narrows it to 1 while
        it must know which record a crash happened on."""
        self.limit = max(1, limit)
        self._fill()

    # --- feeding ------------------------------------------------------------------------

    def submit(self, item: T, key: Hashable | None = None) -> None:
        """Run ``item`` when a slot (and its ``key``, if given) is free."""
        self._open += 1
        if key is not None:
            parked = self._parked.get(key)
            if parked is not None:
                parked.append(item)
                return
            self._parked[key] = deque()
            self._keys[item] = key
        self._queue.append(item)
        self._fill()

    def retry(self, item: T, delay: float = 0.0) -> bool:
        """Run ``item`` again after ``delay`` seconds, before items that never ran; it
        keeps its key. Call it while the item's attempt runs (from its delivery's nack):
        the next attempt never starts before this one ended. Returns False after
        `stop`: the item then finishes when its attempt ends."""
        if self._stopped:
            return False
        self._again.add(item)
        if delay > 0:
            self._timers[item] = asyncio.get_running_loop().call_later(delay, self._due, item)
        return True

    def _due(self, item: T) -> None:
        del self._timers[item]
        if item not in self._again:  # else its attempt still runs: `_ended` queues it
            self._queue.appendleft(item)
            self._fill()

    def _fill(self) -> None:
        queue, running = self._queue, self._running
        while queue and len(running) < self.limit and not self._stopped:
            item = queue.popleft()
            delivery = self._make(item)
            if delivery is None:
                self._finish(item)
                continue
            first = self._before(item) if self._before is not None else None
            task = asyncio.get_running_loop().create_task(
                deliver(self._handler, delivery) if first is None else self._after(first, delivery)
            )
            running[task] = item
            task.add_done_callback(self._ended)

    async def _after(self, first: Awaitable[None], delivery: Delivery) -> None:
        """``before``'s awaitable, then the handler (as `deliver` runs it). A failure of
        ``first`` is the delivery's failure: it is redelivered, the handler not run."""
        try:
            await first
        except asyncio.CancelledError:
            await delivery._unhandled(cancelled=True)
            raise
        except Exception:
            log.exception(
                "preparing a delivery on channel %s failed; redelivering", delivery.channel
            )
            await delivery._unhandled(cancelled=False)
            return
        await deliver(self._handler, delivery)

    def _ended(self, task: asyncio.Task[None]) -> None:
        item = self._running.pop(task)
        if item in self._again:
            self._again.discard(item)
            if self._stopped:
                self._finish(item)
            elif item not in self._timers:  # due already (or no delay): next in line
                self._queue.appendleft(item)
        else:
            self._finish(item)
        self._fill()

    def _finish(self, item: T) -> None:
        self._open -= 1
        key = self._keys.pop(item, None)
        if key is not None:
            parked = self._parked[key]
            if parked:
                successor = parked.popleft()
                self._keys[successor] = key
                self._queue.append(successor)
            else:
                del self._parked[key]
        if self._on_done is not None:
            self._on_done(item)

    # --- closing ------------------------------------------------------------------------

    def stop(self) -> list[T]:
        """Start nothing more; return the items that are not running (queued, behind a
        key, waiting out a retry delay) and forget them. An item whose attempt still
        runs is not returned, even with a retry scheduled: it finishes when the attempt
        ends. Idempotent (later calls return what arrived since)."""
        self._stopped = True
        left = [item for item in self.waiting() if item not in self._again]
        for timer in self._timers.values():
            timer.cancel()
        self._queue.clear()
        self._timers.clear()
        for parked in self._parked.values():
            parked.clear()
        for item in left:
            self._keys.pop(item, None)
        self._open -= len(left)
        return left

    async def drain(self, timeout: float = 0.0) -> list[T]:
        """`stop`, let running calls finish within ``timeout`` seconds, then cancel
        them. Items the earlier `stop` did not return are dropped here: call `stop`
        first to give them back. A call that ignores its cancellation is abandoned after
        a short grace (`mesh.transport.cancel_calls`, logged with the handler's name);
        the items of abandoned calls are returned, so the transport can give them back
        to the broker (closing the connection does that on most brokers)."""
        self.stop()
        tasks = list(self._running)
        if tasks and timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)
        running = self._running
        return [
            running[task] for task in await cancel_calls(tasks, self._handler) if task in running
        ]
