"""Batch handlers (`mesh.batch`): grouping, per-event outcomes, bad input, shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from mesh import (
    BatchPolicy,
    ConfigError,
    Context,
    DeadLetter,
    Event,
    Mesh,
    RetryLater,
    TransportFeatures,
)
from mesh.context import current_event
from mesh.dlq import DL_ATTEMPTS, DL_ERROR, DL_ID, DL_REASON
from mesh.testing.util import wait_until
from mesh.transports.memory import MemoryTransport

FAST = {"max_attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.02}


class Order(BaseModel):
    sku: str
    qty: int


@pytest.fixture
async def meshes() -> AsyncIterator[Any]:
    """``new(**config)``: a Mesh on a memory broker shared by the test's meshes."""
    name = f"memory://batch-{uuid.uuid4().hex[:8]}"  # built directly: no plugin lookup
    made: list[Mesh] = []

    def new(**config: Any) -> Mesh:
        config.setdefault("retry", FAST)
        config.setdefault("capabilities", {"enabled": False})
        mesh = Mesh(MemoryTransport(name), **config)
        made.append(mesh)
        return mesh

    yield new
    for mesh in made:
        await mesh.stop(timeout=0.5)


def events(n: int, type: str = "job", **data: Any) -> list[Event]:
    return [Event(type, "/t", {"n": i, **data}) for i in range(n)]


def dead_letter_sink(mesh: Mesh) -> list[Event]:
    dead: list[Event] = []

    @mesh.on_dead_letter()
    async def dlq(event: Event) -> None:
        dead.append(event)

    return dead


# --- the policy and bad input ------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10", None])
def test_max_size_must_be_a_positive_integer(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_size=.*integer >= 1"):
        BatchPolicy(max_size=value)


@pytest.mark.parametrize("value", [0, -0.5, float("inf"), float("nan"), "1", True])
def test_max_wait_must_be_a_positive_number(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_wait=.*number > 0"):
        BatchPolicy(max_wait=value)


def test_a_dict_is_a_policy_and_unknown_fields_are_named() -> None:
    mesh = Mesh(MemoryTransport())

    @mesh.on("a", group="g", batch={"max_size": 7, "max_wait": 0.1})
    async def ok(events: list[Event]) -> None: ...

    assert mesh.handlers[0].batch == BatchPolicy(max_size=7, max_wait=0.1)
    with pytest.raises(ConfigError, match=r"unknown batch field\(s\) size; known: max_size"):
        mesh.on("b", batch={"size": 3})
    with pytest.raises(ConfigError, match=r"BatchPolicy.*not int"):
        mesh.on("b", batch=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_wait="):
        mesh.on("b", batch={"max_wait": 0})
    assert len(mesh.handlers) == 1


def test_batch_handler_signatures_are_checked_at_registration() -> None:
    mesh = Mesh(MemoryTransport())
    with pytest.raises(ConfigError, match="async def"):

        @mesh.on("a", batch=BatchPolicy())
        def sync(events: list[Event]) -> None: ...

    with pytest.raises(ConfigError, match=r"\(events\) or \(events, contexts\)"):

        @mesh.on("a", batch=BatchPolicy())
        async def three(a: list[Event], b: list[Context], c: int) -> None: ...

    with pytest.raises(ConfigError, match=r"annotated Event; annotate it list\[Event\]"):

        @mesh.on("a", batch=BatchPolicy())
        async def single(event: Event) -> None: ...

    with pytest.raises(ConfigError, match=r"annotated Order; annotate it list\[Event\]"):

        @mesh.on("a", batch=BatchPolicy())
        async def model(order: Order) -> None: ...

    assert mesh.handlers == []


def test_max_in_flight_lets_a_batch_fill() -> None:
    mesh = Mesh(MemoryTransport())

    @mesh.on("a", group="big", batch=BatchPolicy(max_size=100))
    async def big(events: list[Event]) -> None: ...

    @mesh.on("b", group="small", batch=BatchPolicy(max_size=4))
    async def small(events: list[Event]) -> None: ...

    @mesh.on("c", group="wide", batch=BatchPolicy(max_size=4), max_in_flight=12)
    async def wide(events: list[Event]) -> None: ...

    limits = {h.name: h.max_in_flight for h in mesh.handlers}
    assert limits == {"big": 100, "small": mesh.config.default_max_in_flight, "wide": 12}
    with pytest.raises(ConfigError, match=r"max_in_flight=10 is below batch max_size=100"):
        mesh.on("d", batch=BatchPolicy(max_size=100), max_in_flight=10)
    with pytest.raises(ConfigError, match=r"max_in_flight must be an integer >= 1"):
        mesh.on("d", max_in_flight=-1)
    assert len(mesh.handlers) == 3


class _CappedTransport(MemoryTransport):
    """A transport that can hold at most 50 unsettled deliveries per subscription."""

    features: ClassVar[TransportFeatures] = TransportFeatures(max_in_flight=50)


def test_a_batch_the_transport_cannot_hold_is_refused_at_the_call() -> None:
    mesh = Mesh(_CappedTransport())
    with pytest.raises(ConfigError, match=r"max_size=100 is more than the transport can hold"):
        mesh.on("a", batch=BatchPolicy(max_size=100))
    with pytest.raises(ConfigError, match=r"max_in_flight=80 is more than the transport"):
        mesh.on("a", max_in_flight=80)
    with pytest.raises(ConfigError, match=r"max_size=51 .*lower max_size to 50"):
        mesh.on_dead_letter(batch={"max_size": 51})
    assert mesh.handlers == []

    @mesh.on("a", batch=BatchPolicy(max_size=50))
    async def fits(events: list[Event]) -> None: ...

    assert mesh.handlers[0].max_in_flight == 50


# --- grouping ----------------------------------------------------------------------------


async def test_a_full_batch_is_handed_over_at_once(meshes: Any) -> None:
    mesh = meshes()
    calls: list[list[int]] = []

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=5, max_wait=30))
    async def work(batch: list[Event]) -> None:
        calls.append([e.data["n"] for e in batch])

    await mesh.start()
    began = time.monotonic()
    await mesh.publish_many(events(10))
    await wait_until(lambda: len(calls) == 2, 5, "two full batches")
    assert time.monotonic() - began < 5  # not max_wait (30 s)
    assert calls == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # in arrival order
    assert mesh.stats("work").handled == 10


async def test_a_batch_that_is_not_full_goes_after_max_wait(meshes: Any) -> None:
    mesh = meshes()
    calls: list[tuple[float, int]] = []

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=100, max_wait=0.3))
    async def work(batch: list[Event]) -> None:
        calls.append((time.monotonic(), len(batch)))

    await mesh.start()
    began = time.monotonic()
    await mesh.publish_many(events(3))
    await wait_until(lambda: bool(calls), 5, "the batch")
    assert calls[0][1] == 3
    assert 0.25 <= calls[0][0] - began < 2
    await mesh.publish_many(events(2))
    await wait_until(lambda: len(calls) == 2, 5, "the next batch")
    assert calls[1][1] == 2


