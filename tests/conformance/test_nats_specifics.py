"""NATS-specific behaviour beyond the shared conformance suite (issue 10 items).

What is checked here and why it is NATS-only:

* size limit: a message is headers + payload against the server's ``max_payload``;
  nats-py checks only the payload, and a server ``-ERR`` closes its client for good.
  The transport refuses such a message with `MessageTooLarge` (nothing sent), and
  recovers by itself (a fresh client, its ack inbox and every subscription's pull
  machinery) if the server closes the connection anyway;
* header text: nats-py decodes header bytes with ``errors="replace"``, so invalid UTF-8
  becomes U+FFFD; such a message is undecodable instead of colliding with others;
* ``Delivery.position`` (the stream sequence) and ``Delivery.redeliveries`` (the ack
  subject's ``num_delivered``), also across a consumer killed with SIGKILL;
* a worker killed mid-handler: its messages reach another member within 10 s with the
  default settings; in-progress signals cover waiting messages and a closing subscription;
* a refused connection fails at once, without log lines; a silent server still gets the
  connect timeout.

Cases that need a broker restart or a kill run on a private nats-server (a free port,
data in a temp dir, killed by PID); the rest use the shared server through a test
stream (``MESH_TEST`` on ``meshtest.>``), as the conformance module does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mesh_nats import NatsTransport, create, parse

from mesh import (
    ConfigError,
    ConnectError,
    DecodeError,
    Delivery,
    Event,
    Mesh,
    MessageTooLarge,
    PublishError,
    TransportClosed,
)
from mesh.testing import brokers
from mesh.testing.util import Collector, wait_until

OPTIONS: dict[str, Any] = {
    "stream": "MESH_TEST",
    "subject_prefix": "meshtest",
    "max_age": 3600,
    "reconnect_wait": 0.25,
    "pull_expires": 2.0,
    "publish_timeout": 2.0,
}
HEADER_LINE = b"NATS/1.0\r\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _header_block(headers: dict[str, str]) -> int:
    """Bytes of the header block nats-py writes (``NATS/1.0``, ``k: v`` lines, blank line)."""
    return (
        len(HEADER_LINE)
        + sum(len(k.encode()) + 2 + len(v.encode()) + 2 for k, v in headers.items())
        + 2
    )


class RawCollector:
    """Records deliveries without decoding them (some are not CloudEvents) and acks them."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        await delivery.ack()

    async def wait_for(self, count: int, timeout: float) -> None:
        await wait_until(lambda: len(self.deliveries) >= count, timeout, f"{count} deliveries")


@pytest.fixture
def shared_url() -> str:
    return brokers.ensure_or_skip("nats")


