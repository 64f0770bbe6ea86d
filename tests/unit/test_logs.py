"""JSON log lines (issue 12): the event, trace and handler of each record, from a
handler's own logging calls and the mesh's; ``--log-format json`` on ``mesh run``."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from mesh import ConfigError, Event, Mesh, MeshConfig
from mesh import logs
from mesh.otel import Tracing
from mesh.testing.util import wait_until
from tests.unit.test_cli import _run_until_handled, cli_env

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def lines() -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("app.agents")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_handlers_log_line_carries_its_event_trace_and_handler(lines: io.StringIO) -> None:
    mesh = Mesh(f"memory://logs-{uuid.uuid4().hex[:8]}")
    log = logging.getLogger("app.agents")

    @mesh.on("order.created", group="billing")
    async def bill(event: Event) -> None:
        log.info("billing %s", event.data["n"], extra={"amount": 12})

    async with mesh:
        event = Event("order.created", "/t", {"n": 7}, correlationid="s-1", traceparent=PARENT)
        await mesh.publish(event)
        await wait_until(lambda: mesh.stats("bill").handled == 1, 5, "handled")
    log.info("outside any handler")
    inside, outside = records(lines)
    assert inside["message"] == "billing 7" and inside["level"] == "INFO"
    assert inside["logger"] == "app.agents" and inside["amount"] == 12
    assert (inside["event_id"], inside["event_type"]) == (event.id, "order.created")
    assert inside["correlationid"] == "s-1"
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert inside["span_id"] == "b7ad6b7169203331"  # no tracing: the sender's span
    assert (inside["handler"], inside["group"]) == ("bill", "billing")
    assert "event_id" not in outside and "handler" not in outside
    assert str(outside["time"]).endswith("+00:00")


async def test_with_tracing_the_ids_are_the_handlers_own_span(lines: io.StringIO) -> None:
    mesh = Mesh(
        f"memory://logs-{uuid.uuid4().hex[:8]}",
        middleware=[Tracing(tracer_provider=TracerProvider())],
    )
    log = logging.getLogger("app.agents")

    @mesh.on("order.created", group="billing")
    async def bill(event: Event) -> None:
        log.info("billing")

    async with mesh:
        await mesh.publish(Event("order.created", "/t", {}, traceparent=PARENT))
        await wait_until(lambda: mesh.stats("bill").handled == 1, 5, "handled")
    (line,) = records(lines)
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"  # the same trace
    assert line["span_id"] != "b7ad6b7169203331"  # the process span, a child


def test_an_exception_is_one_field(lines: io.StringIO) -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("app.agents").exception("it failed")
    (line,) = records(lines)
    assert "ValueError: bad" in str(line["exc_info"])


def test_log_format_in_the_config_is_checked() -> None:
    assert MeshConfig.load(log_format="json").log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        MeshConfig.load(log_format="xml")


APP = """
import logging, os
from mesh import Event, Mesh

mesh = Mesh()


@mesh.on_start
async def kick() -> None:
    await mesh.publish(Event("demo.ping", "/test", {}))


@mesh.on("demo.ping", group="pingers")
async def ping(event: Event) -> None:
    logging.getLogger("app").warning("pinged")
    with open(os.environ["APP_OUT"], "w") as out:
        out.write("pinged")
"""


def test_mesh_run_logs_json_lines(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    code, handled, stderr = _run_until_handled(
        ["app.py", "--transport", "memory://j", "--log-format", "json"], tmp_path
    )
    assert code == 0 and handled == "pinged", stderr
    parsed = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    pinged = [line for line in parsed if line["message"] == "pinged"]
    assert pinged and pinged[0]["handler"] == "ping" and pinged[0]["group"] == "pingers"
    assert any(line["logger"] == "mesh" and "mesh started" in line["message"] for line in parsed)


def test_a_bad_config_does_not_stop_a_command_that_needs_none() -> None:
    env = cli_env(MESH_HOP_LIMIT="abc")
    proc = subprocess.run(
        [sys.executable, "-m", "mesh", "transports"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "memory" in proc.stdout
