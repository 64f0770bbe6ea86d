"""The broker goes away twice while events flow: nothing confirmed may be lost.

NATS and RabbitMQ run as private instances on free ports (`mesh.testing.brokers`),
restarted by PID: once gracefully, once with SIGKILL. Tansu keeps its data in memory
only, so Kafka's outages are connection cuts through `TcpProxy` in front of a
private Tansu. The producer retries what was not confirmed, like an application
would; the consumer group must end up with every confirmed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from mesh import Event, Mesh, MeshError
from mesh.testing import brokers
from mesh.testing.proxy import TcpProxy
from mesh.testing.util import scaled
from tests.faults.conftest import OPTIONS, Report

SCENARIO = "broker restarted twice mid-stream (graceful, then SIGKILL)"
CUT = "connections cut twice mid-stream (2 s each)"


@dataclass
class Outage:
    name: str
    url: str
    options: dict[str, object]
    disrupt: Callable[[int], None]  # blocking: the n-th outage (0, 1), returns when back
    scenario: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture(params=["nats", "rabbitmq", "kafka"])
async def outage(request: pytest.FixtureRequest) -> AsyncIterator[Outage]:
    name = request.param
    if name == "kafka":
        target = _free_port()
        proxy = TcpProxy("127.0.0.1", target).start()
        try:
            tansu = brokers.start_tansu(target, advertised_port=proxy.port)
        except brokers.BrokerUnavailable as exc:
            proxy.stop()
            pytest.skip(str(exc))
        try:
            if not brokers.wait_reachable(f"kafka://127.0.0.1:{target}", 30):
                pytest.fail("the private Tansu did not start")
            yield Outage(
                name,
                f"kafka://127.0.0.1:{proxy.port}",
                {"consumer_config": {"session.timeout.ms": 6000}},
                lambda n: proxy.cut(down_for=2.0),
                CUT,
            )
        finally:
            proxy.stop()
            tansu.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                tansu.wait(10)
        return
    server: brokers.PrivateServer = (
        brokers.PrivateNats() if name == "nats" else brokers.PrivateRabbitMQ()
    )
    await asyncio.to_thread(server.start)
    try:
        yield Outage(
            name,
            server.url,
            {**OPTIONS[name], "reconnect_wait": 0.25}
            if name == "nats"
            else {**OPTIONS[name], "reconnect_interval": 0.3},
            lambda n: server.restart(kill=n == 1),
            SCENARIO,
        )
    finally:
        await asyncio.to_thread(server.close)


async def test_nothing_confirmed_is_lost_through_two_outages(
    outage: Outage, reliability: Report
) -> None:
    prefix = f"rst{uuid.uuid4().hex[:8]}"
    channel, n = f"{prefix}.orders", scaled(2000, 400)
    mesh = Mesh(
        outage.url,
        transport_options=outage.options,
        source="/faults",
        capabilities={"enabled": False},
        shutdown_timeout=2.0,
        dead_letter_channel=f"{prefix}.deadletter",
    )
    handled: list[tuple[float, str]] = []

    @mesh.on(channel, group=f"{prefix}-g", max_in_flight=16)
    async def handle(event: Event) -> None:
        handled.append((time.time(), event.id))

    confirmed: list[str] = []

    async def produce() -> None:
        for i in range(n):
            event = Event(channel, "/faults", {"n": i})
            while True:
                try:
                    await mesh.publish(event)
                    confirmed.append(event.id)
                    break
                except MeshError:
                    await asyncio.sleep(0.2)  # broker away: publish the same event again
            if i % 25 == 0:
                await asyncio.sleep(0.005)

    async with mesh:
        producer = asyncio.create_task(produce())
        back: list[float] = []
        for number, fraction in enumerate((0.3, 0.65)):
            while len(confirmed) < n * fraction:
                assert not producer.done() or producer.exception() is None
                await asyncio.sleep(0.02)
            await asyncio.to_thread(outage.disrupt, number)
            back.append(time.time())
        await asyncio.wait_for(producer, 300)
        deadline = time.monotonic() + 180
        while not set(confirmed) <= {i for _, i in handled}:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    seen = {i for _, i in handled}
    lost = len(set(confirmed) - seen)
    rerun = len(handled) - len(seen)
    recovery = max(min((t for t, _ in handled if t >= up), default=up) - up for up in back)
    reliability.record(
        outage.scenario,
        outage.name,
        lost=lost,
        rerun=rerun,
        recovery=recovery,
        note=f"{n} events, private instance",
    )
    assert lost == 0, f"{lost} of {len(confirmed)} confirmed events were lost"
