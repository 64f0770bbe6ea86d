"""codec: data encoding and the SDK bindings used through mesh.codec."""

from __future__ import annotations

import pytest
from cloudevents.core.bindings import amqp, kafka, rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from mesh import DecodeError, Event, codec


@pytest.mark.parametrize(
    "data,ctype",
    [
        ({"a": [1, 2]}, None),
        ([1, 2], "application/json"),
        ("s", "application/json"),
        (3, None),
        ("text ✓", "text/plain"),
        (b"\x00\xff", "application/octet-stream"),
        (None, None),
        ({"x": True}, "application/cloudevents-batch+json"),
    ],
)
def test_encode_decode_data_round_trip(data: object, ctype: str | None) -> None:
    assert codec.decode_data(codec.encode_data(data, ctype), ctype) == data


@pytest.mark.parametrize(
    "body", [b"{nope", b'{"a": 1', b"[1, 2", b'"unterminated', b"\xff\xfe text", b"  {broken"]
)
def test_corrupt_json_is_a_decode_error_not_a_string(body: bytes) -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        codec.decode_data(body, "application/json")


@pytest.mark.parametrize("text", ["hello world", "true story", "42 apples", "été ✓"])
def test_an_sdk_unquoted_string_under_json_is_read_as_that_string(text: str) -> None:
    """Issue 10 item 15: the official SDKs write a str data value unquoted under
    application/json (and read it back as the string); the mesh reads it the same way
    instead of dead-lettering it."""
    event = CloudEvent(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/sdk",
            "type": "t",
            "datacontenttype": "application/json",
        },
        text,
    )
    message = kafka.to_binary(event, JSONFormat())
    assert message.value == text.encode()  # what the SDK writes: unquoted
    assert codec.decode(kafka.from_kafka, message).data == text


@pytest.mark.parametrize("binding", [kafka, amqp, rabbitmq])
def test_sdk_bindings_round_trip_mesh_events(binding: object) -> None:
    # AMQP carries time as a millisecond timestamp, so use millisecond precision
    event = Event(
        "order.placed",
        "/shop",
        [1, "two"],
        subject="s",
        partitionkey="k",
        meshhops=3,
        correlationid="c",
        time="2026-11-25T10:00:00.123Z",
    )
    message = binding.to_binary(event, codec.FORMAT)  # type: ignore[attr-defined]
    from_any = {kafka: kafka.from_kafka, amqp: amqp.from_amqp, rabbitmq: rabbitmq.from_rabbitmq}[
        binding
    ]  # type: ignore[index]
    assert codec.decode(from_any, message) == event
    structured = binding.to_structured(event, codec.FORMAT)  # type: ignore[attr-defined]
    assert codec.decode(from_any, structured) == event


def test_official_sdk_reads_what_mesh_writes_and_back() -> None:
    event = Event("t", "/s", {"x": 1}, subject="sub")
    sdk_event = kafka.from_binary(kafka.to_binary(event, codec.FORMAT), JSONFormat())
    assert sdk_event.get_id() == event.id and sdk_event.get_data() == {"x": 1}
    sdk = CloudEvent({"type": "t", "source": "/s", "id": "9"}, {"y": 2})
    assert codec.decode(kafka.from_kafka, kafka.to_binary(sdk, JSONFormat())).data == {"y": 2}


@pytest.mark.parametrize(
    "garbage",
    [
        kafka.KafkaMessage(headers={"ce_type": b"t"}, key=None, value=b"{}"),
        kafka.KafkaMessage(headers={}, key=None, value=b"\xff\xfe"),
        kafka.KafkaMessage(
            headers={"ce_type": b"t", "ce_source": b"/s", "ce_id": b"1", "ce_specversion": b"1.0"},
            key=None,
            value=b"{bad",
        ),
    ],
)
def test_malformed_messages_become_decode_errors(garbage: kafka.KafkaMessage) -> None:
    with pytest.raises(DecodeError):
        codec.decode(kafka.from_kafka, garbage)


def test_structured_json_helpers() -> None:
    event = Event("t", "/s", b"\x01", time="2026-01-01T00:00:00Z")
    assert codec.from_json(codec.to_json(event)) == event
    assert codec.to_dict(event)["data_base64"] == "AQ=="
    with pytest.raises(DecodeError):
        codec.from_json(b"not json")
