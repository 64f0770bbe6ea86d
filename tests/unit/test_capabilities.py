"""Capability records and their A2A / MCP conversions; request edge cases on memory."""

from __future__ import annotations

import asyncio

import pytest

from mesh import (
    Capability,
    ConfigError,
    Context,
    Event,
    Mesh,
    RequestTimeout,
    TransportClosed,
    from_a2a_skill,
    from_mcp_tool,
    to_a2a_skill,
    to_mcp_tool,
)

CAP = Capability(
    name="summarize",
    group="summarizers",
    version="2.1.0",
    description="Summarize a text",
    tags=("nlp",),
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
    output_types=("summary.ready",),
    instance="i1",
    source="/agents/s",
)


def test_dict_round_trip() -> None:
    assert Capability.from_dict(CAP.to_dict()) == CAP
    assert Capability.from_dict({**CAP.to_dict(), "future_field": 1}) == CAP


def test_a2a_skill_round_trip() -> None:
    skill = to_a2a_skill(CAP)
    assert skill["id"] == "summarize" and skill["tags"] == ["nlp"]
    assert skill["inputModes"] == ["application/json"]
    back = from_a2a_skill(skill)
    assert (back.name, back.group, back.version, back.input_schema, back.output_types) == (
        CAP.name,
        CAP.group,
        CAP.version,
        CAP.input_schema,
        CAP.output_types,
    )
    plain = from_a2a_skill({"id": "translate", "name": "Translate", "description": "d"})
    assert plain.group == "cap.translate" and plain.input_schema == {}


def test_mcp_tool_round_trip() -> None:
    tool = to_mcp_tool(CAP)
    assert tool == {
        "name": "summarize",
        "description": "Summarize a text",
        "inputSchema": CAP.input_schema,
    }
    back = from_mcp_tool(tool, group="summarizers")
    assert (back.name, back.group, back.input_schema) == (
        "summarize",
        "summarizers",
        CAP.input_schema,
    )


async def test_request_edge_cases() -> None:
    mesh = Mesh("memory://", capabilities={"heartbeat": 0.2, "resync_wait": 0.1})
    release = asyncio.Event()

    @mesh.capability("slow.answer", group="slow")
    async def slow(request: Event, ctx: Context) -> dict:
        await release.wait()
        return {"ok": True}

    with pytest.raises(ConfigError, match="registered twice"):
        mesh.capability("slow.answer", slow)
    with pytest.raises(TransportClosed, match="start the mesh"):
        await mesh.request("slow.answer", {})
    async with mesh:
        assert [c.name for c in mesh.capabilities()] == ["slow.answer"]
        assert mesh.capabilities()[0].description == ""
        with pytest.raises(RequestTimeout, match=r"within 0\.2s"):
            await mesh.request("slow.answer", {}, timeout=0.2)
        release.set()
        reply = await mesh.request("slow.answer", {}, timeout=5)
        assert reply.data == {"ok": True} and reply.type == "mesh.reply.slow.answer"


async def test_requests_inside_handlers_inherit_the_conversation() -> None:
    mesh = Mesh("memory://", capabilities={"resync_wait": 0.1})
    seen: list[Event] = []

    @mesh.capability("echo")
    async def echo(request: Event, ctx: Context) -> object:
        seen.append(request)
        return request.data

    @mesh.on("job", group="jobs")
    async def job(event: Event, ctx: Context) -> None:
        reply = await mesh.request("echo", {"x": 1}, timeout=5)
        await ctx.emit("job.done", reply.data)

    done: list[Event] = []

    @mesh.on("job.done", group="done")
    async def finished(event: Event) -> None:
        done.append(event)

    async with mesh:
        parent = Event("job", "/t", {}, traceparent="00-t-s-01")
        await mesh.publish(parent)
        async with asyncio.timeout(5):
            while not done:
                await asyncio.sleep(0.01)
    assert seen[0].correlationid == parent.id and seen[0].causationid == parent.id
    assert seen[0].traceparent == "00-t-s-01" and seen[0].meshhops == 1
    assert done[0].data == {"x": 1}
