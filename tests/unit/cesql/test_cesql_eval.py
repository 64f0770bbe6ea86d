"""CESQL evaluation: operators, casts, functions, the error model, events, data extension."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mesh.routing import cesql

EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "/orders",
    "type": "com.example.order",
    "subject": "Francesco",
    "sequence": "10",
    "count": 7,
    "flag": True,
    "word": "TRUE",
}


def run(text: str, event: Any = None, *, check_functions: bool = True) -> tuple[Any, list[str]]:
    expression = cesql.parse(text, check_functions=check_functions)
    value, errors = expression.evaluate(EVENT if event is None else event)
    for error in errors:
        assert isinstance(error, cesql.CESQLError)
    return value, [e.kind for e in errors]


def check(
    text: str, value: Any, *kinds: str, event: Any = None, check_functions: bool = True
) -> None:
    got, got_kinds = run(text, event, check_functions=check_functions)
    assert (got, got_kinds) == (value, list(kinds))
    assert type(got) is type(value)


# --- arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7 / -2", -3),
        ("-7 / -2", 3),
        ("7 % 3", 1),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("-7 % -3", -1),
        ("count * 2", 14),
        ("sequence + 1", 11),
        ("'5' * '3'", 15),
        ("TRUE + TRUE", 2),
        ("-count", -7),
        ("--count", 7),
        ("-sequence", -10),
        ("-FALSE", 0),
    ],
)
def test_arithmetic(text: str, value: int) -> None:
    check(text, value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2147483647 + 1", 2147483647),
        ("-2147483648 - 1", -2147483648),
        ("65536 * 65536", 2147483647),
        ("-65536 * 65536", -2147483648),
        ("-2147483648 / -1", 2147483647),
        ("-(-2147483648)", 2147483647),
        ("5 / 0", 0),
        ("5 % 0", 0),
    ],
)
def test_math_errors(text: str, value: int) -> None:
    check(text, value, "math")


def test_math_error_does_not_stop_evaluation_and_errors_are_fresh() -> None:
    expr = cesql.parse("1 / 0")
    first, second = expr.evaluate({}), expr.evaluate({})
    assert first == (0, first[1]) and [e.kind for e in first[1]] == ["math"]
    assert first[1] is not second[1]
    assert first[1][0] is not second[1][0]
    assert first[1][0].position == 2


def test_arithmetic_casts_fail_with_cast_error() -> None:
    check("'abc' + 1", 1, "cast")
    check("'2147483648' + 0", 0, "cast")
    check("' 1' + 0", 0, "cast")
    check("'+1' + 0", 1)
    check("'-0' + 0", 0)


# --- comparisons and implicit casts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("sequence = 10", True),
        ("sequence > 9", True),
        ("sequence < count", False),
        ("'01' = 1", True),
        ("1 = '01'", False),
        ("1 = '1'", True),
        ("TRUE = 'true'", True),
        ("TRUE = 'TRUE'", False),
        ("'TRUE' = TRUE", True),
        ("word = TRUE", True),
        ("flag = 'true'", True),
        ("flag = TRUE", True),
        ("count = '7'", True),
        ("count <> 7", False),
        ("count != 8", True),
        ("'abc' = 'ABC'", False),
        ("'abc' != 'ABC'", True),
        ("2 >= 2", True),
        ("2 <= 1", False),
        ("1 < 2 = TRUE", True),
    ],
)
def test_comparisons(text: str, value: bool) -> None:
    check(text, value)


def test_comparison_cast_errors() -> None:
    check("'abc' < 1", True, "cast")  # the failed cast yields 0
    check("1 = TRUE", False, "cast")  # implicit Integer -> Boolean is a cast error
    check("'yes' = TRUE", False, "cast")


def test_equality_with_dynamic_right_operand() -> None:
    check("10 = sequence", True)  # 10 is cast to the String '10'
    check("'x' = subject", False)
    check("subject = subject", True)
    check("7 = count", True)


# --- logical operators --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "kinds"),
    [
        ("TRUE AND 'true'", True, []),
        ("'false' OR 'TRUE'", True, []),
        ("'true' XOR 'true'", False, []),
        ("flag AND word", True, []),
        ("1 AND TRUE", False, ["cast"]),
        ("TRUE AND 1", False, ["cast"]),
        ("'abc' OR TRUE", True, ["cast"]),
        ("TRUE XOR 'x'", True, ["cast"]),
        ("FALSE AND 1 / 0 = 0", False, []),
        ("TRUE OR 1 / 0 = 0", True, []),
        ("TRUE AND 1 / 0 = 0", False, ["math"]),
        ("FALSE OR 1 / 0 = 0", False, ["math"]),
        ("missing = 1 OR TRUE", False, ["missingAttribute"]),
        ("TRUE AND TRUE AND missing = 1", False, ["missingAttribute"]),
        ("TRUE AND 'x' AND TRUE", False, ["cast"]),
        ("FALSE OR FALSE OR TRUE", True, []),
        ("FALSE OR missing OR TRUE", False, ["missingAttribute"]),
        ("NOT (NOT 10)", False, ["cast"]),
    ],
)
def test_logical(text: str, value: bool, kinds: list[str]) -> None:
    check(text, value, *kinds)


def test_and_chains_short_circuit() -> None:
    expr = cesql.parse("EXISTS subject AND subject = 'x' AND LENGTH(nope) = 1 AND missing")
    assert expr.evaluate({"subject": "y"}) == (False, [])
    value, errors = expr.evaluate({"subject": "x"})
    assert value is False
    assert [e.kind for e in errors] == ["missingAttribute"]


# --- error propagation and missing attributes -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("missing", False),
        ("missing = ''", False),
        ("missing * 5", 0),
        ("1 / missing", 0),
        ("missing / 0", 0),
        ("NOT missing", False),
        ("-missing", 0),
        ("-missing + 5", 0),
        ("missing LIKE '%'", False),
        ("missing NOT LIKE 'x'", False),
        ("missing IN (1)", False),
        ("missing NOT IN (1)", False),
        ("1 IN (missing, 1)", False),
        ("LENGTH(missing)", 0),
        ("CONCAT('a', missing)", ""),
        ("UPPER(missing)", ""),
        ("BOOL(missing)", False),
        ("data", False),
        ("data = 'x'", False),
    ],
)
def test_missing_attribute_gives_zero_value_of_consumer(text: str, value: Any) -> None:
    check(text, value, "missingAttribute")


def test_errors_in_operands_propagate_as_zero_values() -> None:
    check("LENGTH(LEFT('abc', -1))", 0, "functionEvaluation")
    check("LEFT('abc', -1)", "abc", "functionEvaluation")
    check("(1 / 0) + 5", 0, "math")
    check("1 / 0 + 1 / 0", 0, "math", "math")  # complete evaluation: both errors
    check("CONCAT(missing, other)", "", "missingAttribute", "missingAttribute")
    check("NOT 10", True, "cast")
    check("ABS(-2147483648) = 2147483647", False, "math")


def test_exists() -> None:
    check("EXISTS subject", True)
    check("EXISTS nope", False)
    check("EXISTS data", False, event={"data": {"a": 1}})
    for name in ("id", "source", "specversion", "type", "TYPE"):
        check(f"EXISTS {name}", True, event={})  # required: always true
    check("EXISTS none", False, event={"none": None})
    check("none", False, "missingAttribute", event={"none": None})


# --- LIKE and IN --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("type LIKE 'com.example.%'", True),
        ("type LIKE 'com._xample.order'", True),
        ("type NOT LIKE '%order'", False),
        ("count LIKE '7'", True),
        ("flag LIKE 't%e'", True),
        ("sequence LIKE '1_'", True),
        ("CONCAT(type, '%') LIKE '%order\\%'", True),
        ("subject LIKE 'francesco'", False),
        ("1 + 1 LIKE '2'", 1),
        ("(1 + 1) LIKE '2'", True),
    ],
)
def test_like(text: str, value: bool | int) -> None:
    check(text, value)


@pytest.mark.parametrize(
    ("text", "value", "kinds"),
    [
        ("type IN ('a', 'com.example.order')", True, []),
        ("type NOT IN ('a', 'b')", True, []),
        ("count IN ('7', '8')", True, []),
        ("sequence IN (9, 10)", True, []),
        ("flag IN ('TRUE')", True, []),
        ("word IN (TRUE)", False, []),
        ("1 IN (1, 'a')", True, ["cast"]),
        ("0 IN ('a')", True, ["cast"]),  # the failed cast yields 0 (section 3.7)
        ("TRUE IN (1)", False, ["cast"]),
        ("subject IN (id, source, subject)", True, []),
        ("count IN (sequence, 7)", True, []),
        ("count IN (sequence, 'x')", False, ["cast"]),
        ("type IN (LOWER('COM.EXAMPLE.ORDER'))", True, []),
        ("type NOT IN (type)", False, []),
    ],
)
def test_in(text: str, value: bool, kinds: list[str]) -> None:
    check(text, value, *kinds)


# --- functions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("LENGTH('héllo')", 5),
        ("LENGTH(123)", 3),
        ("length(subject)", 9),
        ("CONCAT()", ""),
        ("CONCAT(1, TRUE, 'x')", "1truex"),
        ("concat_ws('-', 'a', 2)", "a-2"),
        ("LOWER('ÀB')", "àb"),
        ("UPPER('straße')", "STRASSE"),
        ("TRIM('\u2003 a b \t\n')", "a b"),
        ("TRIM('\x1fa\x1f')", "\x1fa\x1f"),
        ("LEFT('abc', 0)", ""),
        ("LEFT('abc', '2')", "ab"),
        ("RIGHT('abc', 0)", ""),
        ("RIGHT('abc', 1)", "c"),
        ("RIGHT('abc', 3)", "abc"),
        ("SUBSTRING('abcdef', 6)", "f"),
        ("SUBSTRING('abcdef', -6)", "abcdef"),
        ("SUBSTRING('abcdef', 3, 0)", ""),
        ("SUBSTRING('abcdef', -2, 10)", "ef"),
        ("SUBSTRING('', 0)", ""),
        ("ABS(-5)", 5),
        ("ABS('-5')", 5),
        ("abs(2147483647)", 2147483647),
        ("INT('+42')", 42),
        ("INT(sequence)", 10),
        ("BOOL(0)", False),
        ("BOOL(-1)", True),
        ("BOOL('False')", False),
        ("STRING(-0)", "0"),
        ("STRING(flag)", "true"),
        ("Int(count)", 7),
    ],
)
def test_builtin_functions(text: str, value: Any) -> None:
    check(text, value)


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("SUBSTRING('abc', 4)", "", "functionEvaluation"),
        ("SUBSTRING('abc', 1, -1)", "", "functionEvaluation"),
        ("SUBSTRING('abc', 0, -1)", "", "functionEvaluation"),
        ("RIGHT('abc', -1)", "abc", "functionEvaluation"),
        ("LEFT('abc', 'x')", "", "cast"),
        ("INT('1.5')", 0, "cast"),
        ("INT('99999999999')", 0, "cast"),
        ("BOOL('yes')", False, "cast"),
        ("ABS(-2147483648)", 2147483647, "math"),
    ],
)
def test_function_errors(text: str, value: Any, kind: str) -> None:
    check(text, value, kind)


@pytest.mark.parametrize(
    "text",
    [
        "NOPE()",
        "LENGTH()",
        "LENGTH('a', 'b')",
        "SUBSTRING('a')",
        "ABS(1, 2, 3, 4)",
    ],
)
def test_missing_functions_at_evaluation_when_not_checked(text: str) -> None:
    """``check_functions=False``: the spec's run-time behaviour (section 3.5)."""
    check(text, False, "missingFunction", check_functions=False)


