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

A message is its headers and payload together against the server's ``max_payload``
(nats-py checks the payload only, and the server answers an oversize message with a
fatal ``-ERR`` after which nats-py never reconnects): the transport measures both the
way nats-py encodes them and raises `MessageTooLarge` with nothing sent. Should the
server close the connection anyway (any fatal ``-ERR``), the transport connects a fresh
client by itself and moves its ack inbox and every subscription onto it; meanwhile
publishes raise `PublishError` (retry), never `TransportClosed`, which means only
"not connected yet" or "closed by `close()`".

`retain`/`read` serve the dead-letter tools: a channel is retained by the stream
already, and `read` walks it with an ephemeral consumer that acknowledges nothing, so
no group's position or any other reader changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

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
    TransportError,
    TransportFeatures,
    WireFormat,
    codec,
    ensure_listening,
    pattern_covers,
    pattern_list,
    quietly,
    redact_url,
    tls_context,
    validate_pattern,
)
from mesh_nats import binding
from mesh_nats.config import NatsConfig, parse
from mesh_nats.consumer import NatsDelivery, NatsSubscription
from mesh_nats.naming import check_channel, consumer_name, msg_id

log = logging.getLogger("mesh.nats")
_BATCH = 256  # publishes in flight at once in publish_batch
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_READ_BATCH = 256  # messages per pull request of `read`


def wire_size(headers: Mapping[str, str], payload: bytes) -> int:
    """Bytes a message counts against the server's ``max_payload``: the header block as
    nats-py writes it (``NATS/1.0`` line, one ``name: value`` line per header with both
    stripped, empty names skipped, CR/LF in values made spaces, a blank line) plus the
    payload."""
    size = 12 + len(payload)  # b"NATS/1.0\r\n" and the closing b"\r\n"
    for name, value in headers.items():
        if key := name.strip():
            text = value.strip().translate(_NEWLINES)
            size += len(key.encode()) + len(text.encode("utf-8", "surrogatepass")) + 4  # ": ", CRLF
    return size


@contextlib.contextmanager
def _failing(what: str, then: str = "", error: type[MeshError] = TransportError) -> Iterator[None]:
    """A client error in the block as one ``error``, "<what> (<client error>)[; <then>]",
    raised ``from None``; mesh errors pass unchanged. Only around calls on a connected
    client (JetStream API requests, inboxes): their errors quote no credentials, while
    `NatsTransport._dial` raises outside its handler (a connect error may quote options)."""
    try:
        yield
    except MeshError:
        raise
    except Exception as exc:
        then = f"; {then}" if then else ""
        raise error(f"{what} ({type(exc).__name__}: {exc}){then}") from None


