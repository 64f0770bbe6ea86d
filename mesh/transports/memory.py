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

A retained channel (`MemoryTransport.retain`) is a queue nobody consumes (so it
costs publishing nothing extra); `MemoryTransport.read` walks a snapshot of it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from mesh import codec
from mesh.errors import TransportClosed
from mesh.event import Event
from mesh.hookspecs import hookimpl
from mesh.transport import (
    Delivery,
    DeliveryHandler,
    Subscription,
    Transport,
    TransportFeatures,
    TransportRegistry,
    WireFormat,
    cancel_calls,
    deliver,
    pattern_list,
    pattern_matcher,
)


class _Queue:
    """One broker queue: a group's shared queue, or a broadcast subscriber's own.

    ``pending`` holds each waiting message as its next `_MemoryDelivery`, or, in the
    common case (an `Event` on the channel named after its type, no partition key, not
    delivered before), as the bare event: its delivery is made when it is taken."""

    def __init__(self, patterns: set[str]) -> None:
        self.patterns = patterns
        self.pending: deque[_MemoryDelivery | Event] = deque()
        self.busy: set[Any] = set()  # partition keys with a message in flight
        self.waiters: deque[asyncio.Future[None]] = deque()

    def put(self, entry: _MemoryDelivery | Event) -> None:
        self.pending.append(entry)
        if self.waiters:
            self.wake()

    def requeue(self, delivery: _MemoryDelivery) -> None:
        """A delivery came back unsettled: its message is first in line again (as a new
        delivery), its key free."""
        self.busy.discard(delivery.key)
        self.pending.appendleft(
            _MemoryDelivery(
                self, delivery.channel, delivery.message, delivery.key, delivery.redeliveries + 1
            )
        )
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

    def take_nowait(self) -> _MemoryDelivery | None:
        pending = self.pending
        if pending and isinstance(entry := pending[0], Event):  # the common case
            pending.popleft()
            return _MemoryDelivery(self, entry.type, entry, None)
        for index, entry in enumerate(pending):  # the first message whose key is free
            if isinstance(entry, Event):
                del pending[index]
                return _MemoryDelivery(self, entry.type, entry, None)
            if entry.key is None or entry.key not in self.busy:
                del pending[index]
                if entry.key is not None:
                    self.busy.add(entry.key)
                return entry
        return None

    async def take(self) -> _MemoryDelivery:
        while (delivery := self.take_nowait()) is None:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.wake()  # we were woken but leave: pass the wake-up on
                raise
        return delivery


class _Broker:
    def __init__(self) -> None:
        self.groups: dict[str, _Queue] = {}
        self.retained: dict[str, _Queue] = {}  # channel -> its never-consumed log
        self.queues: list[_Queue] = []
        self.routes: dict[str, list[_Queue]] = {}  # channel -> queues, cached

    def bind(self, queue: _Queue) -> None:
        if queue not in self.queues:
            self.queues.append(queue)
        self.routes.clear()

    def route(self, channel: str) -> list[_Queue]:
        queues = self.routes.get(channel)
        if queues is None:
            queues = self.routes[channel] = [
                q for q in self.queues if any(pattern_matcher(p)(channel) for p in q.patterns)
            ]
        return queues


_NAMED: dict[str, _Broker] = {}
_init_delivery = Delivery.__init__


class _MemoryDelivery(Delivery):
    """One delivery of a message (an `Event`, or raw bytes from `publish_raw`) from one
    queue; a redelivery is a new `_MemoryDelivery` of the same message."""

    __slots__ = ("_queue", "key", "message")

    def __init__(
        self, queue: _Queue, channel: str, message: Event | bytes, key: Any, redeliveries: int = 0
    ) -> None:
        _init_delivery(
            self,
            channel,
            redeliveries,  # not super(): no proxy object per event
            message if isinstance(message, Event) else None,
        )
        self._queue, self.message, self.key = queue, message, key

    def _decode(self) -> Event:
        assert isinstance(self.message, bytes)
        return codec.from_json(self.message)

    def raw(self) -> tuple[Mapping[str, str], bytes]:
        body = self.message if isinstance(self.message, bytes) else b""
        return {"content-type": "application/cloudevents+json"}, body

    async def ack(self) -> None:  # Delivery.ack without its second coroutine (hot path)
        if not self._settled:
            self._settled = True
            if self.key is not None:
                self._queue.release(self.key)

    async def _ack(self) -> None:
        if self.key is not None:
            self._queue.release(self.key)

    async def _nack(self, delay: float) -> None:
        if delay:  # the key stays busy meanwhile, so later events of the key wait
            asyncio.get_running_loop().call_later(delay, self._queue.requeue, self)
        else:
            self._queue.requeue(self)