def test_custom_functions() -> None:
    registry = cesql.default_registry()
    registry.register(
        cesql.Function("DOUBLE", (cesql.Type.INTEGER,), cesql.Type.INTEGER, lambda errors, x: x * 2)
    )
    registry.register(cesql.Function("BROKEN", (), cesql.Type.STRING, lambda errors: 1 / 0))
    registry.register(cesql.Function("WRONG", (), cesql.Type.INTEGER, lambda errors: "x"))
    registry.register(cesql.Function("HUGE", (), cesql.Type.INTEGER, lambda errors: 2**40))
    registry.register(
        cesql.Function("ANYTHING", (cesql.Type.ANY,), cesql.Type.ANY, lambda errors, x: x)
    )
    assert "double" in registry

    def ev(text: str) -> tuple[Any, list[str]]:
        value, errors = cesql.parse(text, functions=registry).evaluate({"n": "21"})
        return value, [e.kind for e in errors]

    assert ev("double(n)") == (42, [])
    assert ev("BROKEN()") == ("", ["functionEvaluation"])
    assert ev("WRONG()") == (0, ["functionEvaluation"])
    assert ev("HUGE()") == (0, ["functionEvaluation"])
    assert ev("ANYTHING(n) = '21'") == (True, [])
    assert ev("LENGTH('ab')") == (2, [])
    # The default registry is untouched.
    with pytest.raises(cesql.UnknownFunctionError, match="unknown function DOUBLE"):
        cesql.parse("DOUBLE(1)")
    assert run("DOUBLE(1)", check_functions=False) == (False, ["missingFunction"])


