"""The CESQL type system (section 3.1) and type casts (section 3.7).

Runtime values are plain Python objects: ``str`` (String), ``int`` (Integer, always
within the signed 32-bit range) and ``bool`` (Boolean). Because ``bool`` is a
subclass of ``int`` in Python, every check here uses ``type(v) is ...``.

``MISSING`` marks an absent attribute (or, for the data extension, a value with no
CESQL type) when converting raw event values; it never escapes evaluation.
"""

from __future__ import annotations

import base64
import enum
import re
from datetime import datetime
from typing import Any, Final

from .errors import CastError, CESQLError

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "MISSING",
    "Missing",
    "Type",
    "Value",
    "attribute_value",
    "cast",
    "explicit_bool",
    "explicit_int",
    "format_value",
    "implicit_bool",
    "implicit_int",
    "rfc3339",
    "to_str",
    "type_of",
]

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

#: A CESQL runtime value.
Value = str | int | bool


class Type(enum.Enum):
    """A CESQL type. ``ANY`` is only used for parameters that accept every type."""

    STRING = "String"
    INTEGER = "Integer"
    BOOLEAN = "Boolean"
    ANY = "Any"

    @property
    def zero(self) -> Value:
        """The type's zero value (``false`` for ``ANY``, per section 3.2)."""
        return _ZERO[self]


_ZERO: dict[Type, Value] = {Type.STRING: "", Type.INTEGER: 0, Type.BOOLEAN: False, Type.ANY: False}
_PY_TYPE: dict[type, Type] = {str: Type.STRING, int: Type.INTEGER, bool: Type.BOOLEAN}


class Missing(enum.Enum):
    """Marker type of :data:`MISSING`."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


#: Result of addressing an absent attribute; consumed by the enclosing operator.
MISSING: Final = Missing.MISSING


def type_of(value: Value) -> Type:
    """The CESQL type of a runtime value."""
    return _PY_TYPE[type(value)]


def format_value(value: Value) -> str:
    """A value as CESQL literal-like text, for error messages."""
    if type(value) is str:
        return repr(value)
    return to_str(value)


# --- casts -----------------------------------------------------------------------------

_INT_RE: Final = re.compile(r"[+-]?[0-9]+")


def to_str(value: Value) -> str:
    """Cast to String (never fails): ``true``/``false`` and base-10 integers."""
    t = type(value)
    if t is str:
        return value  # type: ignore[return-value]
    if t is bool:
        return "true" if value else "false"
    return str(value)


def _str_to_int(value: str, errors: list[CESQLError], position: int | None) -> int:
    if _INT_RE.fullmatch(value):
        number = int(value)
        if INT32_MIN <= number <= INT32_MAX:
            return number
        errors.append(
            CastError(f"cannot cast {value[:64]!r} to Integer: out of the 32-bit range", position)
        )
        return 0
    errors.append(CastError(f"cannot cast {value[:64]!r} to Integer", position))
    return 0


def _str_to_bool(value: str, errors: list[CESQLError], position: int | None) -> bool:
    lowered = value.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    errors.append(CastError(f"cannot cast {value[:64]!r} to Boolean", position))
    return False


def implicit_int(value: Value, errors: list[CESQLError], position: int | None = None) -> int:
    """Implicit cast to Integer: Boolean -> 1/0, String parsed as base 10 (else 0 + CastError)."""
    t = type(value)
    if t is int:
        return value  # type: ignore[return-value]
    if t is bool:
        return 1 if value else 0
    return _str_to_int(value, errors, position)  # type: ignore[arg-type]


explicit_int = implicit_int


def implicit_bool(value: Value, errors: list[CESQLError], position: int | None = None) -> bool:
    """Implicit cast to Boolean: ``'true'``/``'false'`` (any case) only.

    Integer operands are a CastError (value ``false``) when cast implicitly: the TCK
    requires ``NOT 10`` to give ``true`` with a cast error. The explicit ``BOOL(x)``
    function does accept integers (see :func:`explicit_bool`).
    """
    t = type(value)
    if t is bool:
        return value  # type: ignore[return-value]
    if t is str:
        return _str_to_bool(value, errors, position)  # type: ignore[arg-type]
    errors.append(
        CastError(
            f"cannot implicitly cast Integer {value} to Boolean; use BOOL(x) or a comparison",
            position,
        )
    )
    return False


def explicit_bool(value: Value, errors: list[CESQLError], position: int | None = None) -> bool:
    """``BOOL(x)``: Integer -> ``x != 0``; String as :func:`implicit_bool`."""
    t = type(value)
    if t is bool:
        return value  # type: ignore[return-value]
    if t is int:
        return value != 0
    return _str_to_bool(value, errors, position)  # type: ignore[arg-type]


def cast(
    value: Value, target: Type, errors: list[CESQLError], position: int | None = None
) -> Value:
    """Implicit cast of ``value`` to ``target`` (``ANY`` leaves it unchanged)."""
    if target is Type.STRING:
        return to_str(value)
    if target is Type.INTEGER:
        return implicit_int(value, errors, position)
    if target is Type.BOOLEAN:
        return implicit_bool(value, errors, position)
    return value


# --- event attribute values --------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """RFC 3339 text of a datetime, ``Z`` for UTC; a naive datetime is taken as UTC."""
    offset = moment.utcoffset()
    if offset is None or not offset:
        return moment.replace(tzinfo=None).isoformat() + "Z"
    return moment.isoformat()


def attribute_value(raw: Any) -> Value | Missing:
    """The CESQL value of a raw attribute value taken from an event.

    ``None`` means absent. str/bool/32-bit int map to themselves; everything else is
    represented as String (section 3.2): datetimes as RFC 3339, bytes as base64 (the
    CloudEvents canonical form of Binary), integers outside 32 bits in base 10, other
    objects (URIs, ...) via ``str()``.
    """
    if raw is None:
        return MISSING
    t = type(raw)
    if t is str or t is bool:
        return raw  # type: ignore[no-any-return]
    if t is int:
        return raw if INT32_MIN <= raw <= INT32_MAX else str(raw)
    if isinstance(raw, datetime):
        return rfc3339(raw)
    if isinstance(raw, str):
        return str.__str__(raw)
    if isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, int):
        number = int(raw)
        return number if INT32_MIN <= number <= INT32_MAX else str(number)
    if isinstance(raw, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(raw)).decode("ascii")
    return str(raw)
