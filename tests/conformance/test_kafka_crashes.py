"""Kafka workers that die (issue 10 items 5 and 6), with real processes.

Item 5: a handler that kills its own process (``os._exit``) on a poison record never
reaches the mesh's retry count; the delivery count has to survive the member. A worker
subprocess is started again and again on the same group: the poison record's
``redeliveries`` must count 0, 1, 2, ... and the mesh must dead-letter it after
``max_deliveries``, also when acked records sit before it in the partition.

Item 6: a worker killed with SIGKILL must have its partitions (and so its unacked
records) taken over by another member within 10 s with the default settings (librdkafka's
session timeout alone is 45 s). The recovery time is measured and printed.

The workers run against the loopback Tansu (killing a worker does not touch the broker);
every topic is deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mesh_kafka import KafkaTransport

from mesh import Event
from mesh.testing import brokers
from mesh.testing.util import Collector, wait_until

pytestmark = pytest.mark.broker

#: the conformance module's test tuning (Tansu joins a group after ~half the session)
TEST_OPTIONS: dict[str, Any] = {
    "commit_interval": 0.1,
    "consumer_config": {
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 20,
    },
}

WORKER = r"""
import asyncio, json, os, sys
from mesh import Event, Mesh
from mesh_kafka import KafkaTransport

url, channel, group, out, mode = sys.argv[1:6]
options = json.loads(sys.argv[6])

def note(line):
    with open(out, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())

async def transport_worker():
    t = KafkaTransport(url, options)
    await t.connect()
    async def handler(delivery):
        data = delivery.event.data
        note(f"{data['n']} {delivery.redeliveries}")
        if data.get("poison"):
            os._exit(3)
        if mode == "hold":   # never settles: the records stay this member's
            await asyncio.sleep(3600)
        await delivery.ack()
    await t.subscribe(channel, handler, group=group, max_in_flight=64)
    note("assigned")
    await asyncio.sleep(3600)

async def mesh_worker():
    mesh = Mesh(url, transport_options=options, source="/crash-worker",
                dead_letter_channel=channel + ".deadletter",
                retry={"max_attempts": 1, "initial_backoff": 0.01,
                       "max_deliveries": int(mode.split(":")[1])})
    good = []

    @mesh.on(channel, group=group, max_in_flight=4)
    async def handle(event, ctx):
        note(f"{event.data['n']} {ctx.redeliveries}")
        if event.data.get("poison"):
            os._exit(3)
        good.append(event.data["n"])

    async with mesh:
        while set(good) < set(json.loads(sys.argv[7])):
            await asyncio.sleep(0.05)
        note("done")
        await asyncio.sleep(0.5)   # commits

