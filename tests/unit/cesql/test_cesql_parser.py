"""CESQL lexer and parser: AST shapes, precedence, error positions, limits, strict mode."""

from __future__ import annotations

import time

import pytest

from mesh.routing import cesql
from mesh.routing.cesql.ast import (
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
    render,
    render_string,
    walk,
)


def ast(text: str, strict: bool = False) -> Node:
    return cesql.parse(text, strict=strict).ast


def error_at(text: str, strict: bool = False) -> cesql.ParseError:
    with pytest.raises(cesql.ParseError) as excinfo:
        cesql.parse(text, strict=strict)
    return excinfo.value


# --- literals and identifiers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("-5", -5),
        ("+5", 5),
        ("- 5", -5),
        ("2147483647", 2147483647),
        ("-2147483648", -2147483648),
        ("TRUE", True),
        ("false", False),
        ("tRuE", True),
        ("'abc'", "abc"),
        ('"abc"', "abc"),
        ("''", ""),
        ("'a\"b\\'c'", "a\"b'c"),
        ('"a\'b\\"c"', "a'b\"c"),
        ("'ab\\c'", "ab\\c"),
        ("'a\\\\b'", "a\\\\b"),
        ('"x\\\'y"', "x\\'y"),
        ("'ü ✓'", "ü ✓"),
    ],
)
def test_literals(text: str, value: object) -> None:
    node = ast(text)
    assert isinstance(node, Literal)
    assert node == Literal(value)  # type: ignore[arg-type]
    assert type(node.value) is type(value)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("2147483648", 0),
        ("-2147483649", 0),
        ("1 + 99999999999", 4),
        ("-(2147483648)", 2),
    ],
)
def test_integer_literal_out_of_range(text: str, position: int) -> None:
    assert error_at(text).position == position


def test_identifiers_are_lowercased_and_may_start_with_digits() -> None:
    assert ast("TYPE") == Attribute("type")
    assert ast("abc123") == Attribute("abc123")
    assert ast("1abc") == Attribute("1abc")
    assert ast("data") == Attribute("data")


def test_identifier_with_underscore_is_rejected() -> None:
    err = error_at("my_ext = 1")
    assert err.position == 0
    assert "attribute name" in err.reason


# --- operators and precedence --------------------------------------------------------------


def test_binary_precedence_and_left_associativity() -> None:
    assert ast("4 * 2 + 4 / 2") == Binary(
        "+", Binary("*", Literal(4), Literal(2)), Binary("/", Literal(4), Literal(2))
    )
    assert ast("1 - 2 - 3") == Binary("-", Binary("-", Literal(1), Literal(2)), Literal(3))
    assert ast("a = 1 AND b < 2") == Binary(
        "AND", Binary("=", Attribute("a"), Literal(1)), Binary("<", Attribute("b"), Literal(2))
    )


def test_and_or_xor_share_one_level_left_to_right() -> None:
    a, b, c = Attribute("a"), Attribute("b"), Attribute("c")
    assert ast("a OR b AND c") == Binary("AND", Binary("OR", a, b), c)
    assert ast("a AND b OR c") == Binary("OR", Binary("AND", a, b), c)
    assert ast("a xor b or c") == Binary("OR", Binary("XOR", a, b), c)


def test_unary_binds_tighter_than_like_in_and_binary() -> None:
    x = Attribute("x")
    assert ast("NOT x = TRUE") == Binary("=", Unary("NOT", x), Literal(True))
    assert ast("NOT x LIKE 'a'") == Like(Unary("NOT", x), "a")
    assert ast("-x IN (1)") == In(Unary("-", x), (Literal(1),))
    assert ast("NOT EXISTS x") == Unary("NOT", Exists("x"))
    assert ast("--10") == Unary("-", Literal(-10))
    assert ast("NOT NOT x") == Unary("NOT", Unary("NOT", x))


