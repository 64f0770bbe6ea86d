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

The plugin is loaded into every pytest run of a project that has event-mesh
installed, so it must not need more than pytest itself: ``memory_mesh`` is an async
fixture and needs pytest-asyncio, which is imported only if it is installed (without
it, asking for the fixture fails with what to install).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from mesh.app import Mesh

try:
    import pytest_asyncio
except ImportError:  # pytest without pytest-asyncio: every other test must still run
    pytest_asyncio = None  # type: ignore[assignment]

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


async def _memory_mesh() -> AsyncIterator[Mesh]:
    """A started Mesh on a private memory broker, stopped after the test."""
    mesh = _new_mesh()
    await mesh.start()
    try:
        yield mesh
    finally:
        await mesh.stop()


if pytest_asyncio is not None:
    memory_mesh = pytest_asyncio.fixture(_memory_mesh, name="memory_mesh")
else:

    @pytest.fixture(name="memory_mesh")
    def _memory_mesh_needs_pytest_asyncio() -> Any:
        pytest.fail(
            "the memory_mesh fixture is async: pip install pytest-asyncio "
            "(and mark the test with @pytest.mark.asyncio or set asyncio_mode=auto)"
        )
