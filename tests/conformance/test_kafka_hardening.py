"""Kafka plugin hardening (issue 10): sizes, wire format, fail-fast connects, positions,
retained reads and the group liveness defaults.

Items covered here: 2 (a record too large raises `MessageTooLarge` before ``produce()``,
or from the broker's delivery report; a too-large dead-letter copy is written reduced),
6 (session/heartbeat defaults), 12 (canonical attribute strings), 13 (structured mode
is decided by the content-type), 24 (a refused connection fails at once, without
librdkafka log lines), ``Delivery.position`` and ``retain``/``read``. Broker cases run
against the loopback Tansu (``brokers.ensure_or_skip("kafka")``) and delete their topics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.bindings import kafka
from cloudevents.core.bindings.kafka import KafkaMessage
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from mesh_kafka import KafkaConfig, KafkaTransport
from mesh_kafka.wire import from_record, size_bound, to_record, wire_size

from mesh import (
    ConfigError,
    ConnectError,
    DecodeError,
    Delivery,
    Event,
    Mesh,
    MessageTooLarge,
    codec,
)
from mesh.testing import brokers
from mesh.testing.util import Collector, wait_until

TEST_OPTIONS: dict[str, Any] = {
    "commit_interval": 0.1,
    "consumer_config": {
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 20,
        "topic.metadata.refresh.interval.ms": 500,
    },
}


def kafka_url() -> str:
    return brokers.ensure_or_skip("kafka")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def transport() -> AsyncIterator[KafkaTransport]:
    t = KafkaTransport(kafka_url(), TEST_OPTIONS)
    await t.connect()
    t.prefix = f"hard{uuid.uuid4().hex[:10]}"  # type: ignore[attr-defined]
    yield t
    await t.delete_channels(f"{t.prefix}.>")  # type: ignore[attr-defined]
    await t.close()


def _event_of_size(channel: str, limit: int, extra: int) -> Event:
    """An event whose record is exactly ``limit + extra`` bytes by `wire_size`."""
    base = Event(channel, "/size", b"", id="fixed-id")
    size = wire_size(to_record(base))
    return base.replace(data=b"x" * (limit + extra - size))


# --- item 2: sizes -----------------------------------------------------------------------


def test_wire_size_is_what_librdkafka_checks() -> None:
    """`wire_size` equals librdkafka's own check: a record of exactly message.max.bytes is
    accepted by produce(), one byte more is refused (no broker needed: the check is local)."""
    limit = 5000
    producer = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{_free_port()}",
            "message.max.bytes": limit,
            "log_level": 0,
        }
    )
    base = to_record(
        Event(
            "size.check",
            "/size",
            b"",
            extensions={"partitionkey": "k" * 300, "flag": True, "n": 7, "long": "é" * 200},
        )
    )
    for extra, accepted in ((0, True), (1, False)):
        record = KafkaMessage(base.headers, base.key, b"y" * (limit + extra - wire_size(base)))
        assert wire_size(record) == limit + extra <= size_bound(record)
        try:
            producer.produce(
                "size.check", value=record.value, key=record.key, headers=record.headers
            )  # type: ignore[arg-type]
            ok = True
        except KafkaException as exc:
            assert exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
            ok = False
        assert ok is accepted, (
            f"librdkafka {'refused' if accepted else 'accepted'} "
            f"a record of {limit + extra} bytes (limit {limit})"
        )
    producer.purge()


class _SpyProducer:
    """Wraps a Producer and counts produce() calls."""

    def __init__(self, real: Producer) -> None:
        self.real, self.produced = real, 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.produced += 1
        self.real.produce(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.broker
async def test_too_large_record_raises_message_too_large_before_produce() -> None:
    limit = 20_000
    t = KafkaTransport(
        kafka_url(), {**TEST_OPTIONS, "producer_config": {"message.max.bytes": limit}}
    )
    await t.connect()
    channel = f"large{uuid.uuid4().hex[:10]}.events"
    try:
        await t.publish(channel, Event(channel, "/t", {"small": True}))  # topic exists
        assert t._producer is not None
        spy = _SpyProducer(t._producer)
        t._producer = spy  # type: ignore[assignment]
        fits = _event_of_size(channel, limit, 0)
        await t.publish(channel, fits)
        assert spy.produced == 1
        big = _event_of_size(channel, limit, 1)
        with pytest.raises(MessageTooLarge) as info:
            await t.publish_batch([(channel, fits), (channel, big)])
        assert (info.value.size, info.value.limit) == (limit + 1, limit)
        assert str(limit + 1) in str(info.value) and str(limit) in str(info.value)
        assert spy.produced == 1, "produce() was called for a batch with a too-large record"
        t._producer = spy.real
    finally:
        await t.delete_channels(channel)
        await t.close()


class _ReportingProducer:
    """Accepts every record and reports it failed with ``code``, like a broker that
    refuses records over its limit (Tansu has none)."""

    def __init__(self, code: int) -> None:
        self.code = code

    def produce(
        self, topic: str, *, value: bytes, key: Any, headers: Any, on_delivery: Any
    ) -> None:
        message = _Reported(topic, value, key, headers)
        threading.Timer(0.01, on_delivery, (KafkaError(self.code), message)).start()

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class _Reported:
    def __init__(self, topic: str, value: bytes, key: Any, headers: Any) -> None:
        self._topic, self._value, self._key, self._headers = topic, value, key, headers

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def key(self) -> Any:
        return self._key

    def headers(self) -> Any:
        return list(self._headers.items())


@pytest.mark.broker
@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE])
async def test_broker_refusing_a_record_as_too_large_raises_message_too_large(
    transport: KafkaTransport, code: int
) -> None:
    channel = f"{transport.prefix}.refused"  # type: ignore[attr-defined]
    await transport.publish(channel, Event(channel, "/t", {}))  # creates the topic
    real = transport._producer
    transport._producer = _ReportingProducer(code)  # type: ignore[assignment]
    try:
        event = Event(channel, "/t", b"z" * 3000)
        with pytest.raises(MessageTooLarge) as info:
            await transport.publish(channel, event)
        assert info.value.size == wire_size(to_record(event))
        assert info.value.limit > 0 and str(info.value.limit) in str(info.value)
    finally:
        transport._producer = real


@pytest.mark.broker
async def test_dead_letter_copy_too_large_is_written_reduced() -> None:
    """A record just under the limit whose dead-letter copy (larger) is over it: the copy
    fails with MessageTooLarge, so the mesh writes it reduced, once, and the partition
    goes on (before: PublishError, nacked for ever, later records never acked)."""
    url, limit = kafka_url(), 20_000
    prefix = f"dlsize{uuid.uuid4().hex[:8]}"
    options = {**TEST_OPTIONS, "producer_config": {"message.max.bytes": limit}}
    mesh = Mesh(
        url,
        transport_options=options,
        source="/dlsize",
        dead_letter_channel=f"{prefix}.deadletter",
        retry={"max_attempts": 1, "initial_backoff": 0.05},
    )
    channel, handled = f"{prefix}.in", []

    @mesh.on(channel, group=f"{prefix}-g")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    try:
        async with mesh:
            raw = Producer(
                {"bootstrap.servers": url.split("://", 1)[1], "message.max.bytes": limit}
            )
            raw.produce(
                channel, value=b"\xff" * (limit - 400), key=b"k", headers=[("x-note", b"n" * 100)]
            )
            assert await asyncio.to_thread(raw.flush, 30) == 0
            after = Event(channel, "/dlsize", {"later": 1}, extensions={"partitionkey": "k"})
            await mesh.publish(after)
            await wait_until(lambda: handled == [after.id], 60, "the record behind it")
            await wait_until(
                lambda: mesh.stats("handle").dead_lettered == 1, 30, "the reduced dead-letter copy"
            )
            entries = [d async for d in mesh.transport.read(f"{prefix}.deadletter", idle=2)]
            assert len(entries) == 1
            copy = entries[0].event
            assert copy.extensions.get("meshdlreduced") in (True, "true")
            assert isinstance(copy.data, dict) and copy.data["size"] == limit - 400
    finally:
        await mesh.transport.connect()
        await mesh.transport.delete_channels(f"{prefix}.>")
        await mesh.transport.close()


# --- item 6: liveness defaults -------------------------------------------------------------


def test_consumer_defaults_reassign_a_dead_members_partitions_within_10s() -> None:
    conf = KafkaConfig.from_url("kafka://k:9092").consumer("g")
    assert conf["session.timeout.ms"] == 6000  # Kafka's smallest default-allowed
    assert conf["heartbeat.interval.ms"] * 3 <= conf["session.timeout.ms"]
    tuned = KafkaConfig.from_url("kafka://k:9092?consumer.session.timeout.ms=10000")
    assert tuned.consumer("g")["session.timeout.ms"] == "10000"  # still overridable


# --- item 12: canonical attribute strings -------------------------------------------------


def test_attributes_are_written_in_canonical_form() -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    event = Event(
        "t.canon",
        "/c",
        {"x": 1},
        time=when,
        extensions={
            "flag": True,
            "off": False,
            "count": 42,
            "negative": -3,
            "stamp": when,
            "local": when.astimezone(timezone(timedelta(hours=2))),
            "text": "True",
            "meshhops": 2,
            "partitionkey": "p",
        },
    )
    headers = to_record(event).headers
    assert headers["ce_flag"] == b"true" and headers["ce_off"] == b"false"
    assert headers["ce_count"] == b"42" and headers["ce_negative"] == b"-3"
    assert headers["ce_time"] == b"2026-03-04T05:06:07.890000Z"
    assert headers["ce_stamp"] == b"2026-03-04T05:06:07.890000Z"
    assert headers["ce_local"] == b"2026-03-04T07:06:07.890000+02:00"
    assert headers["ce_text"] == b"True" and headers["ce_meshhops"] == b"2"
    # the official SDK reads them as the canonical strings
    sdk = kafka.from_binary(
        KafkaMessage(headers, b"p", to_record(event).value), JSONFormat(), CloudEvent
    )
    assert sdk.get_extension("flag") == "true" and sdk.get_extension("count") == "42"
    # and the mesh reads its own counters back as ints
    again = from_record(list(headers.items()), b"p", to_record(event).value)
    assert again.extensions["meshhops"] == 2 and again.extensions["flag"] == "true"


def test_canonical_binary_is_base64() -> None:
    from mesh.codec import canonical

    assert canonical(b"\x00\xffab") == base64.b64encode(b"\x00\xffab").decode()
    assert canonical(7) == "7" and canonical(True) == "true"


# --- item 13: the content-type decides the mode -----------------------------------------


def test_structured_record_with_ce_headers_is_read_as_structured() -> None:
    body = CloudEvent(
        attributes={
            "id": "from-body",
            "source": "/body",
            "type": "t.s",
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        data={"where": "body"},
    )
    record = kafka.to_structured(body, JSONFormat())
    headers = {
        **record.headers,
        "ce_id": b"from-header",
        "ce_source": b"/header",
        "ce_type": b"t.header",
        "ce_specversion": b"1.0",
    }
    event = from_record(headers, b"key-1", record.value)
    assert (event.id, event.source, event.type) == ("from-body", "/body", "t.s")
    assert event.data == {"where": "body"} and event.extensions["partitionkey"] == "key-1"
    # parameters and case of the media type do not matter
    upper = {**headers, "content-type": b"Application/CloudEvents+JSON; charset=utf-8"}
    assert from_record(upper, None, record.value).id == "from-body"


def test_structured_record_in_another_format_is_undecodable() -> None:
    with pytest.raises(DecodeError, match="cloudevents\\+avro"):
        from_record(
            {"content-type": b"application/cloudevents+avro", "ce_id": b"x"}, None, b"\x00\x01"
        )


def test_binary_record_still_reads_as_binary() -> None:
    event = Event("t.b", "/b", {"n": 1}, extensions={"partitionkey": "k"})
    record = to_record(event)
    assert from_record(record.headers, record.key, record.value) == event
    structured = codec.to_json(event)  # no headers at all: structured JSON, as the SDK
    assert from_record(None, None, structured).id == event.id


def test_non_utf8_ce_header_is_undecodable() -> None:
    record = to_record(Event("t.u", "/u", {}))
    with pytest.raises(DecodeError, match=r"(?i)utf-8"):
        from_record({**record.headers, "ce_id": b"\xff\xfe"}, None, record.value)


# --- item 24: a refused connection fails at once, quietly ----------------------------------


@pytest.fixture
def kafka_logs() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, logger = Keep(logging.DEBUG), logging.getLogger("mesh.kafka")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old)


async def test_refused_connection_fails_fast_without_log_lines(
    kafka_logs: list[logging.LogRecord],
) -> None:
    port = _free_port()  # nothing listens there
    t = KafkaTransport(f"kafka://127.0.0.1:{port}", {"connect_timeout": 8})
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        await t.connect()
    elapsed = time.monotonic() - started
    assert f"127.0.0.1:{port}" in str(info.value) and "refused" in str(info.value)
    assert elapsed < 8, "waited for the client's connect timeout on a refused connection"
    await asyncio.sleep(0.5)  # anything librdkafka would still log
    assert [r.getMessage() for r in kafka_logs] == []


async def test_silent_listener_still_gets_the_whole_connect_timeout() -> None:
    """A server that accepts TCP but never answers (a slow network, a wrong service) is
    left to librdkafka's timeout: ensure_listening only short-cuts refusals."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    try:
        t = KafkaTransport(f"kafka://127.0.0.1:{port}", {"connect_timeout": 2.5})
        started = time.monotonic()
        with pytest.raises(ConnectError):
            await t.connect()
        assert time.monotonic() - started >= 2.0
    finally:
        server.close()


