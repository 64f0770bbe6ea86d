"""Runtime subscriptions and capabilities, per-handler retry policies, and bad input
(issue 11). The conformance cases (mesh.testing.mesh_cases) prove the same on every
broker; these cover the API on the memory transport."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from mesh import (
    ConfigError,
    Context,
    DeliveryHandler,
    Event,
    Mesh,
    RemoteError,
    RetryLater,
    RetryPolicy,
    Subscription,
    SubscriptionHandle,
)
from mesh.transports.memory import MemoryTransport
from mesh.testing.util import wait_until

CAPS = {"heartbeat": 60.0, "resync_wait": 0.2}  # no heartbeat during a test: announcements only


def broker() -> str:
    return f"memory://runtime-{uuid.uuid4().hex[:8]}"


async def nothing(event: Event) -> None:
    pass


# --- subscribe / close ------------------------------------------------------------------


async def test_subscribe_on_a_started_mesh_and_close() -> None:
    mesh = Mesh(broker())
    got: list[int] = []

    async def take(event: Event) -> None:
        got.append(event.data["n"])

    async with mesh:
        sub = await mesh.subscribe("order.created", take, group="billing", max_in_flight=2)
        assert isinstance(sub, SubscriptionHandle)
        assert (sub.name, sub.group, sub.patterns) == ("take", "billing", ("order.created",))
        assert (
            sub.live and not sub.closed and sub.retry == RetryPolicy.from_config(mesh.config.retry)
        )
        assert [h.name for h in mesh.handlers] == ["take"] and mesh.subscription("take") is sub
        await mesh.publish(Event("order.created", "/t", {"n": 1}))
        await wait_until(lambda: got == [1], 5, "the event")
        assert sub.stats.handled == 1 and mesh.stats("take") is sub.stats
        await asyncio.gather(sub.close(), sub.close())  # concurrent closes are one close
        await sub.close()  # and a third is a no-op
        assert sub.closed and not sub.live and sub.stats.handled == 1
        assert mesh.handlers == []
        with pytest.raises(ConfigError, match="no started handler"):
            mesh.stats("take")
        with pytest.raises(ConfigError, match="no handler named 'take'"):
            mesh.subscription("take")
        # the group name is free again, and the group kept what came meanwhile
        await mesh.publish(Event("order.created", "/t", {"n": 2}))
        again = await mesh.subscribe("order.created", take, group="billing")
        await wait_until(lambda: got == [1, 2], 5, "the event published between members")
        assert again is not sub and again.live


async def test_a_handle_is_an_async_context_manager() -> None:
    mesh = Mesh(broker())
    async with mesh:
        async with await mesh.subscribe("a", nothing) as sub:
            assert sub.live
        assert sub.closed and mesh.handlers == []


async def test_subscribe_before_start_goes_live_at_start_and_stays_across_restarts() -> None:
    mesh = Mesh(broker())
    got: list[str] = []

    async def take(event: Event) -> None:
        got.append(event.id)

    sub = await mesh.subscribe("job", take, group="jobs")
    assert not sub.live and not sub.closed and sub.stats.handled == 0
    for run in range(2):
        async with mesh:
            assert sub.live
            await mesh.publish(Event("job", "/t", {}, id=f"e{run}"))
            await wait_until(lambda n=run + 1: len(got) == n, 5, "the event")
        assert not sub.live and not sub.closed
    assert got == ["e0", "e1"]
    await sub.close()
    async with mesh:
        assert mesh.handlers == [] and not sub.live


async def test_closing_before_start_unregisters() -> None:
    mesh = Mesh(broker())
    sub = await mesh.subscribe("a", nothing, group="g")
    await sub.close()
    assert mesh.handlers == []
    await mesh.subscribe("a", nothing, group="g")  # name and group are free
    async with mesh:
        assert mesh.subscription("nothing").live


async def test_decorator_after_start_subscribes_at_once() -> None:
    mesh = Mesh(broker())
    got: list[str] = []
    async with mesh:

        @mesh.on("late.event", group="late")
        async def late(event: Event) -> None:
            got.append(event.type)

        @mesh.on_dead_letter(group="late-dlq")
        async def dlq(event: Event) -> None:
            got.append("dead")

        await mesh.subscription("late").ready()
        await mesh.subscription("dlq").ready()
        assert mesh.subscription("late").live and mesh.subscription("dlq").live
        await mesh.publish(Event("late.event", "/t", {}))
        await wait_until(lambda: got == ["late.event"], 5, "the event")


async def test_an_on_start_hook_may_subscribe() -> None:
    mesh = Mesh(broker())
    subs: list[SubscriptionHandle] = []

    @mesh.on_start
    async def boot() -> None:
        subs.append(await mesh.subscribe("boot", nothing))

    async with asyncio.timeout(5):
        async with mesh:
            assert subs[0].live


class FlakyTransport(MemoryTransport):
    """A memory transport whose subscribe fails for channels starting with 'broken',
    and waits ``delay`` seconds for channels with a 'slow' token."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.delay = 0.0
        self.subscribed: list[str] = []

    async def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 1,
    ) -> Subscription:
        first = pattern if isinstance(pattern, str) else pattern[0]
        if first.startswith("broken"):
            from mesh import ConnectError

            raise ConnectError("the broker refused the subscription")
        if "slow" in first.split("."):
            await asyncio.sleep(self.delay)
        sub = await super().subscribe(pattern, handler, group=group, max_in_flight=max_in_flight)
        self.subscribed.append(first)
        return sub


