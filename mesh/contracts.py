"""Data contracts: a JSON Schema per event type, checked where events enter and leave.

::

    mesh.contract("shipment.delayed", ShipmentDelayed)            # a pydantic model
    mesh.contract("shipment.delayed", {"type": "object", ...})    # a JSON Schema
    mesh.contract("shipment.delayed", "schemas/delayed.v2.json", version=2)   # a file

* Publishing an event of a contracted type validates its data; a violation raises
  `ContractViolation` at the publisher and nothing is sent. The event gets
  ``dataschema`` pointing at the contract (``urn:mesh:schema:<type>:v<version>``,
  or the schema's own ``$id``).
* Consuming validates too (a producer without the contract may have sent it): a
  violation dead-letters the event at once with the validation errors, never retried.
* Registering a newer version checks it is backward compatible with the previous one
  (consumers on the old schema can read new events): no new required fields, no
  removed or narrowed properties, no type changes. An incompatible version raises
  `ContractViolation` unless ``compatible=False`` is passed on purpose;
  ``mesh contracts check`` reports the same in CI.

Validators are compiled once per schema and cached.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel

from mesh.errors import ConfigError, ContractViolation
from mesh.event import Event

__all__ = ["Contract", "ContractRegistry", "compatibility_problems", "schema_of"]

SchemaSource = Mapping[str, Any] | type[BaseModel] | str | Path


def schema_of(source: SchemaSource) -> dict[str, Any]:
    """A JSON Schema from a pydantic model, a schema dict, or a path to a JSON file."""
    if isinstance(source, type) and issubclass(source, BaseModel):
        return source.model_json_schema()
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read schema file {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"schema file {path} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"schema file {path} must hold a JSON object")
        return loaded
    raise ConfigError(
        f"a contract is a pydantic model, a JSON Schema dict or a file path, "
        f"not {type(source).__name__}"
    )


@dataclass(frozen=True)
class Contract:
    """One version of the schema of one event type."""

    type: str
    version: int
    schema: dict[str, Any]
    uri: str
    _validator: Draft202012Validator = field(repr=False, compare=False)

    def errors(self, data: Any) -> list[str]:
        """Validation errors of ``data`` (empty when valid), each with its JSON path."""
        found = []
        for error in self._validator.iter_errors(data):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            found.append(f"{where}: {error.message}")
        return sorted(found)

    def check(self, event: Event) -> None:
        """Raise `ContractViolation` listing the errors when ``event.data`` does not fit."""
        if self._validator.is_valid(event.data):  # the common case, without collecting
            return
        problems = self.errors(event.data)
        if problems:
            raise ContractViolation(
                f"data of {event.type} (event {event.id}) violates contract {self.uri}: "
                + "; ".join(problems[:10])
                + (" ..." if len(problems) > 10 else ""),
                errors=problems,
            )


class ContractRegistry:
    """The contracts of one app, by event type and version."""

    def __init__(self) -> None:
        self._versions: dict[str, dict[int, Contract]] = {}
        self._latest: dict[str, Contract] = {}

    def register(
        self, event_type: str, source: SchemaSource, *, version: int = 1, compatible: bool = True
    ) -> Contract:
        """Add a version; with ``compatible`` (default) a version newer than an existing
        one must be backward compatible with it."""
        schema = schema_of(source)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ConfigError(
                f"contract for {event_type} is not a valid JSON Schema: {exc.message}"
            ) from None
        uri = str(schema.get("$id") or f"urn:mesh:schema:{event_type}:v{version}")
        contract = Contract(event_type, version, schema, uri, Draft202012Validator(schema))
        versions = self._versions.setdefault(event_type, {})
        if version in versions and versions[version].schema != schema:
            raise ConfigError(
                f"contract {event_type} v{version} is already registered with "
                "a different schema; bump the version"
            )
        older = [v for v in versions if v < version]
        if compatible and older:
            previous = versions[max(older)]
            problems = compatibility_problems(previous.schema, schema)
            if problems:
                raise ContractViolation(
                    f"contract {event_type} v{version} is not backward compatible with "
                    f"v{previous.version}: " + "; ".join(problems),
                    errors=problems,
                )
        versions[version] = contract
        if event_type not in self._latest or self._latest[event_type].version <= version:
            self._latest[event_type] = contract
        return contract

    def get(self, event_type: str) -> Contract | None:
        """The latest contract of ``event_type``, if any."""
        return self._latest.get(event_type)

    def versions(self, event_type: str) -> list[Contract]:
        return [c for _, c in sorted(self._versions.get(event_type, {}).items())]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._latest.values(), key=lambda c: c.type))

    def __len__(self) -> int:
        return len(self._latest)

    def problems(self) -> dict[str, list[str]]:
        """Incompatibilities between consecutive versions of every type (for CI)."""
        report: dict[str, list[str]] = {}
        for event_type in sorted(self._versions):
            chain = self.versions(event_type)
            for old, new in itertools.pairwise(chain):
                found = compatibility_problems(old.schema, new.schema)
                if found:
                    report[f"{event_type} v{old.version} -> v{new.version}"] = found
        return report

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready record of the latest schemas, to compare a later build against."""
        return {c.type: {"version": c.version, "schema": c.schema} for c in self}

    def problems_against(self, snapshot: Mapping[str, Any]) -> dict[str, list[str]]:
        """Incompatibilities of the current schemas with a stored `snapshot`."""
        report: dict[str, list[str]] = {}
        for event_type, entry in sorted(snapshot.items()):
            current = self.get(event_type)
            if current is None:
                report[event_type] = ["contract removed (consumers still expect it)"]
                continue
            found = compatibility_problems(entry["schema"], current.schema)
            if found:
                report[f"{event_type} v{entry['version']} -> v{current.version}"] = found
        return report


