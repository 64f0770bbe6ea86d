"""SubscriptionHandle: one handler's subscription on a `Mesh`, made before or after start.

::

    sub = await mesh.subscribe("order.created", bill, group="billing")
    ...
    await sub.close()          # in-flight calls finish; unsettled deliveries go back

    async with await mesh.subscribe("order.shipped", notify) as sub:
        ...                    # closed on leaving the block

Every handler has one, whether it came from ``@mesh.on``, ``mesh.on_dead_letter``,
``mesh.subscribe`` or a capability (``mesh.subscription(name)`` finds it). The handle
belongs to the app until it is closed: it goes live at ``start()``, is given back
to the broker at ``stop()`` and goes live again at the next ``start()``. Closing it
removes the handler from the app (its name and group are free again); closing twice,
or concurrently, is one close.

The mechanics (subscribing, routes, stopping) live in `mesh.app.Mesh`; this class is
the public face of one registration and holds what is live for it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from mesh.delivery import ConsumerStats

if TYPE_CHECKING:
    from mesh.app import HandlerSpec, Mesh
    from mesh.delivery import Consumer, RetryPolicy
    from mesh.routing.filters import FilterSpec
    from mesh.transport import Subscription

__all__ = ["SubscriptionHandle"]


class SubscriptionHandle:
    """A handler's subscription on a mesh: its name, group, channels, counters, and a
    ``close()`` that stops it without losing an event.

    ``close(timeout)`` stops taking deliveries, lets running handler calls finish
    within ``timeout`` seconds (default: the mesh's ``shutdown_timeout``), then
    cancels them; what they had not settled goes back to the broker for redelivery
    (to another member of the group, or to a later one). Nothing is acked that the
    handler did not finish. Do not await ``close()`` from inside this subscription's
    own handler: it waits for that very call (schedule it with
    ``asyncio.create_task(sub.close())``, or let the handler return first).
    """

    __slots__ = ("_closed", "_closing", "_consumer", "_mesh", "_routed", "_sub", "_task", "spec")

    def __init__(self, mesh: Mesh, spec: HandlerSpec) -> None:
        self._mesh = mesh
        #: the registration, as given (``routes:`` of the config are applied when it goes live)
        self.spec = spec
        self._routed: HandlerSpec | None = None
        self._consumer: Consumer | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None  # a runtime subscribe in progress
        self._closing: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "live" if self.live else "idle"
        group = f", group={self.group!r}" if self.group is not None else ""
        return f"<SubscriptionHandle {self.name!r}{group} {list(self.patterns)} {state}>"

    # --- what it is ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The handler's name (``mesh.stats(name)``, log lines)."""
        return self.spec.name

    @property
    def group(self) -> str | None:
        """The consumer group (None: a broadcast subscriber)."""
        return self.spec.group

    @property
    def patterns(self) -> tuple[str, ...]:
        """The channel patterns subscribed (with the config's routes applied once live)."""
        spec = self._routed or self.spec
        return tuple(spec.patterns)

    @property
    def filter(self) -> FilterSpec | None:
        """The Subscriptions API filter checked per event, if any."""
        return (self._routed or self.spec).filter

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy its deliveries run under (its own, or the mesh's)."""
        return self.spec.retry or self._mesh._policy

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (or subscribing it at runtime failed)."""
        return self._closed

    @property
    def live(self) -> bool:
        """True while the broker delivers to it (after start, until stop or close)."""
        return self._sub is not None and not self._closed

    @property
    def stats(self) -> ConsumerStats:
        """The counters of its current (or, after stop or close, its last) run; zeros
        before it first went live. A new run (``start()`` after ``stop()``) counts
        from zero again."""
        return self._consumer.stats if self._consumer is not None else ConsumerStats()

    # --- lifecycle -------------------------------------------------------------------

    async def ready(self) -> None:
        """Wait until a subscription made at runtime (``@mesh.on`` after ``start()``) is
        live, and raise what made it fail (the handler is then not registered). Returns
        at once when nothing is pending: before start, or once live. If the mesh stopped
        while it was subscribing, it stays registered and goes live at the next start."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the caller was cancelled, not the subscribe

    async def close(self, timeout: float | None = None) -> None:
        """Stop it and remove the handler from the app (see the class docstring).
        Idempotent: a second call waits for the first to finish and does nothing more."""
        if self._closing is None:
            self._closed = True
            self._closing = self._mesh._spawn(
                self._mesh._close_handle(self, timeout), f"close {self.name}", cancel_on_stop=False
            )
        await asyncio.shield(self._closing)

    async def __aenter__(self) -> SubscriptionHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- for the mesh ------------------------------------------------------------------

    def _attach(self, routed: HandlerSpec, consumer: Consumer, sub: Subscription) -> None:
        self._routed, self._consumer, self._sub = routed, consumer, sub

    def _detach(self) -> Subscription | None:
        sub, self._sub = self._sub, None
        return sub
