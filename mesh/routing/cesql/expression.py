"""``parse()`` and the compiled :class:`Expression`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.event import Event

from .ast import Node
from .compiler import compile_tree
from .errors import CESQLError, GenericError, ParseError
from .functions import FunctionRegistry, builtin_registry
from .parser import parse_ast
from .types import Value

__all__ = ["Expression", "parse"]


class Expression:
    """A parsed and compiled CESQL expression; immutable and safe to share between threads."""

    __slots__ = ("_fn", "ast", "source", "strict")

    def __init__(
        self,
        source: str,
        ast: Node,
        *,
        strict: bool = False,
        functions: FunctionRegistry | None = None,
        check_functions: bool = True,
    ) -> None:
        self.source = source
        self.ast = ast
        self.strict = strict
        try:
            self._fn = compile_tree(
                ast, functions or builtin_registry(), source=source, check_functions=check_functions
            )
        except RecursionError:  # only if the caller's stack is already nearly exhausted
            raise ParseError("expression is too deeply nested", 0, source) from None

    def evaluate(self, event: Any) -> tuple[Value, list[CESQLError]]:
        """Evaluate against ``event``: ``(value, errors)``; never raises for a valid input.

        ``event`` is a mapping of attribute name to value (its ``"data"`` key holding
        the event data), or an object with ``get_attributes()`` (and optionally
        ``.data``). TypeError for anything else.
        """
        if type(event) is Event:  # the common case: its cached read-only view
            attributes: Mapping[str, Any] = event.attributes
        elif type(event) is dict or isinstance(event, Mapping):
            attributes = event
        else:
            get_attributes = getattr(event, "get_attributes", None)
            if get_attributes is None:
                raise TypeError(
                    "CESQL evaluates a mapping of attributes or an object with "
                    f"get_attributes(), not {type(event).__name__}"
                )
            attributes = get_attributes()
        errors: list[CESQLError] = []
        try:
            value = self._fn(attributes, event, errors)
        except Exception as exc:  # defensive: evaluation is total, this is a bug
            errors.append(GenericError(f"internal error evaluating {self.source!r}: {exc!r}"))
            return False, errors
        return value, errors

    def matches(self, event: Any) -> bool:
        """Filter semantics (section 1.2): true only for a Boolean ``true`` without errors."""
        value, errors = self.evaluate(event)
        return value is True and not errors

    def __repr__(self) -> str:
        return f"cesql.parse({self.source!r}{', strict=True' if self.strict else ''})"


def parse(
    text: str,
    strict: bool = False,
    *,
    functions: FunctionRegistry | None = None,
    check_functions: bool = True,
) -> Expression:
    """Parse and compile CESQL ``text``; raises :class:`ParseError` if it is invalid.

    ``strict=True`` accepts only CESQL 1.0 (rejecting ``data.<path>``); ``functions``
    replaces the built-in function registry (see ``default_registry()``). A call that
    no function serves (``EVAL('x')``, ``LENGTH()``) raises
    :class:`UnknownFunctionError`, a ParseError of kind ``missingFunction`` naming
    the functions there are; ``check_functions=False`` compiles it instead to
    ``false`` plus a MissingFunctionError at each evaluation (CESQL 1.0 section 3.5).
    """
    return Expression(
        text,
        parse_ast(text, strict=strict),
        strict=strict,
        functions=functions,
        check_functions=check_functions,
    )
