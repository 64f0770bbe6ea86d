"""Event <-> wire message, on top of the official cloudevents SDK 2.x.

The SDK's protocol bindings (``cloudevents.core.bindings.kafka``, ``.amqp``,
``.rabbitmq``) map attributes to headers; this module supplies the two pieces
they are parameterised with:

* `FORMAT`, a ``cloudevents.core.formats.base.Format`` that encodes the data of
  any JSON value (the SDK's JSON format only handles dicts) and refuses bad JSON
  instead of silently turning it into a string, and
* ``Event.from_attributes`` as the SDK's ``EventFactory``, so decoding yields a
  `mesh.Event` directly and never invents an ``id`` or ``time``.

`canonical` renders an attribute value as the string binary content modes carry.
`decode` wraps any binding's ``from_*`` function so that whatever the SDK raises
on a malformed message becomes a `mesh.errors.DecodeError` (the mesh dead-letters
those with the reason). Transport plugins use these; they are public API.

Example (what the Kafka plugin does)::

    from cloudevents.core.bindings import kafka
    from mesh import codec, Event
    msg = kafka.to_binary(event, codec.FORMAT)
    again = codec.decode(kafka.from_kafka, msg)
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from cloudevents.core.formats.json import JSONFormat

from mesh.errors import DecodeError, MeshError
from mesh.event import Event, format_time

_JSON_TYPE = re.compile(r"^(application|text)/([a-zA-Z0-9\-.]+\+)?json(;.*)?$")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads

M = TypeVar("M")


def canonical(value: Any) -> str:
    """The CloudEvents canonical string of an attribute value, for binary content modes
    (headers carry strings): Boolean ``true``/``false`` (not Python's ``True``), Integer
    in decimal, Timestamp in RFC 3339 with ``Z`` for UTC, Binary in base64, String as
    is. Every transport writes attributes this way, so a consumer written with any SDK,
    and the same filter, see the same value on every broker."""
    if value.__class__ is str:
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def is_json(content_type: str | None) -> bool:
    """True when data of this content type is JSON (no content type means JSON)."""
    return content_type is None or _JSON_TYPE.match(content_type) is not None


def encode_data(data: Any, content_type: str | None) -> bytes:
    """Serialise event data for the message body.

    ``bytes`` pass through; JSON content types get JSON; a ``str`` with a non-JSON
    content type (text/plain) is UTF-8 encoded.
    """
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and not is_json(content_type):
        return data.encode("utf-8")
    try:
        return _dumps(data).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"event data is not JSON-serialisable: {exc}") from None


def decode_data(body: bytes, content_type: str | None) -> Any:
    """Inverse of `encode_data`: JSON, text (str) or bytes by content type.

    Under a JSON content type, a body that is not JSON but UTF-8 text not starting like
    a JSON object, array or string is that text: the official SDKs (Python, JavaScript)
    write a ``str`` data value unquoted, and read it back the same way. A body that
    starts like JSON structure and does not parse (``{"a": 1`` cut short) is corrupt
    and raises `DecodeError`, as does one that is not UTF-8.
    """
    if not body:
        return None
    if is_json(content_type):
        try:
            return _loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            problem = str(exc)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and text.lstrip()[:1] not in ("{", "[", '"'):
            return text  # an SDK's unquoted string
        raise DecodeError(
            f"body is not valid JSON for content type "
            f"{content_type or 'application/json'}: {problem}"
        )
    if content_type is not None and content_type.startswith("text/"):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"body is not UTF-8 text: {exc}") from None
    return bytes(body)


class MeshFormat(JSONFormat):
    """The SDK's JSON event format with strict, any-JSON-value data encoding."""

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        return encode_data(data, datacontenttype)

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return decode_data(body, datacontenttype)


#: The Format every mesh transport passes to the SDK bindings.
FORMAT = MeshFormat()


def decode(from_message: Callable[..., Any], message: M) -> Event:
    """Decode ``message`` with an SDK binding function, e.g. ``kafka.from_kafka``.

    Raises `DecodeError` (never anything else) when the message is not a valid
    CloudEvent.
    """
    try:
        event = from_message(message, FORMAT, Event.from_attributes)
    except DecodeError:
        raise
    except MeshError as exc:
        raise DecodeError(f"not a valid CloudEvent: {exc}") from None
    except Exception as exc:  # the SDK raises assorted types on malformed input
        raise DecodeError(f"not a valid CloudEvent: {type(exc).__name__}: {exc}") from None
    if not isinstance(event, Event):
        raise DecodeError("not a valid CloudEvent: decoder returned no event")
    return event


def to_json(event: Event) -> bytes:
    """Structured-mode JSON (``application/cloudevents+json``) of an event."""
    return FORMAT.write(event)


def from_json(body: bytes | str) -> Event:
    """Parse structured-mode JSON; raises `DecodeError` when it is not a CloudEvent."""

    def read(raw: bytes | str, fmt: MeshFormat, factory: Any) -> Any:
        return fmt.read(factory, raw)

    return decode(read, body)


def to_dict(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict in the CloudEvents JSON format."""
    result: dict[str, Any] = json.loads(to_json(event))
    return result
