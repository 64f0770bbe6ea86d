"""Function registry and the built-in functions (section 3.5).

A function is identified by its upper-case name and arity. A name may have several
fixed-arity overloads and at most one variadic overload, whose number of fixed
parameters must exceed every other overload's arity. Calls dispatch on the exact
arity first, then to the variadic overload. A call that nothing serves is rejected
when the expression is compiled (an UnknownFunctionError from ``parse``), or, with
``parse(..., check_functions=False)``, evaluates to ``false`` with a
MissingFunctionError as CESQL 1.0 section 3.5 describes.

An implementation is called as ``impl(errors, *args)`` with arguments already cast
to the parameter types; it returns a value of its return type and may append
errors to ``errors``. Implementations registered with ``trusted=False`` (the
default for user functions) are guarded: an exception or a wrong return type
yields the return type's zero value and a FunctionEvaluationError (section 3.5.3).

Besides the spec's string and math functions, ``INT``, ``BOOL`` and ``STRING`` are
built in as explicit casts (used by the spec's examples and the TCK).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from .errors import CESQLError, FunctionEvaluationError, MathError
from .types import INT32_MAX, INT32_MIN, Type, Value, explicit_bool, explicit_int, to_str

__all__ = ["BUILTINS", "Function", "FunctionRegistry", "builtin_registry", "default_registry"]

Impl = Callable[..., Any]
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z_]*")


@dataclass(frozen=True, slots=True)
class Function:
    """A function definition: ``name(params..., variadic...) -> returns``."""

    name: str
    params: tuple[Type, ...]
    returns: Type
    impl: Impl
    variadic: Type | None = None
    trusted: bool = False

    def param_types(self, arity: int) -> tuple[Type, ...]:
        """The parameter types of a call with ``arity`` arguments."""
        if self.variadic is None:
            return self.params
        return self.params + (self.variadic,) * (arity - len(self.params))

    def signature(self) -> str:
        """e.g. ``CONCAT_WS(String, String...) -> String``."""
        params = [t.value for t in self.params]
        if self.variadic is not None:
            params.append(self.variadic.value + "...")
        return f"{self.name}({', '.join(params)}) -> {self.returns.value}"


class FunctionRegistry:
    """Functions by (name, arity), with the spec's overloading and variadic rules."""

    def __init__(self, functions: tuple[Function, ...] | list[Function] = ()) -> None:
        self._fixed: dict[tuple[str, int], Function] = {}
        self._variadic: dict[str, Function] = {}
        for function in functions:
            self.register(function)

    def register(self, function: Function) -> None:
        """Add ``function``; ValueError if it breaks the overloading rules."""
        if not _NAME.fullmatch(function.name):
            raise ValueError(
                f"invalid function name {function.name!r}: letters and '_' only, "
                "starting with a letter"
            )
        name = function.name.upper()
        if name != function.name:
            raise ValueError(f"function names are upper-case: use {name!r}")
        fixed = len(function.params)
        arities = [arity for (other, arity) in self._fixed if other == name]
        variadic = self._variadic.get(name)
        if function.variadic is not None:
            if variadic is not None:
                raise ValueError(f"{name} already has a variadic overload: {variadic.signature()}")
            if arities and fixed <= max(arities):
                raise ValueError(
                    f"variadic {name} needs more than {max(arities)} fixed "
                    "parameters (the largest arity of its other overloads)"
                )
            self._variadic[name] = function
            return
        if (name, fixed) in self._fixed:
            raise ValueError(f"{name} already has an overload with {fixed} parameters")
        if variadic is not None and fixed >= len(variadic.params):
            raise ValueError(f"{name} with {fixed} parameters clashes with {variadic.signature()}")
        self._fixed[(name, fixed)] = function

    def resolve(self, name: str, arity: int) -> Function | None:
        """The overload of ``name`` (any case) taking ``arity`` arguments, if any."""
        upper = name.upper()
        function = self._fixed.get((upper, arity))
        if function is not None:
            return function
        variadic = self._variadic.get(upper)
        if variadic is not None and arity >= len(variadic.params):
            return variadic
        return None

    def explain(self, name: str, arity: int) -> str:
        """Why no overload of ``name`` takes ``arity`` arguments (for error messages).

        Names the overloads of ``name`` if it has any, otherwise the registered
        functions, with a "did you mean" when one is close.
        """
        upper = name.upper()
        overloads = sorted((f for f in self if f.name == upper), key=lambda f: len(f.params))
        if overloads:
            counts = [
                f"at least {len(f.params)}" if f.variadic is not None else str(len(f.params))
                for f in overloads
            ]
            noun = (
                "argument"
                if counts[-1] in ("1", "at least 1") and len(counts) == 1
                else "arguments"
            )
            return (
                f"{upper} takes {' or '.join(counts)} {noun}, not {arity} "
                f"({'; '.join(f.signature() for f in overloads)})"
            )
        names = sorted({f.name for f in self})
        close = difflib.get_close_matches(upper, names, n=1)
        hint = f", did you mean {close[0]}?" if close else ""
        return f"unknown function {upper}{hint} (functions: {', '.join(names) or 'none'})"

    def copy(self) -> FunctionRegistry:
        """A registry with the same functions, to extend without touching this one."""
        return FunctionRegistry(list(self))

    def __iter__(self) -> Iterator[Function]:
        yield from self._fixed.values()
        yield from self._variadic.values()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(f.name == name.upper() for f in self)


