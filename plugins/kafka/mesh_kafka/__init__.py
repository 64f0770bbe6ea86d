"""Kafka transport for event-mesh: ``kafka://host:9092[,host2:9092]`` (confluent-kafka)."""

from mesh_kafka.config import KafkaConfig
from mesh_kafka.transport import KafkaTransport

__all__ = ["KafkaConfig", "KafkaTransport"]
