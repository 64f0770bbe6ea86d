"""Routes in config: rewire handlers and republish by filter, without code changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mesh import ConfigError, Event, Mesh


async def _until(check: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_routes_republish_and_rewire(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("""
transport: memory://
routes:
  - name: big-orders-to-review
    filter: {sql: "type = 'order.placed' AND data.total > 100"}
    to: review.requested
  - name: escalations
    filter: {prefix: {type: "incident."}}
    group: escalation
""")
    mesh = Mesh.from_config(path)
    reviews: list[Event] = []
    escalated: list[str] = []

    @mesh.on("review.requested", group="reviewers")
    async def review(event: Event) -> None:
        reviews.append(event)

    @mesh.on(group="escalation")  # its routing comes from the config
    async def escalate(event: Event) -> None:
        escalated.append(event.type)

    async with mesh:
        big = Event("order.placed", "/shop", {"total": 500})
        await mesh.publish(big)
        await mesh.publish(Event("order.placed", "/shop", {"total": 5}))
        await mesh.publish(Event("incident.opened", "/ops", {}))
        await mesh.publish(Event("other.thing", "/ops", {}))
        await _until(lambda: reviews and escalated)
        await asyncio.sleep(0.05)
    assert len(reviews) == 1 and reviews[0].data == {"total": 500}
    assert reviews[0].causationid == big.id and reviews[0].type == "order.placed"
    assert reviews[0].id != big.id and reviews[0].meshhops == 1
    assert escalated == ["incident.opened"]


@pytest.mark.parametrize(
    "routes,handler_group,fragment",
    [
        (
            [{"name": "r1", "filter": {"sql": "type = "}, "to": "x"}],
            None,
            r"route 'r1': .*position",
        ),
        ([{"name": "r2", "filter": {"regex": "x"}, "to": "x"}], None, "route 'r2': unknown filter"),
        (
            [{"name": "r3", "filter": {"exact": {"type": "a"}}}],
            None,
            "route 'r3': give exactly one",
        ),
        (
            [{"name": "r4", "filter": {"exact": {"type": "a"}}, "to": "x", "group": "g"}],
            None,
            "route 'r4': give exactly one",
        ),
        (
            [{"name": "r5", "filter": {"exact": {"type": "a"}}, "group": "nobody"}],
            "g",
            "route 'r5' names group 'nobody', but no handler has that group \\(groups: g\\)",
        ),
        (
            [{"name": "r6", "filter": {"exact": {"type": "a"}}, "to": "bad..channel"}],
            None,
            "route 'r6': .*empty token",
        ),
        ([], "g", "handler h has no type or filter, and no route"),
    ],
)
async def test_invalid_routes_fail_at_start_naming_the_route(
    routes: list[dict], handler_group: str | None, fragment: str
) -> None:
    mesh = Mesh("memory://", routes=routes)
    if handler_group:

        @mesh.on(group=handler_group)
        async def h(event: Event) -> None: ...

    with pytest.raises(ConfigError, match=fragment):
        await mesh.start()
    assert "started=False" in repr(mesh)


def test_on_needs_something_to_route_by() -> None:
    with pytest.raises(ConfigError, match="needs an event type, a filter, or a group"):
        Mesh("memory://").on()
