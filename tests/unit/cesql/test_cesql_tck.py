"""The official CESQL 1.0 TCK: every case of shared/conformance/cesql_tck/*.yaml.

The TCK directory is ``$MESH_CESQL_TCK``, else ``<repo>/../shared/conformance/cesql_tck``,
else ``/work/shared/conformance/cesql_tck`` (where the workspace keeps it, for a clone
made anywhere else, such as a temporary directory).
Missing TCK: the tests skip, except under CI (``CI=true``) where they fail.

Missing functions: the TCK expects a call that no function serves to evaluate to
``false`` with a ``missingFunction`` error (CESQL 1.0 section 3.5). ``parse`` checks
calls when it compiles, as section 3.3 recommends, and raises UnknownFunctionError
(of that kind) instead; ``check_functions=False`` gives the run-time behaviour. Every
case runs both ways: the compile-time check must reject exactly the cases whose
expected error is ``missingFunction``, and run-time evaluation must give the TCK's
value and errors.

Scalars are read as the raw YAML text where YAML would retype them: expressions
such as ``TRUE`` or ``-10`` and names such as ``true`` stay strings, and an expected
result written as a timestamp is compared as its text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.routing import cesql

EXPECTED_CASES = 275
_BESIDE = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance" / "cesql_tck"
_WORKSPACE = Path("/work/shared/conformance/cesql_tck")
TCK_DIR = Path(
    os.environ.get("MESH_CESQL_TCK")
    or (_WORKSPACE if not _BESIDE.is_dir() and _WORKSPACE.is_dir() else _BESIDE)
)
BASE_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "tck-event-id",
    "source": "/tck/source",
    "type": "io.cloudevents.tck",
}


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    expression: str
    event: dict[str, Any]
    result: Any = None
    has_result: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _raw_scalars(node: yaml.MappingNode) -> dict[str, str]:
    return {k.value: v.value for k, v in node.value if isinstance(v, yaml.ScalarNode)}


def load_cases(directory: Path) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        assert isinstance(root, yaml.MappingNode)
        tests_node = next(v for k, v in root.value if k.value == "tests")
        assert len(tests_node.value) == len(data["tests"])
        for node, test in zip(tests_node.value, data["tests"], strict=True):
            raw = _raw_scalars(node)
            event = dict(test["event"]) if "event" in test else dict(BASE_EVENT)
            event.update(test.get("eventOverrides") or {})
            result = test.get("result")
            if isinstance(result, date):  # YAML retyped an RFC 3339 timestamp
                result = raw["result"]
            cases.append(
                Case(
                    file=path.stem,
                    name=raw["name"],
                    expression=raw["expression"],
                    event=event,
                    result=result,
                    has_result="result" in test,
                    error=test.get("error"),
                )
            )
    return cases


def _absent(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


CASES = load_cases(TCK_DIR) if TCK_DIR.is_dir() else []
MISSING_REASON = f"CESQL TCK not found at {TCK_DIR} (set MESH_CESQL_TCK)"


class EventObject:
    """An event given as an object with get_attributes() (and data)."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        self._attributes = attributes
        self.data = attributes.get("data")

    def get_attributes(self) -> dict[str, Any]:
        return self._attributes


def test_tck_case_count() -> None:
    if not CASES:
        _absent(MISSING_REASON)
    assert len(CASES) == EXPECTED_CASES
    ids = [f"{c.file}::{c.name}" for c in CASES]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "case",
    CASES or [pytest.param(None, id="tck-missing")],
    ids=lambda c: f"{c.file}::{c.name}" if isinstance(c, Case) else "tck-missing",
)
def test_tck(case: Case | None) -> None:
    if case is None:
        _absent(MISSING_REASON)
        return
    if case.error == "parse":
        with pytest.raises(cesql.ParseError) as excinfo:
            cesql.parse(case.expression)
        assert excinfo.value.kind == "parse"
        assert 0 <= excinfo.value.position <= len(case.expression)
        return
    if case.error == "missingFunction":
        with pytest.raises(cesql.UnknownFunctionError) as rejected:
            cesql.parse(case.expression)
        assert rejected.value.kind == "missingFunction"
        assert isinstance(rejected.value, cesql.MissingFunctionError)
    else:
        cesql.parse(case.expression)  # the compile-time check rejects nothing else
    expression = cesql.parse(case.expression, check_functions=False)
    for event in (case.event, EventObject(case.event)):
        value, errors = expression.evaluate(event)
        kinds = [e.kind for e in errors]
        if case.error is None:
            assert kinds == [], errors
        else:
            assert kinds and set(kinds) == {case.error}, errors
        if case.has_result:
            assert value == case.result
            assert type(value) is type(case.result)
