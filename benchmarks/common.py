"""What every side shares: the payload, the settings, the target broker, the counter.

A *side* is one way of doing the same work on one broker: the mesh, the raw client,
FastStream. Each side module builds a `Session` for a (transport, run) pair; the
runner drives every session through the same scenarios, so the only thing that
differs between the rows of a table is the code under test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

TRANSPORTS = ("memory", "kafka", "nats", "rabbitmq")
PAYLOAD_BYTES = 256
EVENT_TYPE = "bench.event"  # the mesh event type / FastStream and raw message "kind"


_PAD = PAYLOAD_BYTES - len(json.dumps({"seq": f"{0:012d}", "kind": "order.created", "pad": ""}))


def payload(seq: int) -> dict[str, Any]:
    """A fresh dict whose ``json.dumps`` is exactly `PAYLOAD_BYTES` bytes."""
    return {"seq": f"{seq:012d}", "kind": "order.created", "pad": "x" * _PAD}


def payloads(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [payload(start + i) for i in range(count)]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True)
class Settings:
    """The knobs of one benchmark run; the same for every side."""

    events: int = 20_000  # events per throughput run
    repeat: int = 3  # interleaved repetitions; tables show medians
    latency_sends: int = 500  # one-at-a-time sends per latency run
    latency_warmup: int = 20  # sends before the measured ones (not counted)
    max_in_flight: int = 64  # handler concurrency = prefetch = pull batch, all sides
    publish_chunk: int = 1000  # events per publish_batch call (confirmed before the next)
    group_size: int = 4  # consumers in the "group" scenario
    smoke: bool = False
    run_timeout: float = 120.0  # one run (one side, one scenario) gives up after this
    #: Kafka client settings every side gets (Tansu: see docs/performance.md)
    kafka_partitions: int = 8
    kafka_linger_ms: int = 5
    kafka_fetch_wait_ms: int = 10
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_ms: int = 1000
    #: librdkafka's pause before refetching a partition whose local queue is full: the
    #: mesh's default (20 ms); librdkafka's own 1 s default starves a busy consumer
    kafka_fetch_backoff_ms: int = 20


@dataclass
class Target:
    """One broker as a run sees it: where it is and the fresh names of this run."""

    transport: str
    url: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def channel(self) -> str:
        """The channel / topic / routing key / subject tail of this run's events."""
        return f"bench.r{self.run}.events"

    @property
    def warmup_channel(self) -> str:
        """Where ``open()`` publishes one event so that connection set-up (Kafka's
        idempotent producer id, NATS' reply inbox) stays out of the timing; no
        consumer of the run reads it."""
        return f"bench.r{self.run}.warmup"

    @property
    def group(self) -> str:
        return f"bench-{self.run}"

    # NATS: one stream per run, its own subject prefix (what the mesh calls the prefix)
    @property
    def stream(self) -> str:
        return f"BENCH_{self.run}"

    @property
    def subject_prefix(self) -> str:
        return f"benchr{self.run}"

    @property
    def subject(self) -> str:
        return f"{self.subject_prefix}.{self.channel}"

    def stream_config(self) -> Any:
        """The run's JetStream stream as the mesh declares its own (file storage, one
        replica, a week, 120 s duplicate window), so the raw and FastStream sides write to
        the same kind of stream."""
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

        return StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=1,
            max_age=604800,
            max_bytes=-1,
            discard=DiscardPolicy.OLD,
            duplicate_window=120,
        )

    # RabbitMQ: one topic exchange per run
    @property
    def exchange(self) -> str:
        return f"bench.{self.run}"

    @property
    def queue(self) -> str:
        return f"bench.{self.run}.{self.group}"


class Counter:
    """Counts handled events; ``done`` resolves once ``expected`` were handled.

    ``hit`` is what every side's handler calls (on the event loop). Sides whose
    handlers run on a client thread (raw Kafka) call ``add`` through
    ``call_soon_threadsafe`` with the time they handled the last event.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.last = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def hit(self, _data: Any = None) -> None:
        self.count += 1
        if self.count >= self.expected and not self.done.done():
            self.last = time.perf_counter()
            self.done.set_result(None)

    def add(self, count: int, when: float) -> None:
        self.count += count
        if self.count >= self.expected and not self.done.done():
            self.last = when
            self.done.set_result(None)


class Probe:
    """For latency: the handler reports the time it ran; the sender awaits it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[float] | None = None
        self._lock = threading.Lock()

    def arm(self) -> asyncio.Future[float]:
        self._waiter = self._loop.create_future()
        return self._waiter

    def hit(self, _data: Any = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    def hit_threadsafe(self, when: float) -> None:
        def resolve() -> None:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(when)

        self._loop.call_soon_threadsafe(resolve)


Handler = Callable[[Any], None]


class Session(ABC):
    """One side on one target for one run: connects, consumes, publishes, cleans up.

    Used as ``async with side.session(target, settings) as s``. ``start_consumers``
    returns only once every consumer is ready to receive (for Kafka: its group has
    assigned partitions), so group joins stay out of the timing.
    """

    def __init__(self, target: Target, settings: Settings) -> None:
        self.target, self.settings = target, settings

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect the publisher and publish one event to ``target.warmup_channel``
        (no timing)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consumers, disconnect, delete this run's broker state."""

    @abstractmethod
    async def declare(self) -> None:
        """Create the group's queue/consumer/topic without consuming (publish-only runs)."""

    @abstractmethod
    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        """Start ``count`` consumers in one group calling ``handler(data)`` per event.

        Sides whose handlers run off the loop call ``threaded(n, when)`` instead (set
        by the runner to the counter's or probe's thread-safe entry)."""

    @abstractmethod
    async def publish_batch(self, items: Sequence[dict[str, Any]]) -> None:
        """Publish ``items``; return once the broker confirmed all of them."""

    @abstractmethod
    async def publish(self, item: dict[str, Any]) -> None:
        """Publish one event; return once the broker confirmed it."""


class Side(ABC):
    """A row family of the tables: how to make sessions and what they guarantee."""

    name: str = ""

    def available(self) -> str | None:
        """None when usable, else why not (shown in the tables)."""
        return None

    def supports(self, transport: str, scenario: str) -> str | None:
        """None when the scenario runs on ``transport``, else why not."""
        return None

    @abstractmethod
    def guarantees(self, transport: str) -> str:
        """One line for the tables: what publish confirms and when a delivery is acked."""

    @abstractmethod
    def session(self, target: Target, settings: Settings) -> Session: ...


class WindowedPublish:
    """``publish``/``publish_batch`` of a session whose client pipelines confirmations:
    ``_send(item)`` returns the confirmation to await; a batch goes ``WINDOW`` at a
    time, each window's confirmations awaited together. Mix in before `Session`."""

    WINDOW = 256

    def _send(self, item: dict[str, Any]) -> Awaitable[Any]:
        raise NotImplementedError

    async def publish_batch(self, items: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(items), self.WINDOW):
            await asyncio.gather(*(self._send(item) for item in items[start : start + self.WINDOW]))

    async def publish(self, item: dict[str, Any]) -> None:
        await self._send(item)
