"""`mesh.asyncapi`: documents that the official AsyncAPI 3.0 schema accepts, and that say
what the app does.

Validity is checked against the JSON Schema the AsyncAPI project publishes in the npm
package ``@asyncapi/specs`` (``schemas/3.0.0.json``, draft-07, every definition bundled
under its own ``$id``), installed with npm once per session. Without npm (or without
the registry) those tests skip, except under ``CI=true`` where they fail: CI must not
go green without having checked the documents. ``MESH_TEST_ASYNCAPI_SPECS`` may point
at an installed ``@asyncapi/specs`` directory instead (offline runs).

JSON Schema cannot see everything the spec requires (a ``$ref`` must resolve, an
operation's messages must be messages of its channel), so `semantic_problems` checks
that part.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from pydantic import BaseModel, Field
from referencing import Registry
from referencing.jsonschema import DRAFT7

from mesh import (
    ConfigError,
    Context,
    Event,
    Mesh,
    MeshConfig,
    Transport,
    TransportRegistry,
    WireFormat,
    hookimpl,
    plugins,
)
from mesh.asyncapi import asyncapi_document
from mesh.transports.memory import MemoryTransport

REPO = Path(__file__).resolve().parents[2]
SPECS_PACKAGE = "@asyncapi/specs@6"
COMPONENT_KEY = re.compile(r"^[\w\d.\-_]+$")


# --- the official schema ------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so the AsyncAPI documents must be validated")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def specs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed ``@asyncapi/specs`` package (npm install, once per session)."""
    given = os.environ.get("MESH_TEST_ASYNCAPI_SPECS")
    if given:
        return Path(given)
    npm = shutil.which("npm")
    if npm is None:
        _unavailable(
            "npm is not installed, so @asyncapi/specs (the official AsyncAPI "
            "JSON Schema) cannot be fetched"
        )
    prefix = tmp_path_factory.mktemp("asyncapi-specs")
    try:
        proc = subprocess.run(
            [
                str(npm),
                "install",
                "--prefix",
                str(prefix),
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--no-package-lock",
                "--loglevel=error",
                SPECS_PACKAGE,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"npm install {SPECS_PACKAGE} timed out (is the npm registry reachable?)")
    if proc.returncode != 0:
        _unavailable(
            f"npm install {SPECS_PACKAGE} failed (is the npm registry reachable?): "
            f"{proc.stderr.strip()[-500:]}"
        )
    return prefix / "node_modules" / "@asyncapi" / "specs"


@pytest.fixture(scope="session")
def validator(specs_dir: Path) -> Draft7Validator:
    path = specs_dir / "schemas" / "3.0.0.json"
    assert path.is_file(), f"{path} missing: did @asyncapi/specs change its layout?"
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/schema")
    # Every definition is bundled with its own $id; crawling registers them all, so the
    # absolute $refs between them resolve offline. The draft-07 meta-schema it refers to
    # comes with jsonschema.
    registry: Registry[Any] = (
        Registry().with_resource(schema["$id"], DRAFT7.create_resource(schema)).crawl()
    )
    return Draft7Validator(schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


def schema_errors(validator: Draft7Validator, document: Mapping[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
        for e in sorted(validator.iter_errors(document), key=lambda e: e.path)
    ]


# --- what JSON Schema cannot check --------------------------------------------------------


def _pointer(document: Any, ref: str) -> Any:
    node = document
    for part in ref[2:].split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def semantic_problems(document: Mapping[str, Any]) -> list[str]:
    problems = []
    for ref in _refs(document):
        if not ref.startswith("#"):
            problems.append(f"external $ref {ref}")
            continue
        try:
            _pointer(document, ref)
        except (KeyError, IndexError, ValueError):
            problems.append(f"unresolvable $ref {ref}")
    for section in ("messages", "schemas"):
        problems += [
            f"bad components.{section} key {k!r}"
            for k in document.get("components", {}).get(section, {})
            if not COMPONENT_KEY.match(k)
        ]
    for op_id, op in document.get("operations", {}).items():
        channel = op["channel"]["$ref"]
        for message in op.get("messages", []):
            if not message["$ref"].startswith(channel + "/messages/"):
                problems.append(f"operation {op_id}: {message['$ref']} not in {channel}")
        reply = op.get("reply")
        if reply:
            for message in reply.get("messages", []):
                if not message["$ref"].startswith(reply["channel"]["$ref"] + "/messages/"):
                    problems.append(
                        f"operation {op_id}: reply {message['$ref']} not in its channel"
                    )
    if "$defs" in set(_keys(document)):
        problems.append("a $defs block was left inside a schema")
    return problems


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keys(item)


def assert_valid(validator: Draft7Validator, document: Mapping[str, Any]) -> None:
    assert schema_errors(validator, document) == []
    assert semantic_problems(document) == []
    json.dumps(document)  # JSON-ready
    assert yaml.safe_load(yaml.safe_dump(document)) == document


# --- apps ---------------------------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    examples = str(REPO / "examples")
    if examples not in sys.path:  # the examples import their shared helpers (examples/_ui.py)
        sys.path.append(examples)
    spec = importlib.util.spec_from_file_location(
        f"_example_{name}", REPO / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def supply_chain() -> Any:
    example = load_example("supply_chain")
    return example.SupplyChain(
        f"memory://asyncapi-{uuid.uuid4().hex[:8]}", example.View(plain=True)
    )


class Stop(BaseModel):
    city: str
    eta_hours: int = Field(ge=0)


class Node(BaseModel):
    """A recursive model: pydantic puts the whole model under $defs."""

    name: str
    children: list[Node] = Field(default_factory=list)


class RoutePlan(BaseModel):
    order: str
    stops: list[Stop]
    tree: Node | None = None


class Alert(BaseModel):
    severity: int


def rich_app(url: str = "nats://alice:s3cret@broker.internal:4222?token=t0ken") -> Mesh:
    """Contracts (two versions, a file-style JSON Schema with $id and definitions),
    capabilities, typed and untyped handlers, a filter, a dead-letter handler, and
    config routes of both kinds."""
    config = MeshConfig.load(
        transport=url,
        source="/tests/rich",
        routes=[
            {"name": "vip", "filter": {"prefix": {"type": "orders.vip."}}, "group": "vip"},
            {
                "name": "audit",
                "filter": {"exact": {"type": "orders.created"}},
                "to": "audit.orders",
            },
        ],
    )
    app = Mesh(MemoryTransport(), config=config)
    app.contract("plan.made", RoutePlan)
    app.contract(
        "legacy.thing",
        {
            "$id": "https://schemas.example.com/legacy.json",
            "type": "object",
            "definitions": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
            "properties": {"item": {"$ref": "#/definitions/Item"}, "again": {"$ref": "#"}},
        },
    )
    app.contract(
        "orders.created",
        {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
    )
    app.contract(
        "orders.created",
        {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer"}, "note": {"type": "string"}},
        },
        version=2,
    )

    @app.on("plan.made", group="planners")
    async def plan(p: RoutePlan, ctx: Context) -> None: ...

    @app.on("alerts.*", filter={"sql": "data.severity > 3"})
    async def page(a: Alert) -> None: ...

    @app.on(["orders.created", "orders.paid"], group="billing", max_in_flight=4)
    async def bill(event: Event) -> None: ...

    @app.on(group="vip")
    async def vip(event: Event) -> None: ...

    @app.on_dead_letter(group="repair")
    async def repair(event: Event) -> None: ...

    @app.capability(
        "plan.route",
        input=RoutePlan,
        output=["plan.made", "route.ready"],
        tags=["routing", "planning"],
        version="2.1.0",
    )
    async def plan_route(request: RoutePlan, ctx: Context) -> dict[str, Any]:
        """Plan a route through every stop."""
        return {}

    @app.capability("echo")
    async def echo(event: Event, ctx: Context) -> Any:
        return event.data

    return app


# --- validity against the official schema -------------------------------------------------


def test_the_validator_is_real(validator: Draft7Validator) -> None:
    """A document AsyncAPI 3.0 rejects must fail here, or the other tests prove nothing."""
    document = asyncapi_document(rich_app())
    broken = json.loads(json.dumps(document))
    next(iter(broken["operations"].values()))["action"] = "publish"  # AsyncAPI 2 wording
    broken["channels"]["plan.made"]["bogus"] = True
    errors = schema_errors(validator, broken)
    assert any("publish" in e for e in errors) and any("bogus" in e for e in errors), errors


def test_supply_chain_documents_validate(validator: Draft7Validator, supply_chain: Any) -> None:
    for agent in supply_chain.meshes:
        assert_valid(validator, asyncapi_document(agent, title=agent.source))


def test_app_with_contracts_and_capabilities_validates(validator: Draft7Validator) -> None:
    assert_valid(validator, asyncapi_document(rich_app(), title="Rich", version="3.2.1"))


def test_empty_app_validates(validator: Draft7Validator) -> None:
    document = asyncapi_document(Mesh("memory://"))
    assert_valid(validator, document)
    assert set(document["channels"]) == {"mesh.registry"}
    assert set(document["operations"]) == {"registry.send", "registry.receive"}


def test_app_without_capabilities_has_no_registry(validator: Draft7Validator) -> None:
    app = Mesh("memory://", capabilities={"enabled": False})

    @app.on("a.b")
    async def handle(event: Event) -> None: ...

    document = asyncapi_document(app)
    assert_valid(validator, document)
    assert "mesh.registry" not in document["channels"]
    assert set(document["channels"]) == {"a.b", "mesh.deadletter"}


@pytest.mark.parametrize(
    "url",
    [
        "kafka://svc:pw@k1:9092,k2:9092?sasl_mechanism=PLAIN",
        "amqps://guest:guest@rabbit.example.com:5671/production",
        "nats://t0ken@127.0.0.1:4222",
        "memory://",
        "memory://supply-chain",
    ],
)
def test_servers_validate_for_every_transport(validator: Draft7Validator, url: str) -> None:
    document = asyncapi_document(rich_app(url))
    assert_valid(validator, document)


# --- structure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key", "server"),
    [
        (
            "nats://alice:s3cret@broker.internal:4222?token=t0ken",
            "nats",
            {"host": "broker.internal:4222", "protocol": "nats"},
        ),
        ("nats://t0ken@127.0.0.1:4222", "nats", {"host": "127.0.0.1:4222", "protocol": "nats"}),
        (
            "kafka://svc:s3cret@k1:9092,k2:9092?sasl_password=t0ken",
            "kafka",
            {"host": "k1:9092,k2:9092", "protocol": "kafka"},
        ),
        ("memory://supply-chain", "memory", {"host": "supply-chain", "protocol": "memory"}),
        ("memory://", "memory", {"host": "localhost", "protocol": "memory"}),
    ],
)
def test_server_from_the_transport_url_without_credentials(
    url: str, key: str, server: dict[str, str]
) -> None:
    document = asyncapi_document(rich_app(url))
    ((found_key, found),) = document["servers"].items()
    assert found_key == key
    assert {k: v for k, v in found.items() if k not in ("title", "description")} == server
    text = json.dumps(document)
    for secret in ("s3cret", "t0ken", "alice", "svc:", "guest"):
        assert secret not in text


def test_handlers_become_receive_operations_with_group_and_filter() -> None:
    document = asyncapi_document(rich_app())
    ops = document["operations"]
    plan = ops["receive.planners.plan"]
    assert plan["channel"] == {"$ref": "#/channels/plan.made"}
    assert plan["x-mesh"]["group"] == "planners" and plan["x-mesh"]["model"] == "RoutePlan"
    assert "Consumer group `planners`" in plan["description"]

    page = ops["receive.page"]
    assert page["x-mesh"]["group"] is None and "broadcast" in page["description"]
    assert page["x-mesh"]["filter"] == {"sql": "data.severity > 3"}
    assert "data.severity > 3" in page["description"]
    channel = document["channels"]["alerts._any"]
    assert channel["address"] == "alerts.*" and channel["x-mesh"] == {"pattern": True}
    # a wildcard handler's model describes what it takes from the pattern
    assert document["components"]["messages"]["Alert"]["payload"]["properties"] == {
        "severity": {"title": "Severity", "type": "integer"}
    }

    # several types: one operation per channel
    assert ops["receive.billing.bill.1"]["channel"] == {"$ref": "#/channels/orders.created"}
    assert ops["receive.billing.bill.2"]["channel"] == {"$ref": "#/channels/orders.paid"}
    assert ops["receive.billing.bill.1"]["x-mesh"]["maxInFlight"] == 4

    # a config route gives a group-only handler its channels; a 'to' route republishes
    assert ops["receive.vip.vip"]["channel"] == {"$ref": "#/channels/orders.vip._rest"}
    assert ops["receive.vip.vip"]["x-mesh"]["filter"] == {"prefix": {"type": "orders.vip."}}
    assert ops["route.audit.send"]["channel"] == {"$ref": "#/channels/audit.orders"}
    assert ops["route.audit.receive.1"]["x-mesh"]["group"] == "mesh.routes"

    repair = ops["receive.repair.repair"]
    assert repair["channel"] == {"$ref": "#/channels/mesh.deadletter"}
    assert repair["x-mesh"]["deadLetters"] is True
    assert ops["deadletter.send"]["action"] == "send"


def test_capabilities_are_request_reply_operations() -> None:
    document = asyncapi_document(rich_app())
    op = document["operations"]["capability.plan.route"]
    assert op["action"] == "receive"
    assert op["channel"] == {"$ref": "#/channels/mesh.request.plan.route"}
    assert op["summary"] == "Plan a route through every stop."
    assert op["tags"] == [{"name": "routing"}, {"name": "planning"}]
    assert op["x-mesh"] == {
        "capability": "plan.route",
        "version": "2.1.0",
        "group": "cap.plan.route",
        "tags": ["routing", "planning"],
        "outputTypes": ["plan.made", "route.ready"],
    }
    assert op["reply"]["channel"] == {"$ref": "#/channels/mesh.reply"}
    assert [m["$ref"].rsplit("/", 1)[1] for m in op["reply"]["messages"]] == [
        "mesh.reply.plan.route",
        "mesh.reply.error",
    ]

    reply = document["channels"]["mesh.reply"]
    assert reply["address"] == "mesh.reply.{instance}"
    assert reply["parameters"]["instance"]["location"] == "$message.header#/ce-meshreplyto"

    request = document["components"]["messages"]["mesh.request.plan.route"]
    assert request["payload"]["required"] == ["order", "stops"]
    assert request["headers"]["allOf"][1]["required"] == ["ce-meshreplyto"]
    assert "capability.echo" in document["operations"]

    # output types and contracted types are what the app sends
    sends = {
        op["x-mesh"]["eventType"]: op
        for op in document["operations"].values()
        if op["action"] == "send" and "eventType" in op.get("x-mesh", {})
    }
    assert set(sends) == {"plan.made", "route.ready", "legacy.thing", "orders.created"}
    assert sends["plan.made"]["x-mesh"]["reasons"] == ["contract", "output of plan.route"]


def test_contracts_give_payloads_headers_and_versions() -> None:
    document = asyncapi_document(rich_app())
    messages = document["components"]["messages"]
    created = messages["orders.created"]
    assert created["payload"]["properties"]["note"] == {"type": "string"}
    assert created["x-mesh"]["contractVersion"] == 2
    assert created["x-mesh"]["contractVersions"] == [1, 2]
    consts = created["headers"]["allOf"][1]["properties"]
    assert consts["ce-type"]["const"] == "orders.created"
    assert consts["ce-dataschema"]["const"] == "urn:mesh:schema:orders.created:v2"
    assert created["correlationId"]["location"] == "$message.header#/ce-correlationid"
    headers = document["components"]["schemas"]["CloudEventHeaders"]
    assert {"ce-id", "ce-source", "ce-type", "ce-specversion"} == set(headers["required"])
    assert "ce-traceparent" in headers["properties"]


def test_pydantic_defs_move_to_components_schemas() -> None:
    document = asyncapi_document(rich_app())
    schemas = document["components"]["schemas"]
    plan = document["components"]["messages"]["plan.made"]["payload"]
    assert plan["properties"]["stops"]["items"] == {"$ref": "#/components/schemas/Stop"}
    assert schemas["Stop"]["properties"]["eta_hours"]["minimum"] == 0
    # the recursive model refers to itself through components.schemas
    assert schemas["Node"]["properties"]["children"]["items"] == {
        "$ref": "#/components/schemas/Node"
    }
    # a JSON Schema with $id and a root self-reference moves there whole, without $id
    legacy = document["components"]["messages"]["legacy.thing"]
    assert legacy["payload"] == {"$ref": "#/components/schemas/legacy.thing"}
    assert schemas["legacy.thing"]["properties"]["again"] == {
        "$ref": "#/components/schemas/legacy.thing"
    }
    assert schemas["legacy.thing"]["properties"]["item"] == {"$ref": "#/components/schemas/Item"}
    assert "$id" not in schemas["legacy.thing"]
    assert legacy["x-mesh"]["dataschema"] == "https://schemas.example.com/legacy.json"
    assert semantic_problems(document) == []


class FakeBroker(MemoryTransport):
    """A transport the core knows nothing about: everything the document says of its
    broker comes from what it declares."""

    schemes = ("fakebroker",)
    wire = WireFormat(
        title="Fake Broker",
        protocol="fake",
        protocol_version="9.1",
        header_prefix="fb_",
        binding="Fake binding (`fb_` headers)",
        description="A broker for tests.",
    )

    def reply_channel(self, instance_id: str) -> str:
        return "mesh.replies"


def _echo_app(transport: Transport, url: str) -> Mesh:
    app = Mesh(transport, config=MeshConfig.load(transport=url))

    @app.capability("echo")
    async def echo(event: Event, ctx: Context) -> Any:
        return event.data

    return app


def test_the_transport_declares_protocol_headers_and_reply_channel() -> None:
    document = asyncapi_document(_echo_app(FakeBroker(), "fakebroker://u:s3cret@fb:7000/vh"))
    assert document["servers"] == {
        "fakebroker": {
            "host": "fb:7000",
            "protocol": "fake",
            "protocolVersion": "9.1",
            "title": "Fake Broker",
            "pathname": "/vh",
            "description": "A broker for tests.",
        }
    }
    reply = document["channels"]["mesh.reply"]
    assert reply["address"] == "mesh.replies" and "parameters" not in reply
    assert "shared by every instance" in reply["description"]
    headers = document["components"]["schemas"]["CloudEventHeaders"]
    assert "fb_type" in headers["properties"] and "ce-type" not in headers["properties"]
    assert headers["required"] == ["fb_specversion", "fb_id", "fb_source", "fb_type"]
    assert "Fake binding (`fb_` headers)" in headers["description"]
    request = document["components"]["messages"]["mesh.request.echo"]
    assert request["headers"]["allOf"][1]["required"] == ["fb_meshreplyto"]
    assert request["correlationId"]["location"] == "$message.header#/fb_correlationid"
    assert "s3cret" not in json.dumps(document)


def test_the_wire_format_comes_from_the_registry_by_scheme() -> None:
    """Configured for a scheme the mesh's own transport object does not serve, the
    document asks the installed transports (nothing is built or connected)."""

    class Registering:
        @hookimpl
        def mesh_register_transports(self, registry: TransportRegistry) -> None:
            registry.register("fakebroker", FakeBroker, description="test")

    manager = plugins.plugin_manager()
    plugin = Registering()
    manager.register(plugin)
    try:
        document = asyncapi_document(_echo_app(MemoryTransport(), "fakebroker://fb:7000"))
    finally:
        manager.unregister(plugin)
    assert document["servers"]["fakebroker"]["protocol"] == "fake"
    assert "fb_type" in document["components"]["schemas"]["CloudEventHeaders"]["properties"]


def test_a_scheme_nobody_declares_gets_the_defaults() -> None:
    document = asyncapi_document(_echo_app(MemoryTransport(), "unknownbroker://h:1"))
    assert document["servers"] == {
        "unknownbroker": {
            "host": "h:1",
            "protocol": "unknownbroker",
            "title": "unknownbroker transport",
        }
    }
    headers = document["components"]["schemas"]["CloudEventHeaders"]
    assert "ce-type" in headers["properties"] and "`ce-` headers" in headers["description"]


def test_supply_chain_route_optimizer(supply_chain: Any) -> None:
    document = asyncapi_document(supply_chain.route_optimizer)
    ops = document["operations"]
    assert ops["receive.route-optimizer.flag_lane"]["x-mesh"]["model"] == "ShipmentDelayed"
    capability = ops["capability.optimize.route"]
    assert capability["x-mesh"]["group"] == "route-optimizers"
    request = document["components"]["messages"]["mesh.request.optimize.route"]
    assert set(request["payload"]["required"]) == {
        "shipment_id",
        "origin",
        "destination",
        "max_hours",
    }
    dispatch = asyncapi_document(supply_chain.dispatch)
    send = dispatch["operations"]["send.shipment.delayed"]
    assert send["action"] == "send"
    payload = dispatch["components"]["messages"]["shipment.delayed"]["payload"]
    assert payload["properties"]["delay_hours"]["minimum"] == 0


def test_document_is_pure_and_deterministic(supply_chain: Any) -> None:
    agent = supply_chain.supervisor
    first = asyncapi_document(agent)
    assert asyncapi_document(agent) == first
    assert not agent.started
    assert asyncapi_document(agent, title="T", version="9.9.9")["info"]["version"] == "9.9.9"


def test_served_capabilities_are_known_before_start() -> None:
    app = rich_app()
    assert app.capabilities() == []  # the live registry: empty until started
    assert [c.name for c in app.served_capabilities()] == ["plan.route", "echo"]


async def test_the_document_applies_routes_exactly_as_start_does() -> None:
    """One function applies config routes for both (mesh.routing.routes.apply_routes)."""
    routes = [{"name": "esc", "filter": {"prefix": {"type": "incident."}}, "group": "esc"}]
    app = Mesh("memory://", routes=routes)

    seen: list[str] = []

    @app.on(group="esc")
    async def escalate(event: Event) -> None:
        seen.append(event.type)

    operation = asyncapi_document(app)["operations"]["receive.esc.escalate"]
    assert operation["x-mesh"]["pattern"] == "incident.>"
    async with app:  # start subscribed what the document shows
        await app.publish(Event("other.thing", "/t"))
        await app.publish(Event("incident.opened", "/t"))
        async with asyncio.timeout(5):
            while not seen:
                await asyncio.sleep(0.01)
    assert seen == ["incident.opened"]

    lonely = Mesh("memory://", routes=[{**routes[0], "group": "elsewhere"}])

    @lonely.on(group="lonely")
    async def alone(event: Event) -> None: ...

    message = "route 'esc' names group 'elsewhere', but no handler has that group"
    with pytest.raises(ConfigError, match=message):
        asyncapi_document(lonely)
    with pytest.raises(ConfigError, match=message):
        await lonely.start()
