"""Publishes over the broker's size limit: a clear `MessageTooLarge`, nothing sent, the
transport still up; and an event just under the limit whose dead-letter copy (larger
than it) is over it: written reduced, never retried in a loop.

RabbitMQ's limit is the transport's ``max_message_size`` (RabbitMQ 4's 16 MiB by
default); the suite sets 2 MiB there to keep the payloads small. The memory
transport has no size limit.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh import Event, Mesh, MessageTooLarge, Transport
from tests.faults.conftest import Report, Target

SCENARIO = "oversize publish, and a near-limit event whose dead-letter copy is too large"


def limit_of(target: Target, transport: Transport) -> int:
    if target.name == "nats":
        return int(transport.max_payload)  # type: ignore[attr-defined]
    if target.name == "rabbitmq":
        return int(transport.config.max_message_size)  # type: ignore[attr-defined]
    return 1_000_000  # librdkafka's message.max.bytes


async def test_oversize_publish_and_reduced_dead_letter(
    broker_target: Target, reliability: Report
) -> None:
    target = broker_target
    if target.name == "rabbitmq":
        target.options = {**target.options, "max_message_size": 2 * 1024 * 1024}
    channel = target.channel("big")
    mesh = Mesh(target.url, **target.mesh_config())
    handled: list[str] = []
    dead: list[tuple[float, Event]] = []

    @mesh.on(channel, group=f"{target.prefix}-big")
    async def handle(event: Event) -> None:
        if isinstance(event.data, dict) and event.data.get("fail"):
            raise RuntimeError("fails, so its copy must go to the dead-letter channel")
        handled.append(event.id)

    @mesh.on_dead_letter(group=f"{target.prefix}-watch")
    async def watch(event: Event) -> None:
        dead.append((time.time(), event))

    async with mesh:
        limit = limit_of(target, mesh.transport)
        with pytest.raises(MessageTooLarge) as info:
            await mesh.publish(Event(channel, "/faults", {"blob": "x" * (limit + 1)}))
        assert info.value.limit == limit and info.value.size > limit
        assert str(limit) in str(info.value)
        room = 150  # the largest event that fits: its dead-letter copy (with the
        while True:  # meshdl* extensions, ~400 bytes more) cannot
            near = Event(channel, "/faults", {"fail": True, "blob": "y" * (limit - room)})
            sent = time.time()
            try:
                await mesh.publish(near)
                break
            except MessageTooLarge:
                room += 100
        after = Event(channel, "/faults", {"n": 1})
        await mesh.publish(after)  # the transport is still up
        deadline = time.monotonic() + 60
        while not (dead and after.id in handled):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dead-lettered: {len(dead)}, later event handled: {after.id in handled}"
                )
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
    when, copy = dead[0]
    assert len(dead) == 1 and copy.extensions.get("meshdlreduced") is True
    assert copy.data["size"] > limit - room and copy.extensions["meshdlid"] == near.id
    reliability.record(
        SCENARIO,
        target.name,
        lost=0,
        rerun=0,
        to_dead_letter=when - sent,
        note=f"limit {limit} bytes; the copy written reduced",
    )


def test_memory_has_no_size_limit(reliability: Report) -> None:
    reliability.record(SCENARIO, "memory", note="n/a: the memory transport has no size limit")
