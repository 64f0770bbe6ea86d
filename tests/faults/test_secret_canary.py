"""A secret canary: a password that must never appear in a log line (DEBUG, client
libraries included), a repr, an exception or anything in its chain, or CLI output.

Each probe makes the mesh fail the way it fails in production with a password in the
URL: wrong credentials, nothing listening, a bad option, a publish after a failed
connect; and the CLI commands pointed at such a URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from mesh import Event, Mesh, MeshError
from mesh.testing import brokers
from mesh.testing.util import chain_text
from tests.faults.conftest import REPO, Report

CANARY = "Canary-pw-9c1f"
SCENARIO = "secret canary: DEBUG logs, reprs, exception chains, CLI output"


class Everything(logging.Handler):
    """Every record of every logger, formatted the way a log file would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log_line() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    level = root.level
    # every logger at DEBUG and heard by the root, whatever earlier tests configured
    loggers = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
        logger.propagate = True
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for logger, old_level, disabled, propagate in saved:
            logger.setLevel(old_level)
            logger.disabled, logger.propagate = disabled, propagate


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _nats_with_auth() -> Iterator[str]:
    """A private nats-server that wants a user and a password other than the canary."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = _free_port()
    with tempfile.TemporaryDirectory() as store:
        proc = subprocess.Popen(
            [
                binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-js",
                "-sd",
                store,
                "--user",
                "app",
                "--pass",
                "the-right-one",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if not brokers.wait_reachable(f"nats://127.0.0.1:{port}", 20):
                pytest.fail("the private nats-server did not start")
            yield f"nats://app:{CANARY}@127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait(10)


def _urls() -> Iterator[tuple[str, str]]:
    """(what, URL) pairs whose use must fail, each carrying the canary."""
    yield "memory, bad option", f"memory://u:{CANARY}@x?nonsense=1"
    yield "refused nats", f"nats://u:{CANARY}@127.0.0.1:{_free_port()}"
    yield "refused rabbitmq", f"amqp://u:{CANARY}@127.0.0.1:{_free_port()}/"
    yield "refused kafka", f"kafka://u:{CANARY}@127.0.0.1:{_free_port()}"
    rabbit = brokers.ensure_or_skip("rabbitmq")
    host = rabbit.rsplit("@", 1)[-1]
    yield "rabbitmq, wrong password", f"amqp://guest:{CANARY}@{host}"
    kafka = brokers.ensure_or_skip("kafka").removeprefix("kafka://")
    yield "kafka, SASL against a plaintext listener", f"kafka://u:{CANARY}@{kafka}"
    yield "bad option", f"nats://u:{CANARY}@127.0.0.1:4222?ack_wait=never"


async def _probe(url: str) -> list[str]:
    """Everything one failing use of ``url`` exposes."""
    exposed: list[str] = []
    mesh = None
    try:
        mesh = Mesh(
            url,
            transport_options={"connect_timeout": 3} if url.startswith("kafka") else {},
            capabilities={"enabled": False},
        )
        exposed += [repr(mesh), repr(mesh.transport), repr(mesh.config), str(mesh.config)]
        await mesh.start()
        await mesh.publish(Event("canary.probe", "/faults", {}))
    except MeshError as exc:
        exposed.append(chain_text(exc))
    finally:
        if mesh is not None:
            with contextlib.suppress(MeshError):
                await mesh.stop(timeout=0.5)
    if mesh is not None:
        with contextlib.suppress(MeshError):  # a publish on the never-started mesh
            await mesh.publish(Event("canary.probe", "/faults", {}))
    return exposed


async def test_no_probe_exposes_the_secret(every_log_line: Everything, reliability: Report) -> None:
    exposed: list[str] = []
    probes = 0
    with _nats_with_auth() as nats_auth:
        for _, url in [*_urls(), ("nats, wrong password", nats_auth)]:
            exposed += await _probe(url)
            probes += 1
    leaks = [text for text in [*exposed, *every_log_line.lines] if CANARY in text]
    assert not leaks, f"the secret leaked: {leaks[:3]}"
    debug = [line for line in every_log_line.lines if " DEBUG " in line]
    assert debug and len({line.split()[0] for line in every_log_line.lines}) >= 3, (
        "the capture must see DEBUG lines of several loggers (the mesh's and the clients')"
    )
    reliability.record(
        SCENARIO,
        "all",
        lost=0,
        note=f"0 leaks in {probes} failing URLs, {len(exposed)} reprs and "
        f"errors, {len(every_log_line.lines)} DEBUG log lines",
    )


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "canary.probe", "--data", "{}"],
        ["tail", "--count", "1"],
        ["dlq", "list", "--wait", "0.2"],
        ["dlq", "replay", "--all", "--wait", "0.2"],
        ["agents", "--wait", "0.2"],
    ],
)
def test_cli_output_never_shows_the_secret(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = str(REPO)
    shown = []
    for url in (
        f"amqp://guest:{CANARY}@127.0.0.1:{_free_port()}/",
        f"nats://u:{CANARY}@127.0.0.1:{_free_port()}",
    ):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "mesh", *command, "--transport", url, "--log-level", "debug"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        shown.append(result.stdout + result.stderr)
        assert result.returncode == 1, result.stdout + result.stderr
        assert time.monotonic() - started < 30
    assert not [text for text in shown if CANARY in text], shown
