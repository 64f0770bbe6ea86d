"""The CESQL error model: one exception class per error kind of CESQL 1.0 section 3.3.

Evaluation never raises these; it returns them in the error list next to the value.
Only :class:`ParseError` is raised (by :func:`mesh.routing.cesql.parse`), including
its subclass :class:`UnknownFunctionError` for calls no function can serve.

Every class here derives from :class:`CESQLError`, which is the single point to
re-parent the hierarchy (e.g. under ``mesh.errors.MeshError``).
"""

from __future__ import annotations

from typing import ClassVar

from mesh.errors import MeshError

__all__ = [
    "CESQLError",
    "CastError",
    "FunctionEvaluationError",
    "GenericError",
    "MathError",
    "MissingAttributeError",
    "MissingFunctionError",
    "ParseError",
    "UnknownFunctionError",
]

#: Characters of source shown either side of the error position in a ParseError message.
_CONTEXT = 40


class CESQLError(MeshError):
    """Base of every CESQL error; ``kind`` names the spec's error type.

    ``position`` is the 0-based offset in the expression text of the construct that
    caused the error, or ``None`` when unknown.
    """

    kind: ClassVar[str] = "generic"

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, position={self.position!r})"

    def __reduce__(self) -> tuple[type[CESQLError], tuple[object, ...]]:
        return type(self), (self.message, self.position)


class ParseError(CESQLError):
    """The expression text is not valid CESQL (raised by ``parse``).

    ``position`` is the 0-based offset of the offending character or token; ``str()``
    shows the message followed by the source line with a caret under that position.
    """

    kind: ClassVar[str] = "parse"
    position: int

    def __init__(self, message: str, position: int, source: str = "") -> None:
        super().__init__(_with_caret(message, position, source), position)
        self.reason = message
        self.source = source

    def __reduce__(self) -> tuple[type[CESQLError], tuple[object, ...]]:
        return type(self), (self.reason, self.position, self.source)


class MathError(CESQLError):
    """Division or modulo by zero, or a 32-bit integer overflow."""

    kind: ClassVar[str] = "math"


class CastError(CESQLError):
    """An implicit or explicit type cast failed."""

    kind: ClassVar[str] = "cast"


class MissingAttributeError(CESQLError):
    """The expression addresses an attribute (or data path) the event does not have."""

    kind: ClassVar[str] = "missingAttribute"


class MissingFunctionError(CESQLError):
    """No function with this name accepts this number of arguments."""

    kind: ClassVar[str] = "missingFunction"


class UnknownFunctionError(ParseError, MissingFunctionError):
    """A call that no registered function serves, found when the expression is compiled.

    CESQL 1.0 lets such a call evaluate to ``false`` with a MissingFunctionError
    (section 3.5) and recommends checking what can be checked at compile time
    (section 3.3); ``parse`` does the latter unless ``check_functions=False``. It is a
    :class:`ParseError` (what ``parse`` raises) of the spec's kind
    ``missingFunction``, so it is also a :class:`MissingFunctionError`; ``name`` is
    the called name (upper-case) and ``arity`` the number of arguments.
    """

    kind: ClassVar[str] = "missingFunction"

    def __init__(
        self, message: str, position: int, source: str = "", name: str = "", arity: int = 0
    ) -> None:
        super().__init__(message, position, source)
        self.name = name
        self.arity = arity

    def __reduce__(self) -> tuple[type[CESQLError], tuple[object, ...]]:
        return type(self), (self.reason, self.position, self.source, self.name, self.arity)


class FunctionEvaluationError(CESQLError):
    """A function was called with arguments outside its domain, or failed."""

    kind: ClassVar[str] = "functionEvaluation"


class GenericError(CESQLError):
    """Any other error."""

    kind: ClassVar[str] = "generic"


def _with_caret(message: str, position: int, source: str) -> str:
    """``message at position N`` plus a window of ``source`` with a caret under N."""
    head = f"{message} at position {position}"
    if not source:
        return head
    start = max(0, position - _CONTEXT)
    end = min(len(source), position + _CONTEXT)
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(source) else ""
    # Tabs and newlines would shift the caret: show them as spaces.
    window = source[start:end].translate(_FLATTEN)
    caret = " " * (len(prefix) + position - start) + "^"
    return f"{head}\n  {prefix}{window}{suffix}\n  {caret}"


_FLATTEN = {ord(c): " " for c in "\t\n\r\v\f"}
