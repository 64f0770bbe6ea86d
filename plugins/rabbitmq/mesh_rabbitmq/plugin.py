"""Entry point of the ``mesh`` plugin group: registers ``amqp://`` and ``amqps://``."""

from __future__ import annotations

from mesh import TransportRegistry, hookimpl
from mesh_rabbitmq.transport import RabbitMQTransport


@hookimpl
def mesh_register_transports(registry: TransportRegistry) -> None:
    for scheme in RabbitMQTransport.schemes:
        registry.register(
            scheme,
            RabbitMQTransport,
            description="RabbitMQ (aio-pika): topic exchange, quorum queues"
            + (", TLS" if scheme == "amqps" else ""),
        )
