"""CloudEvents Subscriptions API filter dialects, compiled to closures.

A filter is a dict with one dialect key (the Subscriptions API wire shape)::

    {"exact": {"type": "order.placed"}}
    {"prefix": {"type": "order."}}        {"suffix": {"subject": ".pdf"}}
    {"all": [f1, f2]}   {"any": [f1, f2]}   {"not": f}
    {"sql": "type LIKE 'order.%' AND data.total > 100"}   (CESQL, see mesh.routing.cesql)

A list of filters means ``all``. ``exact``/``prefix``/``suffix`` with several
attributes require every one to match. Attributes compare as their canonical
string form (booleans ``true``/``false``, time in RFC 3339); a missing attribute
never matches. Filters are compiled once at subscribe time; evaluating one is a
few closure calls, never ``eval``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from mesh.errors import ConfigError
from mesh.event import CONTEXT_ATTRIBUTES, Event, format_time

Predicate = Callable[[Event], bool]
FilterSpec = Mapping[str, Any] | Sequence[Mapping[str, Any]]
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "sql")


def attribute_getter(name: str) -> Callable[[Event], str | None]:
    """A function reading attribute ``name`` of an event as its canonical string."""
    if name in CONTEXT_ATTRIBUTES:

        def get(event: Event) -> str | None:
            return _canonical(getattr(event, name))
    else:

        def get(event: Event) -> str | None:
            return _canonical(event.extensions.get(name))

    return get


def _canonical(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_time(value)
    return str(value)


def _attr_dialect(kind: str, spec: Any) -> Predicate:
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(
            f"filter dialect '{kind}' takes a non-empty mapping of attribute "
            f"to value, e.g. {{'{kind}': {{'type': 'order.placed'}}}}"
        )
    tests: list[tuple[Callable[[Event], str | None], str]] = []
    for name, value in spec.items():
        if not isinstance(value, str):
            raise ConfigError(f"filter '{kind}' value for {name!r} must be a string")
        if kind != "exact" and not value:
            raise ConfigError(f"filter '{kind}' value for {name!r} must not be empty")
        tests.append((attribute_getter(str(name)), value))
    check: Callable[[str, str], bool]
    if kind == "exact":
        check = str.__eq__
    elif kind == "prefix":
        check = str.startswith
    else:
        check = str.endswith
    if len(tests) == 1:
        ((get, want),) = tests

        def one(event: Event) -> bool:
            actual = get(event)
            return actual is not None and check(actual, want)

        return one

    def every(event: Event) -> bool:
        for get, want in tests:
            actual = get(event)
            if actual is None or not check(actual, want):
                return False
        return True

    return every


def _compile_sql(expression: Any) -> Predicate:
    if not isinstance(expression, str):
        raise ConfigError("filter dialect 'sql' takes a CESQL expression string")
    from mesh.routing import cesql

    return cesql.parse(expression).matches


def compile_filter(spec: FilterSpec) -> Predicate:
    """Compile a filter (or a list of filters, meaning all) to a predicate.

    Raises `ConfigError` naming the dialect and the fix for a malformed filter.
    """
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        return _all([compile_filter(item) for item in spec])
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            f"a filter is a mapping with exactly one dialect key "
            f"({', '.join(DIALECTS)}); got {spec!r}"
        )
    ((kind, body),) = spec.items()
    if kind in ("exact", "prefix", "suffix"):
        return _attr_dialect(kind, body)
    if kind in ("all", "any"):
        if not isinstance(body, Sequence) or isinstance(body, (str, bytes)) or not body:
            raise ConfigError(f"filter dialect '{kind}' takes a non-empty list of filters")
        parts = [compile_filter(item) for item in body]
        return _all(parts) if kind == "all" else _any(parts)
    if kind == "not":
        inner = compile_filter(body)
        return lambda event: not inner(event)
    if kind == "sql":
        return _compile_sql(body)
    raise ConfigError(f"unknown filter dialect {kind!r}; use one of {', '.join(DIALECTS)}")


def _all(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    return lambda event: all(part(event) for part in parts)


def _any(parts: list[Predicate]) -> Predicate:
    return lambda event: any(part(event) for part in parts)
