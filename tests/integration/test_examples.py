"""The examples run as users run them: a subprocess, stdout piped (so plain output).

They are documentation that executes; a change that breaks one should fail here,
not in front of a reader.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=REPO)


def test_research_swarm_recovers_the_crashed_task_on_another_worker() -> None:
    proc = run_example("research_swarm.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\x1b[" not in out, "piped output must be plain lines, not terminal codes"

    recovered = re.search(r"task (\d+) crashed on (worker-\d+), redelivered, completed by "
                          r"(worker-\d+)", out)
    assert recovered is not None, out
    task, crashed_on, completed_by = recovered.groups()
    assert crashed_on != completed_by
    assert f"task {task} redelivered to {completed_by}" in out
    assert re.search(rf"^  {task}\. .*\[{completed_by}\]$", out, re.MULTILINE), out

    sections = re.findall(r"^  (\d)\. .*\[(worker-\d+)\]$", out, re.MULTILINE)
    assert [index for index, _ in sections] == ["1", "2", "3", "4", "5", "6"]
    after_crash = out[out.index(f"task {task} crashed on {crashed_on}:"):]
    assert f"started on {crashed_on}" not in after_crash, "a crashed worker takes no more"


def test_research_swarm_with_one_worker_does_not_crash() -> None:
    proc = run_example("research_swarm.py", "--workers", "1", "--question", "Why queues?")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REPORT: Why queues?" in proc.stdout
    assert "no crash this run" in proc.stdout


def test_research_swarm_reports_a_bad_transport() -> None:
    proc = run_example("research_swarm.py", "--transport", "memry://user:secret@host")
    assert proc.returncode == 1
    assert "Did you mean 'memory://'?" in proc.stderr
    assert "secret" not in proc.stdout + proc.stderr
