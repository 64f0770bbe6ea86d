"""Planning filters: what the broker can filter, what the client must, and a rule index.

Channels are event types, so the part of a filter that constrains ``type`` can
be pushed down as channel patterns (`plan`), in the neutral syntax; each transport
translates them to its broker's (NATS subjects, AMQP binding keys, Kafka topic
regexes), so the broker drops what does not match. Whatever the patterns cannot
express stays a compiled residual predicate evaluated in the client; events it
rejects are acked and counted, never handed to the handler.

Type constraints come from every dialect: ``exact``/``prefix`` on ``type``,
``all`` (intersection), ``any`` (union of exact sets), and from CESQL:
``type = 'x'``, ``type IN ('x', 'y')``, ``type LIKE 'a.b.%'`` and their AND/OR
combinations. Anything else means "no constraint" (subscribe to ``>``): the
planner is conservative, never wrong.

`RuleIndex` dispatches an event to the rules that can match it: rules are
indexed by exact type and by type prefix, so the cost per event grows with the
number of candidate rules, not with the number of rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from mesh.event import Event
from mesh.routing.filters import FilterSpec, Predicate, compile_filter

__all__ = ["Plan", "RuleIndex", "TypeConstraint", "channel_patterns", "plan", "type_constraint"]

K = TypeVar("K")
_LIKE_SPECIAL = frozenset("%_\\")


@dataclass(frozen=True, slots=True)
class TypeConstraint:
    """What a filter requires of ``type``: one of a set of values, or a prefix.

    Both None means no constraint. ``complete`` is True when the filter says
    nothing but this, so no residual predicate is needed once it is pushed down.
    """

    exact: frozenset[str] | None = None
    prefix: str | None = None
    complete: bool = False


NONE = TypeConstraint()


def type_constraint(spec: FilterSpec | None) -> TypeConstraint:
    """The constraint ``spec`` places on the event type (see the module docstring)."""
    if spec is None:
        return TypeConstraint(complete=True)
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        return _intersect([type_constraint(item) for item in spec])
    if not isinstance(spec, Mapping) or len(spec) != 1:
        return NONE
    ((kind, body),) = spec.items()
    if (
        kind in ("exact", "prefix")
        and isinstance(body, Mapping)
        and isinstance(body.get("type"), str)
    ):
        complete = len(body) == 1
        if kind == "exact":
            return TypeConstraint(exact=frozenset({body["type"]}), complete=complete)
        return TypeConstraint(prefix=body["type"], complete=False)
    if kind == "all" and isinstance(body, Sequence):
        return _intersect([type_constraint(item) for item in body])
    if kind == "any" and isinstance(body, Sequence) and body:
        return _union([type_constraint(item) for item in body])
    if kind == "sql" and isinstance(body, str):
        from mesh.routing import cesql

        try:
            return _sql_constraint(cesql.parse(body).ast)
        except cesql.CESQLError:
            return NONE
    return NONE


def _intersect(parts: list[TypeConstraint]) -> TypeConstraint:
    complete = all(p.complete for p in parts)
    exact = [p.exact for p in parts if p.exact is not None]
    prefixes = [p.prefix for p in parts if p.prefix is not None]
    if exact:
        values = frozenset.intersection(*exact)
        values = frozenset(v for v in values if all(v.startswith(p) for p in prefixes))
        return TypeConstraint(exact=values, complete=complete and not prefixes)
    if prefixes:
        longest = max(prefixes, key=len)
        if all(longest.startswith(p) for p in prefixes):
            return TypeConstraint(prefix=longest)
        return TypeConstraint(exact=frozenset())  # disjoint prefixes: nothing matches
    return TypeConstraint(complete=complete)


def _union(parts: list[TypeConstraint]) -> TypeConstraint:
    if all(p.exact is not None for p in parts):
        return TypeConstraint(
            exact=frozenset().union(*(p.exact or () for p in parts)),
            complete=all(p.complete for p in parts),
        )
    return NONE


def _sql_constraint(node: object) -> TypeConstraint:
    from mesh.routing.cesql import ast

    if isinstance(node, ast.Binary):
        if node.op == "AND":
            return _intersect([_sql_constraint(node.left), _sql_constraint(node.right)])
        if node.op == "OR":
            return _union([_sql_constraint(node.left), _sql_constraint(node.right)])
        if node.op == "=":
            for attr, lit in ((node.left, node.right), (node.right, node.left)):
                if (
                    isinstance(attr, ast.Attribute)
                    and attr.name == "type"
                    and isinstance(lit, ast.Literal)
                    and isinstance(lit.value, str)
                ):
                    return TypeConstraint(exact=frozenset({lit.value}), complete=True)
    if (
        isinstance(node, ast.In)
        and not node.negated
        and isinstance(node.expr, ast.Attribute)
        and node.expr.name == "type"
        and node.values
    ):
        values = [v.value for v in node.values if isinstance(v, ast.Literal)]
        if len(values) == len(node.values) and all(isinstance(v, str) for v in values):
            return TypeConstraint(exact=frozenset(str(v) for v in values), complete=True)
    if (
        isinstance(node, ast.Like)
        and not node.negated
        and isinstance(node.expr, ast.Attribute)
        and node.expr.name == "type"
        and node.pattern.endswith("%")
        and not _LIKE_SPECIAL & set(node.pattern[:-1])
    ):
        return TypeConstraint(prefix=node.pattern[:-1])
    return NONE


def channel_patterns(constraint: TypeConstraint) -> list[str]:
    """Neutral channel patterns covering every event type the constraint allows.

    An exact type is its own channel; a prefix ending in ``.`` becomes
    ``prefix.>``; anything else needs every channel (``>``).
    """
    if constraint.exact is not None:
        return sorted(constraint.exact)
    prefix = constraint.prefix
    if (
        prefix
        and prefix.endswith(".")
        and all(prefix[:-1].split("."))
        and not {"*", ">"} & set(prefix[:-1].split("."))
    ):
        return [prefix + ">"]
    return [">"]


@dataclass(frozen=True, slots=True)
class Plan:
    """How to run one filter: broker-side patterns plus a client-side residual.

    ``patterns`` are neutral; the transport subscribed to them translates them."""

    patterns: tuple[str, ...]
    residual: Predicate | None  # None: the broker filters everything


def plan(spec: FilterSpec | None, *, types: Sequence[str] | None = None) -> Plan:
    """Plan ``spec`` (optionally restricted to channel patterns ``types``)."""
    constraint = type_constraint(spec)
    patterns = list(types) if types else channel_patterns(constraint)
    exact_channels = constraint.exact is not None and not types
    residual = (
        None if spec is None or (constraint.complete and exact_channels) else compile_filter(spec)
    )
    return Plan(tuple(patterns), residual)


class _Rule(Generic[K]):
    __slots__ = ("key", "predicate")

    def __init__(self, key: K, predicate: Predicate | None) -> None:
        self.key, self.predicate = key, predicate


class RuleIndex(Generic[K]):
    """Rules indexed by the type constraint of their filter.

    ``match(event)`` checks only the rules whose exact type or type prefix fits
    the event's type (plus the unconstrained ones); candidate lists are cached
    per type, so a lookup is one dict access after the first event of a type.
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[_Rule[K]]] = {}
        self._prefix: dict[str, list[_Rule[K]]] = {}
        self._prefix_lengths: list[int] = []
        self._anywhere: list[_Rule[K]] = []
        self._cache: dict[str, tuple[_Rule[K], ...]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, key: K, spec: FilterSpec | None) -> None:
        """Index ``key`` under ``spec`` (compiled now; a bad filter raises ConfigError)."""
        constraint = type_constraint(spec)
        rule = _Rule(key, None if spec is None or constraint.complete else compile_filter(spec))
        if constraint.exact is not None:
            for value in constraint.exact:
                self._exact.setdefault(value, []).append(rule)
        elif constraint.prefix:
            self._prefix.setdefault(constraint.prefix, []).append(rule)
            self._prefix_lengths = sorted({len(p) for p in self._prefix})
        else:
            self._anywhere.append(rule)
        self._cache.clear()
        self._size += 1

    def candidates(self, event_type: str) -> tuple[_Rule[K], ...]:
        found = self._cache.get(event_type)
        if found is None:
            rules = list(self._exact.get(event_type, ()))
            for length in self._prefix_lengths:
                if length > len(event_type):
                    break
                rules.extend(self._prefix.get(event_type[:length], ()))
            rules.extend(self._anywhere)
            if len(self._cache) > 10_000:
                self._cache.clear()
            found = self._cache[event_type] = tuple(rules)
        return found

    def match(self, event: Event) -> list[K]:
        """Keys of every rule whose filter matches ``event``."""
        return [
            rule.key
            for rule in self.candidates(event.type)
            if rule.predicate is None or rule.predicate(event)
        ]
