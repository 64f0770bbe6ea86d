"""Prometheus metrics (issue 12) on the memory transport: a real HTTP scrape parsed with
prometheus_client's parser, counters and the lag gauge moving while events flow and lag
returning to 0, outcomes, requests, ``mesh run --metrics-port``, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh import ConfigError, DeadLetter, Event, Mesh, NoProvider
from mesh.metrics import Metrics
from mesh.testing.util import wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "dashboards" / "event-mesh.json"
FAST = {"max_attempts": 2, "initial_backoff": 0.001, "max_backoff": 0.005}


def broker() -> str:
    return f"memory://metrics-{uuid.uuid4().hex[:8]}"


def metrics_of(mesh: Mesh) -> Metrics:
    return next(m for m in mesh.middleware if isinstance(m, Metrics))


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of every sample called ``name`` whose labels include ``labels``."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


async def scrape(port: int) -> str:
    return await asyncio.to_thread(fetch, port)


async def test_a_real_scrape_shows_counters_and_lag_moving_back_to_zero() -> None:
    mesh = Mesh(broker(), metrics_port=0, metrics_host="127.0.0.1", metrics_interval=0.05)
    gate = asyncio.Event()
    handled = 0

    @mesh.on("job.queued", group="workers", max_in_flight=1)
    async def work(event: Event) -> None:
        nonlocal handled
        await gate.wait()
        handled += 1

    async with mesh:
        port = metrics_of(mesh).port
        assert port
        await mesh.publish_many([Event("job.queued", "/t", {"n": n}) for n in range(20)])
        labels = {"group": "workers", "channel": "job.queued"}
        lagging: list[float] = []

        async def lag_seen() -> bool:
            lagging[:] = samples(await scrape(port), "mesh_consumer_lag", **labels)
            return bool(lagging) and lagging[0] >= 10

        deadline = time.monotonic() + 5
        while not await lag_seen():
            assert time.monotonic() < deadline, f"lag never showed: {lagging}"
            await asyncio.sleep(0.05)
        gate.set()
        await wait_until(lambda: handled == 20, 5, "every job")
        deadline = time.monotonic() + 5
        while samples(await scrape(port), "mesh_consumer_lag", **labels) != [0.0]:
            assert time.monotonic() < deadline, "lag did not return to 0"
            await asyncio.sleep(0.05)
        text = await scrape(port)
    who = {"handler": "work", "group": "workers", "channel": "job.queued"}
    assert samples(text, "mesh_messages_sent_total", channel="job.queued") == [20.0]
    assert samples(text, "mesh_messages_consumed_total", **who) == [20.0]
    assert samples(text, "mesh_outcomes_total", outcome="acked", **who) == [20.0]
    assert samples(text, "mesh_process_duration_seconds_count", outcome="acked", **who) == [20.0]
    assert samples(text, "mesh_in_flight", handler="work", group="workers") == [0.0]
    # the server stopped with the mesh
    with pytest.raises(OSError):
        await asyncio.to_thread(fetch, port)


async def test_outcomes_are_counted_by_kind() -> None:
    metrics = Metrics()
    mesh = Mesh(broker(), middleware=[metrics], retry=FAST, hop_limit=1)

    @mesh.on("order", group="g", filter={"exact": {"subject": "paid"}})
    async def paid(event: Event) -> None:
        if event.data.get("bad"):
            raise DeadLetter("refused")
        if event.data.get("flaky"):
            raise ValueError("boom")

    async with mesh:
        once = Event("order", "/t", {}, subject="paid")
        await mesh.publish(once)
        await mesh.publish(once)  # duplicate
        await mesh.publish(Event("order", "/t", {}, subject="open"))  # filtered
        await mesh.publish(Event("order", "/t", {"bad": True}, subject="paid"))
        await mesh.publish(Event("order", "/t", {"flaky": True}, subject="paid"))
        await mesh.publish(Event("order", "/t", {}, subject="paid", meshhops=3))
        await wait_until(lambda: mesh.stats("paid").dead_lettered == 3, 5, "settled")
    value = metrics.registry.get_sample_value

    def outcome(name: str) -> float | None:
        labels = {"handler": "paid", "group": "g", "channel": "order", "outcome": name}
        return value("mesh_outcomes_total", labels)

    assert outcome("acked") == 1
    assert outcome("duplicate") == 1 and outcome("filtered") == 1
    assert outcome("retried") == 1 and outcome("dead_lettered") == 2
    assert outcome("hop_limited") == 1
    assert (
        value("mesh_messages_consumed_total", {"handler": "paid", "group": "g", "channel": "order"})
        == 6
    )


async def test_requests_are_timed_by_outcome() -> None:
    metrics = Metrics()
    mesh = Mesh(broker(), middleware=[metrics], capabilities={"resync_wait": 0.05})
    async with mesh:
        with pytest.raises(NoProvider):
            await mesh.request("nobody.home", {})
    count = metrics.registry.get_sample_value(
        "mesh_request_duration_seconds_count",
        {"capability": "nobody.home", "outcome": "no_provider"},
    )
    assert count == 1


async def test_a_taken_port_is_a_config_error_that_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        mesh = Mesh(broker(), metrics_port=port, metrics_host="127.0.0.1")
        with pytest.raises(ConfigError, match="pick a free metrics_port"):
            await mesh.start()
        assert not mesh.started


def test_without_the_extra_the_error_names_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "from mesh import Mesh\n"
        "try:\n"
        "    Mesh('memory://', metrics_port=0)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ConfigError")
    assert "pip install 'event-mesh[prometheus]'" in out.stdout


APP = """
from mesh import Event, Mesh