# --- Delivery.position ------------------------------------------------------------------


@pytest.mark.broker
async def test_position_is_topic_partition_offset_and_stable(transport: KafkaTransport) -> None:
    channel = f"{transport.prefix}.pos"  # type: ignore[attr-defined]
    seen: list[Delivery] = []

    async def nack_once(delivery: Delivery) -> None:
        seen.append(delivery)
        if len(seen) == 1:
            await delivery.nack()
        else:
            await delivery.ack()

    await transport.subscribe(channel, nack_once, group=f"{transport.prefix}-g")  # type: ignore[attr-defined]
    await transport.publish(channel, Event(channel, "/p", {}, extensions={"partitionkey": "a"}))
    await wait_until(lambda: len(seen) == 2, 30, "a delivery and its redelivery")
    first, again = seen
    assert first.position == again.position and again.redeliveries == 1
    topic, partition, offset = (first.position or "").split("/")
    assert topic == channel and int(partition) >= 0 and int(offset) == 0


# --- retained reads ----------------------------------------------------------------------


@pytest.mark.broker
async def test_read_joins_no_group_and_commits_nothing(transport: KafkaTransport) -> None:
    channel = f"{transport.prefix}.kept"  # type: ignore[attr-defined]
    await transport.retain(channel)
    group = Collector()
    await transport.subscribe(channel, group, group=f"{transport.prefix}-workers")  # type: ignore[attr-defined]
    events = [Event(channel, "/r", {"n": i}) for i in range(30)]
    await transport.publish_batch([(channel, e) for e in events])  # one batch (Tansu quirk)
    await group.wait_for(30, 30)
    admin = AdminClient({"bootstrap.servers": kafka_url().split("://", 1)[1]})
    before = {g.group_id for g in admin.list_consumer_groups().result(10).valid}
    read = [d async for d in transport.read(channel, idle=2.0)]
    assert sorted(d.event.id for d in read) == sorted(e.id for e in events)
    assert all(d.settled and d.redeliveries == 0 and d.position for d in read)
    after = {g.group_id for g in admin.list_consumer_groups().result(10).valid}
    assert not {g for g in after - before if g.startswith("mesh-reader")}, (
        "reading created a consumer group"
    )
    assert len(group.events) == 30


