"""Mesh-level conformance cases: the delivery semantics, run through the `Mesh` API.

Mixed into `mesh.testing.conformance.TransportConformance`, so every transport
proves retries, dead-lettering, loop protection, deduplication, derived ids and
``RetryLater`` on its own broker, not only on the memory transport.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import pytest_asyncio
from pydantic import BaseModel

from mesh.app import Mesh
from mesh.batch import BatchPolicy
from mesh.context import Context
from mesh.dlq import DL_ATTEMPTS, DL_CHANNEL, DL_ERROR, DL_GROUP, DL_ID, DL_REASON
from mesh.errors import (
    ContractViolation,
    DeadLetter,
    MeshError,
    NoProvider,
    RemoteError,
    RetryLater,
)
from mesh.event import Event
from mesh.middleware import Attempt, HandleNext, Middleware, Outcome, PublishNext
from mesh.testing.brokers import in_ci
from mesh.testing.util import scaled, wait_until

if TYPE_CHECKING:
    from mesh.transport import Transport, TransportFeatures

MeshFactory = Callable[..., Awaitable[Mesh]]


class _Task(BaseModel):
    title: str
    priority: int


class _Route(BaseModel):
    order: str
    stops: int = 1


class MeshCases:
    """Mesh-level cases; needs ``make_transport``, ``prefix``, ``settle_time`` and
    ``timeout`` from the transport suite."""

    prefix: str
    settle_time: ClassVar[float]
    timeout: ClassVar[float]
    features: ClassVar[TransportFeatures]

    async def make_transport(self) -> Transport:
        raise NotImplementedError

    async def publish_undecodable(self, transport: Transport, channel: str) -> None:
        raise NotImplementedError

    @pytest_asyncio.fixture
    async def meshes(self) -> AsyncIterator[MeshFactory]:
        """``await new(**config)`` builds an unstarted Mesh on a fresh transport; all are
        stopped at the end. Each case gets its own dead-letter channel."""
        made: list[Mesh] = []

        async def new(**config: Any) -> Mesh:
            config.setdefault("dead_letter_channel", f"{self.prefix}.deadletter")
            config.setdefault(
                "retry", {"max_attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.05}
            )
            config.setdefault("shutdown_timeout", 5)
            # the registry costs two broadcast subscriptions per mesh; cases that need
            # capabilities turn it on
            config.setdefault("capabilities", {"enabled": False})
            mesh = Mesh(await self.make_transport(), **config)
            made.append(mesh)
            return mesh

        yield new
        for mesh in made:
            await mesh.stop(timeout=1)
        if made:
            await self.delete_case_channels()

    async def delete_case_channels(self) -> None:
        """Delete this case's channels through a fresh transport, after every other one
        closed (some clients crash when a topic vanishes under a live consumer)."""
        cleaner = await self.make_transport()
        try:
            await cleaner.connect()
            await cleaner.delete_channels(f"{self.prefix}.>")
        except MeshError:
            pass
        finally:
            await cleaner.close()

    async def started(self, *meshes: Mesh) -> None:
        for mesh in meshes:
            await mesh.start()
        if self.settle_time:
            await asyncio.sleep(self.settle_time)

    def t(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    # --- cases ---------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_mesh_retry_then_dead_letter_exactly_once(self, meshes: MeshFactory) -> None:
        mesh = await meshes()
        calls = 0
        dead: list[Event] = []

        @mesh.on(self.t("job"), group=f"{self.prefix}-workers")
        async def work(event: Event) -> None:
            nonlocal calls
            calls += 1
            raise ValueError("model output unparsable")

        @mesh.on_dead_letter(group=f"{self.prefix}-repair")
        async def repair(event: Event) -> None:
            dead.append(event)

        await self.started(mesh)
        sent = Event(self.t("job"), "/test", {"x": 1})
        await mesh.publish(sent)
        await wait_until(lambda: len(dead) >= 1, self.timeout, "the dead-letter copy")
        await asyncio.sleep(0.5 + self.settle_time)
        assert len(dead) == 1, "exactly one dead-letter copy"
        assert calls == 3
        copy = dead[0]
        assert copy.type == sent.type and copy.data == sent.data
        assert copy.extensions[DL_ERROR] == "ValueError"
        assert copy.extensions[DL_REASON] == "model output unparsable"
        assert str(copy.extensions[DL_ATTEMPTS]) == "3"
        assert copy.extensions[DL_GROUP] == f"{self.prefix}-workers"
        assert copy.extensions[DL_CHANNEL] == self.t("job")
        assert copy.extensions[DL_ID] == sent.id and copy.id != sent.id
        assert mesh.stats("work").dead_lettered == 1

    @pytest.mark.asyncio
    async def test_mesh_middleware_sees_publishes_attempts_and_skips(
        self, meshes: MeshFactory
    ) -> None:
        """The middleware chain on this broker: what a publish hook adds travels, every
        attempt reports its outcome, a filtered delivery is reported as skipped."""
        seen: list[tuple[int, int, Outcome | None, str | None]] = []

        class Watch(Middleware):
            async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
                await call_next(event.replace(mwstamp="on"), channel)

            async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
                await call_next(attempt)
                n = attempt.event.data["n"] if attempt.event is not None else -1
                seen.append((n, attempt.number, attempt.outcome, attempt.reason))

            def skipped(self, attempt: Attempt) -> None:
                n = attempt.event.data["n"] if attempt.event is not None else -1
                seen.append((n, 0, attempt.outcome, attempt.reason))

        mesh = await meshes(middleware=[Watch()])
        stamps: list[object] = []
        calls: Counter[int] = Counter()

        @mesh.on(self.t("mw"), group=f"{self.prefix}-mw", filter={"exact": {"subject": "go"}})
        async def work(event: Event) -> None:
            n = event.data["n"]
            calls[n] += 1
            stamps.append(event.extensions.get("mwstamp"))
            if n == 1 and calls[n] == 1:
                raise ValueError("flaky once")
            if n == 2:
                raise DeadLetter("never")

        await self.started(mesh)
        for n, subject in ((0, "go"), (1, "go"), (2, "go"), (3, "stop")):
            await mesh.publish(Event(self.t("mw"), "/t", {"n": n}, subject=subject))
        await wait_until(lambda: len(seen) >= 5, self.timeout, "every outcome")
        await asyncio.sleep(self.settle_time)
        assert sorted(seen) == [
            (0, 1, Outcome.ACKED, None),
            (1, 1, Outcome.RETRIED, None),
            (1, 2, Outcome.ACKED, None),
            (2, 1, Outcome.DEAD_LETTERED, "never"),
            (3, 0, Outcome.FILTERED, None),
        ]
        assert stamps == ["on"] * 4

    @pytest.mark.asyncio
    async def test_mesh_tracing_follows_a_chain_as_one_trace(self, meshes: MeshFactory) -> None:
        """OpenTelemetry tracing (`mesh.otel`, needs the otel extra) on this broker: a
        publish and two agents' follow-ups are one trace, each process span the child of
        the send span whose context travelled in the event's ``traceparent``."""
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            message = "the otel extra is not installed: pip install 'event-mesh[otel]'"
            pytest.fail(message) if in_ci() else pytest.skip(message)
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from mesh.otel import Tracing

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        mesh = await meshes(middleware=[Tracing(tracer_provider=provider)])
        done: list[Event] = []

        @mesh.on(self.t("tr.one"), group=f"{self.prefix}-tr1")
        async def first(event: Event, ctx: Context) -> None:
            await ctx.emit(self.t("tr.two"), {})

        @mesh.on(self.t("tr.two"), group=f"{self.prefix}-tr2")
        async def second(event: Event) -> None:
            done.append(event)

        await self.started(mesh)
        await mesh.publish(Event(self.t("tr.one"), "/t", {}))
        await wait_until(lambda: len(done) == 1, self.timeout, "the chain")

        def spans(name: str) -> list[Any]:
            return [s for s in exporter.get_finished_spans() if s.name == name]

        await wait_until(lambda: bool(spans(f"process {self.t('tr.two')}")), 5, "spans")
        (send1,) = spans(f"send {self.t('tr.one')}")
        (proc1,) = spans(f"process {self.t('tr.one')}")
        (send2,) = spans(f"send {self.t('tr.two')}")
        (proc2,) = spans(f"process {self.t('tr.two')}")
        assert len({s.context.trace_id for s in (send1, proc1, send2, proc2)}) == 1
        assert proc1.parent.span_id == send1.context.span_id
        assert send2.parent.span_id == proc1.context.span_id
        assert proc2.parent.span_id == send2.context.span_id
        system = type(mesh.transport).wire.system or type(mesh.transport).schemes[0]
        assert proc2.attributes["messaging.system"] == system
        assert proc2.attributes["messaging.consumer.group.name"] == f"{self.prefix}-tr2"

    @pytest.mark.asyncio
    async def test_mesh_metrics_scrape_shows_counters_and_lag_back_to_zero(
        self, meshes: MeshFactory
    ) -> None:
        """Prometheus metrics (`mesh.metrics`, the prometheus extra) on this broker, read
        over HTTP: consumed and processed counters move, the lag gauge (when the transport
        declares ``backlog``) shows what waits and returns to 0."""
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:
            message = "the prometheus extra is not installed: pip install 'event-mesh[prometheus]'"
            pytest.fail(message) if in_ci() else pytest.skip(message)
        import urllib.request

        mesh = await meshes(metrics_port=0, metrics_host="127.0.0.1", metrics_interval=0.1)
        gate = asyncio.Event()
        handled: list[int] = []

        @mesh.on(self.t("mx"), group=f"{self.prefix}-mx", max_in_flight=1)
        async def work(event: Event) -> None:
            await gate.wait()
            handled.append(event.data["n"])

        await self.started(mesh)
        from mesh.metrics import Metrics

        port = next(m for m in mesh.middleware if isinstance(m, Metrics)).port

        def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            return {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }

        def value(samples: dict[Any, float], name: str, **labels: str) -> float:
            return sum(
                v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls
            )

        async def until(check: Callable[[dict[Any, float]], bool], what: str) -> None:
            deadline = asyncio.get_running_loop().time() + self.timeout
            while True:
                samples = await asyncio.to_thread(scrape)
                if check(samples):
                    return
                assert asyncio.get_running_loop().time() < deadline, f"{what}: {samples}"
                await asyncio.sleep(0.1)

        group = f"{self.prefix}-mx"
        for n in range(10):  # one at a time: Tansu's end offsets stop at a batch's first record
            await mesh.publish(Event(self.t("mx"), "/t", {"n": n}))
        if self.features.backlog:
            await until(lambda s: value(s, "mesh_consumer_lag", group=group) >= 5, "lag")
        gate.set()
        await wait_until(lambda: len(handled) == 10, self.timeout, "every event")
        who = {"handler": "work", "group": group}
        await until(
            lambda s: (
                value(s, "mesh_outcomes_total", outcome="acked", **who) == 10
                and value(s, "mesh_messages_consumed_total", **who) == 10
            ),
            "the counters",
        )
        if self.features.backlog:
            await until(lambda s: value(s, "mesh_consumer_lag", group=group) == 0, "lag at 0")

    @pytest.mark.asyncio
    async def test_mesh_invalid_data_dead_letters_without_retry(self, meshes: MeshFactory) -> None:
        mesh = await meshes()
        handled: list[_Task] = []
        dead: list[Event] = []

        @mesh.on(self.t("task"), group=f"{self.prefix}-typed")
        async def typed(task: _Task, ctx: Context) -> None:
            handled.append(task)

        @mesh.on_dead_letter()
        async def dlq(event: Event) -> None:
            dead.append(event)

        await self.started(mesh)
        await mesh.publish(Event(self.t("task"), "/t", {"title": "ok", "priority": 1}))
        await mesh.publish(Event(self.t("task"), "/t", {"title": "bad", "priority": "high"}))
        await wait_until(
            lambda: len(handled) == 1 and len(dead) == 1,
            self.timeout,
            "one handled and one dead-lettered",
        )
        assert handled[0] == _Task(title="ok", priority=1)
        assert dead[0].extensions[DL_ERROR] == "DataValidationError"
        assert "priority" in str(dead[0].extensions[DL_REASON])
        assert str(dead[0].extensions[DL_ATTEMPTS]) == "1"

    @pytest.mark.asyncio
    async def test_mesh_hop_limit_stops_a_loop(self, meshes: MeshFactory) -> None:
        mesh = await meshes(hop_limit=5)
        hops: list[int] = []
        alerts: list[Event] = []
        dead: list[Event] = []

        @mesh.on(self.t("ping"), group=f"{self.prefix}-pinger")
        async def ping(event: Event, ctx: Context) -> None:
            hops.append(event.meshhops)
            await ctx.emit(self.t("ping"), {"again": True})

        @mesh.on("mesh.loop.detected", filter={"prefix": {"source": "/"}})  # broadcast:
        # leaves no durable group behind on the shared mesh.loop.detected channel
        async def alert(event: Event) -> None:
            if event.data.get("type") == self.t("ping"):
                alerts.append(event)

        @mesh.on_dead_letter()
        async def dlq(event: Event) -> None:
            dead.append(event)

        await self.started(mesh)
        first = Event(self.t("ping"), "/t", {})
        await mesh.publish(first)
        await wait_until(lambda: bool(alerts and dead), self.timeout, "loop detection")
        assert hops == [0, 1, 2, 3, 4, 5]
        assert alerts[0].data["hops"] == 6 and alerts[0].correlationid == first.id
        assert dead[0].extensions[DL_ERROR] == "HopLimitExceeded"

    @pytest.mark.asyncio
    async def test_mesh_suppresses_duplicates_per_group(self, meshes: MeshFactory) -> None:
        mesh = await meshes()
        seen: Counter[str] = Counter()

        @mesh.on(self.t("order"), group=f"{self.prefix}-billing")
        async def bill(event: Event) -> None:
            seen[event.id] += 1

        await self.started(mesh)
        event = Event(self.t("order"), "/shop", {"total": 10})
        await mesh.publish(event)
        await wait_until(lambda: seen[event.id] == 1, self.timeout, "first delivery")
        await mesh.publish(event)  # the same (source, id): a duplicate
        await wait_until(
            lambda: mesh.stats("bill").duplicates == 1, self.timeout, "duplicate acked unseen"
        )
        assert seen[event.id] == 1

    @pytest.mark.asyncio
    async def test_mesh_derived_ids_are_deterministic(self, meshes: MeshFactory) -> None:
        mesh = await meshes()
        emitted: list[list[str]] = []
        downstream: Counter[str] = Counter()

        @mesh.on(self.t("question"), group=f"{self.prefix}-planner")
        async def plan(event: Event, ctx: Context) -> None:
            ids = [(await ctx.emit(self.t("subtask"), {"i": i})).id for i in range(3)]
            emitted.append(ids)
            if len(emitted) == 1:
                raise RuntimeError("crash after emitting")

        @mesh.on(self.t("subtask"), group=f"{self.prefix}-solver")
        async def solve(event: Event) -> None:
            downstream[event.id] += 1

        await self.started(mesh)
        await mesh.publish(Event(self.t("question"), "/t", {"q": "why?"}))
        await wait_until(
            lambda: len(emitted) == 2 and mesh.stats("solve").duplicates >= 3,
            self.timeout,
            "retry re-emitting the same ids",
        )
        assert emitted[0] == emitted[1]
        assert all(count == 1 for count in downstream.values()) and len(downstream) == 3

    @pytest.mark.asyncio
    async def test_mesh_retry_later_is_not_a_failed_attempt(self, meshes: MeshFactory) -> None:
        mesh = await meshes(retry={"max_attempts": 1, "initial_backoff": 0.01})
        calls = 0
        done = asyncio.Event()

        @mesh.on(self.t("llm"), group=f"{self.prefix}-llm")
        async def call_llm(event: Event) -> None:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise RetryLater(after=0.2, reason="429 Too Many Requests")
            done.set()

        await self.started(mesh)
        await mesh.publish(Event(self.t("llm"), "/t", {}))
        await asyncio.wait_for(done.wait(), self.timeout)
        stats = mesh.stats("call_llm")
        assert stats.retry_later == 2 and stats.failed_attempts == 0
        assert stats.dead_lettered == 0 and stats.handled == 1

    @pytest.mark.asyncio
    async def test_mesh_undecodable_message_is_dead_lettered(self, meshes: MeshFactory) -> None:
        mesh = await meshes()
        dead: list[Event] = []

        @mesh.on(self.t("in"), group=f"{self.prefix}-reader")
        async def read(event: Event) -> None:
            pass

        @mesh.on_dead_letter()
        async def dlq(event: Event) -> None:
            dead.append(event)

        await self.started(mesh)
        await self.publish_undecodable(mesh.transport, self.t("in"))
        await mesh.publish(Event(self.t("in"), "/t", {"after": "garbage"}))
        await wait_until(
            lambda: bool(dead) and mesh.stats("read").handled == 1,
            self.timeout,
            "the garbage dead-lettered and the next event handled",
        )
        assert dead[0].type == "mesh.undecodable"
        assert dead[0].extensions[DL_ERROR] == "DecodeError"
        assert isinstance(dead[0].data, bytes)

    @pytest.mark.asyncio
    async def test_mesh_poison_event_does_not_block_the_rest(self, meshes: MeshFactory) -> None:
        mesh = await meshes(retry={"max_attempts": 3, "initial_backoff": 0.3, "max_backoff": 0.3})
        good: list[int] = []
        dead: list[Event] = []

        @mesh.on(self.t("item"), group=f"{self.prefix}-items", max_in_flight=4)
        async def item(event: Event) -> None:
            if event.data["poison"]:
                raise RuntimeError("poison")
            good.append(event.data["n"])

        @mesh.on_dead_letter()
        async def dlq(event: Event) -> None:
            dead.append(event)

        await self.started(mesh)
        await mesh.publish(Event(self.t("item"), "/t", {"poison": True, "n": -1}))
        n = scaled(50, 10)
        await mesh.publish_many(
            [Event(self.t("item"), "/t", {"poison": False, "n": i}) for i in range(n)]
        )
        await wait_until(lambda: len(good) == n, self.timeout, "the good events")
        assert not dead, "good events must not wait for the poison event's retries"
        await wait_until(lambda: len(dead) == 1, self.timeout, "the poison dead-lettered")

    @pytest.mark.asyncio
    async def test_mesh_stop_redelivers_cancelled_handlers(self, meshes: MeshFactory) -> None:
        self_group = f"{self.prefix}-slow"
        first, second = await meshes(), await meshes()
        started = asyncio.Event()
        finished: list[str] = []

        @first.on(self.t("slow"), group=self_group)
        async def slow(event: Event) -> None:
            started.set()
            await asyncio.sleep(3600)

        @second.on(self.t("slow"), group=self_group)
        async def slow2(event: Event) -> None:
            finished.append(event.id)

        await self.started(first)
        event = Event(self.t("slow"), "/t", {})
        await first.publish(event)
        await asyncio.wait_for(started.wait(), self.timeout)
        await first.stop(timeout=0.1)
        assert first.stats("slow").handled == 0 and first.stats("slow").dead_lettered == 0
        await self.started(second)
        await wait_until(
            lambda: finished == [event.id],
            self.timeout,
            "the cancelled event redelivered to another instance",
        )

    @pytest.mark.asyncio
    async def test_mesh_filter_acks_and_counts_rejected_events(self, meshes: MeshFactory) -> None:
        mesh = await meshes()
        got: list[str] = []

        @mesh.on(
            filter={
                "all": [
                    {"prefix": {"type": f"{self.prefix}.doc."}},
                    {"suffix": {"subject": ".pdf"}},
                ]
            },
            group=f"{self.prefix}-pdf",
        )
        async def pdf(event: Event) -> None:
            got.append(str(event.subject))

        await self.started(mesh)
        for subject in ("a.pdf", "b.txt", "c.pdf"):
            await mesh.publish(Event(self.t("doc.uploaded"), "/t", {}, subject=subject))
        await wait_until(
            lambda: len(got) == 2 and mesh.stats("pdf").filtered == 1,
            self.timeout,
            "two matches and one filtered",
        )
        assert sorted(got) == ["a.pdf", "c.pdf"]

    @pytest.mark.asyncio
    async def test_mesh_cesql_filter_with_data_access(self, meshes: MeshFactory) -> None:
        mesh = await meshes()
        got: list[int] = []

        @mesh.on(
            filter={
                "sql": f"type LIKE '{self.prefix}.alert.%' AND data.severity > 3 AND EXISTS subject"
            },
            group=f"{self.prefix}-escalation",
        )
        async def escalate(event: Event) -> None:
            got.append(event.data["severity"])

        await self.started(mesh)
        for severity in (1, 5, 9):
            await mesh.publish(
                Event(self.t("alert.disk"), "/t", {"severity": severity}, subject="host-1")
            )
        await mesh.publish(Event(self.t("alert.cpu"), "/t", {"severity": 7}))  # no subject
        await wait_until(
            lambda: len(got) == 2 and mesh.stats("escalate").filtered == 2,
            self.timeout,
            "two escalations and two filtered",
        )
        assert sorted(got) == [5, 9]

    @pytest.mark.asyncio
    async def test_mesh_dead_letters_can_be_listed_and_replayed(self, meshes: MeshFactory) -> None:
        """Listing reads without consuming (two concurrent lists and a dead-letter handler
        all see every copy); replay reaches only the group that failed."""
        mesh, tool = await meshes(), await meshes()
        broken = True
        handled: list[Event] = []
        others: list[str] = []
        repaired: list[str] = []

        @mesh.on(self.t("fragile"), group=f"{self.prefix}-fragile")
        async def fragile(event: Event) -> None:
            if broken:
                raise RuntimeError("dependency down")
            handled.append(event)

        @mesh.on(self.t("fragile"), group=f"{self.prefix}-sturdy")
        async def sturdy(event: Event) -> None:
            others.append(event.id)

        @mesh.on_dead_letter(group=f"{self.prefix}-repair")
        async def repair(event: Event) -> None:
            repaired.append(event.id)

        await self.started(mesh, tool)
        sent = Event(self.t("fragile"), "/t", {"v": 1})
        await mesh.publish(sent)
        await wait_until(
            lambda: mesh.stats("fragile").dead_lettered == 1 and bool(others) and bool(repaired),
            self.timeout,
            "dead-lettering",
        )
        idle = 1.0 + self.settle_time
        first, second = await asyncio.gather(
            mesh.dead_letters.list(idle=idle), tool.dead_letters.list(idle=idle)
        )
        assert [e.extensions[DL_ID] for e in first] == [sent.id]
        assert [e.id for e in second] == [e.id for e in first], "a listing hid an entry"
        broken = False
        replayed = await tool.dead_letters.replay(idle=idle)
        assert len(replayed) == 1 and replayed[0].extensions["meshreplayof"] == sent.id
        await wait_until(lambda: len(handled) == 1, self.timeout, "the replayed event handled")
        assert handled[0].data == sent.data
        assert await mesh.dead_letters.list(idle=0.5 + self.settle_time) == []
        await asyncio.sleep(0.5)
        assert others == [sent.id], "a group that had succeeded ran the replay again"
        assert len(repaired) == 1, "listing or replaying redelivered a dead-letter copy"

    @pytest.mark.asyncio
    async def test_mesh_starts_again_after_stop(self, meshes: MeshFactory) -> None:
        """A stopped mesh can be started again, on every transport, and goes on
        consuming its group (nothing published while it was stopped is lost)."""
        mesh = await meshes()
        got: list[int] = []

        @mesh.on(self.t("again"), group=f"{self.prefix}-again")
        async def again(event: Event) -> None:
            got.append(event.data["n"])

        await self.started(mesh)
        await mesh.publish(Event(self.t("again"), "/t", {"n": 1}))
        await wait_until(lambda: got == [1], self.timeout, "the first event")
        await mesh.stop()
        other = await meshes()
        await other.start()
        await other.publish(Event(self.t("again"), "/t", {"n": 2}))  # while it is stopped
        await self.started(mesh)
        await mesh.publish(Event(self.t("again"), "/t", {"n": 3}))
        await wait_until(
            lambda: sorted(got) == [1, 2, 3], self.timeout, "the events after the restart"
        )

    @pytest.mark.asyncio
    async def test_mesh_each_undecodable_message_is_its_own_entry(
        self, meshes: MeshFactory
    ) -> None:
        mesh = await meshes()

        @mesh.on(self.t("raw"), group=f"{self.prefix}-raw")
        async def read(event: Event) -> None:
            pass

        await self.started(mesh)
        for _ in range(3):  # the same body each time
            await self.publish_undecodable(mesh.transport, self.t("raw"))
        await wait_until(
            lambda: mesh.stats("read").dead_lettered == 3,
            self.timeout,
            "three undecodable messages dead-lettered",
        )
        listed = await mesh.dead_letters.list(idle=1.0 + self.settle_time)
        assert len({e.id for e in listed}) == 3, "different messages collapsed into one entry"

    @pytest.mark.asyncio
    async def test_mesh_message_delivered_too_often_is_dead_lettered(
        self, meshes: MeshFactory
    ) -> None:
        """``max_deliveries`` counts the broker's deliveries (a handler that kills its
        process never reaches ``max_attempts``; here it gives the event back each time)."""
        mesh = await meshes(retry={"max_attempts": 1, "initial_backoff": 0.01, "max_deliveries": 3})
        seen: list[int] = []
        dead: list[Event] = []

        @mesh.on(self.t("loop"), group=f"{self.prefix}-looping")
        async def loop(event: Event, ctx: Context) -> None:
            seen.append(ctx.redeliveries)
            raise RetryLater(0.05)

        @mesh.on_dead_letter()
        async def dlq(event: Event) -> None:
            dead.append(event)

        await self.started(mesh)
        await mesh.publish(Event(self.t("loop"), "/t", {}))
        await wait_until(lambda: len(dead) == 1, self.timeout, "the dead-letter copy")
        assert seen == [0, 1, 2]
        assert dead[0].extensions[DL_ERROR] == "DeliveryLimitExceeded"
        # the mesh's own extensions have one type on every transport
        assert dead[0].extensions[DL_ATTEMPTS] == 0 and type(dead[0].extensions[DL_ATTEMPTS]) is int
        assert isinstance(dead[0].extensions["meshdltime"], datetime)

    @pytest.mark.asyncio
    async def test_mesh_failing_dead_letter_handler_never_dead_letters(
        self, meshes: MeshFactory
    ) -> None:
        mesh = await meshes()
        runs: list[str] = []

        @mesh.on(self.t("bad"), group=f"{self.prefix}-bad")
        async def bad(event: Event) -> None:
            raise RuntimeError("fails")

        @mesh.on_dead_letter(group=f"{self.prefix}-fixer")
        async def fixer(event: Event) -> None:
            runs.append(event.id)
            raise RuntimeError("the repair fails too")

        await self.started(mesh)
        await mesh.publish(Event(self.t("bad"), "/t", {}))
        await wait_until(lambda: mesh.stats("fixer").dropped == 1, self.timeout, "the drop")
        await asyncio.sleep(1.0)
        assert len(set(runs)) == 1 and mesh.stats("fixer").dropped == 1
        assert len(await mesh.dead_letters.list(idle=1.0 + self.settle_time)) == 1

    # --- batch handlers -------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_mesh_batch_outcomes_are_per_event(self, meshes: MeshFactory) -> None:
        """A batch call fails whole once (every event of it is retried), then returns
        per-event outcomes: one event dead-lettered, one retried alone until it passes;
        the rest acked once, and nothing comes back after."""
        mesh = await meshes()
        calls: list[list[int]] = []
        passed: Counter[int] = Counter()
        flaky = 0
        dead: list[Event] = []

        @mesh.on(
            self.t("rows"),
            group=f"{self.prefix}-bulk",
            batch=BatchPolicy(max_size=6, max_wait=1.0),
        )
        async def insert(rows: list[Event]) -> dict[str, Exception]:
            nonlocal flaky
            calls.append([row.data["n"] for row in rows])
            if len(calls) == 1:
                raise ConnectionError("bulk insert failed")
            outcomes: dict[str, Exception] = {}
            for row in rows:
                if row.data["n"] == 1:
                    outcomes[row.id] = DeadLetter("rejected row")
                elif row.data["n"] == 2 and flaky == 0:
                    flaky += 1
                    outcomes[row.id] = ValueError("flaky row")
                else:
                    passed[row.data["n"]] += 1
            return outcomes

        @mesh.on_dead_letter()
        async def dlq(event: Event) -> None:
            dead.append(event)

        await self.started(mesh)
        await mesh.publish_many([Event(self.t("rows"), "/t", {"n": n}) for n in range(6)])
        await wait_until(
            lambda: sorted(passed) == [0, 2, 3, 4, 5] and len(dead) == 1,
            self.timeout,
            "five rows inserted and one dead-lettered",
        )
        await asyncio.sleep(0.5 + self.settle_time)
        assert max(len(call) for call in calls) > 1, f"no batch of several events: {calls}"
        assert all(count == 1 for count in passed.values()), f"acked rows came back: {calls}"
        assert all(n in {m for later in calls[1:] for m in later} for n in calls[0]), (
            "an event of the failed call was not retried"
        )
        assert dead[0].data["n"] == 1 and dead[0].extensions[DL_ERROR] == "DeadLetter"
        stats = mesh.stats("insert")
        assert stats.handled == 5 and stats.dead_lettered == 1
        assert stats.failed_attempts == len(calls[0]) + 1

    @pytest.mark.asyncio
    async def test_mesh_batch_stop_acks_nothing_unhandled(self, meshes: MeshFactory) -> None:
        """Stopping while one batch call runs and more events are collecting: the call is
        cancelled, nothing is acked, and another member of the group gets every event."""
        group = f"{self.prefix}-batched"
        first, second = await meshes(), await meshes()
        running = asyncio.Event()
        finished: list[int] = []

        @first.on(self.t("work"), group=group, batch=BatchPolicy(max_size=3, max_wait=30))
        async def stuck(batch: list[Event]) -> None:
            running.set()
            await asyncio.sleep(3600)

        @second.on(self.t("work"), group=group, batch=BatchPolicy(max_size=4, max_wait=0.2))
        async def rest(batch: list[Event]) -> None:
            finished.extend(event.data["n"] for event in batch)

        await self.started(first)
        await first.publish_many([Event(self.t("work"), "/t", {"n": n}) for n in range(3)])
        await asyncio.wait_for(running.wait(), self.timeout)
        await first.publish(Event(self.t("work"), "/t", {"n": 3}))  # collects, max_wait 30 s
        batcher = first._consumers["stuck"].invoke.__self__  # type: ignore[attr-defined]
        await wait_until(lambda: batcher.collecting == 1, self.timeout, "the fourth collecting")
        await first.stop(timeout=0.1)
        stats = first.stats("stuck")
        assert stats.handled == 0 and stats.dead_lettered == 0 and stats.failed_attempts == 0
        await self.started(second)
        await wait_until(
            lambda: sorted(finished) == [0, 1, 2, 3],
            self.timeout,
            "every event redelivered to the other member",
        )

    # --- capabilities and contracts -------------------------------------------------

    @pytest.mark.asyncio
    async def test_mesh_capability_requests_spread_and_survive_a_crash(
        self, meshes: MeshFactory
    ) -> None:
        caps = {"enabled": True, "heartbeat": 0.3, "resync_wait": 2.0 + self.settle_time}
        group = f"{self.prefix}-optimizers"
        name = f"{self.prefix}.optimize.route"
        providers = [await meshes(capabilities=caps) for _ in range(2)]
        caller = await meshes(capabilities=caps)
        served: Counter[str] = Counter()
        for index, provider in enumerate(providers):

            def serve(tag: str) -> Callable[..., Awaitable[dict[str, Any]]]:
                async def optimize(request: _Route, ctx: Context) -> dict[str, Any]:
                    served[tag] += 1
                    if request.order == "explode":
                        raise ValueError("no route exists")
                    return {"route": f"R-{request.order}", "by": tag}

                return optimize

            provider.capability(
                name,
                serve(f"p{index}"),
                input=_Route,
                group=group,
                description="route optimizer",
                tags=["logistics"],
            )
        await self.started(*providers, caller)
        await wait_until(
            lambda: len(caller.capabilities()) == 2,
            self.timeout,
            "both providers in the caller's registry",
        )
        record = caller.capabilities()[0]
        assert record.name == name and record.group == group and record.tags == ("logistics",)
        assert record.input_schema["properties"]["order"]["type"] == "string"
        for i in range(scaled(20, 8)):
            reply = await caller.request(name, {"order": str(i)}, timeout=self.timeout)
            assert reply.data["route"] == f"R-{i}"
        assert len(served) == 2, f"requests were not spread: {dict(served)}"
        with pytest.raises(ContractViolation, match="order"):
            await caller.request(name, {"order": 42}, timeout=self.timeout)
        with pytest.raises(NoProvider, match="Did you mean"):
            await caller.request(name + "s", {"order": "1"}, timeout=self.timeout)
        with pytest.raises(RemoteError, match="no route exists") as failure:
            await caller.request(name, {"order": "explode"}, timeout=self.timeout)
        assert failure.value.error_type == "ValueError"
        crashed = providers[0]
        await crashed.stop(timeout=0, deregister=False)  # a crash: no leave notice
        await wait_until(
            lambda: [c.instance for c in caller.capabilities()] == [providers[1].instance_id],
            self.timeout,
            "the crashed provider expiring after its TTL",
        )
        for i in range(3):
            reply = await caller.request(name, {"order": f"after-{i}"}, timeout=self.timeout)
            assert reply.data["by"] == "p1"

    @pytest.mark.asyncio
    async def test_mesh_contracts_on_publish_and_consume(self, meshes: MeshFactory) -> None:
        strict, lax = await meshes(), await meshes()
        event_type = self.t("shipment.delayed")
        schema = {
            "type": "object",
            "required": ["order", "hours"],
            "properties": {"order": {"type": "string"}, "hours": {"type": "integer"}},
        }
        strict.contract(event_type, schema)
        handled: list[Event] = []
        dead: list[Event] = []

        @strict.on(event_type, group=f"{self.prefix}-delays")
        async def delays(event: Event) -> None:
            handled.append(event)

        @strict.on_dead_letter()
        async def dlq(event: Event) -> None:
            dead.append(event)

        await self.started(strict, lax)
        with pytest.raises(ContractViolation, match="hours"):
            await strict.publish(Event(event_type, "/t", {"order": "o-1"}))
        await strict.publish(Event(event_type, "/t", {"order": "o-2", "hours": 30}))
        await lax.publish(Event(event_type, "/t", {"order": "o-3", "hours": "many"}))
        await wait_until(
            lambda: len(handled) == 1 and len(dead) == 1,
            self.timeout,
            "one valid event handled, one violation dead-lettered",
        )
        assert handled[0].data["order"] == "o-2"
        assert handled[0].dataschema == f"urn:mesh:schema:{event_type}:v1"
        assert dead[0].extensions[DL_ERROR] == "ContractViolation"
        assert "hours" in str(dead[0].extensions[DL_REASON])
        assert str(dead[0].extensions[DL_ATTEMPTS]) == "0"

    # --- runtime subscriptions and capabilities (issue 11) ----------------------------

    def _flow(self, mesh: Mesh, channel: str, sent: list[str]) -> tuple[asyncio.Task[None], Any]:
        """Publish to ``channel`` every 10 ms until the returned ``stop()`` is awaited;
        the ids sent (confirmed by the broker) go to ``sent``."""
        stopping = asyncio.Event()

        async def flow() -> None:
            n = 0
            while not stopping.is_set():
                event = Event(channel, "/flow", {"n": n})
                await mesh.publish(event)
                sent.append(event.id)
                n += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(flow())

        async def stop(more: int = 10) -> None:
            """Let ``more`` events more go out, then stop."""
            target = len(sent) + more
            await wait_until(lambda: len(sent) >= target or task.done(), self.timeout, "events")
            stopping.set()
            await task

        return task, stop

    @pytest.mark.asyncio
    async def test_mesh_subscribe_while_events_flow_loses_nothing(
        self, meshes: MeshFactory
    ) -> None:
        """A member subscribing at runtime to a group that existed before (declared by
        ``ensure_group``, nobody consuming) gets what the group held and what follows;
        a second member joining at runtime, mid-stream, makes nothing get lost."""
        first, second = await meshes(), await meshes()
        channel, group = self.t("flow"), f"{self.prefix}-flow"
        got: Counter[str] = Counter()
        sent: list[str] = []

        async def take(event: Event) -> None:
            got[event.id] += 1

        await self.started(first, second)
        await first.transport.ensure_group(channel, group)
        task, stop = self._flow(first, channel, sent)
        await wait_until(lambda: len(sent) >= 10, self.timeout, "events held by the group")
        one = await first.subscribe(channel, take, group=group)
        await wait_until(lambda: len(got) >= 5, self.timeout, "the first member's events")
        two = await second.subscribe(channel, take, group=group)
        await stop()
        assert one.live and two.live and not task.exception()
        await wait_until(lambda: set(sent) <= set(got), self.timeout, "every event")
        assert set(got) == set(sent), "an event no one published was handled"

    @pytest.mark.asyncio
    async def test_mesh_close_while_events_flow_acks_only_handled_events(
        self, meshes: MeshFactory
    ) -> None:
        """Closing a runtime subscription while events flow lets quick calls finish and
        cancels slow ones; a later member of the group gets every event the first did
        not finish (those published during and after the close too): nothing lost,
        nothing acked that its handler did not finish."""
        first, second = await meshes(shutdown_timeout=0.05), await meshes()
        channel, group = self.t("closing"), f"{self.prefix}-closing"
        began: set[str] = set()
        finished: Counter[str] = Counter()
        later: Counter[str] = Counter()
        sent: list[str] = []

        async def work(event: Event) -> None:
            began.add(event.id)
            await asyncio.sleep(0.5 if event.data["n"] % 4 == 3 else 0.005)
            finished[event.id] += 1

        async def take(event: Event) -> None:
            later[event.id] += 1

        await self.started(first, second)
        sub = await first.subscribe(channel, work, group=group, max_in_flight=4)
        task, stop = self._flow(first, channel, sent)
        await wait_until(
            lambda: len(finished) >= 10 and bool(began - set(finished)),
            self.timeout,
            "handled events and a slow call running",
        )
        await asyncio.gather(sub.close(), sub.close())  # timeout: the 0.05 s shutdown_timeout
        await sub.close()  # a no-op
        assert sub.closed and first.handlers == []
        assert sub.stats.handled == sum(finished.values()), "an unfinished call was acked"
        unfinished = began - set(finished)
        assert unfinished, "no call was running when the subscription closed"
        await stop(20)  # published after the close: the group holds them
        assert not task.exception()
        await second.subscribe(channel, take, group=group)
        await wait_until(
            lambda: set(sent) <= set(finished) | set(later),
            self.timeout,
            "every event handled by one member or the other",
        )
        assert unfinished <= set(later), "a cancelled call's event was not redelivered"

    @pytest.mark.asyncio
    async def test_mesh_capability_added_and_removed_at_runtime(self, meshes: MeshFactory) -> None:
        """add_capability/remove_capability on a started mesh reach a peer at once: the
        heartbeat is far longer than the case, so only the immediate announcement can
        explain what the peer sees."""
        caps = {"enabled": True, "heartbeat": 600.0, "resync_wait": 1.0 + self.settle_time}
        provider, caller = await meshes(capabilities=caps), await meshes(capabilities=caps)
        name = f"{self.prefix}.translate"

        async def translate(request: Event, ctx: Context) -> dict[str, Any]:
            return {"text": str(request.data["text"]).upper()}

        await self.started(provider, caller)
        assert caller.capabilities() == []
        capability = await provider.add_capability(name, translate, group=f"{self.prefix}-tr")
        await wait_until(
            lambda: [c.name for c in caller.capabilities()] == [name],
            self.timeout,
            "the runtime capability in the peer's registry",
        )
        assert caller.capabilities()[0].instance == provider.instance_id == capability.instance
        reply = await caller.request(name, {"text": "hola"}, timeout=self.timeout)
        assert reply.data == {"text": "HOLA"}
        await provider.remove_capability(name)
        await wait_until(
            lambda: caller.capabilities() == [], self.timeout, "the withdrawal at the peer"
        )
        with pytest.raises(NoProvider):
            await caller.request(name, {"text": "adios"}, timeout=self.timeout)
        assert provider.served_capabilities() == [] and provider.handlers == []
