"""CESQL worst cases through a running mesh: a filter is evaluated on the event loop, so
its worst case is how long one hostile event can stall every handler of the process.

The measured figures go to the report; the assertion is only a hang guard (a bound far
above the measured cost and far below what a superlinear matcher needed: 7.3 s for
the first pattern before the fix), not a speed test.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh import Event, Mesh
from tests.faults.conftest import Report

TEXT = "a" * 1_000_000
PATTERNS = {
    "many _": "%" + "_" * 4000 + "x%",
    "a_a_..._b": "%" + "a_" * 2000 + "b%",
    "escapes": "%" + "\\%_" * 1300 + "%",
    "short segments": "%" + "a%" * 2000,
}


@pytest.mark.parametrize("name", list(PATTERNS))
async def test_one_hostile_event_barely_stalls_the_loop(name: str, reliability: Report) -> None:
    mesh = Mesh("memory://", source="/faults", capabilities={"enabled": False})
    sql = f"subject LIKE '{PATTERNS[name].replace(chr(39), chr(39) * 2)}'"
    seen: list[str] = []

    @mesh.on("hostile.subject", filter={"sql": sql}, group="filtered")
    async def handle(event: Event) -> None:
        seen.append(event.id)

    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with mesh:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        began = time.perf_counter()
        await mesh.publish(Event("hostile.subject", "/evil", subject=TEXT))
        while mesh.stats("handle").filtered + mesh.stats("handle").handled == 0:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - began
        tick.cancel()
    stall = max(gaps)
    reliability.record(
        f"CESQL LIKE worst case against a 1 MB subject: {name}",
        "memory",
        note=f"loop stalled {stall * 1000:.0f} ms at most; event filtered in "
        f"{elapsed * 1000:.0f} ms",
    )
    assert stall < 2.0, f"one event stalled the loop for {stall:.2f}s"