@pytest.fixture
def prefix() -> str:
    return f"spec{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def transports(shared_url: str, prefix: str) -> AsyncIterator[Any]:
    """Connected transports on the shared server; closed and cleaned up at the end."""
    made: list[NatsTransport] = []

    async def new(**options: Any) -> NatsTransport:
        transport = create(shared_url, {**OPTIONS, **options})
        await transport.connect()
        made.append(transport)
        return transport

    yield new
    await asyncio.gather(*(t.close() for t in made), return_exceptions=True)
    cleaner = create(shared_url, OPTIONS)
    await cleaner.connect()
    with contextlib.suppress(Exception):
        await cleaner.delete_channels(f"{prefix}.>")
    await cleaner.close()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[str]:
    """A throw-away JetStream nats-server on a free port (data in ``tmp_path``), killed by PID."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(binary):
        if brokers.in_ci():
            pytest.fail("nats-server binary not installed")
        pytest.skip("nats-server binary not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not brokers.reachable(url, 0.2):
            assert proc.poll() is None and time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait(10)


# --- item 1: size limit and recovery ------------------------------------------------------


async def test_headers_count_against_max_payload(transports: Any, prefix: str) -> None:
    """Exactly the server's limit is stored; one byte more is `MessageTooLarge` naming the
    size and the limit, nothing is sent, and the connection stays up (it used to die)."""
    t = await transports()
    limit = t.max_payload
    channel = f"{prefix}.big"
    got = RawCollector()
    await t.subscribe(channel, got, group=f"{prefix}-g")
    headers = {"x-probe": "1"}
    on_wire = {**headers, "Nats-Expected-Stream": OPTIONS["stream"]}
    body = b"x" * (limit - _header_block(on_wire))
    await t.publish_raw(channel, body, headers)  # exactly at the limit: stored
    with pytest.raises(MessageTooLarge) as exc:
        await t.publish_raw(channel, body + b"y", headers)
    assert (exc.value.size, exc.value.limit) == (limit + 1, limit)
    assert str(limit + 1) in str(exc.value) and str(limit) in str(exc.value)
    event = Event(channel, "/t", b"z" * (limit - 100))  # body under nats-py's own check
    with pytest.raises(MessageTooLarge) as exc:
        await t.publish(channel, event)
    assert exc.value.size > limit
    with pytest.raises(MessageTooLarge):  # a batch: nothing of it is sent
        await t.publish_batch([(channel, Event(channel, "/t", {"ok": 1})), (channel, event)])
    small = Event(channel, "/t", {"n": 1})
    await t.publish(channel, small)  # the connection survived
    await got.wait_for(2, 20)
    await asyncio.sleep(0.5)
    assert len(got.deliveries) == 2 and got.deliveries[1].event.id == small.id


async def test_transport_recovers_when_the_server_closes_the_connection(
    transports: Any, prefix: str
) -> None:
    """A fatal ``-ERR`` closes nats-py's client for good; the transport connects a fresh
    one, restores its subscriptions, never raises `TransportClosed` while open, and an
    event held by a handler across the recovery is acked once, not redelivered."""
    t = await transports(ack_wait=3.0)
    channel = f"{prefix}.recover"
    release = asyncio.Event()
    seen: Counter[str] = Counter()

    async def handler(delivery: Delivery) -> None:
        seen[delivery.event.id] += 1
        if delivery.event.data == {"n": 0}:
            await release.wait()
        await delivery.ack()

    await t.subscribe(channel, handler, group=f"{prefix}-g", max_in_flight=4)
    held = Event(channel, "/t", {"n": 0})
    await t.publish(channel, held)
    await wait_until(lambda: seen[held.id] == 1, 20, "the first event")
    # what an oversize dead-letter copy did: a publish the server answers with -ERR
    client = t._nc
    await client.publish(
        f"meshtest.{channel}", b"x" * (client.max_payload - 10), headers={"ce-id": "y" * 64}
    )
    with contextlib.suppress(Exception):
        await client.flush(2)
    await wait_until(lambda: client.is_closed, 10, "the server closing the connection")
    after = Event(channel, "/t", {"n": 1})
    deadline = time.monotonic() + 20
    while True:
        try:
            await t.publish(channel, after)
            break
        except TransportClosed:
            pytest.fail("TransportClosed from a transport that was never closed")
        except PublishError:
            assert time.monotonic() < deadline, "the transport did not recover"
            await asyncio.sleep(0.1)
    await wait_until(lambda: seen[after.id] == 1, 20, "a delivery after the recovery")
    release.set()
    await asyncio.sleep(t.config.ack_wait + 1.5)
    assert seen[held.id] == 1, "the event held across the recovery was redelivered"
    await t.close()
    with pytest.raises(TransportClosed):
        await t.publish(channel, after)


async def test_near_limit_undecodable_message_keeps_the_transport_alive(
    transports: Any, prefix: str
) -> None:
    """An undecodable message just under the limit: its dead-letter wrapper is over it, so
    writing it raises `MessageTooLarge`; the connection and the subscriptions survive."""
    t = await transports()
    channel, other = f"{prefix}.raw", f"{prefix}.fine"
    mesh = Mesh(t, dead_letter_channel=f"{prefix}.deadletter", source="/spec")
    handled: list[str] = []

    @mesh.on(channel, group=f"{prefix}-raw")
    async def raw_handler(event: Event) -> None:
        handled.append(event.id)

    @mesh.on(other, group=f"{prefix}-fine")
    async def fine_handler(event: Event) -> None:
        handled.append(event.id)

    failures: list[BaseException] = []
    publish = t.publish

    async def recording(channel: str, event: Event) -> None:
        try:
            await publish(channel, event)
        except Exception as exc:
            failures.append(exc)
            raise

    t.publish = recording
    await mesh.start()
    try:
        body = b"\x00" + b"g" * (t.max_payload - 200)
        await t.publish_raw(channel, body, {"x-origin": "garbage"})
        await wait_until(lambda: bool(failures), 20, "the dead-letter attempt")
        assert isinstance(failures[0], MessageTooLarge), failures[0]
        assert t._nc is not None and t._nc.is_connected
        fine = Event(other, "/t", {"ok": True})
        await mesh.publish(fine)
        await wait_until(lambda: fine.id in handled, 20, "a later event still delivered")
    finally:
        await mesh.stop()


# --- item 4: header text -----------------------------------------------------------------


async def _raw_hpub(url: str, subject: str, headers: bytes, body: bytes) -> None:
    """Publish with header bytes nats-py cannot produce (it encodes str values)."""
    host, port = parse(url).servers[0].removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        await reader.readline()  # INFO
        block = HEADER_LINE + headers + b"\r\n"
        writer.write(
            b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\n'
            + f"HPUB {subject} {len(block)} {len(block) + len(body)}\r\n".encode()
            + block
            + body
            + b"\r\nPING\r\n"
        )
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"PONG")
    finally:
        writer.close()


async def test_non_utf8_header_bytes_make_the_message_undecodable(
    transports: Any, shared_url: str, prefix: str
) -> None:
    t = await transports()
    channel = f"{prefix}.bytes"
    got = RawCollector()
    await t.subscribe(channel, got, group=f"{prefix}-g")
    for bad in (b"bad-\xff", b"bad-\xfe"):
        await _raw_hpub(
            shared_url,
            f"meshtest.{channel}",
            b"ce-specversion: 1.0\r\nce-type: t\r\nce-source: /s\r\nce-id: " + bad + b"\r\n",
            b"{}",
        )
    await got.wait_for(2, 20)
    for delivery in got.deliveries:
        with pytest.raises(DecodeError, match="ce-id"):
            _ = delivery.event


# --- Delivery.position and redeliveries ---------------------------------------------------


async def test_position_is_the_stream_sequence(transports: Any, prefix: str) -> None:
    t = await transports()
    channel = f"{prefix}.pos"
    positions: list[str | None] = []

    async def handler(delivery: Delivery) -> None:
        positions.append(delivery.position)
        if len(positions) == 1:
            await delivery.nack()
        else:
            await delivery.ack()

    await t.subscribe(channel, handler, group=f"{prefix}-g")
    await t.publish(channel, Event(channel, "/t", {"n": 0}))
    await wait_until(lambda: len(positions) >= 2, 20, "the redelivery")
    await t.publish(channel, Event(channel, "/t", {"n": 1}))
    await wait_until(lambda: len(positions) >= 3, 20, "the second event")
    first, again, second = positions[:3]
    assert first is not None and first.isdigit() and first == again
    assert second is not None and int(second) > int(first)


_WORKER = textwrap.dedent("""
    import asyncio, json, sys
    from mesh_nats import create

    async def main(url, channel, group, out, options):
        transport = create(url, options)
        await transport.connect()

        async def handler(delivery):
            with open(out, "a") as f:
                f.write(f"{delivery.event.id} {delivery.redeliveries}\\n")
            await asyncio.sleep(3600)   # mid-handler until killed
        await transport.subscribe(channel, handler, group=group)
        with open(out + ".ready", "w"):
            pass
        await asyncio.Event().wait()

    url, channel, group, out, options = sys.argv[1:6]
    asyncio.run(main(url, channel, group, out, json.loads(options)))
