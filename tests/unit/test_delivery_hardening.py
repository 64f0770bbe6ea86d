"""Regression tests for delivery defects of issue 10 that live in the core (memory transport).

Each test names its item. The broker side of the same items is covered by the
conformance suite (every transport) and the plugins' own tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import Counter
from typing import Any

import pytest

from mesh import Delivery, Event, codec, Mesh, MessageTooLarge, PublishError, RetryLater, Transport
from mesh.dlq import DL_ATTEMPTS, DL_REASON
from mesh.testing.util import wait_until
from mesh.transports.memory import MemoryTransport

FAST = {"max_attempts": 2, "initial_backoff": 0.001, "max_backoff": 0.01}


def fast_mesh(transport: str | Transport = "memory://", **config: Any) -> Mesh:
    config.setdefault("retry", FAST)
    config.setdefault("shutdown_timeout", 1.0)
    return Mesh(transport, source="/test", **config)


class Recording(MemoryTransport):
    """A memory transport that records every publish (channel, event) and can refuse
    events above a size (like a broker's max payload)."""

    def __init__(
        self, url: str = "memory://", limit: int | None = None, fail_dead_letters: int = 0
    ) -> None:
        super().__init__(url)
        self.sent: list[tuple[str, Event]] = []
        self.limit = limit
        self.refused: list[tuple[str, float]] = []
        self.refused_ids: list[str] = []
        self.fail_dead_letters = fail_dead_letters

    async def publish(self, channel: str, event: Event) -> None:
        size = len(codec.to_json(event))
        if self.limit is not None and size > self.limit:
            self.refused.append((channel, time.monotonic()))
            self.refused_ids.append(event.id)
            raise MessageTooLarge(
                f"{size} bytes over the limit {self.limit}", size=size, limit=self.limit
            )
        if channel == "mesh.deadletter" and self.fail_dead_letters > 0:
            self.fail_dead_letters -= 1
            self.refused.append((channel, time.monotonic()))
            raise PublishError("broker unavailable (injected)")
        self.sent.append((channel, event))
        await super().publish(channel, event)


# --- item 7: a failing dead-letter handler never re-dead-letters its copy -------------------


async def test_failing_dead_letter_handler_drops_the_copy_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = Recording()
    mesh = fast_mesh(transport)
    runs: Counter[str] = Counter()

    @mesh.on("job", group="workers")
    async def work(event: Event) -> None:
        raise RuntimeError("always fails")

    @mesh.on_dead_letter(group="repair")
    async def repair(event: Event) -> None:
        runs[event.id] += 1
        raise RuntimeError("the repair agent fails too")

    async with mesh:
        await mesh.publish(Event("job", "/t", {"n": 1}))
        await wait_until(lambda: mesh.stats("repair").dropped == 1, 5, "the dropped copy")
        await asyncio.sleep(0.3)
    copies = [e for channel, e in transport.sent if channel == "mesh.deadletter"]
    assert len(copies) == 1, f"{len(copies)} dead-letter copies; expected exactly one"
    assert sum(runs.values()) == 2 and mesh.stats("repair").dead_lettered == 0
    assert any(
        "repair" in r.getMessage() and "dropped" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
    )


# --- item 9: a forged meshhops is invalid input ----------------------------------------------


@pytest.mark.parametrize("hops", ["-40", "-2147483648", "abc", "1.5", " 3", "+3", "true"])
async def test_forged_meshhops_is_dead_lettered_not_run(hops: str) -> None:
    transport = Recording()
    mesh = fast_mesh(transport, hop_limit=3)
    runs: list[str] = []

    @mesh.on("loop", group="loopers")
    async def loop(event: Event, ctx: Any) -> None:
        runs.append(event.id)
        await ctx.emit("loop", {})

    async with mesh:
        body = json.dumps(
            {"specversion": "1.0", "id": "x1", "source": "/evil", "type": "loop", "meshhops": hops}
        ).encode()
        await transport.publish_raw("loop", body)
        await wait_until(
            lambda: any(c == "mesh.deadletter" for c, _ in transport.sent),
            5,
            "the dead-letter copy",
        )
    assert runs == []
    copy = next(e for c, e in transport.sent if c == "mesh.deadletter")
    assert "meshhops" in str(copy.extensions[DL_REASON])


def test_meshhops_must_be_a_non_negative_integer() -> None:
    from mesh import InvalidEvent

    for bad in (-1, True, "-3", "x"):
        with pytest.raises(InvalidEvent, match="meshhops"):
            Event.from_attributes(
                {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "meshhops": bad}
            )
    with pytest.raises(InvalidEvent, match="meshhops"):
        Event("t", "/s", meshhops=-2)
    assert (
        Event.from_attributes(
            {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "meshhops": "7"}
        ).extensions["meshhops"]
        == 7
    )


# --- item 12 (core): mesh-defined extensions have one type everywhere -------------------------


def test_mesh_extensions_decode_to_their_types() -> None:
    from datetime import UTC, datetime

    event = Event.from_attributes(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "meshdlattempts": "3",
            "meshhops": "2",
            "meshdlreduced": "true",
            "meshdltime": "2026-12-01T10:00:00Z",
        }
    )
    assert event.extensions["meshdlattempts"] == 3 and event.extensions["meshhops"] == 2
    assert event.extensions["meshdlreduced"] is True
    assert event.extensions["meshdltime"] == datetime(2026, 12, 1, 10, tzinfo=UTC)


