"""NATS JetStream transport for event-mesh: ``Mesh(transport="nats://localhost:4222")``.

Installed as the ``event-mesh-nats`` distribution; the mesh finds it through the
``mesh`` entry-point group. `binding` is the CloudEvents NATS protocol binding,
usable on its own with any NATS client.
"""

from mesh_nats.binding import NATSMessage
from mesh_nats.config import NatsConfig, parse
from mesh_nats.transport import NatsTransport, NatsTransportWithoutDedup, create

__all__ = [
    "NATSMessage",
    "NatsConfig",
    "NatsTransport",
    "NatsTransportWithoutDedup",
    "create",
    "parse",
]
