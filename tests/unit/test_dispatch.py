"""`mesh.Dispatcher`: bounded concurrency, per-key order across retries, in-client retries,
stop()/drain() and the on_done contract, driven through `mesh.transport.deliver`.

Handlers wait on futures the test resolves (no sleeps for ordering); only retry timers use
real delays, long enough (0.3-0.5 s) that a stalled loop cannot fire them before the test
looks at the "waiting out a delay" state, and always awaited with generous timeouts.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from mesh.dispatch import Dispatcher
from mesh.transport import Delivery

WAIT = 5.0  # generous upper bound for anything awaited through an event


class Rec(Delivery):
    """One attempt of ``item``: records its settlement; nack asks the dispatcher to retry
    (as the Kafka transport does)."""

    def __init__(self, harness: Harness, item: str) -> None:
        super().__init__("orders.created")
        self.harness, self.item = harness, item
        self.acks = 0
        self.nacks: list[float] = []
        self.retried: list[bool] = []
        self.unhandled: list[bool] = []

    async def _ack(self) -> None:
        self.acks += 1
        self.harness.acked.append(self.item)

    async def _nack(self, delay: float) -> None:
        self.nacks.append(delay)
        self.retried.append(self.harness.pool.retry(self.item, delay))

    async def _unhandled(self, cancelled: bool) -> None:
        self.unhandled.append(cancelled)
        await super()._unhandled(cancelled)


class Harness:
    """A dispatcher whose handler records starts and concurrency, then (``manual``) waits
    for the test to `release` the attempt with an action, or (auto) yields a few times
    and takes the next action of ``script[item]`` (default "ack").

    Actions: "ack", "nack" (with ``delay``), "raise", "return" (leave unsettled)."""

    def __init__(
        self,
        limit: int,
        *,
        manual: bool = True,
        drop: Iterable[str] = (),
        script: dict[str, list[str]] | None = None,
        delivery_cls: type[Rec] = Rec,
    ) -> None:
        self.manual, self.drop, self.script = manual, set(drop), script or {}
        self.delivery_cls = delivery_cls
        self.pool: Dispatcher[str] = Dispatcher(
            self.handler, limit, self.make, on_done=self.on_done
        )
        self.started: list[tuple[str, int]] = []
        self.attempts: Counter[str] = Counter()
        self.active: set[str] = set()
        self.max_active = 0
        self.same_item_overlap = False
        self.done: list[str] = []
        self.done_attempts: dict[str, int] = {}
        self.acked: list[str] = []
        self.made: dict[str, list[Rec]] = defaultdict(list)
        self.gates: dict[tuple[str, int], asyncio.Future[tuple[str, float]]] = {}
        self.events: dict[tuple[str, ...], asyncio.Event] = defaultdict(asyncio.Event)

    # the dispatcher's callbacks
    def make(self, item: str) -> Rec | None:
        if item in self.drop:
            return None
        delivery = self.delivery_cls(self, item)
        self.made[item].append(delivery)
        return delivery

    def on_done(self, item: str) -> None:
        self.done.append(item)
        self.done_attempts[item] = self.attempts[item]
        self.events[("done", item)].set()

    async def handler(self, delivery: Delivery) -> None:
        assert isinstance(delivery, Rec)
        item = delivery.item
        self.attempts[item] += 1
        attempt = self.attempts[item]
        self.started.append((item, attempt))
        if item in self.active:
            self.same_item_overlap = True
        self.active.add(item)
        self.max_active = max(self.max_active, len(self.active))
        self.events[("start", item, str(attempt))].set()
        try:
            if self.manual:
                action, delay = await self._gate(item, attempt)
            else:
                for _ in range(3):
                    await asyncio.sleep(0)
                steps = self.script.get(item, [])
                action, delay = (steps[attempt - 1] if attempt <= len(steps) else "ack"), 0.0
            if action == "ack":
                await delivery.ack()
            elif action == "nack":
                await delivery.nack(delay)
            elif action == "raise":
                raise RuntimeError("handler failed")
            else:
                assert action == "return"
        finally:
            self.active.discard(item)

    # test helpers
    def _gate(self, item: str, attempt: int) -> asyncio.Future[tuple[str, float]]:
        key = (item, attempt)
        if key not in self.gates:
            self.gates[key] = asyncio.get_running_loop().create_future()
        return self.gates[key]

    def release(self, item: str, attempt: int = 1, action: str = "ack", delay: float = 0.0) -> None:
        self._gate(item, attempt).set_result((action, delay))

    async def wait_started(self, item: str, attempt: int = 1) -> None:
        await asyncio.wait_for(self.events[("start", item, str(attempt))].wait(), WAIT)

    async def wait_done(self, *items: str) -> None:
        for item in items:
            await asyncio.wait_for(self.events[("done", item)].wait(), WAIT)

    def starts(self) -> list[str]:
        return [item for item, _ in self.started]


async def settle(rounds: int = 30) -> None:
    """Let every callback and task step that is ready run (no timers involved)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# --- bounded concurrency and order ------------------------------------------------------------


