"""Swap by config, shown: the examples run unchanged on every broker.

The same scripts as tests/integration/test_examples.py, with ``--transport URL`` as
the only difference. Kafka's URL carries test tuning for the Tansu broker used here
(a group join waits half of ``session.timeout.ms``; see docs/transports/kafka.md);
the code is untouched.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from mesh.testing import brokers
from tests.integration.test_examples import run_example

pytestmark = pytest.mark.broker

KAFKA_TEST_TUNING = {
    "consumer.session.timeout.ms": 2000,
    "consumer.heartbeat.interval.ms": 500,
    "consumer.fetch.wait.max.ms": 20,
    "consumer.topic.metadata.refresh.interval.ms": 500,
}


def _url(name: str, private_kafka: str | None = None) -> str:
    url = private_kafka if name == "kafka" and private_kafka else brokers.ensure_or_skip(name)
    if name == "kafka":
        url += ("&" if "?" in url else "?") + urlencode(KAFKA_TEST_TUNING)
    return url


@pytest.fixture(scope="module")
def private_tansu() -> Iterator[str | None]:
    """A fresh Tansu for these runs when Kafka is local: its in-memory store keeps the
    consumer groups and offsets of earlier runs, which a re-run on the shared broker
    trips over. A user's Kafka (MESH_KAFKA_URL) is used as it is."""
    if not brokers.is_local("kafka"):
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        proc = brokers.start_tansu(port)
    except brokers.BrokerUnavailable as exc:
        if brokers.in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    url = f"kafka://127.0.0.1:{port}"
    try:
        if not brokers.wait_reachable(url, 30):
            pytest.fail("a private Tansu for the example runs did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("broker", ["nats", "rabbitmq", "kafka"])
def test_research_swarm_on_each_broker(broker: str, private_tansu: str | None) -> None:
    proc = run_example("research_swarm.py", "--transport", _url(broker, private_tansu))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recovered = re.search(
        r"task (\d+) crashed on (worker-\d+), redelivered, completed by "
        r"(worker-\d+)",
        proc.stdout,
    )
    assert recovered is not None, proc.stdout[-3000:]
    assert recovered.group(2) != recovered.group(3)


@pytest.mark.parametrize("broker", ["nats", "rabbitmq", "kafka"])
def test_supply_chain_on_each_broker(broker: str, private_tansu: str | None) -> None:
    proc = run_example("supply_chain.py", "--transport", _url(broker, private_tansu))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "optimize.route" in proc.stdout
