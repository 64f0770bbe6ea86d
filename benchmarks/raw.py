"""The raw-client side: what a careful user writes with the client library alone.

Same guarantees as the mesh (see each session's docstring), none of its features:
no CloudEvents envelope (the body is the 256-byte JSON, decoded with ``json.loads``
before the handler, as the frameworks decode theirs), no retries, no dead-letter
channel, no idempotency store. That is the ceiling the mesh is measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import cleanup
from benchmarks.common import Handler, Session, Settings, Side, Target, WindowedPublish

_dumps = json.dumps
_loads = json.loads


# --- memory: asyncio.Queue -----------------------------------------------------------------


class MemorySession(Session):
    """One ``asyncio.Queue`` is the group; each consumer runs ``max_in_flight`` workers
    that ``get()``, run the handler, then ``task_done()``. Objects are shared, not
    serialised (as on the mesh's memory transport)."""

    async def open(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.workers: list[asyncio.Task[None]] = []

    async def declare(self) -> None:
        pass

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        queue = self.queue

        async def work() -> None:
            while True:
                item = await queue.get()
                handler(item)
                queue.task_done()

        self.workers = [
            asyncio.create_task(work()) for _ in range(count * self.settings.max_in_flight)
        ]
        await asyncio.sleep(0)

    async def publish_batch(self, items: Sequence[dict[str, Any]]) -> None:
        put = self.queue.put_nowait
        for item in items:
            put(item)

    async def publish(self, item: dict[str, Any]) -> None:
        self.queue.put_nowait(item)

    async def close(self) -> None:
        for task in self.workers:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)


# --- Kafka: confluent-kafka ----------------------------------------------------------------


class KafkaSession(Session):
    """Idempotent producer (``acks=all``, ``linger.ms`` as the mesh) polled by a thread
    that serves delivery reports; a batch is confirmed when every report came back.
    Consumers: one thread each, ``enable.auto.commit=false``,
    ``enable.auto.offset.store=false``; per ``consume()`` batch of ``max_in_flight``
    records the handler runs, each offset is stored after it, then one asynchronous
    commit per batch. Handlers run on the consumer threads (no hop to the loop)."""

    async def open(self) -> None:
        from confluent_kafka import Producer

        s = self.settings
        self.bootstrap = cleanup.kafka_bootstrap(self.target.url)
        await asyncio.to_thread(
            cleanup.create_kafka_topics,
            self.target.url,
            [self.target.channel, self.target.warmup_channel],
            s.kafka_partitions,
        )
        self.producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": s.kafka_linger_ms,
                "partitioner": "murmur2_random",
            }
        )
        self.polling = True
        self.poller = threading.Thread(target=self._poll, daemon=True)
        self.poller.start()
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()
        await self._produce([{}], self.target.warmup_channel)

    def _poll(self) -> None:
        while self.polling:
            self.producer.poll(0.1)

    async def declare(self) -> None:
        pass  # the topic exists; a group without commits starts at the earliest offset

    def _consumer_conf(self) -> dict[str, Any]:
        s = self.settings
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.target.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "queued.min.messages": 1000,
            "fetch.queue.backoff.ms": s.kafka_fetch_backoff_ms,
            "fetch.wait.max.ms": s.kafka_fetch_wait_ms,
            "session.timeout.ms": s.kafka_session_timeout_ms,
            "heartbeat.interval.ms": s.kafka_heartbeat_ms,
        }

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        assert threaded is not None, "raw Kafka handlers run on the consumer threads"
        ready = []
        for _ in range(count):  # all join together, like the mesh side
            assigned = threading.Event()
            thread = threading.Thread(target=self._consume, args=(assigned, threaded), daemon=True)
            thread.start()
            self.threads.append(thread)
            ready.append(assigned)
        for assigned in ready:  # each member has partitions (as mesh.start() returns)
            if not await asyncio.to_thread(assigned.wait, 60):
                raise TimeoutError("raw Kafka consumer got no assignment within 60 s")

    def _consume(self, assigned: threading.Event, report: Callable[[int, float], None]) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(self._consumer_conf())
        consumer.subscribe([self.target.channel], on_assign=lambda c, parts: assigned.set())
        batch = self.settings.max_in_flight
        loads, store, perf = _loads, consumer.store_offsets, time.perf_counter
        try:
            while not self.stop.is_set():
                # what is there now, else wait for one (consume(n, t) would wait
                # for n records or t: 100 ms of latency on a quiet topic)
                messages = consumer.consume(batch, 0) or consumer.consume(1, 0.1)
                handled, when = 0, 0.0
                for message in messages:
                    if message.error() is not None:
                        continue
                    loads(message.value())  # the handler: decode and count
                    handled += 1
                    when = perf()
                    store(message)
                if handled:
                    report(handled, when)
                    consumer.commit(asynchronous=True)
        finally:
            consumer.close()

    async def publish_batch(self, items: Sequence[dict[str, Any]]) -> None:
        await self._produce(items, self.target.channel)

    async def _produce(self, items: Sequence[dict[str, Any]], topic: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        left = [len(items)]
        errors: list[Any] = []

        def report(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(error)
            left[0] -= 1
            if left[0] == 0:
                loop.call_soon_threadsafe(done.set_result, None)

        produce = self.producer.produce
        for item in items:
            while True:
                try:
                    produce(topic, _dumps(item).encode(), on_delivery=report)
                    break
                except BufferError:
                    await asyncio.sleep(0.005)
        await done
        if errors:
            raise RuntimeError(f"{len(errors)} records not confirmed: {errors[0]}")

    async def publish(self, item: dict[str, Any]) -> None:
        await self.publish_batch([item])

    async def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            await asyncio.to_thread(thread.join, 15)
        self.polling = False
        await asyncio.to_thread(self.poller.join, 5)
        await asyncio.to_thread(self.producer.flush, 10)
        await asyncio.to_thread(
            cleanup.delete_kafka_topics,
            self.target.url,
            [self.target.channel, self.target.warmup_channel],
        )


# --- NATS JetStream: nats-py ---------------------------------------------------------------


class NatsSession(WindowedPublish, Session):
    """The same stream settings as the mesh's (file storage, ``Nats-Msg-Id`` dedup).
    Publish: ``js.publish`` awaiting the PubAck, 256 in flight. Consumers: one durable
    pull consumer (``ack_policy=explicit``, ``max_ack_pending`` as the mesh), each
    member on its own connection looping ``fetch(batch=max_in_flight)``, running the
    handler and then ``ack()`` per message."""

    WINDOW = 256

    async def open(self) -> None:
        import nats

        self.nc = await nats.connect(self.target.url)
        self.js = self.nc.jetstream(timeout=10)
        await self.js.add_stream(self.target.stream_config())
        await self.js.publish(
            f"{self.target.subject_prefix}.{self.target.warmup_channel}",
            b"{}",
            stream=self.target.stream,
        )
        self.members: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.declared = False

    async def declare(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        if self.declared:
            return
        await self.js.add_consumer(
            self.target.stream,
            ConsumerConfig(
                durable_name=self.target.group,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                max_deliver=-1,
                filter_subject=self.target.subject,
                max_ack_pending=max(1000, self.settings.max_in_flight),
            ),
        )
        self.declared = True

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        import nats

        await self.declare()
        batch = self.settings.max_in_flight
        for _ in range(count):
            nc = await nats.connect(self.target.url)
            self.members.append(nc)
            psub = await nc.jetstream().pull_subscribe_bind(
                self.target.group, stream=self.target.stream
            )

            async def pull(psub: Any = psub) -> None:
                loads = _loads
                while True:
                    try:
                        messages = await psub.fetch(batch, timeout=5)
                    except TimeoutError:
                        continue
                    for message in messages:
                        handler(loads(message.data))
                        await message.ack()

            self.tasks.append(asyncio.create_task(pull()))

    def _send(self, item: dict[str, Any]) -> Any:
        return self.js.publish(
            self.target.subject,
            _dumps(item).encode(),
            stream=self.target.stream,
            timeout=5,
            headers={"Nats-Msg-Id": uuid.uuid4().hex},
        )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for nc in self.members:
            with contextlib.suppress(Exception):
                await nc.close()
        with contextlib.suppress(Exception):
            await self.js.delete_stream(self.target.stream)
        await self.nc.close()


# --- RabbitMQ: aio-pika --------------------------------------------------------------------


class RabbitSession(WindowedPublish, Session):
    """Publisher confirms on a topic exchange (persistent, mandatory, 1000 in flight);
    a durable quorum queue bound to the channel; each member its own connection and
    channel with ``prefetch_count = max_in_flight``, ``ack()`` after the handler."""

    WINDOW = 1000

    async def open(self) -> None:
        import aio_pika

        self.conn = await aio_pika.connect(self.target.url)
        channel = await self.conn.channel(publisher_confirms=True)
        self.exchange = await channel.declare_exchange(
            self.target.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.channel = channel
        self.members: list[Any] = []
        self.declared = False
        await self.exchange.publish(self._message({}), self.target.warmup_channel)

    async def declare(self) -> None:
        if self.declared:
            return
        queue = await self.channel.declare_queue(
            self.target.queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(self.exchange, self.target.channel)
        self.declared = True

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        import aio_pika

        await self.declare()
        loads = _loads

        async def on_message(message: Any) -> None:
            handler(loads(message.body))
            await message.ack()

        for _ in range(count):
            conn = await aio_pika.connect(self.target.url)
            self.members.append(conn)
            channel = await conn.channel()
            await channel.set_qos(prefetch_count=self.settings.max_in_flight)
            queue = await channel.declare_queue(
                self.target.queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.consume(on_message)

    def _message(self, item: dict[str, Any]) -> Any:
        import aio_pika

        return aio_pika.Message(
            _dumps(item).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )

    def _send(self, item: dict[str, Any]) -> Any:
        return self.exchange.publish(self._message(item), self.target.channel, mandatory=True)

    async def close(self) -> None:
        for conn in self.members:
            with contextlib.suppress(Exception):
                await conn.close()
        await self.conn.close()
        await cleanup.delete_rabbitmq(
            self.target.url, queues=[self.target.queue], exchanges=[self.target.exchange]
        )


_SESSIONS: dict[str, type[Session]] = {
    "memory": MemorySession,
    "kafka": KafkaSession,
    "nats": NatsSession,
    "rabbitmq": RabbitSession,
}


class RawSide(Side):
    name = "raw client"

    def guarantees(self, transport: str) -> str:
        return {
            "memory": "asyncio.Queue; task_done after handler",
            "kafka": "confluent-kafka: idempotent producer acks=all, delivery report per "
            "record; offset stored after the handler, async commit per consume() "
            "batch; handler on the consumer thread",
            "nats": "nats-py: JetStream publish, PubAck awaited (256 in flight), Nats-Msg-Id; "
            "durable pull consumer fetch(batch), ack after the handler",
            "rabbitmq": "aio-pika: publisher confirms (1000 in flight), persistent, mandatory; "
            "quorum queue, manual ack after the handler, same prefetch",
        }[transport]

    def session(self, target: Target, settings: Settings) -> Session:
        return _SESSIONS[target.transport](target, settings)
