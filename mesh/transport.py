"""The contract every transport implements, and nothing more.

A transport moves `Event` objects between channels; everything else (retries,
dead-lettering, idempotency, routing filters, loop protection) lives in the
mesh above it, once, for every broker. The contract is deliberately small:

* ``connect()`` / ``close()``: ``close()`` is idempotent, flushes pending
  publishes, closes every subscription, and unsettled deliveries go back to the
  broker for redelivery.
* ``publish(channel, event)`` returns only when the broker confirmed the write
  (raises `PublishError` otherwise). ``publish_batch`` is the same for many.
* ``subscribe(pattern, handler, group=..., max_in_flight=...)``: ``group`` names
  a consumer group (each event goes to one member; the group receives events
  published after it was first created); ``group=None`` is a broadcast
  subscriber that gets every event while it is subscribed. The transport calls
  ``handler(delivery)`` with at most ``max_in_flight`` calls running at once and
  stops taking messages from the broker while full.
* A `Delivery` is settled with ``ack()`` or ``nack(delay)``. If the handler
  returns or raises without settling, the transport nacks it. A handler call
  cancelled by ``Subscription.close`` is not acked: the broker redelivers it.

Channel patterns use one neutral syntax, translated by each transport into the
broker's own (the translation is the transport's business, not the core's): tokens
separated by ``.``, ``*`` matches exactly one token, ``>`` (last only) matches
one or more trailing tokens. `TransportFeatures` says honestly what a transport
guarantees; the conformance suite (``mesh.testing.conformance``) skips what a
transport does not claim and checks the rest. `WireFormat` says what its messages
look like on the wire, for documents written from configuration alone (AsyncAPI).

Only `mesh.errors` exceptions may escape a transport's public methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from mesh.errors import ConfigError, DecodeError, MeshError
from mesh.event import Event

log = logging.getLogger("mesh.transport")


@dataclass(frozen=True, slots=True)
class TransportFeatures:
    """What a transport guarantees. Declare only what the broker really does.

    ``wildcard_patterns`` says the transport takes neutral patterns with ``*``/``>``
    (and translates them to the broker's syntax itself). ``retained_reads`` says
    `Transport.retain` and `Transport.read` work: a channel can be read without
    consuming it (the dead-letter tools need this).

    ``backlog`` says `Transport.backlog` answers: the broker tells how many messages a
    consumer group has not acked yet (the lag gauge of `mesh.metrics`).

    ``max_in_flight`` is the most deliveries one subscription can hold unsettled
    (RabbitMQ's prefetch is a 16-bit count), None for no limit: the mesh refuses a
    handler's ``max_in_flight`` or batch ``max_size`` above it at registration, with a
    `ConfigError`.
    """

    consumer_groups: bool = True
    broadcast: bool = True
    per_key_ordering: bool = False
    persistence: bool = False
    replay_for_new_groups: bool = False
    native_dedup: bool = False
    wildcard_patterns: bool = True
    retained_reads: bool = False
    max_in_flight: int | None = None
    backlog: bool = False


@dataclass(frozen=True, slots=True)
class WireFormat:
    """What a transport's messages look like on the wire, and what its broker is called.

    Each `Transport` class declares one (``wire``); `TransportRegistry.wire_format`
    finds it by URL scheme without building or connecting a transport, so tools that
    work from configuration alone (the AsyncAPI document of ``mesh docs``) describe
    the broker the app will use. Everything here is documentation the transport owns:
    the core never guesses it from a scheme.

    * ``title``: the broker for people (``"NATS JetStream"``).
    * ``protocol`` / ``protocol_version``: the AsyncAPI server ``protocol`` (None: the
      URL scheme) and ``protocolVersion`` (None: not stated).
    * ``header_prefix``: in CloudEvents binary content mode attribute ``x`` travels in
      header ``<header_prefix>x`` (``ce-`` for most bindings, ``ce_`` for Kafka).
    * ``binding``: which CloudEvents protocol binding the headers follow, in words
      (empty: only the prefix is stated).
    * ``description``: anything a reader of the server entry must know (None: nothing).
    * ``system``: the broker's name in OpenTelemetry's ``messaging.system`` attribute
      (``kafka``, ``rabbitmq``, ``nats``; empty: the transport's first URL scheme).
    """

    title: str = ""
    protocol: str | None = None
    protocol_version: str | None = None
    header_prefix: str = "ce-"
    binding: str = ""
    description: str | None = None
    system: str = ""


class Delivery(ABC):
    """One message handed to a subscriber, to be settled exactly once.

    ``event`` decodes lazily and raises `DecodeError` for a message that is not a
    CloudEvent; ``raw()`` then gives its headers and body for the dead-letter
    channel. ``redeliveries`` counts earlier deliveries of the same message.
    Settling twice is a no-op, so ack after nack does nothing.
    """

    __slots__ = ("_event", "_settled", "channel", "redeliveries")

    def __init__(self, channel: str, redeliveries: int = 0, event: Event | None = None) -> None:
        self.channel = channel
        self.redeliveries = redeliveries
        self._event = event
        self._settled = False

    @property
    def event(self) -> Event:
        if self._event is None:
            self._event = self._decode()
        return self._event

    def _decode(self) -> Event:
        raise DecodeError("this delivery carries no event")

    def raw(self) -> tuple[Mapping[str, str], bytes] | None:
        """Headers and body as received, for dead-lettering an undecodable message."""
        return None

    @property
    def position(self) -> str | None:
        """Where the broker keeps this message, stable across its redeliveries and unique
        among the channel's messages (Kafka ``topic/partition/offset``, a JetStream stream
        sequence), or None when the broker assigns no such identity. The mesh uses it to
        give each undecodable message its own dead-letter entry."""
        return None

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        """Confirm the message was handled; the broker will not deliver it again."""
        if not self._settled:
            self._settled = True
            await self._ack()

    async def nack(self, delay: float = 0.0) -> None:
        """Give the message back for redelivery after ``delay`` seconds."""
        if not self._settled:
            self._settled = True
            await self._nack(max(0.0, delay))

    async def in_progress(self) -> None:
        """Tell the broker the handler is still working (extends an ack deadline)."""

    async def _unhandled(self, cancelled: bool) -> None:
        """Give back a delivery its handler left unsettled (returned, raised, or was
        ``cancelled`` by a closing subscription). Default: ``nack()`` now; transports
        override it where the two cases differ on the broker."""
        if not self._settled:
            with contextlib.suppress(MeshError):
                await self.nack()

    @abstractmethod
    async def _ack(self) -> None: ...

    @abstractmethod
    async def _nack(self, delay: float) -> None: ...


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


async def deliver(handler: DeliveryHandler, delivery: Delivery) -> None:
    """Call ``handler`` under the contract every transport keeps: an exception is logged
    and the delivery redelivered; one left unsettled is redelivered; a call cancelled by
    ``Subscription.close`` is never acked (the cancellation propagates)."""
    try:
        await handler(delivery)
    except asyncio.CancelledError:
        await delivery._unhandled(cancelled=True)
        raise
    except Exception:
        log.exception("handler failed on channel %s; redelivering", delivery.channel)
    if not delivery.settled:
        await delivery._unhandled(cancelled=False)


#: Seconds a cancelled handler call gets to end before it is abandoned (see `cancel_calls`).
ABANDON_GRACE = 1.0


async def cancel_calls(
    tasks: Collection[asyncio.Task[Any]], handler: object, grace: float = ABANDON_GRACE
) -> list[asyncio.Task[Any]]:
    """Cancel running handler calls and wait at most ``grace`` seconds for them to end.

    A handler that swallows `CancelledError` would otherwise make ``close()`` (and so
    ``Mesh.stop``) wait for as long as it likes. The calls still running after the
    grace are abandoned with a log line naming the handler, and returned, so the
    caller can give their deliveries back; their later settling must not count."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=grace)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: deliver() already logged what failed
    if pending:
        name = getattr(handler, "name", None) or getattr(handler, "__qualname__", repr(handler))
        log.warning(
            "handler %s ignored cancellation for %gs after the shutdown timeout; "
            "abandoned %d call(s) (their deliveries are not acked: the broker "
            "redelivers them)",
            name,
            grace,
            len(pending),
        )
    return list(pending)


class Subscription(ABC):
    """A live subscription. ``close()`` is idempotent."""

    @abstractmethod
    async def close(self, timeout: float = 0.0) -> None:
        """Stop taking deliveries; let running handler calls finish within ``timeout``
        seconds, then cancel them (their deliveries are redelivered, not acked)."""


class Transport(ABC):
    """Base class of every transport. See the module docstring for the contract."""

    #: URL scheme(s) this transport serves, e.g. ``("nats",)``.
    schemes: ClassVar[tuple[str, ...]] = ()
    features: ClassVar[TransportFeatures] = TransportFeatures()
    #: What its messages look like on the wire (see `WireFormat`).
    wire: ClassVar[WireFormat] = WireFormat()

    @classmethod
    def wire_format(cls, url: str, options: Mapping[str, Any]) -> WireFormat:
        """The `WireFormat` of a transport built from ``url`` and ``options``, without
        building it. The default is ``wire``; override it where a scheme or an option
        changes what goes on the wire (TLS schemes, a choice of header convention).
        Raises `ConfigError` for options the transport would refuse."""
        return cls.wire

    @abstractmethod
    async def connect(self) -> None:
        """Connect to the broker; raises `ConnectError` with what to check."""

    @abstractmethod
    async def close(self) -> None:
        """Flush, close subscriptions (unsettled deliveries are redelivered) and
        disconnect. Idempotent; safe to call concurrently."""

    @abstractmethod
    async def publish(self, channel: str, event: Event) -> None:
        """Write ``event`` to ``channel``; return once the broker confirmed it."""

    async def publish_batch(self, items: Sequence[tuple[str, Event]]) -> None:
        """Publish many events; returns once all are confirmed. Transports that can
        pipeline confirmations override this."""
        for channel, event in items:
            await self.publish(channel, event)

    @abstractmethod
    async def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 1,
    ) -> Subscription:
        """Start calling ``handler`` for messages on channels matching ``pattern``
        (or any of several patterns)."""

    async def backlog(self, pattern: str | Sequence[str], group: str) -> dict[str, int] | None:
        """Messages the broker holds for consumer group ``group`` on ``pattern`` that are
        not acked yet (waiting plus delivered-unacked, as far as the broker tells), by
        channel; or by the group's queue name where the broker keeps one queue for all
        its channels. None: this transport cannot tell (the default). Read-only and
        cheap enough to call every few seconds (the lag gauge of `mesh.metrics`);
        raises `TransportError` when the broker cannot be asked. A transport that
        overrides it declares ``features.backlog``."""
        return None

    def reply_channel(self, instance_id: str) -> str:
        """The channel replies to instance ``instance_id`` are published on (and that the
        instance subscribes to, without a group). One channel per instance by default;
        a broker where per-instance channels are costly (Kafka topics) returns one
        shared channel instead; the mesh then ignores replies meant for others."""
        return f"mesh.reply.{instance_id}"

    async def ensure_group(self, pattern: str | Sequence[str], group: str) -> None:
        """Create consumer group ``group`` on ``pattern`` without consuming, so the broker
        retains what is published from now on (the mesh does this for the dead-letter
        group). The default subscribes and closes at once; transports override it when
        the broker can declare a group directly."""

        async def give_back(delivery: Delivery) -> None:
            await delivery.nack()

        sub = await self.subscribe(pattern, give_back, group=group)
        await sub.close()

    async def retain(self, channel: str) -> None:
        """Keep what is published to ``channel`` from now on, for `read` (the mesh calls
        this for its dead-letter channel at start). Where channels are logs already
        (JetStream streams, Kafka topics) this only checks the log exists; other brokers
        declare something that retains (a RabbitMQ stream queue). Idempotent; it never
        redeclares anything with other settings. Transports that cannot do this keep the
        default, which raises `ConfigError`."""
        raise ConfigError(
            f"{type(self).__name__} cannot retain channels for reading; "
            "the dead-letter tools need a transport with retained_reads"
        )

    def read(self, channel: str, *, idle: float = 1.0) -> AsyncIterator[Delivery]:
        """The messages retained on ``channel`` (see `retain`), oldest first, up to the
        last one published before the call, read without consuming: nothing is removed,
        hidden or reordered for any consumer or other reader. The deliveries yielded
        cannot be settled (ack and nack do nothing) and count no redeliveries. ``idle``
        bounds the wait for more on brokers that cannot tell where a channel ends.
        The default raises `ConfigError` (see `retain`)."""
        raise ConfigError(
            f"{type(self).__name__} cannot read channels without consuming; "
            "the dead-letter tools need a transport with retained_reads"
        )

    async def delete_channels(self, pattern: str) -> None:
        """Remove broker-side state for channels matching ``pattern`` (test clean-up).
        Transports without such state keep this no-op."""


# --- channel patterns -------------------------------------------------------------------


def validate_pattern(pattern: str) -> str:
    """Check a neutral channel pattern; return it or raise `ConfigError`."""
    tokens = pattern.split(".")
    if not pattern or any(not token for token in tokens):
        raise ConfigError(
            f"channel pattern {pattern!r} has an empty token; "
            "use names like 'orders.created' or 'orders.*'"
        )
    for index, token in enumerate(tokens):
        if token == ">" and index != len(tokens) - 1:
            raise ConfigError(f"channel pattern {pattern!r}: '>' may only be the last token")
        if "#" in token:  # AMQP's "zero or more" would otherwise silently match nothing
            raise ConfigError(
                f"channel pattern {pattern!r}: '#' is not a mesh wildcard; use "
                "'>' for one or more trailing tokens ('orders.>') or '*' for "
                "exactly one ('orders.*')"
            )
        if token not in ("*", ">") and ("*" in token or ">" in token):
            raise ConfigError(f"channel pattern {pattern!r}: wildcards must be whole tokens")
    return pattern


def pattern_list(pattern: str | Sequence[str]) -> list[str]:
    """Normalise the ``pattern`` argument of ``subscribe`` to a validated list."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    if not patterns:
        raise ConfigError("subscribe() needs at least one channel pattern")
    return [validate_pattern(p) for p in patterns]


def is_wildcard(pattern: str) -> bool:
    """True when ``pattern`` contains ``*`` or ``>`` tokens."""
    return "*" in pattern or ">" in pattern


@lru_cache(maxsize=4096)
def pattern_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a channel matches a neutral ``pattern``."""
    validate_pattern(pattern)
    if not is_wildcard(pattern):
        return pattern.__eq__
    parts = []
    for token in pattern.split("."):
        parts.append(r"[^.]+" if token == "*" else r".+" if token == ">" else re.escape(token))
    regex = re.compile(r"\.".join(parts))
    return lambda channel: regex.fullmatch(channel) is not None


def pattern_covers(outer: str, inner: str) -> bool:
    """True when every channel that pattern ``inner`` matches also matches pattern
    ``outer`` (both neutral: ``*`` one token, ``>`` last and one or more tokens; a plain
    channel is a pattern matching itself). For clean-up that must find the broker
    objects (consumers, queues, streams) whose filter lies within a pattern: ``orders.>``
    covers ``orders.*`` and ``orders.eu.>``, ``orders.*`` does not cover ``orders.>``.

    Compares tokens, so it also serves a broker whose filters are the neutral pattern
    under a prefix of plain tokens (``mesh.orders.>`` covers ``mesh.orders.*``)."""
    outs, ins = outer.split("."), inner.split(".")
    for index, token in enumerate(outs):
        if token == ">":
            return len(ins) > index
        if index >= len(ins) or ins[index] == ">" or token not in ("*", ins[index]):
            return False
    return len(ins) == len(outs)


# --- URLs and the transport registry ------------------------------------------------------


_SECRET_PARAM = re.compile(r"(?i)(pass|secret|token|key|cred)")


def redact_url(url: str) -> str:
    """``url`` safe for logs and errors: the password is replaced by ``***``, user info
    without a password is masked whole (it may be a token: ``nats://TOKEN@host``), and
    so are query values whose name looks secret (``?password=``, ``?token=``). Everything
    before the last ``@`` counts as user info, so an unencoded ``/``, ``?`` or ``@`` in a
    password is masked too (at worst more is masked than needed)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparseable url>" if "@" in url else redact_url("x://" + url)[4:]
    userinfo, at, rest = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        scheme += sep + (
            f"{user}:***@" if colon and user and "/" not in user and "?" not in user else "***@"
        )
        sep = ""
    rest, qmark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if query:
        query = "&".join(
            f"{name}=***" if _SECRET_PARAM.search(name) and value else part
            for part in query.split("&")
            for name, _, value in [part.partition("=")]
        )
    return f"{scheme}{sep}{netloc}{slash}{path}{qmark}{query}"


TransportFactory = Callable[[str, Mapping[str, Any]], Transport]

#: The broker plugins that ship with event-mesh (in its repository's plugins/ folder, not
#: published to a package index yet): URL scheme -> the directory to ``pip install``.
BUNDLED_PLUGINS = {
    "kafka": "plugins/kafka",
    "nats": "plugins/nats",
    "amqp": "plugins/rabbitmq",
    "amqps": "plugins/rabbitmq",
}


def install_hint(schemes: Collection[str]) -> str:
    """How to install the bundled plugins that serve none of ``schemes`` yet ('' when
    every one is installed)."""
    missing = sorted({d for scheme, d in BUNDLED_PLUGINS.items() if scheme not in schemes})
    if not missing:
        return ""
    return "from a clone of the event-mesh repository: pip install " + " ".join(
        f"./{d}" for d in missing
    )


class TransportRegistry:
    """Maps URL schemes to transport factories; handed to ``mesh_register_transports``.

    A factory is called as ``factory(url, options)`` and returns an unconnected
    `Transport`. Registering the same scheme twice is an error, so two plugins
    cannot silently shadow each other. ``transport`` is the `Transport` class the
    factory builds (inferred when the factory is that class): its `WireFormat` is
    what `wire_format` reports for the scheme.
    """

    def __init__(self) -> None:
        self._factories: dict[str, tuple[TransportFactory, str, type[Transport] | None]] = {}

    def register(
        self,
        scheme: str,
        factory: TransportFactory,
        *,
        description: str = "",
        transport: type[Transport] | None = None,
    ) -> None:
        scheme = scheme.lower()
        if scheme in self._factories:
            raise ConfigError(
                f"transport scheme {scheme!r} is registered twice; "
                "uninstall one of the plugins that provide it"
            )
        if transport is None and isinstance(factory, type) and issubclass(factory, Transport):
            transport = factory
        if transport is not None and not (
            isinstance(transport, type) and issubclass(transport, Transport)
        ):
            raise ConfigError(
                f"transport scheme {scheme!r}: transport= must be the Transport subclass "
                f"the factory builds, not {transport!r}"
            )
        self._factories[scheme] = (factory, description, transport)

    @property
    def schemes(self) -> list[str]:
        return sorted(self._factories)

    def describe(self) -> dict[str, str]:
        return {scheme: entry[1] for scheme, entry in sorted(self._factories.items())}

    def create(self, url: str, options: Mapping[str, Any] | None = None) -> Transport:
        """Build the transport for ``url``; unknown schemes raise `ConfigError`
        listing the installed ones and suggesting the nearest."""
        return self._entry(url)[0](url, options or {})

    def wire_format(self, url: str, options: Mapping[str, Any] | None = None) -> WireFormat:
        """What the transport for ``url`` would put on the wire (see `WireFormat`),
        without building or connecting it; unknown schemes raise `ConfigError` like
        `create`. A scheme registered without a `Transport` class gets the defaults."""
        transport = self._entry(url)[2]
        if transport is None:
            return WireFormat()
        return transport.wire_format(url, options or {})

    def _entry(self, url: str) -> tuple[TransportFactory, str, type[Transport] | None]:
        scheme, sep, _ = url.partition("://")
        if not sep or not scheme:
            raise ConfigError(
                f"transport URL {redact_url(url)!r} has no scheme; "
                f"write it as scheme://..., installed: {', '.join(self.schemes)}"
            )
        entry = self._factories.get(scheme.lower())
        if entry is None:
            import difflib

            near = difflib.get_close_matches(scheme.lower(), self.schemes, n=1, cutoff=0.4)
            hint = f" Did you mean '{near[0]}://'?" if near else ""
            plugin = BUNDLED_PLUGINS.get(scheme.lower())
            install = (
                (
                    f" {scheme.lower()}:// is served by a plugin: from a clone of the "
                    f"event-mesh repository, pip install ./{plugin}"
                )
                if plugin
                else ""
            )
            raise ConfigError(
                f"unknown transport scheme {scheme!r}.{hint} Installed schemes: "
                f"{', '.join(s + '://' for s in self.schemes)}.{install}"
            )
        return entry
