"""`mesh.testing.brokers`: nothing restarts a server the tests did not start, and the
private instances that fault tests restart and kill behave as documented.

The private-instance cases start real servers (skipped when the binaries are missing,
failed under ``CI=true``); each checks with ``/proc`` that signals reached the server
process itself (nats-server, RabbitMQ's beam.smp) and that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.testing import brokers


def _client(module: str, reason: str) -> Any:
    """The broker's client library: without it the test is skipped (a core-only checkout),
    except under ``CI=true``, where a missing client fails it like a missing broker."""
    if brokers.in_ci():
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.mark.parametrize("name", sorted(brokers.BROKERS))
def test_restart_refuses_servers_the_tests_did_not_start(name: str) -> None:
    """It used to stop and restart the machine's NATS and RabbitMQ."""
    before = brokers.identify(brokers.broker_url(name))
    with pytest.raises(brokers.NotStartedHere, match="Private"):
        brokers.restart(name)
    after = brokers.identify(brokers.broker_url(name))
    assert (before is None and after is None) or (before is not None and before.same_server(after))


def test_identify_fingerprints_a_loopback_listener_only() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        seen = brokers.identify(f"nats://127.0.0.1:{port}")
        if seen is None:
            pytest.skip("no /proc/net/tcp here: the guard is inert")
        assert seen.port == port and seen.socket > 0
        quick = brokers.identify(f"nats://127.0.0.1:{port}", with_pid=False)
        assert quick is not None and quick.socket == seen.socket and quick.pid is None
    assert brokers.identify(f"nats://127.0.0.1:{port}") is None
    assert brokers.identify("nats://example.com:4222") is None


@pytest.fixture
def nats() -> Iterator[brokers.PrivateNats]:
    with brokers.private_or_skip(brokers.PrivateNats) as server:
        yield server


@pytest.mark.broker
async def test_private_nats_restarts_and_is_killed_by_pid(nats: brokers.PrivateNats) -> None:
    nats_client = _client("nats", "the NATS client comes with plugins/nats")

    first = nats.pid
    assert first is not None and _comm(first) == "nats-server"
    client = await nats_client.connect(nats.url)
    await client.jetstream().add_stream(name="KEPT", subjects=["kept.>"])
    await client.close()
    before = brokers.identify(nats.url)
    await asyncio.to_thread(nats.restart)
    assert nats.pid not in (None, first) and _gone(first)
    after = brokers.identify(nats.url)
    assert before is not None and not before.same_server(after), "the guard sees a restart"
    client = await nats_client.connect(nats.url)
    assert (await client.jetstream().stream_info("KEPT")).config.name == "KEPT"
    await client.close()
    second = nats.pid
    assert second is not None
    await asyncio.to_thread(nats.kill)
    assert _gone(second) and not nats.running and not brokers.reachable(nats.url, 0.5)
    await asyncio.to_thread(nats.start)
    assert nats.running and nats.dir.is_dir()
    data, third = nats.dir, nats.pid
    assert third is not None
    await asyncio.to_thread(nats.close)
    assert _gone(third) and not data.exists()


@pytest.mark.broker
def test_private_rabbitmq_is_a_separate_node_killed_by_pid() -> None:
    """Its own node, ports and files; kill() ends beam.smp itself and its helpers; a
    restart keeps a durable quorum queue; and the guard notices ``stop_app``/``start_app``
    (what the old reconnect case did to the machine's node: same PID, new listener)."""
    _client("aio_pika", "the RabbitMQ client comes with plugins/rabbitmq")
    system = brokers.identify(brokers.BROKERS["rabbitmq"].default_url)
    with brokers.private_or_skip(brokers.PrivateRabbitMQ) as rabbit:
        beam = rabbit.pid
        assert beam is not None
        assert _comm(beam) == "beam.smp"
        assert rabbit.port != 5672 and rabbit.node.startswith("mesh-test-")
        environ = Path(f"/proc/{beam}/environ").read_bytes().split(b"\0")
        assert f"RABBITMQ_NODENAME={rabbit.node}".encode() in environ
        assert f"RABBITMQ_MNESIA_BASE={rabbit.dir / 'mnesia'}".encode() in environ
        _declare_and_publish(rabbit.url)

        before = brokers.identify(rabbit.url)
        for step in ("stop_app", "start_app"):
            result = rabbit.ctl(step)
            assert result.returncode == 0, result.stderr
        after = brokers.identify(rabbit.url)
        assert before is not None and after is not None and before.socket != after.socket
        assert after.pid == before.pid == beam, "same process, so a PID check alone misses it"

        rabbit.restart()
        assert rabbit.pid != beam and _gone(beam)
        assert _message_count(rabbit.url) == 1, "durable state survives a restart"
        beam = rabbit.pid
        assert beam is not None
        helpers = brokers._descendants(beam)
        rabbit.kill()
        assert _gone(beam) and all(_gone(pid) for pid in helpers)
        rabbit.start()
        assert _message_count(rabbit.url) == 1, "and a SIGKILL"
        data = rabbit.dir
    assert not data.exists() and not rabbit.running
    assert system is None or system.same_server(
        brokers.identify(brokers.BROKERS["rabbitmq"].default_url)
    )


def _declare_and_publish(url: str) -> None:
    import aio_pika

    async def run() -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue("kept", durable=True, arguments={"x-queue-type": "quorum"})
            await channel.default_exchange.publish(
                aio_pika.Message(b"x", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="kept",
            )

    asyncio.run(run())


def _message_count(url: str) -> int:
    import aio_pika

    async def run() -> int:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("kept", passive=True)
            return queue.declaration_result.message_count or 0

    return asyncio.run(run())