@pytest.mark.broker
async def test_read_of_a_missing_channel_is_empty_and_creates_nothing(
    transport: KafkaTransport,
) -> None:
    channel = f"{transport.prefix}.never"  # type: ignore[attr-defined]
    assert [d async for d in transport.read(channel, idle=0.5)] == []
    admin = AdminClient({"bootstrap.servers": kafka_url().split("://", 1)[1]})
    assert channel not in admin.list_topics(timeout=10).topics


@pytest.mark.broker
async def test_read_keeps_offset_order_per_partition(transport: KafkaTransport) -> None:
    channel = f"{transport.prefix}.ordered"  # type: ignore[attr-defined]
    await transport.retain(channel)
    for batch in range(3):
        await transport.publish_batch(
            [
                (
                    channel,
                    Event(
                        channel,
                        "/o",
                        {"b": batch, "i": i},
                        extensions={"partitionkey": f"k{i % 3}"},
                    ),
                )
                for i in range(9)
            ]
        )
    read = [d async for d in transport.read(channel, idle=2.0)]
    assert len(read) == 27
    by_partition: dict[str, list[int]] = {}
    for delivery in read:
        _, partition, offset = (delivery.position or "").split("/")
        by_partition.setdefault(partition, []).append(int(offset))
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())
    assert json.dumps(read[0].event.data)


@pytest.mark.broker
async def test_retain_without_topic_creation_names_the_missing_topic() -> None:
    t = KafkaTransport(kafka_url(), {**TEST_OPTIONS, "create_topics": False})
    await t.connect()
    try:
        with pytest.raises(ConfigError, match="does not exist"):
            await t.retain(f"absent{uuid.uuid4().hex[:10]}.deadletter")
    finally:
        await t.close()