def test_like_and_in_bind_tighter_than_binary_operators() -> None:
    a, b = Attribute("a"), Attribute("b")
    assert ast("a + b LIKE '1%'") == Binary("+", a, Like(b, "1%"))
    assert ast("a IN (1, 2) AND b NOT IN ('x')") == Binary(
        "AND", In(a, (Literal(1), Literal(2))), In(b, (Literal("x"),), negated=True)
    )
    assert ast("a LIKE 'x' IN (TRUE)") == In(Like(a, "x"), (Literal(True),))
    assert ast("a NOT LIKE 'x%'") == Like(a, "x%", negated=True)


def test_operators_as_written() -> None:
    for op in ("=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "%"):
        assert ast(f"a {op} 1") == Binary(op, Attribute("a"), Literal(1))
    assert ast("a and b") == Binary("AND", Attribute("a"), Attribute("b"))


def test_binary_minus_without_spaces() -> None:
    assert ast("4 -1") == Binary("-", Literal(4), Literal(1))
    assert ast("4--1") == Binary("-", Literal(4), Literal(-1))


def test_function_calls() -> None:
    assert ast("concat_ws(',', a)") == Call("CONCAT_WS", (Literal(","), Attribute("a")))
    assert ast("CONCAT()") == Call("CONCAT", ())
    assert ast("LENGTH ('x')") == Call("LENGTH", (Literal("x"),))
    assert ast("-ABS(x)") == Unary("-", Call("ABS", (Attribute("x"),)))
    # Functions are resolved when the expression is compiled; the syntax tree of an
    # unknown call is still what parse_ast returns.
    assert cesql.parse("UNKNOWN(1)", check_functions=False).ast == Call("UNKNOWN", (Literal(1),))


def test_exists_and_sub_expressions() -> None:
    assert ast("EXISTS subject") == Exists("subject")
    assert ast("exists SUBJECT") == Exists("subject")
    assert ast("((TRUE))") == Literal(True)


def test_positions_are_recorded() -> None:
    node = ast("a  =  'x'")
    assert isinstance(node, Binary)
    assert (node.pos, node.left.pos, node.right.pos) == (3, 0, 6)


# --- parse errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("", 0),
        ("   ", 0),
        ("ABC(", 4),
        ("(1 + 2", 6),
        ("1 +", 3),
        ("x LIKE 123", 7),
        ("x LIKE y", 7),
        ("x NOT 1", 2),
        ("'abc", 0),
        ("a = 'x", 4),
        ("a # b", 2),
        ("a ! b", 2),
        ("1 2", 2),
        ("a IN 1", 5),
        ("a IN ()", 6),
        ("a IN (1,)", 8),
        ("EXISTS 1", 7),
        ("EXISTS AND", 7),
        ("AND", 0),
        ("+'5'", 0),
        ("f(1 2)", 4),
        ("a.b", 1),
        ("data .a", 5),
        ("data.", 5),
        ("data.a.", 7),
        ("my_func1(1)", 0),
        ("_f(1)", 0),
    ],
)
def test_parse_error_positions(text: str, position: int) -> None:
    err = error_at(text)
    assert err.kind == "parse"
    assert isinstance(err, cesql.CESQLError)
    assert err.position == position, str(err)


def test_parse_error_message_shows_a_caret() -> None:
    err = error_at("type = 'a' AND source LIKE 5")
    lines = str(err).splitlines()
    assert lines[0].endswith("at position 27")
    assert lines[1] == "  type = 'a' AND source LIKE 5"
    assert lines[2] == "  " + " " * 27 + "^"


def test_parse_error_message_window_for_long_expressions() -> None:
    text = "a = 1 AND " * 30 + "b LIKE 1"
    err = error_at(text)
    source_line, caret_line = str(err).splitlines()[1:3]
    assert len(source_line) < 100
    assert source_line[caret_line.index("^")] == "1"


def test_errors_pickle() -> None:
    import pickle

    err = error_at("a LIKE 1")
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy), copy.position, copy.reason) == (
        cesql.ParseError,
        str(err),
        7,
        err.reason,
    )
    math = pickle.loads(pickle.dumps(cesql.MathError("division by zero", 3)))
    assert (math.kind, math.message, math.position) == ("math", "division by zero", 3)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        cesql.parse(b"TRUE")  # type: ignore[arg-type]


