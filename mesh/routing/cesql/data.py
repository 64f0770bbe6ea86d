"""Event-mesh extension (not CESQL 1.0): ``data.<path>`` reads JSON event data.

``data.order.total`` walks the event's data: the ``.data`` attribute of an event
object, or the ``"data"`` key of a mapping event. The data must already be decoded
(a ``Mapping``, or a list for numeric segments such as ``data.items.0``); raw
bytes/str data are not parsed.

Resolution of the final JSON value:

* absent key, out-of-range index, non-container on the way, JSON ``null`` ->
  **MissingAttributeError** (the path does not hold a value);
* ``str`` -> String, ``bool`` -> Boolean, ``int`` within 32 bits (or an integral
  ``float`` such as ``3.0``, JSON not distinguishing them) -> Integer;
* anything else (fractional or out-of-range numbers, objects, arrays) ->
  **CastError**: the value exists but has no CESQL type.

In both error cases the path behaves like a missing attribute: the enclosing
operator returns its zero value (so a filter never matches). ``EXISTS data.path``
is true when the path holds a non-null value of any JSON type.
``parse(text, strict=True)`` rejects every ``data.`` path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import CastError, CESQLError, MissingAttributeError
from .types import INT32_MAX, INT32_MIN, MISSING, Missing, Value

__all__ = ["convert", "event_data", "lookup", "resolve", "step"]


def event_data(attributes: Mapping[str, Any], event: object) -> Any:
    """The data of ``event`` (``attributes`` is ``event`` itself for mapping events)."""
    if event is attributes:
        return attributes.get("data")
    return getattr(event, "data", None)


def step(current: Any, segment: str) -> Any:
    """``current[segment]`` for a JSON object or array (numeric segment), else None."""
    if isinstance(current, Mapping):
        return current.get(segment)
    if (
        isinstance(current, Sequence)
        and not isinstance(current, str | bytes | bytearray)
        and segment.isdigit()
    ):
        index = int(segment)
        return current[index] if index < len(current) else None
    return None


def lookup(data: Any, path: tuple[str, ...]) -> Any:
    """The raw JSON value at ``path`` in ``data``, or None."""
    current = data
    for segment in path:
        current = current.get(segment) if type(current) is dict else step(current, segment)
        if current is None:
            return None
    return current


def resolve(
    data: Any, path: tuple[str, ...], errors: list[CESQLError], position: int | None
) -> Value | Missing:
    """The CESQL value at ``path``, or MISSING with an error appended."""
    return convert(lookup(data, path), path, errors, position)


def convert(
    raw: Any, path: tuple[str, ...], errors: list[CESQLError], position: int | None
) -> Value | Missing:
    """The CESQL value of the raw JSON value found at ``path``, or MISSING plus an error."""
    t = type(raw)
    if t is str or t is bool:
        return raw  # type: ignore[no-any-return]
    if t is int:
        if INT32_MIN <= raw <= INT32_MAX:
            return raw  # type: ignore[no-any-return]
    elif t is float:
        if raw.is_integer() and INT32_MIN <= raw <= INT32_MAX:
            return int(raw)
    elif raw is None:
        errors.append(
            MissingAttributeError(
                f"data.{'.'.join(path)} is not present in the event data", position
            )
        )
        return MISSING
    elif isinstance(raw, str):
        return str.__str__(raw)
    errors.append(
        CastError(
            f"data.{'.'.join(path)} holds a JSON {_json_type(raw)}, which has no CESQL type "
            "(only strings, booleans and 32-bit integers do)",
            position,
        )
    )
    return MISSING


def _json_type(raw: Any) -> str:
    if isinstance(raw, bool):
        return "boolean"
    if isinstance(raw, int | float):
        return (
            "number outside the 32-bit integer range"
            if isinstance(raw, int) or raw.is_integer()
            else "fractional number"
        )
    if isinstance(raw, Mapping):
        return "object"
    if isinstance(raw, Sequence):
        return "array"
    return type(raw).__name__
