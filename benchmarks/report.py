"""Markdown tables and JSON files in ``benchmarks/results/``.

``<transport>.json`` / ``<transport>.md`` hold one transport's latest run;
``latest.md`` / ``latest.json`` summarise the latest run of every transport found
there, so ``--transport nats`` refreshes NATS and keeps the others' figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import TRANSPORTS

SIDES = (
    "mesh",
    "mesh (idempotency off)",
    "mesh + pass-through middleware",
    "mesh + tracing + metrics",
    "raw client",
    "faststream",
)
ROWS = (  # (scenario, metric, label, format)
    ("e2e_1", "events_per_s", "end-to-end, 1 consumer (events/s)", "{:,.0f}"),
    ("e2e_group", "events_per_s", "end-to-end, group of {group} (events/s)", "{:,.0f}"),
    ("publish", "events_per_s", "confirmed publish (events/s)", "{:,.0f}"),
    ("latency", "p50_ms", "latency p50 (ms)", "{:.3f}"),
    ("latency", "p99_ms", "latency p99 (ms)", "{:.3f}"),
    ("e2e_1", "cpu_us_per_event", "CPU per event, 1 consumer (µs, this process)", "{:.1f}"),
)
THROUGHPUT = ("e2e_1", "e2e_group", "publish")

KAFKA_NOTES = [
    "Kafka here is **Tansu** (Kafka-protocol broker, in-memory storage), a private "
    "instance on a free loopback port, **restarted before every run**: its memory store "
    "slows down as it fills. With `MESH_KAFKA_URL` set the given broker is used and each "
    "run's topic is deleted instead.",
    "Every side gets the same client settings: `fetch.wait.max.ms={fetch}` (Tansu answers "
    "a fetch only after about half of it), `session.timeout.ms={session}`, "
    "`heartbeat.interval.ms={heartbeat}`, `fetch.queue.backoff.ms={backoff}` (the mesh's "
    "default; librdkafka's 1 s default starves a busy consumer), producer "
    "`linger.ms={linger}`, idempotent, `acks=all`; the topic is created with "
    "{partitions} partitions before the run.",
    "Group joins are outside the timing: consumers start together and the clock starts "
    "once each has partitions assigned (Tansu completes a join after about half the "
    "session timeout).",
    "Publishing is batched (confirmed chunks of {chunk}, all records of a chunk in flight): "
    "one-at-a-time publishing makes Tansu itself the bottleneck (about 1.7k events/s "
    "for every client). Figures on a real Kafka cluster will differ; ratios are the point.",
]


def _fmt(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def _median(result: dict[str, Any], scenario: str, side: str, metric: str) -> float | None:
    return result["scenarios"].get(scenario, {}).get("median", {}).get(side, {}).get(metric)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on the medians (reported, never asserted)."""
    transport = result["transport"]
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, higher: bool, unit: str) -> None:
        met = None if value is None else (value >= goal if higher else value <= goal)
        checks.append({"target": name, "value": value, "goal": goal, "unit": unit, "met": met})

    if transport == "memory":
        add(
            "mesh end-to-end, 1 consumer >= 150,000 events/s",
            _median(result, "e2e_1", "mesh", "events_per_s"),
            150_000,
            True,
            "events/s",
        )
    else:
        for scenario in THROUGHPUT:
            mesh = _median(result, scenario, "mesh", "events_per_s")
            raw = _median(result, scenario, "raw client", "events_per_s")
            fast = _median(result, scenario, "faststream", "events_per_s")
            add(
                f"{scenario}: mesh >= 0.9 x raw",
                mesh / raw if mesh and raw else None,
                0.9,
                True,
                "x",
            )
            add(
                f"{scenario}: mesh >= 2 x FastStream",
                mesh / fast if mesh and fast else None,
                2.0,
                True,
                "x",
            )
    mesh50 = _median(result, "latency", "mesh", "p50_ms")
    raw50 = _median(result, "latency", "raw client", "p50_ms")
    add(
        "added p50 latency over the raw client <= 0.3 ms",
        mesh50 - raw50 if mesh50 is not None and raw50 is not None else None,
        0.3,
        False,
        "ms",
    )
    return checks


def _settings_line(run: dict[str, Any]) -> str:
    s = run["settings"]
    return (
        f"{s['events']:,} events per throughput run, {s['repeat']} interleaved repeats "
        f"(median shown), {s['latency_sends']} latency sends after {s['latency_warmup']} "
        f"warm-up sends, max_in_flight = prefetch = pull batch = {s['max_in_flight']}, "
        f"publish chunks of {s['publish_chunk']}, 256-byte JSON events, handler counts"
    )


