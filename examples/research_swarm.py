"""Research swarm: a supervisor, competing researcher agents, a synthesizer, one crash.

    python examples/research_swarm.py [--transport URL] [--question TEXT] [--workers N]
                                      [--otel]

The agents never call each other; every step is an event:

    research.requested ──> supervisor ──> research.task.created  (x6, one correlationid)
    research.task.created ──> researchers (ONE consumer group, N Mesh instances)
                              ──> research.task.started / research.task.completed
    research.task.completed ──> synthesizer ──> research.report.ready

Each researcher is its own `Mesh` on one shared broker (``memory://research-swarm``
by default, or the broker given with ``--transport``/``MESH_TRANSPORT``), running the
very same handler, so "another worker" is a real other consumer. The worker that
picks up task 3 crashes half-way: its Mesh stops abruptly (``stop(timeout=0)``), the
handler is cancelled, the delivery is never acked, and the broker hands the task to a
surviving worker. That is at-least-once delivery doing its job, with no retry code in
the agent. The "LLM" is deterministic (a hash of the prompt) so every run tells the
same story, and it finishes in about a second on memory://.

On a real broker the group names stay fixed; this run's events are told apart by
their ``correlationid`` (the id of the research.requested event), so leftovers of an
earlier, interrupted run never end up in this report.

``--otel`` (``pip install 'event-mesh[otel]'``) traces every agent with OpenTelemetry
(`mesh.otel.Tracing`) and prints the session's trace as a tree at the end: one trace
from the question to the report, across every agent, the crashed attempt included. With
``OTEL_EXPORTER_OTLP_ENDPOINT`` set the spans are exported over OTLP instead (to
Jaeger, Tempo, an OpenTelemetry Collector; needs ``opentelemetry-exporter-otlp``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import _ui  # the examples' shared output and script helpers (examples/_ui.py)

from mesh import Context, Event, Mesh, MeshError

DEFAULT_QUESTION = "How can event-driven architectures make multi-agent LLM systems reliable?"
#: The angles the supervisor splits every question into (one task each).
ANGLES = (
    "background and key definitions",
    "current state of the art",
    "competing approaches",
    "open problems",
    "risks and failure modes",
    "outlook for the next five years",
)
#: Which task (1-based) crashes its worker, once per run.
CRASH_TASK = 3

_FINDINGS = (
    "durable logs",
    "consumer groups",
    "idempotent handlers",
    "backpressure",
    "dead-letter channels",
    "correlation ids",
    "schema contracts",
    "replay",
)
_VERDICTS = (
    "are well supported by the evidence",
    "are promising but unproven at scale",
    "depend heavily on the broker chosen",
    "are where most teams struggle",
)


def worker_name(mesh: Mesh) -> str:
    """A researcher's name, read from its Mesh's source (``/research-swarm/worker-2``), so
    one handler function serves every worker without a closure per worker."""
    return mesh.source.rsplit("/", 1)[-1]


async def fake_llm(prompt: str) -> str:
    """A deterministic stand-in for an LLM call: 0.1-0.3 s, summary derived from the prompt."""
    digest = hashlib.sha256(prompt.encode()).digest()
    await asyncio.sleep(0.1 + digest[0] / 255 * 0.2)
    return (
        f"{_FINDINGS[digest[1] % len(_FINDINGS)]} and "
        f"{_FINDINGS[(digest[1] + 1 + digest[2] % 6) % len(_FINDINGS)]} "
        f"{_VERDICTS[digest[3] % len(_VERDICTS)]} "
        f"(confidence {60 + digest[4] % 35}%)"
    )


# --- progress display ---------------------------------------------------------------------


@dataclass
class TaskState:
    title: str
    status: str = "pending"
    worker: str = ""
    crashed_on: str = ""
    redelivered_to: str = ""


@dataclass
class Progress:
    """The facts both views show, and the crash story the final report tells."""

    tasks: dict[int, TaskState] = field(default_factory=dict)

    def created(self, index: int, title: str) -> None:
        self.tasks.setdefault(index, TaskState(title))

    def task(self, index: int) -> TaskState:
        return self.tasks.setdefault(index, TaskState(f"task {index}"))

    def recoveries(self) -> list[str]:
        """One line per crashed task: who crashed, who finished it."""
        return [
            f"task {index} crashed on {state.crashed_on}, redelivered, completed by {state.worker}"
            for index, state in sorted(self.tasks.items())
            if state.crashed_on and state.status == "done"
        ]


class View:
    """The swarm's progress: every fact is recorded in `progress` and said once, as a
    line (plain output) or in the live table of tasks (on a terminal: pending, in
    progress and done, by worker). The crash and the redelivery are lines in both, so
    they stay on screen afterwards."""

    def __init__(self, plain: bool) -> None:
        self.progress = Progress()
        self.out = _ui.output(plain, self._table)

    def say(self, text: str) -> None:
        self.out.say(text)

    def close(self) -> None:
        self.out.close()

    def created(self, index: int, title: str) -> None:
        self.progress.created(index, title)
        self.out.note(f"task {index} created: {title}")

    def started(self, index: int, worker: str, redeliveries: int) -> None:
        state = self.progress.task(index)
        if state.status != "done":  # notices travel on their own channels, and a broker
            state.status, state.worker = "in progress", worker  # may hand one over late
        if not self._redelivered(index, worker, redeliveries):
            self.out.note(f"task {index} started on {worker}")

    def crashed(self, index: int, worker: str) -> None:
        state = self.progress.task(index)
        state.crashed_on = worker
        if state.status != "done":  # a late notice never undoes a completion
            state.status = "crashed"
        self.out.say(
            f"task {index} crashed on {worker}: the worker died mid-task, the delivery "
            "was not acked, the broker will redeliver it",
            "bold red",
        )

    def completed(self, index: int, worker: str, redeliveries: int) -> None:
        self._redelivered(index, worker, redeliveries)  # its start notice may not have come
        state = self.progress.task(index)
        state.status, state.worker = "done", worker
        self.out.note(f"task {index} completed by {worker}")

    def _redelivered(self, index: int, worker: str, redeliveries: int) -> bool:
        """Say (once per task) that a redelivered task reached ``worker``."""
        state = self.progress.task(index)
        if not redeliveries or state.redelivered_to:
            return False
        state.redelivered_to = worker
        self.out.say(f"task {index} redelivered to {worker} (delivery #{redeliveries + 1})")
        return True

    def _table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="research tasks", expand=False)
        table.add_column("#", justify="right")
        table.add_column("task")
        table.add_column("status")
        table.add_column("worker")
        styles = {"pending": "dim", "in progress": "yellow", "crashed": "bold red", "done": "green"}
        for index, state in sorted(self.progress.tasks.items()):
            worker = state.worker
            if state.crashed_on and state.status != "crashed":
                worker = f"{worker} (after crash on {state.crashed_on})"
            table.add_row(str(index), state.title, Text(state.status, styles[state.status]), worker)
        return table


# --- the agents ---------------------------------------------------------------------------


async def supervise(event: Event, ctx: Context) -> None:
    """Split a question into tasks. ``ctx.emit`` gives every task the request's
    correlationid, and ids derived from the request, so a redelivered request re-emits
    the same tasks and they are deduplicated instead of doubled."""
    question = str(event.data["question"])
    for index, angle in enumerate(ANGLES, start=1):
        await ctx.emit(
            "research.task.created",
            {"question": question, "index": index, "total": len(ANGLES), "title": angle},
            subject=f"task-{index}",
        )


class Researcher:
    """The researcher agent. One instance; its `handle` is registered on every worker's
    Mesh, so the workers really are identical members of one consumer group.

    ``crash_run`` is the correlationid of the run whose task `CRASH_TASK` simulates a
    crash (None: no crash); it is consumed by the first crash, so it happens once.
    """

    def __init__(self, view: View, crash_run: str | None) -> None:
        self.view = view
        self.crash_run = crash_run
        self._stopping: set[asyncio.Task[None]] = set()

    async def handle(self, event: Event, ctx: Context) -> None:
        task: dict[str, Any] = dict(event.data)
        worker = worker_name(ctx.mesh)
        # A progress notice is about this attempt, not a consequence of the task, so it
        # gets a fresh id: a ctx.emit id would equal the crashed attempt's notice, and a
        # broker's duplicate window would swallow the redelivered one.
        await ctx.mesh.emit(
            "research.task.started",
            {**task, "worker": worker, "redeliveries": ctx.redeliveries},
            correlationid=ctx.correlationid,
            causationid=event.id,
        )
        prompt = f"{task['title']}: {task['question']}"
        if task["index"] == CRASH_TASK and ctx.correlationid == self.crash_run:
            self.crash_run = None
            await asyncio.sleep(0.05)  # half-way through the "LLM call"...
            await self._crash(ctx)
        summary = await fake_llm(prompt)
        await ctx.emit(
            "research.task.completed",
            {**task, "worker": worker, "summary": summary, "redeliveries": ctx.redeliveries},
        )

    async def _crash(self, ctx: Context) -> None:
        """Kill this worker's Mesh under the running handler: stop with no grace period
        cancels the handler, so its delivery is neither acked nor dead-lettered, and the
        broker redelivers it to another member of the group."""
        self.view.crashed(int(ctx.event.data["index"]), worker_name(ctx.mesh))
        stopping = asyncio.create_task(ctx.mesh.stop(timeout=0))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        await asyncio.Event().wait()  # never returns: cancelled by the stop


@dataclass
class Synthesizer:
    """Collects completed tasks per correlationid and emits the report when all are in.

    State is keyed by correlationid, so several questions (or leftovers of an earlier
    run on a persistent broker) never mix; a redelivered result overwrites itself.
    """

    results: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

    async def collect(self, event: Event, ctx: Context) -> None:
        result: dict[str, Any] = dict(event.data)
        run = ctx.correlationid
        collected = self.results.setdefault(run, {})
        collected[int(result["index"])] = result
        if len(collected) < int(result["total"]) or run in self.reported:
            return
        self.reported.add(run)  # before awaiting: a concurrent result must not report too
        sections = [collected[index] for index in sorted(collected)]
        await ctx.emit(
            "research.report.ready", {"question": result["question"], "sections": sections}
        )


# --- wiring -------------------------------------------------------------------------------


class Swarm:
    """Every agent of the example as its own Mesh, plus the client that asks and watches."""

    def __init__(self, url: str, workers: int, view: View, tracing: Any = None) -> None:
        self.view = view
        self.run_id = str(uuid.uuid4())  # the request's id = the run's correlationid
        crash = self.run_id if workers >= 2 else None
        self.researcher = Researcher(view, crash)
        self.synthesizer = Synthesizer()
        self.report: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def mesh(name: str) -> Mesh:
            middleware = [] if tracing is None else [tracing()]  # a Tracing per mesh
            return Mesh(url, source=f"/research-swarm/{name}", middleware=middleware)

        self.supervisor = mesh("supervisor")
        self.supervisor.on("research.requested", group="supervisor")(supervise)
        self.workers = [mesh(f"worker-{n}") for n in range(1, workers + 1)]
        for worker in self.workers:
            worker.on(
                "research.task.created", group="researchers", name="research", max_in_flight=1
            )(self.researcher.handle)
        self.synth = mesh("synthesizer")
        self.synth.on("research.task.completed", group="synthesizer")(self.synthesizer.collect)
        self.client = mesh("client")
        # Broadcast (no group): the client watches every event of its own run only.
        self.client.on(
            "research.>",
            filter={"exact": {"correlationid": self.run_id}},
            name="watch",
            max_in_flight=1,
        )(self.watch)

    @property
    def meshes(self) -> list[Mesh]:
        return [self.client, self.supervisor, *self.workers, self.synth]

    async def watch(self, event: Event) -> None:
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        kind = event.type.removeprefix("research.")
        if kind == "task.created":
            self.view.created(data["index"], data["title"])
        elif kind == "task.started":
            self.view.started(data["index"], data["worker"], data["redeliveries"])
        elif kind == "task.completed":
            self.view.completed(data["index"], data["worker"], data["redeliveries"])
        elif kind == "report.ready" and not self.report.done():
            self.report.set_result(data)

    async def ask(self, question: str) -> dict[str, Any]:
        """Start every agent, publish the question, and wait for this run's report."""
        for mesh in self.meshes:  # all subscribed before the question goes out
            await mesh.start()
        await self.client.publish(
            Event(
                "research.requested",
                "/research-swarm/client",
                {"question": question},
                id=self.run_id,
                extensions={"correlationid": self.run_id},
            )
        )
        return await self.report

    async def close(self) -> None:
        await asyncio.gather(
            *(mesh.stop(timeout=2.0) for mesh in self.meshes), return_exceptions=True
        )


