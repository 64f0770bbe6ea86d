"""Deterministic broker names: consumer names, message ids, and channel checks.

A consumer group is one durable JetStream consumer *per channel pattern*, named
from the group and the pattern. That keeps a group's position per pattern (like
Kafka offsets per topic), works on servers before 2.10 (no ``filter_subjects``),
and lets the same group name (the mesh's ``mesh.dlq``) serve different
dead-letter channels without one filter overwriting another.
"""

from __future__ import annotations

import functools
import hashlib
import re

from mesh import ConfigError, Event

_ILLEGAL = re.compile(r"[^A-Za-z0-9_-]")
_BAD_TOKEN = re.compile(r"[\s*>]")


def _digest(*parts: str, size: int = 10) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=size).hexdigest()


def consumer_name(group: str, pattern: str) -> str:
    """``<group, sanitised>_<hash of group and pattern>``: legal, stable, collision-free
    (``a.b`` and ``a_b`` sanitise alike but hash apart)."""
    return f"{_ILLEGAL.sub('_', group)[:40]}_{_digest(group, pattern)}"


def msg_id(channel: str, event: Event) -> str:
    """The ``Nats-Msg-Id`` of an event on a channel.

    CloudEvents identity is (source, id), so two producers reusing an id do not
    collide; the channel is included because the same event published to two
    channels is two messages.
    """
    return _digest(channel, event.source, event.id, size=16)


@functools.lru_cache(maxsize=1024)  # publishing checks the same few channels
def check_channel(channel: str) -> str:
    """Reject channel names that are not NATS subject tokens (``ConfigError``)."""
    tokens = channel.split(".")
    if not channel or any(not t or _BAD_TOKEN.search(t) for t in tokens):
        raise ConfigError(
            f"channel {channel!r} cannot be a NATS subject: use '.'-separated "
            "tokens without spaces, '*' or '>' (event types like 'order.created')"
        )
    return channel