def _machine_line(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    load = meta.get("load_average_end") or []
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}, "
        f"{m['implementation']} {m['python']}, {m['event_loop']}. Load average at start "
        f"{' / '.join(str(x) for x in m['load_average_at_start'])}, at end "
        f"{' / '.join(str(x) for x in load)}. Libraries: {libs}."
    )


def transport_markdown(result: dict[str, Any]) -> str:
    meta, transport = result["meta"], result["transport"]
    group = result["settings"]["group_size"]
    info = dict(result["broker"])
    broker = ", ".join([str(info.pop("broker", "?")), *(f"{k} {v}" for k, v in info.items())])
    lines = [
        f"# Benchmark: {transport}",
        "",
        f"`{meta['command']}` — {meta['started']} → {meta['finished']} (UTC)",
        "",
        f"* Machine: {_machine_line(meta)}",
        f"* Broker: {broker}",
        f"* Settings: {_settings_line(result)}",
        "",
    ]
    lines += ["## What each side does", "", "| side | guarantees |", "|---|---|"]
    for side, info in result["sides"].items():
        text = info["guarantees"] + (
            f" (**not run: {info['unavailable']}**)" if info.get("unavailable") else ""
        )
        lines.append(f"| {side} | {text} |")
    present = [s for s in SIDES if s in result["sides"]]
    lines += [
        "",
        f"## Results (medians of {result['settings']['repeat']} interleaved runs)",
        "",
        "| scenario | " + " | ".join(present) + " | mesh/raw | mesh/FastStream |",
        "|---|" + "---:|" * (len(present) + 2),
    ]
    for scenario, metric, label, fmt in ROWS:
        if scenario not in result["scenarios"]:
            continue
        summary = result["scenarios"][scenario]
        cells = []
        for side in present:
            value = _median(result, scenario, side, metric)
            why = summary["skipped"].get(side)
            cells.append(_fmt(value, fmt) if value is not None or not why else "n/a")
        ratios = []
        for other in ("raw client", "faststream"):
            mine = _median(result, scenario, "mesh", metric)
            theirs = _median(result, scenario, other, metric)
            ratios.append(f"{mine / theirs:.2f}" if mine and theirs else "—")
        lines.append(f"| {label.format(group=group)} | " + " | ".join(cells + ratios) + " |")
    lines += [
        "",
        "Ratios are mesh ÷ other: above 1 is better for throughput, below 1 is "
        "better for latency and CPU.",
        "",
    ]
    skipped = {
        f"{side}: {why}" for s in result["scenarios"].values() for side, why in s["skipped"].items()
    }
    errors = [
        f"{name} / {side}: {msg}"
        for name, s in result["scenarios"].items()
        for side, msgs in s["errors"].items()
        for msg in msgs
    ]
    lines += [
        "## Targets (reported, not asserted)",
        "",
        "| target | value | met |",
        "|---|---:|:---:|",
    ]
    for check in result["targets"]:
        value = (
            "—"
            if check["value"] is None
            else (
                f"{check['value']:,.0f} {check['unit']}"
                if check["unit"] == "events/s"
                else f"{check['value']:.2f} {check['unit']}"
            )
        )
        met = {True: "yes", False: "**no**", None: "—"}[check["met"]]
        lines.append(f"| {check['target']} | {value} | {met} |")
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"* {note}" for note in result["notes"]]
    if skipped:
        lines += ["", "Not run: " + "; ".join(sorted(skipped)) + "."]
    if errors:
        lines += ["", "## Errors", ""] + [f"* {e}" for e in errors]
    if "footprint" in result:
        lines += ["", footprint_markdown(result["footprint"])]
    if "routing" in result:
        lines += ["", routing_markdown(result["routing"])]
    return "\n".join(lines) + "\n"


def footprint_markdown(fp: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"## Memory (memory transport, fresh interpreter per probe, median of {fp['repeat']})",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| mesh: RSS per 10,000 in-flight events (handler blocked) | "
            f"{fp['mesh_rss_per_10k_in_flight_mib']:.2f} MiB |",
            f"| asyncio.Queue holding the same 10,000 payloads (the floor) | "
            f"{fp['raw_queue_rss_per_10k_mib']:.2f} MiB |",
            f"| mesh overhead per in-flight event | "
            f"{fp['mesh_overhead_bytes_per_event']:,.0f} bytes |",
            f"| idle mesh with {fp['idle_subscriptions']} subscriptions (over a started mesh "
            f"without) | {fp['idle_mesh_100_subscriptions_mib']:.2f} MiB "
            f"({fp['bytes_per_idle_subscription']:,.0f} bytes each) |",
        ]
    )