async def test_a_batch_fills_from_events_arriving_one_by_one(meshes: Any) -> None:
    mesh = meshes()
    calls: list[int] = []

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=5, max_wait=10))
    async def work(batch: list[Event]) -> None:
        calls.append(len(batch))

    await mesh.start()
    for event in events(5):
        await mesh.publish(event)
        await asyncio.sleep(0.02)  # each arrives while the earlier ones wait in the batch
    await wait_until(lambda: bool(calls), 5, "the full batch (long before max_wait)")
    assert calls == [5]


async def test_the_handler_runs_with_no_current_event(meshes: Any) -> None:
    mesh = meshes()
    seen: list[Event | None] = []

    @mesh.on("job", batch=BatchPolicy(max_size=2, max_wait=0.05))
    async def work(batch: list[Event]) -> None:
        seen.append(current_event())

    await mesh.start()
    await mesh.publish_many(events(2))
    await wait_until(lambda: bool(seen), 5, "the batch")
    assert seen == [None]


# --- outcomes ----------------------------------------------------------------------------


async def test_per_event_outcomes_as_a_list(meshes: Any) -> None:
    mesh = meshes()
    dead = dead_letter_sink(mesh)
    calls: list[list[int]] = []

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=4, max_wait=0.05))
    async def work(batch: list[Event]) -> list[Exception | None]:
        calls.append([e.data["n"] for e in batch])
        first = len(calls) == 1
        return [
            RetryLater(0.05)
            if first and e.data["n"] == 1
            else DeadLetter("not ours")
            if e.data["n"] == 2
            else None
            for e in batch
        ]

    await mesh.start()
    await mesh.publish_many(events(4))
    await wait_until(lambda: mesh.stats("work").handled == 3 and bool(dead), 5, "outcomes")
    assert calls == [[0, 1, 2, 3], [1]]  # only the one given back came again
    stats = mesh.stats("work")
    assert stats.retry_later == 1 and stats.dead_lettered == 1 and stats.failed_attempts == 0
    assert dead[0].extensions[DL_ERROR] == "DeadLetter" and dead[0].data["n"] == 2
    assert dead[0].extensions[DL_ATTEMPTS] == 1


