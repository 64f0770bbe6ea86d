"""Proof that a transport translates neutral channel patterns exactly (for plugin tests).

A transport pushes each neutral pattern down in its broker's own syntax (a NATS
subject filter, an AMQP binding key, a Kafka topic regex) and the broker, not the
client, drops what does not match. A translation that matches more leaks events to
the wrong handler; one that matches less loses them. `check_translation` compares a
translation, under the broker's matching rules as the test writes them down, with
`mesh.pattern_matcher` (the reference) on patterns and channels chosen to tell the
wildcards apart: ``*`` is exactly one token, ``>`` one or more trailing tokens (never
zero: ``orders.>`` does not match ``orders``)::

    from mesh.testing.patterns import check_translation

    def test_binding_keys_are_exact() -> None:
        check_translation(binding_key, amqp_topic_matches)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mesh.transport import pattern_matcher

__all__ = ["CHANNELS", "PATTERNS", "check_translation"]

#: Channels around ``orders.*``-like patterns: the parent, one and two tokens more,
#: look-alike prefixes and suffixes.
CHANNELS: tuple[str, ...] = (
    "orders",
    "orders.created",
    "orders.eu.created",
    "orders.eu.x.created",
    "other.created",
    "ordersx.created",
    "orders.created.v2",
    "created",
)

#: Neutral patterns with every wildcard position.
PATTERNS: tuple[str, ...] = (
    "orders",
    "orders.created",
    "orders.*",
    "orders.>",
    "*.created",
    "orders.*.created",
    "orders.*.>",
    "*.*",
    ">",
    "*",
)


def check_translation(
    translate: Callable[[str], str],
    matches: Callable[[str, str], bool],
    *,
    patterns: Iterable[str] = PATTERNS,
    channels: Iterable[str] = CHANNELS,
) -> None:
    """Assert that ``matches(translate(pattern), channel)`` (the broker's rule applied to
    the native form) equals the neutral pattern's verdict for every pattern and channel;
    the `AssertionError` names the pattern, its native form and the channel."""
    channels = tuple(channels)
    for pattern in patterns:
        native = translate(pattern)
        neutral = pattern_matcher(pattern)
        for channel in channels:
            expected = neutral(channel)
            assert matches(native, channel) == expected, (
                f"{pattern!r} -> {native!r} {'misses' if expected else 'also matches'} "
                f"channel {channel!r}"
            )
