"""Stats reports and ``mesh top`` (issue 12) on the memory transport: what an instance
reports, how reports of several instances aggregate, and the plain view of a live mesh.
tests/integration/test_top_pty.py runs ``mesh top`` in a pseudo-terminal on a broker."""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import pytest

from mesh import ConfigError, Event, Mesh
from mesh.cli.top import Board, SortKey, top
from mesh.stats import REPORT_TYPE, StatsReporter, percentile
from mesh.testing.util import wait_until


def broker() -> str:
    return f"memory://top-{uuid.uuid4().hex[:8]}"


def report(instance: str, **handler: object) -> Event:
    row = {"handler": "bill", "group": "billing", "handled": 0, "in_flight": 0, **handler}
    return Event(REPORT_TYPE, "/t", {"instance": instance, "interval": 1.0, "handlers": [row]})


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0


async def test_an_instance_reports_counters_timing_in_flight_and_lag() -> None:
    mesh = Mesh(broker(), stats={"enabled": True, "interval": 60})
    reporter = next(m for m in mesh.middleware if isinstance(m, StatsReporter))
    gate = asyncio.Event()

    @mesh.on("job", group="workers", max_in_flight=2)
    async def work(event: Event) -> None:
        if event.data["n"] < 2:
            await gate.wait()

    async with mesh:
        await mesh.publish_many([Event("job", "/t", {"n": n}) for n in range(6)])
        await asyncio.sleep(0.05)
        (busy,) = (await reporter.report())["handlers"]
        assert busy["in_flight"] == 2 and busy["lag"] == 4 and busy["p50_ms"] is None
        gate.set()
        await wait_until(lambda: mesh.stats("work").handled == 6, 5, "every job")
        data = await reporter.report()
    (row,) = data["handlers"]
    assert data["instance"] == mesh.instance_id and data["interval"] == 60
    assert (row["handler"], row["group"], row["patterns"]) == ("work", "workers", ["job"])
    assert row["handled"] == 6 and row["in_flight"] == 0 and row["lag"] == 0
    assert row["p50_ms"] is not None and row["p99_ms"] >= row["p50_ms"]


async def test_reports_of_several_instances_aggregate_per_handler() -> None:
    board = Board()
    await board.take(report("a", handled=10, in_flight=1, p50_ms=5.0, p99_ms=9.0, lag=3))
    await board.take(report("b", handled=0, in_flight=2, p50_ms=7.0, p99_ms=30.0, lag=4))
    board.instances["a"].at -= 2.0  # a's next report comes 2 s later
    await board.take(report("a", handled=30, in_flight=1, p50_ms=5.0, p99_ms=9.0, lag=3))
    (row,) = board.rows()
    assert row["instances"] == 2 and row["rate"] == pytest.approx(10.0, rel=0.05)
    assert row["in_flight"] == 3 and row["p99"] == 30.0 and row["lag"] == 4
    board.instances["b"].at -= 60.0  # b went quiet: its report goes stale
    (row,) = board.rows()
    assert row["instances"] == 1 and row["in_flight"] == 1


async def test_rows_sort_by_the_key_asked() -> None:
    board = Board()
    for name, lag in (("a", 1), ("b", 9), ("c", 5)):
        await board.take(
            Event(
                REPORT_TYPE,
                "/t",
                {"instance": name, "handlers": [{"handler": name, "group": "g", "lag": lag}]},
            )
        )
    assert [r["handler"] for r in board.rows(SortKey.lag)] == ["b", "c", "a"]
    assert [r["handler"] for r in board.rows(SortKey.handler)] == ["a", "b", "c"]


async def test_top_shows_a_running_app_with_a_nonzero_rate() -> None:
    url = broker()
    worker = Mesh(url, stats={"enabled": True, "interval": 0.1})

    @worker.on("order.created", group="billing")
    async def bill(event: Event) -> None:
        pass

    async def feed() -> None:
        while True:
            await worker.publish_many([Event("order.created", "/t", {}) for _ in range(50)])
            await asyncio.sleep(0.02)

    out = io.StringIO()
    async with worker:
        feeder = asyncio.create_task(feed())
        try:
            board = await top(Mesh(url), interval=0.2, count=8, out=out)
        finally:
            feeder.cancel()
    rows = [line.split() for line in out.getvalue().splitlines() if line.startswith("bill ")]
    assert rows, out.getvalue()
    assert float(rows[-1][3]) > 0  # rate/s of the last refresh
    assert board.rows()[0]["handler"] == "bill"
    assert "HANDLER" in out.getvalue()


def test_stats_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="interval"):
        Mesh(broker(), stats={"enabled": True, "interval": 0})
    assert not any(isinstance(m, StatsReporter) for m in Mesh(broker()).middleware)


def test_a_board_without_reports_says_how_to_get_them() -> None:
    from mesh.cli.top import render

    text = render(Board(), SortKey.rate, "memory://", rich=False)
    assert "MESH_STATS__ENABLED=true" in text and time.strftime("%H") in text


async def test_capabilities_are_reported_like_any_handler() -> None:
    mesh = Mesh(broker(), stats={"enabled": True, "interval": 60})
    reporter = next(m for m in mesh.middleware if isinstance(m, StatsReporter))

    @mesh.capability("summarize", description="summarize text")
    async def summarize(event: Event) -> dict[str, str]:
        return {"summary": "short"}

    async with mesh:
        await mesh.request("summarize", {"text": "long"}, timeout=5)
        data = await reporter.report()
    (row,) = [r for r in data["handlers"] if r["handler"] == "capability:summarize"]
    assert row["handled"] == 1 and row["p50_ms"] is not None
