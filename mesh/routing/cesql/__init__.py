"""CloudEvents SQL Expression Language (CESQL) 1.0, compiled to Python closures.

API::

    from mesh.routing import cesql

    expr = cesql.parse("type LIKE 'shipment.%' AND severity > 3")  # ParseError if invalid
    value, errors = expr.evaluate(event)
    expr.matches(event)      # filter semantics: value is True and no errors
    expr.source, expr.ast    # the text; the syntax tree (dataclasses in cesql.ast)

``event`` is a mapping of attribute name to value (context attributes and
extensions; a ``"data"`` key holds the event data) or an object with
``get_attributes()`` returning such a mapping and, optionally, a ``.data``
attribute. Attribute values map to CESQL types: ``str`` -> String, ``bool`` ->
Boolean, 32-bit ``int`` -> Integer; anything else is represented as String
(``datetime`` as RFC 3339 with ``Z`` for UTC, bytes as base64). ``None`` is absent.

Error model. ``evaluate`` never raises: it returns the value and a list of
:class:`CESQLError` whose ``.kind`` is one of ``parse``, ``math``, ``cast``,
``missingAttribute``, ``missingFunction``, ``functionEvaluation``, ``generic``
(section 3.3). Evaluation goes on after an error, with the value the spec
prescribes: ``5 / 0`` is ``0`` plus a MathError, ``NOT 10`` is ``true`` plus a
CastError (the failed cast yields ``false``), ``LEFT('abc', -1)`` is ``'abc'`` plus a
FunctionEvaluationError. An operator or function whose operand or argument
recorded an error (a missing attribute included, section 3.2) does not compute: it
returns the zero value of its return type (``false``, ``0`` or ``''``), so
``1 / missing`` is ``0`` without a MathError and ``true AND (1 != 1 / 0)`` is
``false`` (as the TCK requires). A bare missing attribute evaluates to ``false``.
AND/OR short-circuit (section 3.6). Fail-fast is the caller's concern: a filter
matches only if the value is ``True`` and there are no errors
(``Expression.matches``). Only :func:`parse` raises, with :class:`ParseError`
(``.position`` is the 0-based offset of the problem; the message shows it with a
caret); it also rejects text longer than ``MAX_LENGTH`` (4096) characters or
nested deeper than ``MAX_NESTING`` (64) / ``MAX_DEPTH`` (128 tree levels), and a
call that no function serves (unknown name or number of arguments) with
:class:`UnknownFunctionError`, a ParseError of kind ``missingFunction`` that names
the functions there are (section 3.3 recommends compile-time checks);
``parse(text, check_functions=False)`` keeps section 3.5's run-time behaviour
instead (such a call evaluates to ``false`` plus a MissingFunctionError).

Choices where the spec or the TCK leave room (see also the module docs):

* Keywords, ``TRUE``/``FALSE``, function names and attribute names are
  case-insensitive (attribute names are lower-cased, as CloudEvents requires;
  the TCK uses ``EXISTS SOURCE``).
* String literals: ``\\'`` (``\\"``) is the delimiting quote; every other backslash
  is kept as is. In LIKE patterns a backslash escapes only ``%`` and ``_``.
* Precedence is the spec's (section 3.6): unary operators bind tighter than
  ``LIKE``/``IN``, which bind tighter than arithmetic, comparisons, then
  ``AND``/``OR``/``XOR`` (one level, left to right): ``a OR b AND c`` is
  ``(a OR b) AND c``, and ``NOT a = b`` is ``(NOT a) = b``.
* Implicit casts follow section 3.7, except Integer -> Boolean, which is a
  CastError when implicit (``NOT 10`` is ``true`` plus a CastError, as the TCK
  requires); the explicit ``BOOL(10)`` is ``true``.
* Integer arithmetic overflowing 32 bits gives a MathError and the saturated
  result (as ``ABS(-2147483648)`` does); integer literals must fit 32 bits.
* ``EXISTS`` of a required attribute (id, source, specversion, type) is always true.

Data extension (event-mesh, **not** CESQL 1.0): ``data.a.b`` reads decoded JSON
event data (see :mod:`mesh.routing.cesql.data`); ``EXISTS data.a.b`` tests for a
non-null value. Strings, booleans and 32-bit integers (3.0 counts as 3) map to
CESQL values; an absent
path or ``null`` is a missingAttribute error, any other JSON value (objects, arrays,
fractional or huge numbers) a cast error, and either way the path acts like a
missing attribute. ``parse(text, strict=True)`` rejects ``data.`` paths with a
ParseError; plain ``data`` is a valid CESQL identifier in both modes, always
missing (CloudEvents reserves the name).

Custom functions: ``reg = cesql.default_registry(); reg.register(cesql.Function(...));
cesql.parse(text, functions=reg)``.
"""

from . import ast
from .errors import (
    CastError,
    CESQLError,
    FunctionEvaluationError,
    GenericError,
    MathError,
    MissingAttributeError,
    MissingFunctionError,
    ParseError,
    UnknownFunctionError,
)
from .expression import Expression, parse
from .functions import Function, FunctionRegistry, default_registry
from .parser import MAX_DEPTH, MAX_LENGTH, MAX_NESTING
from .types import Type, Value

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NESTING",
    "CESQLError",
    "CastError",
    "Expression",
    "Function",
    "FunctionEvaluationError",
    "FunctionRegistry",
    "GenericError",
    "MathError",
    "MissingAttributeError",
    "MissingFunctionError",
    "ParseError",
    "Type",
    "UnknownFunctionError",
    "Value",
    "ast",
    "default_registry",
    "parse",
]
