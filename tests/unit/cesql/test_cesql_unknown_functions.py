"""Calls that no function serves are rejected when an expression (or filter) is compiled.

Before, ``eval('x') = 1`` was accepted at registration and only failed, as a
MissingFunctionError, at each event. CESQL 1.0 keeps that run-time behaviour
(section 3.5) but recommends compile-time checks (section 3.3), so ``parse`` now
raises and ``check_functions=False`` restores the run-time behaviour.
"""

from __future__ import annotations

import pickle

import pytest

from mesh import ConfigError, Event, Mesh
from mesh.errors import MeshError
from mesh.routing import cesql
from mesh.routing.filters import compile_filter

BUILTIN_NAMES = (
    "ABS, BOOL, CONCAT, CONCAT_WS, INT, LEFT, LENGTH, LOWER, RIGHT, STRING, SUBSTRING, TRIM, UPPER"
)


def rejected(text: str, **kwargs: object) -> cesql.UnknownFunctionError:
    with pytest.raises(cesql.UnknownFunctionError) as excinfo:
        cesql.parse(text, **kwargs)  # type: ignore[arg-type]
    return excinfo.value


def test_unknown_function_is_rejected_at_compile_time() -> None:
    error = rejected("type = 'a' AND eval('x') = 1")
    assert isinstance(error, cesql.ParseError)  # what parse raises
    assert isinstance(error, cesql.MissingFunctionError)  # the spec's kind of error
    assert isinstance(error, MeshError)
    assert error.kind == "missingFunction"
    assert (error.position, error.name, error.arity) == (15, "EVAL", 1)
    assert error.reason == f"unknown function EVAL (functions: {BUILTIN_NAMES})"
    assert str(error).endswith("eval('x') = 1\n                 ^")


def test_did_you_mean() -> None:
    assert "unknown function LENGHT, did you mean LENGTH?" in rejected("LENGHT(subject) > 3").reason
    assert "did you mean" not in rejected("XYZZY()").reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("LENGTH()", "LENGTH takes 1 argument, not 0 (LENGTH(String) -> Integer)"),
        ("ABS(1, 2)", "ABS takes 1 argument, not 2 (ABS(Integer) -> Integer)"),
        (
            "SUBSTRING('a')",
            "SUBSTRING takes 2 or 3 arguments, not 1 (SUBSTRING(String, Integer) -> "
            "String; SUBSTRING(String, Integer, Integer) -> String)",
        ),
        (
            "CONCAT_WS()",
            "CONCAT_WS takes at least 1 argument, not 0 (CONCAT_WS(String, String...) -> String)",
        ),
    ],
)
def test_wrong_arity_is_rejected_with_the_signatures(text: str, reason: str) -> None:
    assert rejected(text).reason == reason


def test_nested_and_short_circuited_calls_are_checked_too() -> None:
    assert rejected("TRUE OR (NOT nope(1))").name == "NOPE"
    assert rejected("LOWER(UPPER(LEFT(subject)))").name == "LEFT"
    assert rejected("x IN (1, SQRT(4))").name == "SQRT"


def test_known_functions_still_compile_and_evaluate() -> None:
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "subject": "Hello"}
    expression = cesql.parse(
        "LENGTH(subject) = 5 AND lower(subject) = 'hello' "
        "AND CONCAT_WS('-', 'a', 'b') = 'a-b' AND SUBSTRING(subject, 2, 2) "
        "= 'el' AND CONCAT() = ''"
    )
    assert expression.evaluate(event) == (True, [])


def test_custom_registry_is_what_is_checked() -> None:
    registry = cesql.default_registry()
    registry.register(
        cesql.Function("DOUBLE", (cesql.Type.INTEGER,), cesql.Type.INTEGER, lambda errors, x: x * 2)
    )
    assert cesql.parse("DOUBLE(2) = 4", functions=registry).evaluate({}) == (True, [])
    error = rejected("DOUBEL(2) = 4", functions=registry)
    assert "did you mean DOUBLE?" in error.reason and "DOUBLE, INT" in error.reason
    assert rejected("DOUBLE(2)").name == "DOUBLE"  # not in the built-in registry


def test_run_time_behaviour_on_request() -> None:
    expression = cesql.parse("eval('x') = 1", check_functions=False)
    value, errors = expression.evaluate({})
    assert value is False
    assert [e.kind for e in errors] == ["missingFunction"]
    assert not isinstance(errors[0], cesql.ParseError)


def test_error_pickles() -> None:
    error = rejected("nope(1, 2)")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cesql.UnknownFunctionError
    assert (str(copy), copy.position, copy.name, copy.arity) == (
        str(error),
        error.position,
        "NOPE",
        2,
    )


def test_compile_filter_rejects_unknown_functions() -> None:
    with pytest.raises(MeshError, match="unknown function EVAL") as excinfo:
        compile_filter({"sql": "eval('x') = 1"})
    assert isinstance(excinfo.value, cesql.UnknownFunctionError)
    with pytest.raises(MeshError, match="LENGTH takes 1 argument"):
        compile_filter({"all": [{"exact": {"type": "a"}}, {"not": {"sql": "LENGTH() > 1"}}]})
    assert compile_filter({"sql": "LENGTH(type) = 1"})(Event("a", "/s", {})) is True


def test_mesh_on_rejects_unknown_functions_at_registration() -> None:
    mesh = Mesh("memory://")
    with pytest.raises(MeshError, match="unknown function EVAL") as excinfo:
        mesh.on("orders.created", filter={"sql": "eval('x') = 1"})
    assert isinstance(excinfo.value, cesql.UnknownFunctionError)
    with pytest.raises(MeshError, match="unknown function NOPE"):
        mesh.on(filter={"sql": "type = 'a' AND nope()"})
    with pytest.raises(MeshError, match="unknown function NOPE"):
        mesh.on_dead_letter(filter={"sql": "nope()"})  # at the call, like mesh.on
    mesh.on(filter={"sql": "type = 'a' AND LENGTH(source) > 0"})  # known: fine


async def test_config_route_with_unknown_function_fails_at_start() -> None:
    routes = [{"name": "r1", "filter": {"sql": "type = 'a' AND eval(data) = 1"}, "to": "x"}]
    mesh = Mesh("memory://", routes=routes)
    with pytest.raises(ConfigError, match="route 'r1': unknown function EVAL"):
        await mesh.start()
