"""pytest plugin (entry point ``pytest11``): fixtures for testing mesh apps.

``memory_mesh`` is a started `Mesh` on a private in-memory broker with fast
retries (so a failing handler reaches the dead-letter channel in milliseconds);
register handlers on ``memory_mesh_factory()`` before starting when a test
needs its own handlers::

    async def test_planner(memory_mesh_factory):
        mesh = memory_mesh_factory()
        @mesh.on("task.created", group="planner")
        async def plan(event, ctx): ...
        async with mesh:
            await mesh.publish(...)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from mesh.app import Mesh

FAST_RETRY = {"max_attempts": 3, "initial_backoff": 0.001, "max_backoff": 0.01}


def _new_mesh(**config: Any) -> Mesh:
    config.setdefault("retry", FAST_RETRY)
    config.setdefault("shutdown_timeout", 1.0)
    config.setdefault("source", "/test")
    return Mesh("memory://", **config)


@pytest.fixture
def memory_mesh_factory() -> Iterator[Callable[..., Mesh]]:
    """Build unstarted memory meshes (``**config`` overrides MeshConfig fields)."""
    yield _new_mesh


@pytest_asyncio.fixture
async def memory_mesh() -> AsyncIterator[Mesh]:
    """A started Mesh on a private memory broker, stopped after the test."""
    mesh = _new_mesh()
    await mesh.start()
    try:
        yield mesh
    finally:
        await mesh.stop()
