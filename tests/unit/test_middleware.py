"""The middleware chain (issue 12) on the memory transport: order, outcomes, skipped
deliveries, failures inside middleware, runtime installation and bad input. The
conformance case in mesh.testing.mesh_cases proves the chain on every broker."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

from mesh import (
    Attempt,
    BatchPolicy,
    ConfigError,
    Context,
    DeadLetter,
    Event,
    Mesh,
    Middleware,
    Outcome,
    RetryLater,
)
from mesh.middleware import Chain, HandleNext, PublishBatchNext, PublishNext
from mesh.testing.util import wait_until

FAST = {"max_attempts": 3, "initial_backoff": 0.001, "max_backoff": 0.005}


def broker() -> str:
    return f"memory://mw-{uuid.uuid4().hex[:8]}"


class Recorder(Middleware):
    """Logs what it sees into a shared list, tagged with its name."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name, self.log = name, log

    async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
        self.log.append((self.name, "publish>", event.type))
        await call_next(event.replace(**{f"mw{self.name}": "yes"}), channel)
        self.log.append((self.name, "publish<", event.type))

    async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
        self.log.append((self.name, "handle>", attempt.number, attempt.outcome))
        await call_next(attempt)
        self.log.append((self.name, "handle<", attempt.number, attempt.outcome, attempt.reason))

    def skipped(self, attempt: Attempt) -> None:
        self.log.append((self.name, "skipped", attempt.outcome, attempt.reason))


async def test_outermost_first_and_events_changed_on_the_way_out() -> None:
    log: list[Any] = []
    got: list[Event] = []
    mesh = Mesh(broker(), middleware=[Recorder("a", log), Recorder("b", log)])

    @mesh.on("job.created", group="g")
    async def work(event: Event) -> None:
        log.append(("handler", event.type))
        got.append(event)

    async with mesh:
        await mesh.publish(Event("job.created", "/t", {}))
        await wait_until(lambda: len(log) >= 9, 5, "the attempt to finish")
    assert log == [
        ("a", "publish>", "job.created"),
        ("b", "publish>", "job.created"),
        ("b", "publish<", "job.created"),
        ("a", "publish<", "job.created"),
        ("a", "handle>", 1, None),
        ("b", "handle>", 1, None),
        ("handler", "job.created"),
        ("b", "handle<", 1, Outcome.ACKED, None),
        ("a", "handle<", 1, Outcome.ACKED, None),
    ]
    # what a publish middleware passed on is what travelled
    assert got[0].extensions["mwa"] == "yes" and got[0].extensions["mwb"] == "yes"
    assert mesh.middleware == tuple(mesh.middleware) and len(mesh.middleware) == 2