async def test_limit_bounds_concurrent_calls_and_keyless_items_start_in_arrival_order() -> None:
    h = Harness(3, manual=False)
    items = [f"e{i}" for i in range(12)]
    for item in items:
        h.pool.submit(item)
    assert h.pool.running == 3 and h.pool.load == 12
    await h.wait_done(*items)
    assert h.max_active == 3  # reached the limit, never more
    assert h.starts() == items  # no key: arrival order
    assert sorted(h.done) == sorted(items) and len(h.done) == 12
    assert (h.pool.load, h.pool.running, h.pool.delayed) == (0, 0, 0)


async def test_waiting_items_start_in_arrival_order_as_slots_free() -> None:
    h = Harness(2)
    for item in "abcde":
        h.pool.submit(item)
    await settle()
    assert h.starts() == ["a", "b"]
    assert (h.pool.running, h.pool.load, h.pool.delayed) == (2, 5, 0)
    assert h.pool.waiting() == ["c", "d", "e"]
    assert h.pool.items() == ["a", "b", "c", "d", "e"]  # running first
    h.release("b")
    await h.wait_started("c")
    assert h.starts() == ["a", "b", "c"]
    assert h.pool.load == 4 and h.pool.waiting() == ["d", "e"]
    h.release("a")
    await h.wait_started("d")
    h.release("c")
    await h.wait_started("e")
    h.release("d")
    h.release("e")
    await h.wait_done(*"abcde")
    assert h.starts() == list("abcde")
    assert h.done == ["b", "a", "c", "d", "e"]  # finish order
    assert h.acked == h.done
    assert (h.pool.load, h.pool.running) == (0, 0)


def test_limit_below_one_means_one() -> None:
    assert Dispatcher(Harness(1).handler, 0, lambda item: None).limit == 1


async def test_same_key_items_run_one_at_a_time_in_order() -> None:
    h = Harness(5)
    for item in ("k1", "k2", "k3"):
        h.pool.submit(item, key="K")
    await settle()
    assert h.starts() == ["k1"]
    assert (h.pool.running, h.pool.load) == (1, 3)
    assert h.pool.waiting() == ["k2", "k3"]
    h.release("k1")
    await h.wait_started("k2")
    await settle()
    assert h.starts() == ["k1", "k2"] and h.pool.running == 1
    h.release("k2")
    await h.wait_started("k3")
    h.release("k3")
    await h.wait_done("k3")
    assert h.starts() == ["k1", "k2", "k3"] and h.done == ["k1", "k2", "k3"]
    assert h.max_active == 1
    assert h.pool.load == 0


