"""The conformance suite on RabbitMQ (the ``event-mesh-rabbitmq`` plugin).

Runs against ``MESH_RABBITMQ_URL`` when set (your broker), else the local RabbitMQ
on 127.0.0.1:5672 (`mesh.testing.brokers` starts it when nothing answers there).
The tests never restart a server they did not start (DEVELOPERS.md): the reconnect
case runs on a private RabbitMQ node (`brokers.PrivateRabbitMQ`: its own node name,
ports, data and logs in a temp dir) and restarts that one, by PID. On your own
broker it connects through a `TcpProxy` and cuts the connections instead.

Test-only tuning (production defaults stay): reconnect every 0.3 s instead of 2 s,
and a 5 s publish timeout instead of 10 s, so outages end quickly.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
import pytest_asyncio
from mesh_rabbitmq import RabbitMQConfig, RabbitMQTransport
from mesh_rabbitmq.config import ssl_context
from mesh_rabbitmq.topology import binding_key, group_arguments, group_queue

from mesh import ConfigError, ConnectError, Delivery, Event, PublishError, Transport
from mesh.testing import brokers
from mesh.testing.conformance import TransportConformance
from mesh.testing.proxy import TcpProxy
from mesh.testing.util import Collector, uid, wait_until

TEST_OPTIONS = {"reconnect_interval": 0.3, "publish_timeout": 5.0}


def broker_url_or_skip() -> str:
    return brokers.ensure_or_skip("rabbitmq")


@pytest.fixture(scope="module")
def private_rabbitmq() -> Iterator[brokers.PrivateRabbitMQ]:
    """A RabbitMQ node of this module's own, for the case that restarts its broker."""
    with brokers.private_or_skip(brokers.PrivateRabbitMQ) as server:
        yield server


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[tuple[str, TcpProxy | None]]:
    """(URL, proxy): on a user's broker, through a proxy the reconnect case can cut."""
    url = broker_url_or_skip()
    if brokers.is_local("rabbitmq"):
        yield url, None
        return
    parts = urlsplit(url)
    try:
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    except ValueError:  # the proxy only forwards to loopback: no disrupt() there
        yield url, None
        return
    user, _, _ = parts.netloc.rpartition("@")
    host = f"127.0.0.1:{proxy.port}"
    netloc = f"{user}@{host}" if user else host
    try:
        yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), proxy
    finally:
        proxy.stop()


@pytest.mark.broker
class TestRabbitMQTransport(TransportConformance):
    features = RabbitMQTransport.features
    timeout = 30.0

    @pytest.fixture(autouse=True)
    def _broker(self, request: pytest.FixtureRequest) -> None:
        """Route the reconnect case to a private node when the tests own the broker
        (it gets restarted); every other case uses the shared (or your) broker."""
        self.private: brokers.PrivateRabbitMQ | None = None
        self.proxy: TcpProxy | None = None
        if request.node.name.startswith("test_reconnect") and brokers.is_local("rabbitmq"):
            self.private = request.getfixturevalue("private_rabbitmq")
            self.url = self.private.url
        else:
            self.url, self.proxy = request.getfixturevalue("rabbitmq")

    async def make_transport(self) -> Transport:
        return RabbitMQTransport(self.url, TEST_OPTIONS)

    async def publish_undecodable(self, transport: Transport, channel: str) -> None:
        assert isinstance(transport, RabbitMQTransport)
        await transport.send_raw(
            channel, aio_pika.Message(b"\x00not a cloudevent{", headers={"x-origin": "garbage"})
        )

    async def disrupt(self) -> None:
        if self.private is not None:  # ours: restart it for real (stop, start, same data)
            await asyncio.to_thread(self.private.restart)
        elif self.proxy is not None:
            self.proxy.cut(down_for=2.0)
        else:
            pytest.skip("MESH_RABBITMQ_URL is not on loopback, so no proxy can cut it")


# --- the plugin's own promises, beyond the suite --------------------------------------


