"""Prometheus metrics of a mesh, as a middleware on ``prometheus_client``.

``Mesh(..., metrics_port=9464)`` (or ``metrics_port:`` in the config,
``MESH_METRICS_PORT``, ``mesh run app.py --metrics-port 9464``) installs a `Metrics`
middleware and serves ``/metrics`` on that port while the mesh runs; `Metrics` can
also be installed by hand (``mesh.use(Metrics(registry))``) to export through a
registry the app already serves. Needs the ``prometheus`` extra.

Every series is labelled so one dashboard covers a fleet: ``handler``, ``group`` (empty
for a broadcast handler), ``channel``, and ``outcome`` (the `Outcome` values):

================================== ========= =====================================
name                               kind      what
================================== ========= =====================================
``mesh_messages_sent_total``       counter   events the broker confirmed (channel)
``mesh_publish_duration_seconds``  histogram publish until confirmed (channel)
``mesh_messages_consumed_total``   counter   deliveries that reached a handler's rules
``mesh_process_duration_seconds``  histogram one handler attempt, by outcome
``mesh_outcomes_total``            counter   attempts and skipped deliveries by outcome
                                             (retried, dead_lettered, filtered,
                                             duplicate, hop_limited, ...)
``mesh_in_flight``                 gauge     handler attempts running now
``mesh_request_duration_seconds``  histogram `Mesh.request` round trips (capability,
                                             outcome: ok, timeout, no_provider, ...)
``mesh_consumer_lag``              gauge     messages of a group not yet acked, from
                                             the broker (group, channel); see
                                             `Transport.backlog`
================================== ========= =====================================

The lag gauge is refreshed every ``metrics_interval`` seconds while the mesh runs, for
every group handler, from `Transport.backlog`; a transport that cannot tell exports no
lag series. It is the gauge KEDA's Prometheus scaler reads to scale a worker
deployment on backlog (docs/observability.md shows the ScaledObject).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError
from mesh.measure import BUCKETS, Measuring
from mesh.middleware import Attempt, serving

if TYPE_CHECKING:
    from mesh.app import Mesh

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
except ImportError:  # pragma: no cover - exercised in a subprocess without the extra
    raise ConfigError(
        "metrics need prometheus_client, which is not installed: "
        "pip install 'event-mesh[prometheus]'"
    ) from None

__all__ = ["Metrics"]

log = logging.getLogger("mesh.metrics")


class Metrics(Measuring):
    """Prometheus series for every publish, delivery, attempt and request of one mesh.

    ``registry``: where the series are registered (a new `CollectorRegistry` by
    default, so two meshes in one process never clash). With ``port`` (0: any free
    one) the mesh serves it on ``host:port/metrics`` from its start to its stop
    (`port` then says where); without, serve it yourself (`serve`, or your app's own
    exporter). One instance serves one mesh.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        port: int | None = None,
        host: str = "0.0.0.0",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.port, self.host = port, host
        registry = self.registry
        attempt = ("handler", "group", "channel")
        self.sent_total = Counter(
            "mesh_messages_sent", "Events the broker confirmed.", ["channel"], registry=registry
        )
        self.publish_duration = Histogram(
            "mesh_publish_duration_seconds",
            "Publish calls until the broker confirmed.",
            ["channel"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.consumed_total = Counter(
            "mesh_messages_consumed",
            "Deliveries that reached a handler.",
            attempt,
            registry=registry,
        )
        self.process_duration = Histogram(
            "mesh_process_duration_seconds",
            "One handler attempt, by outcome.",
            [*attempt, "outcome"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.outcomes = Counter(
            "mesh_outcomes",
            "Handler attempts and skipped deliveries, by outcome.",
            [*attempt, "outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "mesh_in_flight",
            "Handler attempts running now.",
            ["handler", "group"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "mesh_request_duration_seconds",
            "Capability requests until the reply, by outcome.",
            ["capability", "outcome"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "mesh_consumer_lag",
            "Messages of a group the broker holds that are not acked yet.",
            ["group", "channel"],
            registry=registry,
        )
        self._mesh: Mesh | None = None
        self._poller: asyncio.Task[None] | None = None
        self._server: Any = None
        # label lookups are the cost of a series: each child is resolved once
        self._children: dict[tuple[Any, ...], Any] = {}
        self._lag_series: set[tuple[str, str]] = set()  # (group, channel) exported now

    # --- lifecycle ---------------------------------------------------------------------------

    def attach(self, mesh: Mesh) -> None:
        self._mesh = serving(self, self._mesh, mesh)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` of `registry` on ``host:port`` (0: a free port) from a
        daemon thread; returns the port. A port that is taken is a `ConfigError`."""
        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}); pick a free "
                "metrics_port (or 0 for any)"
            ) from None
        self._server = server
        bound: int = server.server_address[1]
        log.info("serving Prometheus metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    async def start(self) -> None:
        if self.port is not None and self._server is None:
            # off the loop: binding resolves the host name (getfqdn), which may block
            self.port = await asyncio.to_thread(self.serve, self.port, self.host)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await asyncio.to_thread(self.close)  # shutdown() waits for the serving thread

    async def _poll(self) -> None:
        """Refresh the lag gauge from the broker every ``metrics_interval`` seconds."""
        mesh = self._mesh
        assert mesh is not None
        while True:
            await self.refresh_lag()
            await asyncio.sleep(mesh.config.metrics_interval)

    async def refresh_lag(self) -> None:
        """Ask the broker for every group handler's backlog now (also what the poller
        does). A group whose broker call fails or takes longer than ``metrics_interval``
        is logged and keeps its last value; series of groups and channels no longer
        reported are removed (a stale value must not keep scaling workers)."""
        mesh = self._mesh
        if mesh is None:
            return
        seen: set[tuple[str, str]] = set()
        for spec in mesh.handlers:
            if spec.group is None:
                continue
            try:
                async with asyncio.timeout(mesh.config.metrics_interval):
                    backlog = await mesh.transport.backlog(list(spec.patterns), spec.group)
            except Exception as exc:  # a plugin's bug must not stop the gauge for good
                log.warning(
                    "consumer lag of group %s unavailable: %s: %s",
                    spec.group,
                    type(exc).__name__,
                    exc,
                )
                seen.update(k for k in self._lag_series if k[0] == spec.group)
                continue
            for channel, waiting in (backlog or {}).items():
                self.lag.labels(spec.group, channel).set(waiting)
                seen.add((spec.group, channel))
        for gone in self._lag_series - seen:
            with contextlib.suppress(KeyError):
                self.lag.remove(*gone)
        self._lag_series = seen

    # --- what Measuring measured -------------------------------------------------------

    def _child(self, metric: Any, *labels: Any) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def sent(self, channel: str, count: int, seconds: float, error: BaseException | None) -> None:
        self._child(self.publish_duration, channel).observe(seconds)
        if error is None:
            self._child(self.sent_total, channel).inc(count)

    def consumed(self, attempt: Attempt) -> None:
        self._child(
            self.consumed_total, attempt.handler, attempt.group or "", attempt.channel
        ).inc()

    def running(self, attempt: Attempt, delta: int) -> None:
        self._child(self.in_flight, attempt.handler, attempt.group or "").inc(delta)

    def processed(self, attempt: Attempt, seconds: float) -> None:
        labels = (attempt.handler, attempt.group or "", attempt.channel)
        outcome = str(attempt.outcome or "cancelled")
        self._child(self.process_duration, *labels, outcome).observe(seconds)
        self._child(self.outcomes, *labels, outcome).inc()

    def unseen(self, attempt: Attempt) -> None:
        labels = (attempt.handler, attempt.group or "", attempt.channel)
        self._child(self.outcomes, *labels, str(attempt.outcome)).inc()

    def requested(self, capability: str, outcome: str, seconds: float) -> None:
        self._child(self.request_duration, capability, outcome).observe(seconds)