async def test_different_keys_and_keyless_items_run_concurrently() -> None:
    h = Harness(4)
    h.pool.submit("a1", key="A")
    h.pool.submit("b1", key="B")
    h.pool.submit("a2", key="A")
    h.pool.submit("free")
    await settle()
    assert h.starts() == ["a1", "b1", "free"]  # a2 waits for its key, not for a slot
    assert h.max_active == 3 and h.pool.running == 3 and h.pool.load == 4
    assert h.pool.waiting() == ["a2"]
    h.release("b1")
    h.release("free")
    await h.wait_done("b1", "free")
    await settle()
    assert "a2" not in h.starts()  # key A is still held by a1
    h.release("a1")
    await h.wait_started("a2")
    h.release("a2")
    await h.wait_done("a2")
    assert Counter(h.done) == Counter(["a1", "a2", "b1", "free"])


# --- retries ---------------------------------------------------------------------------------


async def finish_first_then_second(h: Harness) -> None:
    """End the retried attempt of "first"; only then may "second" (same key) run."""
    h.release("first", 2)
    await h.wait_started("second")
    h.release("second")
    await h.wait_done("second")
    assert h.started == [("first", 1), ("first", 2), ("second", 1)]
    assert h.done == ["first", "second"]


@pytest.mark.parametrize("action", ["nack", "raise", "return"])
async def test_immediate_retry_keeps_the_key_and_is_not_overtaken(action: str) -> None:
    h = Harness(3)
    h.pool.submit("first", key="K")
    h.pool.submit("second", key="K")
    await h.wait_started("first")
    h.release("first", 1, action)  # nack(0); raise / return: deliver nacks it
    await h.wait_started("first", 2)
    await settle()
    assert h.started == [("first", 1), ("first", 2)]
    attempt = h.made["first"][0]
    assert attempt.acks == 0 and attempt.nacks == [0.0] and attempt.retried == [True]
    assert attempt.unhandled == ([] if action == "nack" else [False])
    assert h.done == []  # not finished while retried
    assert (h.pool.running, h.pool.load) == (1, 2)
    await finish_first_then_second(h)
    assert h.made["first"][1].acks == 1 and len(h.made["first"]) == 2
    assert not h.same_item_overlap


async def test_delayed_retry_keeps_the_key_and_counts_as_delayed() -> None:
    h = Harness(3)
    h.pool.submit("first", key="K")
    h.pool.submit("second", key="K")
    await h.wait_started("first")
    h.release("first", 1, "nack", delay=0.3)
    await settle()
    # waiting out the delay: not running, not in load, and the key stays held
    assert (h.pool.running, h.pool.delayed, h.pool.load) == (0, 1, 1)
    assert sorted(h.pool.waiting()) == ["first", "second"]
    assert h.starts() == ["first"] and h.done == []
    await h.wait_started("first", 2)
    assert (h.pool.running, h.pool.delayed, h.pool.load) == (1, 0, 2)
    assert h.made["first"][0].nacks == [0.3]
    await settle()
    assert h.starts() == ["first", "first"]  # second still waits for the key
    await finish_first_then_second(h)


async def test_immediate_retry_runs_ahead_of_items_that_never_ran() -> None:
    h = Harness(1)
    for item in ("x", "y", "z"):
        h.pool.submit(item)
    await h.wait_started("x")
    h.release("x", 1, "nack")
    await h.wait_started("x", 2)
    assert h.starts() == ["x", "x"] and h.pool.waiting() == ["y", "z"]
    h.release("x", 2)
    await h.wait_started("y")
    h.release("y")
    await h.wait_started("z")
    h.release("z")
    await h.wait_done("z")
    assert h.started == [("x", 1), ("x", 2), ("y", 1), ("z", 1)]


async def test_delayed_retry_is_queued_ahead_of_items_that_never_ran() -> None:
    h = Harness(1)
    for item in ("x", "y", "z"):
        h.pool.submit(item)
    await h.wait_started("x")
    h.release("x", 1, "nack", delay=0.3)
    await h.wait_started("y")  # the slot is free during the delay
    assert h.pool.delayed == 1
    # wait until x is due: it is then queued ahead of z
    for _ in range(int(WAIT / 0.01)):
        if h.pool.delayed == 0:
            break
        await asyncio.sleep(0.01)
    assert h.pool.delayed == 0 and h.pool.waiting() == ["x", "z"]
    h.release("y")
    await h.wait_started("x", 2)
    h.release("x", 2)
    await h.wait_started("z")
    h.release("z")
    await h.wait_done("z")
    assert h.started == [("x", 1), ("y", 1), ("x", 2), ("z", 1)]
    assert Counter(h.done) == Counter("xyz")


