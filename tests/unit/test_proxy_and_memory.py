"""The TCP proxy used by reconnect tests, and the memory transport's size budget."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from mesh.testing.proxy import TcpProxy


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