def test_registry_overloading_rules() -> None:
    def fn(name: str, arity: int, variadic: bool = False) -> cesql.Function:
        return cesql.Function(
            name,
            (cesql.Type.STRING,) * arity,
            cesql.Type.INTEGER,
            lambda errors, *args: 0,
            variadic=cesql.Type.STRING if variadic else None,
        )

    registry = cesql.FunctionRegistry([fn("ABC", 1), fn("ABC", 2), fn("ABC", 3, True)])
    assert registry.resolve("abc", 1) is not None
    assert registry.resolve("ABC", 0) is None
    variadic = registry.resolve("ABC", 7)
    assert variadic is not None and variadic.variadic is cesql.Type.STRING
    with pytest.raises(ValueError, match="already has an overload"):
        registry.register(fn("ABC", 2))
    with pytest.raises(ValueError, match="variadic"):
        registry.register(fn("ABC", 5, True))
    with pytest.raises(ValueError, match="clashes"):
        registry.register(fn("ABC", 4))
    with pytest.raises(ValueError, match="fixed"):
        cesql.FunctionRegistry([fn("XYZ", 3), fn("XYZ", 3, True)])
    with pytest.raises(ValueError, match="clashes"):
        cesql.FunctionRegistry([fn("XYZ", 0, True)]).register(fn("XYZ", 3))
    with pytest.raises(ValueError, match="upper-case"):
        registry.register(fn("lower", 1))
    with pytest.raises(ValueError, match="invalid function name"):
        registry.register(fn("A1", 1))
    assert "CONCAT_WS(String, String...) -> String" in [
        f.signature() for f in cesql.default_registry()
    ]