async def test_per_event_outcomes_as_a_dict_of_ids(meshes: Any) -> None:
    mesh = meshes()
    dead = dead_letter_sink(mesh)
    calls: Counter[int] = Counter()

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=3, max_wait=0.05))
    async def work(batch: list[Event]) -> dict[str, Exception]:
        calls.update(e.data["n"] for e in batch)
        return {e.id: ValueError("bad row") for e in batch if e.data["n"] == 0}

    await mesh.start()
    await mesh.publish_many(events(3))
    await wait_until(lambda: bool(dead), 5, "the failing event dead-lettered")
    # the failing event alone was retried (in later batches), then dead-lettered
    assert calls == Counter({0: 3, 1: 1, 2: 1})
    assert dead[0].extensions[DL_REASON] == "bad row" and dead[0].extensions[DL_ATTEMPTS] == 3
    stats = mesh.stats("work")
    assert stats.handled == 2 and stats.failed_attempts == 3 and stats.dead_lettered == 1


async def test_raising_retries_every_event_of_the_batch(meshes: Any) -> None:
    mesh = meshes()
    calls: list[list[int]] = []

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=3, max_wait=0.05))
    async def work(batch: list[Event]) -> None:
        calls.append(sorted(e.data["n"] for e in batch))
        if len(calls) == 1:
            raise ConnectionError("database down")

    await mesh.start()
    await mesh.publish_many(events(3))
    await wait_until(lambda: mesh.stats("work").handled == 3, 5, "the retried batch")
    assert calls[0] == [0, 1, 2]
    assert sorted(n for call in calls[1:] for n in call) == [0, 1, 2]  # each retried once
    stats = mesh.stats("work")
    assert stats.failed_attempts == 3 and stats.dead_lettered == 0


async def test_a_batch_that_always_fails_dead_letters_each_event(meshes: Any) -> None:
    mesh = meshes()
    dead = dead_letter_sink(mesh)

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=10, max_wait=0.05))
    async def work(batch: list[Event]) -> None:
        raise RuntimeError("model unavailable")

    await mesh.start()
    sent = events(3)
    await mesh.publish_many(sent)
    await wait_until(lambda: len(dead) == 3, 5, "three dead-letter copies")
    assert sorted(str(e.extensions[DL_ID]) for e in dead) == sorted(e.id for e in sent)
    assert all(e.extensions[DL_ATTEMPTS] == 3 for e in dead)
    assert mesh.stats("work").failed_attempts == 9


async def test_raising_retry_later_gives_every_event_back(meshes: Any) -> None:
    mesh = meshes(retry={"max_attempts": 1, "initial_backoff": 0.01})
    calls = 0

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=2, max_wait=0.05))
    async def work(batch: list[Event]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryLater(0.05, reason="429")

    await mesh.start()
    await mesh.publish_many(events(2))
    await wait_until(lambda: mesh.stats("work").handled == 2, 5, "both handled")
    stats = mesh.stats("work")
    assert stats.retry_later == 2 and stats.failed_attempts == 0


@pytest.mark.parametrize(
    ("returned", "reason"),
    [
        ("ok", "returned str"),
        ([None], "returned 1 outcome"),
        ({"nope": ValueError()}, "outcome for 'nope', which is not the id"),
        ([RetryLater, None], "the class RetryLater"),
        ([42, None], "returned int 42 for event"),
    ],
)
async def test_a_malformed_return_is_a_handler_error(
    meshes: Any, returned: object, reason: str
) -> None:
    mesh = meshes(retry={"max_attempts": 1, "initial_backoff": 0.01})
    dead = dead_letter_sink(mesh)

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=2, max_wait=0.05))
    async def work(batch: list[Event]) -> object:
        return returned

    await mesh.start()
    await mesh.publish_many(events(2))
    await wait_until(lambda: len(dead) == 2, 5, "both dead-lettered")
    assert {e.extensions[DL_ERROR] for e in dead} == {"TypeError"}
    assert reason in str(dead[0].extensions[DL_REASON])
    assert "return None (all handled)" in str(dead[0].extensions[DL_REASON])