""")


def _start_worker(
    url: str, channel: str, group: str, out: Path, options: dict[str, Any]
) -> subprocess.Popen[bytes]:
    ready = Path(f"{out}.ready")
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, url, channel, group, str(out), json.dumps(options)]
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, "the worker died while starting"
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    return proc


def _lines(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


async def test_redeliveries_count_across_a_consumer_killed_with_sigkill(
    private_server: str, tmp_path: Path
) -> None:
    """The count the core's ``max_deliveries`` relies on comes from the server: each worker
    killed mid-handler leaves it one higher for the next."""
    options = {"ack_wait": 1.0, "pull_expires": 1.0}
    channel, group, out = "crash.loop", "crashers", tmp_path / "seen.txt"
    t = create(private_server, options)
    await t.connect()
    try:
        await t.ensure_group(channel, group)
        event = Event(channel, "/t", {"poison": True})
        await t.publish(channel, event)
        for run in range(3):
            worker = _start_worker(private_server, channel, group, out, options)
            try:
                await wait_until(
                    lambda r=run: len(_lines(out)) > r,
                    30,  # type: ignore[misc]
                    f"delivery {run + 1}",
                )
            finally:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(10)
        assert _lines(out) == [f"{event.id} 0", f"{event.id} 1", f"{event.id} 2"]
    finally:
        await t.close()


# --- item 6: a dead worker's messages come back soon -------------------------------------


async def test_killed_worker_messages_reach_another_member_soon(
    private_server: str, tmp_path: Path
) -> None:
    """Default settings: a worker killed with SIGKILL mid-handler; another member of the
    group gets its message within 10 s (the bound waited for here is generous, 20 s, so
    a loaded machine does not fail it; the old default took 30 s)."""
    channel, group, out = "work.items", "workers", tmp_path / "a.txt"
    t = create(private_server, {})
    await t.connect()
    try:
        await t.ensure_group(channel, group)
        worker = _start_worker(private_server, channel, group, out, {})
        try:
            event = Event(channel, "/t", {"job": 1})
            await t.publish(channel, event)
            await wait_until(lambda: bool(_lines(out)), 30, "the worker taking the event")
            got: list[float] = []

            async def member(delivery: Delivery) -> None:
                got.append(time.monotonic())
                await delivery.ack()

            await t.subscribe(channel, member, group=group)
            await asyncio.sleep(2.0)  # the worker's in-progress signals hold the message
            assert not got, "the message was redelivered while its worker was alive"
        finally:
            killed = time.monotonic()
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
        await wait_until(lambda: bool(got), 20, "another member getting the dead worker's event")
        print(f"recovery after SIGKILL: {got[0] - killed:.2f} s")
    finally:
        await t.close()


async def test_messages_waiting_for_a_slot_are_kept_in_progress(
    transports: Any, prefix: str
) -> None:
    """With two patterns and ``max_in_flight=1`` a message may wait client-side behind a
    long handler; it must not be redelivered meanwhile (ack_wait is short now)."""
    t = await transports(ack_wait=1.0)
    seen: Counter[str] = Counter()

    async def slow(delivery: Delivery) -> None:
        seen[delivery.event.id] += 1
        await asyncio.sleep(3.0)
        await delivery.ack()

    a, b = f"{prefix}.a", f"{prefix}.b"
    await t.subscribe([a, b], slow, group=f"{prefix}-g", max_in_flight=1)
    await t.publish_batch([(a, Event(a, "/t", {"n": 1})), (b, Event(b, "/t", {"n": 2}))])
    await wait_until(lambda: sum(seen.values()) >= 2, 20, "both events")
    await asyncio.sleep(2.0)
    assert set(seen.values()) == {1}, f"redelivered while waiting or running: {seen}"


async def test_closing_subscription_keeps_running_handlers_in_progress(
    transports: Any, prefix: str
) -> None:
    """``close(timeout)`` lets a handler finish; while it does, its message must not go to
    another member (the in-progress signals continue during the close)."""
    t1, t2 = await transports(ack_wait=1.0), await transports(ack_wait=1.0)
    channel, group = f"{prefix}.closing", f"{prefix}-g"
    started = asyncio.Event()
    done: list[str] = []

    async def finishing(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(3.5)
        done.append(delivery.event.id)
        await delivery.ack()

    sub = await t1.subscribe(channel, finishing, group=group)
    event = Event(channel, "/t", {"n": 1})
    await t1.publish(channel, event)
    await asyncio.wait_for(started.wait(), 20)
    other = Collector()
    await t2.subscribe(channel, other, group=group)
    await sub.close(timeout=10.0)
    assert done == [event.id]
    await asyncio.sleep(2.0)
    assert not other.deliveries, "the message went to another member while its handler ran"


# --- item 24: refused connections fail fast ----------------------------------------------


async def test_refused_connection_fails_fast_and_quietly(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()  # nothing listens there
    transport = create(f"nats://127.0.0.1:{port}", {"connect_timeout": 30})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConnectError) as exc:
        await asyncio.wait_for(transport.connect(), 15)  # not the 30 s connect timeout
    assert "refused" in str(exc.value) and f"127.0.0.1:{port}" in str(exc.value)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    with pytest.raises(TransportClosed):
        await transport.publish("a.b", Event("a.b", "/t", {}))


async def test_silent_server_still_gets_the_connect_timeout() -> None:
    """A port that accepts but never speaks NATS (a slow or wrong network) is not a
    refusal: the client's connect timeout decides."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        transport = create(f"nats://127.0.0.1:{silent.getsockname()[1]}", {"connect_timeout": 1.5})
        with pytest.raises(ConnectError, match=r"within 1\.5s"):
            await asyncio.wait_for(transport.connect(), 20)


