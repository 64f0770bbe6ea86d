"""The fast paths of the delivery hot path keep every guarantee of the slow ones.

* `Event()` fills its slots through a mutable twin class, takes ids from a per-thread
  pool formatted in bulk, and converts its creation time to a datetime only when read.
* `Consumer` uses a store's synchronous ``seen_nowait``/``mark_nowait`` when it has
  them, calls an event-only handler without the adapter, runs the attempts inline and
  remembers per channel whether deliveries are skipped.
* The memory transport queues the bare event for the common case, inlines
  `mesh.transport.deliver`, and publishes a batch without an await per event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from mesh import (
    Delivery,
    Event,
    InvalidEvent,
    MemoryIdempotencyStore,
    Mesh,
    RetryLater,
    RetryPolicy,
    codec,
)
from mesh.app import _adapt
from mesh.context import current_event
from mesh.delivery import Consumer
from mesh.event import _Draft, _fresh_ids, _ids
from mesh.stores import SyncIdempotencyStore
from mesh.transports.memory import MemoryTransport, _MemoryDelivery

# --- Event ---------------------------------------------------------------------------


def test_fast_construction_gives_a_plain_immutable_event() -> None:
    event = Event("t", "/s", {"a": 1}, subject="x", partitionkey="k")
    assert type(event) is Event and not isinstance(event, _Draft)
    assert (event.type, event.source, event.data, event.subject, event.partitionkey) == (
        "t",
        "/s",
        {"a": 1},
        "x",
        "k",
    )
    with pytest.raises(AttributeError, match="immutable"):
        event.type = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del event.data


@pytest.mark.parametrize(
    "args,kwargs",
    [
        (("", "/s"), {}),
        ((1, "/s"), {}),
        (("t", None), {}),
        (("t", "/s"), {"id": ""}),
        (("t", "/s"), {"id": 7}),
        (("t", "/s"), {"dataschema": ""}),
        (("t", "/s"), {"datacontenttype": 3}),
    ],
)
def test_inlined_checks_still_reject_bad_attributes(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidEvent):
        Event(*args, **kwargs)


def test_str_subclasses_are_still_accepted() -> None:
    class Name(str):
        pass

    event = Event(Name("t"), Name("/s"), id=Name("1"))
    assert event.type == "t" and event.source == "/s" and event.id == "1"


def test_subclasses_are_built_through_the_general_path() -> None:
    class Slotted(Event):
        __slots__ = ()

    class WithDict(Event):  # a different layout than _Draft's
        pass

    for cls in (Slotted, WithDict):
        event = cls("t", "/s", {"n": 1}, id="i")
        assert type(event) is cls and event.id == "i" and event.data == {"n": 1}
        assert event.time is not None
        with pytest.raises(AttributeError, match="immutable"):
            event.id = "j"  # type: ignore[misc]


def test_ids_are_uuid4_strings_unique_across_pool_refills() -> None:
    ids = [Event("t", "/s").id for _ in range(3 * 256 + 7)] + _fresh_ids(1000)
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_each_thread_has_its_own_id_pool() -> None:
    found: list[list[str]] = []

    def make() -> None:
        found.append([Event("t", "/s").id for _ in range(600)])

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for chunk in found for i in chunk]
    assert len(ids) == 2400 and len(set(ids)) == 2400


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    Event("t", "/s")  # the pool is filled
    upcoming = set(_ids.pool)  # what the parent hands out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, "\n".join(Event("t", "/s").id for _ in range(300)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 300 and not child & upcoming


def test_time_is_the_creation_instant_in_utc_and_stable() -> None:
    before = datetime.now(UTC)
    event = Event("t", "/s")
    after = datetime.now(UTC)
    stamp = event.time
    assert stamp is not None and stamp.tzinfo is UTC
    assert before - timedelta(milliseconds=1) <= stamp <= after + timedelta(milliseconds=1)
    assert event.time is stamp  # converted once
    assert event.replace(subject="s").time == stamp
    assert event.get_time() == stamp and event.get_attributes()["time"] == stamp
    again = codec.from_json(codec.to_json(event))
    assert again.time == stamp and again == event


def test_absent_and_given_times_are_kept() -> None:
    wire = Event.from_attributes({"id": "1", "type": "t", "source": "/s", "specversion": "1.0"})
    assert wire.time is None and wire.replace(subject="x").time is None
    assert "time" not in wire.get_attributes()
    sdk = Event(
        {
            "id": "1",
            "type": "t",
            "source": "/s",
            "specversion": "1.0",  # type: ignore[arg-type]
            "time": "2026-01-01T00:00:00Z",
        },
        {"a": 1},
    )
    assert sdk.time == datetime(2026, 1, 1, tzinfo=UTC) and sdk.data == {"a": 1}
    assert sdk.attributes["id"] == "1"
    given = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert Event("t", "/s", time=given).time is given


# --- Consumer --------------------------------------------------------------------------


class FakeDelivery(Delivery):
    __slots__ = ("acked", "nacked", "on_ack")

    def __init__(
        self, event: Event, channel: str = "t", on_ack: Callable[[], None] | None = None
    ) -> None:
        super().__init__(channel, 0, event)
        self.acked = self.nacked = 0
        self.on_ack = on_ack

    async def _ack(self) -> None:
        if self.on_ack is not None:
            self.on_ack()
        self.acked += 1

    async def _nack(self, delay: float) -> None:
        self.nacked += 1


class SyncOnlyStore(MemoryIdempotencyStore):
    """Proves the consumer takes the synchronous path: the async one fails."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def seen_nowait(self, key: str) -> bool:
        self.calls.append("seen")
        return super().seen_nowait(key)

    def mark_nowait(self, key: str) -> None:
        self.calls.append("mark")
        super().mark_nowait(key)

    async def seen(self, key: str) -> bool:
        raise AssertionError("the async seen() was awaited")

    async def mark(self, key: str) -> None:
        raise AssertionError("the async mark() was awaited")


