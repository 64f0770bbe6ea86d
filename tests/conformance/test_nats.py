"""The conformance suite on NATS JetStream (the ``event-mesh-nats`` plugin).

Runs against ``MESH_NATS_URL`` when set (your server), else the local nats-server
on 127.0.0.1:4222 (`mesh.testing.brokers` starts it when nothing answers there).
The tests never restart a server they did not start (DEVELOPERS.md): the reconnect
case runs on a private nats-server (`brokers.PrivateNats`: a free port, data in a
temp dir, so streams and durable consumers survive) and restarts that one, by PID.
On your own server it connects through a `TcpProxy` and cuts the connections instead.

Test-only tuning (production defaults stay; see docs/transports/nats.md): a
separate stream ``MESH_TEST`` on subjects ``meshtest.>`` kept for an hour, so the
suite never touches a real ``MESH`` stream; reconnect every 0.25 s instead of 1 s;
pull requests expire after 2 s instead of 5 s; 5 s ack_wait instead of 30 s (a
message lost in transit by a cut connection comes back sooner); 2 s publish
timeout instead of 5 s.

Two mesh-level cases assume duplicates reach the consumer, which JetStream's
``Nats-Msg-Id`` deduplication prevents; they are overridden to check the broker
dropped the duplicates, then rerun unchanged on a ``dedup=false`` transport so
the mesh's own idempotency is proven on NATS too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from mesh_nats import NatsTransport, create, parse

from mesh import Context, Event, Transport
from mesh.testing import brokers
from mesh.testing.conformance import TransportConformance
from mesh.testing.proxy import TcpProxy
from mesh.testing.util import wait_until

TEST_OPTIONS: dict[str, Any] = {
    "stream": "MESH_TEST",
    "subject_prefix": "meshtest",
    "max_age": 3600,
    "reconnect_wait": 0.25,
    "pull_expires": 2.0,
    "ack_wait": 5.0,
    "publish_timeout": 2.0,
}


def broker_url_or_skip() -> str:
    return brokers.ensure_or_skip("nats")


@pytest.fixture(scope="module")
def private_nats() -> Iterator[brokers.PrivateNats]:
    """A nats-server of this module's own, for the case that restarts its broker."""
    with brokers.private_or_skip(brokers.PrivateNats) as server:
        yield server


@pytest.fixture(scope="module")
def nats_server() -> Iterator[tuple[str, TcpProxy | None]]:
    """(URL, proxy): on a user's server, through a proxy the reconnect case can cut."""
    url = broker_url_or_skip()
    if brokers.is_local("nats"):
        yield url, None
        return
    host, port = parse(url).servers[0].removeprefix("nats://").rsplit(":", 1)
    try:
        proxy = TcpProxy(host.strip("[]"), int(port)).start()
    except ValueError:  # the proxy only forwards to loopback: no disrupt() there
        yield url, None
        return
    scheme, _, rest = url.partition("://")
    netloc, sep, query = rest.partition("?")
    user, at, _ = netloc.rpartition("@")
    try:
        yield f"{scheme}://{user}{at}127.0.0.1:{proxy.port}{sep}{query}", proxy
    finally:
        proxy.stop()


