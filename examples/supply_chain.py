"""Supply chain: one delayed shipment fans out to independent agents, a supervisor asks
a capability for a new route, and a data contract guards the event they all rely on.

    python examples/supply_chain.py [--transport URL] [--shipment SHP-1042] [--delay 18]

What happens, every step an event on one shared broker (``memory://supply-chain`` by
default, or ``--transport``/``MESH_TRANSPORT``), every agent its own `Mesh`:

    dispatch --shipment.delayed--+--> route-optimizer  (group route-optimizer): flags the lane
                                 +--> customer-service (group customer-service)
                                 |        --> customer.notified
                                 +--> inventory        (group inventory)
                                 |        --> inventory.rebalanced
                                 +--> supervisor       (group supervisor)
                                          mesh.request("optimize.route", ...)  by capability
                                            --> route-optimizer serves it (group
                                                route-optimizers) --> reply
                                          --> shipment.decision

* **Fan-out by consumer group.** Each agent subscribes with its own group, so the one
  event reaches every group once; more replicas of an agent (same group) would share
  the work instead of doubling it.
* **Capabilities.** The route optimizer registers ``optimize.route`` with a pydantic
  input model; the supervisor never names it: ``mesh.request`` finds a live provider
  in the registry, validates the data against the announced schema, and waits for
  the reply correlated by the request's id (the reply's ``causationid``).
* **Contracts.** The dispatcher registers a contract for ``shipment.delayed``. An
  invalid event (a negative delay) is refused *at the publisher* with
  `ContractViolation`: nothing reaches the broker, no consumer sees garbage.

All logic is deterministic fake logic (a route table, a stock table), so every run tells
the same story; on memory:// it is over in about a second. Events of this run are
told apart from leftovers of an earlier run on a persistent broker by ``correlationid``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import _ui  # the examples' shared output and script helpers (examples/_ui.py)
from pydantic import BaseModel, Field

from mesh import Context, ContractViolation, Event, Mesh, MeshError

# --- the data ----------------------------------------------------------------------------


class ShipmentDelayed(BaseModel):
    """The contract of ``shipment.delayed``: what every consumer may rely on."""

    shipment_id: str = Field(pattern=r"^SHP-\d+$")
    origin: str
    destination: str
    delay_hours: int = Field(ge=0, description="hours behind schedule")
    reason: str
    customer: str
    sku: str
    units: int = Field(gt=0)


class RouteRequest(BaseModel):
    """The input of capability ``optimize.route``."""

    shipment_id: str
    origin: str
    destination: str
    avoid: list[str] = Field(default_factory=list, description="hubs not to route through")
    max_hours: int = Field(gt=0, description="longest acceptable transit")


class RouteChoice(BaseModel):
    """The reply of ``optimize.route``."""

    shipment_id: str
    via: str
    hours: int
    cost_eur: int


#: Candidate routes per lane: (hub, transit hours, cost). The "optimizer" takes the cheapest
#: one that avoids the congested hubs and arrives in time.
ROUTES: dict[tuple[str, str], list[tuple[str, int, int]]] = {
    ("Rotterdam", "Milan"): [("Basel", 22, 900), ("Lyon", 27, 1040), ("Munich", 25, 1180)],
    ("Hamburg", "Madrid"): [("Paris", 30, 1300), ("Lyon", 33, 1210), ("Barcelona", 36, 990)],
}
#: Stock per warehouse and SKU, used by the inventory agent to cover a delay.
STOCK: dict[str, dict[str, int]] = {
    "Turin": {"SKU-7": 120, "SKU-9": 10},
    "Zurich": {"SKU-7": 30, "SKU-9": 200},
}
DEFAULT_SHIPMENT = {
    "shipment_id": "SHP-1042",
    "origin": "Rotterdam",
    "destination": "Milan",
    "delay_hours": 18,
    "reason": "strike at the Basel rail hub",
    "customer": "ACME Retail",
    "sku": "SKU-7",
    "units": 40,
}
GROUPS = ("route-optimizer", "customer-service", "inventory", "supervisor")
RESULTS = ("customer.notified", "inventory.rebalanced", "shipment.decision")


def optimize(request: RouteRequest) -> RouteChoice:
    """Deterministic fake optimisation over `ROUTES`."""
    candidates = ROUTES.get((request.origin, request.destination), [("direct", 48, 1500)])
    usable = [
        (hub, hours, cost)
        for hub, hours, cost in candidates
        if hub not in request.avoid and hours <= request.max_hours
    ] or candidates
    hub, hours, cost = min(usable, key=lambda route: (route[2], route[1]))
    return RouteChoice(shipment_id=request.shipment_id, via=hub, hours=hours, cost_eur=cost)


def congested_hub(reason: str) -> str | None:
    """The hub a delay reason names (``"strike at the Basel rail hub"`` -> Basel)."""
    hubs = {hub for routes in ROUTES.values() for hub, _, _ in routes}
    return next((hub for hub in sorted(hubs) if hub in reason), None)


# --- the trace ----------------------------------------------------------------------------


class View:
    """The trace: every step is a line; on a terminal the lines are styled and stand
    above a live table of the agents' state (one row per consumer group)."""

    def __init__(self, plain: bool) -> None:
        self.status = {group: "waiting" for group in GROUPS}
        self.out = _ui.output(plain, self._table)

    def say(self, text: str, style: str = "") -> None:
        self.out.say(text, style)

    def agent(self, group: str, status: str) -> None:
        self.status[group] = status
        self.out.refresh()

    def close(self) -> None:
        self.out.close()

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title="agents", expand=False)
        table.add_column("consumer group")
        table.add_column("status")
        for group, status in self.status.items():
            table.add_row(group, status, style="green" if status.startswith("done") else "")
        return table


