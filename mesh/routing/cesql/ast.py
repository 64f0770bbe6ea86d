"""The CESQL abstract syntax tree: public, immutable node dataclasses.

``parse(text).ast`` is the root node. Nodes compare by structure only (``pos``, the
0-based source offset of the node, is excluded from equality), so a planner can
match shapes such as ``Binary("=", Attribute("type"), Literal("x"))`` directly.

Operators are stored as written: ``Binary.op`` is one of ``= != <> < <= > >= + - *
/ %`` or ``AND OR XOR`` (keywords upper-cased); ``Unary.op`` is ``NOT`` or ``-``.
Attribute names are lower-cased, function names upper-cased. A sign directly in
front of an integer literal is part of the literal (``-5`` is ``Literal(-5)``).

``DataPath`` and ``DataExists`` belong to the event-mesh data extension (not CESQL
1.0); ``Attribute``/``Exists`` never refer to event data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import ParseError
from .lexer import Tok, tokenize
from .types import Value

__all__ = [
    "Attribute",
    "Binary",
    "Call",
    "DataExists",
    "DataPath",
    "Exists",
    "In",
    "Like",
    "Literal",
    "Node",
    "Unary",
    "children",
    "render",
    "render_string",
    "walk",
]


@dataclass(frozen=True, slots=True)
class Literal:
    """A String, Integer or Boolean literal."""

    value: Value
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Attribute:
    """A context attribute or extension, by its (lower-case) name."""

    name: str
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Unary:
    """``NOT operand`` or ``-operand``."""

    op: str
    operand: Node
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary arithmetic, comparison or logical operation."""

    op: str
    left: Node
    right: Node
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Like:
    """``expr [NOT] LIKE 'pattern'``; ``pattern`` is the literal's value (with its escapes)."""

    expr: Node
    pattern: str
    negated: bool = False
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Exists:
    """``EXISTS name``."""

    name: str
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class In:
    """``expr [NOT] IN (v1, v2, ...)``."""

    expr: Node
    values: tuple[Node, ...]
    negated: bool = False
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Call:
    """A function invocation; ``name`` is upper-cased."""

    name: str
    args: tuple[Node, ...] = ()
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DataPath:
    """Extension: ``data.a.b`` reads JSON event data; ``path`` is ``("a", "b")``."""

    path: tuple[str, ...]
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DataExists:
    """Extension: ``EXISTS data.a.b`` is true when the path holds a non-null value."""

    path: tuple[str, ...]
    pos: int = field(default=0, compare=False, repr=False)


Node = Literal | Attribute | Unary | Binary | Like | Exists | In | Call | DataPath | DataExists


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``, left to right."""
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Like):
        return (node.expr,)
    if isinstance(node, In):
        return (node.expr, *node.values)
    if isinstance(node, Call):
        return node.args
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, pre-order (iterative: safe for any depth)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def render_string(value: str) -> str:
    """``value`` as a CESQL string literal; ValueError if no literal can spell it.

    ``\\'`` always means the quote, so a value with an odd run of backslashes right
    before a quote (with both quote styles) or at its end cannot be written.
    """
    for quote in ("'", '"'):
        literal = quote + value.replace(quote, "\\" + quote) + quote
        try:
            tokens = tokenize(literal)
        except ParseError:
            continue
        if len(tokens) == 2 and tokens[0].kind is Tok.STRING and tokens[0].text == value:
            return literal
    raise ValueError(f"no CESQL string literal spells {value!r}")


def render(node: Node) -> str:
    """Canonical, fully parenthesized CESQL text; ``parse(render(n)).ast == n``."""
    if isinstance(node, Literal):
        value = node.value
        if type(value) is bool:
            return "TRUE" if value else "FALSE"
        if type(value) is int:
            return str(value)
        return render_string(str(value))
    if isinstance(node, Attribute):
        return node.name
    if isinstance(node, Exists):
        return f"EXISTS {node.name}"
    if isinstance(node, DataPath):
        return "data." + ".".join(node.path)
    if isinstance(node, DataExists):
        return "EXISTS data." + ".".join(node.path)
    if isinstance(node, Unary):
        return (
            f"{node.op} ({render(node.operand)})"
            if node.op == "NOT"
            else f"-({render(node.operand)})"
        )
    if isinstance(node, Binary):
        return f"({render(node.left)} {node.op} {render(node.right)})"
    if isinstance(node, Like):
        op = "NOT LIKE" if node.negated else "LIKE"
        return f"({render(node.expr)} {op} {render_string(node.pattern)})"
    if isinstance(node, In):
        op = "NOT IN" if node.negated else "IN"
        items = ", ".join(render(v) for v in node.values)
        return f"({render(node.expr)} {op} ({items}))"
    args = ", ".join(render(a) for a in node.args)
    return f"{node.name}({args})"
