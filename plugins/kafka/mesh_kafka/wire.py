"""Event <-> Kafka record by the CloudEvents SDK Kafka binding (``cloudevents.core.bindings``).

Writes binary content mode with ``to_binary`` (``ce_*`` headers, data in the value,
``partitionkey`` as the key). Reads binary mode by the binding's rules but parses ``time``
with ``datetime.fromisoformat``, not dateutil (a third of the SDK's decoding cost); the
rest goes to ``from_kafka``. Anything malformed is a `DecodeError` (`mesh.codec.decode`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudevents.core.base import EventFactory
from cloudevents.core.bindings import kafka
from cloudevents.core.bindings.kafka import KafkaMessage
from cloudevents.core.formats.base import Format

from mesh import Event, codec

Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None


def to_record(event: Event) -> KafkaMessage:
    """Binary content mode record (headers as bytes, key from ``partitionkey``)."""
    return kafka.to_binary(event, codec.FORMAT)


def from_record(headers: Headers, key: str | bytes | None, value: bytes | None) -> Event:
    """Decode a record in binary or structured mode (the key becomes ``partitionkey``)."""
    return codec.decode(_read, (_items(headers), key, value or b""))


def _read(record: tuple[dict[str, bytes], Any, bytes], fmt: Format, factory: EventFactory) -> Any:
    headers, key, value = record
    attributes: dict[str, Any] = {}
    try:   # kafka.from_binary, with another time parser
        for name, raw in headers.items():
            text, name = raw.decode("utf-8"), name.lower()
            if name.startswith("ce_"):
                attributes[name[3:]] = text
            elif name == "content-type":
                attributes["datacontenttype"] = text
        if "time" in attributes:
            attributes["time"] = datetime.fromisoformat(attributes["time"].upper())
    except ValueError:   # a header not in UTF-8, a time fromisoformat refuses
        attributes = {}
    if "specversion" not in attributes:   # structured mode, or the above: the SDK decides
        return kafka.from_kafka(KafkaMessage(headers, key, value), fmt, factory)
    if key is not None:
        attributes["partitionkey"] = key.decode("utf-8") if isinstance(key, bytes) else key
    return factory(attributes, fmt.read_data(value, attributes.get("datacontenttype")))


def _items(headers: Headers) -> dict[str, bytes]:
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    return {name: raw.encode() if isinstance(raw, str) else raw or b"" for name, raw in pairs}


def raw_headers(headers: Headers) -> dict[str, str]:
    """Headers as text, for dead-lettering a record that is not a CloudEvent."""
    return {name: raw.decode("utf-8", "replace") for name, raw in _items(headers).items()}
