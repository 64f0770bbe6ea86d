"""Entry point (group ``mesh``): registers the ``nats://`` scheme."""

from __future__ import annotations

from mesh import TransportRegistry, hookimpl
from mesh_nats.transport import NatsTransport, create


@hookimpl
def mesh_register_transports(registry: TransportRegistry) -> None:
    registry.register(
        "nats",
        create,
        description="NATS JetStream (nats-py): durable pull consumers per group",
        transport=NatsTransport,
    )