class TestNatsTransport(TransportConformance):
    features = NatsTransport.features
    timeout = 30.0
    dedup = True

    @pytest.fixture(autouse=True)
    def _broker(self, request: pytest.FixtureRequest) -> None:
        """Route the reconnect case to a private server when the tests own the broker
        (it gets restarted); every other case uses the shared (or your) server."""
        self.dedup = True
        self.private: brokers.PrivateNats | None = None
        self.proxy: TcpProxy | None = None
        if request.node.name.startswith("test_reconnect") and brokers.is_local("nats"):
            self.private = request.getfixturevalue("private_nats")
            self.url = self.private.url
        else:
            self.url, self.proxy = request.getfixturevalue("nats_server")

    @pytest.fixture(autouse=True)
    async def _cleanup(self, _broker: None) -> AsyncIterator[None]:
        """Delete what the case left: the suite cleans up through a transport the case may
        have closed, and the loop-detection case subscribes outside its prefix."""
        yield
        cfg = parse(self.url, TEST_OPTIONS)
        nc = await nats.connect(
            cfg.servers,
            user=cfg.user,
            max_reconnect_attempts=1,
            password=cfg.password.get_secret_value() if cfg.password else None,
            token=cfg.token.get_secret_value() if cfg.token else None,
        )
        try:
            js = nc.jetstream()
            await js.purge_stream(cfg.stream, subject=cfg.subject(f"{self.prefix}.>"))
            for info in await js.consumers_info(cfg.stream):
                if info.name.startswith(self.prefix):
                    await js.delete_consumer(cfg.stream, info.name)
        finally:
            await nc.close()

    async def make_transport(self) -> Transport:
        return create(self.url, {**TEST_OPTIONS, "dedup": self.dedup})

    async def publish_undecodable(self, transport: Transport, channel: str) -> None:
        assert isinstance(transport, NatsTransport)
        await transport.publish_raw(channel, b"\x00not a cloudevent{", {"x-origin": "garbage"})

    async def disrupt(self) -> None:
        if self.private is not None:  # ours: restart it for real (stop, start, same data)
            await asyncio.to_thread(self.private.restart)
        elif self.proxy is not None:
            self.proxy.cut(down_for=2.0)
        else:
            pytest.skip("MESH_NATS_URL is not on loopback, so no proxy can cut it")

    # --- cases adapted to the broker's native deduplication ------------------------------

    @pytest.mark.asyncio
    async def test_mesh_suppresses_duplicates_per_group(self, meshes: Any) -> None:
        mesh = await meshes()
        seen: Counter[str] = Counter()

        @mesh.on(self.t("native"), group=f"{self.prefix}-native")
        async def native(event: Event) -> None:
            seen[event.id] += 1

        await self.started(mesh)
        event = Event(self.t("native"), "/shop", {"total": 10})
        await mesh.publish(event)
        await mesh.publish(event)  # dropped by JetStream: same Nats-Msg-Id
        await wait_until(lambda: seen[event.id] == 1, self.timeout, "first delivery")
        await asyncio.sleep(1.0)
        assert seen[event.id] == 1 and mesh.stats("native").duplicates == 0
        await mesh.stop()
        self.dedup = False  # and the mesh's own idempotency, on the same broker
        await super().test_mesh_suppresses_duplicates_per_group(meshes)

    @pytest.mark.asyncio
    async def test_mesh_derived_ids_are_deterministic(self, meshes: Any) -> None:
        mesh = await meshes()
        emitted: list[list[str]] = []
        downstream: Counter[str] = Counter()

        @mesh.on(self.t("q"), group=f"{self.prefix}-nplanner")
        async def plan(event: Event, ctx: Context) -> None:
            ids = [(await ctx.emit(self.t("sub"), {"i": i})).id for i in range(3)]
            emitted.append(ids)
            if len(emitted) == 1:
                raise RuntimeError("crash after emitting")

        @mesh.on(self.t("sub"), group=f"{self.prefix}-nsolver")
        async def solve(event: Event) -> None:
            downstream[event.id] += 1

        await self.started(mesh)
        await mesh.publish(Event(self.t("q"), "/t", {"q": "why?"}))
        await wait_until(
            lambda: len(emitted) == 2 and len(downstream) == 3,
            self.timeout,
            "the retry re-emitting the same ids",
        )
        await asyncio.sleep(1.0)
        assert emitted[0] == emitted[1]
        assert all(count == 1 for count in downstream.values())
        assert mesh.stats("solve").duplicates == 0, "JetStream dropped the re-emitted copies"
        await mesh.stop()
        self.dedup = False
        await super().test_mesh_derived_ids_are_deterministic(meshes)
