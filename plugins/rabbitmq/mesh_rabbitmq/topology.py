"""How mesh names map onto RabbitMQ: binding keys, queue names and queue arguments.

Channels are routing keys on one topic exchange. A neutral pattern becomes an
AMQP binding key token for token: ``*`` stays ``*`` (one word) and ``>`` becomes
``*.#`` -- "one word, then zero or more", which is exactly the neutral "one or
more" (a bare ``#`` would also match the parent channel itself).

A consumer group is a durable quorum queue named after the exchange, the group
and its patterns, like Spring Cloud Stream's ``destination.group``: two apps
using the same group name on different channels (every mesh's ``mesh.dlq``
group, each on its own dead-letter channel) must not share one queue.

A retained channel (`Transport.retain`) is a stream queue named after the exchange
and the channel, bound to exactly that routing key: a log that readers walk from
its first offset without removing anything (acks only return credit on a stream).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from typing import Any

from mesh import validate_pattern
from mesh_rabbitmq.config import RabbitMQConfig

_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_.:@#,/+ ]")
_MAX_NAME = 200


def binding_key(pattern: str) -> str:
    """The AMQP topic-exchange binding key of a neutral pattern, matching exactly the
    channels the pattern matches. ``>`` (one or more) becomes ``*.#`` ("one word, then
    zero or more"; a bare ``#`` would also match the parent channel). A ``#`` in a
    pattern, which AMQP would read as a wildcard, is refused by `validate_pattern`
    (`ConfigError`)."""
    tokens = validate_pattern(pattern).split(".")
    if tokens[-1] == ">":
        tokens[-1:] = ["*", "#"]
    return ".".join(tokens)


def group_queue(exchange: str, group: str, patterns: Sequence[str]) -> str:
    """Deterministic queue name of ``group`` on ``patterns`` (order-insensitive).

    Readable where possible (``mesh:billing@orders.+,invoices.#``: ``+`` for ``*``
    and ``#`` for ``>``); characters AMQP names cannot carry are replaced and a
    hash of the exact input is appended, so different inputs never collide.
    """
    keys = sorted({p.replace("*", "+").replace(">", "#") for p in patterns})
    return _legal(
        f"{exchange}:{group}@{','.join(keys)}",
        "\x1f".join([exchange, group, *sorted(set(patterns))]),
        ambiguous=any("," in p for p in patterns) or "@" in group,
    )


def _legal(name: str, exact: str, ambiguous: bool = False) -> str:
    """``name`` if AMQP can carry it as is, else cleaned and suffixed with a hash of
    ``exact`` (so different inputs never collide)."""
    clean = _UNSAFE.sub("_", name)
    if clean != name or ambiguous or len(clean) > _MAX_NAME:
        digest = hashlib.sha256(exact.encode()).hexdigest()[:16]
        clean = f"{clean[: _MAX_NAME - 17]}/{digest}"
    return clean


def retained_queue(exchange: str, channel: str) -> str:
    """The stream queue that retains ``channel`` (``mesh:retained:mesh.deadletter``).
    Never a group queue's name: those always contain ``@``, these only with a hash."""
    return _legal(
        f"{exchange}:retained:{channel}",
        f"{exchange}\x1fretained\x1f{channel}",
        ambiguous="@" in channel,
    )


def stream_arguments(config: RabbitMQConfig) -> dict[str, Any]:
    """Arguments of a retained channel's stream queue: kept ``retained_max_age`` (7 days
    by default, like the JetStream streams and Kafka topics of the other transports)."""
    return {"x-queue-type": "stream", "x-max-age": config.retained_max_age}


def broadcast_queue(exchange: str) -> str:
    """A fresh name for one broadcast subscriber's exclusive queue."""
    return f"{exchange}:broadcast.{uuid.uuid4().hex}"


def group_arguments(config: RabbitMQConfig) -> dict[str, Any]:
    """Arguments of a group queue.

    Quorum (replicated, durable, counts deliveries in ``x-delivery-count``); an
    explicit delivery limit, because RabbitMQ 4 otherwise applies 20 and drops the
    message; past it the broker dead-letters at-least-once to ``<exchange>.dlx``
    (a last-resort safety net: the mesh dead-letters failing events itself).
    ``reject-publish`` is what at-least-once dead-lettering requires; it only
    matters when a policy caps the queue length, and then publishers get a
    PublishError instead of old messages being dropped.
    """
    args: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": config.delivery_limit,
        "x-dead-letter-exchange": config.dlx,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if config.replicas is not None:
        args["x-quorum-initial-group-size"] = config.replicas
    return args