async def test_a_failing_runtime_subscribe_is_logged_raised_and_leaves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mesh = Mesh(FlakyTransport(broker()))
    async with mesh:
        from mesh import ConnectError

        with pytest.raises(ConnectError, match="refused"):
            await mesh.subscribe("broken.a", nothing, group="g")
        assert mesh.handlers == []
        with caplog.at_level(logging.ERROR, logger="mesh"):

            @mesh.on("broken.b", group="g")
            async def handler(event: Event) -> None: ...

            handle = mesh.subscription("handler")
            with pytest.raises(ConnectError):
                await handle.ready()
        assert handle.closed and mesh.handlers == []
        assert "subscribe handler failed" in caplog.text and "refused" in caplog.text
        await mesh.subscribe("fine", nothing, group="g")  # the group was never taken


async def test_stop_waits_for_a_runtime_subscribe_and_the_handler_stays_registered() -> None:
    transport = FlakyTransport(broker())
    transport.delay = 0.3
    mesh = Mesh(transport)
    got: list[str] = []
    await mesh.start()

    @mesh.on("slow.events", group="slow")
    async def slow(event: Event) -> None:
        got.append(event.id)

    await mesh.stop()  # while it is still subscribing
    handle = mesh.subscription("slow")
    assert not handle.closed and not handle.live
    transport.delay = 0.0
    async with mesh:
        assert handle.live
        await mesh.publish(Event("slow.events", "/t", {}, id="x"))
        await wait_until(lambda: got == ["x"], 5, "the event after the restart")


async def test_a_cancelled_subscribe_leaves_no_subscription() -> None:
    transport = FlakyTransport(broker())
    transport.delay = 0.5
    mesh = Mesh(transport)
    async with mesh:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(mesh.subscribe("slow.x", nothing, group="g"), 0.05)
        assert mesh.handlers == []  # unregistered at once, closed once subscribed
        await asyncio.sleep(0.6)
        sub = await mesh.subscribe("other", nothing, group="g")
        assert sub.live


