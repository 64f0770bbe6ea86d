"""Planning: type constraints (all dialects and CESQL), neutral pushdown patterns, rule index.

Each transport translates the neutral patterns to its broker's syntax; those exact
translations are tested with the plugins (plugins/<name>/tests).
"""

from __future__ import annotations

import itertools

import pytest

from mesh import ConfigError, Event, pattern_covers, pattern_matcher
from mesh.routing.router import RuleIndex, TypeConstraint, channel_patterns, plan, type_constraint
from mesh.testing.patterns import check_translation

X = frozenset({"x"})


@pytest.mark.parametrize(
    "spec,expected",
    [
        (None, TypeConstraint(complete=True)),
        ({"exact": {"type": "a.b"}}, TypeConstraint(exact=frozenset({"a.b"}), complete=True)),
        ({"exact": {"type": "a.b", "source": "/s"}}, TypeConstraint(exact=frozenset({"a.b"}))),
        ({"prefix": {"type": "a.b."}}, TypeConstraint(prefix="a.b.")),
        (
            {"any": [{"exact": {"type": "x"}}, {"exact": {"type": "y"}}]},
            TypeConstraint(exact=frozenset({"x", "y"}), complete=True),
        ),
        ({"any": [{"exact": {"type": "x"}}, {"prefix": {"type": "y"}}]}, TypeConstraint()),
        (
            {"all": [{"prefix": {"type": "a."}}, {"exact": {"subject": "s"}}]},
            TypeConstraint(prefix="a."),
        ),
        (
            {"all": [{"prefix": {"type": "a."}}, {"prefix": {"type": "a.b."}}]},
            TypeConstraint(prefix="a.b."),
        ),
        (
            {"all": [{"prefix": {"type": "a."}}, {"prefix": {"type": "b."}}]},
            TypeConstraint(exact=frozenset()),
        ),
        (
            {"all": [{"exact": {"type": "a.x"}}, {"prefix": {"type": "b."}}]},
            TypeConstraint(exact=frozenset()),
        ),
        (
            [{"exact": {"type": "x"}}, {"exact": {"type": "x"}}],
            TypeConstraint(exact=X, complete=True),
        ),
        ({"not": {"exact": {"type": "a"}}}, TypeConstraint()),
        ({"suffix": {"type": ".created"}}, TypeConstraint()),
        ({"sql": "type = 'x'"}, TypeConstraint(exact=X, complete=True)),
        ({"sql": "'x' = type"}, TypeConstraint(exact=X, complete=True)),
        ({"sql": "type IN ('x', 'y')"}, TypeConstraint(exact=frozenset({"x", "y"}), complete=True)),
        ({"sql": "type NOT IN ('x')"}, TypeConstraint()),
        ({"sql": "type LIKE 'a.b.%'"}, TypeConstraint(prefix="a.b.")),
        ({"sql": "type LIKE 'a_b.%'"}, TypeConstraint()),
        ({"sql": "type LIKE 'a.%.c'"}, TypeConstraint()),
        ({"sql": "type = 'x' AND data.severity > 3"}, TypeConstraint(exact=X)),
        (
            {"sql": "type = 'x' OR type = 'y'"},
            TypeConstraint(exact=frozenset({"x", "y"}), complete=True),
        ),
        ({"sql": "type = 'x' OR source = 'y'"}, TypeConstraint()),
        ({"sql": "subject = 'x'"}, TypeConstraint()),
        ({"sql": "type = "}, TypeConstraint()),
    ],
)
def test_type_constraints(spec: object, expected: TypeConstraint) -> None:
    assert type_constraint(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "constraint,patterns",
    [
        (TypeConstraint(exact=frozenset({"b", "a"})), ["a", "b"]),
        (TypeConstraint(prefix="a.b."), ["a.b.>"]),
        (TypeConstraint(prefix="a.b"), [">"]),
        (TypeConstraint(prefix="a..b."), [">"]),
        (TypeConstraint(), [">"]),
    ],
)
def test_channel_patterns(constraint: TypeConstraint, patterns: list[str]) -> None:
    assert channel_patterns(constraint) == patterns


