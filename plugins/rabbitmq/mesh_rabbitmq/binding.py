"""The wire format: CloudEvents in AMQP 0-9-1 messages, both header conventions.

Two conventions put CloudEvents attributes in AMQP message headers (the AMQP 0-9-1
``headers`` table, which RabbitMQ maps to and from AMQP 1.0 application properties):

* ``ce-<name>``: the RabbitMQ binding (Knative eventing-rabbitmq, the Python SDK's
  ``cloudevents.core.bindings.rabbitmq``). The default for writing.
* ``cloudEvents_<name>`` / ``cloudEvents:<name>``: the CloudEvents AMQP binding (the
  Python SDK's ``bindings.amqp`` and JMS write ``cloudEvents_``; the spec text, and the
  Java, Go and .NET AMQP bindings, ``cloudEvents:``). Written with ``binding=amqp``.

Either way ``datacontenttype`` is the message's ``content_type`` property and the data
is the body (binary mode); a ``content_type`` starting with ``application/cloudevents``
means structured mode (the whole event is the body, headers are ignored). Reading
accepts every convention at once, so a mesh reads what any of them wrote.

Values are written as CloudEvents canonical strings (``true``/``false``, decimal
integers, RFC 3339 timestamps), which every binding must accept. Native AMQP types are
not written: an AMQP 0-9-1 timestamp has whole seconds only, and pamqp encodes an int
as the smallest integer type, not the AMQP ``long`` the binding names. Reading maps
every AMQP field type a CloudEvents attribute can have to its canonical string (see
`canonical`); anything else makes the message undecodable (`mesh.DecodeError` naming
the header), never a Python repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from cloudevents.core.base import EventFactory
from cloudevents.core.formats.base import Format

from mesh import DecodeError, Event, codec

CE_PREFIX: Final = "ce-"
AMQP_PREFIXES: Final = ("cloudEvents_", "cloudEvents:")
STRUCTURED: Final = "application/cloudevents"


#: AMQP 0-9-1 field types (as pamqp decodes them) no attribute type maps to, for errors
_KINDS = {float: "float", Decimal: "decimal", list: "array", dict: "table", type(None): "void"}


def canonical(header: str, value: Any, *, epoch_millis: bool = False) -> str:
    """The CloudEvents canonical string of a header ``value`` as pamqp decoded it.

    Long strings and byte arrays are UTF-8 text (strict: anything else is a
    `DecodeError` naming ``header``), booleans ``true``/``false``, integers decimal,
    timestamps RFC 3339. ``epoch_millis``: an integer is an AMQP 1.0 timestamp
    (milliseconds since the epoch), as the AMQP binding writes ``time``. Other types
    (float, decimal, array, table, void) have no CloudEvents attribute type: a
    `DecodeError` that says so."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"header {header!r} is not valid UTF-8 text ({exc.reason} at "
                f"byte {exc.start}); CloudEvents attributes are text"
            ) from None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if epoch_millis:
            try:
                return codec.canonical(datetime.fromtimestamp(value / 1000, UTC))
            except (OverflowError, OSError, ValueError):
                raise DecodeError(
                    f"header {header!r} is not a timestamp in milliseconds since the epoch: {value}"
                ) from None
        return str(value)
    if isinstance(value, datetime):
        return codec.canonical(value if value.tzinfo else value.replace(tzinfo=UTC))
    raise DecodeError(
        f"header {header!r} is an AMQP {_KINDS.get(type(value), type(value).__name__)}, "
        "which no CloudEvents attribute type maps to; send it as a string"
    )


def read_attributes(headers: Mapping[str, Any]) -> dict[str, str]:
    """Every CloudEvents attribute in ``headers``, in canonical string form, from any of
    the three prefixes. The same attribute under two prefixes must agree."""
    attributes: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, value in headers.items():
        header = str(key)
        if header[:3].lower() == CE_PREFIX:
            name, amqp = header[3:].lower(), False
        elif header.startswith(AMQP_PREFIXES):  # both prefixes are 12 characters long
            name, amqp = header[12:].lower(), True
        else:
            continue
        text = canonical(header, value, epoch_millis=amqp and name == "time")
        if name in attributes and attributes[name] != text:
            raise DecodeError(
                f"headers {origin[name]!r} and {header!r} give attribute "
                f"{name!r} different values; send one of them"
            )
        attributes[name] = text
        origin[name] = header
    return attributes


def decode(
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    body: bytes,
    fmt: Format,
    factory: EventFactory,
) -> Any:
    """A binding ``from_*`` function for `mesh.codec.decode`: structured mode when the
    content type says so, else binary mode from the headers. ``time`` is left a string
    for the mesh's own (stdlib) parser."""
    if content_type and content_type.lower().startswith(STRUCTURED):
        return fmt.read(factory, body)
    attributes: dict[str, Any] = read_attributes(headers or {})
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    else:  # a sender that wrote it as a header only: decode the data by it all the same
        content_type = attributes.get("datacontenttype")
    return factory(attributes, fmt.read_data(body, content_type))


def encode(event: Event, prefix: str) -> tuple[bytes, dict[str, Any], str | None]:
    """Binary mode: (body, headers, content_type), every attribute but
    ``datacontenttype`` in a ``<prefix><name>`` header as its canonical string."""
    headers: dict[str, Any] = {}
    content_type: str | None = None
    for name, value in event.get_attributes().items():
        if name == "datacontenttype":
            content_type = value
        elif value is not None:
            headers[prefix + name] = value if value.__class__ is str else codec.canonical(value)
    return codec.FORMAT.write_data(event.get_data(), content_type), headers, content_type


def raw_headers(headers: Mapping[str, Any] | None, content_type: str | None) -> dict[str, str]:
    """Headers as text for a dead-letter record of an undecodable message: canonical
    strings where possible; bytes that are not UTF-8 with ``\\x..`` escapes (so two
    different bad values stay different); other types as their Python text."""
    shown: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes | bytearray):
            shown[str(key)] = bytes(value).decode("utf-8", "backslashreplace")
            continue
        try:
            shown[str(key)] = canonical(str(key), value)
        except DecodeError:
            shown[str(key)] = str(value)
    if content_type:
        shown["content-type"] = content_type
    return shown
