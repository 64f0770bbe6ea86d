"""The mesh side: ``Mesh(url)`` apps, ``@mesh.on(type, group=..., max_in_flight=...)``.

One publisher app and N consumer apps (the group), each a `Mesh` with its own
transport connection, as N processes of one service would be. Throughput uses
``publish_many``; latency ``publish``. Idempotency stays at its default for groups
(on: an in-memory store per app) unless the side is built with ``idempotency=False``.

Capabilities are disabled in these apps: the registry's broadcast subscriptions
and heartbeats are not part of the measured path, and on Kafka each would cost a
group join per app start. The dead-letter channel is per run, so nothing is left
behind on the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import cleanup
from benchmarks.common import Handler, Session, Settings, Side, Target
from mesh import Attempt, Event, Mesh, Middleware
from mesh.middleware import HandleNext, PublishNext

SOURCE = "/bench/publisher"


def transport_options(target: Target, settings: Settings) -> dict[str, Any]:
    if target.transport == "kafka":
        return {
            "partitions": settings.kafka_partitions,
            "producer_config": {"linger.ms": settings.kafka_linger_ms},
            "consumer_config": {
                "fetch.wait.max.ms": settings.kafka_fetch_wait_ms,
                "session.timeout.ms": settings.kafka_session_timeout_ms,
                "heartbeat.interval.ms": settings.kafka_heartbeat_ms,
            },
        }
    if target.transport == "nats":
        return {"stream": target.stream, "subject_prefix": target.subject_prefix}
    if target.transport == "rabbitmq":
        return {"exchange": target.exchange}
    return {}


class PassThrough(Middleware):
    """A middleware that only passes on: the cost of a chain with one link per hook."""

    async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
        await call_next(event, channel)

    async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
        await call_next(attempt)


def observed() -> list[Middleware]:
    """Tracing on the OpenTelemetry SDK (a batch processor whose exporter drops the
    spans: the SDK's whole cost, no I/O) and Prometheus metrics in a private registry."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from mesh.metrics import Metrics
    from mesh.otel import Tracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=65536))
    return [Tracing(tracer_provider=provider), Metrics()]


class MeshSession(Session):
    def __init__(
        self, target: Target, settings: Settings, idempotency: bool, middleware: str = ""
    ) -> None:
        super().__init__(target, settings)
        self.idempotency = idempotency
        self.middleware = middleware
        self.url = f"memory://bench{target.run}" if target.transport == "memory" else target.url
        self.publisher: Mesh | None = None
        self.consumers: list[Mesh] = []

    def _mesh(self) -> Mesh:
        return Mesh(
            self.url,
            source=SOURCE,
            transport_options=transport_options(self.target, self.settings),
            idempotency={"enabled": self.idempotency},
            capabilities={"enabled": False},
            dead_letter_channel=f"bench.r{self.target.run}.deadletter",
            middleware=(
                [PassThrough()]
                if self.middleware == "pass-through"
                else observed()
                if self.middleware == "observed"
                else []
            ),
        )

    async def open(self) -> None:
        if self.target.transport == "kafka":  # every side reads the same partition layout
            await asyncio.to_thread(
                cleanup.create_kafka_topics,
                self.target.url,
                [self.target.channel],
                self.settings.kafka_partitions,
            )
        self.publisher = self._mesh()
        await self.publisher.start()
        if self.target.transport != "memory":
            await self.publisher.publish(Event(self.target.warmup_channel, SOURCE, {}))

    async def declare(self) -> None:
        assert self.publisher is not None
        await self.publisher.transport.ensure_group(self.target.channel, self.target.group)

    async def start_consumers(
        self, count: int, handler: Handler, *, threaded: Callable[[int, float], None] | None = None
    ) -> None:
        apps = []
        for _ in range(count):
            app = self._mesh()

            @app.on(
                self.target.channel,
                group=self.target.group,
                max_in_flight=self.settings.max_in_flight,
            )
            async def handle(event: Event) -> None:
                handler(event.data)

            apps.append(app)
        self.consumers = apps
        # together: on Kafka the members then join the group in one round; each
        # start() returns once its member has partitions
        await asyncio.gather(*(app.start() for app in apps))

    async def publish_batch(self, items: Sequence[dict[str, Any]]) -> None:
        assert self.publisher is not None
        channel = self.target.channel
        await self.publisher.publish_many([Event(channel, SOURCE, data) for data in items])

    async def publish(self, item: dict[str, Any]) -> None:
        assert self.publisher is not None
        await self.publisher.publish(Event(self.target.channel, SOURCE, item))

    async def close(self) -> None:
        await asyncio.gather(
            *(app.stop(timeout=1.0) for app in self.consumers), return_exceptions=True
        )
        target = self.target
        if self.publisher is not None:
            if target.transport == "rabbitmq" and self.publisher.started:
                await self.publisher.transport.delete_channels(">")  # every group queue
            await self.publisher.stop(timeout=1.0)
        if target.transport == "memory":
            from mesh.transports import memory

            memory._NAMED.pop(f"bench{target.run}", None)  # drop the named broker's queues
        elif target.transport == "kafka":
            await asyncio.to_thread(
                cleanup.delete_kafka_topics,
                target.url,
                [target.channel, target.warmup_channel, f"bench.r{target.run}.deadletter"],
            )
        elif target.transport == "nats":
            await cleanup.delete_nats_stream(target.url, target.stream)
        elif target.transport == "rabbitmq":
            dlx = f"{target.exchange}.dlx"
            await cleanup.delete_rabbitmq(
                target.url, queues=[dlx], exchanges=[target.exchange, dlx]
            )


class MeshSide(Side):
    """``middleware``: "" (none), "pass-through" (a middleware that only passes on:
    the chain's own cost) or "observed" (`observed`: tracing and metrics on)."""

    NAMES = {"pass-through": " + pass-through middleware", "observed": " + tracing + metrics"}

    def __init__(self, idempotency: bool = True, middleware: str = "") -> None:
        self.idempotency, self.middleware = idempotency, middleware
        self.name = "mesh" if idempotency else "mesh (idempotency off)"
        self.name += self.NAMES.get(middleware, "")

    def guarantees(self, transport: str) -> str:
        idem = (
            "idempotency store on (default for groups)"
            if self.idempotency
            else "idempotency store off"
        )
        return {
            "memory": f"in-process queue; ack after handler; {idem}",
            "kafka": "idempotent producer acks=all, delivery report per event; offsets stored "
            "after the handler, committed every 0.5 s (watermark); " + idem,
            "nats": "JetStream publish, PubAck awaited (256 in flight), Nats-Msg-Id; pull "
            "consumer, explicit ack after the handler; " + idem,
            "rabbitmq": "publisher confirms (1000 in flight), persistent, mandatory; quorum "
            "queue, manual ack after the handler, prefetch = max_in_flight; " + idem,
        }[transport]

    def session(self, target: Target, settings: Settings) -> Session:
        return MeshSession(target, settings, self.idempotency, self.middleware)
