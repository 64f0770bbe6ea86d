"""Interop: what the mesh writes to RabbitMQ is what the official CloudEvents SDK reads,
and the other way round (binary and structured content modes).

The raw side uses only aio-pika and ``cloudevents.core.bindings.rabbitmq`` with the
SDK's own ``CloudEvent`` and ``JSONFormat`` -- no mesh code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
import pytest_asyncio
from cloudevents.core.bindings import amqp, rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from mesh_rabbitmq import RabbitMQTransport

from mesh import Event, Mesh
from mesh.testing import brokers
from mesh.testing.util import uid, wait_until

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def url() -> str:
    return brokers.ensure_or_skip("rabbitmq")


@pytest_asyncio.fixture
async def names(url: str) -> AsyncIterator[str]:
    prefix = f"interop{uid()}"
    yield prefix
    transport = RabbitMQTransport(url, {})
    await transport.delete_channels(f"{prefix}.>")


async def raw_channel(
    url: str,
) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractChannel]:
    conn = await aio_pika.connect(url)
    return conn, await conn.channel()


async def test_mesh_publish_is_read_by_the_sdk_binding(url: str, names: str) -> None:
    channel = f"{names}.order.created"
    sent = Event(
        channel,
        "https://shop.example/orders?x=1",
        {"total": 9.5, "items": ["a"]},
        id=f"id-{uid()}",
        subject="order/7",
        dataschema="https://s.example/o.json",
        time=datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        correlationid="corr-1",
        partitionkey="order-7",
        meshhops=2,
        custom="spaces and: colons",
    )
    async with Mesh(url, dead_letter_channel=f"{names}.deadletter") as mesh:
        conn, ch = await raw_channel(url)
        try:
            queue = await ch.declare_queue(exclusive=True)
            await queue.bind("mesh", channel)
            await mesh.publish(sent)
            message = await queue.get(timeout=10, fail=True)
            assert message is not None
            await message.ack()
        finally:
            await conn.close()
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers["ce-id"] == sent.id and message.headers["ce-specversion"] == "1.0"
    assert message.content_type is None  # binary mode; no datacontenttype means JSON
    wire = rabbitmq.RabbitMQMessage(
        headers=dict(message.headers),  # type: ignore[arg-type]
        content_type=message.content_type,
        body=message.body,
    )
    got = rabbitmq.from_rabbitmq(wire, JSONFormat(), CloudEvent)
    assert got.get_data() == sent.data
    assert got.get_time() == sent.time
    expected = {k: (v if k == "time" else str(v)) for k, v in sent.get_attributes().items()}
    assert {k: (v if k == "time" else str(v)) for k, v in got.get_attributes().items()} == expected


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_sdk_written_message_reaches_a_mesh_handler(url: str, names: str, mode: str) -> None:
    channel = f"{names}.sensor.read"
    received: list[Event] = []
    mesh = Mesh(url, dead_letter_channel=f"{names}.deadletter")

    @mesh.on(channel, group=f"{names}-readers")
    async def read(event: Event) -> None:
        received.append(event)

    sdk_event = CloudEvent(
        {
            "type": channel,
            "source": "/sensors/7",
            "id": f"sdk-{uid()}",
            "subject": "t1",
            "datacontenttype": "application/json",
            "correlationid": "c-9",
        },
        {"celsius": 21.5},
    )
    to_wire: Any = rabbitmq.to_binary if mode == "binary" else rabbitmq.to_structured
    wire = to_wire(sdk_event, JSONFormat())
    async with mesh:
        conn, ch = await raw_channel(url)
        try:
            exchange = await ch.get_exchange("mesh")
            await exchange.publish(
                aio_pika.Message(wire.body, headers=wire.headers, content_type=wire.content_type),
                channel,
            )
        finally:
            await conn.close()
        await wait_until(lambda: len(received) == 1, 15, "the SDK-written event")
        await asyncio.sleep(0.2)
    event = received[0]
    assert (event.id, event.type, event.source, event.subject) == (
        sdk_event.get_id(),
        channel,
        "/sensors/7",
        "t1",
    )
    assert event.data == {"celsius": 21.5}
    assert event.correlationid == "c-9"
    assert event.time == sdk_event.get_time()
    assert mesh.stats("read").handled == 1


# --- issue 10 items 12 and 14: canonical values, and the CloudEvents AMQP binding -------


def _sdk_event(channel: str) -> CloudEvent:
    return CloudEvent(
        {
            "type": channel,
            "source": "/sensors/8",
            "id": f"sdk-{uid()}",
            "subject": "t2",
            "datacontenttype": "application/json",
            "time": datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
            "correlationid": "c-10",
            "urgent": True,
            "retries": 5,
        },
        {"celsius": 19.0},
    )


@pytest.mark.parametrize("prefix", ["cloudEvents_", "cloudEvents:"])
@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_sdk_amqp_binding_message_reaches_a_mesh_handler(
    url: str, names: str, mode: str, prefix: str
) -> None:
    """Item 14: what the Java/Go/.NET AMQP bindings and the Python SDK's ``bindings.amqp``
    write (application properties, native AMQP types: time as epoch milliseconds, a bool,
    an int) is read, with either prefix the spec allows."""
    channel = f"{names}.sensor.amqp"
    received: list[Event] = []
    mesh = Mesh(url, dead_letter_channel=f"{names}.deadletter")

    @mesh.on(channel, group=f"{names}-readers")
    async def read(event: Event) -> None:
        received.append(event)

    sdk_event = _sdk_event(channel)
    to_wire: Any = amqp.to_binary if mode == "binary" else amqp.to_structured
    wire = to_wire(sdk_event, JSONFormat())
    headers = {
        prefix + name.removeprefix(amqp.CE_PREFIX_UNDERSCORE): value
        for name, value in wire.application_properties.items()
    }
    if mode == "binary":
        assert isinstance(headers[f"{prefix}time"], int)  # the SDK's native timestamp
    async with mesh:
        conn, ch = await raw_channel(url)
        try:
            exchange = await ch.get_exchange("mesh")
            await exchange.publish(
                aio_pika.Message(
                    wire.application_data,
                    headers=headers,
                    content_type=wire.properties.get(amqp.CONTENT_TYPE_PROPERTY),
                ),
                channel,
            )
        finally:
            await conn.close()
        await wait_until(lambda: len(received) == 1, 15, "the SDK-written event")
        await asyncio.sleep(0.2)
    event = received[0]
    assert (event.id, event.type, event.source, event.subject) == (
        sdk_event.get_id(),
        channel,
        "/sensors/8",
        "t2",
    )
    assert event.data == {"celsius": 19.0}
    assert event.time == sdk_event.get_time()
    assert event.correlationid == "c-10"
    if mode == "binary":  # native AMQP values arrive in their canonical string form
        assert (event.extensions["urgent"], event.extensions["retries"]) == ("true", "5")
    assert mesh.stats("read").handled == 1


@pytest.mark.parametrize("prefix", [None, "cloudEvents:"])
async def test_mesh_amqp_binding_is_read_by_the_sdk(
    url: str, names: str, prefix: str | None
) -> None:
    """Item 14: with ``binding=amqp`` the mesh writes application properties the SDK's
    ``bindings.amqp`` (and the other AMQP bindings) read; item 12: in canonical form."""
    channel = f"{names}.order.amqp"
    options: dict[str, Any] = {"binding": "amqp"}
    if prefix is not None:
        options["amqp_prefix"] = prefix
    sent = Event(
        channel,
        "/shop",
        {"total": 3},
        id=f"id-{uid()}",
        subject="o/1",
        time=datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        urgent=True,
        meshhops=1,
        datacontenttype="application/json",
    )
    async with Mesh(
        url, dead_letter_channel=f"{names}.deadletter", transport_options=options
    ) as mesh:
        conn, ch = await raw_channel(url)
        try:
            queue = await ch.declare_queue(exclusive=True)
            await queue.bind("mesh", channel)
            await mesh.publish(sent)
            message = await queue.get(timeout=10, fail=True)
            assert message is not None
            await message.ack()
        finally:
            await conn.close()
    want = prefix or "cloudEvents_"
    assert set(message.headers) == {
        want + name
        for name in ("id", "source", "type", "specversion", "subject", "time", "urgent", "meshhops")
    }
    assert message.content_type == "application/json"
    assert message.headers[f"{want}urgent"] == "true"
    wire = amqp.AMQPMessage(
        properties={amqp.CONTENT_TYPE_PROPERTY: message.content_type},
        application_properties=dict(message.headers),
        application_data=message.body,
    )
    got = amqp.from_binary(wire, JSONFormat(), CloudEvent)
    assert (got.get_id(), got.get_type(), got.get_subject()) == (sent.id, channel, "o/1")
    assert got.get_time() == sent.time and got.get_data() == {"total": 3}
    assert got.get_extension("urgent") == "true" and got.get_extension("meshhops") == "1"


async def test_mesh_ce_headers_are_canonical_for_the_sdk(url: str, names: str) -> None:
    """Item 12: the default ``ce-`` convention writes booleans as true/false."""
    channel = f"{names}.flag.set"
    sent = Event(channel, "/t", {"x": 1}, urgent=True, calm=False, retries=2)
    async with Mesh(url, dead_letter_channel=f"{names}.deadletter") as mesh:
        conn, ch = await raw_channel(url)
        try:
            queue = await ch.declare_queue(exclusive=True)
            await queue.bind("mesh", channel)
            await mesh.publish(sent)
            message = await queue.get(timeout=10, fail=True)
            assert message is not None
            await message.ack()
        finally:
            await conn.close()
    wire = rabbitmq.RabbitMQMessage(
        headers=dict(message.headers),  # type: ignore[arg-type]
        content_type=message.content_type,
        body=message.body,
    )
    got = rabbitmq.from_rabbitmq(wire, JSONFormat(), CloudEvent)
    assert (
        got.get_extension("urgent"),
        got.get_extension("calm"),
        got.get_extension("retries"),
    ) == ("true", "false", "2")
