"""Interop with plain Kafka clients and the official CloudEvents SDK Kafka binding.

Mesh -> raw: an event published through a `Mesh` on ``kafka://`` is read with a plain
confluent-kafka consumer and decoded with ``cloudevents.core.bindings.kafka`` (the
SDK's own event class and JSON format): every attribute and the data are equal.
Every attribute is on the wire in its CloudEvents canonical string form (Boolean
``true``/``false``, decimal Integer, RFC 3339 ``Z`` Timestamp), so the SDK (and a
consumer in any language) reads the same text a filter on another transport sees.
Raw -> mesh: records written with the SDK binding, in binary and in structured
content mode, reach a mesh handler intact; a structured-mode record that also carries
``ce_`` headers (a proxy or an interceptor added them) is read from its value, because
the ``content-type`` decides the mode.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, UTC
from typing import Any

import pytest
from cloudevents.core.bindings import kafka
from cloudevents.core.bindings.kafka import KafkaMessage
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from mesh import Event, Mesh
from mesh.testing import brokers
from mesh.testing.util import wait_until

pytestmark = pytest.mark.broker

OPTIONS: dict[str, Any] = {
    "consumer_config": {
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 20,
        "topic.metadata.refresh.interval.ms": 500,
    },
}
SENT_TIME = datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def url() -> str:
    return brokers.ensure_or_skip("kafka")


@pytest.fixture
async def mesh(url: str) -> Any:
    prefix = f"interop{uuid.uuid4().hex[:10]}"
    app = Mesh(
        url,
        transport_options=OPTIONS,
        source="/interop",
        dead_letter_channel=f"{prefix}.deadletter",
    )
    app.prefix = prefix  # type: ignore[attr-defined]
    yield app
    await app.stop(timeout=1)
    await app.transport.connect()
    await app.transport.delete_channels(f"{prefix}.>")
    await app.transport.close()


def _bootstrap(url: str) -> str:
    return url.split("://", 1)[1].split("?", 1)[0]


def _read_one(url: str, topic: str, timeout: float = 30.0) -> Message:
    """The first record of ``topic`` with a plain consumer (manual assignment, no group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": _bootstrap(url),
            "group.id": f"raw-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        for _ in range(int(timeout / 0.1)):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                return message
        raise AssertionError(f"no record on {topic} within {timeout}s")
    finally:
        consumer.close()


def _write(url: str, topic: str, record: KafkaMessage) -> None:
    producer = Producer({"bootstrap.servers": _bootstrap(url), "enable.idempotence": True})
    producer.produce(
        topic, value=record.value, key=record.key, headers=list(record.headers.items())
    )
    assert producer.flush(30) == 0


async def test_mesh_event_reads_with_plain_client_and_sdk(mesh: Mesh, url: str) -> None:
    channel = f"{mesh.prefix}.orders.created"  # type: ignore[attr-defined]
    sent = Event(
        channel,
        "https://example.com/shop",
        {"order": 7, "items": ["a", "b"]},
        id=f"id-{uuid.uuid4()}",
        subject="order/7",
        time=SENT_TIME,
        datacontenttype="application/json",
        dataschema="https://example.com/o.json",
        extensions={
            "partitionkey": "customer-9",
            "correlationid": "corr-1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "custom": "x y/z",
            "urgent": True,
            "archived": False,
            "priority": 5,
            "due": datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        },
    )
    async with mesh:
        await mesh.publish(sent)
    record = await asyncio.to_thread(_read_one, url, channel)
    headers = dict(record.headers() or [])
    assert headers["ce_id"] == sent.id.encode() and headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json"
    assert record.key() == b"customer-9"
    message = KafkaMessage(
        headers={k: v or b"" for k, v in headers.items()},
        key=record.key(),
        value=record.value() or b"",
    )
    got = kafka.from_binary(message, JSONFormat(), CloudEvent)
    assert got.get_attributes() == {
        "id": sent.id,
        "source": sent.source,
        "type": sent.type,
        "specversion": "1.0",
        "subject": "order/7",
        "time": SENT_TIME,
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/o.json",
        "partitionkey": "customer-9",
        "correlationid": "corr-1",
        "custom": "x y/z",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "urgent": "true",
        "archived": "false",
        "priority": "5",
        "due": "2026-12-01T08:00:00Z",
    }
    assert got.get_data() == {"order": 7, "items": ["a", "b"]}


@pytest.mark.parametrize("mode", ["binary", "structured", "structured-with-ce-headers"])
async def test_sdk_records_reach_a_mesh_handler(mesh: Mesh, url: str, mode: str) -> None:
    channel = f"{mesh.prefix}.tasks.{mode}"  # type: ignore[attr-defined]
    received: list[Event] = []

    @mesh.on(channel, group=f"{mesh.prefix}-workers")  # type: ignore[attr-defined]
    async def work(event: Event) -> None:
        received.append(event)

    sdk_event = CloudEvent(
        attributes={
            "id": f"sdk-{uuid.uuid4()}",
            "source": "/java-or-go-service",
            "type": channel,
            "specversion": "1.0",
            "time": SENT_TIME,
            "subject": "t/1",
            "datacontenttype": "application/json",
            "correlationid": "c-42",
            "partitionkey": "tenant-3",
        },
        data={"task": "summarize", "n": 3},
    )
    write = kafka.to_binary if mode == "binary" else kafka.to_structured
    record = write(sdk_event, JSONFormat())
    if mode == "structured-with-ce-headers":  # misleading headers: the value is the event
        record = KafkaMessage(
            {
                **record.headers,
                "ce_id": b"header-id",
                "ce_type": b"other",
                "ce_source": b"/header",
                "ce_specversion": b"1.0",
            },
            record.key,
            record.value,
        )
    async with mesh:
        await asyncio.to_thread(_write, url, channel, record)
        await wait_until(lambda: len(received) == 1, 30, f"the {mode} SDK record")
    event = received[0]
    assert (event.id, event.source, event.type, event.subject, event.time) == (
        sdk_event.get_id(),
        "/java-or-go-service",
        channel,
        "t/1",
        SENT_TIME,
    )
    assert event.datacontenttype == "application/json"
    assert event.extensions == {"correlationid": "c-42", "partitionkey": "tenant-3"}
    assert event.data == {"task": "summarize", "n": 3}
