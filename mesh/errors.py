"""Every exception event-mesh raises, in one tree.

Only exceptions from this module escape the public API (the conformance suite
checks this for every transport), so ``except MeshError`` catches everything the
mesh itself raises. Messages say what to do next and never contain credentials.

::

    MeshError
    ├── ConfigError                  bad configuration: unknown scheme, missing field, bad value
    ├── InvalidEvent                 an Event violating CloudEvents 1.0 (attribute or extension)
    ├── TransportError               the broker or its client failed
    │   ├── ConnectError             could not connect (or reconnect) to the broker
    │   ├── PublishError             the broker did not confirm a publish
    │   │   └── MessageTooLarge      the message exceeds the broker's size limit (never sent)
    │   └── TransportClosed          the transport is closed (or was never connected)
    ├── DecodeError                  a wire message is not a CloudEvent (it is dead-lettered)
    ├── DeliveryError                a delivery could not be settled (ack/nack failed)
    ├── HandlerError                 base of signals a handler raises to steer delivery
    │   ├── RetryLater               redeliver after ``after`` seconds; not a failed attempt
    │   └── DeadLetter               do not retry: dead-letter this event now
    ├── DataValidationError          event data failed the handler's model (never retried)
    │   └── ContractViolation        event data failed the event type's contract (JSON Schema)
    ├── HopLimitExceeded             an event went round more hops than ``hop_limit`` (a loop)
    ├── DeliveryLimitExceeded        a message was delivered ``max_deliveries`` times unsettled
    └── RequestError                 ``mesh.request`` did not get a successful reply
        ├── NoProvider               no live instance serves the capability
        ├── RequestTimeout           no reply within the timeout
        └── RemoteError              the provider failed; carries the remote error type

Routing errors (``mesh.routing.cesql.CESQLError`` and ``ParseError``) are also
``MeshError`` subclasses.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base of every exception event-mesh raises."""


class ConfigError(MeshError):
    """The configuration is invalid; the message names the field and the fix."""


class InvalidEvent(MeshError, ValueError):
    """An event violates CloudEvents 1.0; the message names the attribute."""


class TransportError(MeshError):
    """The broker or its client failed."""


class ConnectError(TransportError):
    """Could not connect to the broker."""


class PublishError(TransportError):
    """The broker did not confirm a publish; the event may not have been written."""


class MessageTooLarge(PublishError):
    """The message (headers and body together) exceeds the broker's size limit, so it was
    not sent. ``size`` and ``limit`` are in bytes. Retrying the same message cannot
    succeed: make it smaller (store big payloads elsewhere and send a reference).
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class TransportClosed(TransportError):
    """The transport is closed or was never connected."""


class DecodeError(MeshError):
    """A wire message is not a valid CloudEvent.

    The mesh never lets this kill a consumer: the raw message is dead-lettered
    with this error's message as the reason.
    """


class DeliveryError(MeshError):
    """A delivery could not be acknowledged or rejected."""


class HandlerError(MeshError):
    """Base of the signals a handler raises to steer the delivery of its event."""


class RetryLater(HandlerError):
    """Redeliver this event after ``after`` seconds without counting a failed attempt.

    Raise it when a downstream dependency asks you to back off (an LLM's 429).
    """

    def __init__(self, after: float = 1.0, reason: str = "") -> None:
        if after < 0:
            raise ValueError("RetryLater(after=...) must be >= 0 seconds")
        self.after = float(after)
        self.reason = reason
        super().__init__(reason or f"retry later (after {after:g}s)")


class DeadLetter(HandlerError):
    """Send this event to the dead-letter channel now, without further retries."""


class DataValidationError(MeshError):
    """The event's data does not validate against the handler's model. Never retried."""


class ContractViolation(DataValidationError):
    """Event data does not satisfy its contract; ``errors`` lists each problem."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors or [])


class HopLimitExceeded(MeshError):
    """The event passed the hop limit: agents are probably emitting in a loop."""


class DeliveryLimitExceeded(MeshError):
    """A message came back ``retry.max_deliveries`` times without being settled: its
    handler probably crashes the process (or gives it back) every time. It is
    dead-lettered without running the handler again."""


class RequestError(MeshError):
    """Base of the errors of ``mesh.request``."""


class NoProvider(RequestError):
    """No live instance serves the requested capability; ``similar`` names near misses."""

    def __init__(self, capability: str, similar: list[str] | None = None) -> None:
        self.capability = capability
        self.similar = list(similar or [])
        hint = f" Did you mean: {', '.join(self.similar)}?" if self.similar else ""
        super().__init__(
            f"no live provider for capability {capability!r}.{hint} "
            "Check that an instance serving it is running (mesh agents)."
        )


class RequestTimeout(RequestError, TimeoutError):
    """No reply arrived within the timeout. The request may still be handled later."""


class RemoteError(RequestError):
    """The capability's handler failed; ``error_type`` and ``remote_message`` say how."""

    def __init__(self, capability: str, error_type: str, message: str) -> None:
        self.capability = capability
        self.error_type = error_type
        self.remote_message = message
        super().__init__(f"capability {capability!r} failed remotely: {error_type}: {message}")


__all__ = [
    "ConfigError",
    "ConnectError",
    "ContractViolation",
    "DataValidationError",
    "DeadLetter",
    "DecodeError",
    "DeliveryError",
    "DeliveryLimitExceeded",
    "HandlerError",
    "HopLimitExceeded",
    "InvalidEvent",
    "MeshError",
    "MessageTooLarge",
    "NoProvider",
    "PublishError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "RetryLater",
    "TransportClosed",
    "TransportError",
]
