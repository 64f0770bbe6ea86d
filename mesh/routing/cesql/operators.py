"""Runtime semantics of the operators: implicit casts by type, 32-bit arithmetic,
ambiguous equality (section 3.7), and the guard around user functions (3.5.3).

Helpers take the evaluation's error list and the source position to report at.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

from .errors import CESQLError, FunctionEvaluationError, MathError
from .functions import Function
from .types import INT32_MAX, INT32_MIN, Type, Value, implicit_bool, implicit_int, to_str

__all__ = ["ARITHMETIC", "CASTERS", "ORDERING", "STATIC", "equal", "guarded", "overflow", "trusted"]

Errors = list[CESQLError]
Caster = Callable[[Value, Errors, int | None], Value]
Invoker = Callable[[Errors, list[Value]], Any]

#: The CESQL type of each Python value type.
STATIC: Final = {str: Type.STRING, int: Type.INTEGER, bool: Type.BOOLEAN}
_PY: Final = {Type.STRING: str, Type.INTEGER: int, Type.BOOLEAN: bool}


def _cast_str(value: Value, errs: Errors, position: int | None) -> Value:
    return to_str(value)


CASTERS: Final[dict[Type, Caster]] = {
    Type.STRING: _cast_str,
    Type.INTEGER: implicit_int,
    Type.BOOLEAN: implicit_bool,
}


def overflow(value: int, errs: Errors, position: int) -> int:
    errs.append(MathError(f"integer overflow: {value} is outside the 32-bit range", position))
    return INT32_MAX if value > INT32_MAX else INT32_MIN


def _add(x: int, y: int, errs: Errors, position: int) -> int:
    r = x + y
    return r if INT32_MIN <= r <= INT32_MAX else overflow(r, errs, position)


def _sub(x: int, y: int, errs: Errors, position: int) -> int:
    r = x - y
    return r if INT32_MIN <= r <= INT32_MAX else overflow(r, errs, position)


def _mul(x: int, y: int, errs: Errors, position: int) -> int:
    r = x * y
    return r if INT32_MIN <= r <= INT32_MAX else overflow(r, errs, position)


def _div(x: int, y: int, errs: Errors, position: int) -> int:
    if y == 0:
        errs.append(MathError("division by zero", position))
        return 0
    q = abs(x) // abs(y)  # rounded towards 0
    r = -q if (x < 0) != (y < 0) else q
    return r if r <= INT32_MAX else overflow(r, errs, position)


def _mod(x: int, y: int, errs: Errors, position: int) -> int:
    if y == 0:
        errs.append(MathError("modulo by zero", position))
        return 0
    r = abs(x) % abs(y)  # the sign of x
    return -r if x < 0 else r


ARITHMETIC: Final = {"+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod}
ORDERING: Final = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def equal(x: Value, y: Value, errs: Errors, position: int | None) -> bool:
    """``x = y``, ``x`` cast to the type of ``y`` (section 3.7, ambiguous operators)."""
    ty = type(y)
    if ty is str:
        return to_str(x) == y
    if ty is bool:
        return implicit_bool(x, errs, position) == y
    return implicit_int(x, errs, position) == y


def trusted(impl: Callable[..., Any]) -> Invoker:
    def call(errs: Errors, vs: list[Value]) -> Any:
        return impl(errs, *vs)

    return call


def guarded(function: Function, position: int) -> Invoker:
    """Call a user function, enforcing section 3.5.3 on failures and bad results."""
    impl, returns, name = function.impl, function.returns, function.name
    expected = _PY.get(returns)

    def guard(errs: Errors, vs: list[Value]) -> Any:
        try:
            result = impl(errs, *vs)
        except Exception as exc:  # a user function must not break evaluation
            errs.append(FunctionEvaluationError(f"{name} failed: {exc!r}", position))
            return returns.zero
        t = type(result)
        ok = t is expected if expected is not None else t in STATIC
        if ok and t is int and not INT32_MIN <= result <= INT32_MAX:
            ok = False
        if not ok:
            errs.append(
                FunctionEvaluationError(
                    f"{name} returned {result!r}, not a {returns.value}", position
                )
            )
            return returns.zero
        return result

    return guard
