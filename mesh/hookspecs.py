"""The pluggy hooks a plugin may implement.

Plugins are modules (or objects) found through the entry-point group ``mesh``
and implement hooks decorated with `hookimpl`::

    # pyproject.toml of your plugin
    [project.entry-points.mesh]
    mytransport = "my_package.plugin"

    # my_package/plugin.py
    from mesh import hookimpl

    @hookimpl
    def mesh_register_transports(registry):
        registry.register(
            "mine", MyTransport.from_url, description="my broker", transport=MyTransport
        )

Each hook hands the plugin a registry object instead of asking it to return
values, so a plugin can register several things and the mesh can report
conflicts clearly. The built-in memory transport and stores register through the
same hooks. Every hook here is documented in docs/plugins.md and exercised in
tests/unit/test_plugins.py (a test checks both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mesh.stores import StoreRegistry
    from mesh.transport import TransportRegistry

PROJECT = "mesh"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mesh_register_transports(registry: TransportRegistry) -> None:
    """Register transports by URL scheme: ``registry.register(scheme, factory)``.

    ``factory(url, options)`` returns an unconnected `mesh.Transport`; pass
    ``transport=`` (the class it builds) unless the factory is that class, so tools find
    its `mesh.WireFormat` by scheme (`TransportRegistry.wire_format`).
    """


@hookspec
def mesh_register_stores(registry: StoreRegistry) -> None:
    """Register idempotency stores by URL scheme: ``registry.register(scheme, factory)``.

    ``factory(url)`` returns a `mesh.IdempotencyStore`; the mesh picks one from
    ``idempotency.store`` in the config (``memory://``, ``sqlite:///path.db``).
    """