# --- models, contexts, duplicates --------------------------------------------------------


async def test_models_are_validated_per_event(meshes: Any) -> None:
    mesh = meshes()
    dead = dead_letter_sink(mesh)
    got: list[list[Order]] = []

    @mesh.on("order", group="g", batch=BatchPolicy(max_size=3, max_wait=0.05))
    async def insert(orders: list[Order]) -> None:
        got.append(orders)

    await mesh.start()
    await mesh.publish_many(
        [
            Event("order", "/t", {"sku": "a", "qty": 1}),
            Event("order", "/t", {"sku": "b", "qty": "many"}),
            Event("order", "/t", {"sku": "c", "qty": 3}),
        ]
    )
    await wait_until(lambda: bool(got) and bool(dead), 5, "the batch and the dead letter")
    assert got == [[Order(sku="a", qty=1), Order(sku="c", qty=3)]]
    assert dead[0].extensions[DL_ERROR] == "DataValidationError"
    assert "qty" in str(dead[0].extensions[DL_REASON])


async def test_contexts_emit_follow_ups_of_their_own_event(meshes: Any) -> None:
    mesh = meshes()
    children: list[Event] = []

    @mesh.on("question", group="g", batch=BatchPolicy(max_size=3, max_wait=0.05))
    async def answer(batch: list[Event], contexts: list[Context]) -> None:
        assert [ctx.event for ctx in contexts] == batch
        for ctx in contexts:
            await ctx.emit("answer", {"for": ctx.event.data["n"]})

    @mesh.on("answer", group="w")
    async def watch(event: Event) -> None:
        children.append(event)

    await mesh.start()
    sent = events(3, "question")
    await mesh.publish_many(sent)
    await wait_until(lambda: len(children) == 3, 5, "three answers")
    by_parent = {e.causationid: e for e in children}
    for parent in sent:
        child = by_parent[parent.id]
        assert child.data == {"for": parent.data["n"]}
        assert child.correlationid == parent.id and child.meshhops == 1


async def test_duplicates_are_acked_unseen_or_handled_once(meshes: Any) -> None:
    mesh = meshes()
    seen: Counter[str] = Counter()
    calls: list[int] = []

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=10, max_wait=0.1))
    async def work(batch: list[Event]) -> None:
        calls.append(len(batch))
        seen.update(e.id for e in batch)

    await mesh.start()
    first, second = events(2)
    await mesh.publish_many([first, second, first])  # twice in one collecting batch
    await wait_until(lambda: mesh.stats("work").handled == 3, 5, "the batch")
    assert calls == [2] and seen == Counter({first.id: 1, second.id: 1})
    await mesh.publish(first)  # already handled by the group: never reaches a batch
    await wait_until(lambda: mesh.stats("work").duplicates == 1, 5, "the duplicate")
    await asyncio.sleep(0.2)
    assert calls == [2]


async def test_dead_letter_handlers_can_batch(meshes: Any) -> None:
    mesh = meshes(retry={"max_attempts": 1, "initial_backoff": 0.01})
    archived: list[list[str]] = []

    @mesh.on("job", group="g")
    async def fail(event: Event) -> None:
        raise DeadLetter("no")

    @mesh.on_dead_letter(group="archive", batch=BatchPolicy(max_size=3, max_wait=0.1))
    async def archive(copies: list[Event]) -> None:
        archived.append(sorted(str(c.extensions[DL_ID]) for c in copies))

    await mesh.start()
    sent = events(3)
    await mesh.publish_many(sent)
    await wait_until(lambda: sum(map(len, archived)) == 3, 5, "the copies archived")
    assert sorted(i for call in archived for i in call) == sorted(e.id for e in sent)


# --- shutdown ----------------------------------------------------------------------------


async def test_a_graceful_stop_lets_a_collecting_batch_finish(meshes: Any) -> None:
    mesh = meshes()
    calls: list[int] = []

    @mesh.on("job", group="g", batch=BatchPolicy(max_size=100, max_wait=0.3))
    async def work(batch: list[Event]) -> None:
        calls.append(len(batch))

    await mesh.start()
    await mesh.publish_many(events(2))
    batcher = mesh._consumers["work"].invoke.__self__
    await wait_until(lambda: batcher.collecting == 2, 5, "both events collecting")
    await mesh.stop(timeout=5)  # longer than max_wait: the batch goes and is acked
    assert calls == [2] and mesh.stats("work").handled == 2