asyncio.run(mesh_worker() if mode.startswith("mesh") else transport_worker())
"""


def kafka_url() -> str:
    return brokers.ensure_or_skip("kafka")


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


@pytest.fixture
async def rig() -> AsyncIterator[tuple[KafkaTransport, str]]:
    t = KafkaTransport(kafka_url(), TEST_OPTIONS)
    await t.connect()
    prefix = f"crash{uuid.uuid4().hex[:10]}"
    yield t, prefix
    await t.delete_channels(f"{prefix}.>")
    await t.close()


def _run(worker: Path, *args: str, timeout: float = 90.0) -> int:
    proc = subprocess.Popen(
        [sys.executable, str(worker), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"worker did not end within {timeout}s") from None
    if proc.returncode not in (0, 3):
        raise AssertionError(f"worker failed ({proc.returncode}): {err.decode()[-2000:]}")
    return proc.returncode


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_poison_record_redeliveries_count_across_process_exits(
    rig: tuple[KafkaTransport, str], worker: Path, tmp_path: Path
) -> None:
    t, prefix = rig
    channel, group, out = f"{prefix}.jobs", f"{prefix}-workers", tmp_path / "seen.txt"
    await t.publish(
        channel, Event(channel, "/t", {"n": 0, "poison": True}, extensions={"partitionkey": "p"})
    )
    for _ in range(4):
        code = await asyncio.to_thread(
            _run,
            worker,
            kafka_url(),
            channel,
            group,
            str(out),
            "transport",
            json.dumps(TEST_OPTIONS),
        )
        assert code == 3, "the worker did not die on the poison record"
    counts = [line for line in _lines(out) if line != "assigned"]
    assert counts == ["0 0", "0 1", "0 2", "0 3"]


async def test_process_killing_poison_is_dead_lettered_after_max_deliveries(
    rig: tuple[KafkaTransport, str], worker: Path, tmp_path: Path
) -> None:
    """Acked records before the poison and more after it, on one partition: the blame
    lands on the poison (never on the records before it), the mesh dead-letters it
    after max_deliveries deliveries without running it, and the partition goes on."""
    t, prefix = rig
    channel, group, out = f"{prefix}.jobs", f"{prefix}-workers", tmp_path / "seen.txt"
    key = {"partitionkey": "same"}
    events = [Event(channel, "/t", {"n": n, "poison": n == 2}, extensions=key) for n in range(5)]
    await t.publish_batch([(channel, e) for e in events])
    runs = []
    for _ in range(10):
        code = await asyncio.to_thread(
            _run,
            worker,
            kafka_url(),
            channel,
            group,
            str(out),
            "mesh:3",
            json.dumps(TEST_OPTIONS),
            "[3, 4]",
        )
        runs.append(code)
        if code == 0:
            break
    assert runs[-1] == 0, f"still crashing after {len(runs)} runs: {_lines(out)}"
    poison = [int(line.split()[1]) for line in _lines(out) if line.startswith("2 ")]
    assert poison == sorted(poison) and poison[-1] == 2, f"poison counts {poison}"
    copies = [d.event async for d in t.read(f"{channel}.deadletter", idle=2.0)]
    assert [(c.extensions.get("meshdlid"), c.extensions.get("meshdlerror")) for c in copies] == [
        (events[2].id, "DeliveryLimitExceeded")
    ]
    print(
        f"\nruns until dead-lettered: {len(runs)} ({runs.count(3)} crashes); "
        f"poison redeliveries seen: {poison}"
    )


async def test_killed_worker_partitions_are_taken_over_within_10s(
    rig: tuple[KafkaTransport, str], worker: Path, tmp_path: Path
) -> None:
    """Production defaults on both members (no session tuning): kill -9 one of two
    members holding unacked records; the other gets them. Prints the recovery time."""
    t, prefix = rig
    channel, group, out = f"{prefix}.work", f"{prefix}-crew", tmp_path / "held.txt"
    defaults = KafkaTransport(kafka_url(), {})
    await defaults.connect()
    await defaults.ensure_group(channel, group)
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, str(worker), kafka_url(), channel, group, str(out), "hold", "{}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: "assigned" in _lines(out), 60, "the worker's assignment")
        survivor = Collector()
        await defaults.subscribe(channel, survivor, group=group, max_in_flight=64)
        events = [
            Event(channel, "/t", {"n": n}, extensions={"partitionkey": f"k{n}"}) for n in range(32)
        ]
        await t.publish_batch([(channel, e) for e in events])

        def held() -> set[int]:
            return {int(line.split()[0]) for line in _lines(out) if line != "assigned"}

        await wait_until(
            lambda: len(held()) + len(survivor.events) >= 32,
            60,
            "every event at one of the two members",
        )
        victim = held()
        assert victim, "the killed worker held no records (assignment went elsewhere)"
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        before = len(survivor.events)
        await wait_until(
            lambda: len(survivor.events) > before,
            40,
            "the first of the killed worker's records at the survivor",
        )
        first = time.monotonic() - killed
        await wait_until(
            lambda: victim <= {e.data["n"] for e in survivor.events},
            40,
            "the killed worker's records at the survivor",
        )
        recovery = time.monotonic() - killed
        print(
            f"\nrecovery after kill -9: first record after {first:.1f}s, all {len(victim)} "
            f"after {recovery:.1f}s (defaults: session.timeout.ms=6000, "
            "heartbeat.interval.ms=1000)"
        )
        assert recovery < 30, "not reassigned within the session timeout and a rejoin"
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
        await defaults.close()
