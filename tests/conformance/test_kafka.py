"""The conformance suite on Kafka: Tansu on loopback by default, or ``MESH_KAFKA_URL``.

Test-only tuning (production defaults stay as documented in docs/transports/kafka.md):
Tansu makes a group join wait about half of ``session.timeout.ms`` and answers a
fetch only after about half of ``fetch.wait.max.ms``, so both are small here, and
regex subscriptions refresh topic metadata every 500 ms to see new channels soon.

The reconnect case cuts connections with `mesh.testing.proxy.TcpProxy`: Tansu keeps
its data in memory, so it cannot be restarted. The case gets a dedicated Tansu that
advertises the proxy's port, so every client connection (including the ones made
after reading metadata) goes through the proxy. Against your own Kafka
(``MESH_KAFKA_URL``) that only works with a listener advertising the proxy port: set
``MESH_KAFKA_PROXY_URL=kafka://127.0.0.1:<proxy port>`` and
``MESH_KAFKA_PROXY_TARGET=127.0.0.1:<that listener's port>``; otherwise the reconnect
case is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from mesh_kafka import KafkaConfig, KafkaTransport
from mesh_kafka.naming import group_id_for, subscription_for, topic_for

from mesh import ConfigError, Event, Transport
from mesh.testing import brokers
from mesh.testing.conformance import TransportConformance
from mesh.testing.proxy import TcpProxy

pytestmark = pytest.mark.broker

TEST_OPTIONS: dict[str, Any] = {
    "commit_interval": 0.1,
    "client_config": {"reconnect.backoff.max.ms": 500},
    "consumer_config": {
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 20,
        "topic.metadata.refresh.interval.ms": 500,
    },
}
#: the reconnect case outlives 2 s outages without losing group membership
RECONNECT_OPTIONS: dict[str, Any] = {
    **TEST_OPTIONS,
    "consumer_config": {**TEST_OPTIONS["consumer_config"], "session.timeout.ms": 6000},
}


def kafka_url() -> str:
    return brokers.ensure_or_skip("kafka")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def proxied_url() -> Iterator[tuple[str, TcpProxy]]:
    """A Kafka URL whose every connection runs through a TcpProxy (for disrupt())."""
    proc: subprocess.Popen[bytes] | None = None
    if brokers.is_local("kafka"):
        target = ("127.0.0.1", _free_port())
        proxy = TcpProxy(*target).start()
        try:
            proc = brokers.start_tansu(target[1], advertised_port=proxy.port)
        except brokers.BrokerUnavailable as exc:
            proxy.stop()
            pytest.skip(str(exc))
        url = f"kafka://127.0.0.1:{proxy.port}"
        if not brokers.wait_reachable(f"kafka://127.0.0.1:{target[1]}", 30):
            pytest.fail("the dedicated Tansu for the reconnect case did not start")
    else:
        url = os.environ.get("MESH_KAFKA_PROXY_URL", "")
        host, _, port = os.environ.get("MESH_KAFKA_PROXY_TARGET", "").partition(":")
        if not url or not port:
            pytest.skip(
                "reconnect case against MESH_KAFKA_URL needs MESH_KAFKA_PROXY_URL and "
                "MESH_KAFKA_PROXY_TARGET (a listener advertising the proxy port)"
            )
        proxy = TcpProxy(host, int(port), listen_port=int(url.rsplit(":", 1)[1])).start()
    yield url, proxy
    proxy.stop()
    if proc is not None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


class TestKafkaTransport(TransportConformance):
    features = KafkaTransport.features
    settle_time = 0.0  # subscribe() returns only after the group assigned partitions
    timeout = 60.0

    @pytest.fixture(autouse=True)
    def _route(self, request: pytest.FixtureRequest) -> None:
        self._proxy: TcpProxy | None = None
        self._url = kafka_url()
        if request.node.name.startswith("test_reconnect"):
            self._url, self._proxy = request.getfixturevalue("proxied_url")

    async def make_transport(self) -> Transport:
        return KafkaTransport(self._url, RECONNECT_OPTIONS if self._proxy else TEST_OPTIONS)

    async def publish_undecodable(self, transport: Transport, channel: str) -> None:
        assert isinstance(transport, KafkaTransport)
        producer = Producer(transport.config.producer())
        producer.produce(channel, value=b"\x00not a cloudevent{", key=b"k")
        assert await asyncio.to_thread(producer.flush, 30) == 0

    async def disrupt(self) -> None:
        assert self._proxy is not None
        await asyncio.to_thread(self._proxy.cut, 2.0)


async def test_fatal_producer_error_replaces_the_producer() -> None:
    transport = KafkaTransport(kafka_url(), TEST_OPTIONS)
    await transport.connect()
    channel = f"fatal{uuid.uuid4().hex[:10]}.events"
    try:
        before = transport._producer
        transport._on_error(KafkaError(KafkaError._FATAL, "injected", fatal=True))
        await transport.publish(channel, Event(channel, "/t", {"n": 1}))
        assert transport._producer is not before and not transport._fatal
    finally:
        await transport.delete_channels(channel)
        await transport.close()


# --- configuration (no broker needed) ------------------------------------------------------


def test_url_and_options_parse() -> None:
    config = KafkaConfig.from_url(
        "kafka://app:s%40cret@k1:9092,k2:9093?partitions=3&consumer.fetch.wait.max.ms=50",
        {"replication_factor": 3, "ssl_ca_location": "/etc/ca.pem"},
    )
    assert config.bootstrap_servers == "k1:9092,k2:9093"
    assert config.partitions == 3 and config.replication_factor == 3
    common = config.common()
    assert common["security.protocol"] == "SASL_SSL" and common["sasl.password"] == "s@cret"
    assert config.consumer("g")["fetch.wait.max.ms"] == "50"
    assert "s@cret" not in repr(config)


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"consumer_config": {"enable.auto.commit": True}}, "enable.auto.commit"),
        ({"producer.acks": "1"}, "acks"),
        ({"producer_config": {"enable.idempotence": False}}, "enable.idempotence"),
        ({"client_config": {"sasl.password": "hunter2"}}, "sasl_password"),
        ({"consumer_config": {"partition.assignment.strategy": "cooperative-sticky"}}, "eager"),
        ({"partitions": 0}, "partitions"),
        ({"sasl_username": "only-user", "sasl_password": None}, "sasl_password"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_options_raise_config_error(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        KafkaConfig.from_url("kafka://u:topsecret@localhost:9092", options)
    assert "topsecret" not in str(info.value) and "hunter2" not in str(info.value)


def test_bad_urls_raise_config_error() -> None:
    for url in ("kafka://", "kafka://host", "nats://host:4222", "kafka://h:1,h2"):
        with pytest.raises(ConfigError):
            KafkaConfig.from_url(url)


def test_patterns_groups_and_channels_map_to_kafka_names() -> None:
    assert subscription_for("orders.created") == "orders.created"
    assert subscription_for("orders.*") == r"^orders\.[^.]+$"
    assert subscription_for("orders.>") == r"^orders\..+$"
    assert group_id_for("billing-v2.workers") == "billing-v2.workers"
    assert group_id_for("a:b") == group_id_for("a:b") != group_id_for("a_b")
    for bad in ("orders/created", "__consumer_offsets", "x" * 250):
        with pytest.raises(ConfigError):
            topic_for(bad)


def test_replies_share_one_topic() -> None:
    """Capability replies use one shared topic, never a topic per instance."""
    transport = KafkaTransport("kafka://127.0.0.1:9092", {})
    assert transport.reply_channel("a1") == transport.reply_channel("b2") == "mesh.replies"
