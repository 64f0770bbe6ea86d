"""Contracts: schema sources, validation, versions and the compatibility policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from mesh import ConfigError, ContractRegistry, ContractViolation, Event, compatibility_problems

BASE = {
    "type": "object",
    "required": ["order"],
    "properties": {
        "order": {"type": "string", "maxLength": 20},
        "hours": {"type": "integer", "minimum": 0},
        "kind": {"enum": ["late", "lost"]},
        "stops": {"type": "array", "items": {"type": "string"}},
    },
}


def _with(**changes: object) -> dict:
    schema = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        node = schema
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return schema


@pytest.mark.parametrize(
    "new,fragment",
    [
        (_with(properties__hours__type="string"), "hours: type changed"),
        (_with(properties__hours=None), "property 'hours' removed"),
        (_with(required=["order", "hours"]), "new required field 'hours'"),
        (_with(properties__order__maxLength=10), "maxLength narrowed"),
        (_with(properties__order__maxLength=30), "maxLength widened"),
        (_with(properties__hours__minimum=5), "minimum narrowed"),
        (_with(properties__kind__enum=["late"]), "enum narrowed"),
        (_with(properties__kind__enum=["late", "lost", "stolen"]), "enum changed"),
        (_with(properties__stops__items={"type": "integer"}), "stops[]: type changed"),
        (_with(additionalProperties=False), "additionalProperties changed"),
        (_with(properties__order__minLength=1), "minLength 1 added"),
    ],
)
def test_incompatible_changes(new: dict, fragment: str) -> None:
    problems = compatibility_problems(BASE, new)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize(
    "new",
    [
        BASE,
        _with(properties__note={"type": "string"}),  # a new optional field
        _with(properties__order__description="the order id"),  # documentation only
    ],
)
def test_compatible_changes(new: dict) -> None:
    assert compatibility_problems(BASE, new) == []


class Delay(BaseModel):
    order: str
    hours: int


def test_registry_sources_versions_and_validation(tmp_path: Path) -> None:
    registry = ContractRegistry()
    v1 = registry.register("shipment.delayed", Delay)
    assert v1.uri == "urn:mesh:schema:shipment.delayed:v1"
    assert v1.errors({"order": "o", "hours": 1}) == []
    assert v1.errors({"order": 1}) == [
        "(root): 'hours' is a required property",
        "order: 1 is not of type 'string'",
    ]
    with pytest.raises(ContractViolation) as info:
        v1.check(Event("shipment.delayed", "/s", {"order": "o"}))
    assert info.value.errors == ["(root): 'hours' is a required property"]
    file = tmp_path / "v2.json"
    v2_schema = {**Delay.model_json_schema(), "$id": "https://example.com/delay/v2"}
    v2_schema["properties"] = {**v2_schema["properties"], "note": {"type": "string"}}
    file.write_text(json.dumps(v2_schema))
    v2 = registry.register("shipment.delayed", str(file), version=2)
    assert registry.get("shipment.delayed") is v2 and v2.uri == "https://example.com/delay/v2"
    breaking = {**v2_schema, "required": ["order", "hours", "note"]}
    with pytest.raises(ContractViolation, match="not backward compatible with v2"):
        registry.register("shipment.delayed", breaking, version=3)
    registry.register("shipment.delayed", breaking, version=3, compatible=False)
    assert list(registry.problems()) == ["shipment.delayed v2 -> v3"]
    snapshot = json.loads(json.dumps(registry.snapshot()))
    later = ContractRegistry()
    later.register("shipment.delayed", {"type": "object"}, version=4)
    assert "shipment.delayed v3 -> v4" in later.problems_against(snapshot)
    assert ContractRegistry().problems_against(snapshot) == {
        "shipment.delayed": ["contract removed (consumers still expect it)"]
    }


def test_bad_schemas_are_config_errors(tmp_path: Path) -> None:
    registry = ContractRegistry()
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        registry.register("t", {"type": "nonsense"})
    with pytest.raises(ConfigError, match="cannot read schema file"):
        registry.register("t", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="pydantic model, a JSON Schema dict or a file"):
        registry.register("t", 42)  # type: ignore[arg-type]
    registry.register("t", {"type": "object"})
    with pytest.raises(ConfigError, match="bump the version"):
        registry.register("t", {"type": "string"})


class _Address(BaseModel):
    zip: str


class _AddressV2(BaseModel):
    zip: int


class _Customer(BaseModel):
    address: _Address
    note: str | None = None


class _CustomerV2(BaseModel):
    address: _AddressV2
    note: str | None = None


class _CustomerV3(BaseModel):
    address: _Address
    note: int | None = None


def test_nested_models_and_optionals_are_compared_through_refs() -> None:
    v1 = _Customer.model_json_schema()
    assert compatibility_problems(v1, v1) == []
    nested = compatibility_problems(v1, _CustomerV2.model_json_schema())
    assert any("address/zip: type changed" in p for p in nested), nested
    optional = compatibility_problems(v1, _CustomerV3.model_json_schema())
    assert any("note<anyOf[0]>: type changed" in p for p in optional), optional


def test_recursive_schemas_terminate() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    assert compatibility_problems(tree, tree) == []