# --- the agents ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What this run produced, keyed by event type; `done` once every part is in."""

    run_id: str
    received: dict[str, str] = field(default_factory=dict)  # group -> event id
    results: dict[str, Event] = field(default_factory=dict)
    exchange: dict[str, str] = field(default_factory=dict)  # capability request/reply
    refused: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        if set(self.received) >= set(GROUPS) and set(self.results) >= set(RESULTS):
            self.done.set()

    def missing(self) -> list[str]:
        return [f"{g} delivery" for g in GROUPS if g not in self.received] + [
            t for t in RESULTS if t not in self.results
        ]


class SupplyChain:
    """Every agent of the example as its own Mesh on one broker, plus the dispatcher."""

    def __init__(self, url: str, view: View, request_timeout: float = 10.0) -> None:
        self.view = view
        self.request_timeout = request_timeout
        self.outcome = Outcome(run_id=str(uuid.uuid4()))

        def mesh(name: str) -> Mesh:
            return Mesh(url, source=f"/supply-chain/{name}")

        # The publisher owns the contract: it is where a bad event must be stopped.
        self.dispatch = mesh("dispatch")
        self.contract = self.dispatch.contract("shipment.delayed", ShipmentDelayed)
        # Broadcast watcher (no group): sees this run's results, takes nothing from anyone.
        self.dispatch.on(
            list(RESULTS),
            filter={"exact": {"correlationid": self.outcome.run_id}},
            name="watch",
            max_in_flight=1,
        )(self.watch)

        self.route_optimizer = mesh("route-optimizer")
        self.route_optimizer.on("shipment.delayed", group="route-optimizer", name="flag_lane")(
            self.flag_lane
        )
        self.route_optimizer.capability(
            "optimize.route",
            self.serve_route,
            input=RouteRequest,
            group="route-optimizers",
            version="1.2.0",
            description="Cheapest route for a shipment avoiding given hubs",
            output=["route.optimized"],
            tags=["logistics", "routing"],
        )

        self.customer_service = mesh("customer-service")
        self.customer_service.on(
            "shipment.delayed", group="customer-service", name="notify_customer"
        )(self.notify_customer)

        self.inventory = mesh("inventory")
        self.inventory.on("shipment.delayed", group="inventory", name="rebalance")(self.rebalance)

        self.supervisor = mesh("supervisor")
        self.supervisor.on("shipment.delayed", group="supervisor", name="decide")(self.decide)

    @property
    def meshes(self) -> list[Mesh]:
        """Start order: the capability's provider first, the publisher last."""
        return [
            self.route_optimizer,
            self.customer_service,
            self.inventory,
            self.supervisor,
            self.dispatch,
        ]

    def _ours(self, ctx: Context) -> bool:
        return ctx.correlationid == self.outcome.run_id

    def _got(self, group: str, delayed: ShipmentDelayed, ctx: Context) -> None:
        tag = "" if self._ours(ctx) else " (from an earlier run)"
        self.view.say(
            f"fan-out: {group} [group {group}] got shipment.delayed "
            f"{delayed.shipment_id} (event {ctx.event.id}){tag}"
        )
        if self._ours(ctx):
            self.outcome.received[group] = ctx.event.id
            self.view.agent(group, "got shipment.delayed")
            self.outcome.check()

    # -- route optimizer -----------------------------------------------------------------

    async def flag_lane(self, delayed: ShipmentDelayed, ctx: Context) -> None:
        """The optimizer's own reaction to the delay: note the congested hub."""
        self._got("route-optimizer", delayed, ctx)
        hub = congested_hub(delayed.reason)
        self.view.say(
            f"route-optimizer: lane {delayed.origin}->{delayed.destination} "
            f"flagged, congested hub: {hub or 'none'}"
        )
        self.view.agent("route-optimizer", "done: lane flagged")

    async def serve_route(self, request: RouteRequest, ctx: Context) -> RouteChoice:
        """Serve ``optimize.route``: the returned model is the reply's data."""
        choice = optimize(request)
        self.view.say(
            f"route-optimizer: serving optimize.route request {ctx.event.id} "
            f"(correlationid {ctx.correlationid}, reply to instance "
            f"{ctx.event.extensions.get('meshreplyto')}): via {choice.via}, "
            f"{choice.hours}h, {choice.cost_eur} EUR"
        )
        return choice

    # -- customer service ----------------------------------------------------------------

    async def notify_customer(self, delayed: ShipmentDelayed, ctx: Context) -> None:
        self._got("customer-service", delayed, ctx)
        message = (
            f"Dear {delayed.customer}, shipment {delayed.shipment_id} to "
            f"{delayed.destination} is running {delayed.delay_hours}h late "
            f"({delayed.reason}). We are rerouting it."
        )
        event = await ctx.emit(
            "customer.notified",
            {
                "shipment_id": delayed.shipment_id,
                "customer": delayed.customer,
                "channel": "email",
                "message": message,
            },
        )
        self.view.say(
            f"customer-service: emitted customer.notified {event.id} "
            f"(causationid {event.causationid})"
        )
        self.view.agent("customer-service", "done: customer.notified")

    # -- inventory -----------------------------------------------------------------------

    async def rebalance(self, delayed: ShipmentDelayed, ctx: Context) -> None:
        self._got("inventory", delayed, ctx)
        source = max(sorted(STOCK), key=lambda wh: STOCK[wh].get(delayed.sku, 0))
        units = min(delayed.units, STOCK[source].get(delayed.sku, 0))
        event = await ctx.emit(
            "inventory.rebalanced",
            {
                "shipment_id": delayed.shipment_id,
                "sku": delayed.sku,
                "units": units,
                "from": source,
                "to": delayed.destination,
            },
        )
        self.view.say(
            f"inventory: emitted inventory.rebalanced {event.id}: {units} x "
            f"{delayed.sku} from {source} to {delayed.destination}"
        )
        self.view.agent("inventory", "done: inventory.rebalanced")

    # -- supervisor ----------------------------------------------------------------------

    async def decide(self, delayed: ShipmentDelayed, ctx: Context) -> None:
        """Ask whoever serves ``optimize.route`` (by capability, not by name), then
        decide. The request inherits this event's correlationid."""
        self._got("supervisor", delayed, ctx)
        hub = congested_hub(delayed.reason)
        self.view.say(
            f"supervisor: requesting capability optimize.route for "
            f"{delayed.shipment_id} (avoid {hub or 'nothing'}, "
            f"correlationid {ctx.correlationid})"
        )
        reply = await ctx.mesh.request(
            "optimize.route",
            {
                "shipment_id": delayed.shipment_id,
                "origin": delayed.origin,
                "destination": delayed.destination,
                "avoid": [hub] if hub else [],
                "max_hours": 24 + delayed.delay_hours,
            },
            timeout=self.request_timeout,
        )
        choice = RouteChoice.model_validate(reply.data)
        self.view.say(
            f"supervisor: reply {reply.type} {reply.id} to request "
            f"{reply.causationid} (correlationid {reply.correlationid}): via "
            f"{choice.via}, {choice.hours}h, {choice.cost_eur} EUR"
        )
        if self._ours(ctx):
            self.outcome.exchange = {
                "request": str(reply.causationid),
                "reply": reply.id,
                "route": f"via {choice.via}, {choice.hours}h, {choice.cost_eur} EUR",
            }
        event = await ctx.emit(
            "shipment.decision",
            {
                "shipment_id": delayed.shipment_id,
                "action": "reroute",
                "via": choice.via,
                "transit_hours": choice.hours,
                "cost_eur": choice.cost_eur,
            },
        )
        self.view.say(
            f"supervisor: emitted shipment.decision {event.id}: reroute "
            f"{delayed.shipment_id} via {choice.via}"
        )
        self.view.agent("supervisor", f"done: reroute via {choice.via}")

    # -- the dispatcher --------------------------------------------------------------------

    async def watch(self, event: Event) -> None:
        self.outcome.results.setdefault(event.type, event)
        self.outcome.check()

    async def run(self, shipment: dict[str, Any]) -> Outcome:
        """Start every agent, wait until the registry shows the capability, show the
        contract refusing a bad event, publish the real one, wait for every outcome."""
        for agent in self.meshes:
            await agent.start()
        await self._await_capability("optimize.route")
        self.view.say(f"dispatch: contract for shipment.delayed registered ({self.contract.uri})")
        bad = {**shipment, "delay_hours": -3, "units": 0}
        try:
            await self.dispatch.emit("shipment.delayed", bad)
        except ContractViolation as exc:
            self.outcome.refused.append(str(exc))
            self.view.say(
                f"dispatch: refused an invalid shipment.delayed at the publisher, "
                f"nothing was sent: ContractViolation: {exc}",
                style="red",
            )
        else:
            raise AssertionError("the contract let an invalid shipment.delayed through")
        event = Event(
            "shipment.delayed",
            self.dispatch.source,
            shipment,
            id=self.outcome.run_id,
            subject=shipment["shipment_id"],
            extensions={"correlationid": self.outcome.run_id},
        )
        self.view.say(
            f"dispatch: publishing shipment.delayed {event.id} "
            f"(correlationid {self.outcome.run_id})",
            style="bold",
        )
        await self.dispatch.publish(event)
        await self.outcome.done.wait()
        return self.outcome

    async def _await_capability(self, name: str) -> None:
        """The supervisor would wait for the registry on its first request anyway; waiting
        here puts the registry's view in the trace before anything happens."""
        # The registry offers no public "changed" event to wait on; a 20 ms poll of the
        # local directory costs nothing and ends within a resync round trip.
        while not (providers := [c for c in self.supervisor.capabilities() if c.name == name]):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for cap in providers:
            self.view.say(
                f"registry: {cap.name} v{cap.version} served by {cap.source} "
                f"(instance {cap.instance}, group {cap.group}, "
                f"tags {', '.join(cap.tags)})"
            )

    async def close(self) -> None:
        await asyncio.gather(
            *(agent.stop(timeout=2.0) for agent in self.meshes), return_exceptions=True
        )