async def test_stop_while_collecting_acks_nothing(meshes: Any) -> None:
    first, second = meshes(), meshes()
    called: list[int] = []
    later: list[int] = []

    @first.on("job", group="g", batch=BatchPolicy(max_size=100, max_wait=60))
    async def slow(batch: list[Event]) -> None:
        called.append(len(batch))

    @second.on("job", group="g", batch=BatchPolicy(max_size=2, max_wait=0.05))
    async def fast(batch: list[Event]) -> None:
        later.extend(e.data["n"] for e in batch)

    await first.start()
    await first.publish_many(events(2))
    batcher = first._consumers["slow"].invoke.__self__  # type: ignore[attr-defined]
    await wait_until(lambda: batcher.collecting == 2, 5, "both events collecting")
    await first.stop(timeout=0.1)
    assert batcher.collecting == 0 and batcher.running == 0
    assert called == [] and first.stats("slow").handled == 0
    await second.start()
    await wait_until(lambda: sorted(later) == [0, 1], 5, "both redelivered to the group")


async def test_stop_during_a_batch_call_cancels_it_and_acks_nothing(meshes: Any) -> None:
    first, second = meshes(), meshes()
    started = asyncio.Event()
    cancelled: list[bool] = []
    later: list[int] = []

    @first.on("job", group="g", batch=BatchPolicy(max_size=2, max_wait=0.05))
    async def stuck(batch: list[Event]) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    @second.on("job", group="g", batch=BatchPolicy(max_size=2, max_wait=0.05))
    async def fast(batch: list[Event]) -> None:
        later.extend(e.data["n"] for e in batch)

    await first.start()
    await first.publish_many(events(2))
    await asyncio.wait_for(started.wait(), 5)
    await first.stop(timeout=0.1)
    assert cancelled == [True]
    stats = first.stats("stuck")
    assert stats.handled == 0 and stats.dead_lettered == 0 and stats.failed_attempts == 0
    await second.start()
    await wait_until(lambda: sorted(later) == [0, 1], 5, "both redelivered to the group")


async def test_plain_handlers_do_not_go_through_a_batcher(meshes: Any) -> None:
    mesh = meshes()

    async def plain(event: Event) -> None: ...

    mesh.on("job", group="g")(plain)
    await mesh.start()
    consumer = mesh._consumers["plain"]
    assert consumer._call_event is plain  # the handler itself, as before batches existed


async def test_a_runtime_subscription_batches_and_its_close_acks_nothing_unhandled(
    meshes: Any,
) -> None:
    first, second = meshes(), meshes()
    got: list[list[int]] = []
    later: list[int] = []
    await first.start()
    with pytest.raises(ConfigError, match="max_in_flight=2 is below batch max_size=3"):
        await first.subscribe("job", collect(got), batch={"max_size": 3}, max_in_flight=2)
    with pytest.raises(ConfigError, match="no handler named 'insert'"):
        first.subscription("insert")  # nothing subscribed
    sub = await first.subscribe(
        "job", collect(got), group="g", batch={"max_size": 3, "max_wait": 0.05}
    )
    await first.publish_many(events(3))
    await wait_until(lambda: got == [[0, 1, 2]], 5, "a batch through mesh.subscribe")
    await sub.close()
    await sub.close()  # twice: a no-op
    slow = await first.subscribe(
        "job", collect(got), group="g", batch={"max_size": 100, "max_wait": 30}
    )
    await first.publish(Event("job", "/t", {"n": 7}))
    batcher = first._consumers["insert"].invoke.__self__
    await wait_until(lambda: batcher.collecting == 1, 5, "the event collecting")
    await slow.close(0.1)
    assert got == [[0, 1, 2]] and batcher.collecting == 0

    @second.on("job", group="g", batch=BatchPolicy(max_size=2, max_wait=0.05))
    async def rest(batch: list[Event]) -> None:
        later.extend(e.data["n"] for e in batch)

    await second.start()
    await wait_until(lambda: later == [7], 5, "the unhandled event given back to the group")


def collect(got: list[list[int]]) -> Any:
    """A batch handler (named insert) recording the ``n`` of each call's events."""

    async def insert(batch: list[Event]) -> None:
        got.append([e.data["n"] for e in batch])

    return insert
