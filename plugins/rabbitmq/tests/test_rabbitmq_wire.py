"""What the RabbitMQ plugin owns about its wire (no broker): binding keys that match
exactly what the neutral patterns match, its `WireFormat` (per scheme and header
convention), what the AsyncAPI document of an ``amqp://`` app says because of it, and
how client errors are reported."""

from __future__ import annotations

import json

import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed
from mesh_rabbitmq.topology import binding_key
from mesh_rabbitmq.transport import RabbitMQTransport

from mesh import ConfigError, ConnectError, Event, Mesh, MeshConfig, plugins
from mesh.asyncapi import asyncapi_document
from mesh.testing.patterns import check_translation


def topic_exchange_matches(key: str, routing_key: str) -> bool:
    """RabbitMQ's topic exchange rule: ``*`` is exactly one word, ``#`` zero or more."""

    def match(k: list[str], r: list[str]) -> bool:
        if not k:
            return not r
        if k[0] == "#":
            return any(match(k[1:], r[i:]) for i in range(len(r) + 1))
        return bool(r) and k[0] in ("*", r[0]) and match(k[1:], r[1:])

    return match(key.split("."), routing_key.split("."))


def test_binding_keys_match_exactly_what_the_neutral_pattern_matches() -> None:
    check_translation(binding_key, topic_exchange_matches)
    assert binding_key("a.*.c") == "a.*.c"
    assert binding_key("a.>") == "a.*.#"  # one or more, never the parent 'a' itself
    with pytest.raises(ConfigError, match="'#' is not a mesh wildcard"):
        binding_key("a.#")


@pytest.mark.parametrize(
    ("url", "options", "protocol", "title", "prefix"),
    [
        ("amqp://guest:guest@rabbit:5672/", {}, "amqp", "RabbitMQ", "ce-"),
        ("amqps://guest:guest@rabbit:5671/", {}, "amqps", "RabbitMQ (TLS)", "ce-"),
        ("amqp://rabbit/", {"binding": "amqp"}, "amqp", "RabbitMQ", "cloudEvents_"),
        (
            "amqps://rabbit/?binding=amqp&amqp_prefix=cloudEvents:",
            {},
            "amqps",
            "RabbitMQ (TLS)",
            "cloudEvents:",
        ),
    ],
)
def test_the_wire_format_follows_the_scheme_and_the_header_convention(
    url: str, options: dict[str, str], protocol: str, title: str, prefix: str
) -> None:
    wire = plugins.transport_registry().wire_format(url, options)
    assert (wire.protocol, wire.protocol_version, wire.title) == (protocol, "0.9.1", title)
    assert wire.header_prefix == prefix == RabbitMQTransport(url, options).config.header_prefix
    assert f"`{prefix}`" in wire.binding


def test_the_wire_format_refuses_options_the_transport_refuses() -> None:
    with pytest.raises(ConfigError, match="amqp_prefix"):
        RabbitMQTransport.wire_format("amqp://rabbit/", {"amqp_prefix": "cloudEvents:"})


@pytest.mark.parametrize(
    ("url", "options", "server", "prefix"),
    [
        (
            "amqp://guest:s3cret@rabbit:5672/prod?heartbeat=5",
            {},
            {
                "host": "rabbit:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "title": "RabbitMQ",
                "pathname": "/prod",
            },
            "ce-",
        ),
        (
            "amqps://guest:s3cret@rabbit:5671/",
            {"binding": "amqp"},
            {
                "host": "rabbit:5671",
                "protocol": "amqps",
                "protocolVersion": "0.9.1",
                "title": "RabbitMQ (TLS)",
            },
            "cloudEvents_",
        ),
    ],
)
def test_asyncapi_document_of_a_rabbitmq_app(
    url: str, options: dict[str, str], server: dict[str, str], prefix: str
) -> None:
    app = Mesh(config=MeshConfig.load(transport=url, transport_options=options))

    @app.on("orders.created", group="billing")
    async def bill(event: Event) -> None: ...

    document = asyncapi_document(app)
    assert list(document["servers"].values()) == [server]
    headers = document["components"]["schemas"]["CloudEventHeaders"]
    assert f"{prefix}type" in headers["properties"]
    assert headers["required"][0] == f"{prefix}specversion"
    assert "s3cret" not in json.dumps(document) and "guest" not in json.dumps(document)


def test_client_errors_become_one_connect_error_without_the_password() -> None:
    """`_failing`: a client error is a `ConnectError` naming the step and the broker
    (password scrubbed, no chained client exception shown), a timeout says the broker
    did not answer, and mesh errors pass unchanged."""
    transport = RabbitMQTransport("amqp://guest:s3cret-pw@localhost:5672/", {})
    with pytest.raises(ConnectError) as info:
        with transport._failing("deleting queues"):
            raise OSError("auth failed for s3cret-pw")
    text = str(info.value)
    assert text.startswith("deleting queues on RabbitMQ at amqp://guest:***@localhost:5672/")
    assert "s3cret-pw" not in text and text.endswith("; retry")
    assert info.value.__suppress_context__
    with pytest.raises(ConnectError, match="did not answer while reading stream queue 'q'"):
        with transport._failing("reading stream queue 'q'", "read again"):
            raise TimeoutError
    with pytest.raises(ConfigError, match="as it was"):
        with transport._failing("opening a channel"):
            raise ConfigError("as it was")


def test_refused_declarations_say_what_to_do() -> None:
    """`_failing` on a declaration: a queue that exists with other settings is a
    `ConfigError` (delete it or choose another name), missing permissions a
    `ConnectError` naming the user, the vhost and the command that grants them."""
    transport = RabbitMQTransport("amqp://ann:s3cret-pw@localhost:5672/prod", {})
    with pytest.raises(ConfigError) as info:
        with transport._failing("declaring queue 'q'"):
            raise ChannelPreconditionFailed("PRECONDITION_FAILED - s3cret-pw durable")
    text = str(info.value)
    assert text.startswith("declaring queue 'q' on RabbitMQ at amqp://ann:***@localhost")
    assert "other settings" in text and "choose another name" in text
    assert "s3cret-pw" not in text
    with pytest.raises(ConnectError) as refused:
        with transport._failing("declaring queue 'q'"):
            raise ChannelAccessRefused("ACCESS_REFUSED")
    text = str(refused.value)
    assert "user 'ann'" in text and "vhost 'prod'" in text and "set_permissions" in text
