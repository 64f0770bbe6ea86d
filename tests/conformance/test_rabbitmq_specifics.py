"""RabbitMQ-specific regression tests for issue 10 (items 4, 5, 12, 22, 23, 24 and the
retained reads the dead-letter tools use). Each test names its item.

They run against the machine's (or ``MESH_RABBITMQ_URL``'s) broker and never restart,
stop or reconfigure it: they declare their own queues (deleted at the end) and, for
item 5, kill only a worker process they started themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import struct
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pamqp.encode
import pytest
import pytest_asyncio
from mesh_rabbitmq import RabbitMQTransport
from mesh_rabbitmq import topology
from mesh_rabbitmq.topology import group_queue

from mesh import (
    ConfigError,
    ConnectError,
    DecodeError,
    Delivery,
    Event,
    Mesh,
    MessageTooLarge,
    PublishError,
)
from mesh.testing import brokers
from mesh.testing.util import Collector, uid, wait_until

pytestmark = pytest.mark.broker

TEST_OPTIONS = {"reconnect_interval": 0.3, "publish_timeout": 5.0}


@pytest.fixture(scope="module")
def url() -> str:
    return brokers.ensure_or_skip("rabbitmq")


class Kept:
    """A delivery handler that keeps every delivery undecoded and acks it."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        await delivery.ack()


@pytest_asyncio.fixture
async def rig(url: str) -> AsyncIterator[Rig]:
    rig = Rig(url)
    yield rig
    await rig.cleanup()


