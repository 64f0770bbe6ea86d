"""Channel patterns, translated from the neutral syntax to each broker's.

The mesh writes channel patterns one way: ``.``-separated tokens, ``*`` matches
exactly one token, ``>`` (last token only) matches one or more. Brokers filter
with their own syntax; `translate` gives the equivalent, so a transport pushes
the pattern down and the broker, not the client, drops what does not match.

=============  ======================  =====================================
syntax         ``orders.*.created``    ``orders.>``
=============  ======================  =====================================
``mesh``       ``orders.*.created``    ``orders.>``
``nats``       ``orders.*.created``    ``orders.>``  (identical semantics)
``amqp``       ``orders.*.created``    ``orders.*.#`` (``#`` alone is zero or more)
``kafka-regex`` ``^orders\\.[^.]+\\.created$``  ``^orders\\..+$``
=============  ======================  =====================================

Each translation is exact: it matches the same channel names as the neutral
pattern (unit-tested against `mesh.transport.pattern_matcher`).
"""

from __future__ import annotations

import re

from mesh.errors import ConfigError
from mesh.transport import PatternSyntax, validate_pattern

__all__ = ["amqp_binding_key", "kafka_topic_regex", "nats_subject", "translate"]


def nats_subject(pattern: str, prefix: str = "") -> str:
    """NATS subjects use the same wildcards; ``prefix`` namespaces the mesh's subjects."""
    validate_pattern(pattern)
    return f"{prefix}.{pattern}" if prefix else pattern


def amqp_binding_key(pattern: str) -> str:
    """AMQP topic-exchange binding key. ``>`` (one or more) becomes ``*.#`` ("one word,
    then zero or more"; a bare ``#`` would also match the parent channel). A literal
    ``#`` token cannot be expressed in AMQP and raises `ConfigError`."""
    tokens = validate_pattern(pattern).split(".")
    if "#" in tokens:
        raise ConfigError(
            f"channel pattern {pattern!r}: '#' is not a mesh wildcard and "
            "cannot be a channel token on AMQP; use '>' for one or more "
            "trailing tokens"
        )
    if tokens[-1] == ">":
        tokens[-1:] = ["*", "#"]
    return ".".join(tokens)


def kafka_topic_regex(pattern: str) -> str:
    """A Kafka subscription: the topic name itself, or ``^regex`` for wildcards
    (librdkafka treats a subscription starting with ``^`` as a regex)."""
    tokens = validate_pattern(pattern).split(".")
    if not any(token in ("*", ">") for token in tokens):
        return pattern
    parts = [r"[^.]+" if t == "*" else r".+" if t == ">" else re.escape(t) for t in tokens]
    return "^" + r"\.".join(parts) + "$"


def translate(pattern: str, syntax: PatternSyntax, *, prefix: str = "") -> str:
    """The broker-native form of a neutral channel ``pattern``."""
    if syntax == "mesh":
        return validate_pattern(pattern)
    if syntax == "nats":
        return nats_subject(pattern, prefix)
    if syntax == "amqp":
        return amqp_binding_key(pattern)
    if syntax == "kafka-regex":
        return kafka_topic_regex(pattern)
    raise ConfigError(f"unknown pattern syntax {syntax!r}; use mesh, nats, amqp or kafka-regex")
