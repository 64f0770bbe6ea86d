"""Mesh API behaviour beyond the conformance suite (which runs on every transport)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from mesh import ConfigError, Context, Event, Mesh, RetryPolicy, TransportClosed, derive_id


def test_handler_signatures_are_checked_at_registration() -> None:
    mesh = Mesh("memory://")
    with pytest.raises(ConfigError, match="async def"):

        @mesh.on("a")
        def sync(event: Event) -> None: ...

    with pytest.raises(ConfigError, match=r"\(event\) or \(event, ctx\)"):

        @mesh.on("b")
        async def three(a: Event, b: Context, c: int) -> None: ...

    with pytest.raises(ConfigError, match="needs an event type"):
        mesh.on()
    with pytest.raises(ConfigError, match="empty token"):
        mesh.on("a..b")
    with pytest.raises(ConfigError, match="unknown filter dialect"):
        mesh.on(filter={"regex": "x"})


def test_a_group_belongs_to_one_handler() -> None:
    mesh = Mesh("memory://")

    @mesh.on("a", group="g")
    async def one(event: Event) -> None: ...

    with pytest.raises(ConfigError, match="already used by handler one"):

        @mesh.on("b", group="g")
        async def two(event: Event) -> None: ...


async def test_publish_before_start_says_what_to_do() -> None:
    with pytest.raises(TransportClosed, match="async with mesh"):
        await Mesh("memory://").publish(Event("t", "/s"))


async def test_emit_inherits_correlation_causation_trace_hops() -> None:
    mesh = Mesh("memory://", source="/agents/planner")
    children: list[Event] = []

    @mesh.on("task.created", group="planner")
    async def plan(event: Event, ctx: Context) -> None:
        await ctx.emit("task.planned", {"step": 1}, subject="s1", partitionkey="k")

    @mesh.on("task.planned", group="watch")
    async def watch(event: Event) -> None:
        children.append(event)

    async with mesh:
        parent = Event(
            "task.created", "/ui", {}, traceparent="00-abc-def-01", tracestate="a=b", meshhops=2
        )
        await mesh.publish(parent)
        while not children:
            await asyncio.sleep(0.01)
    child = children[0]
    assert child.correlationid == parent.id and child.causationid == parent.id
    assert child.traceparent == "00-abc-def-01" and child.extensions["tracestate"] == "a=b"
    assert child.meshhops == 3 and child.source == "/agents/planner"
    assert child.subject == "s1" and child.partitionkey == "k"
    assert child.id == derive_id(parent, "planner", 0)


async def test_graceful_stop_lets_in_flight_handlers_finish() -> None:
    mesh = Mesh("memory://")
    finished: list[str] = []
    started = asyncio.Event()

    @mesh.on("slow", group="slow")
    async def slow(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(event.id)

    await mesh.start()
    await mesh.publish(Event("slow", "/t"))
    await started.wait()
    await mesh.stop(timeout=5)
    assert len(finished) == 1 and mesh.stats("slow").handled == 1
    await mesh.stop()  # idempotent


async def test_sqlite_idempotency_across_restarts(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'idem.db'}"
    handled: list[str] = []
    event = Event("pay", "/t", {"amount": 5})
    for _ in range(2):
        mesh = Mesh("memory://", idempotency={"store": url})

        @mesh.on("pay", group="payments")
        async def pay(event: Event) -> None:
            handled.append(event.id)

        async with mesh:
            await mesh.publish(event)
            while mesh.stats("pay").handled + mesh.stats("pay").duplicates < 1:
                await asyncio.sleep(0.01)
    assert handled == [event.id]


class Order(BaseModel):
    id: int
    total: float


def test_unresolvable_model_annotation_is_a_config_error() -> None:
    class Local(BaseModel):
        x: int

    mesh = Mesh("memory://")
    with pytest.raises(ConfigError, match="cannot resolve"):

        @mesh.on("t")
        async def handler(item: Local) -> None: ...


async def test_model_handler_gets_validated_data() -> None:
    mesh = Mesh("memory://")
    got: list[Order] = []

    @mesh.on("order", group="orders")
    async def take(order: Order) -> None:
        got.append(order)

    async with mesh:
        await mesh.publish(Event("order", "/t", {"id": "7", "total": 9.5}))
        while not got:
            await asyncio.sleep(0.01)
    assert got == [Order(id=7, total=9.5)]


async def test_mesh_emit_and_wildcard_types() -> None:
    mesh = Mesh("memory://", source="/me")
    seen: list[str] = []

    @mesh.on(["a.x", "b.*"])
    async def many(event: Event) -> None:
        seen.append(event.type)

    async with mesh:
        for t in ("a.x", "b.y", "b.y.z", "c"):
            await mesh.emit(t, {"n": 1}, subject="s", region="eu")
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    assert sorted(seen) == ["a.x", "b.y"]


def test_backoff_grows_with_jitter_and_cap() -> None:
    policy = RetryPolicy(initial_backoff=1, multiplier=2, max_backoff=5, jitter=0.1)
    assert 0.9 <= policy.backoff(1) <= 1.1
    assert 1.8 <= policy.backoff(2) <= 2.2
    assert 4.5 <= policy.backoff(10) <= 5.5
    assert RetryPolicy(initial_backoff=0, jitter=0).backoff(3) == 0


async def test_memory_mesh_fixture(memory_mesh: Mesh) -> None:
    assert "started=True" in repr(memory_mesh)
    await memory_mesh.publish(Event("x", "/t"))


async def test_lifecycle_hooks_and_started() -> None:
    mesh = Mesh("memory://")
    calls: list[str] = []
    got: list[Event] = []

    @mesh.on("boot", group="boot")
    async def boot(event: Event) -> None:
        got.append(event)

    @mesh.on_start
    async def first() -> None:
        calls.append(f"start:{mesh.started}")
        await mesh.emit("boot", {})

    @mesh.on_stop
    async def last() -> None:
        calls.append(f"stop:{mesh.started}")
        raise RuntimeError("a failing stop hook is logged, the stop goes on")

    assert not mesh.started
    async with mesh:
        while not got:
            await asyncio.sleep(0.01)
    assert calls == ["start:True", "stop:True"] and not mesh.started


async def test_failing_start_hook_stops_the_mesh() -> None:
    mesh = Mesh("memory://")

    @mesh.on_start
    async def broken() -> None:
        raise RuntimeError("cannot warm cache")

    with pytest.raises(RuntimeError, match="warm cache"):
        await mesh.start()
    assert not mesh.started


async def test_fresh_id_is_not_derived() -> None:
    mesh = Mesh("memory://")
    ids: list[list[str]] = []

    @mesh.on("job", group="jobs")
    async def job(event: Event, ctx: Context) -> None:
        derived = ctx.child("a")
        fresh = ctx.child("b", fresh_id=True)
        after = ctx.child("c")
        ids.append([derived.id, fresh.id, after.id])

    async with mesh:
        parent = Event("job", "/t", {})
        await mesh.publish(parent)
        while not ids:
            await asyncio.sleep(0.01)
    derived, fresh, after = ids[0]
    assert derived == derive_id(parent, "jobs", 0) and after == derive_id(parent, "jobs", 1)
    assert fresh not in (derive_id(parent, "jobs", i) for i in range(3))