async def test_close_lets_in_flight_calls_finish_and_gives_back_the_rest() -> None:
    url = broker()
    mesh, other = Mesh(url), Mesh(url)
    started = asyncio.Event()
    finished: list[str] = []
    later: list[str] = []

    async def work(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.2 if event.data["quick"] else 3600)
        finished.append(event.id)

    async def take(event: Event) -> None:
        later.append(event.id)

    async with mesh, other:
        sub = await mesh.subscribe("work", work, group="workers")
        await mesh.publish(Event("work", "/t", {"quick": True}, id="quick"))
        await started.wait()
        await sub.close(timeout=5)  # waits for the running call
        assert finished == ["quick"] and sub.stats.handled == 1
        started.clear()
        sub = await mesh.subscribe("work", work, group="workers")
        await mesh.publish(Event("work", "/t", {"quick": False}, id="stuck"))
        await started.wait()
        await sub.close(timeout=0.05)  # cancelled: not acked, given back to the group
        assert sub.stats.handled == 0 and sub.stats.dead_lettered == 0
        await other.subscribe("work", take, group="workers")
        await wait_until(lambda: later == ["stuck"], 5, "the given-back event redelivered")


async def test_a_runtime_handler_gets_its_groups_route_from_the_config() -> None:
    routes = [{"name": "vip", "filter": {"prefix": {"type": "vip."}}, "group": "vips"}]
    mesh = Mesh(broker(), routes=routes)
    got: list[str] = []

    async def vip(event: Event) -> None:
        got.append(event.type)

    first = await mesh.subscribe(None, nothing, group="vips")  # start needs the group
    async with mesh:
        assert first.patterns == ("vip.>",)
        with pytest.raises(ConfigError, match="no route in the config names its group"):
            await mesh.subscribe(None, vip, group="nobody")
        await first.close()
        sub = await mesh.subscribe(None, vip, group="vips")  # a new member at runtime
        assert sub.patterns == ("vip.>",) and sub.filter == routes[0]["filter"]
        await mesh.publish(Event("vip.order", "/t", {}))
        await mesh.publish(Event("plain.order", "/t", {}))
        await wait_until(lambda: got == ["vip.order"], 5, "the routed event")


# --- bad input ----------------------------------------------------------------------------


def sync_handler(event: Event) -> None: ...


async def three(a: Event, b: Context, c: int) -> None: ...


@pytest.mark.parametrize(
    "args,kwargs,fragment",
    [
        (("a", sync_handler), {}, "async def"),
        (("a", three), {}, r"\(event\) or \(event, ctx\)"),
        (("a", 42), {}, "handler must be an 'async def'"),
        (("a..b", nothing), {}, "empty token"),
        (("a.#", nothing), {}, "'>' for one or more"),
        ((42, nothing), {}, "event type must be"),
        (([], nothing), {}, "event type must be"),
        ((None, nothing), {}, "needs an event type"),
        (("a", nothing), {"filter": {"regex": "x"}}, "unknown filter dialect"),
        (("a", nothing), {"retry": {"max_attemps": 5}}, "did you mean 'max_attempts'"),
        (("a", nothing), {"retry": {"bogus": 1}}, "known fields: max_attempts, initial_backoff"),
        (("a", nothing), {"retry": {"max_attempts": 0}}, r"retry\.max_attempts"),
        (("a", nothing), {"retry": 3}, "retry must be a mesh.RetryPolicy"),
        (("a", nothing), {"max_deliveries": -1}, "max_deliveries must be >= 0"),
        (("a", nothing), {"max_deliveries": "3"}, "max_deliveries must be an integer"),
        (("a", nothing), {"max_deliveries": True}, "max_deliveries must be an integer"),
        (("a", nothing), {"max_in_flight": 0}, "max_in_flight must be an integer >= 1"),
        (("a", nothing), {"max_in_flight": 2.5}, "max_in_flight must be an integer >= 1"),
        (("a", nothing), {"group": ""}, "group must be a non-empty string"),
        (("a", nothing), {"name": ""}, "name must be a non-empty string"),
    ],
)
async def test_bad_input_raises_at_the_call_with_nothing_subscribed(
    args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str
) -> None:
    transport = FlakyTransport(broker())
    mesh = Mesh(transport)
    with pytest.raises(ConfigError, match=fragment):
        await mesh.subscribe(*args, **kwargs)  # before start
    assert mesh.handlers == []
    async with mesh:
        before = list(transport.subscribed)
        with pytest.raises(ConfigError, match=fragment):
            await mesh.subscribe(*args, **kwargs)  # on a started mesh
        if callable(args[1]) and args[1] is not nothing:
            with pytest.raises(ConfigError, match=fragment):
                mesh.on(args[0], **kwargs)(args[1])  # the decorator raises at the call too
        elif args[1] is nothing:
            with pytest.raises(ConfigError, match=fragment):
                mesh.on(args[0], **kwargs)
        assert mesh.handlers == [] and transport.subscribed == before


