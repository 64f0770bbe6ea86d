"""In-process transport with broker semantics: ``memory://`` or ``memory://name``.

Not a shortcut around the delivery rules: a consumer group is a queue that
exists from its first subscription on (it keeps receiving while no member is
connected); members compete for its messages; unsettled deliveries go back to
the front of the queue when nacked or when their consumer stops; events with the
same ``partitionkey`` are handed out one at a time, in publish order. A
broadcast subscriber is an exclusive queue deleted when it closes.

``memory://`` is a private broker per transport; ``memory://name`` is shared by
every transport in the process that uses the same name (two apps in one test).
Events are shared, not copied (they are immutable; do not mutate ``data``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from mesh import codec
from mesh.errors import TransportClosed
from mesh.event import Event
from mesh.hookspecs import hookimpl
from mesh.transport import (
    Delivery,
    DeliveryHandler,
    Subscription,
    deliver,
    Transport,
    TransportFeatures,
    TransportRegistry,
    pattern_list,
    pattern_matcher,
)


class _Msg:
    __slots__ = ("channel", "deliveries", "event", "key", "raw")

    def __init__(self, channel: str, event: Event | None, raw: bytes = b"") -> None:
        self.channel, self.event, self.raw, self.deliveries = channel, event, raw, 0
        self.key = event.extensions.get("partitionkey") if event is not None else None


class _Queue:
    """One broker queue: a group's shared queue, or a broadcast subscriber's own."""

    def __init__(self, patterns: set[str]) -> None:
        self.patterns = patterns
        self.pending: deque[_Msg] = deque()
        self.busy: set[Any] = set()        # partition keys with a message in flight
        self.waiters: deque[asyncio.Future[None]] = deque()

    def put(self, msg: _Msg) -> None:
        self.pending.append(msg)
        self.wake()

    def requeue(self, msg: _Msg) -> None:
        """A delivery came back unsettled: first in line again, its key free."""
        self.busy.discard(msg.key)
        self.pending.appendleft(msg)
        self.wake()

    def release(self, key: Any) -> None:
        self.busy.discard(key)
        self.wake()

    def wake(self) -> None:
        while self.waiters and self.pending:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _take_nowait(self) -> _Msg | None:
        pending = self.pending
        for index, msg in enumerate(pending):
            if msg.key is None or msg.key not in self.busy:
                if index == 0:
                    pending.popleft()
                else:
                    del pending[index]
                if msg.key is not None:
                    self.busy.add(msg.key)
                msg.deliveries += 1
                return msg
        return None

    async def take(self) -> _Msg:
        while (msg := self._take_nowait()) is None:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.wake()  # we were woken but leave: pass the wake-up on
                raise
        return msg


class _Broker:
    def __init__(self) -> None:
        self.groups: dict[str, _Queue] = {}
        self.queues: list[_Queue] = []
        self.routes: dict[str, list[_Queue]] = {}   # channel -> queues, cached

    def bind(self, queue: _Queue) -> None:
        if queue not in self.queues:
            self.queues.append(queue)
        self.routes.clear()

    def route(self, channel: str) -> list[_Queue]:
        queues = self.routes.get(channel)
        if queues is None:
            queues = self.routes[channel] = [
                q for q in self.queues if any(pattern_matcher(p)(channel) for p in q.patterns)]
        return queues


_NAMED: dict[str, _Broker] = {}


class _MemoryDelivery(Delivery):
    __slots__ = ("_msg", "_queue")

    def __init__(self, queue: _Queue, msg: _Msg) -> None:
        super().__init__(msg.channel, msg.deliveries - 1, msg.event)
        self._queue, self._msg = queue, msg

    def _decode(self) -> Event:
        return codec.from_json(self._msg.raw)

    def raw(self) -> tuple[Mapping[str, str], bytes]:
        return {"content-type": "application/cloudevents+json"}, self._msg.raw

    async def _ack(self) -> None:
        if self._msg.key is not None:
            self._queue.release(self._msg.key)

    async def _nack(self, delay: float) -> None:
        if delay:  # the key stays busy meanwhile, so later events of the key wait
            asyncio.get_running_loop().call_later(delay, self._queue.requeue, self._msg)
        else:
            self._queue.requeue(self._msg)


class _MemorySubscription(Subscription):
    def __init__(self, broker: _Broker, queue: _Queue, handler: DeliveryHandler,
                 workers: int, exclusive: bool) -> None:
        self._broker, self._queue, self._handler = broker, queue, handler
        self._exclusive = exclusive
        self._idle: set[asyncio.Task[None]] = set()
        self._max = workers   # workers start on demand: an idle subscription costs one task
        self._tasks = [asyncio.create_task(self._work())]
        self._closed = False

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        handled = 0
        while not self._closed:
            self._idle.add(task)
            msg = await self._queue.take()
            self._idle.discard(task)
            if not self._idle and self._queue.pending and len(self._tasks) < self._max:
                self._tasks.append(asyncio.create_task(self._work()))
            await deliver(self._handler, _MemoryDelivery(self._queue, msg))
            handled += 1
            if handled % 16 == 0:  # let other members (and the publisher) run: fairness
                await asyncio.sleep(0)

    async def close(self, timeout: float = 0.0) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._idle):          # not handling anything: stop taking now
            task.cancel()
        if timeout > 0:
            await asyncio.wait(self._tasks, timeout=timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._exclusive:  # a broadcast subscriber's queue goes with it
            self._broker.queues.remove(self._queue)
            self._broker.routes.clear()


class MemoryTransport(Transport):
    """The in-process transport; see the module docstring."""

    schemes = ("memory",)
    features = TransportFeatures(consumer_groups=True, broadcast=True, per_key_ordering=True,
                                 persistence=False, replay_for_new_groups=False,
                                 native_dedup=False, wildcard_patterns=True,
                                 pattern_syntax="mesh")

    def __init__(self, url: str = "memory://", options: Mapping[str, Any] | None = None) -> None:
        name = url.partition("://")[2].strip("/")
        self._broker = _NAMED.setdefault(name, _Broker()) if name else _Broker()
        self._subs: list[_MemorySubscription] = []
        self._open = False

    async def connect(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        subs, self._subs = self._subs, []
        await asyncio.gather(*(sub.close() for sub in subs))

    def _check(self) -> None:
        if not self._open:
            raise TransportClosed("memory transport is not connected; call connect() first")

    async def publish(self, channel: str, event: Event) -> None:
        self._check()
        for queue in self._broker.route(channel):
            queue.put(_Msg(channel, event))

    async def publish_raw(self, channel: str, body: bytes) -> None:
        """Put raw bytes (structured-mode JSON, or garbage in tests) on ``channel``."""
        self._check()
        for queue in self._broker.route(channel):
            queue.put(_Msg(channel, None, body))

    async def subscribe(self, pattern: str | Sequence[str], handler: DeliveryHandler, *,
                        group: str | None = None, max_in_flight: int = 1) -> Subscription:
        self._check()
        patterns = pattern_list(pattern)
        if group is None:
            queue = _Queue(set(patterns))
        else:
            queue = self._broker.groups.setdefault(group, _Queue(set()))
            queue.patterns.update(patterns)
        self._broker.bind(queue)
        sub = _MemorySubscription(self._broker, queue, handler, max(1, max_in_flight),
                                  exclusive=group is None)
        self._subs.append(sub)
        return sub



@hookimpl
def mesh_register_transports(registry: TransportRegistry) -> None:
    registry.register("memory", MemoryTransport,
                      description="in-process broker (tests, examples, single-process apps)")