# --- built-ins --------------------------------------------------------------------------

# Unicode White_Space (str.isspace() also matches U+001C..U+001F, which are not).
_WHITESPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _length(errors: list[CESQLError], x: str) -> int:
    return len(x)


def _concat(errors: list[CESQLError], *xs: str) -> str:
    return "".join(xs)


def _concat_ws(errors: list[CESQLError], delimiter: str, *xs: str) -> str:
    return delimiter.join(xs)


def _lower(errors: list[CESQLError], x: str) -> str:
    return x.lower()


def _upper(errors: list[CESQLError], x: str) -> str:
    return x.upper()


def _trim(errors: list[CESQLError], x: str) -> str:
    return x.strip(_WHITESPACE)


def _left(errors: list[CESQLError], x: str, y: int) -> str:
    if y < 0:
        errors.append(FunctionEvaluationError(f"LEFT: negative length {y}"))
        return x
    return x[:y]


def _right(errors: list[CESQLError], x: str, y: int) -> str:
    if y < 0:
        errors.append(FunctionEvaluationError(f"RIGHT: negative length {y}"))
        return x
    return x[len(x) - y :] if y < len(x) else x


def _start(errors: list[CESQLError], x: str, pos: int) -> int | None:
    """0-based start index for SUBSTRING, or None (with an error) when out of range."""
    if pos > len(x) or pos < -len(x):
        errors.append(
            FunctionEvaluationError(
                f"SUBSTRING: position {pos} is outside a string of length {len(x)}"
            )
        )
        return None
    return pos - 1 if pos > 0 else len(x) + pos


def _substring(errors: list[CESQLError], x: str, pos: int) -> str:
    start = _start(errors, x, pos)
    if start is None or pos == 0:
        return ""
    return x[start:]


def _substring_len(errors: list[CESQLError], x: str, pos: int, length: int) -> str:
    start = _start(errors, x, pos)
    if length < 0:
        errors.append(FunctionEvaluationError(f"SUBSTRING: negative length {length}"))
        return ""
    if start is None or pos == 0:
        return ""
    return x[start : start + length]


def _abs(errors: list[CESQLError], x: int) -> int:
    if x == INT32_MIN:
        errors.append(MathError("ABS(-2147483648) overflows 32 bits"))
        return INT32_MAX
    return abs(x)


def _int(errors: list[CESQLError], x: Value) -> int:
    return explicit_int(x, errors)


def _bool(errors: list[CESQLError], x: Value) -> bool:
    return explicit_bool(x, errors)


def _string(errors: list[CESQLError], x: Value) -> str:
    return to_str(x)


S, N, A = Type.STRING, Type.INTEGER, Type.ANY

#: The built-in functions every CESQL engine supports.
BUILTINS: Final = (
    Function("LENGTH", (S,), N, _length, trusted=True),
    Function("CONCAT", (), S, _concat, variadic=S, trusted=True),
    Function("CONCAT_WS", (S,), S, _concat_ws, variadic=S, trusted=True),
    Function("LOWER", (S,), S, _lower, trusted=True),
    Function("UPPER", (S,), S, _upper, trusted=True),
    Function("TRIM", (S,), S, _trim, trusted=True),
    Function("LEFT", (S, N), S, _left, trusted=True),
    Function("RIGHT", (S, N), S, _right, trusted=True),
    Function("SUBSTRING", (S, N), S, _substring, trusted=True),
    Function("SUBSTRING", (S, N, N), S, _substring_len, trusted=True),
    Function("ABS", (N,), N, _abs, trusted=True),
    Function("INT", (A,), N, _int, trusted=True),
    Function("BOOL", (A,), Type.BOOLEAN, _bool, trusted=True),
    Function("STRING", (A,), S, _string, trusted=True),
)

_DEFAULT: Final = FunctionRegistry(BUILTINS)


def default_registry() -> FunctionRegistry:
    """A new registry holding the built-ins (extend it and pass it to ``parse``)."""
    return _DEFAULT.copy()


def builtin_registry() -> FunctionRegistry:
    """The shared registry of built-ins used when ``parse`` gets no registry (do not mutate)."""
    return _DEFAULT