def test_config_from_url_query_and_options() -> None:
    cfg = RabbitMQConfig.from_url(
        "amqps://ann:p%40ss@mq.example:5671/prod?exchange=ev&tls_verify=false",
        {"delivery_limit": 50},
    )
    assert (cfg.tls, cfg.host, cfg.port, cfg.vhost, cfg.username) == (
        True,
        "mq.example",
        5671,
        "prod",
        "ann",
    )
    assert cfg.password.get_secret_value() == "p@ss"
    assert (cfg.exchange, cfg.dlx, cfg.delivery_limit, cfg.tls_verify) == (
        "ev",
        "ev.dlx",
        50,
        False,
    )
    assert RabbitMQConfig.from_url("amqp://h/%2F", {}).vhost == "/"
    assert RabbitMQConfig.from_url("amqps://h", {}).port == 5671
    transport = RabbitMQTransport("amqp://ann:hunter2@h/", {})
    assert "hunter2" not in repr(transport) and "hunter2" not in repr(transport.config)


@pytest.mark.parametrize(
    "url,options,needle",
    [
        ("amqp://u:hunter2@h/", {"prefetch": 3}, "prefetch"),
        ("amqp://u:hunter2@h/?delivery_limit=0", {}, "delivery_limit"),
        ("amqp://u:hunter2@h/", {"tls_ca_file": "/ca.pem"}, "amqps://"),
        ("amqp://u:hunter2@h/", {"exchange": "amq.topic"}, "exchange"),
        ("amqps://u:hunter2@h/", {"tls_cert_file": "/c.pem"}, "tls_key_file"),
        ("kafka://u:hunter2@h/", {}, "amqp://"),
        ("amqp://u:hunter2@h/?tls=true", {}, "amqps://"),
    ],
)
def test_bad_options_name_the_option_and_hide_the_password(
    url: str, options: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RabbitMQTransport(url, options)
    assert needle in str(info.value) and "hunter2" not in str(info.value)


def test_tls_context_from_options(tmp_path: Path) -> None:
    cfg = RabbitMQConfig.from_url("amqps://h", {"tls_verify": "false"})
    context = ssl_context(cfg)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert ssl_context(RabbitMQConfig.from_url("amqps://h", {})).verify_mode == ssl.CERT_REQUIRED
    (tmp_path / "ca.pem").write_text("not a certificate")
    bad = RabbitMQConfig.from_url("amqps://h", {"tls_ca_file": str(tmp_path / "ca.pem")})
    with pytest.raises(ConfigError, match="tls_ca_file"):
        ssl_context(bad)


async def test_connect_error_hides_the_password() -> None:
    transport = RabbitMQTransport("amqp://u:hunter2@127.0.0.1:1/", {"connect_timeout": 2})
    with pytest.raises(ConnectError) as info:
        await transport.connect()
    assert "hunter2" not in str(info.value) and "127.0.0.1:1" in str(info.value)


def test_patterns_become_exact_binding_keys_and_legal_queue_names() -> None:
    assert binding_key("a.*.c") == "a.*.c"
    assert binding_key("a.>") == "a.*.#"  # one or more, never the parent 'a' itself
    with pytest.raises(ConfigError):
        binding_key("a.#")
    name = group_queue("mesh", "billing:eu", ["orders.>", "invoices.*"])
    assert name == "mesh:billing:eu@invoices.+,orders.#"
    assert group_queue("mesh", "billing:eu", ["invoices.*", "orders.>"]) == name
    odd = group_queue("mesh", "grüppe", ["x" * 300])
    assert len(odd) <= 200 and odd != group_queue("mesh", "grüpp_", ["x" * 300])


@pytest.mark.broker
class TestRabbitMQSpecifics:
    @pytest_asyncio.fixture(autouse=True)
    async def _broker(self, rabbitmq: tuple[str, TcpProxy | None]) -> AsyncIterator[None]:
        self.url = rabbitmq[0]
        self.prefix = f"rmq{uid()}"
        self.made: list[RabbitMQTransport] = []
        yield
        if self.made:
            await self.made[0].delete_channels(f"{self.prefix}.>")
        await asyncio.gather(*(t.close() for t in self.made))

    async def transport(self, url: str | None = None, **options: object) -> RabbitMQTransport:
        t = RabbitMQTransport(url or self.url, {**TEST_OPTIONS, **options})
        await t.connect()
        self.made.append(t)
        return t

    async def test_tail_wildcard_does_not_match_the_parent_channel(self) -> None:
        t = await self.transport()
        got = Collector()
        await t.subscribe(f"{self.prefix}.orders.>", got, group=f"{self.prefix}-g")
        for name in ("orders", "orders.created", "orders.eu.created"):
            channel = f"{self.prefix}.{name}"
            await t.publish(channel, Event(channel, "/t"))
        await got.wait_for(2, 10)
        await asyncio.sleep(0.3)
        assert sorted(e.type for e in got.events) == [
            f"{self.prefix}.orders.created",
            f"{self.prefix}.orders.eu.created",
        ]

    async def test_unroutable_publish_is_dropped_not_failed(self) -> None:
        t = await self.transport()
        channel = f"{self.prefix}.nobody.listens"
        await t.publish(channel, Event(channel, "/t"))
        await t.publish_batch([(channel, Event(channel, "/t")) for _ in range(3)])
        assert t.unroutable == 4

    async def test_redeliveries_count_up_from_the_quorum_header(self) -> None:
        t = await self.transport()
        seen: list[int] = []

        async def handler(delivery: Delivery) -> None:
            seen.append(delivery.redeliveries)
            await (delivery.ack() if len(seen) == 3 else delivery.nack())

        channel = f"{self.prefix}.retry"
        await t.subscribe(channel, handler, group=f"{self.prefix}-g")
        await t.publish(channel, Event(channel, "/t"))
        await wait_until(lambda: len(seen) == 3, 10, "three deliveries")
        assert seen == [0, 1, 2]

    async def test_group_queue_is_quorum_with_explicit_limit_and_dead_letter_exchange(self) -> None:
        t = await self.transport(delivery_limit=77)
        channel, group = f"{self.prefix}.q", f"{self.prefix}-g"
        await t.ensure_group(channel, group)
        name = group_queue(t.config.exchange, group, [channel])
        async with await aio_pika.connect(self.url) as conn:
            ch = await conn.channel()  # equal arguments: the declaration is a no-op
            await ch.declare_queue(name, durable=True, arguments=group_arguments(t.config))
            assert group_arguments(t.config)["x-delivery-limit"] == 77
            ch = await conn.channel()
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await ch.declare_queue(
                    name,
                    durable=True,
                    arguments={**group_arguments(t.config), "x-delivery-limit": 20},
                )

    async def test_existing_queue_with_other_settings_is_a_config_error(self) -> None:
        t = await self.transport()
        channel, group = f"{self.prefix}.clash", f"{self.prefix}-g"
        name = group_queue(t.config.exchange, group, [channel])
        async with await aio_pika.connect(self.url) as conn:
            await (await conn.channel()).declare_queue(name, durable=True)  # a classic queue
            try:
                with pytest.raises(ConfigError, match="other settings"):
                    await t.subscribe(channel, Collector(), group=group)
            finally:
                await (await conn.channel()).queue_delete(name)

    async def test_publish_during_an_outage_fails_fast_then_recovers(self) -> None:
        await self.transport()  # a direct one first: it does the clean-up
        parts = urlsplit(self.url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            pytest.skip("the outage is simulated with a loopback-only TcpProxy")
        with TcpProxy(parts.hostname, parts.port or 5672) as proxy:
            user = parts.netloc.rpartition("@")[0]
            t = await self.transport(
                urlunsplit(
                    (parts.scheme, f"{user}@127.0.0.1:{proxy.port}", parts.path, parts.query, "")
                ),
                publish_timeout=1.0,
            )
            got = Collector()
            channel = f"{self.prefix}.outage"
            await t.subscribe(channel, got, group=f"{self.prefix}-g")
            proxy.cut(down_for=4.0)
            started = time.monotonic()
            with pytest.raises(PublishError):
                await t.publish(channel, Event(channel, "/t"))
            assert time.monotonic() - started < 2.0, "publish must not hang during an outage"
            sent = Event(channel, "/t", {"after": "outage"})
            deadline = time.monotonic() + 20
            while True:
                try:
                    await t.publish(channel, sent)
                    break
                except PublishError:
                    assert time.monotonic() < deadline, "no recovery after the outage"
                    await asyncio.sleep(0.2)
            await got.wait_for(1, 20)  # the consumer came back by itself
            assert got.events[-1].id == sent.id
            await t.close()