def format_report(report: dict[str, Any], progress: Progress) -> str:
    lines = ["", f"REPORT: {report['question']}", ""]
    for section in report["sections"]:
        lines.append(
            f"  {section['index']}. {section['title']}: {section['summary']} [{section['worker']}]"
        )
    per_worker: dict[str, int] = {}
    for section in report["sections"]:
        per_worker[section["worker"]] = per_worker.get(section["worker"], 0) + 1
    lines += [
        "",
        "tasks per worker: "
        + ", ".join(f"{worker} {count}" for worker, count in sorted(per_worker.items())),
    ]
    recoveries = progress.recoveries()
    lines += [f"recovered: {line}" for line in recoveries] or ["no crash this run"]
    return "\n".join(lines)


class Traces:
    """``--otel``: one tracer provider for every agent; spans kept in memory and printed
    as a tree, or exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""

    def __init__(self) -> None:
        from mesh.otel import Tracing  # a ConfigError naming the extra when it is missing

        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
        except ImportError:  # the API without the SDK
            raise MeshError(
                "--otel needs the OpenTelemetry SDK: pip install 'event-mesh[otel]'"
            ) from None

        self.provider = TracerProvider(resource=Resource.create({"service.name": "research-swarm"}))
        self.memory: InMemorySpanExporter | None = None
        self.endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if self.endpoint:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise MeshError(
                    "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not "
                    "installed: pip install opentelemetry-exporter-otlp-proto-http"
                ) from None
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            self.memory = InMemorySpanExporter()
            self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracing = lambda: Tracing(tracer_provider=self.provider)

    def close(self) -> str:
        """Flush; the tree of the session's trace (or where the spans went)."""
        self.provider.shutdown()
        if self.memory is None:
            return f"trace exported over OTLP to {self.endpoint}"
        spans = sorted(self.memory.get_finished_spans(), key=lambda s: s.start_time or 0)
        ids = {s.context.span_id for s in spans}
        children: dict[int | None, list[Any]] = {}
        for span in spans:
            parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
            children.setdefault(parent, []).append(span)
        lines = [
            "",
            f"TRACE ({len({s.context.trace_id for s in spans})} trace(s), {len(spans)} spans)",
        ]

        def show(span: Any, depth: int) -> None:
            took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            who = span.attributes.get("mesh.handler") or span.kind.name.lower()
            error = (
                f" ERROR {span.attributes.get('error.type') or span.status.description}"
                if span.status.status_code.name == "ERROR"
                else ""
            )
            lines.append(f"{'  ' * depth}{span.name} [{who}] {took:.1f} ms{error}")
            for child in children.get(span.context.span_id, []):
                show(child, depth + 1)

        for root in children.get(None, []):
            show(root, 1)
        return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    url = _ui.resolve_transport(args.transport, "research-swarm")
    try:
        traces = Traces() if args.otel else None
    except MeshError as exc:
        return _ui.fail(exc)
    view = View(args.plain)
    try:
        try:
            swarm = Swarm(url, args.workers, view, None if traces is None else traces.tracing)
        except MeshError as exc:
            return _ui.fail(exc)
        view.say(
            f"research swarm on {swarm.client.config.redacted_transport}: "
            f"{args.workers} researcher(s), question: {args.question}"
        )
        if args.workers < 2:
            view.say("only one researcher: no crash is simulated (nobody could take over)")
        try:
            report = await asyncio.wait_for(swarm.ask(args.question), args.timeout)
        except TimeoutError:
            done = sum(t.status == "done" for t in view.progress.tasks.values())
            return _ui.fail(
                f"no report within {args.timeout:g}s ({done}/{len(ANGLES)} tasks "
                "done); is the broker reachable and are all agents running?"
            )
        except MeshError as exc:
            return _ui.fail(exc)
        finally:
            await swarm.close()
    finally:
        view.close()
    print(format_report(report, view.progress), flush=True)
    if traces is not None:
        print(traces.close(), flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _ui.parser(__doc__, timeout=60.0)
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--workers", type=int, default=3, help="researchers (default 3)")
    parser.add_argument(
        "--otel", action="store_true", help="trace with OpenTelemetry; print the session's trace"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return _ui.main(main_async, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
