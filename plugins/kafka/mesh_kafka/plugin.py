"""Registers ``kafka://`` with the mesh (entry point group ``mesh``)."""

from __future__ import annotations

from mesh import TransportRegistry, hookimpl
from mesh_kafka.transport import KafkaTransport


@hookimpl
def mesh_register_transports(registry: TransportRegistry) -> None:
    registry.register(
        "kafka",
        KafkaTransport,
        description="Apache Kafka (confluent-kafka): consumer groups, per-key "
        "order, topic regex patterns",
    )