async def test_group_rules_hold_at_runtime() -> None:
    mesh = Mesh(broker())

    @mesh.on("a", group="g")
    async def one(event: Event) -> None: ...

    async with mesh:
        with pytest.raises(ConfigError, match="already used by handler one"):
            await mesh.subscribe("b", nothing, group="g")
        with pytest.raises(ConfigError, match="already used by handler one"):
            mesh.on("b", group="g")(nothing)
        await mesh.subscription("one").close()
        sub = await mesh.subscribe("b", nothing, group="g")
        assert sub.live


async def test_names_shared_by_groups_are_told_apart() -> None:
    mesh = Mesh(broker())
    first = await mesh.subscribe("a", nothing, group="g1")
    second = await mesh.subscribe("a", nothing, group="g2")
    with pytest.raises(ConfigError, match="pass group="):
        mesh.subscription("nothing")
    assert mesh.subscription("nothing", group="g2") is second is not first


async def test_a_transport_without_wildcards_refuses_them_at_the_call() -> None:
    class Literal(MemoryTransport):
        features = replace(MemoryTransport.features, wildcard_patterns=False)

    mesh = Mesh(Literal(broker()))
    with pytest.raises(ConfigError, match="does not support wildcard"):
        mesh.on("orders.*")
    async with mesh:
        with pytest.raises(ConfigError, match="list the types"):
            await mesh.subscribe("orders.>", nothing)
        assert mesh.handlers == []


# --- per-handler retry policies -------------------------------------------------------


async def test_retry_and_max_deliveries_per_handler() -> None:
    mesh = Mesh(broker(), retry={"max_attempts": 3, "initial_backoff": 0, "max_deliveries": 50})
    calls: dict[str, int] = {"once": 0, "default": 0, "policy": 0, "loop": 0}
    dead: list[str] = []

    def failing(key: str) -> Any:
        async def handler(event: Event) -> None:
            calls[key] += 1
            raise ValueError(key)

        return handler

    async def loop(event: Event) -> None:
        calls["loop"] += 1
        raise RetryLater(0.01)

    async def dlq(event: Event) -> None:
        dead.append(str(event.extensions["meshdlgroup"]))

    async with mesh:
        once = await mesh.subscribe("x", failing("once"), group="once", retry={"max_attempts": 1})
        assert once.retry.max_attempts == 1 and once.retry.max_deliveries == 50  # dict: over config
        await mesh.subscribe("x", failing("default"), group="default")
        policy = RetryPolicy(max_attempts=2, initial_backoff=0)
        own = await mesh.subscribe("x", failing("policy"), group="policy", retry=policy)
        assert own.retry is policy  # a RetryPolicy is complete
        capped = await mesh.subscribe("y", loop, group="loop", max_deliveries=3)
        assert capped.retry.max_deliveries == 3 and capped.retry.max_attempts == 3
        mesh.on_dead_letter(group="dlq")(dlq)
        await mesh.subscription("dlq").ready()
        await mesh.publish(Event("x", "/t", {}))
        await mesh.publish(Event("y", "/t", {}))
        await wait_until(lambda: len(dead) == 4, 5, "four dead letters")
    assert calls == {"once": 1, "default": 3, "policy": 2, "loop": 3}
    assert sorted(dead) == ["default", "loop", "once", "policy"]


