"""OpenTelemetry for a mesh, as middleware: ``Mesh(..., middleware=[Tracing(), OTelMetrics()])``.

Needs the ``otel`` extra (``pip install 'event-mesh[otel]'``); importing this module
without it raises `ConfigError` saying so. The spans follow the OpenTelemetry semantic
conventions for messaging:

* every publish is a ``send {channel}`` span (kind PRODUCER) whose context goes into
  the event's ``traceparent``/``tracestate`` (the CloudEvents distributed-tracing
  extension), replacing what the event carried; a `Mesh.publish_many` is one ``send``
  span for the batch (``messaging.batch.message_count``), carried by all its events;
* every handler attempt is a ``process {channel}`` span (kind CONSUMER) whose parent
  is the producer's context read from the event, with a link to it as well; events the
  handler emits are sent inside it, so one session is one trace across every agent and
  broker. A retried delivery is one span per attempt;
* `Mesh.request` is a ``request {capability}`` span (kind CLIENT) around the request's
  send span, so the provider's handler span joins the caller's trace;
* a delivery that never reaches its handler but is dead-lettered (hop limit, contract,
  undecodable, ``max_deliveries``) is a short ``process`` span with that event.

Attributes: ``messaging.system`` (the transport's `WireFormat.system`),
``messaging.operation.name`` / ``.type``, ``messaging.destination.name``,
``messaging.message.id``, ``messaging.message.conversation_id`` (the ``correlationid``),
``messaging.consumer.group.name``, ``cloudevents.event_id`` / ``_source`` / ``_type`` /
``_subject``, and ``mesh.handler`` / ``mesh.attempt`` on process spans. A failure sets
``error.type`` and the span status; retries (``mesh.retry``), dead-lettering
(``mesh.dead_lettered``, with the reason), ``RetryLater`` (``mesh.retry_later``),
hop-limit hits (``mesh.hop_limit``) and an attempt cancelled by a stopping mesh
(``mesh.cancelled``: not acked, the broker redelivers it) are span events.

A ``traceparent`` that is not valid W3C trace context (on an incoming event, or on one
published outside any span) starts a new trace (never a dead letter) and is counted:
`Tracing.invalid_parents`, and the OpenTelemetry counter
``mesh.tracing.invalid_traceparent``.

`OTelMetrics` records OpenTelemetry metrics under the conventions' names
(``messaging.client.sent.messages``, ``messaging.client.operation.duration``,
``messaging.client.consumed.messages``, ``messaging.process.duration``) and the mesh's
own (``mesh.outcomes``, ``mesh.in_flight``, ``mesh.request.duration``,
``mesh.request.timeouts``), for an app that ships metrics through an OpenTelemetry
pipeline rather than a Prometheus scrape (`mesh.metrics`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised in a subprocess without the extra
    raise ConfigError(
        "tracing needs OpenTelemetry, which is not installed: "
        "pip install 'event-mesh[otel]' (opentelemetry-api and opentelemetry-sdk)"
    ) from None

from mesh.event import Event
from mesh.measure import BUCKETS, Measuring
from mesh.middleware import (
    Attempt,
    HandleNext,
    Middleware,
    Outcome,
    PublishBatchNext,
    PublishNext,
    RequestNext,
    serving,
)

if TYPE_CHECKING:
    from mesh.app import Mesh

__all__ = ["OTelMetrics", "Tracing"]

_PROPAGATOR = TraceContextTextMapPropagator()
_ROOT = otel_context.Context()  # no parent: a new trace
_SKIPPED_SPANS = (Outcome.DEAD_LETTERED, Outcome.HOP_LIMITED, Outcome.DROPPED)


class Tracing(Middleware):
    """Spans for every publish, handler attempt and request of one mesh.

    ``tracer_provider`` defaults to the global one (`opentelemetry.trace`), so an app
    that configured the SDK (or runs under ``opentelemetry-instrument``) gets its spans
    where the rest of its telemetry goes; ``meter_provider`` likewise for the counter.
    One instance serves one mesh (its ``messaging.system`` and source).
    """

    def __init__(
        self, *, tracer_provider: Any | None = None, meter_provider: Any | None = None
    ) -> None:
        self._tracer = trace.get_tracer("event-mesh", tracer_provider=tracer_provider)
        meter = metrics.get_meter("event-mesh", meter_provider=meter_provider)
        self._invalid = meter.create_counter(
            "mesh.tracing.invalid_traceparent",
            unit="{event}",
            description="incoming events whose traceparent was not valid trace context",
        )
        #: events whose ``traceparent`` was invalid (each started a new trace)
        self.invalid_parents = 0
        self._mesh: Mesh | None = None
        self._system = ""
        #: the last producer context read from an event, by (traceparent, tracestate)
        self._last: tuple[object, tuple[otel_context.Context, list[Link]]] = (None, (_ROOT, []))

    def attach(self, mesh: Mesh) -> None:
        self._mesh = serving(self, self._mesh, mesh)
        self._system = messaging_system(mesh)

    # --- publish ---------------------------------------------------------------------------

    async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
        parent = None if trace.get_current_span().get_span_context().is_valid else _ROOT
        if parent is not None and event.traceparent:  # no span here: continue the event's
            parent = self._extract(event)[0]
        attributes = self._attributes(event, channel, "send")
        with self._tracer.start_as_current_span(
            f"send {channel}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            try:
                await call_next(
                    event._with_trace(carrier.get("traceparent"), carrier.get("tracestate")),
                    channel,
                )
            except Exception as exc:
                span.set_attribute("error.type", error_type(exc))
                raise

    async def publish_batch(
        self, items: list[tuple[str, Event]], call_next: PublishBatchNext
    ) -> None:
        """One ``send`` span for the whole batch (``messaging.batch.message_count``), whose
        context every event of it carries."""
        channels = {channel for channel, _ in items}
        single = channels.pop() if len(channels) == 1 else None
        attributes = self._base(single, "send")
        attributes["messaging.batch.message_count"] = len(items)
        with self._tracer.start_as_current_span(
            f"send {single}" if single else "send", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            parent, state = carrier.get("traceparent"), carrier.get("tracestate")
            try:
                await call_next(
                    [(channel, event._with_trace(parent, state)) for channel, event in items]
                )
            except Exception as exc:
                span.set_attribute("error.type", error_type(exc))
                raise

    # --- handler attempts ------------------------------------------------------------------

    async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
        event = attempt.event
        assert event is not None, "a handler attempt always has its event"
        parent, links = self._extract(event)
        attributes = self._attributes(event, attempt.channel, "process")
        if attempt.group is not None:
            attributes["messaging.consumer.group.name"] = attempt.group
        attributes["mesh.handler"] = attempt.handler
        attributes["mesh.attempt"] = attempt.number
        with self._tracer.start_as_current_span(
            f"process {attempt.channel}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await call_next(attempt)
            except asyncio.CancelledError:  # the mesh stopped mid-attempt: not acked
                span.add_event("mesh.cancelled", {"mesh.attempt": attempt.number})
                span.set_status(Status(StatusCode.ERROR, "cancelled: not acked, redelivered"))
                raise
            _record(span, attempt)

    def skipped(self, attempt: Attempt) -> None:
        if attempt.outcome not in _SKIPPED_SPANS:
            return  # filtered and duplicate deliveries are acked unseen: no span
        event = attempt.event
        parent, links = self._extract(event) if event is not None else (_ROOT, [])
        attributes = (
            self._attributes(event, attempt.channel, "process")
            if event is not None
            else self._base(attempt.channel, "process")
        )
        if attempt.group is not None:
            attributes["messaging.consumer.group.name"] = attempt.group
        attributes["mesh.handler"] = attempt.handler
        span = self._tracer.start_span(
            f"process {attempt.channel}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        _record(span, attempt)
        span.end()

    # --- requests --------------------------------------------------------------------------

    async def request(self, capability: str, data: Any, call_next: RequestNext) -> Event:
        attributes: dict[str, Any] = {"mesh.capability": capability}  # not a messaging span
        with self._tracer.start_as_current_span(
            f"request {capability}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                return await call_next(capability, data)
            except Exception as exc:
                span.set_attribute("error.type", error_type(exc))
                raise

    # --- helpers ---------------------------------------------------------------------------

    def _extract(self, event: Event) -> tuple[otel_context.Context, list[Link]]:
        """The producer's context from the event (a new trace when it carries none, or an
        invalid one: counted), and the link to it."""
        traceparent = event.traceparent
        if not traceparent:
            return _ROOT, []
        tracestate = event.extensions.get("tracestate")
        key = (traceparent, tracestate)
        if self._last[0] == key:  # the events of one batch share their producer
            return self._last[1]
        carrier = {"traceparent": traceparent}
        if isinstance(tracestate, str):
            carrier["tracestate"] = tracestate
        parent = _PROPAGATOR.extract(carrier, context=_ROOT)
        producer = trace.get_current_span(parent).get_span_context()
        if not producer.is_valid:
            self.invalid_parents += 1
            self._invalid.add(1, {"messaging.system": self._system})
            return _ROOT, []
        found = (parent, [Link(producer)])
        self._last = (key, found)
        return found

    def _base(self, channel: str | None, operation: str) -> dict[str, Any]:
        attributes = {
            "messaging.system": self._system,
            "messaging.operation.name": operation,
            "messaging.operation.type": operation,
        }
        if channel is not None:  # a batch to several channels names none
            attributes["messaging.destination.name"] = channel
        return attributes

    def _attributes(self, event: Event, channel: str, operation: str) -> dict[str, Any]:
        attributes = self._base(channel, operation)
        attributes["messaging.message.id"] = event.id
        attributes["cloudevents.event_id"] = event.id
        attributes["cloudevents.event_source"] = event.source
        attributes["cloudevents.event_type"] = event.type
        if event.subject:
            attributes["cloudevents.event_subject"] = event.subject
        correlation = event.correlationid
        if correlation:
            attributes["messaging.message.conversation_id"] = correlation
        return attributes


def error_type(error: BaseException) -> str:
    """``error.type`` as the conventions ask: the fully qualified type name
    (``mesh.errors.RequestTimeout``), a built-in by its name (``TimeoutError``)."""
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def messaging_system(mesh: Mesh) -> str:
    """``messaging.system`` of ``mesh``'s transport: its `WireFormat.system`, else its
    first URL scheme."""
    transport = type(mesh.transport)
    return transport.wire.system or (transport.schemes[:1] or ("unknown",))[0]


class OTelMetrics(Measuring):
    """OpenTelemetry metrics of one mesh (see the module docstring for the names).

    ``meter_provider`` defaults to the global one. Attributes: ``messaging.system``,
    ``messaging.operation.name``, ``messaging.destination.name``,
    ``messaging.consumer.group.name``, ``mesh.handler``, ``mesh.outcome``, ``error.type``
    on failed sends and attempts, ``mesh.capability`` and ``mesh.outcome`` on requests.
    The consumer lag is a Prometheus gauge only (`mesh.metrics`).
    """

    def __init__(self, *, meter_provider: Any | None = None) -> None:
        meter = metrics.get_meter("event-mesh", meter_provider=meter_provider)
        seconds: dict[str, Any] = {"unit": "s", "explicit_bucket_boundaries_advisory": BUCKETS}
        self._sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="events sent"
        )
        self._send_duration = meter.create_histogram(
            "messaging.client.operation.duration", description="sends until confirmed", **seconds
        )
        self._consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="deliveries that reached a handler",
        )
        self._process = meter.create_histogram(
            "messaging.process.duration", description="one handler attempt", **seconds
        )
        self._outcomes = meter.create_counter(
            "mesh.outcomes", unit="{delivery}", description="attempts and skips by outcome"
        )
        self._in_flight = meter.create_up_down_counter(
            "mesh.in_flight", unit="{attempt}", description="attempts running"
        )
        self._requests = meter.create_histogram(
            "mesh.request.duration", description="capability requests until the reply", **seconds
        )
        self._timeouts = meter.create_counter(
            "mesh.request.timeouts", unit="{request}", description="requests with no reply"
        )
        self._system = ""
        self._mesh: Mesh | None = None
        self._attributes: dict[tuple[Any, ...], dict[str, Any]] = {}

    def attach(self, mesh: Mesh) -> None:
        self._mesh = serving(self, self._mesh, mesh)
        self._system = messaging_system(mesh)

    def _of(self, attempt: Attempt, outcome: str | None = None) -> dict[str, Any]:
        key = (attempt.handler, attempt.group, attempt.channel, outcome)
        found = self._attributes.get(key)
        if found is None:
            found = {
                "messaging.system": self._system,
                "messaging.operation.name": "process",
                "messaging.destination.name": attempt.channel,
                "mesh.handler": attempt.handler,
            }
            if attempt.group is not None:
                found["messaging.consumer.group.name"] = attempt.group
            if outcome is not None:
                found["mesh.outcome"] = outcome
            if len(self._attributes) < 10_000:  # wildcard handlers see any channel
                self._attributes[key] = found
        return found

    def sent(self, channel: str, count: int, seconds: float, error: BaseException | None) -> None:
        attributes = {
            "messaging.system": self._system,
            "messaging.operation.name": "send",
            "messaging.destination.name": channel,
        }
        if error is not None:
            attributes["error.type"] = error_type(error)
        self._send_duration.record(seconds, attributes)
        self._sent.add(count, attributes)

    def consumed(self, attempt: Attempt) -> None:
        self._consumed.add(1, self._of(attempt))

    def running(self, attempt: Attempt, delta: int) -> None:
        self._in_flight.add(delta, self._of(attempt))

    def processed(self, attempt: Attempt, seconds: float) -> None:
        attributes = self._of(attempt, str(attempt.outcome or "cancelled"))
        if attempt.error is not None:
            attributes = {**attributes, "error.type": error_type(attempt.error)}
        self._process.record(seconds, attributes)
        self._outcomes.add(1, attributes)

    def unseen(self, attempt: Attempt) -> None:
        self._outcomes.add(1, self._of(attempt, str(attempt.outcome)))

    def requested(self, capability: str, outcome: str, seconds: float) -> None:
        attributes = {
            "messaging.system": self._system,
            "mesh.capability": capability,
            "mesh.outcome": outcome,
        }
        self._requests.record(seconds, attributes)
        if outcome == "timeout":
            self._timeouts.add(1, attributes)


def _record(span: trace.Span, attempt: Attempt) -> None:
    """The attempt's outcome on its span: events, ``error.type`` and the status."""
    outcome, error = attempt.outcome, attempt.error
    details: Mapping[str, Any] = {"mesh.attempt": attempt.number}
    if error is not None:
        details = {**details, "error.type": error_type(error)}
        span.set_attribute("error.type", error_type(error))
        span.record_exception(error)
    if outcome is Outcome.RETRIED:
        span.add_event("mesh.retry", details)
    elif outcome is Outcome.RETRY_LATER:
        span.add_event("mesh.retry_later", details)
    elif outcome is Outcome.HOP_LIMITED:
        span.add_event("mesh.hop_limit", {**details, "mesh.reason": attempt.reason or ""})
    elif outcome in (Outcome.DEAD_LETTERED, Outcome.DROPPED):
        span.add_event(f"mesh.{outcome.value}", {**details, "mesh.reason": attempt.reason or ""})
    if outcome is not Outcome.ACKED and outcome is not Outcome.RETRY_LATER:
        span.set_status(Status(StatusCode.ERROR, attempt.reason or outcome_text(attempt)))


def outcome_text(attempt: Attempt) -> str:
    """A short description of a failed attempt for the span status."""
    error = attempt.error
    return f"{type(error).__name__}: {error}" if error is not None else str(attempt.outcome)