# --- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "(" * 100_000 + "1" + ")" * 100_000,
        "(" * 1000 + "1" + ")" * 1000,
        "NOT " * 1000 + "TRUE",
        "-" * 2000 + "1",
        "ABS(" * 1000 + "1" + ")" * 1000,
        "1 IN (" * 600 + "1" + ")" * 600,
        " + ".join(["1"] * 1000),
        " OR ".join(["a"] * 1000),
        "a = 'x' AND " * 400 + "TRUE",
    ],
)
def test_deep_or_long_expressions_fail_fast_with_parse_error(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(cesql.ParseError):
        cesql.parse(text)
    assert time.perf_counter() - start < 0.5


def test_length_limit() -> None:
    ok = "'" + "x" * (cesql.MAX_LENGTH - 2) + "'"
    assert cesql.parse(ok).evaluate({}) == ("x" * (cesql.MAX_LENGTH - 2), [])
    err = error_at(ok + " ")
    assert err.position == cesql.MAX_LENGTH
    assert "longer" in err.reason


def test_nesting_limit_boundary() -> None:
    depth = cesql.MAX_NESTING - 1
    assert cesql.parse("(" * depth + "1" + ")" * depth).evaluate({}) == (1, [])
    err = error_at("(" * (cesql.MAX_NESTING + 1) + "1" + ")" * (cesql.MAX_NESTING + 1))
    assert "nested" in err.reason


def test_tree_depth_limit_boundary() -> None:
    clauses = cesql.MAX_DEPTH // 2
    text = " OR ".join(["a = 'x'"] * clauses)
    assert cesql.parse(text).evaluate({"a": "x"}) == (True, [])
    err = error_at(" + ".join(["1"] * (cesql.MAX_DEPTH + 2)))
    assert "nested" in err.reason


# --- strict mode and the data extension ------------------------------------------------------


def test_data_paths() -> None:
    assert ast("data.a") == DataPath(("a",))
    assert ast("data.order.Items.0") == DataPath(("order", "Items", "0"))
    assert ast("DATA.in.like") == DataPath(("in", "like"))
    assert ast("EXISTS data.a.b") == DataExists(("a", "b"))


def test_strict_mode_rejects_data_paths() -> None:
    for text in ("data.severity > 3", "EXISTS data.x", "type = 'a' AND data.x.y = 1"):
        err = error_at(text, strict=True)
        assert "extension" in err.reason
        assert err.position == text.index("data")


def test_strict_mode_accepts_plain_cesql_including_a_data_identifier() -> None:
    assert ast("data = 'x'", strict=True) == Binary("=", Attribute("data"), Literal("x"))
    assert ast("EXISTS data", strict=True) == Exists("data")
    assert cesql.parse("type = 'x'", strict=True).strict is True


# --- expression object and rendering --------------------------------------------------------


def test_expression_exposes_source_and_ast() -> None:
    expr = cesql.parse("type = 'x'")
    assert expr.source == "type = 'x'"
    assert expr.ast == Binary("=", Attribute("type"), Literal("x"))
    assert "type = 'x'" in repr(expr)


def test_walk_is_preorder() -> None:
    nodes = list(walk(ast("a = 1 AND NOT b IN (2, c)")))
    assert [type(n).__name__ for n in nodes] == [
        "Binary",
        "Binary",
        "Attribute",
        "Literal",
        "In",
        "Unary",
        "Attribute",
        "Literal",
        "Attribute",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a = 1 AND b LIKE 'x\\%%' OR NOT EXISTS c",
        "-(-5) * ABS(x) % 3 <> LENGTH(CONCAT('a', \"b'c\"))",
        "x NOT IN (1, 'a', TRUE) XOR data.a.b >= 2",
        "EXISTS data.x OR -2147483648 < y",
    ],
)
def test_render_round_trips(text: str) -> None:
    node = ast(text)
    assert ast(render(node)) == node


def test_render_string() -> None:
    assert render_string("it's") == "'it\\'s'"
    assert render_string("a\\b") == "'a\\b'"
    assert render_string("\\'") == '"\\\'"'
    with pytest.raises(ValueError):
        render_string("ends with \\")
