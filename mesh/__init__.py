"""event-mesh: event-driven multi-agent systems on any broker.

Everything public is importable from ``mesh``, plus these modules: ``mesh.codec``,
``mesh.dlq`` (the dead-letter vocabulary), ``mesh.errors``, ``mesh.middleware`` (the
chain's ``call_next`` types), ``mesh.otel`` (tracing; the otel extra), ``mesh.metrics``
(Prometheus; the prometheus extra), ``mesh.measure`` (their base), ``mesh.logs``,
``mesh.stats`` (``mesh top``'s reports), ``mesh.routing`` and ``mesh.testing``. Nothing
else should be imported from deeper paths. ``__all__`` is exactly the public surface (a
test keeps it that way).
"""

from importlib import metadata as _metadata

from mesh import codec, dlq
from mesh.app import HandlerSpec, Mesh
from mesh.batch import BatchPolicy
from mesh.capabilities import Capability, from_a2a_skill, from_mcp_tool, to_a2a_skill, to_mcp_tool
from mesh.config import (
    CapabilitiesConfig,
    IdempotencyConfig,
    MeshConfig,
    RetryConfig,
    RouteConfig,
    StatsConfig,
)
from mesh.context import Context, derive_id
from mesh.contracts import Contract, ContractRegistry, compatibility_problems
from mesh.delivery import ConsumerStats, RetryPolicy
from mesh.dispatch import Dispatcher
from mesh.dlq import DeadLetters
from mesh.errors import (
    ConfigError,
    ConnectError,
    ContractViolation,
    DataValidationError,
    DeadLetter,
    DecodeError,
    DeliveryError,
    DeliveryLimitExceeded,
    HandlerError,
    HopLimitExceeded,
    InvalidEvent,
    MeshError,
    MessageTooLarge,
    NoProvider,
    PublishError,
    RemoteError,
    RequestError,
    RequestTimeout,
    RetryLater,
    TransportClosed,
    TransportError,
)
from mesh.event import Event
from mesh.hookspecs import hookimpl
from mesh.middleware import Attempt, Middleware, Outcome
from mesh.options import (
    TransportURL,
    build_options,
    ensure_listening,
    parse_url,
    quietly,
    scrub,
    tls_context,
)
from mesh.stores import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    StoreRegistry,
    SyncIdempotencyStore,
)
from mesh.subscriptions import SubscriptionHandle
from mesh.transport import (
    Delivery,
    DeliveryHandler,
    Subscription,
    Transport,
    TransportFeatures,
    TransportRegistry,
    WireFormat,
    deliver,
    is_wildcard,
    pattern_covers,
    pattern_list,
    pattern_matcher,
    redact_url,
    validate_pattern,
)

try:  # defined once, in pyproject.toml: the installed distribution's metadata carries it
    __version__ = _metadata.version("event-mesh")
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Attempt",
    "BatchPolicy",
    "CapabilitiesConfig",
    "Capability",
    "ConfigError",
    "ConnectError",
    "ConsumerStats",
    "Context",
    "Contract",
    "ContractRegistry",
    "ContractViolation",
    "DataValidationError",
    "DeadLetter",
    "DeadLetters",
    "DecodeError",
    "Delivery",
    "DeliveryError",
    "DeliveryHandler",
    "DeliveryLimitExceeded",
    "Dispatcher",
    "Event",
    "HandlerError",
    "HandlerSpec",
    "HopLimitExceeded",
    "IdempotencyConfig",
    "IdempotencyStore",
    "InvalidEvent",
    "MemoryIdempotencyStore",
    "Mesh",
    "MeshConfig",
    "MeshError",
    "MessageTooLarge",
    "Middleware",
    "NoProvider",
    "Outcome",
    "PublishError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "RetryConfig",
    "RetryLater",
    "RetryPolicy",
    "RouteConfig",
    "SQLiteIdempotencyStore",
    "StatsConfig",
    "StoreRegistry",
    "Subscription",
    "SubscriptionHandle",
    "SyncIdempotencyStore",
    "Transport",
    "TransportClosed",
    "TransportError",
    "TransportFeatures",
    "TransportRegistry",
    "TransportURL",
    "WireFormat",
    "__version__",
    "build_options",
    "codec",
    "compatibility_problems",
    "deliver",
    "derive_id",
    "dlq",
    "ensure_listening",
    "from_a2a_skill",
    "from_mcp_tool",
    "hookimpl",
    "is_wildcard",
    "parse_url",
    "pattern_covers",
    "pattern_list",
    "pattern_matcher",
    "quietly",
    "redact_url",
    "scrub",
    "tls_context",
    "to_a2a_skill",
    "to_mcp_tool",
    "validate_pattern",
]