def test_retry_policy_validates_and_resolves() -> None:
    with pytest.raises(ConfigError, match=r"RetryPolicy\.jitter"):
        RetryPolicy(jitter=2)
    base = RetryPolicy(max_attempts=4)
    assert base.resolve(None) is base
    assert base.resolve({"jitter": 0}) == replace(base, jitter=0)
    assert base.resolve(None, max_deliveries=0).max_deliveries == 0
    with pytest.raises(ConfigError, match="capability 'x': unknown retry field 'tries'"):
        base.resolve({"tries": 1}, where="capability 'x'")


def test_gives_up_is_the_one_rule() -> None:
    from mesh import DataValidationError, DeadLetter

    policy = RetryPolicy(max_attempts=2)
    assert not policy.gives_up(ValueError(), 1) and policy.gives_up(ValueError(), 2)
    assert policy.gives_up(DeadLetter("no"), 1) and policy.gives_up(DataValidationError(), 1)
    assert not policy.gives_up(RetryLater(1), 5)


# --- capabilities at runtime ----------------------------------------------------------


async def test_add_and_remove_capability_at_runtime_reach_peers_at_once() -> None:
    url = broker()
    provider, caller = Mesh(url, capabilities=CAPS), Mesh(url, capabilities=CAPS)
    release = asyncio.Event()
    replies: list[Event] = []

    entered = asyncio.Event()

    async def summarize(request: Event, ctx: Context) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {"summary": str(request.data["text"])[:3]}

    async with provider, caller:
        assert caller.capabilities() == []
        cap = await provider.add_capability(
            "summarize", summarize, input={"type": "object"}, tags=["nlp"]
        )
        assert cap.name == "summarize" and provider.served_capabilities() == [cap]
        await wait_until(lambda: len(caller.capabilities()) == 1, 2, "the announcement")
        assert caller.capabilities()[0].tags == ("nlp",)
        with pytest.raises(ConfigError, match="registered twice"):
            await provider.add_capability("summarize", summarize)
        pending = asyncio.create_task(caller.request("summarize", {"text": "hello"}, timeout=5))
        await asyncio.wait_for(entered.wait(), 5)  # the request is in flight at the provider
        removing = asyncio.create_task(provider.remove_capability("summarize"))
        await wait_until(lambda: caller.capabilities() == [], 2, "the withdrawal")
        assert not removing.done(), "remove waits for the request in flight"
        release.set()
        replies.append(await pending)
        await removing
        assert replies[0].data == {"summary": "hel"}
        assert provider.served_capabilities() == [] and provider.handlers == []
        with pytest.raises(ConfigError, match="does not serve capability 'summarize'"):
            await provider.remove_capability("summarize")


async def test_capability_decorator_after_start_announces_too() -> None:
    url = broker()
    provider, caller = Mesh(url, capabilities=CAPS), Mesh(url, capabilities=CAPS)
    async with provider, caller:

        @provider.capability("echo")
        async def echo(request: Event) -> Any:  # (request) alone is fine too
            return request.data

        await provider.subscription("capability:echo").ready()
        await wait_until(lambda: len(caller.capabilities()) == 1, 2, "the announcement")
        reply = await caller.request("echo", {"x": 1}, timeout=5)
        assert reply.data == {"x": 1}


async def test_capability_added_before_start_is_served_after_start() -> None:
    url = broker()
    provider, caller = Mesh(url, capabilities=CAPS), Mesh(url, capabilities=CAPS)

    async def echo(request: Event, ctx: Context) -> Any:
        return request.data

    await provider.add_capability("echo", echo)
    async with provider, caller:
        assert (await caller.request("echo", [1], timeout=5)).data == [1]
        await provider.remove_capability("echo")
        await wait_until(lambda: caller.capabilities() == [], 2, "the withdrawal")


