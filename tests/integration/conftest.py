"""Markers of the integration tests (registered here; pyproject lists the project-wide ones)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "benchmark: runs the benchmark harness in smoke mode (deselect with -m 'not benchmark')",
    )
