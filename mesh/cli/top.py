"""``mesh top``: a live view of a running mesh, from the stats reports its instances
publish (`mesh.stats`; the apps run with ``stats.enabled``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, TextIO

import typer
from rich.live import Live

from mesh.app import Mesh
from mesh.cli.app import (
    EXIT_OK,
    PRIVATE_MEMORY_NOTE,
    ConfigOption,
    LogLevelOption,
    TransportOption,
    UsageError,
    app,
    common,
    note_private_memory,
    signals_set,
)
from mesh.cli.output import console, is_terminal, plain_table, rich_table
from mesh.event import Event
from mesh.stats import REPORT_TYPE, STATS_CHANNEL, percentile

_COLUMNS = (
    "handler",
    "group",
    "instances",
    "rate/s",
    "in-flight",
    "p50 ms",
    "p99 ms",
    "retries",
    "dead",
    "lag",
)
#: a delivery ends as exactly one of these: their change over time is the event rate
_SETTLED = ("handled", "dead_lettered", "filtered", "duplicates", "retry_later")


class SortKey(StrEnum):
    """``--sort`` keys (descending, except ``handler``)."""

    rate = "rate"
    in_flight = "in-flight"
    p50 = "p50"
    p99 = "p99"
    retries = "retries"
    dead = "dead"
    lag = "lag"
    handler = "handler"


@dataclass
class _Seen:
    at: float
    report: Mapping[str, Any]
    previous: tuple[float, Mapping[str, Any]] | None = None


@dataclass
class Board:
    """The latest report of every instance, aggregated per (handler, group)."""

    stale_after: float = 15.0
    instances: dict[str, _Seen] = field(default_factory=dict)

    async def take(self, event: Event) -> None:
        if event.type != REPORT_TYPE or not isinstance(event.data, dict):
            return
        instance = str(event.data.get("instance", event.source))
        now = time.monotonic()
        seen = self.instances.get(instance)
        previous = None if seen is None else (seen.at, seen.report)
        self.instances[instance] = _Seen(now, event.data, previous)
        interval = event.data.get("interval")
        if isinstance(interval, int | float) and interval > 0:
            self.stale_after = max(self.stale_after, 3 * float(interval))

    def rows(self, sort: SortKey = SortKey.rate) -> list[dict[str, Any]]:
        """One row per (handler, group) over the instances heard from lately: the rate
        summed, in-flight summed, p50 the median and p99 the highest of the instances',
        retries and dead letters summed (since each instance started), lag the highest
        (every member reads the same broker-side backlog)."""
        now = time.monotonic()
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for seen in self.instances.values():
            if now - seen.at > self.stale_after:
                continue
            before = {} if seen.previous is None else _by_handler(seen.previous[1])
            elapsed = None if seen.previous is None else seen.at - seen.previous[0]
            for handler in seen.report.get("handlers", []):
                key = (str(handler.get("handler")), str(handler.get("group") or ""))
                row = merged.setdefault(key, _empty(*key))
                row["instances"] += 1
                earlier = before.get(key)
                if earlier is not None and elapsed:
                    done = sum(
                        int(handler.get(k) or 0) - int(earlier.get(k) or 0) for k in _SETTLED
                    )
                    row["rate"] += max(0, done) / elapsed
                row["in_flight"] += int(handler.get("in_flight") or 0)
                row["retries"] += int(handler.get("retried") or 0)
                row["dead"] += int(handler.get("dead_lettered") or 0)
                if handler.get("p50_ms") is not None:
                    row["p50s"].append(float(handler["p50_ms"]))
                if handler.get("p99_ms") is not None:
                    row["p99"] = max(row["p99"] or 0.0, float(handler["p99_ms"]))
                if handler.get("lag") is not None:
                    row["lag"] = max(row["lag"] or 0, int(handler["lag"]))
        rows = list(merged.values())
        for row in rows:
            row["p50"] = percentile(row.pop("p50s"), 0.5)
        if sort is SortKey.handler:
            return sorted(rows, key=lambda r: (r["handler"], r["group"]))
        name = {SortKey.in_flight: "in_flight"}.get(sort, str(sort))
        return sorted(rows, key=lambda r: (-(r[name] or 0), r["handler"], r["group"]))


def _by_handler(report: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {
        (str(h.get("handler")), str(h.get("group") or "")): h for h in report.get("handlers", [])
    }


def _empty(handler: str, group: str) -> dict[str, Any]:
    return {
        "handler": handler,
        "group": group,
        "instances": 0,
        "rate": 0.0,
        "in_flight": 0,
        "p50s": [],
        "p99": None,
        "retries": 0,
        "dead": 0,
        "lag": None,
    }


def _cells(row: Mapping[str, Any]) -> dict[str, str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return {
        "handler": row["handler"],
        "group": row["group"] or "(broadcast)",
        "instances": str(row["instances"]),
        "rate/s": f"{row['rate']:.1f}",
        "in-flight": str(row["in_flight"]),
        "p50 ms": ms(row["p50"]),
        "p99 ms": ms(row["p99"]),
        "retries": str(row["retries"]),
        "dead": str(row["dead"]),
        "lag": "-" if row["lag"] is None else str(row["lag"]),
    }


def render(board: Board, sort: SortKey, where: str, *, rich: bool) -> Any:
    """The view: a rich table on a terminal, else the plain table (one line per row)."""
    rows = [_cells(row) for row in board.rows(sort)]
    live = sum(1 for s in board.instances.values() if time.monotonic() - s.at <= board.stale_after)
    title = (
        f"{live} instance(s) reporting on {where}, sorted by {sort} ({time.strftime('%H:%M:%S')})"
    )
    if not rows:
        title = (
            f"no stats reports on {where} yet ({time.strftime('%H:%M:%S')}): apps report with "
            "stats.enabled (MESH_STATS__ENABLED=true)"
        )
    if rich:
        right = [c for c in _COLUMNS if c not in ("handler", "group")]
        return rich_table(_COLUMNS, rows, title=title, keep=("handler",), right=right)
    return f"# {title}\n" + (plain_table(_COLUMNS, rows) + "\n" if rows else "")


async def top(
    mesh: Mesh,
    *,
    sort: SortKey = SortKey.rate,
    interval: float = 1.0,
    count: int | None = None,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
) -> Board:
    """Show the stats reports ``mesh`` (unstarted; it serves nothing) receives, every
    ``interval`` seconds, ``count`` times (None: until ``stop`` is set)."""
    stream = out if out is not None else sys.stdout
    stop = stop if stop is not None else asyncio.Event()
    board = Board()
    mesh.on(STATS_CHANNEL, name="mesh-top", max_in_flight=1, idempotent=False)(board.take)
    where = mesh.config.redacted_transport
    shown = 0
    async with mesh:
        if is_terminal(stream):
            screen = console(stream)
            with Live(render(board, sort, where, rich=True), console=screen, screen=False) as live:
                while not stop.is_set() and (count is None or shown < count):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), interval)
                    live.update(render(board, sort, where, rich=True))
                    shown += 1
        else:
            while not stop.is_set() and (count is None or shown < count):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                print(render(board, sort, where, rich=False), file=stream, flush=True)
                shown += 1
    return board


@app.command(
    "top",
    short_help="live rates, latency and lag of a running mesh",
    help="A live view of a running mesh on any broker: per handler and group the event "
    "rate, attempts in flight, p50/p99 processing time, retries, dead letters and "
    "consumer lag, refreshed every --interval seconds until Ctrl-C. It reads the stats "
    "reports instances publish on mesh.stats when they run with stats.enabled "
    "(MESH_STATS__ENABLED=true); no OpenTelemetry or Prometheus needed.\n\n" + PRIVATE_MEMORY_NOTE,
)
def top_command(
    ctx: typer.Context,
    sort: Annotated[
        SortKey,
        typer.Option(
            metavar="KEY", help="rate, in-flight, p50, p99, retries, dead, lag or handler"
        ),
    ] = SortKey.rate,
    interval: Annotated[
        float, typer.Option(metavar="SECONDS", help="seconds between refreshes")
    ] = 1.0,
    count: Annotated[
        int | None, typer.Option(metavar="N", help="stop after N refreshes (default: Ctrl-C)")
    ] = None,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    if interval <= 0:
        raise UsageError("--interval must be above 0")
    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    settings = options.tool_config()
    note_private_memory(settings)

    async def body() -> None:
        stop = asyncio.Event()
        with signals_set(stop):
            await top(Mesh(config=settings), sort=sort, interval=interval, count=count, stop=stop)

    asyncio.run(body())
    return EXIT_OK