async def test_capability_retry_policy_decides_the_error_reply() -> None:
    url = broker()
    provider = Mesh(url, capabilities=CAPS, retry={"max_attempts": 3, "initial_backoff": 0})
    caller = Mesh(url, capabilities=CAPS)
    calls = {"strict": 0, "patient": 0}

    def failing(key: str) -> Any:
        async def handler(request: Event, ctx: Context) -> None:
            calls[key] += 1
            raise ValueError(f"{key} failed")

        return handler

    async with provider, caller:
        await provider.add_capability("strict", failing("strict"), retry={"max_attempts": 1})
        await provider.add_capability("patient", failing("patient"))
        await wait_until(lambda: len(caller.capabilities()) == 2, 2, "both announced")
        for key in calls:
            with pytest.raises(RemoteError, match=f"{key} failed"):
                await caller.request(key, {}, timeout=5)
    assert calls == {"strict": 1, "patient": 3}


@pytest.mark.parametrize(
    "handler,kwargs,fragment",
    [
        (sync_handler, {}, r"must be 'async def' taking \(request\) or \(request, ctx\)"),
        (three, {}, r"must take \(request\) or \(request, ctx\)"),
        (nothing, {"retry": {"attempts": 2}}, "unknown retry field 'attempts'"),
        (nothing, {"max_deliveries": -2}, "max_deliveries must be >= 0"),
    ],
)
async def test_bad_capability_input_registers_nothing(
    handler: Any, kwargs: dict[str, Any], fragment: str
) -> None:
    mesh = Mesh(broker(), capabilities=CAPS)
    async with mesh:
        with pytest.raises(ConfigError, match=fragment):
            await mesh.add_capability("bad", handler, **kwargs)
        with pytest.raises(ConfigError, match=fragment):
            mesh.capability("bad", handler, **kwargs)
        assert mesh.served_capabilities() == [] and mesh.handlers == []


async def test_a_cancelled_add_capability_serves_nothing() -> None:
    transport = FlakyTransport(broker())
    transport.delay = 0.3
    mesh = Mesh(transport, capabilities=CAPS)

    async def echo(request: Event) -> Any:
        return request.data

    async with mesh:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(mesh.add_capability("slow.echo", echo), 0.05)
        assert mesh.served_capabilities() == [] and mesh.handlers == []
        await asyncio.sleep(0.4)  # the broker completed the subscribe: closed again
        assert [c.name for c in mesh.capabilities()] == []
        await mesh.add_capability("slow.echo", echo)  # the name is free
        assert [c.name for c in mesh.capabilities()] == ["slow.echo"]


# --- races found in review: each failed before its fix ------------------------------------


async def test_stop_never_cancels_a_close_half_way() -> None:
    """A close() with a longer timeout than stop(): stop waits for it, and the handler
    never runs on after stop() returned (it used to, acking against a closed transport)."""
    mesh = Mesh(broker())
    ended: list[bool] = []
    began = asyncio.Event()
    stop_returned = False

    async def slow(event: Event) -> None:
        began.set()
        await asyncio.sleep(0.6)
        ended.append(stop_returned)

    await mesh.start()
    sub = await mesh.subscribe("t", slow, group="g")
    await mesh.publish(Event("t", "/t", {}))
    await asyncio.wait_for(began.wait(), 5)
    close = asyncio.create_task(sub.close(timeout=5))
    await asyncio.sleep(0.05)
    await mesh.stop(timeout=0.1)
    stop_returned = True
    await asyncio.sleep(0.7)
    assert ended == [False]  # the handler finished before stop() returned
    await close  # and the caller's close() ends normally, not with CancelledError
    assert close.exception() is None and sub.closed


class SlowConnect(MemoryTransport):
    async def connect(self) -> None:
        await asyncio.sleep(0.2)
        await super().connect()


