"""Event <-> Kafka record by the CloudEvents Kafka protocol binding.

Writing: binary content mode, the mapping of ``cloudevents.core.bindings.kafka.to_binary``
(``ce_<attribute>`` headers, ``datacontenttype`` as ``content-type``, data in the value,
``partitionkey`` as the key), except that every attribute value is written in its
CloudEvents *canonical string form* (`canonical`): ``true``/``false`` for Boolean (the
SDK writes Python's ``True``), decimal Integer, RFC 3339 Timestamp with ``Z`` for UTC,
base64 Binary. A consumer in another language, and a filter on any transport, then see
the same text.

Reading: the ``content-type`` decides the mode, as the binding says: a record whose
``content-type`` starts with ``application/cloudevents`` is structured mode (the event
is the value; ``ce_`` headers on it are ignored), a record with ``ce_`` headers is binary
mode, read by the binding's rules in `_read` but with ``time`` parsed by
``datetime.fromisoformat`` (a third of the SDK's decoding cost); a record with neither
is tried as structured JSON, like the SDK's ``from_kafka``. Anything malformed is a
`DecodeError` (`mesh.codec.decode`).

`wire_size` is the size librdkafka checks against ``message.max.bytes`` before it
accepts a record, so the transport can refuse a record that is too large without
calling ``produce()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cloudevents.core.base import EventFactory
from cloudevents.core.bindings import kafka
from cloudevents.core.bindings.kafka import KafkaMessage
from cloudevents.core.formats.base import Format

from mesh import DecodeError, Event, codec

Headers = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]] | None

#: The prefix of attribute headers in binary mode (``ce_``, the Kafka protocol binding's).
HEADER_PREFIX: str = kafka.CE_PREFIX
_CE = HEADER_PREFIX
_CONTENT_TYPE = "content-type"
_STRUCTURED = "application/cloudevents"  # media type prefix of every event format
_JSON_FORMAT = "application/cloudevents+json"
#: librdkafka's RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD: the per-record framing it adds to key,
#: value and headers before comparing with message.max.bytes (length, attributes,
#: timestamp and offset deltas, key and value lengths, header count, as max-size varints)
RECORD_OVERHEAD = 36


def to_record(event: Event) -> KafkaMessage:
    """Binary content mode record: headers as UTF-8 bytes of canonical strings, key
    from ``partitionkey``, value encoded by the mesh's format."""
    headers: dict[str, bytes] = {}
    content_type = event.datacontenttype
    for name, value in event.get_attributes().items():
        if name == "datacontenttype":
            headers[_CONTENT_TYPE] = value.encode("utf-8")
        else:
            headers[_CE + name] = codec.canonical(value).encode("utf-8")
    key = event.extensions.get(kafka.PARTITIONKEY_ATTR)
    if key is not None and not isinstance(key, str):
        key = codec.canonical(key)
    return KafkaMessage(headers, key, codec.FORMAT.write_data(event.data, content_type))


def wire_size(record: KafkaMessage) -> int:
    """The size librdkafka compares with ``message.max.bytes`` (rd_kafka_msg_new0): the
    record overhead plus key, value and each header's name and value with their
    zig-zag varint lengths."""
    key = record.key
    size = (
        RECORD_OVERHEAD
        + len(record.value)
        + (0 if key is None else len(key.encode("utf-8") if isinstance(key, str) else key))
    )
    for name, value in record.headers.items():
        name_len = len(name.encode("utf-8"))
        size += name_len + len(value) + _varint_len(name_len) + _varint_len(len(value))
    return size


def size_bound(record: KafkaMessage) -> int:
    """An upper bound of `wire_size`, computed at C speed (the publish hot path checks
    this first and computes the exact size only for records near the limit): header
    names count 4 bytes a character, every varint its maximum of 5 bytes."""
    key, headers = record.key, record.headers
    return (
        RECORD_OVERHEAD
        + len(record.value)
        + sum(map(len, headers.values()))
        + 4 * sum(map(len, headers))
        + 10 * len(headers)
        + (0 if key is None else 4 * len(key))
    )


def received_size(headers: Headers, key: str | bytes | None, value: bytes | None) -> int:
    """`wire_size` of a record as confluent-kafka hands it back (a delivery report)."""
    return wire_size(KafkaMessage(_items(headers), key, value or b""))


def _varint_len(n: int) -> int:
    """Bytes of the zig-zag varint of a length (never negative: zig-zag is ``n << 1``),
    7 bits a byte."""
    return (max(n << 1, 1).bit_length() + 6) // 7


def from_record(headers: Headers, key: str | bytes | None, value: bytes | None) -> Event:
    """Decode a record in binary or structured mode (the key becomes ``partitionkey``)."""
    return codec.decode(_read, (_items(headers), key, value or b""))


def _read(record: tuple[dict[str, bytes], Any, bytes], fmt: Format, factory: EventFactory) -> Any:
    headers, key, value = record
    attributes: dict[str, Any] = {}
    try:  # one pass: kafka.from_binary's mapping (the common case: valid binary mode)
        for name, raw in headers.items():
            name = name.lower()
            if name.startswith(_CE):
                attributes[name[3:]] = raw.decode("utf-8")
            elif name == _CONTENT_TYPE:
                attributes["datacontenttype"] = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # fine in structured mode (its ce_ headers are ignored)
        for name, raw in headers.items():
            if name.lower() == _CONTENT_TYPE and raw.lower().startswith(_STRUCTURED.encode()):
                return _structured(raw.decode("utf-8", "replace"), key, value, fmt, factory)
        raise DecodeError(f"a CloudEvents header of the record is not UTF-8 text: {exc}") from None
    content_type = attributes.get("datacontenttype")
    if content_type is not None and content_type.lower().startswith(_STRUCTURED):
        return _structured(content_type, key, value, fmt, factory)
    if "specversion" not in attributes and not any(
        n.startswith(_CE) for n in map(str.lower, headers)
    ):
        return _structured(None, key, value, fmt, factory)  # like the SDK's from_kafka
    if "time" in attributes:
        try:  # with another time parser than the SDK's
            attributes["time"] = datetime.fromisoformat(attributes["time"].upper())
        except ValueError:  # a time fromisoformat refuses: the SDK's parser decides
            return kafka.from_binary(KafkaMessage(headers, key, value), fmt, factory)
    if key is not None:
        attributes[kafka.PARTITIONKEY_ATTR] = key.decode("utf-8") if isinstance(key, bytes) else key
    return factory(attributes, fmt.read_data(value, attributes.get("datacontenttype")))


def _structured(
    content_type: str | None, key: Any, value: bytes, fmt: Format, factory: EventFactory
) -> Any:
    """Structured mode: the value is the event in the JSON event format (the only format
    the mesh reads); the key, when there is one, is its ``partitionkey``."""
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != _JSON_FORMAT:
            raise DecodeError(
                f"structured-mode record in event format {media!r}; the mesh "
                f"reads {_JSON_FORMAT} (or binary mode)"
            )
    event = fmt.read(factory, value)
    if key is not None and isinstance(event, Event):
        text = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        event = event.replace(partitionkey=text)
    return event


def _items(headers: Headers) -> dict[str, bytes]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return {name: raw.encode() if isinstance(raw, str) else raw or b"" for name, raw in pairs}


def raw_headers(headers: Headers) -> dict[str, str]:
    """Headers as text, for dead-lettering a record that is not a CloudEvent."""
    return {name: raw.decode("utf-8", "replace") for name, raw in _items(headers).items()}