class AsyncOnlyStore:
    """A store without the synchronous methods (say, a remote one)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.calls: list[str] = []

    async def seen(self, key: str) -> bool:
        self.calls.append("seen")
        await asyncio.sleep(0)
        return key in self.keys

    async def mark(self, key: str) -> None:
        self.calls.append("mark")
        await asyncio.sleep(0)
        self.keys.add(key)

    async def close(self) -> None:
        pass


def consumer_for(
    handler: Callable[..., Awaitable[Any]], store: Any = None, max_attempts: int = 2
) -> Consumer:
    mesh = Mesh("memory://", capabilities={"enabled": False})
    invoke, wants_ctx, call_event = _adapt(handler)
    return Consumer(
        mesh,
        invoke=invoke,
        wants_ctx=wants_ctx,
        call_event=call_event,
        scope="g",
        group="g",
        predicate=None,
        policy=RetryPolicy(max_attempts=max_attempts, initial_backoff=0.0),
        store=store,
        accepts_dead_letters=False,
        contracts=mesh.contracts,
        patterns=["t"],
    )


def test_memory_store_offers_the_sync_protocol() -> None:
    assert isinstance(MemoryIdempotencyStore(), SyncIdempotencyStore)
    assert not isinstance(AsyncOnlyStore(), SyncIdempotencyStore)


@pytest.mark.parametrize("store_class", [SyncOnlyStore, AsyncOnlyStore])
async def test_duplicates_are_acked_unseen_on_both_store_paths(store_class: type) -> None:
    store = store_class()
    seen: list[Event | None] = []

    async def handler(event: Event) -> None:
        seen.append(current_event())

    consumer = consumer_for(handler, store)
    event = Event("t", "/s", {})
    first, second = FakeDelivery(event), FakeDelivery(event)
    await consumer(first)
    await consumer(second)
    assert seen == [event] and current_event() is None
    assert first.acked == second.acked == 1
    assert consumer.stats.handled == 1 and consumer.stats.duplicates == 1
    assert store.calls == ["seen", "mark", "seen"]


async def test_the_key_is_recorded_before_the_ack() -> None:
    store = SyncOnlyStore()
    event = Event("t", "/s", {})
    recorded: list[bool] = []

    async def handler(event: Event) -> None:
        pass

    consumer = consumer_for(handler, store)
    await consumer(
        FakeDelivery(
            event,
            on_ack=lambda: recorded.append(store.seen_nowait(f"g\x1f{event.source}\x1f{event.id}")),
        )
    )
    assert recorded == [True]


async def test_failed_attempts_and_retry_later_do_not_mark() -> None:
    store = SyncOnlyStore()
    calls: list[int] = []

    async def handler(event: Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first attempt fails")  # retried in-process
        if len(calls) == 2:
            raise RetryLater(after=0)  # back to the broker

    consumer = consumer_for(handler, store, max_attempts=3)
    event = Event("t", "/s", {})
    first = FakeDelivery(event)
    await consumer(first)
    assert len(calls) == 2 and first.nacked == 1 and first.acked == 0
    assert "mark" not in store.calls and consumer.stats.failed_attempts == 1
    again = FakeDelivery(event)  # the redelivery runs the handler
    await consumer(again)
    assert len(calls) == 3 and again.acked == 1 and consumer.stats.duplicates == 0
    assert store.calls.count("mark") == 1


async def test_a_cancelled_handler_is_neither_marked_nor_acked() -> None:
    store = SyncOnlyStore()
    started = asyncio.Event()

    async def handler(event: Event) -> None:
        started.set()
        await asyncio.sleep(3600)

    consumer = consumer_for(handler, store)
    delivery = FakeDelivery(Event("t", "/s", {}))
    task = asyncio.create_task(consumer(delivery))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not delivery.settled and delivery.acked == delivery.nacked == 0
    assert store.calls == ["seen"] and consumer.stats.handled == 0


class Data(BaseModel):
    n: int


async def test_handlers_with_context_or_model_keep_their_adapters() -> None:
    got: list[Any] = []

    async def with_ctx(event: Event, ctx: Any) -> None:
        got.append((event.id, ctx.attempt, ctx.scope, current_event() is event))

    async def with_model(data: Data) -> None:
        got.append(data.n)

    assert _adapt(with_ctx)[2] is None and _adapt(with_model)[2] is None
    event = Event("t", "/s", {"n": 5})
    await consumer_for(with_ctx)(FakeDelivery(event))
    await consumer_for(with_model)(FakeDelivery(event))
    assert got == [(event.id, 1, "g", True), 5]


async def test_the_skip_verdict_is_remembered_per_channel_and_bounded() -> None:
    handled: list[str] = []

    async def handler(event: Event) -> None:
        handled.append(event.type)

    consumer = consumer_for(handler)
    dlq = consumer.mesh.config.dead_letter_channel
    for channel in ("t", "mesh.reply.x", dlq, "t", "mesh.reply.x", dlq):
        delivery = FakeDelivery(Event(channel, "/s", {}), channel=channel)
        await consumer(delivery)
        assert delivery.acked == 1
    assert handled == ["t", "t"]
    for n in range(5000):
        consumer._skips(f"c{n}")
    assert len(consumer._skip_channel) <= 4096


# --- memory transport ------------------------------------------------------------------


async def test_bare_and_wrapped_queue_entries_deliver_alike() -> None:
    transport = MemoryTransport("memory://")
    await transport.connect()
    got: list[tuple[str, str, int]] = []

    async def handler(delivery: Delivery) -> None:
        got.append((delivery.channel, delivery.event.type, delivery.redeliveries))
        if delivery.redeliveries == 0:
            await delivery.nack()
        else:
            await delivery.ack()

    await transport.subscribe(["t", "other"], handler, group="g", max_in_flight=4)
    await transport.publish_batch(
        [
            ("t", Event("t", "/s")),  # bare: channel = type
            ("other", Event("t", "/s")),  # wrapped: own channel
            ("t", Event("t", "/s", partitionkey="k")),
        ]
    )  # wrapped: key
    for _ in range(100):
        if len(got) == 6:
            break
        await asyncio.sleep(0.01)
    await transport.close()
    assert sorted(got) == sorted(
        [
            ("t", "t", 0),
            ("t", "t", 1),
            ("other", "t", 0),
            ("other", "t", 1),
            ("t", "t", 0),
            ("t", "t", 1),
        ]
    )


async def test_the_memory_worker_keeps_the_deliver_contract(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = MemoryTransport("memory://")
    await transport.connect()
    deliveries: list[Delivery] = []
    blocked = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        deliveries.append(delivery)
        if len(deliveries) == 1:
            raise RuntimeError("boom")  # logged, redelivered
        if len(deliveries) == 2:
            return  # unsettled: redelivered
        blocked.set()
        await asyncio.sleep(3600)  # cancelled by close: never acked

    sub = await transport.subscribe("t", handler, group="g")
    with caplog.at_level(logging.ERROR, logger="mesh.transport"):
        await transport.publish("t", Event("t", "/s"))
        await asyncio.wait_for(blocked.wait(), 5)
    assert "handler failed on channel t" in caplog.text
    assert [d.redeliveries for d in deliveries] == [0, 1, 2]
    await sub.close(timeout=0.01)
    assert all(d.settled for d in deliveries)  # given back, not acked...
    again: list[int] = []

    async def second(delivery: Delivery) -> None:
        again.append(delivery.redeliveries)
        await delivery.ack()

    await transport.subscribe("t", second, group="g")  # ...so the group gets it again
    for _ in range(100):
        if again:
            break
        await asyncio.sleep(0.01)
    await transport.close()
    assert again == [3]
    assert isinstance(deliveries[0], _MemoryDelivery)


async def test_a_mesh_batch_is_handled_once_each_with_idempotency() -> None:
    mesh = Mesh("memory://", capabilities={"enabled": False})
    seen: list[str] = []

    @mesh.on("t", group="g", max_in_flight=8)
    async def handle(event: Event) -> None:
        seen.append(event.id)

    async with mesh:
        events = [Event("t", "/s", {"n": n}) for n in range(500)]
        await mesh.publish_many(events + events[:50])  # 50 duplicates
        for _ in range(200):
            if mesh.stats("handle").handled + mesh.stats("handle").duplicates == 550:
                break
            await asyncio.sleep(0.01)
    assert sorted(seen) == sorted(e.id for e in events)
    assert mesh.stats("handle").duplicates == 50
