"""Resident memory: 10,000 in-flight events, and an idle mesh with 100 subscriptions.

Each probe runs in a fresh interpreter (``python -m benchmarks.footprint <probe>``
prints JSON), so earlier runs' garbage and allocator state do not blur the delta.
RSS comes from ``/proc/self/statm`` after ``gc.collect()``.

* ``inflight``: a started memory mesh whose only handler (``max_in_flight=1``)
  blocks; ``publish_many`` of 10,000 256-byte-JSON events; the RSS delta includes
  the events' data. ``raw-inflight`` is the same data in an ``asyncio.Queue``
  (the floor: what the payloads alone cost).
* ``idle``: a started memory mesh with 100 handlers (one group each) against the
  same process with a started mesh without handlers.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.common import EVENT_TYPE, payload

IN_FLIGHT = 10_000
SUBSCRIPTIONS = 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


async def _inflight() -> dict[str, Any]:
    from mesh import Event, Mesh

    mesh = Mesh("memory://")
    block = asyncio.Event()

    @mesh.on(EVENT_TYPE, group="blocked", max_in_flight=1)
    async def stuck(event: Event) -> None:
        await block.wait()

    async with mesh:
        await mesh.publish_many([Event(EVENT_TYPE, "/warm", payload(0))])  # warm paths
        await asyncio.sleep(0.05)
        before = rss()
        await mesh.publish_many([Event(EVENT_TYPE, "/bench", payload(i)) for i in range(IN_FLIGHT)])
        await asyncio.sleep(0.05)
        after = rss()
        block.set()
    return {"rss_delta_bytes": after - before}


async def _raw_inflight() -> dict[str, Any]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queue.put_nowait(payload(0))
    queue.get_nowait()
    before = rss()
    for i in range(IN_FLIGHT):
        queue.put_nowait(payload(i))
    after = rss()
    return {"rss_delta_bytes": after - before}


async def _idle() -> dict[str, Any]:
    from mesh import Event, Mesh

    empty = Mesh("memory://")
    await empty.start()  # the fixed cost of a started mesh stays out of the delta
    await asyncio.sleep(0.05)
    before = rss()
    mesh = Mesh("memory://")
    for i in range(SUBSCRIPTIONS):

        async def handle(event: Event) -> None:
            pass

        mesh.on(f"{EVENT_TYPE}.t{i}", group=f"g{i}", name=f"h{i}")(handle)
    await mesh.start()
    await asyncio.sleep(0.05)
    after = rss()
    await mesh.stop()
    await empty.stop()
    return {"rss_delta_bytes": after - before, "subscriptions": SUBSCRIPTIONS}


PROBES = {"inflight": _inflight, "raw-inflight": _raw_inflight, "idle": _idle}


def _probe(name: str) -> dict[str, Any]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.footprint", name],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(repeat: int = 3) -> dict[str, Any]:
    """Medians over ``repeat`` fresh interpreters per probe."""
    deltas = {
        name: statistics.median(_probe(name)["rss_delta_bytes"] for _ in range(repeat))
        for name in PROBES
    }
    mesh, raw, idle = deltas["inflight"], deltas["raw-inflight"], deltas["idle"]
    return {
        "in_flight_events": IN_FLIGHT,
        "mesh_rss_per_10k_in_flight_mib": mesh / 2**20 * 10_000 / IN_FLIGHT,
        "raw_queue_rss_per_10k_mib": raw / 2**20 * 10_000 / IN_FLIGHT,
        "mesh_bytes_per_in_flight_event": mesh / IN_FLIGHT,
        "mesh_overhead_bytes_per_event": (mesh - raw) / IN_FLIGHT,
        "idle_subscriptions": SUBSCRIPTIONS,
        "idle_mesh_100_subscriptions_mib": idle / 2**20,
        "bytes_per_idle_subscription": idle / SUBSCRIPTIONS,
        "repeat": repeat,
    }


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in PROBES:
        print(json.dumps(run(), indent=2))
        return
    print(json.dumps(asyncio.run(PROBES[name]())))


if __name__ == "__main__":
    main()
