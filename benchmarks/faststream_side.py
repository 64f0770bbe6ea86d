"""The FastStream side: the same work written the FastStream way, on the same broker.

One publisher broker and N consumer brokers (the group), each with its own
connection, like the mesh side's apps. Handlers take the decoded JSON (``dict``),
as FastStream users write them, with ``ack_policy=AckPolicy.ACK`` (ack after the
handler, whatever happens). Kafka uses ``faststream.confluent`` (confluent-kafka,
the client the mesh uses). Memory has no FastStream transport: its in-memory
``TestNatsBroker`` stands in, which runs the handler inline in ``publish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import cleanup
from benchmarks.common import Handler, Session, Settings, Side, Target, WindowedPublish


def _quiet(broker_cls: Any, *args: Any, **kwargs: Any) -> Any:
    """A broker without FastStream's per-message log lines (the mesh logs none either)."""
    return broker_cls(*args, logger=None, **kwargs)


class _Brokers(Session):
    """Publisher broker + consumer brokers; subclasses say how to build them."""

    async def open(self) -> None:
        self.publisher = self.make_broker()
        await self.publisher.start()
        self.members: list[Any] = []

    def make_broker(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        for broker in self.members:
            with contextlib.suppress(Exception):
                await broker.stop()
        with contextlib.suppress(Exception):
            await self.publisher.stop()


# --- memory: TestNatsBroker -------------------------------------------------------------


class MemorySession(Session):
    """``TestNatsBroker`` around one publisher broker and the member brokers; a
    publish calls the subscribers of its subject directly (one member per queue
    group: always the first one)."""

    async def open(self) -> None:
        from faststream.nats import NatsBroker

        self.subject = self.target.channel
        self.publisher = _quiet(NatsBroker)
        self.members: list[Any] = []
        self._ctx: Any = None

    async def declare(self) -> None:
        pass

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        from faststream.nats import NatsBroker, TestNatsBroker

        for _ in range(count):
            broker = _quiet(NatsBroker)

            @broker.subscriber(self.subject, queue=self.target.group)
            async def handle(data: dict[str, Any]) -> None:
                handler(data)

            self.members.append(broker)
        self._ctx = TestNatsBroker(self.publisher, *self.members)
        await self._ctx.__aenter__()

    async def publish_batch(self, items: Sequence[dict[str, Any]]) -> None:
        publish, subject = self.publisher.publish, self.subject
        for item in items:
            await publish(item, subject)

    async def publish(self, item: dict[str, Any]) -> None:
        await self.publisher.publish(item, self.subject)

    async def close(self) -> None:
        if self._ctx is not None:
            await self._ctx.__aexit__(None, None, None)


# --- Kafka: faststream.confluent ----------------------------------------------------------


class KafkaSession(_Brokers):
    """``KafkaBroker`` (confluent) with the mesh's producer settings (idempotent,
    ``acks=all``, same ``linger.ms``); publishes pipelined with ``no_confirm=True``
    and the delivery futures awaited. Subscribers: ``group_id``, earliest, the same
    fetch/session settings, ``ack_policy=ACK`` -- which FastStream implements as a
    commit per message, and allows only with one worker per subscriber."""

    def make_broker(self) -> Any:
        from faststream.confluent import KafkaBroker

        s = self.settings
        return _quiet(
            KafkaBroker,
            cleanup.kafka_bootstrap(self.target.url),
            enable_idempotence=True,
            acks="all",
            linger_ms=s.kafka_linger_ms,
            config={
                "queued.min.messages": 1000,
                "fetch.queue.backoff.ms": s.kafka_fetch_backoff_ms,
            },
        )

    async def open(self) -> None:
        await asyncio.to_thread(
            cleanup.create_kafka_topics,
            self.target.url,
            [self.target.channel, self.target.warmup_channel],
            self.settings.kafka_partitions,
        )
        await super().open()
        await self.publisher.publish({}, self.target.warmup_channel)

    async def declare(self) -> None:
        pass

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        from faststream import AckPolicy

        s = self.settings
        ready = []
        for _ in range(count):
            broker = self.make_broker()
            assigned = threading.Event()

            @broker.subscriber(
                self.target.channel,
                group_id=self.target.group,
                auto_offset_reset="earliest",
                ack_policy=AckPolicy.ACK,
                fetch_max_wait_ms=s.kafka_fetch_wait_ms,
                session_timeout_ms=s.kafka_session_timeout_ms,
                heartbeat_interval_ms=s.kafka_heartbeat_ms,
                on_assign=lambda consumer, parts, e=assigned: e.set(),
            )
            async def handle(data: dict[str, Any]) -> None:
                handler(data)

            self.members.append(broker)
            ready.append(assigned)
        await asyncio.gather(*(b.start() for b in self.members))
        for assigned in ready:
            if not await asyncio.to_thread(assigned.wait, 60):
                raise TimeoutError("FastStream Kafka consumer got no assignment within 60 s")

    async def publish_batch(self, items: Sequence[dict[str, Any]]) -> None:
        publish, topic = self.publisher.publish, self.target.channel
        futures = [await publish(item, topic, no_confirm=True) for item in items]
        await asyncio.gather(*futures)

    async def publish(self, item: dict[str, Any]) -> None:
        await self.publisher.publish(item, self.target.channel)

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(
            cleanup.delete_kafka_topics,
            self.target.url,
            [self.target.channel, self.target.warmup_channel],
        )


# --- NATS JetStream -----------------------------------------------------------------------


class NatsSession(WindowedPublish, _Brokers):
    """The same stream as the other sides (created here); ``publish(..., stream=...)``
    awaits the PubAck, 256 in flight, with ``Nats-Msg-Id``. Subscribers: a durable
    pull consumer (``PullSub(batch_size=max_in_flight)``), ``ack_policy=ACK``."""

    WINDOW = 256

    def make_broker(self) -> Any:
        from faststream.nats import NatsBroker

        return _quiet(NatsBroker, self.target.url)

    async def open(self) -> None:
        import nats

        self.admin = await nats.connect(self.target.url)
        await self.admin.jetstream(timeout=10).add_stream(self.target.stream_config())
        await super().open()
        await self.publisher.publish(
            {},
            f"{self.target.subject_prefix}.{self.target.warmup_channel}",
            stream=self.target.stream,
        )

    def _consumer_config(self) -> Any:
        from faststream.nats import ConsumerConfig, DeliverPolicy
        from nats.js.api import AckPolicy as JsAck

        return ConsumerConfig(
            durable_name=self.target.group,
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=JsAck.EXPLICIT,
            ack_wait=30,
            max_deliver=-1,
            filter_subject=self.target.subject,
            max_ack_pending=max(1000, self.settings.max_in_flight),
        )

    async def declare(self) -> None:
        await self.admin.jetstream(timeout=10).add_consumer(
            self.target.stream, self._consumer_config()
        )

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        from faststream import AckPolicy
        from faststream.nats import JStream, PullSub

        stream = JStream(self.target.stream, declare=False)
        for _ in range(count):
            broker = self.make_broker()

            @broker.subscriber(
                self.target.subject,
                stream=stream,
                durable=self.target.group,
                pull_sub=PullSub(batch_size=self.settings.max_in_flight, timeout=5.0),
                config=self._consumer_config(),
                ack_policy=AckPolicy.ACK,
            )
            async def handle(data: dict[str, Any]) -> None:
                handler(data)

            self.members.append(broker)
        for broker in self.members:  # the first creates the durable consumer
            await broker.start()

    def _send(self, item: dict[str, Any]) -> Any:
        return self.publisher.publish(
            item,
            self.target.subject,
            stream=self.target.stream,
            timeout=5.0,
            headers={"Nats-Msg-Id": uuid.uuid4().hex},
        )

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(Exception):
            await self.admin.jetstream(timeout=10).delete_stream(self.target.stream)
        await self.admin.close()


# --- RabbitMQ ---------------------------------------------------------------------------


class RabbitSession(WindowedPublish, _Brokers):
    """Publisher confirms (FastStream's default channel), ``persist=True``,
    ``mandatory=True``, 1000 in flight; a durable quorum queue bound to a topic
    exchange; ``Channel(prefetch_count=max_in_flight)``, ``ack_policy=ACK``."""

    WINDOW = 1000

    def make_broker(self) -> Any:
        from faststream.rabbit import RabbitBroker

        return _quiet(RabbitBroker, self.target.url)

    def _topology(self) -> tuple[Any, Any]:
        from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

        exchange = RabbitExchange(self.target.exchange, type=ExchangeType.TOPIC, durable=True)
        queue = RabbitQueue(
            self.target.queue,
            durable=True,
            routing_key=self.target.channel,
            queue_type=QueueType.QUORUM,
        )
        return exchange, queue

    async def open(self) -> None:
        await super().open()
        self.exchange, self.queue = self._topology()
        await self.publisher.declare_exchange(self.exchange)
        await self.publisher.publish(
            {}, exchange=self.exchange, routing_key=self.target.warmup_channel
        )

    async def declare(self) -> None:
        queue = await self.publisher.declare_queue(self.queue)
        exchange = await self.publisher.declare_exchange(self.exchange)
        await queue.bind(exchange, routing_key=self.target.channel)

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        from faststream import AckPolicy
        from faststream.rabbit import Channel

        for _ in range(count):
            broker = self.make_broker()
            exchange, queue = self._topology()

            @broker.subscriber(
                queue,
                exchange,
                channel=Channel(prefetch_count=self.settings.max_in_flight),
                ack_policy=AckPolicy.ACK,
            )
            async def handle(data: dict[str, Any]) -> None:
                handler(data)

            self.members.append(broker)
        for broker in self.members:
            await broker.start()

    def _send(self, item: dict[str, Any]) -> Any:
        return self.publisher.publish(
            item,
            exchange=self.exchange,
            routing_key=self.target.channel,
            persist=True,
            mandatory=True,
        )

    async def close(self) -> None:
        await super().close()
        await cleanup.delete_rabbitmq(
            self.target.url, queues=[self.target.queue], exchanges=[self.target.exchange]
        )


_SESSIONS: dict[str, type[Session]] = {
    "memory": MemorySession,
    "kafka": KafkaSession,
    "nats": NatsSession,
    "rabbitmq": RabbitSession,
}


class FastStreamSide(Side):
    name = "faststream"

    def available(self) -> str | None:
        if importlib.util.find_spec("faststream") is None:
            return "not installed (pip install -e '.[bench]')"
        return None

    def supports(self, transport: str, scenario: str) -> str | None:
        if transport == "memory" and scenario == "publish":
            return "TestBroker has no broker to confirm: a publish runs the handlers inline"
        return None

    def guarantees(self, transport: str) -> str:
        return {
            "memory": "TestNatsBroker (FastStream's in-memory test client): publish calls "
            "the handler inline; no queue, no concurrency",
            "kafka": "faststream.confluent: idempotent producer acks=all, futures awaited; "
            "AckPolicy.ACK = commit after each message, one worker per subscriber",
            "nats": "JetStream publish, PubAck awaited (256 in flight), Nats-Msg-Id; durable "
            "PullSub(batch_size=max_in_flight), AckPolicy.ACK",
            "rabbitmq": "publisher confirms (1000 in flight), persist, mandatory; quorum "
            "queue, Channel(prefetch_count), AckPolicy.ACK",
        }[transport]

    def session(self, target: Target, settings: Settings) -> Session:
        return _SESSIONS[target.transport](target, settings)