# --- compatibility ------------------------------------------------------------------------

_LOWER = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
_UPPER = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")


def _types(schema: Mapping[str, Any]) -> frozenset[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    return frozenset({declared} if isinstance(declared, str) else declared)


def _bound_change(key: str, old: Any, new: Any) -> str:
    if new is None:
        return "widened (bound removed)"
    if old == new:
        return ""
    tighter = new > old if key in _LOWER else new < old
    return "narrowed" if tighter else "widened"


def _resolve(
    schema: Mapping[str, Any], root: Mapping[str, Any], seen: frozenset[str]
) -> tuple[Mapping[str, Any], frozenset[str]]:
    """Follow a local ``$ref`` (``#/$defs/..``, ``#/definitions/..``, ``#``) within ``root``."""
    ref = schema.get("$ref")
    while isinstance(ref, str) and ref.startswith("#") and ref not in seen:
        seen = seen | {ref}
        target: Any = root
        for part in ref[1:].strip("/").split("/") if ref != "#" else []:
            target = (
                target.get(part.replace("~1", "/").replace("~0", "~"))
                if isinstance(target, Mapping)
                else None
            )
        if not isinstance(target, Mapping):
            break
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        ref = target.get("$ref")
    return schema, seen


def compatibility_problems(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    path: str = "",
    *,
    _roots: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    _seen: frozenset[str] = frozenset(),
) -> list[str]:
    """Why consumers written against ``old`` could not rely on events valid under ``new``.

    The rules (the project's contract policy): no type changes, no removed properties,
    no new required fields, and no narrowed properties (an enum that lost values, a
    bound that tightened, ``additionalProperties`` closed). Constraints that widen
    (an enum that gained values, a loosened bound) are reported too: old consumers
    would meet values they reject. Adding an optional property, or changing titles,
    descriptions and defaults, is compatible. Empty list: compatible.
    """
    old_root, new_root = _roots or (old, new)
    old, seen_old = _resolve(old, old_root, _seen)
    new, seen_new = _resolve(new, new_root, _seen)
    seen = seen_old | seen_new
    if len(seen) > 64:  # a recursive schema: stop descending
        return []

    def deeper(a: Mapping[str, Any], b: Mapping[str, Any], at: str) -> list[str]:
        return compatibility_problems(a, b, at, _roots=(old_root, new_root), _seen=seen)

    where = path or "(root)"
    problems: list[str] = []
    for union in ("anyOf", "oneOf"):
        old_branches, new_branches = old.get(union), new.get(union)
        if old_branches is None and new_branches is None:
            continue
        if (
            not isinstance(old_branches, list)
            or not isinstance(new_branches, list)
            or len(old_branches) != len(new_branches)
        ):
            problems.append(f"{where}: {union} changed")
            continue
        for index, (a, b) in enumerate(zip(old_branches, new_branches, strict=True)):
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                problems.extend(deeper(a, b, f"{path}<{union}[{index}]>"))
    old_types, new_types = _types(old), _types(new)
    if old_types != new_types:
        problems.append(
            f"{where}: type changed from {sorted(old_types or ['any'])} to "
            f"{sorted(new_types or ['any'])}"
        )
    old_enum, new_enum = old.get("enum"), new.get("enum")
    if old_enum is not None or new_enum is not None:
        before = set(map(repr, old_enum)) if old_enum is not None else None
        after = set(map(repr, new_enum)) if new_enum is not None else None
        if before is not None and after is not None and after < before:
            problems.append(f"{where}: enum narrowed (values removed)")
        elif before != after:
            problems.append(f"{where}: enum changed (old consumers may reject new values)")
    for key in (*_LOWER, *_UPPER):
        if key in old or key in new:
            if key not in old:
                problems.append(f"{where}: {key} {new[key]} added (narrowed)")
                continue
            change = _bound_change(key, old[key], new.get(key))
            if change:
                problems.append(
                    f"{where}: {key} {change} from {old[key]} to {new.get(key, 'none')}"
                )
    if old.get("additionalProperties", True) != new.get("additionalProperties", True):
        problems.append(f"{where}: additionalProperties changed")
    old_props = old.get("properties") or {}
    new_props = new.get("properties") or {}
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"{where}: property {name!r} removed")
        elif isinstance(old_prop, Mapping) and isinstance(new_props[name], Mapping):
            problems.extend(deeper(old_prop, new_props[name], f"{path}/{name}" if path else name))
    added_required = set(new.get("required") or ()) - set(old.get("required") or ())
    for name in sorted(added_required):
        problems.append(f"{where}: new required field {name!r}")
    old_items, new_items = old.get("items"), new.get("items")
    if isinstance(old_items, Mapping) and isinstance(new_items, Mapping):
        problems.extend(deeper(old_items, new_items, f"{path}[]"))
    return problems
