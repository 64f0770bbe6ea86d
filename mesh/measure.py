"""What metrics middleware measure, once: a base that times publishes, attempts and
requests and hands each measurement to methods an exporter implements.

`mesh.metrics.Metrics` (Prometheus) and `mesh.otel.OTelMetrics` (OpenTelemetry) are the
two exporters; one for another system implements the same six methods. The base does
the timing (``time.perf_counter``), counts every delivery once (its first attempt, or
its skipped report), and classifies request failures, so every exporter reports the
same numbers under its own names.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mesh.errors import NoProvider, RemoteError, RequestTimeout
from mesh.event import Event
from mesh.middleware import (
    Attempt,
    HandleNext,
    Middleware,
    PublishBatchNext,
    PublishNext,
    RequestNext,
)

__all__ = ["BUCKETS", "Measuring", "request_outcome"]

#: duration buckets in seconds: LLM agents run from milliseconds (routing) to minutes
#: (a model call)
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

_REQUEST_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (RequestTimeout, "timeout"),
    (NoProvider, "no_provider"),
    (RemoteError, "remote_error"),
)


def request_outcome(error: BaseException | None) -> str:
    """``ok``, ``timeout``, ``no_provider``, ``remote_error``, ``cancelled`` or ``error``."""
    if error is None:
        return "ok"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return next((name for kind, name in _REQUEST_OUTCOMES if isinstance(error, kind)), "error")


class Measuring(Middleware):
    """Measures; the exporter's methods below record (each a no-op here)."""

    def sent(self, channel: str, count: int, seconds: float, error: BaseException | None) -> None:
        """``count`` events to ``channel`` confirmed (``error``: the write failed) after
        ``seconds``."""

    def consumed(self, attempt: Attempt) -> None:
        """A delivery reached a handler's delivery rules (once per delivery)."""

    def running(self, attempt: Attempt, delta: int) -> None:
        """An attempt started (+1) or ended (-1)."""

    def processed(self, attempt: Attempt, seconds: float) -> None:
        """An attempt ended after ``seconds``; ``attempt.outcome`` says how (None: it
        was cancelled)."""

    def unseen(self, attempt: Attempt) -> None:
        """A delivery ended without reaching its handler (``attempt.outcome``)."""

    def requested(self, capability: str, outcome: str, seconds: float) -> None:
        """A `Mesh.request` ended (`request_outcome`) after ``seconds``."""

    # --- the hooks ---------------------------------------------------------------------------

    async def publish(self, event: Event, channel: str, call_next: PublishNext) -> None:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await call_next(event, channel)
        except BaseException as exc:  # a cancelled send is not a confirmed one
            error = exc
            raise
        finally:
            self.sent(channel, 1, time.perf_counter() - started, error)

    async def publish_batch(
        self, items: list[tuple[str, Event]], call_next: PublishBatchNext
    ) -> None:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await call_next(items)
        except BaseException as exc:  # a cancelled send is not a confirmed one
            error = exc
            raise
        finally:
            took = time.perf_counter() - started
            counts: dict[str, int] = {}
            for channel, _ in items:
                counts[channel] = counts.get(channel, 0) + 1
            for channel, count in counts.items():
                self.sent(channel, count, took, error)

    async def handle(self, attempt: Attempt, call_next: HandleNext) -> None:
        if attempt.number == 1:
            self.consumed(attempt)
        self.running(attempt, 1)
        started = time.perf_counter()
        try:
            await call_next(attempt)
        finally:
            self.running(attempt, -1)
            self.processed(attempt, time.perf_counter() - started)

    def skipped(self, attempt: Attempt) -> None:
        self.consumed(attempt)
        self.unseen(attempt)

    async def request(self, capability: str, data: Any, call_next: RequestNext) -> Event:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await call_next(capability, data)
        except BaseException as exc:  # a cancelled request is not an ok one
            error = exc
            raise
        finally:
            self.requested(capability, request_outcome(error), time.perf_counter() - started)
