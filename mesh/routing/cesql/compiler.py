"""Compile a syntax tree into a tree of Python closures.

Every node becomes ``fn(attributes, event, errors) -> value``: ``attributes`` is the
event's attribute mapping, ``event`` the event itself (for the data extension) and
``errors`` the list evaluation errors are appended to. Nothing is ever passed to
``eval``/``exec``/``compile``.

Compile-time work: constant subtrees are folded (when they evaluate without
errors), LIKE patterns and literal IN sets are prepared once, functions are
resolved (a call nothing serves is an UnknownFunctionError unless the caller asks
for the spec's run-time MissingFunctionError), implicit casts are chosen from the
operands' static types, and common shapes such as ``attr = 'literal'`` get
dedicated closures.

Error propagation. Section 3.2 says a subexpression referencing a missing attribute
evaluates to the zero value of its return type; the TCK applies the same rule to
every error (``true AND (1 != 1 / 0)`` is ``false`` with a MathError). So: when an
operand or argument recorded an error, the operator or function consuming it does
not compute; it returns the zero value of its return type (``false``, ``0``,
``''``), which then propagates upwards the same way. Errors an operator raises
itself (a failed implicit cast of an operand, division by zero, overflow, a
function's domain error) come with the value the spec prescribes for them, e.g.
``NOT 10`` is ``true`` (the failed cast gives ``false``) and ``5 / 0`` is ``0``.
Operands are all evaluated (complete evaluation) except where AND/OR
short-circuit; an AND/OR whose left operand failed returns ``false`` at once.
An absent attribute itself evaluates to ``false`` (the zero value when the type
is unknown), which is what a bare ``missing`` expression returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .ast import (
    Attribute,
    Binary,
    Call,
    DataExists,
    DataPath,
    Exists,
    In,
    Like,
    Literal,
    Node,
    Unary,
)
from .data import convert, event_data, lookup, step
from .errors import CESQLError, MissingAttributeError, MissingFunctionError, UnknownFunctionError
from .functions import Function, FunctionRegistry
from .like import compile_like
from .operators import (
    ARITHMETIC,
    CASTERS,
    ORDERING,
    STATIC,
    equal,
    guarded,
    overflow,
    trusted,
)
from .parser import REQUIRED_ATTRIBUTES
from .types import (
    INT32_MAX,
    INT32_MIN,
    MISSING,
    Type,
    Value,
    attribute_value,
    cast,
    implicit_bool,
    implicit_int,
    to_str,
)

__all__ = ["Fn", "compile_tree"]

Errors = list[CESQLError]
#: A compiled node.
Fn = Callable[[Mapping[str, Any], object, Errors], Any]


@dataclass(slots=True)
class _C:
    """A compiled node with what is known about it statically."""

    fn: Fn
    type: Type | None  # None: only known at run time
    const: bool = False
    value: Value = False


def compile_tree(
    node: Node, functions: FunctionRegistry, *, source: str = "", check_functions: bool = True
) -> Fn:
    """The closure evaluating ``node``.

    With ``check_functions``, a call that no function of ``functions`` serves (unknown
    name or arity) raises :class:`UnknownFunctionError`, its caret placed in
    ``source``; without, it compiles to a closure returning ``false`` with a
    MissingFunctionError, as CESQL 1.0 section 3.5 describes.
    """
    return _Compiler(functions, source, check_functions).compile(node).fn


def _constant(value: Value) -> _C:
    def const(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
        return value

    return _C(const, STATIC[type(value)], const=True, value=value)


def _missing(name: str, position: int) -> MissingAttributeError:
    return MissingAttributeError(f"attribute {name!r} is not present in the event", position)


class _Compiler:
    def __init__(self, functions: FunctionRegistry, source: str, check_functions: bool) -> None:
        self.functions = functions
        self.source = source
        self.check_functions = check_functions

    def compile(self, node: Node) -> _C:
        if isinstance(node, Literal):
            return _constant(node.value)
        if isinstance(node, Attribute):
            return self.attribute(node)
        if isinstance(node, Exists):
            return self.exists(node)
        if isinstance(node, DataPath):
            return self.data_path(node)
        if isinstance(node, DataExists):
            return self.data_exists(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Like):
            return self.like(node)
        if isinstance(node, In):
            return self.in_(node)
        return self.call(node)

    @staticmethod
    def fold(compiled: _C, *operands: _C) -> _C:
        """``compiled`` as a constant when all operands are and it evaluates cleanly."""
        if not all(o.const for o in operands):
            return compiled
        errs: Errors = []
        value = compiled.fn({}, None, errs)
        if errs or type(value) not in STATIC:
            return compiled
        return _constant(value)

    # --- leaves -------------------------------------------------------------------------

    def attribute(self, node: Attribute) -> _C:
        name, pos = node.name, node.pos
        if name == "data":  # reserved by CloudEvents: never a context attribute

            def absent(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                errs.append(_missing(name, pos))
                return False

            return _C(absent, None)

        def get(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            v = a.get(name)
            if type(v) is str:
                return v
            v = attribute_value(v)
            if v is MISSING:
                errs.append(_missing(name, pos))
                return False
            return v

        return _C(get, None)

    def exists(self, node: Exists) -> _C:
        name = node.name
        if name in REQUIRED_ATTRIBUTES:
            return _constant(True)
        if name == "data":
            return _constant(False)

        def exists(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            return a.get(name) is not None

        return _C(exists, Type.BOOLEAN)

    def data_path(self, node: DataPath) -> _C:
        path, pos = node.path, node.pos

        def get(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            v: Any = a.get("data") if ev is a else getattr(ev, "data", None)
            for segment in path:
                v = v.get(segment) if type(v) is dict else step(v, segment)
                if v is None:
                    break
            t = type(v)
            if t is str or t is bool or (t is int and INT32_MIN <= v <= INT32_MAX):
                return v
            v = convert(v, path, errs, pos)
            return False if v is MISSING else v

        return _C(get, None)

    def data_exists(self, node: DataExists) -> _C:
        path = node.path

        def exists(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            return lookup(event_data(a, ev), path) is not None

        return _C(exists, Type.BOOLEAN)

    # --- operators ----------------------------------------------------------------------

    def unary(self, node: Unary) -> _C:
        operand = self.compile(node.operand)
        inner, pos, opos = operand.fn, node.pos, node.operand.pos
        if node.op == "NOT":
            if operand.type is Type.BOOLEAN:

                def not_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                    n = len(errs)
                    v = inner(a, ev, errs)
                    return False if len(errs) != n else not v
            else:

                def not_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                    n = len(errs)
                    v = inner(a, ev, errs)
                    if len(errs) != n:
                        return False
                    return not implicit_bool(v, errs, opos)

            return self.fold(_C(not_, Type.BOOLEAN), operand)

        def negate(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            n = len(errs)
            v = inner(a, ev, errs)
            if len(errs) != n:
                return 0
            r = -implicit_int(v, errs, opos)
            return r if r <= INT32_MAX else overflow(r, errs, pos)

        return self.fold(_C(negate, Type.INTEGER), operand)

    def binary(self, node: Binary) -> _C:
        op = node.op.upper()
        if op in ("AND", "OR"):
            chain = self.chain(op, node)
            if chain is not None:
                return chain
        left = self.compile(node.left)
        right = self.compile(node.right)
        if op in ("AND", "OR", "XOR"):
            compiled = self.logical(op, left, right, node)
        elif op in ("=", "!=", "<>"):
            compiled = self.equality(op != "=", left, right, node)
        elif op in ORDERING:
            compiled = self.ordering(op, left, right, node)
        else:
            compiled = self.arithmetic(op, left, right, node)
        return self.fold(compiled, left, right)

    def chain(self, op: str, node: Binary) -> _C | None:
        """``a AND b AND c ...`` (or OR) as one loop, where that is equivalent to nesting.

        AND chains always are; OR chains only when every operand is Boolean (an
        OR's own cast error would otherwise make the enclosing OR return false).
        """
        leaves: list[Node] = []
        stack: list[Node] = [node]
        while stack:
            current = stack.pop()
            if isinstance(current, Binary) and current.op.upper() == op:
                stack.append(current.right)
                stack.append(current.left)
            else:
                leaves.append(current)
        if len(leaves) < 3:
            return None
        operands = [self.compile(leaf) for leaf in leaves]
        casts = tuple(
            (c.fn, None if c.type is Type.BOOLEAN else implicit_bool, leaf.pos)
            for c, leaf in zip(operands, leaves, strict=True)
        )
        fns = tuple(c.fn for c in operands)
        plain = all(c.type is Type.BOOLEAN for c in operands)
        if op == "OR":
            if not plain:
                return None

            def any_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                for f in fns:
                    v = f(a, ev, errs)
                    if len(errs) != n:
                        return False
                    if v:
                        return True
                return False

            return self.fold(_C(any_, Type.BOOLEAN), *operands)
        if plain:

            def all_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                for f in fns:
                    if not f(a, ev, errs) or len(errs) != n:
                        return False
                return True
        else:

            def all_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                for f, to_bool, position in casts:
                    v = f(a, ev, errs)
                    if len(errs) != n:
                        return False
                    if not (v if to_bool is None else to_bool(v, errs, position)):
                        return False
                return True

        return self.fold(_C(all_, Type.BOOLEAN), *operands)

    def logical(self, op: str, left: _C, right: _C, node: Binary) -> _C:
        lf, rf = left.fn, right.fn
        lpos, rpos = node.left.pos, node.right.pos
        to_bool_l = CASTERS[Type.BOOLEAN] if left.type is not Type.BOOLEAN else None
        to_bool_r = CASTERS[Type.BOOLEAN] if right.type is not Type.BOOLEAN else None
        if op == "AND":
            if to_bool_l is None and to_bool_r is None:

                def and_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                    n = len(errs)
                    if not lf(a, ev, errs) or len(errs) != n:
                        return False
                    y = rf(a, ev, errs)
                    return y if len(errs) == n else False
            else:

                def and_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                    n = len(errs)
                    x = lf(a, ev, errs)
                    if len(errs) != n:
                        return False
                    if not (x if to_bool_l is None else to_bool_l(x, errs, lpos)):
                        return False
                    y = rf(a, ev, errs)
                    if len(errs) != n:
                        return False
                    return y if to_bool_r is None else to_bool_r(y, errs, rpos)

            return _C(and_, Type.BOOLEAN)
        if op == "OR":
            if to_bool_l is None and to_bool_r is None:

                def or_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                    n = len(errs)
                    x = lf(a, ev, errs)
                    if len(errs) != n:
                        return False
                    if x:
                        return True
                    y = rf(a, ev, errs)
                    return y if len(errs) == n else False
            else:

                def or_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                    n = len(errs)
                    x = lf(a, ev, errs)
                    if len(errs) != n:
                        return False
                    if x if to_bool_l is None else to_bool_l(x, errs, lpos):
                        return True
                    n = len(errs)  # a failed cast of x is this OR's own error
                    y = rf(a, ev, errs)
                    if len(errs) != n:
                        return False
                    return y if to_bool_r is None else to_bool_r(y, errs, rpos)

            return _C(or_, Type.BOOLEAN)

        def xor(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            n = len(errs)
            x = lf(a, ev, errs)
            y = rf(a, ev, errs)
            if len(errs) != n:
                return False
            return implicit_bool(x, errs, lpos) != implicit_bool(y, errs, rpos)

        return _C(xor, Type.BOOLEAN)

    def equality(self, negated: bool, left: _C, right: _C, node: Binary) -> _C:
        lf, rf = left.fn, right.fn
        lpos = node.left.pos
        if (
            isinstance(node.left, Attribute)
            and node.left.name != "data"
            and right.const
            and type(right.value) is str
        ):
            return _C(self.attribute_equals(node.left, str(right.value), negated), Type.BOOLEAN)
        if right.type is not None:
            caster = CASTERS[right.type]

            def eq(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                x = lf(a, ev, errs)
                y = rf(a, ev, errs)
                if len(errs) != n:
                    return False
                return (caster(x, errs, lpos) == y) is not negated
        else:

            def eq(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                x = lf(a, ev, errs)
                y = rf(a, ev, errs)
                if len(errs) != n:
                    return False
                return equal(x, y, errs, lpos) is not negated

        return _C(eq, Type.BOOLEAN)

    @staticmethod
    def attribute_equals(node: Attribute, literal: str, negated: bool) -> Fn:
        """``attr = 'literal'`` (or ``!=``): the most common filter clause."""
        name, pos = node.name, node.pos
        if not negated:

            def eq(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                v = a.get(name)
                if type(v) is str:
                    return v == literal
                v = attribute_value(v)
                if v is MISSING:
                    errs.append(_missing(name, pos))
                    return False
                return to_str(v) == literal

            return eq

        def ne(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            v = a.get(name)
            if type(v) is str:
                return v != literal
            v = attribute_value(v)
            if v is MISSING:
                errs.append(_missing(name, pos))
                return False
            return to_str(v) != literal

        return ne

    def ordering(self, op: str, left: _C, right: _C, node: Binary) -> _C:
        lf, rf = left.fn, right.fn
        lpos, rpos = node.left.pos, node.right.pos
        compare = ORDERING[op]

        def order(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            n = len(errs)
            x = lf(a, ev, errs)
            y = rf(a, ev, errs)
            if len(errs) != n:
                return False
            return compare(implicit_int(x, errs, lpos), implicit_int(y, errs, rpos))

        return _C(order, Type.BOOLEAN)

    def arithmetic(self, op: str, left: _C, right: _C, node: Binary) -> _C:
        lf, rf = left.fn, right.fn
        lpos, rpos, pos = node.left.pos, node.right.pos, node.pos
        compute = ARITHMETIC[op]

        def arith(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            n = len(errs)
            x = lf(a, ev, errs)
            y = rf(a, ev, errs)
            if len(errs) != n:
                return 0
            return compute(implicit_int(x, errs, lpos), implicit_int(y, errs, rpos), errs, pos)

        return _C(arith, Type.INTEGER)

    def like(self, node: Like) -> _C:
        operand = self.compile(node.expr)
        matches = compile_like(node.pattern)
        negated = node.negated
        if isinstance(node.expr, Attribute) and node.expr.name != "data":
            name, pos = node.expr.name, node.expr.pos

            def like(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                v = a.get(name)
                if type(v) is str:
                    return matches(v) is not negated
                v = attribute_value(v)
                if v is MISSING:
                    errs.append(_missing(name, pos))
                    return False
                return matches(to_str(v)) is not negated
        else:
            inner = operand.fn

            def like(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                v = inner(a, ev, errs)
                if len(errs) != n:
                    return False
                return matches(to_str(v)) is not negated

        return self.fold(_C(like, Type.BOOLEAN), operand)

    def in_(self, node: In) -> _C:
        operand = self.compile(node.expr)
        items = [self.compile(v) for v in node.values]
        inner, negated = operand.fn, node.negated
        if all(item.const for item in items):
            tables = self.literal_sets([item.value for item in items], node)

            def in_(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                x = inner(a, ev, errs)
                if len(errs) != n:
                    return False
                members, failures = tables[type(x)]
                if failures:
                    errs.extend(type(e)(e.message, e.position) for e in failures)
                return (x in members) is not negated

            return self.fold(_C(in_, Type.BOOLEAN), operand)
        fns = [item.fn for item in items]
        positions = [v.pos for v in node.values]

        def dynamic_in(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            n = len(errs)
            x = inner(a, ev, errs)
            ys = [f(a, ev, errs) for f in fns]
            if len(errs) != n:
                return False
            caster = CASTERS[STATIC[type(x)]]
            found = False
            for y, position in zip(ys, positions, strict=True):
                if caster(y, errs, position) == x:
                    found = True
            return found is not negated

        return _C(dynamic_in, Type.BOOLEAN)

    @staticmethod
    def literal_sets(values: list[Value], node: In) -> dict[type, tuple[frozenset[Value], Errors]]:
        """For each possible type of the left operand: the set cast to it, and cast errors."""
        tables: dict[type, tuple[frozenset[Value], Errors]] = {}
        for py_type, target in STATIC.items():
            failures: Errors = []
            members = frozenset(
                cast(v, target, failures, item.pos)
                for v, item in zip(values, node.values, strict=True)
            )
            tables[py_type] = (members, failures)
        return tables

    def call(self, node: Call) -> _C:
        args = [self.compile(arg) for arg in node.args]
        function = self.functions.resolve(node.name, len(args))
        name, pos, arity = node.name, node.pos, len(args)
        if function is None and self.check_functions:
            raise UnknownFunctionError(
                self.functions.explain(name, arity), pos, self.source, name.upper(), arity
            )
        if function is None:

            def missing_function(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                errs.append(
                    MissingFunctionError(
                        f"no function {name} taking {arity} argument{'s' * (arity != 1)}", pos
                    )
                )
                return False

            return _C(missing_function, Type.BOOLEAN)
        compiled = _C(self.invoke(function, args, node), _static_return(function))
        return self.fold(compiled, *args) if function.trusted else compiled

    @staticmethod
    def invoke(function: Function, args: list[_C], node: Call) -> Fn:
        impl = function.impl
        zero = function.returns.zero
        fns = [arg.fn for arg in args]
        casts = [
            (CASTERS.get(t), arg_node.pos)
            for t, arg_node in zip(function.param_types(len(args)), node.args, strict=True)
        ]
        guard = trusted(impl) if function.trusted else guarded(function, node.pos)

        if len(fns) == 1:
            (f,) = fns
            ((caster, position),) = casts

            def call1(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
                n = len(errs)
                v = f(a, ev, errs)
                if len(errs) != n:
                    return zero
                if caster is not None:
                    v = caster(v, errs, position)
                return guard(errs, [v])

            return call1

        def call(a: Mapping[str, Any], ev: object, errs: Errors) -> Any:
            n = len(errs)
            vs = [f(a, ev, errs) for f in fns]
            if len(errs) != n:
                return zero
            cast_vs = [
                v if caster is None else caster(v, errs, position)
                for v, (caster, position) in zip(vs, casts, strict=True)
            ]
            return guard(errs, cast_vs)

        return call


def _static_return(function: Function) -> Type | None:
    return None if function.returns is Type.ANY else function.returns