# --- retain / read ---------------------------------------------------------------------


async def test_read_stops_at_the_call_and_leaves_no_consumer(private_server: str) -> None:
    """`read` yields what was there when it was called (not what is published while it
    reads), with stream sequences as positions, and deletes its ephemeral consumer, also
    when the reader stops early."""
    t = create(private_server, {})
    await t.connect()
    try:
        channel = "dead.letters"
        await t.retain(channel)
        assert [d async for d in t.read(channel, idle=0.5)] == []
        sent = [Event(channel, "/t", {"n": i}) for i in range(5)]
        await t.publish_batch([(channel, e) for e in sent])
        reading = []
        async for delivery in t.read(channel, idle=0.5):
            reading.append(delivery)
            if len(reading) == 1:
                await t.publish(channel, Event(channel, "/t", {"late": True}))
        assert [d.event.id for d in reading] == [e.id for e in sent]
        assert [d.position for d in reading] == ["1", "2", "3", "4", "5"]
        assert all(d.settled and d.redeliveries == 0 for d in reading)
        async for _ in t.read(channel, idle=0.5):
            break
        await asyncio.sleep(0.2)  # the early stop's clean-up runs as the generator closes
        _, js = t._client()
        assert (await js.stream_info("MESH")).state.consumer_count == 0
    finally:
        await t.close()


async def test_retain_refuses_a_stream_that_deletes_what_is_consumed(private_server: str) -> None:
    t = create(private_server, {"stream": "WQ", "subject_prefix": "wq", "manage_stream": False})
    setup = create(private_server, {})
    await setup.connect()
    try:
        _, js = setup._client()
        await js.add_stream(name="WQ", subjects=["wq.>"], retention="workqueue")
        await t.connect()
        with pytest.raises(ConfigError, match="workqueue"):
            await t.retain("dead.letters")
    finally:
        await t.close()
        await setup.close()