class Rig:
    """Transports and raw connections of one test, and their clean-up."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"rmqs{uid()}"
        self.made: list[RabbitMQTransport] = []
        self.raw_queues: list[str] = []

    def channel(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    async def transport(self, **options: Any) -> RabbitMQTransport:
        t = RabbitMQTransport(self.url, {**TEST_OPTIONS, **options})
        await t.connect()
        self.made.append(t)
        return t

    async def raw_publish(
        self, channel: str, body: bytes, headers: dict[str, Any], content_type: str | None = None
    ) -> None:
        async with await aio_pika.connect(self.url) as conn:
            ch = await conn.channel(publisher_confirms=True)
            exchange = await ch.get_exchange("mesh")
            await exchange.publish(
                aio_pika.Message(body, headers=headers, content_type=content_type), channel
            )

    async def raw_queue(
        self, channel: str
    ) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]:
        conn = await aio_pika.connect(self.url)
        ch = await conn.channel()
        queue = await ch.declare_queue(exclusive=True)
        await queue.bind("mesh", channel)
        return conn, queue

    async def cleanup(self) -> None:
        cleaner = RabbitMQTransport(self.url, TEST_OPTIONS)
        await cleaner.delete_channels(f"{self.prefix}.>")
        await asyncio.gather(*(t.close() for t in self.made))
        if self.raw_queues:
            async with await aio_pika.connect(self.url) as conn:
                for name in self.raw_queues:
                    await (await conn.channel()).queue_delete(name)


# --- item 4: every AMQP header field type maps to its CloudEvents canonical string ----


def ce_headers(**more: Any) -> dict[str, Any]:
    return {
        "ce-specversion": "1.0",
        "ce-type": "t.raw",
        "ce-source": "/raw",
        "ce-id": f"id-{uid()}",
        **more,
    }


async def received(rig: Rig, publish: list[tuple[bytes, dict[str, Any]]]) -> list[Delivery]:
    t = await rig.transport()
    channel = rig.channel("types")
    kept = Kept()
    await t.subscribe(channel, kept, group=f"{rig.prefix}-g")
    for body, headers in publish:
        await rig.raw_publish(channel, body, headers)
    await wait_until(lambda: len(kept.deliveries) == len(publish), 15, "the raw messages")
    return kept.deliveries


async def test_item4_header_field_types_become_canonical_strings(rig: Rig) -> None:
    when = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    [delivery] = await received(
        rig,
        [
            (
                b'{"a":1}',
                ce_headers(
                    **{
                        "ce-id": bytearray(b"order-\xc3\xa9"),
                        "ce-subject": "s",
                        "ce-flag": True,
                        "ce-off": False,
                        "ce-count": 7,
                        "ce-big": 2**40,
                        "ce-stamp": when,
                        "ce-time": when,
                        "x-other": 1.5,
                    }
                ),
            )
        ],
    )
    event = delivery.event
    assert event.id == "order-\u00e9"  # a byte array is UTF-8 text
    assert event.extensions["flag"] == "true" and event.extensions["off"] == "false"
    assert event.extensions["count"] == "7" and event.extensions["big"] == str(2**40)
    assert event.extensions["stamp"] == "2026-03-04T05:06:07Z"
    assert event.time == when
    assert "other" not in event.extensions and "x-other" not in event.extensions
    assert not any("bytearray" in str(v) for v in event.extensions.values())


def _longstr_bytes(value: Any) -> bytes:
    """pamqp encodes a str as a long string; send raw bytes the same way (what a client
    that does not check UTF-8 puts on the wire), so the receiver gets invalid UTF-8."""
    if isinstance(value, bytes):
        return b"S" + struct.pack(">I", len(value)) + value
    return _ORIGINAL_ENCODE(value)


_ORIGINAL_ENCODE = pamqp.encode.encode_table_value


async def test_item4_non_utf8_headers_and_non_ce_types_are_decode_errors(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pamqp.encode, "encode_table_value", _longstr_bytes)
    bad = await received(
        rig,
        [
            (b"{}", ce_headers(**{"ce-id": bytearray(b"\xff\xfe-1")})),  # byte array
            (b"{}", ce_headers(**{"ce-id": b"\xff\xfe-2"})),  # long string
            (b"{}", ce_headers(**{"ce-ratio": 0.5})),  # float
            (b"{}", ce_headers(**{"ce-list": [1, 2]})),  # array
        ],
    )
    reasons: list[str] = []
    for delivery in bad:
        with pytest.raises(DecodeError) as info:
            _ = delivery.event
        reasons.append(str(info.value))
        assert "bytearray(" not in str(info.value) and "b'\\x" not in str(info.value)
    text = " | ".join(reasons)
    assert text.count("'ce-id'") == 2 and "UTF-8" in text
    assert "'ce-ratio'" in text and "'ce-list'" in text
    headers = [delivery.raw()[0] for delivery in bad]
    assert headers[0]["ce-id"] != headers[1]["ce-id"]  # no lossy U+FFFD collapsing
    assert not any("\ufffd" in h["ce-id"] for h in headers[:2])
    assert all(isinstance(v, str) for h in headers for v in h.values())


async def test_item4_non_utf8_header_is_dead_lettered_with_the_header_named(rig: Rig) -> None:
    channel, dead = rig.channel("bad"), rig.channel("deadletter")
    mesh = Mesh(rig.url, dead_letter_channel=dead, transport_options=TEST_OPTIONS)
    handled: list[Event] = []
    copies: list[Event] = []

    @mesh.on(channel, group=f"{rig.prefix}-workers")
    async def work(event: Event) -> None:
        handled.append(event)

    @mesh.on_dead_letter(group=f"{rig.prefix}-dl")
    async def dead_letter(event: Event) -> None:
        copies.append(event)

    async with mesh:
        await rig.raw_publish(channel, b"{}", ce_headers(**{"ce-id": bytearray(b"\xff")}))
        await wait_until(lambda: len(copies) == 1, 20, "the dead-letter copy")
    assert handled == []
    assert "'ce-id'" in str(copies[0].extensions["meshdlreason"])


# --- item 12: every attribute is written in its canonical string form ------------------


async def test_item12_attributes_are_written_canonically(rig: Rig) -> None:
    t = await rig.transport()
    channel = rig.channel("canon")
    conn, queue = await rig.raw_queue(channel)
    try:
        when = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
        await t.publish(
            channel,
            Event(channel, "/t", {"x": 1}, time=when, flag=True, off=False, count=3, stamp=when),
        )
        message = await queue.get(timeout=10, fail=True)
        assert message is not None
        await message.ack()
    finally:
        await conn.close()
    headers = message.headers
    assert headers["ce-flag"] == "true" and headers["ce-off"] == "false"
    assert headers["ce-count"] == "3"
    assert headers["ce-time"] == "2026-01-02T03:04:05.600000Z"
    assert headers["ce-stamp"] == "2026-01-02T03:04:05.600000Z"
    assert all(isinstance(v, str) for v in headers.values())


# --- item 22: a closed transport (a stopped Mesh) can be started again -----------------


async def test_item22_transport_connects_again_after_close(rig: Rig) -> None:
    t = await rig.transport()
    channel = rig.channel("again")
    await t.ensure_group(channel, f"{rig.prefix}-g")
    await t.close()
    await t.close()  # idempotent
    await t.connect()
    got = Collector()
    await t.subscribe(channel, got, group=f"{rig.prefix}-g")
    await t.publish(channel, Event(channel, "/t"))
    await got.wait_for(1, 10)


async def test_item22_stopped_mesh_starts_again(rig: Rig) -> None:
    channel = rig.channel("restart")
    mesh = Mesh(
        rig.url, dead_letter_channel=rig.channel("deadletter"), transport_options=TEST_OPTIONS
    )
    seen: list[str] = []

    @mesh.on(channel, group=f"{rig.prefix}-g")
    async def handle(event: Event) -> None:
        seen.append(event.id)

    for round_ in range(2):
        async with mesh:
            sent = Event(channel, "/t", {"round": round_})
            await mesh.publish(sent)
            await wait_until(
                lambda s=sent: s.id in seen,
                15,  # type: ignore[misc]
                f"the event of round {round_}",
            )
    assert len(seen) == 2


# --- item 23: changed queue arguments are a ConfigError that says what to do -----------


async def test_item23_changed_delivery_limit_names_queue_values_and_migration(rig: Rig) -> None:
    channel, group = rig.channel("limit"), f"{rig.prefix}-g"
    first = await rig.transport(delivery_limit=77)
    await first.ensure_group(channel, group)
    second = await rig.transport(delivery_limit=20)
    name = group_queue("mesh", group, [channel])
    with pytest.raises(ConfigError) as info:
        await second.subscribe(channel, Collector(), group=group)
    text = str(info.value)
    assert name in text and "x-delivery-limit" in text
    assert "77" in text and "20" in text
    assert "delivery_limit=77" in text  # how to keep running now
    assert "docs/transports/rabbitmq.md" in text  # where the migration is described
    await second.publish(channel, Event(channel, "/t"))  # the transport is still usable


async def test_item23_ensure_group_uses_an_existing_queue_as_it_is(rig: Rig) -> None:
    """The mesh declares its dead-letter group at start (and the dead-letter tools need
    that to work): a changed setting must not break it; the queue keeps retaining."""
    channel, group = rig.channel("kept.group"), f"{rig.prefix}-dl"
    first = await rig.transport(delivery_limit=77)
    await first.ensure_group(channel, group)
    second = await rig.transport(delivery_limit=20)
    await second.ensure_group(channel, group)
    sent = Event(channel, "/t")
    await second.publish(channel, sent)
    got = Collector()
    await first.subscribe(channel, got, group=group)
    await got.wait_for(1, 10)
    assert got.ids == [sent.id]


async def test_item23_retain_never_redeclares_an_existing_stream(rig: Rig) -> None:
    t = await rig.transport()
    channel = rig.channel("kept")
    name = topology.retained_queue("mesh", channel)
    async with await aio_pika.connect(rig.url) as conn:  # made by someone else, other age
        await (await conn.channel()).declare_queue(
            name, durable=True, arguments={"x-queue-type": "stream", "x-max-age": "1D"}
        )
    rig.raw_queues.append(name)
    await t.retain(channel)  # no PRECONDITION_FAILED: declared passively
    sent = Event(channel, "/t")
    await t.publish(channel, sent)
    assert [d.event.id async for d in t.read(channel, idle=5.0)] == [sent.id]


# --- item 24: a refused connection fails fast and logs nothing ------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_item24_refused_connection_is_one_clean_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    transport = RabbitMQTransport(f"amqp://u:hunter2@127.0.0.1:{port}/", {"connect_timeout": 10})
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        await transport.connect()
    took = time.monotonic() - started
    stray = [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith(("aiormq", "aio_pika", "mesh.rabbitmq"))
    ]
    assert stray == [], stray
    assert f"127.0.0.1:{port}" in str(info.value) and "hunter2" not in str(info.value)
    assert "refused" in str(info.value)
    print(f"refused connection reported after {took * 1000:.1f} ms")


# --- item 5: redeliveries count up when the consumer process is killed ---------------

WORKER = textwrap.dedent("""
    import asyncio, os, signal, sys
    from mesh_rabbitmq import RabbitMQTransport

    url, channel, group, record = sys.argv[1:5]

    async def main() -> None:
        t = RabbitMQTransport(url, {})
        await t.connect()
        done = asyncio.Event()

        async def handler(delivery) -> None:
            with open(record, "a") as out:
                out.write(f"{delivery.redeliveries}\\n")
                out.flush()
                os.fsync(out.fileno())
            if delivery.redeliveries < 3:
                os.kill(os.getpid(), signal.SIGKILL)   # a crash mid-handler
            await delivery.ack()
            done.set()
        await t.subscribe(channel, handler, group=group)
        await asyncio.wait_for(done.wait(), 30)
        await t.close()

    asyncio.run(main())
