"""The scenarios, run interleaved over the sides, with medians per side.

Every run gets fresh broker names (and, on a private Tansu, a fresh broker) and its
own event loop, so runs cannot leak into each other. The order is
``for scenario: for repeat: for side`` -- mesh, raw, FastStream, mesh, raw,
FastStream, ... -- so slow drifts of a shared, noisy machine hit every side alike.

Scenarios (all with 256-byte JSON events and a handler that only counts):

* ``e2e_1`` / ``e2e_group``: end-to-end throughput with 1 consumer / a group of
  ``group_size`` consumers: from the first publish to the last event handled,
  publishing in confirmed chunks of ``publish_chunk``. Consumers are started and
  ready (Kafka: partitions assigned) before the clock starts.
* ``publish``: confirmed publish throughput into a declared group that does not
  consume.
* ``latency``: one event at a time, publish -> handler called, ``latency_sends``
  times after ``latency_warmup`` unmeasured sends; p50 and p99.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from benchmarks.common import Counter, Probe, Session, Settings, Side, Target, chunks, payloads
from benchmarks.env import Brokers

log = logging.getLogger("benchmarks")

SCENARIOS = ("e2e_1", "e2e_group", "publish", "latency")
#: scenarios that also run the mesh with idempotency off (an extra row)
IDEMPOTENCY_ROWS = ("e2e_1", "e2e_group")


@dataclass
class RunResult:
    value: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --- one run per scenario --------------------------------------------------------------------


async def _e2e(session: Session, settings: Settings, consumers: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    counter = Counter(settings.events)

    def threaded(count: int, when: float) -> None:
        loop.call_soon_threadsafe(counter.add, count, when)

    await session.start_consumers(consumers, counter.hit, threaded=threaded)
    items = payloads(settings.events)
    gc.collect()
    cpu0, start = time.process_time(), time.perf_counter()
    for chunk in chunks(items, settings.publish_chunk):
        await session.publish_batch(chunk)
    published = time.perf_counter()
    await asyncio.wait_for(asyncio.shield(counter.done), settings.run_timeout)
    cpu = time.process_time() - cpu0
    elapsed = counter.last - start
    return {
        "events_per_s": settings.events / elapsed,
        "publish_phase_per_s": settings.events / (published - start),
        "cpu_us_per_event": cpu / settings.events * 1e6,
    }


async def _publish(session: Session, settings: Settings) -> dict[str, float]:
    await session.declare()
    items = payloads(settings.events)
    gc.collect()
    cpu0, start = time.process_time(), time.perf_counter()
    for chunk in chunks(items, settings.publish_chunk):
        await session.publish_batch(chunk)
    elapsed = time.perf_counter() - start
    return {
        "events_per_s": settings.events / elapsed,
        "cpu_us_per_event": (time.process_time() - cpu0) / settings.events * 1e6,
    }


async def _latency(session: Session, settings: Settings) -> dict[str, float]:
    probe = Probe()
    await session.start_consumers(
        1, probe.hit, threaded=lambda _n, when: probe.hit_threadsafe(when)
    )
    items = payloads(settings.latency_warmup + settings.latency_sends)
    samples: list[float] = []
    for index, item in enumerate(items):
        handled = probe.arm()
        start = time.perf_counter()
        await session.publish(item)
        when = await asyncio.wait_for(handled, 30)
        if index >= settings.latency_warmup:
            samples.append((when - start) * 1e3)
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": _percentile(samples, 0.99),
        "mean_ms": statistics.fmean(samples),
        "min_ms": min(samples),
        "sends": float(len(samples)),
    }


async def _run(side: Side, target: Target, settings: Settings, scenario: str) -> dict[str, float]:
    async with side.session(target, settings) as session:
        if scenario == "e2e_1":
            return await _e2e(session, settings, 1)
        if scenario == "e2e_group":
            return await _e2e(session, settings, settings.group_size)
        if scenario == "publish":
            return await _publish(session, settings)
        if scenario == "latency":
            return await _latency(session, settings)
    raise ValueError(scenario)


def run_once(
    side: Side, transport: str, url: str, settings: Settings, scenario: str, brokers: Brokers
) -> RunResult:
    """One side, one scenario, fresh names, its own event loop; errors are recorded."""
    if transport == "kafka":
        brokers.fresh_kafka()
    target = Target(transport, url)

    async def guarded() -> dict[str, float]:
        return await asyncio.wait_for(
            _run(side, target, settings, scenario), settings.run_timeout + 60
        )

    try:
        return RunResult(asyncio.run(guarded()))
    except Exception as exc:  # one failed run must not lose the others
        log.warning(
            "%s %s %s failed: %s: %s", transport, scenario, side.name, type(exc).__name__, exc
        )
        return RunResult(error=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        gc.collect()


# --- a transport: every scenario, interleaved --------------------------------------------


def run_transport(
    transport: str,
    sides: list[Side],
    settings: Settings,
    brokers: Brokers,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    url = brokers.url(transport)
    usable = [s for s in sides if s.available() is None]
    result: dict[str, Any] = {
        "transport": transport,
        "url": _redact(url),
        "scenarios": {},
        "sides": {
            s.name: {"guarantees": s.guarantees(transport), "unavailable": s.available()}
            for s in sides
        },
    }
    # one unmeasured short run per side (imports, first connections, caches); not on
    # Kafka, where timing starts after group joins anyway and a run costs a join
    if not settings.smoke and transport != "kafka":
        warm = replace(settings, events=min(settings.events, 1000))
        for side in usable:
            if side.supports(transport, "e2e_1") is None and not side.name.startswith("mesh ("):
                run_once(side, transport, url, warm, "e2e_1", brokers)
    for scenario in SCENARIOS:
        runs: dict[str, list[dict[str, float]]] = {}
        errors: dict[str, list[str]] = {}
        skipped: dict[str, str] = {}
        rows = [
            s for s in usable if scenario in IDEMPOTENCY_ROWS or not s.name.startswith("mesh (")
        ]
        for side in rows:
            why = side.supports(transport, scenario)
            if why is not None:
                skipped[side.name] = why
        for repeat in range(settings.repeat):
            for side in rows:
                if side.name in skipped:
                    continue
                t0 = time.perf_counter()
                run = run_once(side, transport, url, settings, scenario, brokers)
                took = time.perf_counter() - t0
                if run.error is not None:
                    errors.setdefault(side.name, []).append(run.error)
                    progress(
                        f"  {transport:8s} {scenario:9s} #{repeat + 1} {side.name:24s} "
                        f"ERROR {run.error[:120]}"
                    )
                    continue
                runs.setdefault(side.name, []).append(run.value)
                progress(
                    f"  {transport:8s} {scenario:9s} #{repeat + 1} {side.name:24s} "
                    f"{_brief(run.value)}  ({took:.1f}s)"
                )
        result["scenarios"][scenario] = summarize(scenario, runs, errors, skipped)
    return result


def summarize(
    scenario: str,
    runs: dict[str, list[dict[str, float]]],
    errors: dict[str, list[str]],
    skipped: dict[str, str],
) -> dict[str, Any]:
    """Medians per side and metric, and the ratios mesh/raw and mesh/FastStream."""
    medians: dict[str, dict[str, float]] = {}
    for side, values in runs.items():
        metrics = values[0].keys()
        medians[side] = {m: statistics.median(v[m] for v in values) for m in metrics}
    key = "p50_ms" if scenario == "latency" else "events_per_s"
    ratios: dict[str, float] = {}
    mesh = medians.get("mesh", {}).get(key)
    for other, label in (("raw client", "mesh/raw"), ("faststream", "mesh/faststream")):
        theirs = medians.get(other, {}).get(key)
        if mesh and theirs:
            ratios[label] = mesh / theirs
    if scenario == "latency":
        raw = medians.get("raw client")
        if raw and "mesh" in medians:
            ratios["mesh-raw p50 ms"] = medians["mesh"]["p50_ms"] - raw["p50_ms"]
            ratios["mesh-raw p99 ms"] = medians["mesh"]["p99_ms"] - raw["p99_ms"]
    return {
        "metric": key,
        "runs": runs,
        "median": medians,
        "ratios": ratios,
        "errors": errors,
        "skipped": skipped,
    }


def _brief(value: dict[str, float]) -> str:
    if "p50_ms" in value:
        return f"p50 {value['p50_ms']:.3f} ms  p99 {value['p99_ms']:.3f} ms"
    text = f"{value['events_per_s']:10,.0f} ev/s"
    if "cpu_us_per_event" in value:
        text += f"  cpu {value['cpu_us_per_event']:.1f} us/ev"
    return text


def _redact(url: str) -> str:
    from mesh import redact_url

    return redact_url(url)
