"""The CloudEvents NATS protocol binding (``mesh_nats.binding``), without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from mesh import DecodeError, Event, codec

from mesh_nats import binding  # conftest.py leaves this file out without the plugin

NATSMessage = binding.NATSMessage

FULL = Event(
    "com.example.order.created",
    "https://example.com/shop?x=1",
    {"text": "héllo ✓", "n": [1, 2.5]},
    id="id-1",
    subject='Euro € 😀 "quoted" 100%',
    datacontenttype="application/json",
    dataschema="https://example.com/schema.json",
    time=datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC),
    extensions={
        "correlationid": "corr-1",
        "partitionkey": "order-7",
        "meshhops": 3,
        "custom": "spaces and/colons: ok",
    },
)


def roundtrip_binary(event: Event) -> Event:
    return codec.decode(binding.from_nats, binding.to_binary(event, codec.FORMAT))


def test_binary_headers_follow_the_spec() -> None:
    msg = binding.to_binary(FULL, codec.FORMAT)
    h = msg.headers
    assert h["ce-id"] == "id-1" and h["ce-specversion"] == "1.0"
    assert h["ce-type"] == "com.example.order.created"
    assert h["ce-time"] == "2026-11-25T12:30:15.123456Z"
    assert h["ce-datacontenttype"] == "application/json" == h["content-type"]
    assert h["ce-subject"] == "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22quoted%22%20100%25"
    assert h["ce-meshhops"] == "3"
    assert binding.to_binary(FULL.replace(flag=True), codec.FORMAT).headers["ce-flag"] == "true"
    assert all(0x21 <= ord(c) <= 0x7E for v in h.values() if v != h["content-type"] for c in v)
    assert msg.data == b'{"text":"h\xc3\xa9llo \xe2\x9c\x93","n":[1,2.5]}'


def test_spec_example_encoding() -> None:
    assert binding.encode_header_value("Euro € 😀") == "Euro%20%E2%82%AC%20%F0%9F%98%80"


@pytest.mark.parametrize(
    "data,content_type",
    [
        (b"\x00\x01binary\xff", "application/octet-stream"),
        ("plain ✓", "text/plain"),
        ([1, "two"], "application/json"),
        ("a JSON string", "application/json"),
        (None, None),
        ({"deep": [True, None]}, "application/vnd.example+json; charset=utf-8"),
    ],
)
def test_binary_round_trip(data: object, content_type: str | None) -> None:
    event = FULL.replace(data=data, datacontenttype=content_type)
    assert roundtrip_binary(event) == event


def test_binary_round_trip_every_attribute_and_offset_time() -> None:
    assert roundtrip_binary(FULL) == FULL
    later = FULL.replace(time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))))
    assert roundtrip_binary(later) == later
    bare = Event("t", "/s", None, id="x").replace(time=None)
    assert roundtrip_binary(bare).time is None


def test_structured_round_trip_and_detection() -> None:
    msg = binding.to_structured(FULL, codec.FORMAT)
    assert msg.headers == {"content-type": "application/cloudevents+json"}
    assert binding.is_structured(msg)
    assert codec.decode(binding.from_nats, msg) == FULL
    upper = NATSMessage({"Content-Type": "Application/CloudEvents+JSON"}, msg.data)
    assert codec.decode(binding.from_nats, upper) == FULL
    assert codec.decode(binding.from_nats, NATSMessage({}, msg.data)) == FULL  # pre-2.2 style


def test_cloudevents_content_type_in_binary_mode_is_not_mistaken_for_structured() -> None:
    inner = FULL.replace(
        datacontenttype="application/cloudevents+json", data={"specversion": "1.0"}
    )
    msg = binding.to_binary(inner, codec.FORMAT)
    assert "content-type" not in msg.headers and not binding.is_structured(msg)
    assert roundtrip_binary(inner) == inner


def test_decoding_is_lenient_where_the_spec_says_so() -> None:
    headers = {
        "CE-ID": "%69d-1",
        "Ce-Source": '"/a \\"b\\""',
        "ce-specversion": "1.0",
        "ce-type": "t",
        "ce-subject": "caf%c3%a9",
        "Content-Type": "text/plain",
        "ce-time": "2026-01-01t00:00:00z",
        "Nats-Msg-Id": "ignored",
    }
    event = codec.decode(binding.from_nats, NATSMessage(headers, b"hi"))
    assert (event.id, event.source, event.subject) == ("id-1", '/a "b"', "café")
    assert event.datacontenttype == "text/plain" and event.data == "hi"
    assert event.time == datetime(2026, 1, 1, tzinfo=UTC)
    assert "nats-msg-id" not in event.extensions and "natsmsgid" not in event.extensions


@pytest.mark.parametrize(
    "headers,body",
    [
        ({"ce-id": "1", "ce-source": "/s", "ce-specversion": "1.0", "ce-type": "%C0%A0"}, b""),
        (
            {
                "ce-id": "1",
                "ce-source": "/s",
                "ce-specversion": "1.0",
                "ce-type": "t",
                "ce-time": "yesterday",
            },
            b"",
        ),
        ({"ce-id": "1", "ce-specversion": "1.0", "ce-type": "t"}, b""),
        (
            {
                "ce-id": "1",
                "ce-source": "/s",
                "ce-specversion": "1.0",
                "ce-type": "t",
                "content-type": "application/json",
            },
            b"{not json",
        ),
        ({}, b"\x00not a cloudevent{"),
        ({"content-type": "application/cloudevents+json"}, b'{"id": 1}'),
    ],
    ids=["overlong-utf8", "bad-time", "no-source", "bad-json-data", "garbage", "bad-structured"],
)
def test_malformed_messages_raise_decode_error(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(binding.from_nats, NATSMessage(headers, body))


def test_sdk_cloudevent_and_json_format() -> None:
    sdk = CloudEvent(
        attributes={
            "type": "com.example",
            "source": "/sdk",
            "id": "42",
            "subject": "a b",
            "myext": "ünï",
        },
        data={"k": "v"},
    )
    msg = binding.to_binary(sdk, JSONFormat())
    back = binding.from_nats(msg, JSONFormat(), CloudEvent)
    assert back.get_attributes() == sdk.get_attributes() and back.get_data() == {"k": "v"}
    mine = codec.decode(binding.from_nats, msg)
    assert mine.extensions["myext"] == "ünï" and mine.subject == "a b"


def test_the_sdk_http_binding_reads_nats_binary_headers() -> None:
    """Same ``ce-`` names and percent-encoding as HTTP: an independent decoder agrees."""
    msg = binding.to_binary(FULL, codec.FORMAT)
    event = http.from_binary(
        http.HTTPMessage(dict(msg.headers), msg.data), codec.FORMAT, Event.from_attributes
    )
    assert event == FULL


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_header_value_encoding_round_trips(text: str) -> None:
    encoded = binding.encode_header_value(text)
    assert all(0x21 <= ord(c) <= 0x7E and c not in '"' for c in encoded)
    assert binding.decode_header_value(encoded) == text


_GOOD = {"ce-id": "1", "ce-source": "/s", "ce-specversion": "1.0", "ce-type": "t"}


@pytest.mark.parametrize(
    "name,value",
    [
        ("ce-id", "bad-\ufffd"),  # nats-py decodes invalid UTF-8 with errors="replace"
        ("ce-id", "bad-\udcff"),  # errors="surrogateescape" (a client that keeps bytes)
        ("ce-source", "/s\ufffd"),
        ("ce-myext", "x\ufffdy"),
        ("content-type", "text/plain\ufffd"),
        ("Content-Type", "application/cloudevents+json\ufffd"),
    ],
)
def test_header_that_was_not_utf8_makes_the_message_undecodable(name: str, value: str) -> None:
    """Two different invalid ids must not both become ``bad-\\ufffd`` (one would be dropped
    as a duplicate of the other): the message is undecodable, and the reason names the
    header."""
    headers = {**_GOOD, name: value}
    with pytest.raises(DecodeError, match=name.lower()):
        codec.decode(binding.from_nats, NATSMessage(headers, b"{}"))


def test_replacement_character_sent_percent_encoded_is_kept() -> None:
    """U+FFFD that a sender really meant arrives percent-encoded (the spec's form): it is
    text like any other, not a sign of bytes lost in decoding."""
    event = codec.decode(binding.from_nats, NATSMessage({**_GOOD, "ce-subject": "%EF%BF%BD"}, b""))
    assert event.subject == "\ufffd"
    assert codec.decode(binding.from_nats, NATSMessage({**_GOOD, "x-other": "\ufffd"}, b""))