""")


@pytest.fixture
def worker_script(tmp_path: Path) -> Iterator[Path]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    yield script


async def test_item5_redeliveries_count_process_kills(
    rig: Rig, worker_script: Path, tmp_path: Path
) -> None:
    t = await rig.transport()
    channel, group = rig.channel("crash"), f"{rig.prefix}-g"
    await t.ensure_group(channel, group)
    await t.publish(channel, Event(channel, "/t", {"poison": True}))
    record = tmp_path / "seen.txt"
    codes: list[int | None] = []
    err = b""
    for _ in range(4):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(worker_script),
            rig.url,
            channel,
            group,
            str(record),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:  # ours, by PID: never left running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
    assert record.read_text().split() == ["0", "1", "2", "3"], err.decode()[-2000:]
    assert codes == [-signal.SIGKILL] * 3 + [0]


# --- retain / read: the dead-letter tools read a stream without consuming it ----------


async def test_read_yields_stream_positions_and_needs_no_idle_wait(rig: Rig) -> None:
    t = await rig.transport()
    channel = rig.channel("log")
    await t.retain(channel)
    sent = [Event(channel, "/t", {"i": i}) for i in range(5)]
    await t.publish_batch([(channel, e) for e in sent])
    started = time.monotonic()
    first = [d async for d in t.read(channel, idle=20.0)]
    took = time.monotonic() - started
    assert [d.event.id for d in first] == [e.id for e in sent]
    positions = [d.position for d in first]
    assert len(set(positions)) == 5 and all(p is not None for p in positions)
    again = [d async for d in t.read(channel, idle=20.0)]
    assert [d.position for d in again] == positions  # stable across reads
    assert all(d.redeliveries == 0 and d.settled for d in first)
    print(f"read of 5 retained events took {took * 1000:.0f} ms with idle=20 s")


async def test_read_of_a_channel_never_retained_is_empty(rig: Rig) -> None:
    t = await rig.transport()
    assert [d async for d in t.read(rig.channel("never"), idle=0.5)] == []


@pytest.mark.parametrize("kind", ["quorum", "classic"])
async def test_read_refuses_a_queue_that_is_not_a_stream(rig: Rig, kind: str) -> None:
    t = await rig.transport()
    channel = rig.channel(f"notstream{kind}")
    name = topology.retained_queue("mesh", channel)
    async with await aio_pika.connect(rig.url) as conn:
        ch = await conn.channel()
        queue = await ch.declare_queue(name, durable=True, arguments={"x-queue-type": kind})
        await queue.bind("mesh", channel)
    rig.raw_queues.append(name)
    await t.publish(channel, Event(channel, "/t"))
    with pytest.raises(ConfigError, match="not a stream"):
        [d async for d in t.read(channel, idle=5.0)]

    async def count() -> int:
        async with await aio_pika.connect(rig.url) as conn:
            queue = await (await conn.channel()).declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)

    deadline = time.monotonic() + 10  # a delivery given back by a closed channel
    while await count() != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await count() == 1, "reading took the message from a queue that is no stream"


async def test_delete_channels_removes_retained_streams(rig: Rig) -> None:
    t = await rig.transport()
    channel = rig.channel("gone")
    await t.retain(channel)
    await t.delete_channels(f"{rig.prefix}.>")
    async with await aio_pika.connect(rig.url) as conn:
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await (await conn.channel()).declare_queue(
                topology.retained_queue("mesh", channel), passive=True
            )


@pytest.mark.parametrize(
    "text,current,wanted",
    [
        ("received '20' but current is '77'", "x-delivery-limit=77", "x-delivery-limit=20"),
        (
            "received none but current is the value '77' of type 'byte'",
            "x-delivery-limit=77",
            "no x-delivery-limit",
        ),
        (
            "received the value '20' of type 'long' but current is none",
            "no x-delivery-limit",
            "x-delivery-limit=20",
        ),
    ],
)
def test_item23_every_precondition_text_of_rabbitmq_is_parsed(
    text: str, current: str, wanted: str
) -> None:
    from aiormq.exceptions import ChannelPreconditionFailed

    transport = RabbitMQTransport("amqp://h/", {})
    exc = ChannelPreconditionFailed(
        f"PRECONDITION_FAILED - inequivalent arg "
        f"'x-delivery-limit' for queue 'mesh:g@c' in vhost '/': {text}"
    )
    with pytest.raises(ConfigError) as info:
        with transport._failing("declaring queue 'mesh:g@c'"):
            raise exc
    error = str(info.value)
    assert f"{current}, but this transport declares {wanted}" in error
    assert "'mesh:g@c'" in error and "of type" not in error


# --- MessageTooLarge: the core writes a reduced dead-letter copy when it gets one ---------


async def test_oversize_publish_is_message_too_large_and_nothing_is_sent(rig: Rig) -> None:
    t = await rig.transport(max_message_size=4096)
    channel = rig.channel("big")
    got = Collector()
    await t.subscribe(channel, got, group=f"{rig.prefix}-g")
    small = Event(channel, "/t", "x" * 100)
    big = Event(channel, "/t", "x" * 3000, note="y" * 1500)  # the headers tip it over
    with pytest.raises(MessageTooLarge) as info:
        await t.publish(channel, big)
    assert info.value.limit == 4096 and info.value.size > 4096
    assert str(info.value.size) in str(info.value) and "4096" in str(info.value)
    with pytest.raises(MessageTooLarge):
        await t.publish_batch([(channel, small), (channel, big)])  # none of the batch
    await t.publish(channel, small)
    await got.wait_for(1, 10)
    await asyncio.sleep(0.3)
    assert got.ids == [small.id]


async def test_broker_size_limit_refusal_is_message_too_large(rig: Rig) -> None:
    """Past the broker's own max_message_size (3.10 default: 128 MiB, checked on the
    body) RabbitMQ closes the publishing channel; the transport says why and goes on."""
    t = await rig.transport(max_message_size=512 * 1024 * 1024)
    channel = rig.channel("huge")
    got = Collector()
    await t.subscribe(channel, got, group=f"{rig.prefix}-g")
    with pytest.raises(MessageTooLarge) as info:
        await t.publish(channel, Event(channel, "/t", b"x" * (128 * 1024 * 1024 + 1)))
    assert info.value.size > info.value.limit > 0
    after = Event(channel, "/t")
    deadline = time.monotonic() + 15
    while True:  # the robust publisher channel comes back
        try:
            await t.publish(channel, after)
            break
        except PublishError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    await got.wait_for(1, 10)
    assert got.ids == [after.id]


async def test_send_raw_sends_bytes_header_values_as_byte_arrays(rig: Rig) -> None:
    """pamqp cannot encode ``bytes``; raw clients (the fault suite, bridges) hand them
    over, meaning bytes: they go out as AMQP byte arrays, and arrive undecodable when
    they are not UTF-8 (item 4) or as text when they are."""
    t = await rig.transport()
    channel = rig.channel("rawbytes")
    kept = Kept()
    await t.subscribe(channel, kept, group=f"{rig.prefix}-g")
    for id_ in (b"fine-1", b"bad-\xff\xfe"):
        await t.send_raw(
            channel,
            aio_pika.Message(
                b"{}", content_type="application/json", headers=ce_headers(**{"ce-id": id_})
            ),
        )
    await wait_until(lambda: len(kept.deliveries) == 2, 15, "both raw messages")
    assert kept.deliveries[0].event.id == "fine-1"
    with pytest.raises(DecodeError, match="'ce-id'"):
        _ = kept.deliveries[1].event


@pytest.mark.parametrize(
    "headers,redelivered,expected",
    [
        ({}, False, 0),
        ({}, True, 1),  # classic queue: only the flag
        ({"x-delivery-count": 2}, True, 2),  # 3.10 - 4.2: every return
        ({"x-delivery-count": 1, "x-acquired-count": 4}, True, 4),  # 4.3: nacks only acquired
        ({"x-delivery-count": True}, True, 1),  # a forged bool is no count
    ],
)
def test_item5_redeliveries_count_every_earlier_delivery_on_every_version(
    headers: dict[str, Any], redelivered: bool, expected: int
) -> None:
    from types import SimpleNamespace

    from mesh_rabbitmq.consumer import earlier_deliveries

    message: Any = SimpleNamespace(headers=headers, redelivered=redelivered)
    assert earlier_deliveries(message) == expected