class NatsTransport(Transport):
    """NATS JetStream transport; see the module docstring."""

    schemes = ("nats",)
    # besides the defaults (groups, broadcast, wildcard patterns; no per-key order, and a
    # new group starts at what is published from then on)
    features = TransportFeatures(
        persistence=True, native_dedup=True, retained_reads=True, backlog=True
    )
    wire = WireFormat(
        title="NATS JetStream",
        protocol="nats",
        system="nats",
        header_prefix=binding.CE_PREFIX,
        binding=f"NATS protocol binding (`{binding.CE_PREFIX}` message headers)",
    )

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.config: NatsConfig = parse(url, options)
        self._where = redact_url(url).partition("?")[0]
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._open = False  # between a successful connect() and close()
        self._recovery: asyncio.Task[None] | None = None
        self._subs: set[NatsSubscription] = set()
        self._last_error = ""
        self._lock = asyncio.Lock()
        self._acks: dict[str, asyncio.Future[Msg]] = {}  # reply subject -> PubAck waiter
        self._inbox, self._serial = "", itertools.count()

    def __repr__(self) -> str:
        return f"NatsTransport({self._where!r}, stream={self.config.stream!r})"

    @property
    def max_payload(self) -> int:
        """The server's limit on one message, headers and payload together, in bytes (its
        INFO ``max_payload``, 1 MiB by default). Raises `TransportClosed` before
        `connect`."""
        nc, _ = self._client()
        return nc.max_payload

    # --- lifecycle ------------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        """nats-py's connect options (None is its default for each one left out); reads
        the TLS files, so it runs in a thread."""
        cfg = self.config
        tls = cfg.tls or cfg.tls_ca_file or cfg.tls_cert_file
        return {
            "servers": cfg.servers,
            "name": cfg.name,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": cfg.reconnect_wait,
            "connect_timeout": min(cfg.connect_timeout, 5.0),
            "user": cfg.user,
            "password": cfg.password.get_secret_value() if cfg.password is not None else None,
            "token": cfg.token.get_secret_value() if cfg.token is not None else None,
            "user_credentials": cfg.creds,
            "nkeys_seed": cfg.nkey,
            "tls": tls_context(cfg.tls_ca_file, cfg.tls_cert_file, cfg.tls_key_file)
            if tls
            else None,
            "tls_hostname": cfg.tls_hostname if tls else None,
        }

    async def connect(self) -> None:
        """Connect and make sure the stream exists. A refused connection (nothing listens
        at any server) is reported at once; otherwise the client gets the rest of
        ``connect_timeout`` (a slow network, a TLS or auth handshake)."""
        async with self._lock:
            if self._open:
                return
            cfg = self.config
            options = await asyncio.to_thread(self._connect_options)  # reads TLS files
            spent = await ensure_listening(
                cfg.servers, timeout=min(1.0, cfg.connect_timeout), broker="NATS"
            )
            nc, js, inbox = await self._dial(options, max(cfg.connect_timeout - spent, 0.1))
            try:
                await self._ensure_stream(js)
            except BaseException:
                await quietly(nc.close())
                raise
            self._nc, self._js, self._inbox = nc, js, inbox
            self._open = True

    async def _dial(
        self, options: dict[str, Any], timeout: float
    ) -> tuple[Client, JetStreamContext, str]:
        """A connected client with its callbacks and the PubAck inbox subscribed, or
        `ConnectError` (raised outside the handler: a client error may quote options)."""
        nc = Client()
        self._last_error = ""
        reason = None
        try:  # each callback is told its client: a replaced one's late calls are ignored
            await asyncio.wait_for(
                nc.connect(
                    **options,
                    error_cb=functools.partial(self._on_error, nc),
                    disconnected_cb=functools.partial(self._on_disconnect, nc),
                    reconnected_cb=functools.partial(self._on_reconnect, nc),
                    closed_cb=functools.partial(self._on_closed, nc),
                ),
                timeout,
            )
            inbox = f"{nc.new_inbox()}."  # PubAcks of publish_batch come here
            await nc.subscribe(f"{inbox}*", cb=self._on_ack)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            reason = self._last_error or f"{type(exc).__name__} {exc}".strip()
        except BaseException:  # cancelled (close() during a recovery): leave nothing open
            await quietly(nc.close())
            raise
        if reason is not None:
            await quietly(nc.close())
            raise ConnectError(
                f"could not connect to NATS at {self._where} within "
                f"{self.config.connect_timeout:g}s ({reason}); check that nats-server runs "
                "there and the credentials/TLS options"
            )
        return nc, nc.jetstream(timeout=self.config.request_timeout), inbox

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream, or bring a managed one to the configured limits; a stream
        created elsewhere (``manage_stream=false``) only has to capture the prefix."""
        cfg = self.config
        wanted = f"{cfg.subject_prefix}.>"
        with _failing(
            f"JetStream stream {cfg.stream} on {self._where} could not be created or updated",
            "is JetStream enabled (nats-server -js) and are the stream options valid?",
            ConnectError,
        ):
            try:
                current = (await js.stream_info(cfg.stream)).config
            except NotFoundError:
                await js.add_stream(
                    StreamConfig(
                        name=cfg.stream,
                        subjects=[wanted],
                        retention=RetentionPolicy.LIMITS,
                        storage=StorageType(cfg.storage),
                        num_replicas=cfg.replicas,
                        max_age=cfg.max_age,
                        max_bytes=cfg.max_bytes,
                        duplicate_window=cfg.duplicate_window,
                    )
                )
                return
            subjects = list(current.subjects or [])
            if not cfg.manage_stream:
                if wanted not in subjects and ">" not in subjects:
                    raise ConnectError(
                        f"stream {cfg.stream} does not capture {wanted}; "
                        "add it to the stream's subjects"
                    )
                return
            changes: dict[str, Any] = {
                name: getattr(cfg, name)
                for name in ("max_age", "max_bytes", "duplicate_window")
                if getattr(current, name) != getattr(cfg, name)
            }
            if wanted not in subjects:
                changes["subjects"] = [*subjects, wanted]
            if changes:
                await js.update_stream(current.evolve(**changes))

    async def close(self) -> None:
        async with self._lock:
            self._open = False
            recovery, self._recovery = self._recovery, None
            if recovery is not None:
                recovery.cancel()
                await asyncio.gather(recovery, return_exceptions=True)
            subs, self._subs = list(self._subs), set()
            await asyncio.gather(*(sub.close() for sub in subs), return_exceptions=True)
            nc, self._nc, self._js = self._nc, None, None
            if nc is not None:
                await quietly(nc.flush(), timeout=5.0)
                await quietly(nc.close())
            self._release_waiters()

    async def _on_error(self, nc: Client, exc: Exception) -> None:
        text = f"{type(exc).__name__} {exc}".strip()
        if "auth" not in self._last_error.lower():  # keep the telling error over the resets
            self._last_error = text
        quiet = nc is not self._nc or nc.is_reconnecting  # one warning per outage
        log.log(logging.DEBUG if quiet else logging.WARNING, "NATS %s: %s", self._where, text)

    async def _on_disconnect(self, nc: Client) -> None:
        if self._open and nc is self._nc:  # else we are closing it, or it is being dialled
            log.warning("NATS %s: disconnected; reconnecting", self._where)

    async def _on_reconnect(self, nc: Client) -> None:
        if nc is self._nc:
            log.info("NATS %s: reconnected; renewing pull requests", self._where)
            for sub in list(self._subs):
                sub.reset()

    async def _on_closed(self, nc: Client) -> None:
        """nats-py closed the client for good (a fatal ``-ERR`` such as a payload
        violation: it does not reconnect after those). Not our doing: recover."""
        if self._open and nc is self._nc:
            self._release_waiters()
            self._start_recovery()

    def _release_waiters(self) -> None:
        """PubAcks cannot arrive on a closed client: end their waits now (no PubAck)."""
        for waiter in self._acks.values():
            waiter.cancel()  # no-op once done

    def _start_recovery(self) -> None:
        if self._open and (self._recovery is None or self._recovery.done()):
            # outside the loop (a property read) there is no loop to run it: the next call will
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                self._recovery = loop.create_task(self._recover(), name="mesh-nats-recover")

    async def _recover(self) -> None:
        """Dial a fresh client until one connects (every ``reconnect_wait``), then move the
        ack inbox and every live subscription onto it. Publishes meanwhile raise
        `PublishError`; `close()` cancels this."""
        log.warning(
            "NATS %s: the connection was closed (%s); connecting a fresh client",
            self._where,
            self._last_error or "closed by the client",
        )
        while self._open:
            try:
                options = await asyncio.to_thread(self._connect_options)
                nc, js, inbox = await self._dial(options, self.config.connect_timeout)
            except MeshError as exc:  # ConnectError; ConfigError if TLS files went away
                log.debug("NATS %s: %s", self._where, exc)
                await asyncio.sleep(self.config.reconnect_wait)
                continue
            self._nc, self._js, self._inbox = nc, js, inbox
            for sub in list(self._subs):
                try:
                    await sub.rebind(nc)
                except Exception as exc:  # the fresh client failed too: it will be recovered
                    log.warning(
                        "NATS %s: could not restore a subscription (%s: %s)",
                        self._where,
                        type(exc).__name__,
                        exc,
                    )
            log.info(
                "NATS %s: connected afresh; %d subscription(s) restored",
                self._where,
                len(self._subs),
            )
            return

    def _client(
        self, error: type[TransportError] = TransportError
    ) -> tuple[Client, JetStreamContext]:
        """The live client, `TransportClosed` when not connected (before `connect`, after
        `close`), or ``error`` (retryable) while a closed client is being replaced."""
        nc, js = self._nc, self._js
        if not self._open or nc is None or js is None:
            raise TransportClosed(
                "NATS transport is not connected; call connect() first "
                "(or use a transport that was not closed)"
            )
        if nc.is_closed:
            self._start_recovery()
            raise error(
                f"NATS {self._where} closed the connection "
                f"({self._last_error or 'closed'}); a fresh connection is being made: "
                "retry shortly"
            )
        return nc, js

    # --- publishing -----------------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        await self.publish_batch([(channel, event)])

    async def publish_raw(
        self, channel: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Write any payload (structured-mode JSON, a foreign message) to ``channel`` and
        wait for the stream's ack; no ``Nats-Msg-Id`` is added (``Nats-Expected-Stream``
        is, and counts against ``max_payload`` like every header)."""
        await self._confirm([(check_channel(channel), data, dict(headers or {}), None)])

    async def publish_batch(self, items: Sequence[tuple[str, Event]]) -> None:
        messages = []
        for channel, event in items:
            message = binding.to_binary(event, codec.FORMAT)
            if self.config.dedup:
                message.headers["Nats-Msg-Id"] = msg_id(channel, event)
            messages.append((check_channel(channel), message.data, message.headers, event))
        await self._confirm(messages)

    async def _confirm(
        self, messages: Sequence[tuple[str, bytes, dict[str, str], Event | None]]
    ) -> None:
        """Check every message against the server's limit (`MessageTooLarge` before anything
        is sent: the server would close the connection on it), then publish windows of 256
        with replies to our ack inbox and await their PubAcks together (no task or request
        per message, unlike js.publish)."""
        nc, _ = self._client(PublishError)
        limit = nc.max_payload
        for channel, data, headers, event in messages:
            headers["Nats-Expected-Stream"] = self.config.stream
            if len(data) + 12 + 4 * sum(len(k) + len(v) + 4 for k, v in headers.items()) <= limit:
                continue  # the common case: under the limit even if every char took 4 bytes
            size = wire_size(headers, data)
            if size > limit:
                what = f"event {event.id}" if event is not None else "a raw message"
                raise MessageTooLarge(
                    f"{what} on {channel!r} is {size} bytes with its headers, over the NATS "
                    f"server's max_payload of {limit} bytes; nothing was sent: make it smaller "
                    "(keep large data elsewhere and send a reference) or raise max_payload "
                    "on the server",
                    size=size,
                    limit=limit,
                )
        inbox = self._inbox
        failures: list[str] = []
        for start in range(0, len(messages), _BATCH):
            sent: list[tuple[str, str, Event | None, asyncio.Future[Msg]]] = []
            try:
                for channel, data, headers, event in messages[start : start + _BATCH]:
                    reply = f"{inbox}{next(self._serial)}"
                    self._acks[reply] = waiter = asyncio.get_running_loop().create_future()
                    sent.append((reply, channel, event, waiter))
                    await nc.publish(
                        self.config.subject(channel), data, reply=reply, headers=headers
                    )
                await asyncio.wait(
                    [waiter for *_, waiter in sent], timeout=self.config.publish_timeout
                )
            except Exception as exc:  # nats-py: closed, draining, reconnect buffer full
                failures.append(f"a publish ({type(exc).__name__}: {exc})")
                break
            finally:
                for reply, *_, waiter in sent:
                    self._acks.pop(reply, None)
                    waiter.cancel()  # no-op once done
            failures += [
                f"{f'event {event.id}' if event else 'a raw message'} on {channel!r} "
                f"({why}); it may still be stored: publish it again (an event is "
                "deduplicated by its Nats-Msg-Id)"
                for _, channel, event, waiter in sent
                if (why := self._failure(waiter))
            ]
        if failures and not self._open:
            raise TransportClosed("NATS transport was closed during publish")
        if failures:
            raise PublishError(
                f"NATS did not confirm {failures[0]}"
                if len(messages) == 1
                else f"NATS did not confirm {len(failures)} of {len(messages)} "
                f"messages; first: {failures[0]}"
            )

    def _failure(self, waiter: asyncio.Future[Msg]) -> str | None:
        """None when the stream stored (or deduplicated) the message, else why not."""
        if waiter.cancelled():
            timeout = self.config.publish_timeout
            return f"no PubAck within {timeout:g}s or before the connection closed"
        ack = waiter.result()
        if ack.headers:  # a status instead of a PubAck
            return f"status {ack.headers.get('Status')}; 503: no stream captures the subject"
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

    async def _create_consumer(
        self, name: str, pattern: str, *, max_in_flight: int = 1, broadcast: bool = False
    ) -> None:
        """Create the consumer unless it exists with our ``ack_wait`` and enough
        ``max_ack_pending``; only then update it. An update is never sent needlessly:
        on 2.9 it resets the consumer's redelivery state, and a message nacked just
        before (a member closing) then waits for ``ack_wait`` instead of coming back."""
        _, js = self._client()
        cfg = self.config
        wanted = max(cfg.max_ack_pending, max_in_flight)
        with _failing(f"could not create JetStream consumer {name} on stream {cfg.stream}"):
            try:
                current = (await js.consumer_info(cfg.stream, name)).config
                if current.ack_wait == cfg.ack_wait and (current.max_ack_pending or 0) >= wanted:
                    return
                wanted = max(wanted, current.max_ack_pending or 0)
            except NotFoundError:
                pass
            await js.add_consumer(
                cfg.stream,
                ConsumerConfig(
                    name=name,
                    durable_name=name,
                    deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=cfg.ack_wait,
                    max_deliver=-1,
                    filter_subject=cfg.subject(pattern),
                    max_ack_pending=wanted,
                    inactive_threshold=cfg.broadcast_inactive if broadcast else None,
                ),
            )

    async def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 1,
    ) -> Subscription:
        nc, _ = self._client()
        max_in_flight = max(1, max_in_flight)
        base = f"mesh_bc_{uuid.uuid4().hex[:16]}"  # a broadcast subscriber's consumers
        consumers = [
            (f"{base}_{i}" if group is None else consumer_name(group, p), p)
            for i, p in enumerate(dict.fromkeys(pattern_list(pattern)))
        ]
        for name, p in consumers:
            await self._create_consumer(
                name, p, max_in_flight=max_in_flight, broadcast=group is None
            )
        recreate = functools.partial(
            self._create_consumer, max_in_flight=max_in_flight, broadcast=True
        )
        sub = NatsSubscription(
            nc,
            self.config,
            consumers,
            handler,
            max_in_flight,
            self._subs.discard,
            recreate if group is None else None,
        )
        try:
            with _failing(
                f"could not subscribe on NATS {self._where}", "retry once the connection is back"
            ):
                await sub.start()  # fails if the connection closed meanwhile
        except BaseException:
            await sub.close()
            raise
        self._subs.add(sub)
        if self._nc is not nc:  # replaced while we subscribed: follow the fresh client
            await sub.rebind(self._nc or nc)
        return sub

    async def ensure_group(self, pattern: str | Sequence[str], group: str) -> None:
        """Create the group's durable consumers (``deliver_policy=new``) without pulling."""
        for p in dict.fromkeys(pattern_list(pattern)):
            await self._create_consumer(consumer_name(group, p), p)

    async def backlog(self, pattern: str | Sequence[str], group: str) -> dict[str, int] | None:
        """Per pattern, the group's durable consumer's ``num_pending`` (not delivered
        yet) + ``num_ack_pending`` (delivered, not acked); a consumer that does not exist
        (yet) is left out."""
        _, js = self._client()
        counts: dict[str, int] = {}
        for p in dict.fromkeys(pattern_list(pattern)):
            with _failing(f"could not read the consumer of group {group} on {self._where}"):
                try:
                    info = await js.consumer_info(self.config.stream, consumer_name(group, p))
                except NotFoundError:
                    continue
            counts[p] = (info.num_pending or 0) + (info.num_ack_pending or 0)
        return counts

    # --- retained reads (the dead-letter tools) -------------------------------------

    async def retain(self, channel: str) -> None:
        """The stream keeps every channel already: check that it captures ``channel`` and
        keeps messages regardless of consumers (``limits`` retention; a work-queue or
        interest stream deletes what groups ack). Changes nothing; messages still expire
        with the stream's ``max_age``/``max_bytes``."""
        _, js = self._client()
        stream, subject = self.config.stream, self.config.subject(check_channel(channel))
        with _failing(f"could not read stream {stream} on {self._where}"):
            info = (await js.stream_info(stream)).config
        if not any(pattern_covers(s, subject) for s in info.subjects or []):
            raise ConfigError(
                f"stream {stream} does not capture {subject}; add "
                f"{self.config.subject_prefix}.> to its subjects"
            )
        retention = str(getattr(info.retention, "value", info.retention or "limits"))
        if retention != RetentionPolicy.LIMITS.value:
            raise ConfigError(
                f"stream {stream} uses {retention} retention, which deletes messages once "
                "consumed; retained reads (the dead-letter tools) need limits retention"
            )

    async def read(self, channel: str, *, idle: float = 1.0) -> AsyncIterator[Delivery]:
        """The stream's messages on ``channel`` at the time of the call, oldest first, through
        an ephemeral consumer (``deliver_policy=all``, ``ack_policy=none``, in memory)
        that is deleted afterwards (and by the server after a minute of inactivity if
        this process dies): no group, no acks, nothing changes for anyone else.

        Its ``num_pending`` at creation is how many messages to read; later publishes are
        not included. Reading also stops when a pull request brings nothing for ``idle``
        seconds (messages that expired or were purged meanwhile). The deliveries are
        settled from the start (ack and nack do nothing) and count no redeliveries;
        ``position`` is the stream sequence."""
        _, js = self._client()
        stream, subject = self.config.stream, self.config.subject(check_channel(channel))
        info = pull = None
        try:
            with _failing(
                f"could not read {channel!r} from stream {stream} on {self._where}", "retry"
            ):
                info = await js.add_consumer(
                    stream,
                    ConsumerConfig(
                        deliver_policy=DeliverPolicy.ALL,
                        ack_policy=AckPolicy.NONE,
                        filter_subject=subject,
                        mem_storage=True,
                        num_replicas=1,
                        inactive_threshold=max(60.0, 4 * idle),
                    ),
                )
                pull = await js.pull_subscribe_bind(info.name, stream)
                left = info.num_pending or 0
                while left > 0:
                    try:
                        msgs = await pull.fetch(min(left, _READ_BATCH), timeout=idle)
                    except TimeoutError:
                        break  # nothing more within idle: the rest expired or was purged
                    left -= len(msgs)
                    for msg in msgs:
                        with contextlib.suppress(ValueError, IndexError):
                            yield NatsDelivery(msg, self.config.channel(msg.subject), None)
        finally:
            if pull is not None:
                await quietly(pull.unsubscribe())
            if info is not None:
                await quietly((self._js or js).delete_consumer(stream, info.name))

    async def delete_channels(self, pattern: str) -> None:
        """Purge the stream's messages on matching subjects and delete the consumers whose
        filter lies within the pattern (groups and broadcast subscribers alike)."""
        _, js = self._client()
        stream, subject = self.config.stream, self.config.subject(validate_pattern(pattern))
        with _failing(f"could not delete NATS state for {pattern!r}"):
            await js.purge_stream(stream, subject=subject)
            page = await js.consumers_info(stream)
            consumers = list(page)
            while len(page) == 256:  # the server lists consumers 256 at a time
                page = await js.consumers_info(stream, offset=len(consumers))
                consumers += page
            for info in consumers:
                doomed = info.config.filter_subject
                if doomed and pattern_covers(subject, doomed):
                    with contextlib.suppress(NotFoundError):
                        await js.delete_consumer(stream, info.name)


class NatsTransportWithoutDedup(NatsTransport):
    """``dedup=false``: no ``Nats-Msg-Id``, so the features say ``native_dedup=False``
    (only the mesh's idempotency store suppresses duplicates)."""

    features = replace(NatsTransport.features, native_dedup=False)


def create(url: str, options: Mapping[str, Any] | None = None) -> NatsTransport:
    """The registered factory: picks the class whose features match ``dedup``."""
    transport = NatsTransport if parse(url, options).dedup else NatsTransportWithoutDedup
    return transport(url, options)
