"""The TCP proxy used by reconnect tests, and the memory transport's size budget and flow."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from mesh import Delivery, Event
from mesh.testing.proxy import TcpProxy
from mesh.transports.memory import MemoryTransport


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_proxy_forwards_and_cuts() -> None:
    server, port = await _echo_server()
    with TcpProxy("127.0.0.1", port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
        await asyncio.to_thread(proxy.cut, 0.5)
        assert await asyncio.wait_for(reader.read(4), 5) == b""  # connection dropped
        await asyncio.sleep(0.6)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"back")
        assert await asyncio.wait_for(reader.read(4), 5) == b"back"
        writer.close()
    server.close()


def test_proxy_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TcpProxy("10.0.0.1", 80)


def test_memory_transport_stays_small() -> None:
    source = Path(__file__).resolve().parents[2] / "mesh" / "transports" / "memory.py"
    # statements, not lines: the count does not change with formatting
    tree = ast.parse(source.read_text())
    statements = sum(isinstance(node, ast.stmt) for node in ast.walk(tree))
    assert statements < 230, "the memory transport should stay a small, readable reference"


async def test_memory_handlers_reach_max_in_flight_when_events_trickle_in() -> None:
    """An event arriving while every running worker is busy still starts a handler call,
    up to max_in_flight (workers used to grow only when a burst was already queued)."""
    transport = MemoryTransport()
    await transport.connect()
    release = asyncio.Event()
    running = 0
    peak = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        await delivery.ack()

    sub = await transport.subscribe("t", handler, group="g", max_in_flight=3)
    try:
        for n in range(4):
            await transport.publish("t", Event("t", "/s", {"n": n}))
            await asyncio.sleep(0.01)
        assert peak == 3
    finally:
        release.set()
        await sub.close(1.0)
        await transport.close()
