"""Log output of the ``mesh`` command and of apps that want it: text or JSON lines.

``mesh run app.py --log-format json`` (or ``log_format: json`` in the config,
``MESH_LOG_FORMAT=json``) writes one JSON object per line, which log shippers (Loki,
Elasticsearch, CloudWatch) index without a parser::

    {"time": "2026-12-02T10:00:00.123+00:00", "level": "INFO", "logger": "mesh.delivery",
     "message": "handler bill failed on 7f3c... (attempt 1/5): TimeoutError: ...",
     "event_id": "7f3c...", "event_type": "order.created", "correlationid": "session-7",
     "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
     "handler": "bill", "group": "billing"}

The event fields, ``handler`` and ``group`` are those of the handler running in the task
that logged (`mesh.context.current_event`), so a handler's own ``logging`` calls carry
them too. ``trace_id``/``span_id`` are the active OpenTelemetry span's when tracing runs
(`mesh.otel`), else those of the event's ``traceparent`` (the sender's span). Fields
passed with ``extra=`` are added; an exception is one ``exc_info`` string. The text
format (the default) stays the human-readable one. Every logger of the mesh and of its
plugins is under ``mesh.`` (``mesh.delivery``, ``mesh.kafka``, ...).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from mesh.context import current_event, current_handler

try:  # optional: trace ids of the active span when OpenTelemetry is installed
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    _trace = None  # type: ignore[assignment]

__all__ = ["JsonFormatter", "LogFormat", "setup"]

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: attributes every LogRecord has: anything else on a record came in through ``extra=``
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = current_event()
        if event is not None:
            out["event_id"] = event.id
            out["event_type"] = event.type
            if event.correlationid:
                out["correlationid"] = event.correlationid
        ids = _active_span() or (_from_traceparent(event.traceparent) if event else None)
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        running = current_handler()
        if running is not None:
            out["handler"], out["group"] = running
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _active_span() -> tuple[str, str] | None:
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _from_traceparent(traceparent: str | None) -> tuple[str, str] | None:
    parts = (traceparent or "").split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return parts[1], parts[2]


def setup(
    level: str = "info", log_format: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send the root logger's records to ``stream`` (stderr) at ``level`` in
    ``log_format``. Replaces the handler an earlier call installed, so it can be called
    again; like `logging.basicConfig` it adds none when the app configured logging
    itself (then only the level is set)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler._mesh_setup = True  # type: ignore[attr-defined]  # ours to replace next time
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_mesh_setup", False)]
    for old in ours:
        root.removeHandler(old)
    if len(root.handlers) == 0:  # like basicConfig: an app's own logging setup wins
        root.addHandler(handler)
    root.setLevel(level.upper())
