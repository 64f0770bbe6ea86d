"""Event: CloudEvents 1.0 validation, immutability, accessors, SDK protocol."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mesh import Event, InvalidEvent


def test_defaults_fill_id_time_and_specversion() -> None:
    event = Event("order.placed", "/shop", {"id": 1})
    assert event.specversion == "1.0"
    assert len(event.id) == 36
    assert event.time is not None and event.time.tzinfo is not None
    assert event.datacontenttype is None


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"type": "", "source": "/s"}, "'type'"),
        ({"type": "t", "source": ""}, "'source'"),
        ({"type": "t", "source": "/s", "id": ""}, "'id'"),
        ({"type": "t", "source": "/s", "subject": ""}, "'subject'"),
        ({"type": "t", "source": "/s", "specversion": "0.3"}, "specversion"),
        ({"type": "t", "source": "/s", "time": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"type": "t", "source": "/s", "time": "yesterday"}, "RFC 3339"),
        ({"type": "t", "source": "/s", "extensions": {"Bad": "x"}}, "extension name"),
        ({"type": "t", "source": "/s", "extensions": {"data": "x"}}, "extension name"),
        ({"type": "t", "source": "/s", "extensions": {"a" * 21: "x"}}, "extension name"),
        ({"type": "t", "source": "/s", "extensions": {"big": 2**31}}, "32-bit"),
        ({"type": "t", "source": "/s", "extensions": {"f": 1.5}}, "float"),
    ],
)
def test_invalid_events_are_rejected(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidEvent, match=fragment):
        Event(kwargs.pop("type"), kwargs.pop("source"), **kwargs)


def test_time_accepts_rfc3339_strings() -> None:
    event = Event("t", "/s", time="2026-11-25T10:00:00Z")
    assert event.time == datetime(2026, 11, 25, 10, tzinfo=UTC)
    offset = Event("t", "/s", time="2026-11-25T10:00:00+02:00")
    assert offset.time is not None and offset.time.utcoffset() == timedelta(hours=2)


def test_bytes_data_defaults_to_octet_stream() -> None:
    assert Event("t", "/s", b"\x00").datacontenttype == "application/octet-stream"
    assert Event("t", "/s", bytearray(b"x")).data == b"x"


def test_immutable_and_replace() -> None:
    event = Event("t", "/s", {"a": 1}, correlationid="c1")
    with pytest.raises(AttributeError):
        event.type = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.extensions["x"] = "y"  # type: ignore[index]
    changed = event.replace(subject="s1", correlationid=None, meshhops=2)
    assert changed.subject == "s1" and changed.correlationid is None and changed.meshhops == 2
    assert changed.id == event.id and event.correlationid == "c1"


def test_extension_accessors() -> None:
    event = Event(
        "t",
        "/s",
        correlationid="c",
        causationid="p",
        traceparent="00-x",
        partitionkey="k",
        meshhops=4,
    )
    assert (
        event.correlationid,
        event.causationid,
        event.traceparent,
        event.partitionkey,
        event.meshhops,
    ) == ("c", "p", "00-x", "k", 4)
    assert Event("t", "/s").meshhops == 0


def test_equality_and_hash() -> None:
    a = Event("t", "/s", {"x": 1}, id="1", time="2026-01-01T00:00:00Z")
    b = Event("t", "/s", {"x": 1}, id="1", time="2026-01-01T00:00:00Z")
    assert a == b and hash(a) == hash(b)
    assert a != a.replace(data={"x": 2})


def test_sdk_protocol_and_from_attributes_keep_wire_values() -> None:
    event = Event("t", "/s", {"x": 1}, subject="sub", meshhops=2, custom="v")
    attrs = event.get_attributes()
    assert attrs["meshhops"] == 2 and attrs["custom"] == "v" and attrs["subject"] == "sub"
    assert event.get_extension("custom") == "v" and event.get_data() == {"x": 1}
    wire = {**attrs, "meshhops": "2"}
    assert Event.from_attributes(wire, {"x": 1}) == event
    no_time = {k: v for k, v in attrs.items() if k != "time"}
    assert Event.from_attributes(no_time).time is None


def test_from_attributes_requires_core_attributes() -> None:
    with pytest.raises(InvalidEvent, match="'source'"):
        Event.from_attributes({"id": "1", "type": "t", "specversion": "1.0"})
    with pytest.raises(InvalidEvent, match="specversion"):
        Event.from_attributes({"id": "1", "type": "t", "source": "/s"})
    with pytest.raises(InvalidEvent, match="meshhops"):
        Event.from_attributes(
            {"id": "1", "type": "t", "source": "/s", "specversion": "1.0", "meshhops": "many"}
        )