# --- wiring -------------------------------------------------------------------------------


def format_summary(outcome: Outcome, shipment: dict[str, Any]) -> str:
    decision = outcome.results["shipment.decision"].data
    moved = outcome.results["inventory.rebalanced"].data
    notified = outcome.results["customer.notified"].data
    return "\n".join(
        [
            "",
            f"SUMMARY for {shipment['shipment_id']} (correlationid {outcome.run_id})",
            f"  fan-out: shipment.delayed delivered to each of {len(GROUPS)} consumer groups: "
            + ", ".join(GROUPS),
            f"  capability: optimize.route request {outcome.exchange.get('request', '?')} -> "
            f"reply {outcome.exchange.get('reply', '?')}: {outcome.exchange.get('route', '?')}",
            f"  decision: {decision['action']} via {decision['via']} (shipment.decision)",
            f"  customer: {notified['customer']} notified by {notified['channel']} "
            "(customer.notified)",
            f"  inventory: {moved['units']} x {moved['sku']} from {moved['from']} to {moved['to']} "
            "(inventory.rebalanced)",
            f"  contract: {len(outcome.refused)} invalid shipment.delayed refused at the publisher",
        ]
    )


async def main_async(args: argparse.Namespace) -> int:
    url = _ui.resolve_transport(args.transport, "supply-chain")
    shipment = {**DEFAULT_SHIPMENT, "shipment_id": args.shipment, "delay_hours": args.delay}
    view = View(args.plain)
    try:
        try:
            chain = SupplyChain(url, view, request_timeout=args.timeout)
        except MeshError as exc:
            return _ui.fail(exc)
        view.say(
            f"supply chain on {chain.dispatch.config.redacted_transport}: agents "
            + ", ".join(GROUPS)
            + ", dispatch"
        )
        try:
            outcome = await asyncio.wait_for(chain.run(shipment), args.timeout)
        except TimeoutError:
            missing = chain.outcome.missing()
            return _ui.fail(
                f"the supply chain did not finish within {args.timeout:g}s (missing: "
                f"{', '.join(missing) or 'nothing'}); is the broker reachable and are all "
                "agents running?"
            )
        except MeshError as exc:
            return _ui.fail(exc)
        finally:
            await chain.close()
    finally:
        view.close()
    print(format_summary(outcome, shipment), flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _ui.parser(__doc__, timeout=30.0)
    parser.add_argument(
        "--shipment",
        default=DEFAULT_SHIPMENT["shipment_id"],
        help="shipment id, SHP-<digits> (default %(default)s)",
    )
    parser.add_argument(
        "--delay",
        type=int,
        default=DEFAULT_SHIPMENT["delay_hours"],
        help="hours of delay (default %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return _ui.main(main_async, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
