"""Loads plugins from the ``mesh`` entry-point group and builds the registries.

The built-in modules are registered by the same hooks as third-party plugins;
they are added directly only when the distribution's own entry points are not
installed (running from a source tree).
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType

import pluggy

from mesh import hookspecs
from mesh.stores import StoreRegistry
from mesh.transport import TransportRegistry

_BUILTINS = ("mesh.transports.memory", "mesh.stores")


def _builtin_modules() -> list[ModuleType]:
    import importlib

    return [importlib.import_module(name) for name in _BUILTINS]


@lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (entry points are loaded once)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    for module in _builtin_modules():
        if not pm.is_registered(module):
            pm.register(module)
    return pm


def transport_registry() -> TransportRegistry:
    """A registry filled by every plugin's ``mesh_register_transports``."""
    registry = TransportRegistry()
    plugin_manager().hook.mesh_register_transports(registry=registry)
    return registry


def store_registry() -> StoreRegistry:
    """A registry filled by every plugin's ``mesh_register_stores``."""
    registry = StoreRegistry()
    plugin_manager().hook.mesh_register_stores(registry=registry)
    return registry
