"""`NatsTransport`: the mesh on NATS JetStream (``nats://host:4222``).

One stream (``MESH``) holds every channel under a subject prefix: channel
``orders.created`` is subject ``mesh.orders.created`` and the stream captures
``mesh.>``. A prefix is needed because a stream on ``>`` would also capture
``_INBOX`` replies and ``$JS`` API traffic. Channel patterns are NATS wildcards
already (``*`` one token, ``>`` the rest), so a subscription's pattern becomes
its consumer's ``filter_subject`` unchanged: the server does the filtering.

Publishes wait for the stream's ack (``PubAck``) with a timeout, so an outage
raises `PublishError` instead of hanging; ``Nats-Msg-Id`` lets the server drop
re-publishes of the same event within ``duplicate_window``. A group is a durable
pull consumer per pattern (created with ``deliver_policy=new``, resumed as is
afterwards); a broadcast subscriber gets its own such consumer, deleted on close
and by the server after ``broadcast_inactive`` seconds if the process dies. See
`mesh_nats.consumer` for how messages are pulled, and docs/transports/nats.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy,
                         StorageType, StreamConfig)
from nats.js.errors import NotFoundError
from pydantic import SecretStr

from mesh import (ConnectError, DeliveryHandler, Event, PublishError, Subscription, Transport,
                  TransportClosed, TransportError, TransportFeatures, codec, pattern_list,
                  redact_url, tls_context, validate_pattern)
from mesh_nats import binding
from mesh_nats.config import NatsConfig, parse
from mesh_nats.consumer import NatsSubscription
from mesh_nats.naming import check_channel, consumer_name, covers, msg_id

log = logging.getLogger("mesh_nats")
_BATCH = 256  # publishes in flight at once in publish_batch


class NatsTransport(Transport):
    """NATS JetStream transport; see the module docstring."""

    schemes = ("nats",)
    features = TransportFeatures(consumer_groups=True, broadcast=True, per_key_ordering=False,
                                 persistence=True, replay_for_new_groups=False,
                                 native_dedup=True, wildcard_patterns=True,
                                 pattern_syntax="nats")

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.config: NatsConfig = parse(url, options)
        self._where = redact_url(url).partition("?")[0]
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subs: set[NatsSubscription] = set()
        self._last_error = ""
        self._lock = asyncio.Lock()
        self._acks: dict[str, asyncio.Future[Msg]] = {}  # reply subject -> PubAck waiter
        self._inbox, self._serial = "", itertools.count()

    def __repr__(self) -> str:
        return f"NatsTransport({self._where!r}, stream={self.config.stream!r})"

    # --- lifecycle ------------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        cfg = self.config
        opts: dict[str, Any] = {
            "servers": cfg.servers, "name": cfg.name, "allow_reconnect": True,
            "max_reconnect_attempts": -1, "reconnect_time_wait": cfg.reconnect_wait,
            "connect_timeout": min(cfg.connect_timeout, 5.0),
            "error_cb": self._on_error, "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect}
        for key, value in (("user", cfg.user), ("password", cfg.password), ("token", cfg.token),
                           ("user_credentials", cfg.creds), ("nkeys_seed", cfg.nkey)):
            if value is not None:
                opts[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        if cfg.tls or cfg.tls_ca_file or cfg.tls_cert_file:
            opts["tls"] = tls_context(cfg.tls_ca_file, cfg.tls_cert_file, cfg.tls_key_file)
            if cfg.tls_hostname:
                opts["tls_hostname"] = cfg.tls_hostname
        return opts

    async def connect(self) -> None:
        async with self._lock:
            if self._nc is not None:
                return
            nc = Client()
            self._last_error = ""
            try:
                options = await asyncio.to_thread(self._connect_options)  # reads TLS files
                await asyncio.wait_for(nc.connect(**options),
                                       self.config.connect_timeout)
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                with contextlib.suppress(Exception):
                    await nc.close()
                reason = self._last_error or f"{type(exc).__name__} {exc}".strip()
                raise ConnectError(
                    f"could not connect to NATS at {self._where} within "
                    f"{self.config.connect_timeout:g}s ({reason}); check that nats-server runs "
                    "there and the credentials/TLS options") from None
            js = nc.jetstream(timeout=self.config.request_timeout)
            try:
                await self._ensure_stream(js)
                self._inbox = f"{nc.new_inbox()}."  # PubAcks of publish_batch come here
                await nc.subscribe(f"{self._inbox}*", cb=self._on_ack)
            except (TransportError, nats.errors.Error) as exc:
                await nc.close()
                raise ConnectError(str(exc)) from None
            self._nc, self._js = nc, js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream, or bring a managed one to the configured limits; a stream
        created elsewhere (``manage_stream=false``) only has to capture the prefix."""
        cfg = self.config
        wanted = f"{cfg.subject_prefix}.>"
        try:
            try:
                info = await js.stream_info(cfg.stream)
            except NotFoundError:
                await js.add_stream(StreamConfig(
                    name=cfg.stream, subjects=[wanted], retention=RetentionPolicy.LIMITS,
                    storage=StorageType(cfg.storage), num_replicas=cfg.replicas,
                    max_age=cfg.max_age, max_bytes=cfg.max_bytes, discard=DiscardPolicy.OLD,
                    duplicate_window=cfg.duplicate_window))
                return
            current = info.config
            subjects = list(current.subjects or [])
            if not cfg.manage_stream:
                if wanted not in subjects and ">" not in subjects:
                    raise TransportError(f"stream {cfg.stream} does not capture {wanted}; "
                                         "add it to the stream's subjects")
                return
            changes: dict[str, Any] = {
                name: getattr(cfg, name) for name in ("max_age", "max_bytes", "duplicate_window")
                if getattr(current, name) != getattr(cfg, name)}
            if wanted not in subjects:
                changes["subjects"] = [*subjects, wanted]
            if changes:
                await js.update_stream(current.evolve(**changes))
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(
                f"JetStream stream {cfg.stream} on {self._where} could not be created or "
                f"updated ({type(exc).__name__}: {exc}); is JetStream enabled (nats-server "
                "-js) and are the stream options valid?") from None

    async def close(self) -> None:
        async with self._lock:
            nc, self._nc, self._js = self._nc, None, None
            subs, self._subs = list(self._subs), set()
            await asyncio.gather(*(sub.close() for sub in subs), return_exceptions=True)
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.flush(), 5.0)
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        text = f"{type(exc).__name__} {exc}".strip()
        if "auth" not in self._last_error.lower():  # keep the telling error over the resets
            self._last_error = text
        quiet = self._nc is None or self._nc.is_reconnecting  # one warning per outage
        log.log(logging.DEBUG if quiet else logging.WARNING, "NATS %s: %s", self._where, text)

    async def _on_disconnect(self) -> None:
        if self._nc is not None:  # None: we are closing it
            log.warning("NATS %s: disconnected; reconnecting", self._where)

    async def _on_reconnect(self) -> None:
        log.info("NATS %s: reconnected; renewing pull requests", self._where)
        for sub in list(self._subs):
            sub.reset()

    def _client(self) -> tuple[Client, JetStreamContext]:
        if self._nc is None or self._js is None or self._nc.is_closed:
            raise TransportClosed("NATS transport is not connected; call connect() first")
        return self._nc, self._js

    # --- publishing -----------------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        await self.publish_batch([(channel, event)])

    async def publish_raw(self, channel: str, data: bytes,
                          headers: Mapping[str, str] | None = None) -> None:
        """Write any payload (structured-mode JSON, a foreign message) to ``channel`` and
        wait for the stream's ack; no ``Nats-Msg-Id`` is added."""
        await self._confirm([(check_channel(channel), data, dict(headers or {}), None)])

    async def publish_batch(self, items: Sequence[tuple[str, Event]]) -> None:
        messages = []
        for channel, event in items:
            message = binding.to_binary(event, codec.FORMAT)
            if self.config.dedup:
                message.headers["Nats-Msg-Id"] = msg_id(channel, event)
            messages.append((check_channel(channel), message.data, message.headers, event))
        await self._confirm(messages)

    async def _confirm(self, messages: Sequence[tuple[str, bytes, dict[str, str], Event | None]]
                       ) -> None:
        """Publish windows of 256 (channels checked before) with replies to our ack inbox,
        then await their PubAcks together (no task or request per message, unlike js.publish)."""
        nc, _ = self._client()
        failures: list[str] = []
        for start in range(0, len(messages), _BATCH):
            sent: list[tuple[str, str, Event | None, asyncio.Future[Msg]]] = []
            try:
                for channel, data, headers, event in messages[start:start + _BATCH]:
                    headers["Nats-Expected-Stream"] = self.config.stream
                    reply = f"{self._inbox}{next(self._serial)}"
                    self._acks[reply] = waiter = asyncio.get_running_loop().create_future()
                    sent.append((reply, channel, event, waiter))
                    await nc.publish(self.config.subject(channel), data, reply=reply,
                                     headers=headers)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.publish_timeout):
                        for *_, waiter in sent:
                            await waiter
            except Exception as exc:  # nats-py: closed, draining, reconnect buffer full
                failures.append(f"a publish ({type(exc).__name__}: {exc})")
                break
            finally:
                for reply, *_, waiter in sent:
                    self._acks.pop(reply, None)
                    waiter.cancel()  # no-op once done
            failures += [f"{f'event {event.id}' if event else 'a raw message'} on {channel!r} "
                         f"({why}); it may still be stored: publish it again (an event is "
                         "deduplicated by its Nats-Msg-Id)"
                         for _, channel, event, waiter in sent if (why := self._failure(waiter))]
        if failures and (self._nc is None or self._nc.is_closed):
            raise TransportClosed("NATS transport was closed during publish")
        if failures:
            raise PublishError(f"NATS did not confirm {failures[0]}" if len(messages) == 1 else
                               f"NATS did not confirm {len(failures)} of {len(messages)} "
                               f"messages; first: {failures[0]}")

    def _failure(self, waiter: asyncio.Future[Msg]) -> str | None:
        """None when the stream stored (or deduplicated) the message, else why not."""
        ack: Msg | None = None if waiter.cancelled() else waiter.result()
        if ack is None or ack.headers:  # no PubAck in time, or a status instead of one
            return f"status {(ack.headers or {}).get('Status')}; 503: no stream captures the " \
                "subject" if ack else f"no PubAck within {self.config.publish_timeout:g}s"
        if ack.data[:10] == b'{"stream":' and b'"error"' not in ack.data:
            return None  # the common case, without parsing the PubAck
        try:
            error = json.loads(ack.data).get("error")
        except (ValueError, AttributeError):
            error = ack.data[:80]
        return None if error is None else f"APIError: {error}"

    async def _on_ack(self, msg: Msg) -> None:
        if (waiter := self._acks.pop(msg.subject, None)) is not None and not waiter.done():
            waiter.set_result(msg)

    # --- consuming ------------------------------------------------------------------

    async def _create_consumer(self, name: str, pattern: str, *, max_in_flight: int = 1,
                               broadcast: bool = False) -> None:
        """Create the consumer unless it exists with our ``ack_wait`` and enough
        ``max_ack_pending``; only then update it. An update is never sent needlessly:
        on 2.9 it resets the consumer's redelivery state, and a message nacked just
        before (a member closing) then waits for ``ack_wait`` instead of coming back."""
        _, js = self._client()
        wanted = max(self.config.max_ack_pending, max_in_flight)
        try:
            try:
                current = (await js.consumer_info(self.config.stream, name)).config
            except NotFoundError:
                current = None
            if current is not None:
                if current.ack_wait == self.config.ack_wait and \
                        (current.max_ack_pending or 0) >= wanted:
                    return
                wanted = max(wanted, current.max_ack_pending or 0)
            await js.add_consumer(self.config.stream, ConsumerConfig(
                name=name, durable_name=name, deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT, ack_wait=self.config.ack_wait, max_deliver=-1,
                filter_subject=self.config.subject(pattern), max_ack_pending=wanted,
                inactive_threshold=self.config.broadcast_inactive if broadcast else None))
        except Exception as exc:
            raise TransportError(f"could not create JetStream consumer {name} on stream "
                                 f"{self.config.stream} ({type(exc).__name__}: {exc})") from None

    async def subscribe(self, pattern: str | Sequence[str], handler: DeliveryHandler, *,
                        group: str | None = None, max_in_flight: int = 1) -> Subscription:
        nc, js = self._client()
        patterns = list(dict.fromkeys(pattern_list(pattern)))
        max_in_flight = max(1, max_in_flight)
        if group is None:
            base = f"mesh_bc_{uuid.uuid4().hex[:16]}"
            consumers = [(f"{base}_{i}", p) for i, p in enumerate(patterns)]
        else:
            consumers = [(consumer_name(group, p), p) for p in patterns]
        for name, p in consumers:
            await self._create_consumer(name, p, max_in_flight=max_in_flight,
                                        broadcast=group is None)

        async def recreate(name: str, p: str) -> None:
            await self._create_consumer(name, p, max_in_flight=max_in_flight, broadcast=True)

        async def closed(sub: NatsSubscription) -> None:
            self._subs.discard(sub)
            if group is None:  # a broadcast subscriber's consumers die with it
                for name in sub.consumers:
                    with contextlib.suppress(Exception):
                        await js.delete_consumer(self.config.stream, name)

        sub = NatsSubscription(nc, self.config, consumers, handler, max_in_flight, closed,
                               recreate if group is None else None)
        await sub.start()
        self._subs.add(sub)
        return sub

    async def ensure_group(self, pattern: str | Sequence[str], group: str) -> None:
        """Create the group's durable consumers (``deliver_policy=new``) without pulling."""
        for p in dict.fromkeys(pattern_list(pattern)):
            await self._create_consumer(consumer_name(group, p), p)

    async def delete_channels(self, pattern: str) -> None:
        """Purge the stream's messages on matching subjects and delete the consumers whose
        filter lies within the pattern (groups and broadcast subscribers alike)."""
        _, js = self._client()
        subject = self.config.subject(validate_pattern(pattern))
        try:
            await js.purge_stream(self.config.stream, subject=subject)
            offset, doomed = 0, []
            while True:
                page = await js.consumers_info(self.config.stream, offset=offset)
                doomed += [c.name for c in page
                           if c.config.filter_subject and covers(subject, c.config.filter_subject)]
                offset += len(page)
                if len(page) < 256:
                    break
            for name in doomed:
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(self.config.stream, name)
        except Exception as exc:
            raise TransportError(f"could not delete NATS state for {pattern!r}: "
                                 f"{type(exc).__name__}: {exc}") from None


class NatsTransportWithoutDedup(NatsTransport):
    """``dedup=false``: no ``Nats-Msg-Id``, so the features say ``native_dedup=False``
    (only the mesh's idempotency store suppresses duplicates)."""

    features = replace(NatsTransport.features, native_dedup=False)


def create(url: str, options: Mapping[str, Any] | None = None) -> NatsTransport:
    """The registered factory: picks the class whose features match ``dedup``."""
    if parse(url, options).dedup:
        return NatsTransport(url, options)
    return NatsTransportWithoutDedup(url, options)