async def test_raising_handler_is_nacked_by_deliver_and_retried() -> None:
    h = Harness(2, manual=False, script={"boom": ["raise", "raise", "ack"]})
    h.pool.submit("boom")
    await h.wait_done("boom")
    assert h.started == [("boom", 1), ("boom", 2), ("boom", 3)]
    first, second, third = h.made["boom"]
    assert (first.nacks, first.unhandled, first.acks) == ([0.0], [False], 0)
    assert (second.nacks, second.unhandled, second.acks) == ([0.0], [False], 0)
    assert (third.nacks, third.acks) == ([], 1)
    assert h.done == ["boom"] and h.done_attempts["boom"] == 3


async def test_on_done_once_per_item_after_its_last_attempt() -> None:
    script = {
        "n": ["nack", "ack"],
        "r": ["raise", "ack"],
        "u": ["return", "return", "ack"],
        "ok": ["ack"],
    }
    h = Harness(2, manual=False, script=script)
    for item in ("n", "r", "u", "ok"):
        h.pool.submit(item, key="same" if item in ("n", "u") else None)
    h.pool.submit("n2", key="same")
    await h.wait_done("n", "r", "u", "ok", "n2")
    await settle()
    assert Counter(h.done) == Counter(["n", "r", "u", "ok", "n2"])  # exactly once each
    assert h.done_attempts == {"n": 2, "r": 2, "u": 3, "ok": 1, "n2": 1}
    assert h.done.index("n") < h.done.index("u") < h.done.index("n2")  # key order
    assert h.max_active <= 2 and not h.same_item_overlap
    assert (h.pool.load, h.pool.running, h.pool.delayed) == (0, 0, 0)


async def test_retry_that_fails_again_at_once_still_finishes_once() -> None:
    attempts: Counter[str] = Counter()
    done: list[str] = []
    overlap: list[bool] = []
    running: set[str] = set()
    pool: Dispatcher[str]

    class D(Rec):
        async def _nack(self, delay: float) -> None:
            pool.retry(self.item, delay)

    async def handler(delivery: Delivery) -> None:
        assert isinstance(delivery, Rec)
        attempts[delivery.item] += 1
        if delivery.item == "a" and attempts["a"] <= 2:
            raise RuntimeError("fails before its first await")
        overlap.append(bool(running))
        running.add(delivery.item)
        await asyncio.sleep(0)
        running.discard(delivery.item)
        await delivery.ack()

    h = Harness(2)
    pool = Dispatcher(handler, 2, lambda item: D(h, item), on_done=done.append)
    pool.submit("a", key="K")
    pool.submit("b", key="K")
    await settle(100)
    assert attempts == {"a": 3, "b": 1}
    assert done == ["a", "b"] and overlap == [False, False] and pool.load == 0


async def test_make_returning_none_drops_the_item_and_frees_its_key() -> None:
    h = Harness(2, drop={"gone"})
    h.pool.submit("gone", key="K")
    h.pool.submit("next", key="K")
    await h.wait_started("next")
    assert h.done == ["gone"] and "gone" not in h.starts() and "gone" not in h.made
    assert (h.pool.load, h.pool.running) == (1, 1)
    h.release("next")
    await h.wait_done("next")
    assert h.done == ["gone", "next"] and h.pool.load == 0


