"""OpenTelemetry tracing (issue 12) on the memory transport, with the SDK's in-memory
span exporter: one trace across a chain of agents, span kinds, parents and links,
attributes, failing attempts, capability requests, invalid trace context, and the
error when the extra is missing. mesh.testing.mesh_cases runs a chain on every broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mesh import ConfigError, Context, Event, Mesh, NoProvider, RetryLater
from mesh.otel import OTelMetrics, Tracing
from mesh.testing.util import wait_until

FAST = {"max_attempts": 3, "initial_backoff": 0.001, "max_backoff": 0.005}
VALID_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def tracing(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(tracer_provider=provider)


def broker() -> str:
    return f"memory://otel-{uuid.uuid4().hex[:8]}"


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_a_chain_of_three_agents_is_one_trace(exporter: InMemorySpanExporter) -> None:
    mesh = Mesh(broker(), middleware=[tracing(exporter)], retry=FAST)
    done: list[Event] = []
    c_calls = 0

    @mesh.on("step.one", group="a")
    async def agent_a(event: Event, ctx: Context) -> None:
        await ctx.emit("step.two", {"from": "a"})

    @mesh.on("step.two", group="b")
    async def agent_b(event: Event, ctx: Context) -> None:
        await ctx.emit("step.three", {"from": "b"}, subject="final")

    @mesh.on("step.three", group="c")
    async def agent_c(event: Event) -> None:
        nonlocal c_calls
        c_calls += 1
        if c_calls == 1:
            raise TimeoutError("model timed out")
        done.append(event)

    async with mesh:
        await mesh.publish(Event("step.one", "/user", {"q": "why"}, correlationid="session-7"))
        await wait_until(lambda: len(done) == 1, 5, "the chain to finish")
        await wait_until(
            lambda: len(by_name(exporter.get_finished_spans(), "process step.three")) == 2,
            5,
            "C's spans",
        )
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1, "one session, one trace"
    send1, send2, send3 = (by_name(spans, f"send step.{n}")[0] for n in ("one", "two", "three"))
    proc1 = by_name(spans, "process step.one")[0]
    proc2 = by_name(spans, "process step.two")[0]
    failed, ok = sorted(
        by_name(spans, "process step.three"), key=lambda s: s.attributes["mesh.attempt"]
    )
    assert send1.parent is None and send1.kind is SpanKind.PRODUCER
    for producer, consumer in ((send1, proc1), (send2, proc2), (send3, failed), (send3, ok)):
        assert consumer.kind is SpanKind.CONSUMER
        assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
        assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    assert send2.parent.span_id == proc1.context.span_id  # emitted inside A's span
    assert send3.parent.span_id == proc2.context.span_id
    attrs = proc1.attributes
    assert attrs["messaging.system"] == "memory"
    assert attrs["messaging.operation.name"] == attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.name"] == "step.one"
    assert attrs["messaging.consumer.group.name"] == "a"
    assert attrs["messaging.message.conversation_id"] == "session-7"
    assert attrs["cloudevents.event_type"] == "step.one"
    assert attrs["cloudevents.event_source"] == "/user"
    assert attrs["messaging.message.id"] == attrs["cloudevents.event_id"]
    assert send1.attributes["messaging.operation.type"] == "send"
    assert send3.attributes["cloudevents.event_subject"] == "final"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "TimeoutError"
    assert [e.name for e in failed.events] == ["exception", "mesh.retry"]
    assert ok.status.status_code is StatusCode.UNSET and ok.attributes["mesh.attempt"] == 2
    # what travelled carries the span that sent it
    assert done[0].traceparent is not None
    assert done[0].traceparent.split("-")[2] == format(send3.context.span_id, "016x")


async def test_publish_many_is_one_send_span_for_the_batch(
    exporter: InMemorySpanExporter,
) -> None:
    mesh = Mesh(broker(), middleware=[tracing(exporter)])
    got: list[Event] = []

    @mesh.on("row", group="g")
    async def rows(event: Event) -> None:
        got.append(event)

    async with mesh:
        await mesh.publish_many([Event("row", "/t", {"n": n}) for n in range(3)])
        await wait_until(lambda: len(got) == 3, 5, "three rows")
        await wait_until(
            lambda: len(by_name(exporter.get_finished_spans(), "process row")) == 3, 5, "spans"
        )
    spans = exporter.get_finished_spans()
    (send,) = by_name(spans, "send row")
    assert send.attributes["messaging.batch.message_count"] == 3
    assert all(s.parent.span_id == send.context.span_id for s in by_name(spans, "process row"))


async def test_dead_lettering_and_retry_later_are_span_events(
    exporter: InMemorySpanExporter,
) -> None:
    mesh = Mesh(broker(), middleware=[tracing(exporter)], retry=FAST, hop_limit=1)
    later = 0

    @mesh.on("doomed", group="g1")
    async def doomed(event: Event) -> None:
        raise ValueError("no such customer")

    @mesh.on("busy", group="g2")
    async def busy(event: Event) -> None:
        nonlocal later
        later += 1
        if later == 1:
            raise RetryLater(0.01)

    async with mesh:
        await mesh.publish(Event("doomed", "/t", {}))
        await mesh.publish(Event("busy", "/t", {}))
        await mesh.publish(Event("busy", "/t", {}, meshhops=5))  # past the hop limit
        await wait_until(lambda: mesh.stats("doomed").dead_lettered == 1, 5, "dead letter")
        await wait_until(
            lambda: mesh.stats("busy").handled == 1 and mesh.stats("busy").dead_lettered == 1,
            5,
            "busy",
        )
    spans = exporter.get_finished_spans()
    last = max(by_name(spans, "process doomed"), key=lambda s: s.attributes["mesh.attempt"])
    assert last.attributes["mesh.attempt"] == 3
    event = next(e for e in last.events if e.name == "mesh.dead_lettered")
    assert event.attributes["mesh.reason"] == "no such customer"
    busy_spans = by_name(spans, "process busy")
    names = sorted(e.name for s in busy_spans for e in s.events if e.name.startswith("mesh."))
    assert names == ["mesh.hop_limit", "mesh.retry_later"]
    hop = next(s for s in busy_spans if any(e.name == "mesh.hop_limit" for e in s.events))
    assert hop.status.status_code is StatusCode.ERROR


async def test_a_capability_request_joins_the_callers_trace(
    exporter: InMemorySpanExporter,
) -> None:
    provider_mesh = Mesh(
        url := broker(),
        middleware=[tracing(exporter)],
        capabilities={"heartbeat": 60, "resync_wait": 0.5},
    )
    caller = Mesh(
        url, middleware=[tracing(exporter)], capabilities={"heartbeat": 60, "resync_wait": 0.5}
    )

    @provider_mesh.capability("summarize", description="summarize text")
    async def summarize(event: Event) -> dict[str, str]:
        return {"summary": str(event.data["text"])[:5]}

    async with provider_mesh, caller:
        await wait_until(lambda: bool(caller.capabilities()), 5, "the capability to be known")
        reply = await caller.request("summarize", {"text": "a long text"}, timeout=5)
    assert reply.data == {"summary": "a lon"}
    spans = exporter.get_finished_spans()
    client = by_name(spans, "request summarize")[0]
    assert client.kind is SpanKind.CLIENT
    send = next(
        s
        for s in spans
        if s.kind is SpanKind.PRODUCER
        and s.parent is not None
        and s.parent.span_id == client.context.span_id
    )
    handler = next(
        s
        for s in spans
        if s.kind is SpanKind.CONSUMER
        and s.attributes.get("mesh.handler") == "capability:summarize"
    )
    assert handler.parent.span_id == send.context.span_id
    assert handler.context.trace_id == client.context.trace_id


async def test_an_invalid_traceparent_starts_a_new_trace_and_is_counted(
    exporter: InMemorySpanExporter,
) -> None:
    tracer = tracing(exporter)
    plain = Mesh(url := broker())  # publishes as it gets it: no tracing on this side
    traced = Mesh(url, middleware=[tracer])
    got: list[Event] = []

    @traced.on("odd", group="g")
    async def odd(event: Event) -> None:
        got.append(event)

    async with traced, plain:
        await plain.publish(Event("odd", "/t", {}, traceparent="00-not-a-trace-01"))
        await plain.publish(Event("odd", "/t", {}, traceparent=VALID_PARENT))
        await wait_until(lambda: len(got) == 2, 5, "both handled")
    assert traced.stats("odd").dead_lettered == 0 and tracer.invalid_parents == 1
    spans = by_name(exporter.get_finished_spans(), "process odd")
    fresh = next(s for s in spans if s.parent is None)
    continued = next(s for s in spans if s.parent is not None)
    assert fresh.links == () or list(fresh.links) == []
    assert format(continued.context.trace_id, "032x") == VALID_PARENT.split("-")[1]


def test_one_tracing_instance_per_mesh() -> None:
    shared = Tracing()
    Mesh(broker(), middleware=[shared])
    with pytest.raises(ConfigError, match="give each mesh its own"):
        Mesh(broker(), middleware=[shared])


def test_without_the_extra_the_error_names_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import mesh.otel\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ConfigError")
    assert "pip install 'event-mesh[otel]'" in out.stdout


async def test_otel_metrics_use_the_conventions_names() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    mesh = Mesh(broker(), middleware=[OTelMetrics(meter_provider=provider)], retry=FAST)
    calls = 0

    @mesh.on("job", group="g")
    async def work(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("once")

    async with mesh:
        await mesh.publish_many([Event("job", "/t", {}) for _ in range(2)])
        await wait_until(lambda: mesh.stats("work").handled == 2, 5, "both handled")
        with pytest.raises(NoProvider):
            await mesh.request("nobody", {})
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)

    def total(name: str, **attributes: str) -> float:
        return sum(
            getattr(p, "value", getattr(p, "count", 0))
            for p in points[name]
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )

    assert total("messaging.client.sent.messages", **{"messaging.destination.name": "job"}) == 2
    assert total("messaging.client.operation.duration", **{"messaging.system": "memory"}) == 1
    consumed = {"messaging.consumer.group.name": "g", "mesh.handler": "work"}
    assert total("messaging.client.consumed.messages", **consumed) == 2
    assert total("messaging.process.duration", **{"mesh.outcome": "acked"}) == 2
    assert total("messaging.process.duration", **{"error.type": "ValueError"}) == 1
    assert total("mesh.outcomes", **{"mesh.outcome": "retried"}) == 1
    assert total("mesh.in_flight") == 0
    assert total("mesh.request.duration", **{"mesh.outcome": "no_provider"}) == 1


async def test_an_attempt_cut_short_by_stop_is_marked_cancelled(
    exporter: InMemorySpanExporter,
) -> None:
    mesh = Mesh(broker(), middleware=[tracing(exporter)])
    started = asyncio.Event()

    @mesh.on("slow", group="g")
    async def slow(event: Event) -> None:
        started.set()
        await asyncio.sleep(60)

    await mesh.start()
    await mesh.publish(Event("slow", "/t", {}))
    await asyncio.wait_for(started.wait(), 5)
    await mesh.stop(timeout=0)
    (span,) = by_name(exporter.get_finished_spans(), "process slow")
    assert [e.name for e in span.events] == ["mesh.cancelled"]
    assert span.status.status_code is StatusCode.ERROR
