"""Subscriptions API filter dialects compiled to predicates."""

from __future__ import annotations

import pytest

from mesh import ConfigError, Event
from mesh.routing.filters import compile_filter

EVENT = Event(
    "com.example.order.created",
    "/shop/eu",
    {"total": 5},
    subject="orders/7.pdf",
    time="2026-01-01T00:00:00Z",
    region="eu",
    priority=3,
    urgent=True,
)


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"exact": {"type": "com.example.order.created"}}, True),
        ({"exact": {"type": "com.example.order"}}, False),
        ({"exact": {"type": "com.example.order.created", "source": "/shop/eu"}}, True),
        ({"exact": {"type": "com.example.order.created", "source": "/shop/us"}}, False),
        ({"prefix": {"type": "com.example."}}, True),
        ({"prefix": {"source": "/shop/us"}}, False),
        ({"suffix": {"subject": ".pdf"}}, True),
        ({"suffix": {"subject": ".txt"}}, False),
        ({"exact": {"region": "eu"}}, True),
        ({"exact": {"priority": "3"}}, True),
        ({"exact": {"urgent": "true"}}, True),
        ({"exact": {"time": "2026-01-01T00:00:00Z"}}, True),
        ({"exact": {"missing": ""}}, False),
        ({"all": [{"prefix": {"type": "com."}}, {"exact": {"region": "eu"}}]}, True),
        ({"all": [{"prefix": {"type": "com."}}, {"exact": {"region": "us"}}]}, False),
        ({"any": [{"exact": {"region": "us"}}, {"exact": {"region": "eu"}}]}, True),
        ({"any": [{"exact": {"region": "us"}}, {"exact": {"region": "ap"}}]}, False),
        ({"not": {"exact": {"region": "us"}}}, True),
        ({"not": {"exact": {"region": "eu"}}}, False),
        ([{"prefix": {"type": "com."}}, {"suffix": {"type": ".created"}}], True),
    ],
)
def test_dialects(spec: object, expected: bool) -> None:
    assert compile_filter(spec)(EVENT) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ({}, "exactly one dialect"),
        ({"exact": {"type": "a"}, "prefix": {"type": "b"}}, "exactly one dialect"),
        ({"regex": {"type": "a"}}, "unknown filter dialect"),
        ({"exact": "type"}, "mapping of attribute"),
        ({"prefix": {"type": ""}}, "must not be empty"),
        ({"exact": {"type": 3}}, "must be a string"),
        ({"all": []}, "non-empty list"),
        ({"sql": 3}, "CESQL expression string"),
    ],
)
def test_malformed_filters_raise_config_error(spec: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        compile_filter(spec)  # type: ignore[arg-type]
