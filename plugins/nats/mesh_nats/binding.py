"""The CloudEvents NATS protocol binding, shaped like ``cloudevents.core.bindings.kafka``.

The cloudevents SDK 2.x ships bindings for HTTP, Kafka and AMQP but not NATS, so
this module follows the NATS binding spec (1.0.3) with the SDK's conventions:
``to_binary``/``from_binary``, ``to_structured``/``from_structured`` and
``from_nats`` (mode auto-detection), each taking a ``Format`` and an optional
``EventFactory``. It depends on no NATS client: `NATSMessage` is the headers
and payload any client gives or takes.

Binary mode puts every attribute, extensions included, in a ``ce-<name>`` header,
percent-encoded as the spec demands (space, ``"``, ``%`` and everything outside
printable ASCII; UTF-8 bytes, upper-case hex). ``datacontenttype`` is also written
as a plain ``content-type`` header so HTTP-style readers (other SDKs) find it;
it is left out when it starts with ``application/cloudevents`` (the spec's
structured-mode marker) or is not printable ASCII. Decoding undoes RFC 7230
quoted strings first, then one strict round of percent-decoding: invalid UTF-8
(e.g. overlong ``%C0%A0``) is rejected.

Header values arrive as ``str``, decoded by the client: nats-py decodes their bytes
with ``errors="replace"`` and keeps no raw bytes, so invalid UTF-8 becomes U+FFFD (a
client using ``errors="surrogateescape"`` gives lone surrogates). A ``ce-`` or
``content-type`` value carrying either is rejected (``ValueError`` naming the header):
two different broken ids would otherwise decode to the same one, and one event would
be dropped as a duplicate of the other. A sender that means U+FFFD percent-encodes it
(``%EF%BF%BD``), as the spec asks for every non-ASCII character, and that is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.bindings.common import get_event_factory_for_version
from cloudevents.core.formats.base import Format

from mesh import codec

CE_PREFIX: Final[str] = "ce-"
CONTENT_TYPE_HEADER: Final[str] = "content-type"
STRUCTURED_CONTENT_TYPE: Final[str] = "application/cloudevents"
_SAFE: Final[frozenset[int]] = frozenset(c for c in range(0x21, 0x7F) if c not in (0x22, 0x25))
#: a character outside _SAFE (the complement, for a fast "nothing to encode" check)
_UNSAFE: Final[re.Pattern[str]] = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_QUOTED_PAIR = re.compile(r"\\(.)")
_PERCENT = re.compile(r"(%[0-9A-Fa-f]{2})+")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")
#: what a client's decoding leaves for bytes that were not UTF-8
_LOST_BYTES = re.compile("[\ufffd\ud800-\udfff]")


@dataclass(frozen=True)
class NATSMessage:
    """A NATS message carrying a CloudEvent: header map and payload bytes."""

    headers: dict[str, str]
    data: bytes


def encode_header_value(value: Any) -> str:
    """Percent-encode an attribute's canonical string for a NATS header value."""
    text = value if value.__class__ is str else codec.canonical(value)
    if _UNSAFE.search(text) is None:  # the common case: nothing to encode
        return text
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode("utf-8"))


def decode_header_value(value: str) -> str:
    """Undo a quoted string (older senders), then one round of strict percent-decoding.

    Raises ``ValueError`` (``UnicodeDecodeError``) when the bytes are not UTF-8.
    """
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if "%" not in value:  # usually nothing to decode
        return value
    return _PERCENT.sub(lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8"), value)


def check_text(name: str, value: str) -> str:
    """``value`` unless the client's decoding of header ``name`` shows bytes that were not
    UTF-8 (U+FFFD or lone surrogates in the raw value); then ``ValueError``."""
    if not value.isascii() and _LOST_BYTES.search(value):  # isascii: the fast common case
        raise ValueError(
            f"header {name.lower()} is not valid UTF-8 text (the NATS client "
            "replaced bytes it could not decode); senders must write header "
            "values as UTF-8, non-ASCII characters percent-encoded"
        )
    return value


def _content_type(headers: dict[str, str]) -> str | None:
    for name, value in headers.items():
        if name.lower() == CONTENT_TYPE_HEADER:
            return check_text(name, value).strip()
    return None


def is_structured(message: NATSMessage) -> bool:
    """Spec 3: structured when ``content-type`` is ``application/cloudevents...``, and
    (pre-2.2 senders) when there are no ``ce-`` headers at all."""
    content_type = _content_type(message.headers)
    if content_type is not None and content_type.lower().startswith(STRUCTURED_CONTENT_TYPE):
        return True
    return not any(name.lower().startswith(CE_PREFIX) for name in message.headers)


def to_binary(event: BaseCloudEvent, event_format: Format) -> NATSMessage:
    """Binary content mode: ``ce-`` headers for the attributes, data as the payload."""
    headers: dict[str, str] = {}
    attributes = event.get_attributes()
    for name, value in attributes.items():
        if value is not None:
            headers[CE_PREFIX + name] = encode_header_value(value)
    content_type = attributes.get("datacontenttype")
    if (
        isinstance(content_type, str)
        and _PRINTABLE.fullmatch(content_type)
        and not content_type.lower().startswith(STRUCTURED_CONTENT_TYPE)
    ):
        headers[CONTENT_TYPE_HEADER] = content_type
    data = event_format.write_data(event.get_data(), content_type)
    return NATSMessage(headers=headers, data=data)


def from_binary(
    message: NATSMessage, event_format: Format, event_factory: EventFactory | None = None
) -> BaseCloudEvent:
    """Parse a binary-mode message; the version comes from ``ce-specversion`` unless
    ``event_factory`` is given."""
    attributes: dict[str, Any] = {}
    content_type: str | None = None
    for name, raw in message.headers.items():
        lower = name.lower()
        if lower.startswith(CE_PREFIX) and len(lower) > len(CE_PREFIX):
            attr = lower[len(CE_PREFIX) :]
            value = decode_header_value(check_text(name, raw))
            # RFC 3339 is ISO 8601; upper() admits its lower-case 't' and 'z'
            attributes[attr] = datetime.fromisoformat(value.upper()) if attr == "time" else value
        elif lower == CONTENT_TYPE_HEADER:
            content_type = check_text(name, raw).strip()
    if "datacontenttype" not in attributes and content_type is not None:
        attributes["datacontenttype"] = content_type
    if event_factory is None:
        event_factory = get_event_factory_for_version(attributes.get("specversion", "1.0"))
    data = event_format.read_data(message.data, attributes.get("datacontenttype"))
    return event_factory(attributes, data)


def to_structured(event: BaseCloudEvent, event_format: Format) -> NATSMessage:
    """Structured content mode: the whole event in the payload, in ``event_format``."""
    return NATSMessage(
        headers={CONTENT_TYPE_HEADER: event_format.get_content_type()},
        data=event_format.write(event),
    )


def from_structured(
    message: NATSMessage, event_format: Format, event_factory: EventFactory | None = None
) -> BaseCloudEvent:
    """Parse a structured-mode message; headers are ignored."""
    return event_format.read(event_factory, message.data)


def from_nats(
    message: NATSMessage, event_format: Format, event_factory: EventFactory | None = None
) -> BaseCloudEvent:
    """Parse either content mode, detected as the spec says (`is_structured`)."""
    if is_structured(message):
        return from_structured(message, event_format, event_factory)
    return from_binary(message, event_format, event_factory)
