"""Delivery semantics, once for every transport: retry, dead-letter, hop limit, dedup.

`Consumer.__call__` is the handler a transport calls for each delivery of one
subscription. The order of checks is the contract documented in
docs/delivery-semantics.md:

1. Undecodable message -> dead-letter (reason: the decode error), ack.
2. A dead-letter copy reaching a normal handler, or a mesh-internal channel (``mesh.*``:
   registry, replies) reaching a wildcard subscription that does not name ``mesh.`` ->
   ack (not counted). Residual filter rejects the event -> ack, counted in
   ``stats.filtered``.
3. ``meshhops`` past the hop limit -> dead-letter, publish ``mesh.loop.detected``, ack.
4. Data violates the type's contract -> dead-letter with the errors (never retried).
5. Already handled by this group (idempotency store) -> ack, ``stats.duplicates``.
6. Run the handler. Success -> record in the store, ack. ``RetryLater`` -> nack with
   its delay (not a failed attempt). ``DeadLetter``/``DataValidationError`` ->
   dead-letter now. Other exceptions -> retry with backoff up to ``max_attempts``,
   then dead-letter. Dead-lettering acks the original only after the dead-letter
   copy was confirmed; if that publish fails the original is nacked, never lost.
7. Cancelled (shutdown) -> neither acked nor dead-lettered: the broker redelivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mesh.config import RetryConfig
from mesh.context import ID_NAMESPACE, Context, reset_current_event, set_current_event
from mesh.errors import (
    ContractViolation,
    DataValidationError,
    DeadLetter,
    DecodeError,
    HopLimitExceeded,
    MeshError,
    RetryLater,
)
from mesh.event import Event
from mesh.stores import SyncIdempotencyStore
from mesh.transport import Delivery

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.contracts import ContractRegistry
    from mesh.stores import IdempotencyStore

log = logging.getLogger("mesh.delivery")

#: Extensions a dead-letter copy carries (CloudEvents names: lower-case, <= 20 chars).
DL_ERROR = "meshdlerror"        # exception type
DL_REASON = "meshdlreason"      # exception message
DL_ATTEMPTS = "meshdlattempts"  # handler attempts made
DL_GROUP = "meshdlgroup"        # consumer group ('' for broadcast)
DL_CHANNEL = "meshdlchannel"    # channel the event was consumed from
DL_ID = "meshdlid"              # the original event id (the copy gets a fresh id)
DL_EXTENSIONS = (DL_ERROR, DL_REASON, DL_ATTEMPTS, DL_GROUP, DL_CHANNEL, DL_ID)
UNDECODABLE_TYPE = "mesh.undecodable"
LOOP_DETECTED_TYPE = "mesh.loop.detected"
_MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``initial * multiplier**(n-1)``, capped, +/- jitter."""

    max_attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        return cls(**config.model_dump())

    def backoff(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure."""
        base = min(self.max_backoff,
                   self.initial_backoff * self.multiplier ** max(0, failed_attempts - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass(slots=True)
class ConsumerStats:
    """Counters per subscription, for tests and metrics."""

    handled: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    duplicates: int = 0
    retry_later: int = 0
    errors: list[str] = field(default_factory=list)


def dead_letter_event(event: Event, error: BaseException, *, attempts: int, group: str | None,
                      channel: str) -> Event:
    """The copy of ``event`` that goes to the dead-letter channel.

    It keeps type, source and data, records why in ``meshdl*`` extensions, and
    gets a fresh id derived from (group, original id) so re-dead-lettering the same
    delivery yields the same id (brokers with native dedup keep one copy) while a
    broker's duplicate window never confuses it with the original.
    """
    reason = str(error) or type(error).__name__
    return event.replace(
        id=str(uuid.uuid5(ID_NAMESPACE, f"dl\x1f{group or ''}\x1f{event.source}\x1f{event.id}")),
        **{DL_ERROR: type(error).__name__, DL_REASON: reason[:_MAX_REASON],
           DL_ATTEMPTS: attempts, DL_GROUP: group or "", DL_CHANNEL: channel, DL_ID: event.id})


def undecodable_event(delivery: Delivery, error: DecodeError, *, source: str,
                      group: str | None) -> Event:
    """Wrap a message that is not a CloudEvent so it can travel to the dead-letter channel."""
    raw = delivery.raw()
    headers, body = raw if raw is not None else ({}, b"")
    digest = hashlib.sha256(body + delivery.channel.encode() + (group or "").encode()).hexdigest()
    return Event(
        UNDECODABLE_TYPE, source, bytes(body), id=str(uuid.uuid5(ID_NAMESPACE, digest)),
        extensions={DL_ERROR: "DecodeError", DL_REASON: str(error)[:_MAX_REASON],
                    DL_ATTEMPTS: 0, DL_GROUP: group or "", DL_CHANNEL: delivery.channel,
                    "meshdlheaders": json.dumps(dict(headers), default=str)[:_MAX_REASON]})


Invoker = Callable[[Event, Context | None], Awaitable[Any]]


class Consumer:
    """Runs one subscription's handler under the mesh's delivery semantics.

    Everything a delivery needs that does not change per event (the store's sync
    methods, the contract lookup, how to call the handler) is resolved here, once, so
    that a delivery costs one coroutine of its own plus the handler's: the checks, the
    attempts and the idempotency store (when it offers ``seen_nowait``/``mark_nowait``,
    as the in-memory one does) run inline.
    """

    def __init__(self, mesh: Mesh, *, invoke: Invoker, scope: str, group: str | None,
                 wants_ctx: bool = True,
                 predicate: Callable[[Event], bool] | None, policy: RetryPolicy,
                 store: IdempotencyStore | None, accepts_dead_letters: bool,
                 contracts: ContractRegistry | None = None,
                 patterns: Sequence[str] = (),
                 call_event: Callable[[Event], Awaitable[Any]] | None = None) -> None:
        self.mesh = mesh
        self.invoke = invoke
        self.wants_ctx = wants_ctx
        self.scope = scope
        self.group = group
        self.predicate = predicate
        self.policy = policy
        self.store = store
        self.accepts_dead_letters = accepts_dead_letters
        self.contracts = contracts
        # the mesh's own channels (mesh.*) reach only subscriptions that name them
        self._skip_internal = bool(patterns) and not any(p.startswith("mesh.") for p in patterns)
        self.stats = ConsumerStats()
        self._dlq_channel = mesh.config.dead_letter_channel
        self._hop_limit = mesh.config.hop_limit
        # resolved once, not per delivery
        self._call_event = call_event   # the handler itself when it takes just the event
        self._contract_for = contracts.get if contracts is not None \
            and not accepts_dead_letters else None
        self._check_hops = not accepts_dead_letters
        self._skip_channel: dict[str, bool] = {}
        self._sync = store if isinstance(store, SyncIdempotencyStore) else None

    async def __call__(self, delivery: Delivery) -> None:
        try:
            event = delivery.event
        except DecodeError as exc:
            log.warning("undecodable message on %s: %s", delivery.channel, exc)
            await self._dead_letter(delivery, undecodable_event(
                delivery, exc, source=self.mesh.source, group=self.group))
            return
        channel = delivery.channel
        skip = self._skip_channel.get(channel)
        if skip is None:
            skip = self._skips(channel)
        if skip:
            await delivery.ack()  # dead-letter copies only reach dead-letter handlers
            return
        if self.predicate is not None and not self.predicate(event):
            self.stats.filtered += 1
            await delivery.ack()
            return
        if self._check_hops and event.extensions and event.meshhops > self._hop_limit:
            await self._hop_limit_exceeded(delivery, event)
            return
        if self._contract_for is not None:
            contract = self._contract_for(event.type)
            if contract is not None:
                try:
                    contract.check(event)
                except ContractViolation as exc:
                    await self._dead_letter(delivery, dead_letter_event(
                        event, exc, attempts=0, group=self.group, channel=channel))
                    return
        key = None
        store = self.store
        if store is not None:
            key = f"{self.scope}\x1f{event.source}\x1f{event.id}"
            if self._sync.seen_nowait(key) if self._sync is not None else await store.seen(key):
                self.stats.duplicates += 1
                await delivery.ack()
                return
        attempt = 0
        while True:  # the attempts, inline (no coroutine per attempt)
            attempt += 1
            token = set_current_event(event)
            try:
                if self._call_event is not None:
                    await self._call_event(event)
                else:
                    await self.invoke(event, Context(
                        self.mesh, event, channel=channel, group=self.group, scope=self.scope,
                        attempt=attempt, redeliveries=delivery.redeliveries,
                        delivery=delivery) if self.wants_ctx else None)
            except RetryLater as exc:
                self.stats.retry_later += 1
                await delivery.nack(exc.after)
                return
            except (DeadLetter, DataValidationError) as exc:
                await self._dead_letter(delivery, dead_letter_event(
                    event, exc, attempts=attempt, group=self.group, channel=channel))
                return
            except Exception as exc:
                self.stats.failed_attempts += 1
                if attempt >= self.policy.max_attempts:
                    log.error("handler %s failed %d times on %s (%s); dead-lettering",
                              self.scope, attempt, event.id, type(exc).__name__)
                    await self._dead_letter(delivery, dead_letter_event(
                        event, exc, attempts=attempt, group=self.group, channel=channel))
                    return
                log.info("handler %s failed on %s (attempt %d/%d): %s: %s", self.scope,
                         event.id, attempt, self.policy.max_attempts, type(exc).__name__, exc)
                await asyncio.sleep(self.policy.backoff(attempt))
                continue
            finally:
                reset_current_event(token)
            # success: recorded before the ack, so a redelivery racing the ack is a duplicate
            if key is not None and store is not None:
                if self._sync is not None:
                    self._sync.mark_nowait(key)
                else:
                    await store.mark(key)
            self.stats.handled += 1
            await delivery.ack()
            return

    def _skips(self, channel: str) -> bool:
        """Whether deliveries from ``channel`` are acked unseen: a dead-letter copy
        reaching a normal handler (or the reverse), or a mesh-internal channel reaching
        a subscription that does not name ``mesh.``. Remembered per channel."""
        skip = (channel == self._dlq_channel) != self.accepts_dead_letters or \
            (self._skip_internal and channel.startswith("mesh."))
        if len(self._skip_channel) < 4096:   # bounded: wildcard subscriptions see any name
            self._skip_channel[channel] = skip
        return skip

    async def _dead_letter(self, delivery: Delivery, copy: Event) -> None:
        try:  # straight to the transport: a copy of a contract violation must still get there
            await self.mesh.transport.publish(self._dlq_channel, copy)
        except MeshError as exc:
            log.error("could not dead-letter %s (%s); redelivering instead", copy.id, exc)
            await delivery.nack(self.policy.backoff(1))
            return
        self.stats.dead_lettered += 1
        await delivery.ack()

    async def _hop_limit_exceeded(self, delivery: Delivery, event: Event) -> None:
        error = HopLimitExceeded(
            f"event {event.id} of type {event.type} has meshhops={event.meshhops}, past the "
            f"hop limit {self._hop_limit}: handlers are probably emitting in a loop")
        log.warning("%s", error)
        alert = Event(LOOP_DETECTED_TYPE, self.mesh.source, {
            "event_id": event.id, "type": event.type, "source": event.source,
            "hops": event.meshhops, "limit": self._hop_limit, "group": self.group,
            "channel": delivery.channel},
            id=str(uuid.uuid5(ID_NAMESPACE, f"loop\x1f{self.scope}\x1f{event.id}")),
            extensions={"correlationid": event.correlationid or event.id,
                        "causationid": event.id})
        try:
            await self.mesh.publish(alert)
        except MeshError as exc:
            log.error("could not publish %s: %s", LOOP_DETECTED_TYPE, exc)
        await self._dead_letter(delivery, dead_letter_event(
            event, error, attempts=0, group=self.group, channel=delivery.channel))
