"""The RabbitMQ transport: ``amqp://`` and ``amqps://`` on aio-pika.

One robust connection per transport (aio-pika's ``connect_robust`` reopens it
and restores channels, queues, bindings and consumers after an outage), with a
publisher channel in confirm mode, a control channel for declarations, and one
channel per subscription (see `mesh_rabbitmq.consumer`).

Publishing is ``mandatory`` with publisher confirms. An event on a channel no
queue is bound to comes back as ``basic.return``; that is not an error on a
pub/sub mesh (nobody subscribed, like on every broker), so publish() returns
normally and the transport counts it in ``unroutable``. During an outage
publish() raises `PublishError` at once or after ``publish_timeout`` seconds,
never hangs, so the caller can retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractMessage, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.abc import AbstractRobustQueue, HeadersType
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed, DeliveryError
from cloudevents.core.bindings import rabbitmq

from mesh import (ConfigError, ConnectError, DeliveryHandler, Event, MeshError, PublishError,
                  Subscription, Transport, TransportClosed, TransportFeatures, codec,
                  pattern_list, scrub)
from mesh_rabbitmq import topology
from mesh_rabbitmq.config import RabbitMQConfig, ssl_context
from mesh_rabbitmq.consumer import OP_TIMEOUT, RabbitMQSubscription

log = logging.getLogger("mesh_rabbitmq")
Properties = aiormq.spec.Basic.Properties

#: publishes in flight at once in publish_batch (their confirms are awaited together)
BATCH_WINDOW = 1000

#: Group queues declared in this process: (exchange, queue) -> (group, patterns).
#: delete_channels uses it: AMQP 0-9-1 cannot list queues (the management plugin can).
_DECLARED: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
#: Live subscriptions of every transport in this process, by (exchange, queue).
_LIVE: dict[tuple[str, str], set[RabbitMQSubscription]] = {}


class RabbitMQTransport(Transport):
    """Transport on a RabbitMQ topic exchange; see the module docstring."""

    schemes = ("amqp", "amqps")
    features = TransportFeatures(consumer_groups=True, broadcast=True, per_key_ordering=False,
                                 persistence=True, replay_for_new_groups=False,
                                 native_dedup=False, wildcard_patterns=True,
                                 pattern_syntax="amqp")

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.config = RabbitMQConfig.from_url(url, options or {})
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

    # --- lifecycle --------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._connecting:
            if self._closed:
                raise TransportClosed("this RabbitMQ transport was closed; create a new one")
            if self._conn is not None:
                return
            conn = await self._dial(robust=True)
            try:
                await self._declare_topology(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn

    async def _dial(self, *, robust: bool) -> AbstractRobustConnection:
        """A new connection: robust (reconnecting) for the transport, plain for one-off
        clean-up after close()."""
        cfg = self.config
        context = await asyncio.to_thread(ssl_context, cfg) if cfg.tls else None
        connect = aio_pika.connect_robust if robust else aio_pika.connect
        try:
            async with asyncio.timeout(cfg.connect_timeout + 1):
                conn: AbstractRobustConnection = await connect(  # type: ignore[assignment]
                    host=cfg.host, port=cfg.port, login=cfg.username,
                    password=cfg.password.get_secret_value(), virtualhost=cfg.vhost,
                    ssl=cfg.tls, ssl_context=context, timeout=cfg.connect_timeout,
                    reconnect_interval=cfg.reconnect_interval, heartbeat=cfg.heartbeat,
                    client_properties={"connection_name": cfg.connection_name})
                return conn
        except Exception as exc:
            raise ConnectError(
                f"could not connect to RabbitMQ at {cfg.redacted} ({self._scrub(exc)}); "
                "check that the broker runs, the host/port, vhost, credentials and TLS "
                "options") from None

    async def _declare_topology(self, conn: AbstractRobustConnection) -> None:
        """The publisher channel (confirm mode; returns do not raise, see the module
        docstring) and on it the exchange, the dead-letter exchange and its queue --
        robustly, so aio-pika declares them again after a reconnect to a wiped broker."""
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                publisher = await conn.channel(publisher_confirms=True, on_return_raises=False)
                await publisher.declare_exchange(cfg.exchange, "topic", durable=True)
                await publisher.declare_exchange(cfg.dlx, "fanout", durable=True)
                dead = await publisher.declare_queue(cfg.dlx, durable=True,
                                                     arguments={"x-queue-type": "quorum"})
                await dead.bind(cfg.dlx, "")
                self._publisher = publisher
        except Exception as exc:
            raise self._declare_error(exc, f"exchange {cfg.exchange!r}") from None

    def _declare_error(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, ChannelPreconditionFailed):
            return ConfigError(f"RabbitMQ refused to declare {what}: it exists with other "
                               f"settings ({self._scrub(exc)}); delete it or choose another "
                               "name (options exchange=..., or another group)")
        if isinstance(exc, ChannelAccessRefused):
            return ConnectError(f"RabbitMQ user {self.config.username!r} may not declare "
                                f"{what} on vhost {self.config.vhost!r}; grant configure/"
                                "write/read permissions (rabbitmqctl set_permissions)")
        if isinstance(exc, TimeoutError):
            return ConnectError(f"RabbitMQ did not answer while declaring {what} at "
                                f"{self.config.redacted}; is the broker reachable?")
        return ConnectError(f"could not declare {what} on RabbitMQ at {self.config.redacted}: "
                            f"{self._scrub(exc)}")

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
            with contextlib.suppress(Exception):
                async with asyncio.timeout(OP_TIMEOUT):
                    await conn.close()

    def _open(self) -> AbstractRobustConnection:
        if self._closed or self._conn is None:
            raise TransportClosed("RabbitMQ transport is not connected; call connect() first "
                                  "(or create a new transport after close())")
        return self._conn

    # --- publishing -------------------------------------------------------------------

    @staticmethod
    def _message(event: Event) -> tuple[bytes, Properties]:
        """Body and properties as ``aio_pika.Message`` makes them (persistent, priority 0),
        without building one: publishing goes straight to aiormq, see `_send`."""
        wire = rabbitmq.to_binary(event, codec.FORMAT)
        headers: HeadersType = dict(wire.headers)
        return wire.body, Properties(headers=headers, content_type=wire.content_type,
                                     delivery_mode=2, priority=0)

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
            await self._confirmed(messages[start:start + BATCH_WINDOW])

    async def send_raw(self, channel: str, message: AbstractMessage) -> None:
        """Publish an arbitrary AMQP message to ``channel`` (tests, bridges)."""
        self._open()
        await self._confirmed([(channel, message.body, message.properties)])

    async def _confirmed(self, window: Sequence[tuple[str, bytes, Properties]]) -> None:
        """Publish ``window`` and wait (at most ``publish_timeout``) for every confirm."""
        timeout = self.config.publish_timeout
        try:
            async with asyncio.timeout(timeout):
                if len(window) == 1:
                    results: Sequence[BaseException | None] = [await self._send(*window[0])]
                else:
                    results = await asyncio.gather(*(self._send(*item) for item in window),
                                                   return_exceptions=True)
        except TimeoutError:
            raise PublishError(f"RabbitMQ did not confirm {len(window)} publish(es) within "
                               f"{timeout:g}s (publish_timeout); they may or may not be "
                               "stored: publish again") from None
        failed = [r for r in results if r is not None]
        if self._closed and failed:
            raise TransportClosed("RabbitMQ transport was closed during publish")
        if failed:
            first = failed[0]
            raise first if len(window) == 1 else PublishError(
                f"{len(failed)} of {len(window)} events were not confirmed by RabbitMQ "
                f"(first: {first})")

    async def _send(self, routing_key: str, body: bytes,
                    properties: Properties) -> PublishError | None:
        """One publish; returns (not raises) its error so a window can gather them. What
        ``Exchange.publish`` does, on the robust channel's current aiormq channel."""
        if self._publisher is None:
            return PublishError("RabbitMQ transport is closed")
        try:
            channel = await self._publisher.get_underlay_channel()  # waits out a reconnect
            result = await channel.basic_publish(body, exchange=self.config.exchange,
                                                 routing_key=routing_key,
                                                 properties=properties, mandatory=True)
        except DeliveryError:
            return PublishError(f"RabbitMQ refused (nacked) a publish to {routing_key!r}; a "
                                "queue may be full or unavailable: retry later")
        except ValueError as exc:   # pamqp/aiormq validation, e.g. the 255-byte key limit
            return PublishError(f"cannot publish to channel {routing_key[:80]!r}: {exc}")
        except Exception as exc:
            return PublishError(f"publish to {routing_key!r} failed ({self._scrub(exc)}); the "
                                "connection to RabbitMQ is probably down: retry")
        if isinstance(result, DeliveredMessage):
            self.unroutable += 1
            log.debug("no queue is bound for channel %s; event dropped", routing_key)
        return None

    # --- subscribing ------------------------------------------------------------------

    async def subscribe(self, pattern: str | Sequence[str], handler: DeliveryHandler, *,
                        group: str | None = None, max_in_flight: int = 1) -> Subscription:
        patterns = pattern_list(pattern)
        keys = [topology.binding_key(p) for p in patterns]
        conn = self._open()
        cfg = self.config
        name = (topology.broadcast_queue(cfg.exchange) if group is None
                else topology.group_queue(cfg.exchange, group, patterns))
        channel = await self._channel(conn)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                await channel.set_qos(prefetch_count=max(1, max_in_flight))
                queue = await self._declare(channel, name, group, patterns, keys)
                sub = RabbitMQSubscription(channel, queue, handler, max(1, max_in_flight),
                                           exclusive=group is None)
                await sub.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(OP_TIMEOUT):
                    await channel.close()
            raise self._declare_error(exc, f"queue {name!r}") from None
        if self._closed:
            await sub.close()
            raise TransportClosed("RabbitMQ transport was closed during subscribe")
        sub.on_closed = self._forget
        self._subs.add(sub)
        _LIVE.setdefault((cfg.exchange, name), set()).add(sub)
        return sub

    async def _channel(self, conn: AbstractRobustConnection) -> AbstractRobustChannel:
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                channel: AbstractRobustChannel = await conn.channel(publisher_confirms=False)
                return channel
        except Exception as exc:
            raise ConnectError(f"could not open a channel to RabbitMQ at "
                               f"{self.config.redacted} ({self._scrub(exc)}); retry") from None

    async def _declare(self, channel: AbstractRobustChannel, name: str, group: str | None,
                       patterns: Sequence[str], keys: Sequence[str],
                       robust: bool = True) -> AbstractRobustQueue:
        """Declare the queue and bind it. ``robust`` queues are re-declared and re-bound
        by aio-pika after a reconnect (exclusive broadcast queues die with the old one)."""
        exchange = self.config.exchange
        if group is None:
            queue = await channel.declare_queue(name, exclusive=True, auto_delete=True,
                                                arguments={"x-queue-type": "classic"},
                                                robust=robust)
        else:
            queue = await channel.declare_queue(name, durable=True, robust=robust,
                                                arguments=topology.group_arguments(self.config))
            _DECLARED[(exchange, name)] = (group, tuple(patterns))
        for key in keys:
            await queue.bind(exchange, key, robust=robust)
        return queue

    def _forget(self, sub: RabbitMQSubscription) -> None:
        self._subs.discard(sub)
        key = (self.config.exchange, sub.queue.name)
        live = _LIVE.get(key, set())
        live.discard(sub)
        if not live:
            _LIVE.pop(key, None)

    async def ensure_group(self, pattern: str | Sequence[str], group: str) -> None:
        """Declare the group's quorum queue and its bindings without consuming."""
        patterns = pattern_list(pattern)
        keys = [topology.binding_key(p) for p in patterns]
        conn = self._open()
        name = topology.group_queue(self.config.exchange, group, patterns)
        channel = await self._channel(conn)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await self._declare(channel, name, group, patterns, keys, robust=False)
        except Exception as exc:
            raise self._declare_error(exc, f"queue {name!r}") from None
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(OP_TIMEOUT):
                    await channel.close()

    async def delete_channels(self, pattern: str) -> None:
        """Delete the group queues this process declared whose patterns all lie under
        ``pattern``, and those of groups named after its literal head (the suite's
        ``<prefix>-alerts`` group on ``mesh.loop.detected``). Broadcast queues are
        exclusive and go with their subscriber.

        Live subscriptions on those queues are closed first: aio-pika's recovery
        would otherwise re-declare a queue deleted under its consumer."""
        pattern = pattern_list(pattern)[0]
        exchange = self.config.exchange
        head = pattern.split(".*")[0].split(".>")[0]
        heads = () if head == pattern else tuple(head + sep for sep in "-.:_")
        doomed = [name for (ex, name), (group, patterns) in list(_DECLARED.items())
                  if ex == exchange and (all(topology.covers(pattern, p) for p in patterns)
                                         or group.startswith(heads))]
        if not doomed:
            return
        own = self._closed or self._conn is None   # after close(): a one-off connection
        conn = await self._dial(robust=False) if own else self._open()
        channel: AbstractRobustChannel | None = None
        try:
            channel = await self._channel(conn)
            for name in doomed:
                subs = _LIVE.pop((exchange, name), set())
                await asyncio.gather(*(sub.close() for sub in subs), return_exceptions=True)
                async with asyncio.timeout(self.config.connect_timeout):
                    await channel.queue_delete(name)
                _DECLARED.pop((exchange, name), None)
        except TimeoutError:
            raise ConnectError(f"RabbitMQ at {self.config.redacted} did not answer while "
                               "deleting queues") from None
        except MeshError:
            raise
        except Exception as exc:
            raise ConnectError(f"could not delete queues on RabbitMQ at {self.config.redacted}"
                               f" ({self._scrub(exc)})") from None
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(OP_TIMEOUT):
                    if own:
                        await conn.close()
                    elif channel is not None:
                        await channel.close()
