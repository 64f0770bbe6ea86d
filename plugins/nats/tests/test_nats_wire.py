"""What the NATS plugin owns about its wire (no broker): subject filters that match
exactly what the neutral patterns match, its `WireFormat`, and what the AsyncAPI
document of a ``nats://`` app says because of it."""

from __future__ import annotations

import pytest
from mesh_nats import NatsTransport, parse
from mesh_nats.binding import CE_PREFIX

from mesh import Event, Mesh, MeshConfig, plugins
from mesh.asyncapi import asyncapi_document
from mesh.testing.patterns import check_translation


def nats_matches(filter_subject: str, subject: str) -> bool:
    """The NATS server's rule: ``*`` matches one token, a final ``>`` one or more."""
    wanted, tokens = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or token not in ("*", tokens[i]):
            return False
    return len(tokens) == len(wanted)


@pytest.mark.parametrize("prefix", ["mesh", "prod.mesh"])
def test_subject_filters_match_exactly_what_the_neutral_pattern_matches(prefix: str) -> None:
    config = parse("nats://h:4222", {"subject_prefix": prefix})
    check_translation(
        config.subject, lambda native, channel: nats_matches(native, config.subject(channel))
    )
    assert config.subject("orders.>") == f"{prefix}.orders.>"
    assert config.channel(config.subject("orders.created")) == "orders.created"


def test_the_registry_knows_the_wire_format_without_connecting() -> None:
    wire = plugins.transport_registry().wire_format("nats://h:4222")
    assert wire is NatsTransport.wire
    assert (wire.protocol, wire.header_prefix, wire.title) == ("nats", CE_PREFIX, "NATS JetStream")


def test_asyncapi_document_of_a_nats_app() -> None:
    app = Mesh(config=MeshConfig.load(transport="nats://alice:s3cret@broker:4222?stream=S"))

    @app.on("orders.created", group="billing")
    async def bill(event: Event) -> None: ...

    document = asyncapi_document(app)
    assert document["servers"] == {
        "nats": {"host": "broker:4222", "protocol": "nats", "title": "NATS JetStream"}
    }
    headers = document["components"]["schemas"]["CloudEventHeaders"]
    assert "ce-type" in headers["properties"]
    assert "NATS protocol binding" in headers["description"]
    assert "s3cret" not in str(document)