def test_plan_pushdown_and_residual() -> None:
    exact = plan({"exact": {"type": "orders.created"}})
    assert exact.patterns == ("orders.created",) and exact.residual is None
    prefix = plan({"prefix": {"type": "orders."}})
    assert prefix.patterns == ("orders.>",) and prefix.residual is not None
    sql = plan({"sql": "type LIKE 'orders.%' AND data.total > 100"})
    assert sql.patterns == ("orders.>",)
    assert sql.residual is not None
    assert sql.residual(Event("orders.created", "/s", {"total": 150}))
    assert not sql.residual(Event("orders.created", "/s", {"total": 5}))
    typed = plan({"exact": {"subject": "s"}}, types=["a.b"])
    assert typed.patterns == ("a.b",) and typed.residual is not None
    assert plan(None, types=["a"]).residual is None


def test_rule_index_checks_only_candidates() -> None:
    index: RuleIndex[str] = RuleIndex()
    index.add("exact", {"exact": {"type": "orders.created"}})
    index.add("prefix", {"prefix": {"type": "orders."}})
    index.add("sql", {"sql": "type = 'orders.created' AND data.total > 100"})
    index.add("any", {"suffix": {"subject": ".pdf"}})
    for i in range(500):
        index.add(f"noise{i}", {"exact": {"type": f"noise.{i}"}})
    assert len(index) == 504
    big = Event("orders.created", "/s", {"total": 500}, subject="a.pdf")
    assert sorted(index.match(big)) == ["any", "exact", "prefix", "sql"]
    assert sorted(index.match(big.replace(data={"total": 1}, subject=None))) == ["exact", "prefix"]
    assert len(index.candidates("orders.created")) == 4
    assert index.match(Event("noise.7", "/s")) == ["noise7"]
    assert index.match(Event("other", "/s", subject="x.pdf")) == ["any"]
    with pytest.raises(ConfigError):
        index.add("bad", {"regex": "x"})


def test_check_translation_proves_exactness_and_names_the_mismatch() -> None:
    def neutral(native: str, channel: str) -> bool:
        return pattern_matcher(native)(channel)

    check_translation(lambda pattern: pattern, neutral)  # the reference is exact
    with pytest.raises(AssertionError, match=r"'orders\.>' -> 'orders\.\*' misses channel"):
        check_translation(lambda pattern: pattern.replace(">", "*"), neutral)
    with pytest.raises(AssertionError, match=r"'orders\.\*' -> 'orders\.>' also matches"):
        check_translation(lambda pattern: pattern.replace("*", ">"), neutral)


@pytest.mark.parametrize(
    "outer,inner,expected",
    [
        ("p.>", "p.a", True),
        ("p.>", "p.a.b", True),
        ("p.>", "p.*", True),
        ("p.>", "p.>", True),
        ("p.>", "p", False),
        ("p.>", "q.a", False),
        ("p.*", "p.a", True),
        ("p.*", "p.a.b", False),
        ("p.*", "p.>", False),
        ("p.a", "p.*", False),
        ("p.a", "p.a", True),
        ("mesh.p.>", "mesh.p.*.x", True),
    ],
)
def test_pattern_covers(outer: str, inner: str, expected: bool) -> None:
    assert pattern_covers(outer, inner) is expected


def test_pattern_covers_agrees_with_the_matcher() -> None:
    """Containment as the matcher defines it, over every pattern of up to three tokens
    and every channel of up to four (a ``>`` reaching further behaves the same)."""
    tokens = ("a", "b", "*", ">")
    patterns = [
        ".".join(parts)
        for n in (1, 2, 3)
        for parts in itertools.product(tokens, repeat=n)
        if ">" not in parts[:-1]
    ]
    channels = [
        ".".join(parts) for n in (1, 2, 3, 4) for parts in itertools.product("abc", repeat=n)
    ]
    matched = {p: {c for c in channels if pattern_matcher(p)(c)} for p in patterns}
    for outer, inner in itertools.product(patterns, repeat=2):
        assert pattern_covers(outer, inner) is (matched[inner] <= matched[outer]), (outer, inner)
