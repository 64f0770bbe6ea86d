"""Plugins: hooks, registries, and the rule that every hook is tested and documented."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pluggy
import pytest

from mesh import (
    ConfigError,
    Transport,
    TransportRegistry,
    WireFormat,
    hookimpl,
    hookspecs,
    plugins,
)
from mesh.stores import MemoryIdempotencyStore, SQLiteIdempotencyStore, StoreRegistry
from mesh.transports.memory import MemoryTransport

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(
    name
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("mesh_")
)


def test_hooks_are_the_known_set() -> None:
    assert HOOKS == ["mesh_register_stores", "mesh_register_transports"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    assert hook in (ROOT / "docs" / "plugins.md").read_text(), f"document {hook} in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_tested_here(hook: str) -> None:
    source = Path(__file__).read_text()
    assert source.count(f"def {hook}(") >= 1, f"add a test plugin implementing {hook}"


def test_builtins_register_through_the_hooks() -> None:
    pm = plugins.plugin_manager()
    names = {type(p).__name__ if not inspect.ismodule(p) else p.__name__ for p in pm.get_plugins()}
    assert "mesh.transports.memory" in names and "mesh.stores" in names
    assert "memory" in plugins.transport_registry().schemes
    assert {"memory", "sqlite"} <= set(plugins.store_registry().schemes)


class _ThirdParty:
    """A plugin object as a third party would write it."""

    @hookimpl
    def mesh_register_transports(self, registry: TransportRegistry) -> None:
        def factory(url: str, options: Mapping[str, Any]) -> Transport:
            return MemoryTransport("memory://", options)

        registry.register("fake", factory, description="a test transport")

    @hookimpl
    def mesh_register_stores(self, registry: StoreRegistry) -> None:
        registry.register("fakestore", lambda url: MemoryIdempotencyStore(max_entries=1))


def test_third_party_plugin_registers_transport_and_store() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_ThirdParty())
    transports, stores = TransportRegistry(), StoreRegistry()
    pm.hook.mesh_register_transports(registry=transports)
    pm.hook.mesh_register_stores(registry=stores)
    assert isinstance(transports.create("fake://x"), MemoryTransport)
    assert transports.describe() == {"fake": "a test transport"}
    assert isinstance(stores.create("fakestore://"), MemoryIdempotencyStore)


class _Declared(MemoryTransport):
    schemes = ("declared",)
    wire = WireFormat(title="Declared", protocol="decl", header_prefix="d_")

    @classmethod
    def wire_format(cls, url: str, options: Mapping[str, Any]) -> WireFormat:
        if options.get("tls"):
            return replace(cls.wire, protocol="decls")
        return cls.wire


def test_the_registry_reports_what_a_transport_declares_without_building_it() -> None:
    built: list[str] = []

    def factory(url: str, options: Mapping[str, Any]) -> Transport:
        built.append(url)
        return _Declared()

    registry = TransportRegistry()
    registry.register("declared", _Declared)  # the class is the factory: inferred
    registry.register("viafactory", factory, transport=_Declared)
    registry.register("bare", factory)  # no class known: the defaults
    assert registry.wire_format("declared://h") is _Declared.wire
    assert registry.wire_format("DECLARED://h", {"tls": True}).protocol == "decls"
    assert registry.wire_format("viafactory://h").header_prefix == "d_"
    assert registry.wire_format("bare://h") == WireFormat()
    assert WireFormat().header_prefix == "ce-" and WireFormat().protocol is None
    assert MemoryTransport.wire.protocol == "memory"
    assert not built, "wire_format builds no transport"
    with pytest.raises(ConfigError, match="Did you mean 'declared://'"):
        registry.wire_format("declare://h")
    with pytest.raises(ConfigError, match="transport= must be the Transport subclass"):
        registry.register("odd", factory, transport=object)  # type: ignore[arg-type]


def test_registry_errors() -> None:
    registry = TransportRegistry()
    registry.register("memory", MemoryTransport)
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register("memory", MemoryTransport)
    with pytest.raises(ConfigError, match="has no scheme"):
        registry.create("localhost:4222")
    with pytest.raises(ConfigError, match="Did you mean 'memory://'"):
        registry.create("mem://")
    with pytest.raises(ConfigError, match="Installed schemes: memory://"):
        registry.create("zzzz://")
    stores = plugins.store_registry()
    with pytest.raises(ConfigError, match="sqlite:///"):
        stores.create("redis://")
    assert isinstance(stores.create("sqlite:///tmp/x.db"), SQLiteIdempotencyStore)


def test_pytest_plugin_works_without_pytest_asyncio(tmp_path: Path) -> None:
    """Issue 10 item 26: the ``pytest11`` entry point is loaded in every project that has
    event-mesh installed; without pytest-asyncio their pytest must still pass (it exited
    with status 3), and asking for the async fixture says what to install. A package
    that fails to import, first on PYTHONPATH, stands in for a missing pytest-asyncio."""
    import os
    import subprocess
    import sys

    shadow = tmp_path / "shadow" / "pytest_asyncio"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named pytest_asyncio')\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_theirs.py").write_text(
        "def test_plain():\n    assert 1 + 1 == 2\n\n"
        "def test_wants_memory_mesh(memory_mesh):\n    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}

    def pytest_run(selected: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:asyncio",
                "-p",
                "no:cacheprovider",
                "-k",
                selected,
            ],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    plain = pytest_run("plain")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    wanted = pytest_run("memory_mesh")
    assert wanted.returncode == 1 and "pip install pytest-asyncio" in wanted.stdout
