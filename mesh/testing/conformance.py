"""The conformance suite every transport must pass.

Subclass `TransportConformance` in a test module, say how to build a transport and
what it honestly guarantees, and pytest runs every case against it::

    from mesh.testing.conformance import TransportConformance

    class TestMyBroker(TransportConformance):
        features = MyTransport.features

        async def make_transport(self) -> Transport:
            return MyTransport("mybroker://127.0.0.1:1234", {})

Optional hooks a subclass may override (a case that needs a missing hook or a
feature the transport does not declare is skipped with that reason):

* ``publish_undecodable(transport, channel)``: put a message that is not a
  CloudEvent on ``channel`` with the raw client.
* ``disrupt()``: cut the connection to the broker or restart it (the reconnect
  case calls it twice while thousands of events flow).
* ``settle_time``: seconds to wait after subscribing before publishing (brokers
  whose consumer-group join is asynchronous, like Kafka).

Every case uses fresh channel and group names, and deletes its channels at the
end (``Transport.delete_channels``), so the suite can run against a shared broker.
Message counts shrink with ``MESH_TEST_SHORT=1``. The cases run under
pytest-asyncio in strict or auto mode.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from mesh.errors import ConfigError, DecodeError, MeshError, TransportClosed
from mesh.event import Event
from mesh.testing.mesh_cases import MeshCases
from mesh.testing.util import Collector, scaled, uid, wait_until
from mesh.transport import Delivery, Subscription, Transport, TransportFeatures

__all__ = ["Collector", "TransportConformance", "scaled"]


def _undecodable(delivery: Delivery) -> bool:
    try:
        _ = delivery.event
    except DecodeError:
        return True
    return False


class TransportConformance(MeshCases):
    """Universal transport test cases (and, inherited, the mesh-level cases run through
    the `Mesh` API); see the module docstring."""

    features: ClassVar[TransportFeatures]
    #: seconds to wait after subscribing before publishing (consumer group joins)
    settle_time: ClassVar[float] = 0.0
    #: generous per-case timeout for deliveries to arrive
    timeout: ClassVar[float] = 60.0

    # --- what a subclass provides --------------------------------------------------------

    async def make_transport(self) -> Transport:
        raise NotImplementedError("subclass TransportConformance and implement make_transport")

    async def publish_undecodable(self, transport: Transport, channel: str) -> None:
        pytest.skip("this transport's suite does not provide publish_undecodable()")

    async def disrupt(self) -> None:
        pytest.skip("this transport's suite does not provide disrupt() for reconnects")

    # --- plumbing ------------------------------------------------------------------------

    def _require(self, feature: str) -> None:
        if not getattr(self.features, feature):
            pytest.skip(f"transport does not declare {feature}")

    @pytest_asyncio.fixture
    async def transports(self) -> AsyncIterator[Callable[[], Awaitable[Transport]]]:
        """A factory of connected transports, all closed (and channels deleted) at the end."""
        made: list[Transport] = []

        async def new() -> Transport:
            transport = await self.make_transport()
            await transport.connect()
            made.append(transport)
            return transport

        yield new
        await asyncio.gather(*(t.close() for t in made), return_exceptions=True)
        if made:
            await self.delete_case_channels()

    @pytest.fixture(autouse=True)
    def _names(self) -> None:
        self.prefix = f"conf{uid()}"

    def channel(self, name: str = "events") -> str:
        return f"{self.prefix}.{name}"

    def group(self, name: str = "g") -> str:
        return f"{self.prefix}-{name}"

    def event(self, n: int = 0, **kw: Any) -> Event:
        return Event(kw.pop("type", self.channel()), "/conformance", {"n": n}, **kw)

    async def subscribe(
        self, transport: Transport, pattern: str, handler: Any, **kw: Any
    ) -> Subscription:
        sub = await transport.subscribe(pattern, handler, **kw)
        if self.settle_time:
            await asyncio.sleep(self.settle_time)
        return sub

    # --- round trips -------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_round_trip_every_attribute(self, transports: Any) -> None:
        t = await transports()
        got = Collector()
        channel = self.channel()
        await self.subscribe(t, channel, got, group=self.group())
        sent = Event(
            channel,
            "https://example.com/agents/planner?x=1",
            {"text": "héllo ✓", "n": [1, 2.5]},
            id=f"id-{uid()}",
            subject="task/42",
            datacontenttype="application/json",
            dataschema="https://example.com/schemas/task.json",
            time=datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC),
            extensions={
                "correlationid": "corr-1",
                "causationid": "cause-1",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "tracestate": "congo=t61rcWkgMzE",
                "partitionkey": "order-7",
                "meshhops": 3,
                "custom": "value with spaces/and:colons",
            },
        )
        await t.publish(channel, sent)
        await got.wait_for(1, self.timeout)
        assert got.events[0] == sent
        assert got.events[0].meshhops == 3

    @pytest.mark.asyncio
    @pytest.mark.parametrize(
        "data,content_type",
        [
            (b"\x00\x01binary\xff", "application/octet-stream"),
            ("plain text ✓", "text/plain"),
            ([1, "two", {"three": 3}], "application/json"),
            ("a JSON string", "application/json"),
            (None, None),
            ({"nested": {"deep": [True, False, None]}}, "application/vnd.example+json"),
        ],
        ids=["bytes", "text", "json-list", "json-string", "no-data", "json-suffix"],
    )
    async def test_round_trip_data(
        self, transports: Any, data: Any, content_type: str | None
    ) -> None:
        t = await transports()
        got = Collector()
        channel = self.channel()
        await self.subscribe(t, channel, got, group=self.group())
        sent = Event(channel, "/c", data, datacontenttype=content_type)
        await t.publish(channel, sent)
        await got.wait_for(1, self.timeout)
        assert got.events[0].data == data
        assert got.events[0] == sent

    # --- groups and fan-out -----------------------------------------------------------

    @pytest.mark.asyncio
    async def test_competing_consumers(self, transports: Any) -> None:
        self._require("consumer_groups")
        n, consumers = scaled(3000, 300), 4
        channel, group = self.channel(), self.group()
        shared = Collector()
        per_consumer: Counter[int] = Counter()

        def member(index: int) -> Callable[[Delivery], Awaitable[None]]:
            async def handle(delivery: Delivery) -> None:
                per_consumer[index] += 1
                await shared(delivery)

            return handle

        ts = [await transports() for _ in range(consumers)]
        for index, t in enumerate(ts):
            await t.subscribe(channel, member(index), group=group, max_in_flight=8)
        await asyncio.sleep(self.settle_time)
        await ts[0].publish_batch([(channel, self.event(i)) for i in range(n)])
        await shared.wait_for(n, self.timeout)
        await asyncio.sleep(0.2)
        assert len(set(shared.ids)) == n, "events were lost"
        assert len(shared.ids) == n, f"{len(shared.ids) - n} duplicate deliveries without failure"
        assert len(per_consumer) >= 2, f"one consumer got everything: {dict(per_consumer)}"

    @pytest.mark.asyncio
    async def test_many_channels_without_crosstalk(self, transports: Any) -> None:
        t = await transports()
        k, n = 8, scaled(200, 30)
        collectors = {i: Collector() for i in range(k)}
        for i, col in collectors.items():
            await t.subscribe(
                self.channel(f"ch{i}"), col, group=self.group(f"g{i}"), max_in_flight=4
            )
        await asyncio.sleep(self.settle_time)

        async def burst(i: int) -> None:
            await t.publish_batch(
                [
                    (self.channel(f"ch{i}"), self.event(j, type=self.channel(f"ch{i}")))
                    for j in range(n)
                ]
            )

        await asyncio.gather(*(burst(i) for i in range(k)))
        for col in collectors.values():
            await col.wait_for(n, self.timeout)
        await asyncio.sleep(0.2)
        for i, col in collectors.items():
            assert {e.type for e in col.events} == {self.channel(f"ch{i}")}
            assert len(col.events) == n

    @pytest.mark.asyncio
    async def test_each_group_gets_everything(self, transports: Any) -> None:
        self._require("consumer_groups")
        t = await transports()
        n, channel = scaled(500, 50), self.channel()
        groups = [Collector() for _ in range(3)]
        for i, col in enumerate(groups):
            await t.subscribe(channel, col, group=self.group(f"g{i}"), max_in_flight=8)
        await asyncio.sleep(self.settle_time)
        await t.publish_batch([(channel, self.event(i)) for i in range(n)])
        for col in groups:
            await col.wait_for(n, self.timeout)
            assert len(set(col.ids)) == n

    @pytest.mark.asyncio
    async def test_broadcast_subscribers_each_get_everything(self, transports: Any) -> None:
        self._require("broadcast")
        n, channel = scaled(300, 40), self.channel()
        cols = [Collector() for _ in range(3)]
        for col in cols:
            await (await transports()).subscribe(channel, col, max_in_flight=4)
        await asyncio.sleep(self.settle_time)
        publisher = await transports()
        await publisher.publish_batch([(channel, self.event(i)) for i in range(n)])
        for col in cols:
            await col.wait_for(n, self.timeout)
            assert len(set(col.ids)) == n

    @pytest.mark.asyncio
    async def test_group_receives_events_published_after_creation(self, transports: Any) -> None:
        self._require("consumer_groups")
        t = await transports()
        channel, group = self.channel(), self.group()
        sub = await self.subscribe(t, channel, Collector(), group=group)
        await sub.close()
        await t.publish_batch([(channel, self.event(i)) for i in range(10)])
        later = Collector()
        await t.subscribe(channel, later, group=group)
        await later.wait_for(10, self.timeout)

    @pytest.mark.asyncio
    async def test_backlog_counts_what_a_group_has_not_taken(self, transports: Any) -> None:
        """`Transport.backlog` (the lag gauge): what a group has not acked, from the
        broker, and 0 once a member acked it all; None from a transport that cannot
        tell (and does not declare ``backlog``)."""
        self._require("consumer_groups")
        t = await transports()
        channel, group = self.channel(), self.group()
        if not self.features.backlog:
            assert await t.backlog(channel, group) is None
            return
        await t.ensure_group(channel, group)
        for i in range(5):  # one at a time: Tansu's end offsets stop at a batch's first record
            await t.publish(channel, self.event(i))

        async def settles_at(count: int) -> None:
            deadline = time.monotonic() + self.timeout
            seen: dict[str, int] | None = None
            while time.monotonic() < deadline:
                seen = await t.backlog(channel, group)
                if seen is not None and sum(seen.values()) == count:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"backlog {seen}, expected {count} in all")

        await settles_at(5)
        col = Collector()
        await self.subscribe(t, channel, col, group=group)
        await col.wait_for(5, self.timeout)
        await settles_at(0)

    # --- settling -------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_nack_redelivers(self, transports: Any) -> None:
        t = await transports()
        seen: list[int] = []

        async def handler(delivery: Delivery) -> None:
            seen.append(delivery.redeliveries)
            if len(seen) == 1:
                await delivery.nack()
            else:
                await delivery.ack()

        channel = self.channel()
        await self.subscribe(t, channel, handler, group=self.group())
        await t.publish(channel, self.event())
        await wait_until(lambda: len(seen) >= 2, self.timeout, "a redelivery")
        assert seen[0] == 0 and seen[1] >= 1

    @pytest.mark.asyncio
    async def test_nack_with_delay(self, transports: Any) -> None:
        t = await transports()
        times: list[float] = []

        async def handler(delivery: Delivery) -> None:
            times.append(time.monotonic())
            await (delivery.nack(0.5) if len(times) == 1 else delivery.ack())

        channel = self.channel()
        await self.subscribe(t, channel, handler, group=self.group())
        await t.publish(channel, self.event())
        await wait_until(lambda: len(times) >= 2, self.timeout, "a delayed redelivery")
        assert times[1] - times[0] >= 0.4

    @pytest.mark.asyncio
    async def test_unsettled_or_raising_handler_is_redelivered(self, transports: Any) -> None:
        t = await transports()
        calls: Counter[str] = Counter()

        async def handler(delivery: Delivery) -> None:
            calls[delivery.event.id] += 1
            if calls[delivery.event.id] == 1:
                return  # returns without settling
            if calls[delivery.event.id] == 2:
                raise RuntimeError("boom")  # raises without settling
            await delivery.ack()

        channel = self.channel()
        await self.subscribe(t, channel, handler, group=self.group())
        await t.publish(channel, self.event())
        await wait_until(lambda: sum(calls.values()) >= 3, self.timeout, "two redeliveries")

    @pytest.mark.asyncio
    async def test_error_storm_then_recovery(self, transports: Any) -> None:
        t = await transports()
        n, channel = scaled(300, 40), self.channel()
        failing = True
        done: set[str] = set()

        async def handler(delivery: Delivery) -> None:
            if failing:
                await delivery.nack(0.05)
                return
            done.add(delivery.event.id)
            await delivery.ack()

        await self.subscribe(t, channel, handler, group=self.group(), max_in_flight=16)
        await t.publish_batch([(channel, self.event(i)) for i in range(n)])
        await asyncio.sleep(1.0)
        failing = False
        await wait_until(lambda: len(done) == n, self.timeout, f"all {n} events after the storm")

    @pytest.mark.asyncio
    async def test_max_in_flight_is_a_bound(self, transports: Any) -> None:
        t = await transports()
        running = peak = 0
        done = 0

        async def handler(delivery: Delivery) -> None:
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            done += 1
            await delivery.ack()

        channel = self.channel()
        await self.subscribe(t, channel, handler, group=self.group(), max_in_flight=3)
        await t.publish_batch([(channel, self.event(i)) for i in range(30)])
        await wait_until(lambda: done == 30, self.timeout, "30 handled")
        assert 1 <= peak <= 3

    @pytest.mark.asyncio
    async def test_per_key_order(self, transports: Any) -> None:
        self._require("per_key_ordering")
        t = await transports()
        keys, per_key, channel = 8, scaled(100, 20), self.channel()
        seen: dict[str, list[int]] = defaultdict(list)
        count = 0

        async def handler(delivery: Delivery) -> None:
            nonlocal count
            event = delivery.event
            await asyncio.sleep(0.001 * (event.data["n"] % 3))
            seen[str(event.partitionkey)].append(event.data["n"])
            count += 1
            await delivery.ack()

        await self.subscribe(t, channel, handler, group=self.group(), max_in_flight=16)
        await t.publish_batch(
            [(channel, self.event(i, partitionkey=f"k{i % keys}")) for i in range(keys * per_key)]
        )
        await wait_until(lambda: count >= keys * per_key, self.timeout, "all keyed events")
        for key, numbers in seen.items():
            assert numbers == sorted(numbers), f"key {key} out of order"

    # --- lifecycle ----------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_close_and_reopen_without_loss(self, transports: Any) -> None:
        self._require("consumer_groups")
        channel, group = self.channel(), self.group()
        n = scaled(400, 60)
        handled: set[str] = set()

        async def handler(delivery: Delivery) -> None:
            handled.add(delivery.event.id)
            await delivery.ack()

        first = await transports()
        sub = await self.subscribe(first, channel, handler, group=group, max_in_flight=4)
        publisher = await transports()
        await publisher.publish_batch([(channel, self.event(i)) for i in range(n // 2)])
        await wait_until(lambda: len(handled) > 0, self.timeout, "first deliveries")
        await sub.close(timeout=5)
        await first.close()
        await publisher.publish_batch([(channel, self.event(i)) for i in range(n // 2, n)])
        second = await transports()
        await self.subscribe(second, channel, handler, group=group, max_in_flight=4)
        await wait_until(lambda: len(handled) == n, self.timeout, f"all {n} events after reopen")

    @pytest.mark.asyncio
    async def test_cancellation_does_not_ack(self, transports: Any) -> None:
        self._require("consumer_groups")
        channel, group = self.channel(), self.group()
        started = asyncio.Event()

        async def stuck(delivery: Delivery) -> None:
            started.set()
            await asyncio.sleep(3600)

        first = await transports()
        sub = await self.subscribe(first, channel, stuck, group=group)
        await first.publish(channel, self.event(7))
        await asyncio.wait_for(started.wait(), self.timeout)
        await sub.close(timeout=0)
        await first.close()
        again = Collector()
        second = await transports()
        await second.subscribe(channel, again, group=group)
        await again.wait_for(1, self.timeout)
        assert again.events[0].data == {"n": 7}
        assert again.deliveries[0].redeliveries >= 1

    @pytest.mark.asyncio
    async def test_close_is_idempotent_and_concurrent(self, transports: Any) -> None:
        t = await transports()
        subs = [
            await t.subscribe(self.channel(f"c{i}"), Collector(), group=self.group(f"g{i}"))
            for i in range(3)
        ]
        await asyncio.gather(*(s.close() for s in subs for _ in range(3)))
        await asyncio.gather(t.close(), t.close(), t.close())
        await t.close()

    @pytest.mark.asyncio
    async def test_publish_burst_from_many_tasks(self, transports: Any) -> None:
        t = await transports()
        tasks, each, channel = 50, scaled(40, 6), self.channel()
        got = Collector()
        await self.subscribe(t, channel, got, group=self.group(), max_in_flight=32)

        async def publisher(k: int) -> None:
            for i in range(each):
                await t.publish(channel, self.event(k * each + i))

        await asyncio.gather(*(publisher(k) for k in range(tasks)))
        await got.wait_for(tasks * each, self.timeout)
        assert len(set(got.ids)) == tasks * each

    @pytest.mark.asyncio
    async def test_wildcard_patterns(self, transports: Any) -> None:
        self._require("wildcard_patterns")
        t = await transports()
        one, tail = Collector(), Collector()
        await t.subscribe(f"{self.prefix}.orders.*", one, group=self.group("one"))
        await t.subscribe(f"{self.prefix}.orders.>", tail, group=self.group("tail"))
        await asyncio.sleep(self.settle_time)
        for name in ("orders.created", "orders.eu.created", "other.created"):
            channel = self.channel(name)
            await t.publish(channel, self.event(type=channel))
        await one.wait_for(1, self.timeout)
        await tail.wait_for(2, self.timeout)
        await asyncio.sleep(0.3)
        assert [e.type for e in one.events] == [self.channel("orders.created")]
        assert sorted(e.type for e in tail.events) == sorted(
            [self.channel("orders.created"), self.channel("orders.eu.created")]
        )

    # --- errors ---------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_only_mesh_errors_escape(self, transports: Any) -> None:
        t = await transports()
        with pytest.raises(ConfigError):
            await t.subscribe("bad..pattern", Collector())
        with pytest.raises(ConfigError):
            await t.subscribe("a.>.b", Collector())
        await t.close()
        with pytest.raises(TransportClosed):
            await t.publish(self.channel(), self.event())
        with pytest.raises(MeshError):
            await t.subscribe(self.channel(), Collector())

    @pytest.mark.asyncio
    async def test_undecodable_message_reports_decode_error(self, transports: Any) -> None:
        t = await transports()
        got: list[Delivery] = []
        errors: list[DecodeError] = []

        async def handler(delivery: Delivery) -> None:
            try:
                _ = delivery.event
            except DecodeError as exc:
                errors.append(exc)
            got.append(delivery)
            await delivery.ack()

        channel = self.channel()
        await self.subscribe(t, channel, handler, group=self.group())
        await self.publish_undecodable(t, channel)
        await wait_until(lambda: len(got) >= 1, self.timeout, "the undecodable message")
        assert errors, "delivery.event must raise DecodeError for a non-CloudEvent"
        raw = got[0].raw()
        assert raw is not None and isinstance(raw[1], bytes)

    # --- retained channels (the dead-letter tools read them) ------------------------------

    @pytest.mark.asyncio
    async def test_retained_channel_is_read_without_consuming(self, transports: Any) -> None:
        """`retain` + `read`: every reader sees every retained message, while a group on
        the same channel still gets each one exactly once; settling what `read` yields
        does nothing; a second transport (another process, like the CLI) reads the same."""
        self._require("retained_reads")
        t, other = await transports(), await transports()
        channel, n = self.channel("kept"), 20
        await t.retain(channel)
        await t.retain(channel)  # idempotent
        group = Collector()
        await self.subscribe(t, channel, group, group=self.group())
        sent = [self.event(i, type=channel) for i in range(n)]
        await t.publish_batch([(channel, event) for event in sent])
        await group.wait_for(n, self.timeout)

        async def read_all(transport: Transport) -> list[Delivery]:
            return [delivery async for delivery in transport.read(channel, idle=2.0)]

        first, second, third = await asyncio.gather(read_all(t), read_all(t), read_all(other))
        for reading in (first, second, third):
            ids = [delivery.event.id for delivery in reading]
            assert sorted(ids) == sorted(e.id for e in sent), "a reader missed messages"
        for delivery in first:
            await delivery.nack()
            await delivery.ack()
        assert [d.event.id for d in await read_all(t)] == [d.event.id for d in first], (
            "settling a read delivery changed the retained channel"
        )
        await asyncio.sleep(0.5)
        assert sorted(group.ids) == sorted(e.id for e in sent), (
            "reading the channel took events from (or redelivered them to) a group"
        )

    @pytest.mark.asyncio
    async def test_retained_channel_keeps_undecodable_messages(self, transports: Any) -> None:
        self._require("retained_reads")
        t = await transports()
        channel = self.channel("keptraw")
        await t.retain(channel)
        await self.publish_undecodable(t, channel)
        good = self.event(1, type=channel)
        await t.publish(channel, good)
        reading = [delivery async for delivery in t.read(channel, idle=2.0)]
        assert len(reading) == 2, f"expected the bad and the good message, got {len(reading)}"
        bad = [d for d in reading if d.raw() is not None and _undecodable(d)]
        raw = bad[0].raw() if bad else None
        assert len(bad) == 1 and raw is not None and isinstance(raw[1], bytes)
        assert [d.event.id for d in reading if d not in bad] == [good.id]

    # --- reconnect ------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_reconnect_keeps_every_confirmed_event(self, transports: Any) -> None:
        self._require("persistence")
        n, channel = scaled(3000, 400), self.channel()
        t = await transports()
        handled: set[str] = set()

        async def handler(delivery: Delivery) -> None:
            handled.add(delivery.event.id)
            await delivery.ack()

        await self.subscribe(t, channel, handler, group=self.group(), max_in_flight=16)
        confirmed: list[str] = []

        async def produce() -> None:
            for i in range(n):
                event = self.event(i)
                while True:
                    try:
                        await t.publish(channel, event)
                        confirmed.append(event.id)
                        break
                    except MeshError:
                        await asyncio.sleep(0.2)  # broker down: retry the same event
                if i % 50 == 0:
                    await asyncio.sleep(0.01)

        producer = asyncio.create_task(produce())
        for fraction in (0.25, 0.6):
            await wait_until(
                lambda f=fraction: len(confirmed) >= n * f,  # type: ignore[misc]
                self.timeout * 2,
                "publishing progress",
            )
            await self.disrupt()
        await asyncio.wait_for(producer, self.timeout * 3)
        await wait_until(
            lambda: handled >= set(confirmed),
            self.timeout * 3,
            f"all {len(confirmed)} confirmed events consumed after two outages "
            f"(missing {len(set(confirmed) - handled)})",
        )