async def test_make_is_called_for_every_attempt_and_may_drop_a_retry() -> None:
    h = Harness(1)
    h.pool.submit("x", key="K")
    h.pool.submit("y", key="K")
    await h.wait_started("x")
    h.drop.add("x")  # e.g. its partition was revoked meanwhile
    h.release("x", 1, "nack")
    await h.wait_started("y")
    assert h.starts() == ["x", "y"] and len(h.made["x"]) == 1
    assert h.done == ["x"]
    h.release("y")
    await h.wait_done("y")
    assert h.done == ["x", "y"]


# --- stop and drain -------------------------------------------------------------------------


async def test_stop_returns_queued_parked_and_delayed_items_and_cancels_timers() -> None:
    h = Harness(2)
    h.pool.submit("run", key="A")
    h.pool.submit("retry", key="B")
    for item in ("parked", "q1", "q2", "q3"):
        h.pool.submit(item, key="A" if item == "parked" else None)
    await h.wait_started("retry")
    h.release("retry", 1, "nack", delay=0.5)
    await h.wait_started("q1")  # took the slot "retry" left
    await settle()
    assert (h.pool.running, h.pool.delayed, h.pool.load) == (2, 1, 5)
    assert h.pool.waiting() == ["q2", "q3", "parked", "retry"]

    left = h.pool.stop()
    assert left == ["q2", "q3", "parked", "retry"]
    assert h.pool.stopped
    assert (h.pool.running, h.pool.delayed, h.pool.load) == (2, 0, 2)
    assert h.pool.waiting() == []
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        await asyncio.sleep(0.7)  # past the retry delay
    finally:
        loop.set_exception_handler(previous)
    assert ("retry", 2) not in h.started  # its timer was cancelled: it never
    assert errors == []  # fired (nor failed in a callback)

    h.release("run")
    h.release("q1")
    await h.wait_done("run", "q1")
    await settle()
    assert sorted(h.done) == ["q1", "run"]  # never on_done for returned items
    assert h.starts() == ["run", "retry", "q1"]  # "parked" did not get key A
    assert (h.pool.load, h.pool.running) == (0, 0)
    assert h.pool.stop() == []  # idempotent


async def test_items_submitted_after_stop_never_run_and_come_back_from_the_next_stop() -> None:
    h = Harness(2)
    h.pool.submit("before")
    assert h.pool.stop() == []
    h.pool.submit("late")
    h.pool.submit("late-keyed", key="K")
    await settle()
    assert "late" not in h.starts() and "late-keyed" not in h.starts()
    assert h.pool.load == 3
    assert h.pool.stop() == ["late", "late-keyed"]
    assert h.pool.load == 1
    h.release("before")
    await h.wait_done("before")
    assert h.done == ["before"] and h.pool.load == 0


async def test_retry_after_stop_returns_false_and_the_item_finishes() -> None:
    h = Harness(1)
    h.pool.submit("x")
    await h.wait_started("x")
    assert h.pool.stop() == []
    h.release("x", 1, "nack", delay=0.01)
    await h.wait_done("x")
    delivery = h.made["x"][0]
    assert delivery.retried == [False] and delivery.acks == 0
    assert h.done == ["x"] and h.attempts["x"] == 1
    assert (h.pool.load, h.pool.delayed) == (0, 0)
    assert h.pool.retry("x", 0.0) is False


async def test_stop_during_an_attempt_with_a_scheduled_retry_finishes_it_once() -> None:
    """A retry scheduled from nack while the attempt still runs: stop() does not hand
    the item back (its attempt is running); it finishes once when the attempt ends."""
    nacked = asyncio.Event()
    resume = asyncio.get_running_loop().create_future()

    class Slow(Rec):
        async def _nack(self, delay: float) -> None:
            await super()._nack(delay)
            nacked.set()
            await resume  # still inside this attempt after scheduling the retry

    h = Harness(2, delivery_cls=Slow)
    h.pool.submit("x")
    await h.wait_started("x")
    h.release("x", 1, "nack", delay=10.0)
    await asyncio.wait_for(nacked.wait(), WAIT)
    assert (h.pool.running, h.pool.delayed, h.pool.load) == (1, 1, 0)
    assert h.pool.stop() == []
    assert h.pool.delayed == 0
    resume.set_result(None)
    await settle()
    assert h.done == ["x"] and h.attempts["x"] == 1
    assert (h.pool.load, h.pool.running) == (0, 0)