async def test_every_attempt_and_its_outcome() -> None:
    outcomes: list[tuple[int, Outcome | None, str | None, str | None]] = []

    class Watch(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            await call_next(attempt)
            error = type(attempt.error).__name__ if attempt.error else None
            outcomes.append((attempt.number, attempt.outcome, error, attempt.reason))

    mesh = Mesh(broker(), middleware=[Watch()], retry=FAST)
    calls = 0

    @mesh.on("flaky", group="g")
    async def flaky(event: Event, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        assert ctx.attempt == calls  # the context still counts the attempts
        if calls < 2:
            raise ValueError("model timed out")

    @mesh.on("doomed", group="g2")
    async def doomed(event: Event) -> None:
        raise DeadLetter("no such customer")

    @mesh.on("always", group="g3")
    async def always(event: Event) -> None:
        raise KeyError("gone")

    async with mesh:
        await mesh.publish(Event("flaky", "/t", {}))
        await wait_until(lambda: mesh.stats("flaky").handled == 1, 5, "flaky handled")
        await mesh.publish(Event("doomed", "/t", {}))
        await wait_until(lambda: mesh.stats("doomed").dead_lettered == 1, 5, "doomed")
        await mesh.publish(Event("always", "/t", {}))
        await wait_until(lambda: mesh.stats("always").dead_lettered == 1, 5, "always")
    assert outcomes == [
        (1, Outcome.RETRIED, "ValueError", None),
        (2, Outcome.ACKED, None, None),
        (1, Outcome.DEAD_LETTERED, "DeadLetter", "no such customer"),
        (1, Outcome.RETRIED, "KeyError", None),
        (2, Outcome.RETRIED, "KeyError", None),
        (3, Outcome.DEAD_LETTERED, "KeyError", "'gone'"),
    ]
    assert mesh.stats("flaky").failed_attempts == 1 and mesh.stats("always").failed_attempts == 3


async def test_skipped_deliveries_are_reported_with_their_outcome() -> None:
    log: list[Any] = []
    mesh = Mesh(broker(), middleware=[Recorder("r", log)], hop_limit=2)
    ran: list[str] = []

    @mesh.on("order", group="g", filter={"exact": {"subject": "paid"}})
    async def paid(event: Event) -> None:
        ran.append(event.id)

    async with mesh:
        await mesh.publish(Event("order", "/t", {}, subject="open"))  # filtered
        first = Event("order", "/t", {}, subject="paid")
        await mesh.publish(first)
        await wait_until(lambda: len(ran) == 1, 5, "the paid order")
        await mesh.publish(first)  # the same (source, id): a duplicate
        await mesh.publish(Event("order", "/t", {}, subject="paid", meshhops=3))  # past 2
        await wait_until(lambda: mesh.stats("paid").dead_lettered == 1, 5, "hop limit")
    skipped = [entry[2:] for entry in log if entry[1] == "skipped"]
    assert skipped[0] == (Outcome.FILTERED, None)
    assert skipped[1] == (Outcome.DUPLICATE, None)
    assert skipped[2][0] is Outcome.HOP_LIMITED and "hop limit 2" in skipped[2][1]
    assert len(skipped) == 3 and len(ran) == 1


async def test_a_middleware_raising_before_the_handler_counts_as_the_handler() -> None:
    """A rate limiter that says "later": the delivery goes back to the broker and the
    handler runs on the redelivery."""
    waited: list[int] = []

    class Limiter(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            if attempt.redeliveries == 0:
                waited.append(attempt.number)
                raise RetryLater(0.01)
            await call_next(attempt)

    mesh = Mesh(broker(), middleware=[Limiter()])
    ran: list[int] = []

    @mesh.on("call.model", group="g")
    async def call_model(event: Event, ctx: Context) -> None:
        ran.append(ctx.redeliveries)

    async with mesh:
        await mesh.publish(Event("call.model", "/t", {}))
        await wait_until(lambda: ran == [1], 5, "the handler on the redelivery")
    assert waited == [1] and mesh.stats("call_model").retry_later == 1


async def test_outer_middleware_see_the_outcome_of_an_inner_ones_refusal() -> None:
    """What an inner middleware raises is the attempt's outcome for the outer ones too:
    their call_next returns (never raises) with the outcome set."""
    seen: list[tuple[Outcome | None, str | None]] = []

    class Watch(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            await call_next(attempt)  # raises nothing, whatever happens inside
            seen.append((attempt.outcome, type(attempt.error).__name__))

    class Guard(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            assert attempt.event is not None
            if attempt.event.data.get("banned"):
                raise DeadLetter("banned customer")
            if attempt.redeliveries == 0 and attempt.event.data.get("later"):
                raise RetryLater(0.01)
            await call_next(attempt)

    mesh = Mesh(broker(), middleware=[Watch(), Guard()])
    ran: list[int] = []

    @mesh.on("job", group="g")
    async def work(event: Event) -> None:
        ran.append(event.data["n"])

    async with mesh:
        await mesh.publish(Event("job", "/t", {"n": 1, "banned": True}))
        await mesh.publish(Event("job", "/t", {"n": 2, "later": True}))
        await wait_until(lambda: ran == [2], 5, "the later job on its redelivery")
        await asyncio.sleep(0.02)
    assert seen == [
        (Outcome.DEAD_LETTERED, "DeadLetter"),
        (Outcome.RETRY_LATER, "RetryLater"),
        (Outcome.ACKED, "NoneType"),
    ]
    assert mesh.stats("work").dead_lettered == 1 and mesh.stats("work").retry_later == 1


async def test_a_middleware_that_never_calls_call_next_fails_the_attempt() -> None:
    class Swallow(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            if attempt.handler == "repair":
                await call_next(attempt)
            # else: forgot call_next

    mesh = Mesh(broker(), middleware=[Swallow()], retry=FAST)
    dead: list[Event] = []
    ran: list[Event] = []

    @mesh.on("job", group="g")
    async def work(event: Event) -> None:
        ran.append(event)

    @mesh.on_dead_letter(group="repair")
    async def repair(event: Event) -> None:
        dead.append(event)

    async with mesh:
        await mesh.publish(Event("job", "/t", {}))
        await wait_until(lambda: len(dead) == 1, 5, "the dead letter")
    assert not ran and mesh.stats("work").failed_attempts == 3
    assert "returned without calling call_next" in str(dead[0].extensions["meshdlreason"])


async def test_failures_after_the_outcome_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            await call_next(attempt)
            raise RuntimeError("exporter down")

        def skipped(self, attempt: Attempt) -> None:
            raise RuntimeError("exporter down")

    mesh = Mesh(broker(), middleware=[Broken()])
    ran: list[str] = []

    @mesh.on("job", group="g", filter={"exact": {"subject": "go"}})
    async def work(event: Event) -> None:
        ran.append(event.id)

    with caplog.at_level(logging.ERROR, logger="mesh"):
        async with mesh:
            await mesh.publish(Event("job", "/t", {}, subject="go"))
            await mesh.publish(Event("job", "/t", {}, subject="stop"))
            await wait_until(
                lambda: mesh.stats("work").handled == 1 and mesh.stats("work").filtered == 1,
                5,
                "both settled",
            )
            await asyncio.sleep(0.05)
    assert len(ran) == 1 and mesh.stats("work").failed_attempts == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("after its outcome (acked) was decided" in m for m in messages)
    assert any("failed in skipped()" in m for m in messages)


async def test_use_at_runtime_and_publish_many() -> None:
    log: list[Any] = []
    mesh = Mesh(broker())
    got: list[Event] = []

    @mesh.on("note", group="g")
    async def note(event: Event) -> None:
        got.append(event)

    async with mesh:
        await mesh.publish(Event("note", "/t", {"n": 0}))
        await wait_until(lambda: len(got) == 1, 5, "the first note")
        recorder = mesh.use(Recorder("late", log))
        assert mesh.middleware == (recorder,)
        await mesh.publish_many([Event("note", "/t", {"n": n}) for n in (1, 2, 3)])
        await wait_until(lambda: len(got) == 4, 5, "three more notes")
        await asyncio.sleep(0.05)
    assert "mwlate" not in got[0].extensions
    assert all(e.extensions["mwlate"] == "yes" for e in got[1:])
    assert sum(1 for entry in log if entry[1] == "publish>") == 3
    assert sum(1 for entry in log if entry[1] == "handle<") == 3


async def test_a_publish_hook_refusing_one_event_stops_the_batch() -> None:
    class Refuse(Middleware):
        async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
            if event.data["n"] == 1:
                raise PermissionError("not this one")
            await call_next(event, channel)

    got: list[int] = []

    async with Mesh(broker(), middleware=[Refuse()]) as mesh:

        @mesh.on("x", group="g")
        async def take(event: Event) -> None:
            got.append(event.data["n"])

        await mesh.subscription("take").ready()
        with pytest.raises(PermissionError, match="not this one"):
            await mesh.publish_many([Event("x", "/t", {"n": n}) for n in range(3)])
        with pytest.raises(PermissionError):
            await mesh.publish(Event("x", "/t", {"n": 1}))
        await mesh.publish_many([Event("x", "/t", {"n": n}) for n in (5, 6)])
        await wait_until(lambda: len(got) == 2, 5, "the second batch")
    assert got == [5, 6]


async def test_a_batch_hook_sees_the_batch_and_its_confirmation() -> None:
    log: list[Any] = []

    class Batches(Middleware):
        async def publish_batch(
            self, items: list[tuple[str, Event]], call_next: PublishBatchNext
        ) -> None:
            log.append(("batch>", [e.data["n"] for _, e in items]))
            await call_next(items)
            log.append(("batch<", len(items)))

    async with Mesh(broker(), middleware=[Batches(), Recorder("r", log)]) as mesh:
        await mesh.publish_many([Event("x", "/t", {"n": n}) for n in range(2)])
        await mesh.publish(Event("x", "/t", {"n": 9}))  # a single publish: no batch hook
    assert log == [
        ("batch>", [0, 1]),
        ("r", "publish>", "x"),
        ("r", "publish<", "x"),
        ("r", "publish>", "x"),
        ("r", "publish<", "x"),
        ("batch<", 2),
        ("r", "publish>", "x"),
        ("r", "publish<", "x"),
    ]


async def test_batch_handler_attempts_pass_through_the_chain() -> None:
    seen: list[tuple[str, Outcome | None]] = []

    class Watch(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            await call_next(attempt)
            assert attempt.event is not None
            seen.append((attempt.event.data["n"], attempt.outcome))

    mesh = Mesh(broker(), middleware=[Watch()])

    @mesh.on("row", group="g", batch=BatchPolicy(max_size=3, max_wait=0.05))
    async def rows(events: list[Event]) -> list[Exception | None]:
        return [DeadLetter("bad row") if e.data["n"] == 1 else None for e in events]

    async with mesh:
        await mesh.publish_many([Event("row", "/t", {"n": n}) for n in range(3)])
        await wait_until(lambda: len(seen) == 3, 5, "three attempts")
    assert sorted(seen) == [(0, Outcome.ACKED), (1, Outcome.DEAD_LETTERED), (2, Outcome.ACKED)]


async def test_a_dead_letter_handler_drops_instead_of_dead_lettering() -> None:
    seen: list[Outcome | None] = []

    class Watch(Middleware):
        async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
            await call_next(attempt)
            seen.append(attempt.outcome)

    mesh = Mesh(broker(), middleware=[Watch()], retry=FAST)

    @mesh.on("job", group="g")
    async def work(event: Event) -> None:
        raise DeadLetter("bad")

    @mesh.on_dead_letter(group="repair")
    async def repair(event: Event) -> None:
        raise DeadLetter("cannot repair either")

    async with mesh:
        await mesh.publish(Event("job", "/t", {}))
        await wait_until(lambda: mesh.stats("repair").dropped == 1, 5, "the drop")
    assert seen == [Outcome.DEAD_LETTERED, Outcome.DROPPED]


def test_no_overridden_hook_builds_no_chain() -> None:
    class Nothing(Middleware):
        pass

    chain = Chain.of([Nothing(), Nothing()])
    assert chain.publish is None and chain.publish_batch is None and chain.handle is None
    assert chain.request is None and chain.skipped is None
    mesh = Mesh(broker(), middleware=[Nothing()])
    assert mesh._publish_chain is None and mesh._batch_chain is None


def test_bad_middleware_is_a_config_error_that_says_what_to_pass() -> None:
    class Timing(Middleware):
        pass

    with pytest.raises(ConfigError, match=r"pass an instance \(Timing\(\)\), not the class"):
        Mesh(broker(), middleware=[Timing])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"subclass mesh\.Middleware"):
        Mesh(broker()).use(object())  # type: ignore[arg-type]


async def test_a_publish_middleware_must_pass_on_an_event() -> None:
    class Wrong(Middleware):
        async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
            await call_next({"not": "an event"}, channel)  # type: ignore[arg-type]

    async with Mesh(broker(), middleware=[Wrong()]) as mesh:
        with pytest.raises(TypeError, match="a middleware passed on dict"):
            await mesh.publish(Event("x", "/t", {}))