# --- item 3: every undecodable message gets its own dead-letter entry -------------------------


async def test_undecodable_messages_with_the_same_body_stay_apart() -> None:
    transport = Recording()
    mesh = fast_mesh(transport)

    @mesh.on("in", group="readers")
    async def read(event: Event) -> None: ...

    async with mesh:
        for _ in range(3):
            await transport.publish_raw("in", b"\x00not json")
        await wait_until(
            lambda: sum(c == "mesh.deadletter" for c, _ in transport.sent) == 3,
            5,
            "three dead-letter copies",
        )
        listed = await mesh.dead_letters.list(idle=0.2)
    copies = [e for c, e in transport.sent if c == "mesh.deadletter"]
    assert len({c.id for c in copies}) == 3, "different messages collapsed into one entry"
    assert len(listed) == 3


def test_undecodable_ids_follow_headers_and_position() -> None:
    from mesh.dlq import undecodable_event
    from mesh.errors import DecodeError

    class Raw(Delivery):
        def __init__(self, headers: dict[str, str], body: bytes, position: str | None) -> None:
            super().__init__("in")
            self._raw, self._position = (headers, body), position

        def raw(self) -> tuple[dict[str, str], bytes]:
            return self._raw

        @property
        def position(self) -> str | None:
            return self._position

        async def _ack(self) -> None: ...

        async def _nack(self, delay: float) -> None: ...

    def dl_id(headers: dict[str, str], body: bytes, position: str | None) -> str:
        return undecodable_event(
            Raw(headers, body, position), DecodeError("bad"), source="/s", group="g"
        ).id

    same = dl_id({"ce-id": "\ufffd1"}, b"x", "7")
    assert same == dl_id({"ce-id": "\ufffd1"}, b"x", "7"), "a redelivery must keep its id"
    assert same != dl_id({"ce-id": "\ufffd2"}, b"x", "7")
    assert same != dl_id({"ce-id": "\ufffd1"}, b"x", "8")
    assert dl_id({}, b"x", None) != dl_id({}, b"x", None), (
        "without a broker position two identical messages must still stay apart"
    )


# --- items 1/2 (core): a dead-letter copy too large to write is written reduced ---------------


@pytest.mark.parametrize("data,size", [("x" * 900, 902), (b"y" * 999, 999)], ids=["json", "bytes"])
async def test_too_large_dead_letter_copy_is_written_reduced(data: Any, size: int) -> None:
    event = Event("big", "/t", data)
    transport = Recording(limit=len(codec.to_json(event)) + 10)
    mesh = fast_mesh(transport)

    @mesh.on("big", group="workers")
    async def work(event: Event) -> None:
        raise RuntimeError("fails")

    async with mesh:
        await mesh.publish(event)  # fits; its copy (with the meshdl* extensions) does not
        await wait_until(
            lambda: any(c == "mesh.deadletter" for c, _ in transport.sent), 5, "the reduced copy"
        )
    [copy] = [e for c, e in transport.sent if c == "mesh.deadletter"]
    assert len(transport.refused) == 1
    assert copy.extensions.get("meshdlreduced") is True
    assert copy.data["size"] == size and len(copy.data["sha256"]) == 64
    assert copy.extensions[DL_ATTEMPTS] == 2 and copy.id == transport.refused_ids[0]


def test_a_reduced_copy_is_small_whatever_the_original_carried() -> None:
    from mesh.dlq import dead_letter_event, reduced_copy

    event = Event(
        "big", "/t", "x" * 100_000, subject="s" * 100_000, extensions={"custom": "c" * 100_000}
    )
    copy = dead_letter_event(
        event, RuntimeError("r" * 100_000), attempts=3, group="g", channel="big"
    )
    assert len(codec.to_json(reduced_copy(copy))) < 2000


