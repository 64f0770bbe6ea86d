"""A loopback TCP proxy whose connections a test can cut, to simulate broker outages.

Used where a broker cannot be restarted without losing its data (the in-memory
Tansu used for Kafka here) or belongs to the user. It runs its own event loop in
a daemon thread, so a busy test loop or a client library's own threads
(librdkafka) never stall it::

    with TcpProxy("127.0.0.1", 9092) as proxy:
        url = f"kafka://127.0.0.1:{proxy.port}"
        ...
        proxy.cut(down_for=2.0)   # drop every connection, refuse new ones for 2 s

Only loopback targets are allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; `cut` drops connections."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("TcpProxy only forwards to loopback addresses")
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="mesh-tcp-proxy"
        )
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._down_until = 0.0
        self.cuts = 0

    # --- lifecycle (called from any thread) ------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self, down_for: float = 1.0) -> None:
        """Close every proxied connection and refuse new ones for ``down_for`` seconds."""
        self.cuts += 1
        self._down_until = time.monotonic() + down_for
        asyncio.run_coroutine_threadsafe(self._drop_all(), self._loop).result(10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- inside the proxy's loop -------------------------------------------------------

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:  # connection pumps: end them before the loop stops
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _drop_all(self) -> None:
        for writer in list(self._conns):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._conns.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._down_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._conns.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
