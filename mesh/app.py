"""Mesh: the application object. Wires handlers to a transport under the delivery rules.

::

    mesh = Mesh("memory://")                      # or Mesh.from_config("mesh.yaml")

    @mesh.on("task.created", group="workers", max_in_flight=4)
    async def work(event: Event, ctx: Context) -> None:
        await ctx.emit("task.done", {"ok": True})

    async with mesh:                              # start() ... stop()
        await mesh.publish(Event("task.created", "/me", {"n": 1}))

A handler takes the event (annotate ``Event``, or a pydantic model to get validated
data) and optionally the `Context`. ``group=`` names a consumer group: each event goes
to one member across every process running the app; without a group every instance
gets every event. A group name is the broker-side queue/consumer name, so one app may
use a group for one handler only.

Handlers and capabilities may be added before or after ``start()``: every
registration (``@mesh.on``, `Mesh.subscribe`, a capability) goes through one path,
`Mesh._add`, and has a `SubscriptionHandle` whose ``close()`` removes it again without
losing an event (docs/runtime.md). Bad input raises `ConfigError` at the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import typing
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from mesh import plugins
from mesh.batch import BatchPolicy, adapt_batch, batch_invoker, plan_in_flight
from mesh.capabilities import Capabilities, Capability
from mesh.config import MeshConfig, RouteConfig
from mesh.context import Context, child_extensions, derive_id
from mesh.contracts import Contract, ContractRegistry, SchemaSource
from mesh.delivery import Consumer, ConsumerStats, Invoker, RetryPolicy
from mesh.dlq import DeadLetters
from mesh.errors import ConfigError, DataValidationError, MeshError, TransportClosed
from mesh.event import Event
from mesh.handlers import handler_params
from mesh.middleware import Chain, Middleware, PublishBatchNext, PublishNext
from mesh.routing.filters import FilterSpec, Predicate, compile_filter
from mesh.routing.router import RuleIndex, plan
from mesh.routing.routes import ROUTER_GROUP, apply_routes
from mesh.stats import StatsReporter
from mesh.stores import IdempotencyStore
from mesh.subscriptions import SubscriptionHandle
from mesh.transport import Subscription, Transport, is_wildcard, validate_pattern

log = logging.getLogger("mesh")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
G = TypeVar("G", bound=Callable[[], Awaitable[Any]])


@dataclass(slots=True)
class HandlerSpec:
    """One registered handler (what ``@mesh.on`` recorded)."""

    name: str
    func: Callable[..., Awaitable[Any]]
    patterns: list[str]
    filter: FilterSpec | None
    residual: Predicate | None
    group: str | None
    max_in_flight: int
    idempotent: bool
    dead_letters: bool = False
    batch: BatchPolicy | None = None  # a batch handler: gets lists of events (mesh.batch)
    retry: RetryPolicy | None = None  # its own retry policy (None: the mesh's, config.retry)


def _listish(value: object) -> bool:
    return isinstance(value, Sequence | set | frozenset) and not isinstance(value, bytes)


def _adapt(
    func: Callable[..., Awaitable[Any]],
) -> tuple[Invoker, bool, Callable[[Event], Awaitable[Any]] | None]:
    """Adapt a handler's signature once, at registration: (event|model[, ctx]).

    Returns the adapted callable, whether the handler takes a Context (the mesh
    builds one per delivery only then), and ``func`` itself when it takes just the
    `Event` (the consumer then calls it without the adapter), else None."""
    params = handler_params(func, f"handler {func.__qualname__}", "(event) or (event, ctx)")
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        annotation = params[0].annotation
        if isinstance(annotation, str) and annotation.rsplit(".", 1)[-1] not in ("Event", "Any"):
            raise ConfigError(
                f"cannot resolve the annotation {annotation!r} of handler {func.__qualname__} "
                f"({exc}); define the model at module level"
            ) from None
        hints = {}
    model = hints.get(params[0].name)
    with_ctx = len(params) == 2
    if isinstance(model, type) and issubclass(model, BaseModel):
        validate = model.model_validate

        async def call_model(event: Event, ctx: Context | None) -> Any:
            try:
                value = validate(event.data)
            except ValidationError as exc:
                raise DataValidationError(
                    f"data of {event.type} does not match {model.__name__}: "
                    f"{exc.error_count()} error(s): {exc.errors(include_url=False)}"
                ) from None
            return await (func(value, ctx) if with_ctx else func(value))

        return call_model, with_ctx, None
    if with_ctx:
        return func, True, None
    return (lambda event, ctx: func(event)), False, func


class Mesh:
    """The event mesh of one application instance. See the module docstring."""

    def __init__(
        self,
        transport: str | Transport | None = None,
        *,
        config: MeshConfig | None = None,
        source: str | None = None,
        middleware: Sequence[Middleware] = (),
        **overrides: Any,
    ) -> None:
        instance: Transport | None = None
        if isinstance(transport, Transport):  # a ready transport object (tests, custom setups)
            instance, transport = transport, None
        if config is None:
            config = MeshConfig.load(transport=transport, source=source, **overrides)
        elif transport is not None or source is not None or overrides:
            update = {
                k: v
                for k, v in dict(overrides, transport=transport, source=source).items()
                if v is not None
            }
            config = config.merged(update)  # sections merge field by field, as in load()
        self.config = config
        self.instance_id = uuid.uuid4().hex[:12]
        self.transport: Transport = instance or plugins.transport_registry().create(
            config.transport_url, config.transport_options
        )
        self._policy = RetryPolicy.from_config(config.retry)
        #: the middleware chain (`mesh.middleware`): read by every publish and delivery
        self._chain = Chain.of(())
        self._publish_chain: PublishNext | None = None
        self._batch_chain: PublishBatchNext | None = None
        #: every registered handler by (name, group), in registration order
        self._handles: dict[tuple[str, str | None], SubscriptionHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # runtime subscribes and closes
        self._closes: set[asyncio.Task[None]] = set()  # the closes: stop() never cancels them
        self._consumers: dict[str, Consumer] = {}
        self._subscriptions: list[Subscription] = []
        self._store: IdempotencyStore | None = None
        self._started = False
        self._lock = asyncio.Lock()
        self._on_start: list[Callable[[], Awaitable[Any]]] = []
        self._on_stop: list[Callable[[], Awaitable[Any]]] = []
        self.dead_letters = DeadLetters(self)
        self.contracts = ContractRegistry()
        self._capabilities = Capabilities(self)
        for item in Chain.of(middleware).middleware:  # checked first: all or nothing
            self.use(item)
        if config.metrics_port is not None:
            from mesh.metrics import Metrics  # a ConfigError naming the extra if missing

            self.use(Metrics(port=config.metrics_port, host=config.metrics_host))
        if config.stats.enabled:
            self.use(StatsReporter(config.stats.interval))

    @classmethod
    def from_config(cls, path: str | Path | None = None, **overrides: Any) -> Mesh:
        """Build from a YAML file (and ``MESH_*`` variables); ``overrides`` win."""
        return cls(config=MeshConfig.load(path, **overrides))

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of events this app emits."""
        return self.config.source

    def channel_for(self, event_type: str) -> str:
        """The channel an event type is published on: the type itself."""
        return event_type

    def __repr__(self) -> str:
        return f"Mesh(transport={self.config.redacted_transport!r}, started={self._started})"

    # --- registration ------------------------------------------------------------------

    def on(
        self,
        type: str | Sequence[str] | None = None,
        *,
        filter: FilterSpec | None = None,
        group: str | None = None,
        name: str | None = None,
        max_in_flight: int | None = None,
        idempotent: bool | None = None,
        batch: BatchPolicy | Mapping[str, Any] | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
    ) -> Callable[[F], F]:
        """Register a handler for an event type (or channel pattern) and/or a filter.

        ``type`` may be a list, or a channel pattern with ``*``/``>`` tokens.
        ``filter`` is a Subscriptions API filter (see `mesh.routing.filters`); what
        it implies about ``type`` picks the channels, the rest is checked per event.
        ``idempotent`` defaults to True for groups (duplicates are acked unseen).
        ``batch`` (a `BatchPolicy` or a dict of its fields) makes it a batch handler:
        it gets lists of events and may return per-event outcomes (see `mesh.batch`
        and docs/batch.md); ``max_in_flight`` then defaults to at least ``max_size``.
        ``retry`` (a `RetryPolicy`, or a dict of `RetryConfig` fields over the
        config's) and ``max_deliveries`` override ``config.retry`` for this handler.

        Every argument is checked here: bad input raises `ConfigError` at the call,
        with nothing registered. After ``start()`` the handler is subscribed at once,
        through the same code as `subscribe`, in a task the mesh tracks: a failure is
        logged (and the handler unregistered), ``await mesh.subscription(name).ready()``
        waits for it and raises that failure, and ``stop()`` waits for it.
        """
        make = self._prepare(
            "mesh.on()",
            type,
            filter,
            group=group,
            name=name,
            max_in_flight=max_in_flight,
            idempotent=idempotent,
            batch=batch,
            retry=retry,
            max_deliveries=max_deliveries,
        )

        def register(func: F) -> F:
            self._add(make(func))
            return func

        return register

    async def subscribe(
        self,
        type: str | Sequence[str] | None,
        handler: Callable[..., Awaitable[Any]],
        *,
        filter: FilterSpec | None = None,
        group: str | None = None,
        name: str | None = None,
        max_in_flight: int | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
        idempotent: bool | None = None,
        batch: BatchPolicy | Mapping[str, Any] | None = None,
    ) -> SubscriptionHandle:
        """Subscribe ``handler`` (the arguments are those of `on`) and return its handle.

        On a started mesh it is live when this returns: what is published to the
        channels from then on reaches it, and a group that existed before (another
        member, an earlier run) hands it its share of what the group holds. Before
        ``start()`` it is registered like ``@mesh.on`` and goes live at start. The
        handle stays part of the app across ``stop()``/``start()`` until
        `SubscriptionHandle.close` removes it. Bad input raises `ConfigError` here,
        with nothing subscribed; a broker failure raises and leaves nothing
        registered. Cancelling this call does not leave a subscription behind.
        See docs/runtime.md.
        """
        make = self._prepare(
            "mesh.subscribe()",
            type,
            filter,
            group=group,
            name=name,
            max_in_flight=max_in_flight,
            idempotent=idempotent,
            batch=batch,
            retry=retry,
            max_deliveries=max_deliveries,
        )
        if not callable(handler):
            raise ConfigError(
                f"mesh.subscribe(): handler must be an 'async def' function taking (event) "
                f"or (event, ctx), got {handler!r}"
            )
        handle = self._add(make(handler), log_failure=False)
        try:
            await handle.ready()
        except asyncio.CancelledError:
            self._abandon(handle)
            raise
        return handle

    def subscription(self, name: str, *, group: str | None = None) -> SubscriptionHandle:
        """The handle of the handler registered as ``name`` (``@mesh.on``, `subscribe`,
        `on_dead_letter`, or ``capability:<name>`` for a capability); ``group`` picks
        one when several handlers share the name. `ConfigError` when there is none."""
        found = [
            h
            for h in self._handles.values()
            if h.name == name and (group is None or h.group == group)
        ]
        if len(found) == 1:
            return found[0]
        if found:
            groups = ", ".join(repr(h.group) for h in found)
            raise ConfigError(f"several handlers are named {name!r} (groups {groups}); pass group=")
        known = ", ".join(sorted({h.name for h in self._handles.values()})) or "none"
        raise ConfigError(f"no handler named {name!r} is registered; known: {known}")

    def _prepare(
        self,
        where: str,
        type: str | Sequence[str] | None,
        filter: FilterSpec | None,
        *,
        group: str | None,
        name: str | None,
        max_in_flight: int | None,
        idempotent: bool | None,
        batch: BatchPolicy | Mapping[str, Any] | None,
        retry: RetryPolicy | Mapping[str, Any] | None,
        max_deliveries: int | None,
    ) -> Callable[[Callable[..., Awaitable[Any]]], HandlerSpec]:
        """Check every argument of `on`/`subscribe` but the handler (so bad input raises
        at the call) and return what makes the `HandlerSpec` of a handler."""
        policy, in_flight = self._in_flight(batch, max_in_flight, where)
        if type is None and filter is None and group is None:
            raise ConfigError(
                f"{where} needs an event type, a filter, or a group that a "
                "route in the config points at"
            )
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigError(f"{where}: group must be a non-empty string, got {group!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"{where}: name must be a non-empty string, got {name!r}")
        patterns, residual = (
            ([], None) if type is None and filter is None else self._plan(type, filter)
        )  # a bad filter fails here, not at start
        retry_policy = self._policy.resolve(retry, max_deliveries=max_deliveries, where=where)

        def make(func: Callable[..., Awaitable[Any]]) -> HandlerSpec:
            return HandlerSpec(
                name=name or str(getattr(func, "__name__", func)),
                func=func,
                patterns=patterns,
                filter=filter,
                residual=residual,
                group=group,
                max_in_flight=in_flight,
                idempotent=group is not None if idempotent is None else idempotent,
                batch=policy,
                retry=retry_policy,
            )

        return make

    def on_dead_letter(
        self,
        *,
        group: str | None = None,
        name: str | None = None,
        max_in_flight: int | None = None,
        filter: FilterSpec | None = None,
        batch: BatchPolicy | Mapping[str, Any] | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
    ) -> Callable[[F], F]:
        """Register a handler for the dead-letter channel (a repair or alerting agent).

        Dead-letter copies keep the original type and data; ``meshdl*`` extensions say
        why (see `mesh.delivery`). They are never retried into the dead-letter channel
        again: a failing dead-letter handler's event is logged and dropped after retries.
        ``batch`` makes it a batch handler, as for `on` (archive copies in bulk);
        ``retry`` and ``max_deliveries`` as for `on`. After ``start()`` it subscribes at
        once, like `on`.
        """
        channel = self.config.dead_letter_channel
        policy, in_flight = self._in_flight(batch, max_in_flight, "mesh.on_dead_letter()")
        retry_policy = self._policy.resolve(
            retry, max_deliveries=max_deliveries, where="mesh.on_dead_letter()"
        )
        residual = compile_filter(filter) if filter is not None else None

        def register(func: F) -> F:
            self._add(
                HandlerSpec(
                    name=name or func.__name__,
                    func=func,
                    patterns=[channel],
                    filter=filter,
                    residual=residual,
                    group=group,
                    max_in_flight=in_flight,
                    idempotent=group is not None,
                    dead_letters=True,
                    batch=policy,
                    retry=retry_policy,
                )
            )
            return func

        return register

    def _plan(
        self, type: str | Sequence[str] | None, filter: FilterSpec | None
    ) -> tuple[list[str], Predicate | None]:
        """Channel patterns to subscribe and the residual predicate checked per event."""
        types = None
        if type is not None:
            types = [type] if isinstance(type, str) else list(type) if _listish(type) else []
            if not types or not all(isinstance(t, str) for t in types):
                raise ConfigError(
                    f"the event type must be a type or channel pattern ('orders.created', "
                    f"'orders.*') or a non-empty list of them, got {type!r}"
                )
            types = [validate_pattern(self.channel_for(t)) for t in types]
        planned = plan(filter, types=types)
        if not self.transport.features.wildcard_patterns:
            for pattern in planned.patterns:
                if is_wildcard(pattern):
                    raise ConfigError(
                        f"{self.transport.__class__.__name__} does not support wildcard channel "
                        f"patterns like {pattern!r}; list the types"
                    )
        return list(planned.patterns), planned.residual

    def _add(
        self,
        spec: HandlerSpec,
        *,
        log_failure: bool = True,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> SubscriptionHandle:
        """Check ``spec`` and register it: the one path of every handler, before or after
        start. On a started mesh it then goes live in a tracked task (the handle's
        ``ready()``), followed by ``after`` (a capability's announcement); a failure
        unregisters it, and is logged unless ``log_failure`` is False (the caller
        awaits ``ready()`` and raises it)."""
        handlers = self._handlers
        if spec.group is not None and any(h.group == spec.group for h in handlers):
            raise ConfigError(
                f"group {spec.group!r} is already used by handler "
                f"{next(h.name for h in handlers if h.group == spec.group)}; a group is "
                "one broker-side consumer group, so give each handler its own group"
            )
        if any(h.name == spec.name and h.group == spec.group for h in handlers):
            raise ConfigError(f"handler name {spec.name!r} is registered twice; pass name=...")
        if spec.batch is None:
            _adapt(spec.func)
        else:
            adapt_batch(spec.func, spec.name)
        routed = self._routed(spec) if self._started else None  # a route problem raises now
        if routed is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise ConfigError(
                    f"handler {spec.name}: a started mesh subscribes new handlers on its "
                    "event loop; register it from code running on that loop"
                ) from None
        handle = SubscriptionHandle(self, spec)
        self._handles[(spec.name, spec.group)] = handle
        if routed is not None:
            handle._task = self._spawn(
                self._go_live(handle, routed, after),
                f"subscribe {spec.name}",
                log_failure=log_failure,
            )
        return handle

    @property
    def _handlers(self) -> list[HandlerSpec]:
        return [handle.spec for handle in self._handles.values()]

    def _routed(self, spec: HandlerSpec) -> HandlerSpec:
        """``spec`` with the config's ``routes:`` for its group applied, as ``start()``
        applies them to every handler (`apply_routes`), for one registered at runtime."""
        routes = [r for r in self.config.routes if r.group is not None and r.group == spec.group]
        return apply_routes(routes, [spec]).handlers[0]

    def _in_flight(
        self, batch: BatchPolicy | Mapping[str, Any] | None, max_in_flight: int | None, where: str
    ) -> tuple[BatchPolicy | None, int]:
        """A handler's batch policy (None: one event per call) and ``max_in_flight``,
        checked against the transport (`TransportFeatures.max_in_flight`)."""
        policy = None if batch is None else BatchPolicy.coerce(batch, where=f"{where} batch")
        return policy, plan_in_flight(
            policy,
            max_in_flight,
            default=self.config.default_max_in_flight,
            limit=self.transport.features.max_in_flight,
            where=where,
        )

    def contract(
        self, event_type: str, schema: SchemaSource, *, version: int = 1, compatible: bool = True
    ) -> Contract:
        """Give ``event_type`` a data contract (pydantic model, JSON Schema dict or file).

        Published events are validated (`ContractViolation` at the publisher) and get
        ``dataschema``; consumed ones are validated and dead-lettered when they do not
        fit. A newer version must be backward compatible unless ``compatible=False``.
        See docs/contracts.md.
        """
        return self.contracts.register(event_type, schema, version=version, compatible=compatible)

    @overload
    def capability(
        self,
        name: str,
        handler: None = None,
        *,
        input: SchemaSource | None = None,
        group: str | None = None,
        version: str = "1.0.0",
        description: str | None = None,
        output: Sequence[str] = (),
        tags: Sequence[str] = (),
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
    ) -> Callable[[F], F]: ...

    @overload
    def capability(
        self,
        name: str,
        handler: F,
        *,
        input: SchemaSource | None = None,
        group: str | None = None,
        version: str = "1.0.0",
        description: str | None = None,
        output: Sequence[str] = (),
        tags: Sequence[str] = (),
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
    ) -> F: ...

    def capability(
        self,
        name: str,
        handler: F | None = None,
        *,
        input: SchemaSource | None = None,
        group: str | None = None,
        version: str = "1.0.0",
        description: str | None = None,
        output: Sequence[str] = (),
        tags: Sequence[str] = (),
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
    ) -> Any:
        """Serve requests addressed to capability ``name`` (also usable as a decorator).

        ``handler(request, ctx)`` gets the validated model when ``input`` is a pydantic
        model, else the request `Event`; what it returns (a dict, a model, any JSON value)
        is the reply's data. ``group`` (default ``cap.<name>``) is the consumer group
        whose members share the requests. ``retry``/``max_deliveries`` as for `on`: the
        caller gets its error reply when that policy gives up. After ``start()`` this
        behaves like ``@mesh.on`` after start: it subscribes at once in a tracked task
        and then announces the capability (``await add_capability(...)`` does the same
        and returns when peers were told). See docs/capabilities.md.
        """

        def register(func: F) -> F:
            self._capabilities.register(
                name,
                func,
                input=input,
                group=group,
                version=version,
                description=description,
                output=output,
                tags=tags,
                retry=retry,
                max_deliveries=max_deliveries,
            )
            return func

        return register if handler is None else register(handler)

    async def add_capability(
        self,
        name: str,
        handler: Callable[..., Awaitable[Any]],
        *,
        input: SchemaSource | None = None,
        group: str | None = None,
        version: str = "1.0.0",
        description: str | None = None,
        output: Sequence[str] = (),
        tags: Sequence[str] = (),
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_deliveries: int | None = None,
    ) -> Capability:
        """Serve capability ``name`` from now on (the arguments are those of `capability`).

        On a started mesh it returns once the request channel is subscribed and the
        updated announcement was published: peers list it (``mesh.capabilities()``)
        as soon as they receive that, without waiting for a heartbeat. Before start it
        registers like `capability`. Bad input raises `ConfigError` with nothing
        registered; a broker failure raises and leaves nothing registered."""
        capability, handle = self._capabilities.register(
            name,
            handler,
            input=input,
            group=group,
            version=version,
            description=description,
            output=output,
            tags=tags,
            retry=retry,
            max_deliveries=max_deliveries,
            log_failure=False,
        )
        try:
            await handle.ready()
        except asyncio.CancelledError:
            self._abandon(handle)
            raise
        return capability

    async def remove_capability(self, name: str, *, timeout: float | None = None) -> None:
        """Stop serving capability ``name``: the withdrawal is announced at once (peers
        drop it from ``mesh.capabilities()`` when they receive it), then its
        subscription closes like `SubscriptionHandle.close`: requests in flight finish
        within ``timeout`` (default ``shutdown_timeout``), unsettled ones go back to the
        capability's group. `ConfigError` naming the served ones when it is not served."""
        await self._capabilities.handle(name).close(timeout)

    def capabilities(self) -> list[Capability]:
        """The live registry: every capability announced by a live instance."""
        return self._capabilities.directory.live()

    def served_capabilities(self) -> list[Capability]:
        """The capabilities this app serves (`capability`, `add_capability`; not those
        removed), started or not."""
        return list(self._capabilities.local.values())

    async def request(self, capability: str, data: Any = None, *, timeout: float = 30.0) -> Event:
        """Ask capability ``capability`` and wait for its reply event.

        The data is validated against the capability's input schema first
        (`ContractViolation`, nothing sent). Raises `NoProvider` (with similar names)
        when no live instance serves it, `RequestTimeout` after ``timeout`` seconds, and
        `RemoteError` when the provider's handler failed for good. Inside a handler the
        request inherits the conversation (correlation, trace, hops).
        """
        if not self._started:
            raise TransportClosed("start the mesh before mesh.request()")
        if not self.config.capabilities.enabled:
            raise ConfigError(
                "capabilities are disabled in the config (capabilities.enabled: false)"
            )
        wrap = self._chain.request
        if wrap is None:
            return await self._capabilities.request(capability, data, timeout)

        async def ask(name: str, value: Any) -> Event:  # the chain's innermost link
            return await self._capabilities.request(name, value, timeout)

        return await wrap(ask)(capability, data)

    def on_start(self, func: G) -> G:
        """Register ``async def func()`` to run after ``start()`` subscribed every handler
        (publish a first event, warm a cache). An exception stops the mesh again."""
        self._on_start.append(func)
        return func

    def on_stop(self, func: G) -> G:
        """Register ``async def func()`` to run when ``stop()`` begins, before handlers
        drain. Exceptions are logged, and the stop goes on."""
        self._on_stop.append(func)
        return func

    @property
    def started(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._started

    @property
    def handlers(self) -> list[HandlerSpec]:
        """Every registered handler, in registration order (a closed one is gone)."""
        return list(self._handlers)

    def stats(self, name: str) -> ConsumerStats:
        """Counters of the handler registered as ``name`` (after start; a closed one's
        are on its `SubscriptionHandle`)."""
        try:
            return self._consumers[name].stats
        except KeyError:
            raise ConfigError(
                f"no started handler named {name!r}; known: {', '.join(self._consumers)}"
            ) from None

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe every registered handler (and those registered while it
        runs). Idempotent."""
        async with self._lock:
            if self._started:
                return
            routed = self._apply_routes()
            handles = dict(self._handles)  # the ones routed; those added while starting follow
            await self.transport.connect()
            try:
                if self.config.idempotency.enabled and any(h.idempotent for h in self._handlers):
                    self._store = plugins.store_registry().create(self.config.idempotency.store)
                await self.dead_letters.declare()
                await asyncio.gather(
                    *(self._attach(spec, handles.get((spec.name, spec.group))) for spec in routed)
                )
                if self.config.capabilities.enabled:
                    self._subscriptions.extend(await self._capabilities.start())
                self._started = True
                for handle in list(self._handles.values()):  # registered while starting
                    if handles.get((handle.name, handle.group)) is not handle:
                        after = (
                            self._capabilities.announce_now
                            if self._capabilities.serves(handle)
                            else None
                        )
                        handle._task = self._spawn(
                            self._go_live(handle, after=after), f"subscribe {handle.name}"
                        )
                for middleware in self._chain.middleware:
                    await middleware.start()
                for hook in self._on_start:
                    await hook()
            except BaseException:
                self._started = False
                await self._stop_middleware()
                with contextlib.suppress(Exception):  # the heartbeat must not outlive it
                    await self._capabilities.stop(deregister=True)
                await self._settle_tasks(0.0)
                await self._teardown(0.0)
                raise
            log.info(
                "mesh started on %s with %d handler(s)",
                self.config.redacted_transport,
                len(self._handlers),
            )

    def _apply_routes(self) -> list[HandlerSpec]:
        """The handlers to subscribe, with ``routes:`` from the config applied.

        A route with ``group`` gives that group's handler its filter (operators rewire
        without code changes); routes with ``to`` are served by one internal handler
        (group ``mesh.routes``) that republishes matching events. Every problem raises
        `ConfigError` naming the route (`mesh.routing.routes.apply_routes`).
        """
        applied = apply_routes(self.config.routes, self._handlers)
        result = applied.handlers
        if applied.forwards:
            result.append(self._router_spec(applied.index, applied.forward_patterns))
        return result

    def _router_spec(self, index: RuleIndex[RouteConfig], patterns: list[str]) -> HandlerSpec:
        async def route_events(event: Event, ctx: Context) -> None:
            for route in index.match(event):
                assert route.to is not None
                copy = event.replace(
                    id=derive_id(event, f"route:{route.name}", 0), **child_extensions(event)
                )
                await self.publish(copy, channel=route.to)

        return HandlerSpec(
            name="mesh.routes",
            func=route_events,
            patterns=patterns,
            filter=None,
            residual=None,
            group=ROUTER_GROUP,
            max_in_flight=self.config.default_max_in_flight,
            idempotent=True,
        )

    async def _subscribe(self, spec: HandlerSpec) -> tuple[Consumer, Subscription]:
        """Subscribe ``spec`` (routes applied) to the transport; nothing recorded."""
        scope = spec.group or f"{spec.name}@{self.instance_id}"
        invoke, wants_ctx, call_event = (
            _adapt(spec.func)
            if spec.batch is None
            else batch_invoker(spec.func, spec.batch, spec.name)
        )
        consumer = Consumer(
            self,
            invoke=invoke,
            wants_ctx=wants_ctx,
            scope=scope,
            group=spec.group,
            call_event=call_event,
            name=spec.name,
            predicate=spec.residual,
            policy=spec.retry or self._policy,
            store=self._store if spec.idempotent else None,
            contracts=self.contracts,
            patterns=spec.patterns,
            accepts_dead_letters=spec.dead_letters,
        )
        sub = await self.transport.subscribe(
            spec.patterns[0] if len(spec.patterns) == 1 else spec.patterns,
            consumer,
            group=spec.group,
            max_in_flight=spec.max_in_flight,
        )
        return consumer, sub

    async def _attach(self, spec: HandlerSpec, handle: SubscriptionHandle | None) -> None:
        """Subscribe ``spec`` and give the subscription to ``handle`` (None: an internal
        one, the config's forwarding routes); a handle closed meanwhile gets none."""
        consumer, sub = await self._subscribe(spec)
        if handle is not None and handle.closed:
            await sub.close(0.0)
            return
        if handle is None:
            self._subscriptions.append(sub)
        else:
            handle._attach(spec, consumer, sub)
        self._consumers[spec.name] = consumer

    async def _go_live(
        self,
        handle: SubscriptionHandle,
        routed: HandlerSpec | None = None,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Subscribe a handler registered on a started mesh (the task `_add` spawns).

        Any failure unregisters it (nothing stays subscribed) and propagates to its
        ``ready()``; cancelled by ``stop()``, it stays registered for the next start."""
        try:
            if routed is None:
                routed = self._routed(handle.spec)
            if routed.idempotent and self.config.idempotency.enabled and self._store is None:
                self._store = plugins.store_registry().create(self.config.idempotency.store)
            await self._attach(routed, handle)
            if after is not None and handle.live:
                await after()
        except asyncio.CancelledError:
            raise
        except BaseException:
            handle._closed = True
            self._forget(handle)
            sub = handle._detach()
            if sub is not None:
                await sub.close(0.0)
            raise

    def _spawn(
        self,
        coro: Coroutine[Any, Any, None],
        what: str,
        *,
        log_failure: bool = True,
        cancel_on_stop: bool = True,
    ) -> asyncio.Task[None]:
        """Run ``coro`` in a task ``stop()`` waits for (see `_settle_tasks`); a failure
        is logged with ``what`` unless the caller awaits the task and raises it.
        ``cancel_on_stop=False`` (a ``close()``) is never cancelled by ``stop()``:
        cancelling a subscription's close half-way would leave its handlers running."""
        task = asyncio.get_running_loop().create_task(coro, name=f"mesh: {what}")
        self._tasks.add(task)
        if not cancel_on_stop:
            self._closes.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._closes.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None and log_failure:
                log.error("%s failed: %s: %s", what, type(error).__name__, error, exc_info=error)

        task.add_done_callback(done)
        return task

    async def _settle_tasks(self, timeout: float) -> None:
        """Let runtime subscribes and closes in progress end within ``timeout`` seconds,
        then cancel them (a cancelled subscribe leaves its handler registered)."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        closes = pending & self._closes
        cancel = pending - closes
        for task in cancel:
            task.cancel()
        if cancel:
            await asyncio.wait(cancel, timeout=1.0)
        if closes:  # bounded by their own timeout, then their handler calls are cancelled
            await asyncio.wait(closes)

    def _forget(self, handle: SubscriptionHandle) -> bool:
        """Unregister ``handle`` (its name and group are free again); True when it
        served a capability, which is then withdrawn from this instance's list."""
        key = (handle.name, handle.group)
        if self._handles.get(key) is handle:
            del self._handles[key]
        consumer = handle._consumer
        if consumer is not None and self._consumers.get(handle.name) is consumer:
            del self._consumers[handle.name]
        return self._capabilities.forget(handle)

    def _abandon(self, handle: SubscriptionHandle) -> None:
        """Undo a registration whose caller was cancelled while it subscribed: it is
        unregistered now, and whatever the broker completed is closed in the background."""
        handle._closed = True  # a subscribe completing later closes what it got
        was_capability = self._forget(handle)

        async def undo() -> None:
            await handle.close(0.0)
            if was_capability:
                await self._capabilities.announce_now()

        self._spawn(undo(), f"undo {handle.name}")

    async def _close_handle(self, handle: SubscriptionHandle, timeout: float | None) -> None:
        """`SubscriptionHandle.close`: unregister, let a runtime subscribe in progress
        end, withdraw a capability (announced at once), then close the subscription."""
        was_capability = self._forget(handle)
        task = handle._task
        if task is not None and not task.done():
            await asyncio.wait([task])
        if was_capability:
            try:
                await self._capabilities.announce_now()
            except MeshError as exc:  # peers still drop it at this instance's next heartbeat
                log.warning(
                    "withdrawing capability handler %s was not announced (%s); peers drop "
                    "it with this instance's next heartbeat",
                    handle.name,
                    exc,
                )
        sub = handle._detach()
        if sub is not None:
            await sub.close(self.config.shutdown_timeout if timeout is None else timeout)

    async def stop(self, timeout: float | None = None, *, deregister: bool = True) -> None:
        """Stop taking events, let in-flight handlers finish within ``timeout`` seconds
        (default ``shutdown_timeout``), then close. Handlers still running are cancelled
        and their events redelivered, not acked. ``deregister=False`` skips the registry
        leave notice (the instance's capabilities then expire after their TTL, as after
        a crash). Runtime subscribes still in progress are waited for within the same
        timeout, then cancelled; a ``SubscriptionHandle.close()`` in progress is waited
        for with its own timeout (it is never cancelled half-way). Handlers stay
        registered (their handles are not closed): the next ``start()`` subscribes them
        again. Idempotent."""
        async with self._lock:
            if not self._started:
                return
            await self._capabilities.stop(deregister=deregister)
            for hook in self._on_stop:
                try:
                    await hook()
                except Exception:
                    log.exception("on_stop hook %s failed", getattr(hook, "__name__", hook))
            await self._stop_middleware()
            self._started = False
            limit = self.config.shutdown_timeout if timeout is None else timeout
            await self._settle_tasks(limit)
            await self._teardown(limit)
            log.info("mesh stopped")

    async def _teardown(self, timeout: float) -> None:
        """Close every subscription (handles stay registered for the next start) and
        the transport."""
        subs, self._subscriptions = self._subscriptions, []
        subs += [sub for h in list(self._handles.values()) if (sub := h._detach()) is not None]
        await asyncio.gather(*(sub.close(timeout) for sub in subs), return_exceptions=True)
        await self.transport.close()
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def __aenter__(self) -> Mesh:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        """Start, run until SIGINT/SIGTERM (or cancellation), then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self.stop()

    # --- publishing ------------------------------------------------------------------

    # --- middleware -------------------------------------------------------------------

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The installed middleware, outermost first (see `mesh.middleware`)."""
        return self._chain.middleware

    def use(self, middleware: Middleware) -> Middleware:
        """Install ``middleware`` innermost (after those given to `Mesh` or installed
        before); allowed while the mesh runs: the next publish and the next attempt go
        through it. Returns it, so ``tracing = mesh.use(Tracing())`` keeps a handle."""
        chain = Chain.of((*self._chain.middleware, middleware))
        middleware.attach(self)
        if self._started:  # its server or task starts now, not at the next start()
            self._spawn(middleware.start(), f"start of middleware {middleware!r}")
        self._chain = chain
        self._publish_chain = None if chain.publish is None else chain.publish(self._send)
        batch = chain.publish_batch
        self._batch_chain = None if batch is None else batch(self._send_batch)
        return middleware

    # --- publishing ------------------------------------------------------------------

    async def publish(self, event: Event, *, channel: str | None = None) -> None:
        """Publish ``event`` (to the channel of its type unless ``channel`` is given)
        and return when the transport confirmed it."""
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes a mesh.Event, got {type(event).__name__}")
        if self._publish_chain is not None:  # the chain sees what the caller sent
            await self._publish_chain(event, channel or self.channel_for(event.type))
            return
        event = self._under_contract(event)
        try:
            await self.transport.publish(channel or self.channel_for(event.type), event)
        except TransportClosed:
            if self._started:  # the transport's own reason; never "not started" here
                raise
            raise self._not_started() from None

    async def _send(self, event: Event, channel: str) -> None:
        """The innermost link of the publish chain: the contract check and the write."""
        if not isinstance(event, Event):
            raise TypeError(
                f"a middleware passed on {type(event).__name__}, not a mesh.Event, to publish"
            )
        event = self._under_contract(event)
        try:
            await self.transport.publish(channel, event)
        except TransportClosed:
            if self._started:  # the transport's own reason; never "not started" here
                raise
            raise self._not_started() from None

    async def _stop_middleware(self) -> None:
        for middleware in self._chain.middleware:
            try:
                await middleware.stop()
            except Exception:
                log.exception("stop of middleware %r failed", middleware)

    @staticmethod
    def _not_started() -> TransportClosed:
        return TransportClosed(
            "the mesh is not started; use 'async with mesh:' or "
            "await mesh.start() before publishing"
        )

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Publish several events; returns when all are confirmed (pipelined where the
        transport can)."""
        chain = self._batch_chain
        if len(self.contracts) and chain is None:  # else checked in the chain's last link
            events = [self._under_contract(e) for e in events]
        if type(self).channel_for is Mesh.channel_for:  # the channel is the type
            items = [(e.type, e) for e in events]
        else:
            channel_for = self.channel_for
            items = [(channel_for(e.type), e) for e in events]
        if chain is None:
            await self.transport.publish_batch(items)
        else:
            await chain(items)

    async def _send_batch(self, items: list[tuple[str, Event]]) -> None:
        """The innermost link of the batch chain: the contract checks and the writes."""
        for _, event in items:
            if not isinstance(event, Event):
                raise TypeError(
                    f"a middleware passed on {type(event).__name__}, not a mesh.Event, "
                    "to publish_many"
                )
        if len(self.contracts):
            items = [(channel, self._under_contract(event)) for channel, event in items]
        try:
            await self.transport.publish_batch(items)
        except TransportClosed:
            if self._started:
                raise
            raise self._not_started() from None

    def _under_contract(self, event: Event) -> Event:
        """Validate against the type's contract (`ContractViolation`, nothing sent) and
        point ``dataschema`` at it."""
        contract = self.contracts.get(event.type)
        if contract is None:
            return event
        contract.check(event)
        return event if event.dataschema else event.replace(dataschema=contract.uri)

    async def emit(self, type: str, data: Any = None, **attributes: Any) -> Event:
        """Create and publish a new event from this app (``source`` = the app's source)."""
        extensions = {
            k: attributes.pop(k)
            for k in list(attributes)
            if k
            not in (
                "subject",
                "datacontenttype",
                "dataschema",
                "time",
                "id",
                "source",
                "extensions",
            )
        }
        extensions.update(attributes.pop("extensions", None) or {})
        attributes.setdefault("source", self.source)
        event = Event(type, data=data, extensions=extensions, **attributes)
        await self.publish(event)
        return event