async def test_a_handler_added_while_start_connects_goes_live() -> None:
    mesh = Mesh(SlowConnect(broker()))
    got: list[str] = []

    async def take(event: Event) -> None:
        got.append(event.id)

    starting = asyncio.create_task(mesh.start())
    await asyncio.sleep(0.05)
    sub = await mesh.subscribe("t", take, group="g")
    await starting
    await sub.ready()
    assert sub.live
    await mesh.publish(Event("t", "/t", {}, id="e1"))
    await wait_until(lambda: got == ["e1"], 5, "the event")
    await mesh.stop()


async def test_a_capability_is_announced_only_once_it_is_subscribed() -> None:
    url = broker()
    transport = FlakyTransport(url)
    a, b = Mesh(transport, capabilities=CAPS), Mesh(url, capabilities=CAPS)

    async def calc(request: Event, ctx: Context) -> dict[str, int]:
        return {"ok": 1}

    async with a:
        transport.delay = 0.5
        adding = asyncio.create_task(a.add_capability("calc.slow", calc))
        await asyncio.sleep(0.05)
        async with b:  # b's resync makes a announce while calc.slow is still subscribing
            await asyncio.sleep(0.2)
            assert not adding.done()
            assert [c.name for c in b.capabilities()] == []
            await adding
            await wait_until(lambda: [c.name for c in b.capabilities()] == ["calc.slow"], 5, "")
            assert (await b.request("calc.slow", {}, timeout=5)).data == {"ok": 1}


class RegistryBlip(MemoryTransport):
    fail = False

    async def publish(self, channel: str, event: Event) -> None:
        if self.fail and channel == "mesh.registry":
            from mesh import PublishError

            raise PublishError("broker blip")
        await super().publish(channel, event)


async def test_a_failed_withdrawal_announcement_still_closes_the_capability(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = broker()
    transport = RegistryBlip(url)
    a, b = Mesh(transport, capabilities=CAPS), Mesh(url, capabilities=CAPS)
    served: list[str] = []

    async def calc(request: Event, ctx: Context) -> None:
        served.append(request.id)

    async with a, b:
        await a.add_capability("calc", calc)
        handle = a.subscription("capability:calc")
        transport.fail = True
        with caplog.at_level(logging.WARNING, logger="mesh"):
            await a.remove_capability("calc")
        transport.fail = False
        assert handle.closed and not handle.live and a.served_capabilities() == []
        assert "was not announced" in caplog.text
        await b.publish(Event("mesh.request.calc", "/b", {}, id="r1"))
        await asyncio.sleep(0.2)
        assert served == []


async def test_a_stopping_instance_does_not_answer_a_resync() -> None:
    url = broker()
    a = Mesh(url, source="/a", capabilities=CAPS)
    b = Mesh(url, source="/b", capabilities=CAPS)

    @a.capability("calc")
    async def calc(request: Event, ctx: Context) -> dict[str, int]:
        return {"ok": 1}

    @a.on_stop
    async def flush() -> None:
        await asyncio.sleep(0.5)  # the registry is still subscribed meanwhile

    await a.start()
    stopping = asyncio.create_task(a.stop())
    await asyncio.sleep(0.1)
    async with b:  # resyncs while a stops: a must not announce itself after its LEAVE
        await stopping
        await asyncio.sleep(0.1)
        assert b.capabilities() == []


async def test_a_failed_start_leaves_no_heartbeat_behind() -> None:
    mesh = Mesh(broker(), capabilities={"heartbeat": 0.05})

    @mesh.on_start
    async def boom() -> None:
        raise RuntimeError("hook fails")

    def beating() -> int:
        return sum(1 for t in asyncio.all_tasks() if t.get_name() == "mesh-heartbeat")

    with pytest.raises(RuntimeError, match="hook fails"):
        await mesh.start()
    await asyncio.sleep(0.1)
    assert beating() == 0 and not mesh.started
    mesh._on_start.clear()
    async with mesh:
        assert beating() == 1
    await asyncio.sleep(0.1)
    assert beating() == 0
