"""``mesh top`` in a pseudo-terminal (issue 12): a running app on a real broker (NATS
JetStream), reporting stats, shows up with a non-zero rate in the rich view, and Ctrl-C
ends the view cleanly."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mesh.testing import brokers

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]

APP = """
import asyncio, os
from mesh import Event, Mesh

mesh = Mesh()
TYPE = os.environ["TOP_TYPE"]


@mesh.on_start
async def feed() -> None:
    async def loop() -> None:
        while True:
            await mesh.publish_many([Event(TYPE, "/top-test", {}) for _ in range(20)])
            await asyncio.sleep(0.05)

    mesh._feeder = asyncio.get_running_loop().create_task(loop())


@mesh.on(TYPE, group=os.environ["TOP_GROUP"])
async def {handler}(event: Event) -> None:
    await asyncio.sleep(0.001)
"""


def test_mesh_top_shows_a_running_app_in_a_terminal(tmp_path: Path) -> None:
    url = brokers.ensure_or_skip("nats")
    tag = uuid.uuid4().hex[:8]
    handler = f"topworker{tag}"
    (tmp_path / "app.py").write_text(APP.replace("{handler}", handler))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TOP_TYPE": f"toptest{tag}.job",
        "TOP_GROUP": f"toptest{tag}",
        "MESH_STATS__ENABLED": "true",
        "MESH_STATS__INTERVAL": "0.5",
        "MESH_CAPABILITIES__ENABLED": "false",
    }
    app = subprocess.Popen(
        [sys.executable, "-m", "mesh", "run", "app.py", "--transport", url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    primary, secondary = pty.openpty()
    viewer = subprocess.Popen(
        [sys.executable, "-m", "mesh", "top", "--transport", url, "--interval", "0.5"],
        cwd=tmp_path,
        env={**env, "MESH_STATS__ENABLED": "false", "COLUMNS": "160", "LINES": "40"},
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        found = None
        while time.monotonic() < deadline and viewer.poll() is None:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(primary, 65536)
                except OSError:
                    break
            text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", screen).decode(errors="replace")
            rates = [
                float(m.group(1))
                for m in re.finditer(rf"{handler}[^\n]*?│\s*\S+\s*│\s*\d+\s*│\s*(\d+\.\d)", text)
            ]
            if any(rate > 0 for rate in rates):
                found = rates
                break
        assert found, f"no non-zero rate for {handler} in:\n{text[-4000:]}"
        viewer.send_signal(signal.SIGINT)
        assert viewer.wait(30) == 0
    finally:
        for proc in (viewer, app):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        os.close(primary)