async def test_drain_waits_for_a_handler_that_finishes_within_the_timeout() -> None:
    h = Harness(2)
    h.pool.submit("x")
    await h.wait_started("x")
    drain = asyncio.create_task(h.pool.drain(timeout=WAIT))
    await settle()
    assert not drain.done() and h.pool.stopped
    h.release("x")
    await asyncio.wait_for(drain, WAIT)
    delivery = h.made["x"][0]
    assert delivery.acks == 1 and delivery.unhandled == [] and delivery.nacks == []
    assert h.done == ["x"] and (h.pool.running, h.pool.load) == (0, 0)


async def test_drain_cancels_a_handler_past_the_timeout_without_acking() -> None:
    h = Harness(2)
    h.pool.submit("slow")
    h.pool.submit("quick")
    h.pool.submit("queued")  # limit 2: never starts
    await h.wait_started("slow")
    await h.wait_started("quick")
    assert h.pool.stop() == ["queued"]
    h.release("quick")
    await h.wait_done("quick")
    await asyncio.wait_for(h.pool.drain(timeout=0.05), WAIT)
    slow = h.made["slow"][0]
    assert slow.acks == 0 and "slow" not in h.acked
    assert slow.unhandled == [True]
    assert slow.nacks == [0.0] and slow.retried == [False]  # default _unhandled nacks
    assert h.attempts["slow"] == 1 and "queued" not in h.starts()
    assert sorted(h.done) == ["quick", "slow"]
    assert (h.pool.running, h.pool.load, h.pool.delayed) == (0, 0, 0)
    assert h.pool.items() == []


async def test_drain_with_zero_timeout_cancels_at_once() -> None:
    h = Harness(1)
    h.pool.submit("x")
    await h.wait_started("x")
    await asyncio.wait_for(h.pool.drain(), WAIT)
    delivery = h.made["x"][0]
    assert delivery.unhandled == [True] and delivery.acks == 0
    assert h.done == ["x"] and h.pool.running == 0


async def test_resize_narrows_and_widens_the_pool() -> None:
    running: list[int] = []
    peak = [0]
    release = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        running.append(1)
        peak[0] = max(peak[0], len(running))
        await release.wait()
        running.pop()
        await delivery.ack()

    class Plain(Delivery):
        async def _ack(self) -> None: ...

        async def _nack(self, delay: float) -> None: ...

    pool: Dispatcher[object] = Dispatcher(handler, 4, lambda item: Plain("c"))
    pool.resize(1)
    items = [object() for _ in range(4)]
    for item in items:
        pool.submit(item)
    await asyncio.sleep(0.01)
    assert pool.running == 1
    pool.resize(3)
    await asyncio.sleep(0.01)
    assert pool.running == 3
    release.set()
    await pool.drain(1.0)


async def test_before_runs_ahead_of_the_handler_only_where_asked() -> None:
    order: list[str] = []

    class Plain(Delivery):
        async def _ack(self) -> None: ...

        async def _nack(self, delay: float) -> None: ...

    async def handler(delivery: Delivery) -> None:
        order.append(f"handle {delivery.channel}")
        await delivery.ack()

    async def mark(item: str) -> None:
        await asyncio.sleep(0.01)
        order.append(f"before {item}")

    async def broken() -> None:
        raise RuntimeError("the broker refused the mark")

    def before(item: str) -> Any:
        return mark(item) if item == "a" else broken() if item == "c" else None

    pool: Dispatcher[str] = Dispatcher(handler, 1, lambda item: Plain(item), before=before)
    for item in ("a", "b", "c"):
        pool.submit(item)
    await asyncio.sleep(0.1)
    assert order == ["before a", "handle a", "handle b"], "c's handler must not run"
    await pool.drain(1.0)
