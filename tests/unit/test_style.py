"""The tree is formatted and linted as the project's ruff settings say (CI runs this)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    return [found]


@pytest.mark.parametrize(
    "args", [["format", "--check"], ["check"]], ids=["ruff format --check", "ruff check"]
)
def test_ruff(args: list[str]) -> None:
    done = subprocess.run(
        [*_ruff(), *args, "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"ruff {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
