"""What the Kafka plugin owns about its wire (no broker): topic subscriptions that
match exactly what the neutral patterns match, its `WireFormat` (``ce_`` headers), and
what the AsyncAPI document of a ``kafka://`` app says because of it."""

from __future__ import annotations

import re
from typing import Any

from mesh_kafka.naming import subscription_for
from mesh_kafka.transport import KafkaTransport

from mesh import Context, Event, Mesh, MeshConfig, plugins
from mesh.asyncapi import asyncapi_document
from mesh.testing.patterns import check_translation


def librdkafka_matches(subscription: str, topic: str) -> bool:
    """librdkafka's rule: a subscription starting with ``^`` is a regex searched in the
    topic name; anything else is the topic name itself."""
    if subscription.startswith("^"):
        return re.search(subscription, topic) is not None
    return subscription == topic


def test_subscriptions_match_exactly_what_the_neutral_pattern_matches() -> None:
    check_translation(subscription_for, librdkafka_matches)
    assert subscription_for("orders.created") == "orders.created"
    assert subscription_for("orders.*") == r"^orders\.[^.]+$"
    assert subscription_for("orders.>") == r"^orders\..+$"


def test_the_registry_knows_the_wire_format_without_connecting() -> None:
    wire = plugins.transport_registry().wire_format("kafka://k1:9092,k2:9092")
    assert wire is KafkaTransport.wire
    assert (wire.protocol, wire.header_prefix, wire.title) == ("kafka", "ce_", "Apache Kafka")


def test_asyncapi_document_of_a_kafka_app() -> None:
    app = Mesh(config=MeshConfig.load(transport="kafka://svc:s3cret@k1:9092,k2:9092"))

    @app.capability("echo")
    async def echo(event: Event, ctx: Context) -> Any:
        return event.data

    document = asyncapi_document(app)
    assert document["servers"] == {
        "kafka": {"host": "k1:9092,k2:9092", "protocol": "kafka", "title": "Apache Kafka"}
    }
    headers = document["components"]["schemas"]["CloudEventHeaders"]
    assert "ce_type" in headers["properties"] and "ce-type" not in headers["properties"]
    assert "Kafka protocol binding (`ce_` headers)" in headers["description"]
    request = document["components"]["messages"]["mesh.request.echo"]
    assert request["headers"]["allOf"][1]["required"] == ["ce_meshreplyto"]
    reply = document["channels"]["mesh.reply"]  # one replies topic shared by every instance
    assert reply["address"] == "mesh.replies" and "parameters" not in reply
    assert "s3cret" not in str(document)
