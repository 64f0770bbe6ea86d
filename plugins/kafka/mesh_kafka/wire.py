"""Event <-> Kafka record, through the official CloudEvents Kafka binding.

Writes binary content mode (``ce_*`` headers, data in the value, ``partitionkey`` as
the record key); reads both modes (``from_kafka`` looks for ``ce_`` headers). All
decoding goes through `mesh.codec.decode`, so anything malformed is a `DecodeError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cloudevents.core.bindings import kafka
from cloudevents.core.bindings.kafka import KafkaMessage

from mesh import Event, codec

Headers = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]] | None


def _items(headers: Headers) -> list[tuple[str, bytes]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return [(name, raw.encode() if isinstance(raw, str) else raw or b"") for name, raw in pairs]


def to_record(event: Event) -> KafkaMessage:
    """Binary content mode record (headers as bytes, key from ``partitionkey``)."""
    return kafka.to_binary(event, codec.FORMAT)


def from_record(headers: Headers, key: bytes | None, value: bytes | None) -> Event:
    """Decode a consumed record in binary or structured mode (the key, if any, becomes
    ``partitionkey``)."""
    message = KafkaMessage(headers=dict(_items(headers)), key=key, value=value or b"")
    return codec.decode(kafka.from_kafka, message)


def raw_headers(headers: Headers) -> dict[str, str]:
    """Headers as text, for dead-lettering a record that is not a CloudEvent."""
    return {name: raw.decode("utf-8", "replace") for name, raw in _items(headers)}
