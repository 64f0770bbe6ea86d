"""``mesh.__all__`` is exactly the public surface, and the error tree is as documented."""

from __future__ import annotations

import inspect

import mesh
from mesh import errors

PUBLIC = {
    "Attempt",
    "BatchPolicy",
    "ConfigError",
    "ConnectError",
    "ConsumerStats",
    "Context",
    "DataValidationError",
    "DeadLetter",
    "DeadLetters",
    "DecodeError",
    "Delivery",
    "DeliveryError",
    "DeliveryLimitExceeded",
    "DeliveryHandler",
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
    "Outcome",
    "PublishError",
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
    "WireFormat",
    "__version__",
    "codec",
    "dlq",
    "deliver",
    "derive_id",
    "hookimpl",
    "is_wildcard",
    "pattern_list",
    "pattern_covers",
    "pattern_matcher",
    "redact_url",
    "validate_pattern",
    "Capability",
    "from_a2a_skill",
    "from_mcp_tool",
    "to_a2a_skill",
    "to_mcp_tool",
    "CapabilitiesConfig",
    "Contract",
    "ContractRegistry",
    "compatibility_problems",
    "ContractViolation",
    "NoProvider",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    *(
        PLUGIN_HELPERS := (
            "Dispatcher",
            "TransportURL",
            "build_options",
            "deliver",
            "ensure_listening",
            "parse_url",
            "quietly",
            "redact_url",
            "scrub",
            "tls_context",
        )
    ),
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(mesh.__all__) == PUBLIC
    assert len(mesh.__all__) == len(set(mesh.__all__))
    for name in mesh.__all__:
        assert hasattr(mesh, name), name


def test_every_plugin_helper_is_documented_for_plugin_authors() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    missing = [
        name for name in PLUGIN_HELPERS if f"mesh.{name}" not in text and f"`{name}`" not in text
    ]
    assert not missing, f"document {missing} in docs/plugins.md"


def test_no_other_public_names_leak() -> None:
    leaked = {
        name
        for name in vars(mesh)
        if not name.startswith("_") and not inspect.ismodule(getattr(mesh, name))
    } - PUBLIC
    assert not leaked


def test_every_error_is_drawn_in_the_errors_docstring() -> None:
    doc = errors.__doc__ or ""
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.MeshError)
    ]
    for cls in classes:
        assert cls.__name__ in doc, f"draw {cls.__name__} in the mesh.errors docstring"
        assert cls is errors.MeshError or issubclass(cls, errors.MeshError)
    assert set(errors.__all__) == {cls.__name__ for cls in classes}