def routing_markdown(routing: dict[str, Any]) -> str:
    idx, msh = routing["index_ns_per_event"], routing["mesh_ns_per_event"]
    rows = [
        "## Routing (`benchmarks.routing.run()`)",
        "",
        "| subscriptions | RuleIndex.match (ns/event) | memory mesh publish→handled (ns/event) |",
        "|---:|---:|---:|",
    ]
    for n in idx:
        rows.append(f"| {int(n):,} | {idx[n]:,.0f} | {msh[n]:,.0f} |")
    rows += [
        "",
        f"1,000 vs 10 subscriptions: index x{routing['index_ratio_1000_vs_10']:.2f}, "
        f"mesh x{routing['mesh_ratio_1000_vs_10']:.2f}. CESQL: "
        + ", ".join(f"{k} {v:,.0f} evaluations/s" for k, v in routing["cesql_evals_per_s"].items())
        + ".",
    ]
    return "\n".join(rows)


def latest_markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Benchmarks: latest figures",
        "",
        "Generated by `python -m benchmarks`; one section per transport's latest run "
        "(see `<transport>.md` for the method line, guarantees, runs and notes, and "
        "docs/performance.md for how to read them).",
        "",
    ]
    first = next(iter(results.values()))
    lines += [f"Machine: {_machine_line(first['meta'])}", ""]
    lines += [
        "| transport | scenario | mesh | raw client | FastStream | mesh/raw | "
        "mesh/FastStream | mesh, idempotency off | mesh + pass-through middleware | "
        "mesh + tracing + metrics |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for transport in TRANSPORTS:
        result = results.get(transport)
        if result is None:
            continue
        group = result["settings"]["group_size"]
        for scenario, metric, label, fmt in ROWS[:5]:
            if scenario not in result["scenarios"]:
                continue
            vals = [
                _median(result, scenario, side, metric)
                for side in (
                    "mesh",
                    "raw client",
                    "faststream",
                    "mesh (idempotency off)",
                    "mesh + pass-through middleware",
                    "mesh + tracing + metrics",
                )
            ]
            ratios = [f"{vals[0] / other:.2f}" if vals[0] and other else "—" for other in vals[1:3]]
            cells = [_fmt(v, fmt) for v in vals]
            lines.append(
                f"| {transport} | {label.format(group=group)} | {cells[0]} | "
                f"{cells[1]} | {cells[2]} | {ratios[0]} | {ratios[1]} | {cells[3]} | "
                f"{cells[4]} | {cells[5]} |"
            )
    lines += ["", "## Targets", "", "| transport | target | value | met |", "|---|---|---:|:---:|"]
    for transport in TRANSPORTS:
        for check in results.get(transport, {}).get("targets", []):
            value = (
                "—"
                if check["value"] is None
                else (
                    f"{check['value']:,.0f}"
                    if check["unit"] == "events/s"
                    else f"{check['value']:.2f} {check['unit']}"
                )
            )
            met = {True: "yes", False: "**no**", None: "—"}[check["met"]]
            lines.append(f"| {transport} | {check['target']} | {value} | {met} |")
    memory = results.get("memory", {})
    if "footprint" in memory:
        lines += ["", footprint_markdown(memory["footprint"])]
    if "routing" in memory:
        lines += ["", routing_markdown(memory["routing"])]
    for transport, result in results.items():
        errors = [
            f"{transport} {name} / {side}: {msg}"
            for name, s in result["scenarios"].items()
            for side, msgs in s["errors"].items()
            for msg in msgs
        ]
        if errors:
            lines += ["", f"Errors in the {transport} run:", ""] + [f"* {e}" for e in errors]
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict[str, Any]) -> list[Path]:
    """Write ``<transport>.json/.md`` and refresh ``latest.md/.json``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    transport = result["transport"]
    paths = [out / f"{transport}.json", out / f"{transport}.md"]
    paths[0].write_text(json.dumps(result, indent=2, default=str) + "\n")
    paths[1].write_text(transport_markdown(result))
    latest: dict[str, dict[str, Any]] = {}
    for name in TRANSPORTS:
        path = out / f"{name}.json"
        if path.exists():
            try:
                latest[name] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    (out / "latest.json").write_text(
        json.dumps({"transports": latest}, indent=2, default=str) + "\n"
    )
    (out / "latest.md").write_text(latest_markdown(latest))
    return [*paths, out / "latest.md", out / "latest.json"]
