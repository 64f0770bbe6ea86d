"""Channel, pattern and group names -> Kafka topic names, topic regexes and group ids.

A channel *is* its topic (no renaming, so other Kafka clients see the event type as
the topic name); channels that are not legal topic names are refused instead of
being mangled, because a mangled name could collide with another channel. Patterns
become anchored librdkafka regex subscriptions (``^...$``); group names are made
legal deterministically, with a hash suffix when characters had to be replaced.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from mesh import ConfigError, is_wildcard, validate_pattern

_LEGAL = re.compile(r"[A-Za-z0-9._-]+")
_MAX_TOPIC = 249


@lru_cache(maxsize=4096)
def topic_for(channel: str) -> str:
    """The topic of ``channel`` (the same name); `ConfigError` when Kafka cannot hold it."""
    if is_wildcard(channel):
        raise ConfigError(f"cannot publish to the pattern {channel!r}; name one channel")
    validate_pattern(channel)
    _check_name(channel)
    return channel


def subscription_for(pattern: str) -> str:
    """A topic name, or a ``^``-anchored regex for wildcard patterns (librdkafka treats a
    subscription starting with ``^`` as a regex) that matches exactly the topics the
    neutral pattern matches: ``*`` -> ``[^.]+``, ``>`` -> ``.+``."""
    validate_pattern(pattern)
    if not is_wildcard(pattern):
        return topic_for(pattern)
    tokens = pattern.split(".")
    for token in tokens:
        if token not in ("*", ">"):
            _check_name(token)
    parts = [r"[^.]+" if t == "*" else r".+" if t == ">" else re.escape(t) for t in tokens]
    return "^" + r"\.".join(parts) + "$"


def subscribes(subscription: str, topic: str) -> bool:
    """Whether a `subscription_for` result (a topic or an anchored regex) takes ``topic``."""
    if subscription.startswith("^"):
        return re.fullmatch(subscription[1:], topic) is not None
    return subscription == topic


def group_id_for(group: str) -> str:
    """A deterministic, broker-legal consumer group id for a mesh group name."""
    if not group:
        raise ConfigError("group names must not be empty")
    legal = re.sub(r"[^A-Za-z0-9._-]", "_", group)
    if legal != group:
        legal = f"{legal[:200]}-{hashlib.sha256(group.encode()).hexdigest()[:8]}"
    return legal


def _check_name(name: str) -> None:
    if len(name) > _MAX_TOPIC or not _LEGAL.fullmatch(name) or name.startswith("__"):
        raise ConfigError(
            f"channel {name!r} cannot be a Kafka topic: use letters, digits, '.', '_' and "
            f"'-' only, at most {_MAX_TOPIC} characters, not starting with '__'"
        )
