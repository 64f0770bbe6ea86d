"""Swap by config, shown: the examples run unchanged on every broker.

The same scripts as tests/integration/test_examples.py, with ``--transport URL`` as
the only difference. Kafka's URL carries test tuning for the Tansu broker used here
(a group join waits half of ``session.timeout.ms``; see docs/transports/kafka.md);
the code is untouched.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from mesh.testing import brokers
from tests.integration.test_examples import run_example

pytestmark = pytest.mark.broker

KAFKA_TEST_TUNING = {"consumer.session.timeout.ms": 2000,
                     "consumer.heartbeat.interval.ms": 500,
                     "consumer.fetch.wait.max.ms": 20,
                     "consumer.topic.metadata.refresh.interval.ms": 500}


def _url(name: str) -> str:
    try:
        url = brokers.ensure(name)
    except brokers.BrokerUnavailable as exc:
        if brokers.in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    if name == "kafka":
        url += ("&" if "?" in url else "?") + urlencode(KAFKA_TEST_TUNING)
    return url


@pytest.mark.parametrize("broker", ["nats", "rabbitmq", "kafka"])
def test_research_swarm_on_each_broker(broker: str) -> None:
    proc = run_example("research_swarm.py", "--transport", _url(broker))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recovered = re.search(r"task (\d+) crashed on (worker-\d+), redelivered, completed by "
                          r"(worker-\d+)", proc.stdout)
    assert recovered is not None, proc.stdout[-3000:]
    assert recovered.group(2) != recovered.group(3)


@pytest.mark.parametrize("broker", ["nats", "rabbitmq", "kafka"])
def test_supply_chain_on_each_broker(broker: str) -> None:
    proc = run_example("supply_chain.py", "--transport", _url(broker))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "optimize.route" in proc.stdout