# --- events -------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Label(enum.StrEnum):
    HOT = "hot"


class Uri:
    def __str__(self) -> str:
        return "https://example.com/x"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), "2024-05-01T12:00:00Z"),
        (datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC), "2024-05-01T12:00:00.250000Z"),
        (
            datetime(2018, 4, 26, 14, 48, 9, tzinfo=timezone(timedelta(hours=2))),
            "2018-04-26T14:48:09+02:00",
        ),
        (datetime(2024, 5, 1, 12, 0, 0), "2024-05-01T12:00:00Z"),
        (b"\x00\x01hi", "AAFoaQ=="),
        (2**40, "1099511627776"),
        (-(2**31), -(2**31)),
        (Uri(), "https://example.com/x"),
        (Label.HOT, "hot"),
        (Color.RED, "Color.RED"),
    ],
)
def test_attribute_values_map_to_cesql_types(raw: Any, value: Any) -> None:
    check("x", value, event={"x": raw})


def test_time_attribute_comparisons() -> None:
    event = {"time": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)}
    check("time = '2024-01-02T03:04:05Z'", True, event=event)
    check("time LIKE '2024-01-%'", True, event=event)
    check("time > 1", False, "cast", event=event)


class EventObject:
    def __init__(self, attributes: dict[str, Any], data: Any = None) -> None:
        self._attributes = attributes
        self.data = data

    def get_attributes(self) -> dict[str, Any]:
        return self._attributes