async def test_failing_dead_letter_writes_back_off() -> None:
    transport = Recording(fail_dead_letters=4)
    mesh = fast_mesh(
        transport, retry={**FAST, "initial_backoff": 0.05, "max_backoff": 1.0, "jitter": 0.0}
    )

    @mesh.on("job", group="workers")
    async def work(event: Event) -> None:
        raise RuntimeError("fails")

    async with mesh:
        await mesh.publish(Event("job", "/t", {}))
        await wait_until(
            lambda: any(c == "mesh.deadletter" for c, _ in transport.sent),
            10,
            "the copy after the broker came back",
        )
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(transport.refused)]
    assert len(transport.refused) == 4
    assert all(later > earlier * 1.3 for earlier, later in itertools.pairwise(gaps)), (
        f"dead-letter retries must back off, gaps were {gaps}"
    )


# --- item 5: a message delivered max_deliveries times is dead-lettered ------------------------


async def test_crash_looping_message_is_dead_lettered_after_max_deliveries() -> None:
    transport = Recording()
    mesh = fast_mesh(transport, retry={**FAST, "max_deliveries": 4})
    runs: list[int] = []

    @mesh.on("poison", group="workers")
    async def work(event: Event, ctx: Any) -> None:
        runs.append(ctx.redeliveries)
        raise RetryLater(0)  # given back each time, like a process that dies on it

    async with mesh:
        await mesh.publish(Event("poison", "/t", {}))
        await wait_until(
            lambda: any(c == "mesh.deadletter" for c, _ in transport.sent),
            5,
            "the dead-letter copy",
        )
        await asyncio.sleep(0.2)
    assert runs == [0, 1, 2, 3]
    copy = next(e for c, e in transport.sent if c == "mesh.deadletter")
    assert "delivered 4 times" in str(copy.extensions[DL_REASON])


# --- item 8: stop() is bounded even when a handler swallows CancelledError -------------------


async def test_stop_abandons_handlers_that_ignore_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mesh = fast_mesh()
    started, release = asyncio.Event(), asyncio.Event()
    task: list[asyncio.Task[Any] | None] = []

    @mesh.on("slow", group="stubborn")
    async def stubborn(event: Event) -> None:
        task.append(asyncio.current_task())
        started.set()
        while not release.is_set():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue  # swallows every cancellation

    await mesh.start()
    await mesh.publish(Event("slow", "/t", {}))
    await asyncio.wait_for(started.wait(), 5)
    began = time.monotonic()
    try:
        await mesh.stop(timeout=0.5)
        assert time.monotonic() - began < 5.0, "stop() must not wait for a stubborn handler"
        assert not mesh.started
        assert any(
            "stubborn" in r.getMessage() and "cancel" in r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING
        )
    finally:
        release.set()  # let the abandoned call end, or the test's loop would wait for it
        if task and task[0] is not None:
            task[0].cancel()
            await asyncio.wait([task[0]], timeout=5)


# --- item 25: '#' is rejected everywhere with one message -------------------------------------


@pytest.mark.parametrize("pattern", ["orders.#", "#", "a.b#", "#.x"])
def test_hash_in_a_pattern_is_rejected_on_every_transport(pattern: str) -> None:
    from mesh import ConfigError, validate_pattern

    with pytest.raises(ConfigError, match="'#' is not a mesh wildcard"):
        validate_pattern(pattern)
    mesh = Mesh("memory://")
    with pytest.raises(ConfigError, match="'#' is not a mesh wildcard"):
        mesh.on(pattern)


async def test_subscribe_with_hash_fails_on_memory() -> None:
    from mesh import ConfigError

    transport = MemoryTransport()
    await transport.connect()
    with pytest.raises(ConfigError, match="'#' is not a mesh wildcard"):
        await transport.subscribe("orders.#", lambda d: d.ack())


# --- item 1 (core): a started mesh never says "not started" ----------------------------------


async def test_started_mesh_never_reports_not_started() -> None:
    from mesh import TransportClosed

    class Dying(MemoryTransport):
        async def publish(self, channel: str, event: Event) -> None:
            if channel != "t":
                return await super().publish(channel, event)
            raise TransportClosed("the broker closed the connection (injected)")

    mesh = fast_mesh(Dying())
    async with mesh:
        with pytest.raises(TransportClosed) as info:
            await mesh.publish(Event("t", "/s"))
    assert "not started" not in str(info.value) and "injected" in str(info.value)
