"""Config ``routes:`` applied to an app's handlers, in one place.

A route with ``group`` gives the handler of that group its filter and channels
(operators rewire without code changes); a route with ``to`` is served by one
internal handler (group ``mesh.routes``) that republishes what matches. `Mesh.start`
subscribes what `apply_routes` returns and the AsyncAPI document describes the same
result, so the document always shows what a started app really subscribes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mesh.errors import ConfigError, MeshError
from mesh.routing.router import RuleIndex, plan
from mesh.transport import validate_pattern

if TYPE_CHECKING:
    from mesh.app import HandlerSpec
    from mesh.config import RouteConfig

__all__ = ["ROUTER_GROUP", "AppliedRoutes", "Forward", "apply_routes"]

#: The consumer group of the handler that republishes for routes with ``to``.
ROUTER_GROUP = "mesh.routes"


@dataclass(frozen=True, slots=True)
class Forward:
    """A route with ``to``: the channel it republishes to and the neutral channel
    patterns its filter listens on."""

    route: RouteConfig
    to: str
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppliedRoutes:
    """What `apply_routes` made of the handlers and the routes.

    ``handlers``: every handler, in registration order; those a ``group`` route names
    carry the route's filter, channels and residual predicate. ``forwards``: the routes
    with ``to``, in config order. ``index``: those routes by filter, for the handler
    that republishes (one `RuleIndex` lookup per event)."""

    handlers: list[HandlerSpec]
    forwards: list[Forward]
    index: RuleIndex[RouteConfig]

    @property
    def forward_patterns(self) -> list[str]:
        """Every channel pattern a forwarding route listens on, once, in config order."""
        return list(dict.fromkeys(p for forward in self.forwards for p in forward.patterns))


def apply_routes(routes: Sequence[RouteConfig], handlers: Sequence[HandlerSpec]) -> AppliedRoutes:
    """Apply ``routes`` to ``handlers`` (see the module docstring).

    Raises `ConfigError` naming the route for a route that gives both or neither of
    ``group`` and ``to``, a bad filter or ``to`` channel, or a ``group`` no handler has;
    and naming the handler for one left without channels (no type, no filter, and no
    route for its group). Nothing is subscribed or changed: the handlers are copied."""
    result = list(handlers)
    index: RuleIndex[RouteConfig] = RuleIndex()
    forwards: list[Forward] = []
    for route in routes:
        if (route.group is None) == (route.to is None):
            raise ConfigError(
                f"route {route.name!r}: give exactly one of 'group' (a handler "
                "group to deliver to) or 'to' (a channel to republish to)"
            )
        try:
            planned = plan(route.filter)
            if route.to is not None:
                validate_pattern(route.to)
                index.add(route, route.filter)
        except MeshError as exc:
            raise ConfigError(f"route {route.name!r}: {exc}") from None
        if route.to is not None:
            forwards.append(Forward(route, route.to, planned.patterns))
            continue
        at = next((i for i, h in enumerate(result) if h.group == route.group), None)
        if at is None:
            groups = sorted(h.group for h in handlers if h.group)
            raise ConfigError(
                f"route {route.name!r} names group {route.group!r}, but no "
                f"handler has that group (groups: {', '.join(groups) or 'none'})"
            )
        result[at] = replace(
            result[at],
            patterns=list(planned.patterns),
            residual=planned.residual,
            filter=route.filter,
        )
    for spec in result:
        if not spec.patterns:
            raise ConfigError(
                f"handler {spec.name} has no type or filter, and no route in "
                f"the config names its group {spec.group!r}"
            )
    return AppliedRoutes(result, forwards, index)