def test_event_objects() -> None:
    event = EventObject({"type": "t", "id": "1"}, data={"level": 3})
    check("type = 't' AND data.level = 3", True, event=event)

    class NoData:
        def get_attributes(self) -> dict[str, Any]:
            return {"type": "t"}

    check("type = 't'", True, event=NoData())
    check("data.level = 3", False, "missingAttribute", event=NoData())


def test_mapping_subclasses_are_events() -> None:
    from collections import OrderedDict
    from types import MappingProxyType

    check("type = 't'", True, event=OrderedDict(type="t"))
    check("type = 't'", True, event=MappingProxyType({"type": "t"}))


def test_unsupported_event_type() -> None:
    with pytest.raises(TypeError, match="get_attributes"):
        cesql.parse("TRUE").evaluate(42)


def test_matches_is_filter_semantics() -> None:
    assert cesql.parse("type = 'com.example.order'").matches(EVENT)
    assert not cesql.parse("type = 'other'").matches(EVENT)
    assert not cesql.parse("count").matches(EVENT)  # not a Boolean
    assert cesql.parse("TRUE OR 1 / 0").matches(EVENT)  # short-circuit: no error
    assert not cesql.parse("FALSE OR 1 / 0 = 0").matches(EVENT)
    assert not cesql.parse("'abc' OR TRUE").matches(EVENT)  # true, with a cast error


# --- the data extension -----------------------------------------------------------------

DATA_EVENT: dict[str, Any] = {
    "type": "t",
    "data": {
        "severity": 5,
        "name": "box",
        "urgent": False,
        "price": 9.5,
        "qty": 3.0,
        "big": 2**40,
        "nothing": None,
        "tags": ["a", "b"],
        "order": {"items": [{"sku": "X1"}]},
        "Mixed_Case": "yes",
    },
}


@pytest.mark.parametrize(
    ("text", "value", "kinds"),
    [
        ("data.severity > 3", True, []),
        ("data.severity", 5, []),
        ("data.name = 'box'", True, []),
        ("data.urgent", False, []),
        ("NOT data.urgent", True, []),
        ("data.qty = 3", True, []),
        ("data.order.items.0.sku", "X1", []),
        ("data.tags.1", "b", []),
        ("data.Mixed_Case", "yes", []),
        ("data.mixed_case", False, ["missingAttribute"]),
        ("data.tags.2", False, ["missingAttribute"]),
        ("data.tags.x", False, ["missingAttribute"]),
        ("data.name.x", False, ["missingAttribute"]),
        ("data.absent > 1", False, ["missingAttribute"]),
        ("data.nothing = 1", False, ["missingAttribute"]),
        ("data.price > 1", False, ["cast"]),
        ("data.big > 1", False, ["cast"]),
        ("data.tags = 'a'", False, ["cast"]),
        ("data.order", False, ["cast"]),
        ("data.severity + 1", 6, []),
        ("EXISTS data.order.items", True, []),
        ("EXISTS data.price", True, []),
        ("EXISTS data.nothing", False, []),
        ("EXISTS data.absent", False, []),
        ("data.name LIKE 'b%' AND data.severity IN (4, 5)", True, []),
    ],
)
def test_data_extension(text: str, value: Any, kinds: list[str]) -> None:
    check(text, value, *kinds, event=DATA_EVENT)


@pytest.mark.parametrize("data", [None, '{"severity": 5}', b"raw", 5, ["x"]])
def test_data_extension_needs_decoded_json_object(data: Any) -> None:
    check("data.severity = 5", False, "missingAttribute", event={"data": data})
    check("EXISTS data.severity", False, event={"data": data})


def test_data_errors_name_the_path() -> None:
    _, errors = cesql.parse("data.order.items > 1").evaluate(DATA_EVENT)
    assert "data.order.items" in errors[0].message
    assert "array" in errors[0].message
    assert errors[0].position == 0