mesh = Mesh()


@mesh.on_start
async def kick() -> None:
    await mesh.publish(Event("demo.ping", "/test", {}))


@mesh.on("demo.ping", group="pingers")
async def ping(event: Event) -> None:
    pass
"""


def test_mesh_run_serves_metrics_on_the_port_asked(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("MESH_TRANSPORT", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh",
            "run",
            "app.py",
            "--transport",
            "memory://m",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = fetch(port)
            except OSError:
                time.sleep(0.1)
                continue
            if samples(text, "mesh_messages_consumed_total", handler="ping"):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert samples(text, "mesh_messages_consumed_total", handler="ping", group="pingers") == [1.0]
    assert f"metrics on port {port}" in stderr


def test_the_grafana_dashboard_queries_only_series_the_mesh_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = {
        sample.name for family in Metrics().registry.collect() for sample in family.samples
    } | {
        f"{family.name}{suffix}"
        for family in Metrics().registry.collect()
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(mesh_[a-z_]+)", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


async def test_a_failed_start_leaves_no_server_and_no_task_behind() -> None:
    mesh = Mesh(broker(), metrics_port=0, metrics_host="127.0.0.1", stats={"enabled": True})
    metrics = metrics_of(mesh)

    @mesh.on_start
    async def broken() -> None:
        raise RuntimeError("the app's own start hook failed")

    with pytest.raises(RuntimeError, match="start hook failed"):
        await mesh.start()
    assert metrics.port  # it was serving before the hook failed ...
    with pytest.raises(OSError):  # ... and is not any more
        await asyncio.to_thread(fetch, metrics.port)
    assert metrics._poller is None
    assert all(getattr(m, "_task", None) is None for m in mesh.middleware)


async def test_metrics_installed_on_a_running_mesh_serve_at_once() -> None:
    async with Mesh(broker()) as mesh:
        metrics = mesh.use(Metrics(port=0, host="127.0.0.1"))
        await wait_until(lambda: bool(metrics.port), 5, "the server to start")
        assert "mesh_messages_sent" in await scrape(metrics.port)
    with pytest.raises(OSError):
        await asyncio.to_thread(fetch, metrics.port)


async def test_lag_series_of_a_closed_group_are_removed() -> None:
    metrics = Metrics()
    mesh = Mesh(broker(), middleware=[metrics], metrics_interval=60)

    async def nothing(event: Event) -> None:
        pass

    async with mesh:
        sub = await mesh.subscribe("job", nothing, group="short-lived")
        await metrics.refresh_lag()
        labels = {"group": "short-lived", "channel": "job"}
        assert metrics.registry.get_sample_value("mesh_consumer_lag", labels) == 0
        await sub.close()
        await metrics.refresh_lag()
        assert metrics.registry.get_sample_value("mesh_consumer_lag", labels) is None


def test_cli_tools_never_serve_the_apps_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh.cli.app import Common

    monkeypatch.setenv("MESH_METRICS_PORT", "9464")
    monkeypatch.setenv("MESH_STATS__ENABLED", "true")
    tool = Common(transport="memory://").tool_config()
    assert tool.metrics_port is None and not tool.stats.enabled
    assert not tool.capabilities.enabled
    assert Common(transport="memory://").tool_config(registry=True).capabilities.enabled


async def test_a_cancelled_send_or_request_is_not_counted_as_done() -> None:
    metrics = Metrics()

    async def cancelled(*args: object) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await metrics.publish(Event("x", "/t", {}), "x", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await metrics.publish_batch([("x", Event("x", "/t", {}))], cancelled)
    with pytest.raises(asyncio.CancelledError):
        await metrics.request("summarize", {}, cancelled)  # type: ignore[arg-type]
    value = metrics.registry.get_sample_value
    assert value("mesh_messages_sent_total", {"channel": "x"}) is None
    assert value("mesh_publish_duration_seconds_count", {"channel": "x"}) == 2
    labels = {"capability": "summarize", "outcome": "cancelled"}
    assert value("mesh_request_duration_seconds_count", labels) == 1