class _MemorySubscription(Subscription):
    def __init__(
        self,
        broker: _Broker,
        queue: _Queue,
        handler: DeliveryHandler,
        workers: int,
        exclusive: bool,
    ) -> None:
        self._broker, self._queue, self._handler = broker, queue, handler
        self._exclusive = exclusive
        self._idle: set[asyncio.Task[None]] = set()
        self._current: dict[asyncio.Task[None], _MemoryDelivery] = {}  # worker -> delivery
        self._max = workers  # workers start on demand: an idle subscription costs one task
        self._tasks = [asyncio.create_task(self._work())]
        self._closed = False

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        queue, handler, idle, tasks = self._queue, self._handler, self._idle, self._tasks
        current, handled = self._current, 0
        while not self._closed:
            delivery = queue.take_nowait()
            if delivery is None:
                idle.add(task)  # not handling anything: close() cancels it at once
                delivery = await queue.take()
                idle.discard(task)
            if not idle and len(tasks) < self._max:  # one worker waits for what comes next
                tasks.append(asyncio.create_task(self._work()))
            current[task] = delivery
            await deliver(handler, delivery)
            handled += 1
            if handled % 16 == 0:  # let other members (and the publisher) run: fairness
                await asyncio.sleep(0)

    async def close(self, timeout: float = 0.0) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._idle):  # not handling anything: stop taking now
            task.cancel()
        if timeout > 0:
            await asyncio.wait(self._tasks, timeout=timeout)
        for task in await cancel_calls(self._tasks, self._handler):  # abandoned: give back
            if (delivery := self._current.get(task)) and not delivery.settled:
                delivery._settled = True  # what the abandoned call does later is void
                self._queue.requeue(delivery)
        if self._exclusive:  # a broadcast subscriber's queue goes with it
            self._broker.queues.remove(self._queue)
            self._broker.routes.clear()


class MemoryTransport(Transport):
    """The in-process transport; see the module docstring."""

    schemes = ("memory",)
    features = TransportFeatures(
        consumer_groups=True,
        broadcast=True,
        per_key_ordering=True,
        persistence=False,
        replay_for_new_groups=False,
        native_dedup=False,
        wildcard_patterns=True,
        retained_reads=True,
        backlog=True,
    )
    wire = WireFormat(
        title="in-process memory broker",
        protocol="memory",
        system="memory",
        binding="in-process: events pass as objects, shown as `ce-` headers",
        description=(
            "In-process broker: only Mesh instances of one process that use the same "
            "memory://<name> share it. Run the app with --transport (or MESH_TRANSPORT) "
            "set to a real broker to share events between processes."
        ),
    )

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
        self._put(channel, event)

    async def publish_batch(self, items: Sequence[tuple[str, Event]]) -> None:
        self._check()
        route, last, queues = self._broker.route, None, []
        for channel, event in items:  # nothing to wait for: no await per event
            if channel != event.type or "partitionkey" in event.extensions:
                self._put(channel, event)
                continue
            if channel != last:
                last, queues = channel, route(channel)
            for queue in queues:  # _put's common case, inline
                queue.pending.append(event)
                if queue.waiters:
                    queue.wake()

    async def publish_raw(self, channel: str, body: bytes) -> None:
        """Put raw bytes (structured-mode JSON, or garbage in tests) on ``channel``."""
        self._check()
        self._put(channel, bytes(body))

    def _put(self, channel: str, message: Event | bytes) -> None:
        if isinstance(message, Event):
            key = message.extensions.get("partitionkey")
            if key is None and channel == message.type:  # the bare event will do
                for queue in self._broker.route(channel):
                    queue.put(message)
                return
        else:
            key = None
        for queue in self._broker.route(channel):
            queue.put(_MemoryDelivery(queue, channel, message, key))

    async def retain(self, channel: str) -> None:
        self._check()
        if channel not in self._broker.retained:  # a queue on exactly this channel
            self._broker.bind(self._broker.retained.setdefault(channel, _Queue({channel})))

    async def read(self, channel: str, *, idle: float = 1.0) -> AsyncIterator[Delivery]:
        self._check()
        log = self._broker.retained.get(channel, _Queue(set()))
        for entry in list(log.pending):  # settled from the start: ack and nack do nothing
            message = entry if isinstance(entry, Event) else entry.message
            delivery = _MemoryDelivery(log, channel, message, None)
            delivery._settled = True
            yield delivery

    async def backlog(self, pattern: str | Sequence[str], group: str) -> dict[str, int] | None:
        """The group queue's depth (messages waiting; those in flight are not counted),
        keyed by the patterns, since one queue serves all the group's channels."""
        queue = self._broker.groups.get(group)
        return {",".join(pattern_list(pattern)): len(queue.pending) if queue else 0}

    async def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 1,
    ) -> Subscription:
        self._check()
        patterns = pattern_list(pattern)
        if group is None:
            queue = _Queue(set(patterns))
        else:
            queue = self._broker.groups.setdefault(group, _Queue(set()))
            queue.patterns.update(patterns)
        self._broker.bind(queue)
        sub = _MemorySubscription(
            self._broker, queue, handler, max(1, max_in_flight), exclusive=group is None
        )
        self._subs.append(sub)
        return sub


@hookimpl
def mesh_register_transports(registry: TransportRegistry) -> None:
    registry.register(
        "memory",
        MemoryTransport,
        description="in-process broker (tests, examples, single-process apps)",
    )
