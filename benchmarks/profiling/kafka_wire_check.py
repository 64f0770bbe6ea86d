"""`mesh_kafka.wire.from_record` against the SDK's own ``kafka.from_kafka`` (profiling aid).

``python -m benchmarks.profiling.kafka_wire_check``

The plugin reads binary-mode records itself (``time`` by ``datetime.fromisoformat``
instead of dateutil's ``isoparse``) and leaves everything else to the SDK. This decodes
odd and malformed records both ways, the SDK way being what the plugin did before
(``codec.decode(kafka.from_kafka, KafkaMessage(...))``), and fails on any difference:
the same event (attributes, data) or the same `DecodeError` message. Then it prints
both costs per record.
"""

from __future__ import annotations

import timeit
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings import kafka
from cloudevents.core.bindings.kafka import KafkaMessage

from mesh import Event, codec
from mesh.errors import DecodeError
from mesh_kafka.wire import from_record, to_record


def sdk(headers: Any, key: Any, value: bytes | None) -> Event:
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    items = {n: v.encode() if isinstance(v, str) else v or b"" for n, v in pairs}
    return codec.decode(kafka.from_kafka, KafkaMessage(items, key, value or b""))


def cases() -> list[tuple[Any, Any, bytes | None]]:
    event = Event(
        "t.x",
        "/s",
        {"a": 1},
        subject="s",
        datacontenttype="application/json",
        dataschema="http://x",
        extensions={"partitionkey": "k", "meshhops": 3, "flag": True, "when": datetime.now(UTC)},
    )
    record = to_record(event)
    base = list(record.headers.items())
    value = record.value

    def timed(text: bytes) -> list[tuple[str, bytes]]:
        return [*base, ("ce_time", text)]

    structured = [("content-type", b"application/cloudevents+json")]
    return [
        (base, b"k", value),
        (base, None, value),
        ({n: v.decode() for n, v in base}, "k", value),
        ([(n, v) for n, v in base if n != "ce_time"], None, value),
        ([(n.upper(), v) for n, v in base], None, value),
        ([("Content-Type", b"application/json"), *base], b"\xff", value),
        *(
            (timed(t), None, value)
            for t in (
                b"2026-11-25T24:00:00Z",
                b"2026-11-25t10:00:00.123456789z",
                b"2026-11-25T10:00:00",
                b"garbage",
                b"",
                b"2026-11-25T10:00:00+0530",
                b"2026-11-25T10:00:00.5-08:00",
                b"2026-W48-3T10:00:00Z",
                b"2026-11-25",
            )
        ),
        ([*base, ("ce_id", None)], None, value),
        ([*base, ("ce_id", b"\xff")], None, value),
        ([*base, ("x-other", b"\xff")], None, value),
        ([*base, ("ce_meshhops", b"x")], None, value),
        ([*base[:-1], ("ce_specversion", b"0.3")], None, b"{}"),
        ([("ce_type", b"t"), ("ce_source", b"/s"), ("ce_specversion", b"1.0")], None, b"{}"),
        ([*base, ("content-type", b"text/plain")], None, b"hello"),
        ([*base, ("content-type", b"application/octet-stream")], None, b"\x00\x01"),
        ([*base, ("content-type", b"application/json")], None, b"not json"),
        (structured, b"kk", codec.to_json(event)),
        (structured, None, b"{bad"),
        ([*structured, ("x", b"\xff")], None, codec.to_json(event)),
        (None, None, b"{}"),
        (None, None, None),
    ]


def outcome(decode: Any, headers: Any, key: Any, value: bytes | None) -> tuple[Any, ...]:
    try:
        event = decode(headers, key, value)
    except DecodeError as exc:
        return ("DecodeError", str(exc))
    return ("ok", event.get_attributes(), event.data)


def main() -> None:
    for headers, key, value in cases():
        ours, theirs = (outcome(f, headers, key, value) for f in (from_record, sdk))
        assert ours == theirs, (headers, key, value, ours, theirs)
    print(f"{len(cases())} records: same events and errors as the SDK's from_kafka")
    record = to_record(Event("bench.x", "/bench/publisher", {"a": "x" * 200}))
    headers = list(record.headers.items())
    for name, fn in (("from_record", from_record), ("SDK from_kafka", sdk)):
        best = (
            min(timeit.repeat(lambda f=fn: f(headers, None, record.value), number=20000, repeat=7))
            / 20000
            * 1e6
        )
        print(f"  {best:6.2f} us  {name}")


if __name__ == "__main__":
    main()
