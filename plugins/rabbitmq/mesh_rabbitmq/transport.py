"""The RabbitMQ transport: ``amqp://`` and ``amqps://`` on aio-pika.

One robust connection per transport (aio-pika's ``connect_robust`` reopens it
and restores channels, queues, bindings and consumers after an outage), with a
publisher channel in confirm mode and one channel per subscription (see
`mesh_rabbitmq.consumer`); passive lookups and retained reads use plain channels of
their own, which nothing restores.

Publishing is ``mandatory`` with publisher confirms. An event on a channel no
queue is bound to comes back as ``basic.return``; that is not an error on a
pub/sub mesh (nobody subscribed, like on every broker), so publish() returns
normally and the transport counts it in ``unroutable``. During an outage
publish() raises `PublishError` at once or after ``publish_timeout`` seconds,
never hangs, so the caller can retry.

``close()`` ends the connection; ``connect()`` afterwards opens a new one (a stopped
Mesh starts again). A retained channel is a stream queue (see `retain` and `read`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.abc import AbstractMessage, AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
)

from mesh import (
    ConfigError,
    ConnectError,
    Delivery,
    DeliveryHandler,
    Event,
    MeshError,
    MessageTooLarge,
    PublishError,
    Subscription,
    Transport,
    TransportClosed,
    TransportFeatures,
    WireFormat,
    ensure_listening,
    is_wildcard,
    pattern_covers,
    pattern_list,
    quietly,
    scrub,
    validate_pattern,
)
from mesh_rabbitmq import binding, topology
from mesh_rabbitmq.config import RabbitMQConfig, ssl_context
from mesh_rabbitmq.consumer import OP_TIMEOUT, RabbitMQSubscription, RetainedDelivery

log = logging.getLogger("mesh.rabbitmq")
Properties = aiormq.spec.Basic.Properties

#: publishes in flight at once in publish_batch (their confirms are awaited together)
BATCH_WINDOW = 1000
#: prefetch (credit) of a read() consumer on a stream
READ_PREFETCH = 256
#: quiet time that ends the burst of the stream's last chunk when read() looks for its end
LAST_CHUNK_QUIET = 0.2

#: RabbitMQ's text for a redeclaration with other arguments (3.x and 4.x)
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']*)' for (?P<kind>\w+) "
    r"'(?P<name>.*)' in vhost '.*': received (?P<new>.+?) "
    r"but current is (?P<old>.+?)\s*$"
)
_ARG_VALUE = re.compile(r"(?:the value )?'(?P<value>.*?)'(?: of type '[^']*')?")
_NOT_A_STREAM = (
    "queue {name!r} is not a stream (a queue of that name was made by something "
    "else), so reading it would consume it; nothing was acked. Delete or rename "
    "that queue, then retain() the channel again"
)
#: RabbitMQ's text when a message is over its max_message_size (it closes the channel)
_TOO_LARGE = re.compile(
    r"message size (?P<size>\d+) is larger than configured max size "
    r"(?P<limit>\d+)"
)
#: the transport option behind each queue argument it declares
_ARG_OPTION = {
    "x-delivery-limit": "delivery_limit",
    "x-dead-letter-exchange": "dead_letter_exchange",
    "x-quorum-initial-group-size": "replicas",
    "x-max-age": "retained_max_age",
}

#: Queues declared in this process, for delete_channels (AMQP 0-9-1 cannot list queues;
#: the management plugin can): (exchange, queue) -> (group, the patterns it is bound
#: to); a retained channel's stream queue has the group "" and the channel.
_DECLARED: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
#: Live subscriptions of every transport in this process.
_LIVE: set[RabbitMQSubscription] = set()


def _arg_value(text: str) -> str | None:
    """A value as RabbitMQ quotes it (``'77'``, ``the value '77' of type 'byte'``); None
    for ``none`` (the argument is absent)."""
    text = text.strip()
    if text == "none":
        return None
    match = _ARG_VALUE.fullmatch(text)
    return match.group("value") if match else text


class RabbitMQTransport(Transport):
    """Transport on a RabbitMQ topic exchange; see the module docstring."""

    schemes = ("amqp", "amqps")
    features = TransportFeatures(
        consumer_groups=True,
        broadcast=True,
        per_key_ordering=False,
        persistence=True,
        replay_for_new_groups=False,
        native_dedup=False,
        wildcard_patterns=True,
        retained_reads=True,
        max_in_flight=65535,  # the prefetch (basic.qos prefetch-count) is a 16-bit count
        backlog=True,
    )
    wire = WireFormat(
        title="RabbitMQ",
        protocol="amqp",
        protocol_version="0.9.1",
        header_prefix=binding.CE_PREFIX,
        binding="RabbitMQ binding (`ce-` message headers)",
        system="rabbitmq",
    )

    @classmethod
    def wire_format(cls, url: str, options: Mapping[str, Any]) -> WireFormat:
        """``amqps://`` is its own AsyncAPI protocol; ``binding=amqp`` writes the
        CloudEvents AMQP binding's prefix instead of ``ce-``."""
        config = RabbitMQConfig.from_url(url, options)
        wire = cls.wire
        if config.tls:
            wire = replace(wire, protocol="amqps", title="RabbitMQ (TLS)")
        if config.binding == "amqp":
            wire = replace(
                wire,
                header_prefix=config.header_prefix,
                binding=f"CloudEvents AMQP binding (`{config.header_prefix}` application "
                "properties, carried as message headers)",
            )
        return wire

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.config = RabbitMQConfig.from_url(url, options or {})
        self._prefix = self.config.header_prefix
        self.unroutable = 0  #: confirmed publishes no queue was bound for (dropped)
        self._conn: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._subs: set[RabbitMQSubscription] = set()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RabbitMQTransport({self.config.redacted!r}, exchange={self.config.exchange!r})"

    def _scrub(self, exc: BaseException) -> str:
        return scrub(f"{type(exc).__name__}: {exc}", self.config.password)

    @contextlib.contextmanager
    def _failing(self, doing: str, then: str = "retry") -> Iterator[None]:
        """A client error in the block as one mesh error, raised with ``from None``
        (mesh errors pass unchanged): a `ConfigError` that says what to do when the broker
        refused a declaration (the queue or exchange exists with other arguments), else
        a `ConnectError`: missing permissions, the broker did not answer (a timeout), or
        "``doing`` on RabbitMQ at <address> failed (<error, scrubbed>); ``then``"."""
        cfg = self.config
        try:
            yield
        except MeshError:
            raise
        except ChannelPreconditionFailed as exc:
            text = str(exc.args[0]) if exc.args else str(exc)
            if (found := _INEQUIVALENT.search(text)) is not None:
                raise self._inequivalent(found) from None
            raise ConfigError(
                f"{doing} on RabbitMQ at {cfg.redacted} was refused: it exists with other "
                f"settings ({self._scrub(exc)}); delete it or choose another name "
                "(options exchange=..., or another group)"
            ) from None
        except ChannelAccessRefused:
            raise ConnectError(
                f"{doing} on RabbitMQ at {cfg.redacted} was refused: user {cfg.username!r} "
                f"lacks permissions on vhost {cfg.vhost!r}; grant configure/write/read "
                "permissions (rabbitmqctl set_permissions)"
            ) from None
        except TimeoutError:
            raise ConnectError(
                f"RabbitMQ at {cfg.redacted} did not answer while {doing}; {then}"
            ) from None
        except Exception as exc:
            raise ConnectError(
                f"{doing} on RabbitMQ at {cfg.redacted} failed ({self._scrub(exc)}); {then}"
            ) from None

    # --- lifecycle --------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect; after `close` this opens a new connection (a close still running is
        waited for first), so a stopped Mesh can start again as on every transport."""
        closing = self._closing
        if closing is not None:
            await asyncio.shield(closing)
        async with self._connecting:
            if closing is not None and self._closing is closing:
                self._closing, self._closed = None, False
            if self._closed:
                raise TransportClosed(
                    "this RabbitMQ transport is being closed by another "
                    "task; call connect() again once close() returned"
                )
            if self._conn is not None:
                return
            conn = await self._dial()
            try:
                await self._declare_topology(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn

    async def _dial(self) -> AbstractRobustConnection:
        """A new robust (reconnecting) connection."""
        cfg = self.config
        # aio-pika would log an ERROR and keep retrying a refused port until the timeout:
        # see that first, in one clean error (a slow network is left to the timeout)
        await ensure_listening(
            [(cfg.host, cfg.port)], timeout=cfg.connect_timeout, broker="RabbitMQ"
        )
        context = await asyncio.to_thread(ssl_context, cfg) if cfg.tls else None
        try:
            async with asyncio.timeout(cfg.connect_timeout + 1):
                return await aio_pika.connect_robust(
                    host=cfg.host,
                    port=cfg.port,
                    login=cfg.username,
                    password=cfg.password.get_secret_value(),
                    virtualhost=cfg.vhost,
                    ssl=cfg.tls,
                    ssl_context=context,
                    timeout=cfg.connect_timeout,
                    reconnect_interval=cfg.reconnect_interval,
                    heartbeat=cfg.heartbeat,
                    client_properties={"connection_name": cfg.connection_name},
                )
        except Exception as exc:
            raise ConnectError(
                f"could not connect to RabbitMQ at {cfg.redacted} ({self._scrub(exc)}); "
                "check that the broker runs, the host/port, vhost, credentials and TLS "
                "options"
            ) from None

    async def _declare_topology(self, conn: AbstractRobustConnection) -> None:
        """The publisher channel (confirm mode; returns do not raise, see the module
        docstring) and on it the exchange, the dead-letter exchange and its queue --
        robustly, so aio-pika declares them again after a reconnect to a wiped broker."""
        cfg = self.config
        with self._failing(f"declaring exchange {cfg.exchange!r}"):
            async with asyncio.timeout(cfg.connect_timeout):
                publisher = await conn.channel(publisher_confirms=True, on_return_raises=False)
                await publisher.declare_exchange(cfg.exchange, "topic", durable=True)
                await publisher.declare_exchange(cfg.dlx, "fanout", durable=True)
                dead = await publisher.declare_queue(
                    cfg.dlx, durable=True, arguments={"x-queue-type": "quorum"}
                )
                await dead.bind(cfg.dlx, "")
                self._publisher = publisher

    def _inequivalent(self, found: re.Match[str]) -> ConfigError:
        """What to do when a queue exists with other arguments than this transport's
        settings (queue arguments never change after declaration)."""
        arg, kind, name = found.group("arg", "kind", "name")
        old, new = _arg_value(found.group("old")), _arg_value(found.group("new"))
        option = _ARG_OPTION.get(arg)
        current = f"{arg}={old}" if old is not None else f"no {arg}"
        wanted = f"{arg}={new}" if new is not None else f"no {arg}"
        where = 'docs/transports/rabbitmq.md ("Changing a group queue\'s arguments") describes'
        if option is not None and old is not None:
            advice = (
                f"to keep running now, set the option {option}={old} again; to change "
                f"it, migrate the {kind} without losing messages as {where}"
            )
        else:
            advice = (
                "it was made by another application or version: use other names "
                f"(option exchange=..., another group), or move its messages as {where}"
            )
        return ConfigError(
            f"RabbitMQ {kind} {name!r} exists with other settings: {current}, but this "
            f"transport declares {wanted}"
            + (f" (option {option})" if option else "")
            + f". Arguments never change once declared: {advice}"
        )

    async def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        async with self._connecting:
            self._closed = True
        subs, self._subs = list(self._subs), set()
        await asyncio.gather(*(sub.close() for sub in subs), return_exceptions=True)
        conn, self._conn, self._publisher = self._conn, None, None
        if conn is not None:
            await quietly(conn.close(), OP_TIMEOUT)

    def _open(self) -> AbstractRobustConnection:
        if self._closed or self._conn is None:
            raise TransportClosed("RabbitMQ transport is not connected; call connect() first")
        return self._conn

    # --- publishing -------------------------------------------------------------------

    def _message(self, event: Event) -> tuple[bytes, Properties]:
        """Body and properties as ``aio_pika.Message`` makes them (persistent, priority 0),
        without building one: publishing goes straight to aiormq, see `_send`. Headers
        in the configured convention (option ``binding``), values canonical strings.

        Raises `MessageTooLarge` when body plus headers (UTF-8, with the name and value
        of each) exceed ``max_message_size``; nothing is sent then."""
        body, headers, content_type = binding.encode(event, self._prefix)
        limit = self.config.max_message_size
        if len(body) > limit - 4 * sum(len(k) + len(v) for k, v in headers.items()) - 255:
            size = (  # near the limit: count exactly
                len(body)
                + len((content_type or "").encode())
                + sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())
            )
            if size > limit:
                raise MessageTooLarge(
                    f"event {event.id[:80]!r} is {size} bytes with its headers, over the "
                    f"{limit}-byte limit (option max_message_size, which should match the "
                    "broker's max_message_size); it was not sent. Make it smaller: store "
                    "large data elsewhere and send a reference",
                    size=size,
                    limit=limit,
                )
        return body, Properties(
            headers=headers, content_type=content_type, delivery_mode=2, priority=0
        )

    async def publish(self, channel: str, event: Event) -> None:
        self._open()
        await self._confirmed([(channel, *self._message(event))])

    async def publish_batch(self, items: Sequence[tuple[str, Event]]) -> None:
        """Pipelined: up to BATCH_WINDOW publishes go out before their confirms are
        awaited together. Raises `PublishError` if any was not confirmed (some others
        may have been: publishing the batch again is safe with idempotent consumers)."""
        self._open()
        messages = [(channel, *self._message(event)) for channel, event in items]
        for start in range(0, len(messages), BATCH_WINDOW):
            await self._confirmed(messages[start : start + BATCH_WINDOW])

    async def send_raw(self, channel: str, message: AbstractMessage) -> None:
        """Publish an arbitrary AMQP message to ``channel`` (tests, bridges). Header
        values given as ``bytes`` (which pamqp cannot encode) go out as AMQP byte arrays,
        byte for byte; nothing else is changed."""
        self._open()
        properties = message.properties
        headers = properties.headers
        if headers and any(type(v) is bytes for v in headers.values()):
            properties = copy.copy(properties)
            properties.headers = {
                k: bytearray(v) if type(v) is bytes else v for k, v in headers.items()
            }
        await self._confirmed([(channel, message.body, properties)])

    async def _confirmed(self, window: Sequence[tuple[str, bytes, Properties]]) -> None:
        """Publish ``window`` and wait (at most ``publish_timeout``) for every confirm."""
        timeout = self.config.publish_timeout
        try:
            async with asyncio.timeout(timeout):
                if len(window) == 1:
                    results: Sequence[BaseException | None] = [await self._send(*window[0])]
                else:
                    results = await asyncio.gather(
                        *(self._send(*item) for item in window), return_exceptions=True
                    )
        except TimeoutError:
            raise PublishError(
                f"RabbitMQ did not confirm {len(window)} publish(es) within "
                f"{timeout:g}s (publish_timeout); they may or may not be "
                "stored: publish again"
            ) from None
        failed = [r for r in results if r is not None]
        if failed and self._closed:
            raise TransportClosed("RabbitMQ transport was closed during publish")
        if failed and len(window) == 1:
            raise failed[0]
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(window)} events were not confirmed by RabbitMQ "
                f"(first: {failed[0]})"
            )

    async def _send(
        self, routing_key: str, body: bytes, properties: Properties
    ) -> PublishError | None:
        """One publish; returns (not raises) its error so a window can gather them. What
        ``Exchange.publish`` does, on the robust channel's current aiormq channel."""
        if self._publisher is None:
            return PublishError("RabbitMQ transport is closed")
        try:
            channel = await self._publisher.get_underlay_channel()  # waits out a reconnect
            result = await channel.basic_publish(
                body,
                exchange=self.config.exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
            )
        except DeliveryError:
            return PublishError(
                f"RabbitMQ refused (nacked) a publish to {routing_key!r}; a "
                "queue may be full or unavailable: retry later"
            )
        except ValueError as exc:  # pamqp/aiormq validation, e.g. the 255-byte key limit
            return PublishError(f"cannot publish to channel {routing_key[:80]!r}: {exc}")
        except ChannelPreconditionFailed as exc:  # the channel is gone; aio-pika reopens it
            if (found := _TOO_LARGE.search(str(exc))) is None:
                return PublishError(
                    f"RabbitMQ refused a publish to {routing_key!r} ({self._scrub(exc)})"
                )
            size, limit = int(found.group("size")), int(found.group("limit"))
            return MessageTooLarge(
                f"RabbitMQ refused a {size}-byte message to {routing_key!r}: over its "
                f"max_message_size of {limit} bytes; it was not stored. Make it smaller, "
                f"and set the option max_message_size={limit} so the transport refuses such "
                "messages before sending (a refusal closes the publishing channel, failing "
                "other publishes in flight)",
                size=size,
                limit=limit,
            )
        except Exception as exc:
            return PublishError(
                f"publish to {routing_key!r} failed ({self._scrub(exc)}); the "
                "connection to RabbitMQ is probably down: retry"
            )
        if isinstance(result, DeliveredMessage):
            self.unroutable += 1
            log.debug("no queue is bound for channel %s; event dropped", routing_key)
        return None

    # --- subscribing ------------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 1,
    ) -> Subscription:
        """Declare the queue and bind it robustly: aio-pika re-declares and re-binds it
        after a reconnect (exclusive broadcast queues die with the old connection)."""
        patterns = pattern_list(pattern)
        keys = [topology.binding_key(p) for p in patterns]
        conn, cfg, limit = self._open(), self.config, max(1, max_in_flight)
        if group is None:
            name = topology.broadcast_queue(cfg.exchange)
            arguments: dict[str, Any] = {"x-queue-type": "classic"}
        else:
            name = topology.group_queue(cfg.exchange, group, patterns)
            arguments = topology.group_arguments(cfg)
        channel = await self._channel(conn)
        try:
            with self._failing(f"declaring queue {name!r}"):
                async with asyncio.timeout(cfg.connect_timeout):
                    await channel.set_qos(prefetch_count=limit)
                    queue = await channel.declare_queue(
                        name,
                        durable=group is not None,
                        exclusive=group is None,
                        auto_delete=group is None,
                        arguments=arguments,
                    )
                    if group is not None:
                        _DECLARED[(cfg.exchange, name)] = (group, tuple(patterns))
                    for key in keys:
                        await queue.bind(cfg.exchange, key)
                    sub = RabbitMQSubscription(channel, queue, handler, limit)
                    await sub.start()
        except Exception:
            await quietly(channel.close(), OP_TIMEOUT)
            raise
        if self._closed:
            await sub.close()
            raise TransportClosed("RabbitMQ transport was closed during subscribe")
        sub.on_closed = self._forget
        self._subs.add(sub)
        _LIVE.add(sub)
        return sub

    async def _channel(self, conn: AbstractConnection, *, robust: bool = True) -> AbstractChannel:
        """A channel without publisher confirms. ``robust=False``: a plain one on the
        current connection, of which nothing is restored after a reconnect (a robust
        channel re-opens and re-declares), and a broker error on it (the 404 of a passive
        declare) just closes it."""
        with self._failing("opening a channel"):
            async with asyncio.timeout(self.config.connect_timeout):
                if robust:
                    return await conn.channel(publisher_confirms=False)
                await conn.ready()
                return await aio_pika.Channel(conn, publisher_confirms=False)

    def _forget(self, sub: RabbitMQSubscription) -> None:
        self._subs.discard(sub)
        _LIVE.discard(sub)

    async def ensure_group(self, pattern: str | Sequence[str], group: str) -> None:
        """Make sure the group's quorum queue exists and is bound, without consuming.

        Looked up passively first and declared only when missing: an existing queue
        retains already, whatever its arguments, so this never fails on changed settings
        (the mesh calls it for its dead-letter group at start, and the dead-letter tools
        must work then). `subscribe` declares, and explains a changed setting."""
        patterns = pattern_list(pattern)
        name = topology.group_queue(self.config.exchange, group, patterns)
        await self._ensure_queue(name, topology.group_arguments(self.config), group, patterns)

    async def backlog(self, pattern: str | Sequence[str], group: str) -> dict[str, int] | None:
        """Messages ready in the group's queue (a passive declare; AMQP 0-9-1 tells no
        count of messages delivered and not yet acked), keyed by the queue's name; empty
        when the queue does not exist (yet)."""
        name = topology.group_queue(self.config.exchange, group, pattern_list(pattern))
        channel = await self._channel(self._open(), robust=False)
        try:
            with self._failing(f"reading the length of queue {name!r}"):
                async with asyncio.timeout(self.config.connect_timeout):
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except ChannelNotFoundEntity:
                        return {}
            return {name: queue.declaration_result.message_count or 0}
        finally:
            await quietly(channel.close(), OP_TIMEOUT)

    async def _ensure_queue(
        self, name: str, arguments: dict[str, Any], group: str, patterns: Sequence[str]
    ) -> None:
        """Passive declare; a real declare (durable, ``arguments``) only if ``name`` does
        not exist; then bind it to every pattern (bindings are idempotent) and record it
        for `delete_channels` under ``group``."""
        cfg, conn = self.config, self._open()
        channel = await self._channel(conn, robust=False)
        try:
            with self._failing(f"declaring queue {name!r}"):
                async with asyncio.timeout(cfg.connect_timeout):
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except ChannelNotFoundEntity:  # the broker closed that channel: a new one
                        await quietly(channel.close(), OP_TIMEOUT)
                        channel = await self._channel(conn, robust=False)
                        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
                    for pattern in patterns:
                        await queue.bind(cfg.exchange, topology.binding_key(pattern))
        finally:
            await quietly(channel.close(), OP_TIMEOUT)
        _DECLARED[(cfg.exchange, name)] = (group, tuple(patterns))

    # --- retained channels (the dead-letter tools read them) -------------------------

    def _retained_name(self, channel: str) -> str:
        validate_pattern(channel)
        if is_wildcard(channel):
            raise ConfigError(f"retain/read take one channel, not the pattern {channel!r}")
        return topology.retained_queue(self.config.exchange, channel)

    async def retain(self, channel: str) -> None:
        """Keep ``channel`` in a stream queue (``<exchange>:retained:<channel>``, kept
        ``retained_max_age``, 7 days by default) bound to exactly its routing key. The
        queue is looked up passively first and declared only when it does not exist, so
        an existing one is used as it is (other settings never make this fail)."""
        name = self._retained_name(channel)
        await self._ensure_queue(name, topology.stream_arguments(self.config), "", [channel])

    async def read(self, channel: str, *, idle: float = 1.0) -> AsyncIterator[Delivery]:
        """The retained messages of ``channel``, oldest first, read from the stream on a
        channel of their own; nothing is removed (acks only return the prefetch credit).

        Where it ends: AMQP 0-9-1 tells neither the length of a stream (declare-ok says 0
        messages on RabbitMQ 3.10) nor its last offset, so a first consumer at offset
        ``last`` (the stream's last chunk) takes the ``x-stream-offset`` of that chunk's
        messages, and the reader from ``first`` stops at the highest. ``idle`` bounds
        the wait for a message: an empty stream, or a reader that stalls, ends after it.
        A channel never retained reads as empty. A queue of the stream's name that is not
        a stream raises `ConfigError` (nothing is acked on it)."""
        name = self._retained_name(channel)
        conn = self._open()
        end = await self._stream_end(conn, name, idle)
        if end < 0:
            return
        last = -1
        async with contextlib.aclosing(self._stream(conn, name, "first", idle, idle)) as stream:
            async for offset, message in stream:
                if offset > last:  # a chunk may start before the offset asked for
                    last = offset
                    yield RetainedDelivery(message, offset)
                if last >= end:
                    return

    async def _stream_end(self, conn: AbstractRobustConnection, name: str, idle: float) -> int:
        """The offset of the stream's last message now (-1: none arrived within ``idle``):
        the highest offset of the burst a consumer at ``last`` gets."""
        loop = asyncio.get_running_loop()
        end, deadline = -1, math.inf
        quiet = min(idle, LAST_CHUNK_QUIET)
        async with contextlib.aclosing(self._stream(conn, name, "last", idle, quiet)) as burst:
            async for offset, _ in burst:
                end = max(end, offset)
                # bounded from the first message on: under a steady stream of new
                # publishes the burst never goes quiet
                deadline = min(deadline, loop.time() + max(1.0, idle))
                if loop.time() > deadline:
                    break
        return end

    async def _stream(
        self, conn: AbstractRobustConnection, name: str, start: str, first: float, then: float
    ) -> AsyncGenerator[tuple[int, AbstractIncomingMessage]]:
        """(offset, message) of stream ``name`` from offset ``start`` on a plain channel of
        its own, each acked (a stream keeps what is acked: that only returns prefetch
        credit). Ends when no message came for ``first`` seconds (before the first one) or
        ``then`` seconds (after it), and at once when there is no such queue. A queue that
        is not a stream raises `ConfigError` before anything is acked on it, a lost
        connection `ConnectError`."""
        channel = await self._channel(conn, robust=False)
        inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        channel.close_callbacks.add(lambda *_: inbox.put_nowait(None))  # connection lost
        try:
            with self._failing(f"reading stream queue {name!r}", "read again"):
                try:
                    async with asyncio.timeout(self.config.connect_timeout):
                        queue = await channel.declare_queue(name, passive=True)
                except ChannelNotFoundEntity:  # never retained: nothing to read
                    return
                await channel.set_qos(prefetch_count=READ_PREFETCH)
                try:
                    await queue.consume(inbox.put, arguments={"x-stream-offset": start})
                except ChannelPreconditionFailed as exc:  # a quorum queue refuses the argument
                    if "x-stream-offset" not in str(exc):
                        raise
                    raise ConfigError(_NOT_A_STREAM.format(name=name)) from None
                wait = first
                while True:
                    try:
                        async with asyncio.timeout(wait):
                            message = await inbox.get()
                    except TimeoutError:  # quiet for that long: the end
                        return
                    if message is None:
                        raise ConnectionError("the connection was lost")
                    offset = (message.headers or {}).get("x-stream-offset")
                    if type(offset) is not int:
                        raise ConfigError(_NOT_A_STREAM.format(name=name))
                    await message.ack()
                    yield offset, message
                    wait = then
        finally:
            await quietly(channel.close(), OP_TIMEOUT)

    async def delete_channels(self, pattern: str) -> None:
        """Delete the group queues and retained streams this process declared whose
        patterns (channels) all lie under ``pattern``, and those of groups named after
        its literal head (the suite's ``<prefix>-alerts`` group on
        ``mesh.loop.detected``). Broadcast queues are exclusive and go with their
        subscriber.

        Live subscriptions on those queues are closed first: aio-pika's recovery
        would otherwise re-declare a queue deleted under its consumer."""
        pattern = pattern_list(pattern)[0]
        exchange = self.config.exchange
        head = pattern.split(".*")[0].split(".>")[0]
        heads = () if head == pattern else tuple(head + sep for sep in "-.:_")
        doomed = [
            name
            for (ex, name), (group, patterns) in list(_DECLARED.items())
            if ex == exchange
            and (all(pattern_covers(pattern, p) for p in patterns) or group.startswith(heads))
        ]
        if not doomed:
            return
        own = self._closed or self._conn is None  # after close(): a one-off connection
        conn = await self._dial() if own else self._open()
        channel: AbstractChannel | None = None
        try:
            channel = await self._channel(conn, robust=False)
            with self._failing("deleting queues"):
                for name in doomed:
                    subs = [sub for sub in _LIVE if sub.queue.name == name]
                    await asyncio.gather(*(sub.close() for sub in subs), return_exceptions=True)
                    async with asyncio.timeout(self.config.connect_timeout):
                        await channel.queue_delete(name)
                    _DECLARED.pop((exchange, name), None)
        finally:
            if own:
                await quietly(conn.close(), OP_TIMEOUT)
            elif channel is not None:
                await quietly(channel.close(), OP_TIMEOUT)
