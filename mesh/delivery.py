"""Delivery semantics, once for every transport: retry, dead-letter, hop limit, dedup.

`Consumer.__call__` is the handler a transport calls for each delivery of one
subscription. The order of checks is the contract documented in
docs/delivery-semantics.md:

1. Undecodable message -> dead-letter (reason: the decode error), ack. Each such
   message gets its own entry (its id follows headers, body and broker position).
2. A dead-letter copy reaching a normal handler, or a mesh-internal channel (``mesh.*``:
   registry, replies) reaching a wildcard subscription that does not name ``mesh.`` ->
   ack (not counted); so is a replayed event meant for another group (``meshreplayto``).
3. Residual filter rejects the event -> ack, counted in ``stats.filtered``.
4. ``meshhops`` past the hop limit -> dead-letter, publish ``mesh.loop.detected``, ack.
5. Data violates the type's contract -> dead-letter with the errors (never retried).
6. Already handled by this group (idempotency store) -> ack, ``stats.duplicates``.
7. Delivered ``max_deliveries`` times already (the broker's count: a handler that kills
   its process never reaches ``max_attempts``) -> dead-letter unrun, ack.
8. Run the handler. Success -> record in the store, ack. ``RetryLater`` -> nack with
   its delay (not a failed attempt, but a delivery). ``DeadLetter``/``DataValidationError``
   -> dead-letter now. Other exceptions -> retry with backoff up to ``max_attempts``,
   then dead-letter. Dead-lettering acks the original only after the dead-letter
   copy was confirmed; a copy too large for the broker is written reduced (attributes,
   reason, size and SHA-256 of the body); if the write fails the original is nacked
   with a backoff that grows with its deliveries, never lost, never in a tight loop.
9. Cancelled (shutdown) -> neither acked nor dead-lettered: the broker redelivers.

A dead-letter handler (``on_dead_letter``) never dead-letters: whatever it cannot handle
(failure after its retries, an undecodable copy, the delivery limit) is logged, counted
in ``stats.dropped`` and acked; the copy stays in the channel's retained log
(``mesh dlq list``).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mesh.config import RetryConfig
from mesh.context import ID_NAMESPACE, Context, reset_current_event, set_current_event
from mesh.errors import (
    ConfigError,
    ContractViolation,
    DataValidationError,
    DeadLetter,
    DecodeError,
    DeliveryLimitExceeded,
    HopLimitExceeded,
    MeshError,
    MessageTooLarge,
    RetryLater,
)
from mesh.dlq import (  # the dead-letter vocabulary lives with DeadLetters (mesh.dlq)
    REMOVED_TYPE,
    REPLAY_TO,
    dead_letter_event,
    reason_of,
    reduced_copy,
    undecodable_event,
)
from mesh.event import Event
from mesh.middleware import Attempt, Outcome
from mesh.stores import SyncIdempotencyStore
from mesh.transport import Delivery

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.contracts import ContractRegistry
    from mesh.stores import IdempotencyStore

log = logging.getLogger("mesh.delivery")

LOOP_DETECTED_TYPE = "mesh.loop.detected"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """One handler's retry rule: exponential backoff with jitter between attempts
    (``initial * multiplier**(n-1)``, capped, +/- jitter), up to ``max_attempts``, and
    the redelivery cap ``max_deliveries`` (the broker's count; 0: no limit).

    The mesh's default comes from ``config.retry``; a handler given ``retry=`` (on
    ``mesh.on``, ``mesh.subscribe``, ``mesh.capability``) gets its own, see `resolve`.
    `gives_up` is the rule itself: whatever needs to know whether a failure is final
    (the consumer, a capability deciding to send its caller an error reply) asks it.
    The fields are validated as `RetryConfig` validates them (`ConfigError` naming
    the field), so a policy built in code cannot hold what a config file could not.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_deliveries: int = 10

    def __post_init__(self) -> None:
        _checked({name: getattr(self, name) for name in RETRY_FIELDS}, "RetryPolicy")

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        return cls(**config.model_dump())

    def resolve(
        self,
        retry: RetryPolicy | Mapping[str, Any] | None,
        *,
        max_deliveries: int | None = None,
        where: str = "retry",
    ) -> RetryPolicy:
        """The policy of one handler, with this one (the mesh's) as the default.

        ``retry`` is a complete `RetryPolicy`, a mapping of `RetryConfig` fields that
        override this policy's (``{"max_attempts": 5}`` keeps the rest), or None.
        ``max_deliveries`` overrides the redelivery cap of either. ``where`` names the
        call in errors: an unknown field is a `ConfigError` naming it and listing the
        known ones; a bad value names the field and its bounds."""
        if retry is None:
            policy = self
        elif isinstance(retry, RetryPolicy):
            policy = retry
        elif isinstance(retry, Mapping):
            unknown = [str(k) for k in retry if k not in RETRY_FIELDS]
            if unknown:
                near = difflib.get_close_matches(unknown[0], RETRY_FIELDS, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(
                    f"{where}: unknown retry field {unknown[0]!r}{hint}; known fields: "
                    f"{', '.join(RETRY_FIELDS)}"
                )
            fields = {name: getattr(self, name) for name in RETRY_FIELDS}
            policy = RetryPolicy(**_checked({**fields, **retry}, f"{where}: retry"))
        else:
            raise ConfigError(
                f"{where}: retry must be a mesh.RetryPolicy or a dict of its fields "
                f"({', '.join(RETRY_FIELDS)}), got {type(retry).__name__}"
            )
        if max_deliveries is not None:
            if isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int):
                raise ConfigError(
                    f"{where}: max_deliveries must be an integer (deliveries before an "
                    f"event is dead-lettered unrun; 0: no limit), got {max_deliveries!r}"
                )
            if max_deliveries < 0:
                raise ConfigError(
                    f"{where}: max_deliveries must be >= 0 (0: no limit), got {max_deliveries}"
                )
            policy = replace(policy, max_deliveries=max_deliveries)
        return policy

    def gives_up(self, error: BaseException, attempt: int) -> bool:
        """Whether the handler's ``attempt``-th attempt failing with ``error`` is its last
        (the event is dead-lettered now): at once for `DeadLetter` and
        `DataValidationError`, else after ``max_attempts`` attempts. `RetryLater` never
        is: the event is redelivered later, not counted as an attempt."""
        if isinstance(error, RetryLater):
            return False
        return isinstance(error, DeadLetter | DataValidationError) or attempt >= self.max_attempts

    def backoff(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure."""
        base = min(
            self.max_backoff, self.initial_backoff * self.multiplier ** max(0, failed_attempts - 1)
        )
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


#: The fields of `RetryPolicy` and `RetryConfig`, in declaration order.
RETRY_FIELDS: tuple[str, ...] = tuple(RetryConfig.model_fields)


def _checked(fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``fields`` validated by `RetryConfig`'s rules, or `ConfigError` naming the field."""
    try:
        return RetryConfig.model_validate(dict(fields)).model_dump()
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{where}.{name}: {error['msg']} (got {error.get('input')!r})") from None


@dataclass(slots=True)
class ConsumerStats:
    """Counters per subscription, for tests and metrics."""

    handled: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    duplicates: int = 0
    retry_later: int = 0
    dropped: int = 0  # what a dead-letter handler could not handle (logged, acked)
    errors: list[str] = field(default_factory=list)


Invoker = Callable[[Event, Context | None], Awaitable[Any]]


class Consumer:
    """Runs one subscription's handler under the mesh's delivery semantics.

    Everything a delivery needs that does not change per event (the store's sync
    methods, the contract lookup, how to call the handler) is resolved here, once, so
    that a delivery costs one coroutine of its own plus the handler's: the checks, the
    attempts and the idempotency store (when it offers ``seen_nowait``/``mark_nowait``,
    as the in-memory one does) run inline. ``name`` is the handler's name, for log lines
    of the transport (a handler that ignores cancellation, say).
    """

    def __init__(
        self,
        mesh: Mesh,
        *,
        invoke: Invoker,
        scope: str,
        group: str | None,
        wants_ctx: bool = True,
        predicate: Callable[[Event], bool] | None,
        policy: RetryPolicy,
        store: IdempotencyStore | None,
        accepts_dead_letters: bool,
        contracts: ContractRegistry | None = None,
        patterns: Sequence[str] = (),
        call_event: Callable[[Event], Awaitable[Any]] | None = None,
        name: str = "",
    ) -> None:
        self.mesh = mesh
        self.invoke = invoke
        self.wants_ctx = wants_ctx
        self.scope = scope
        self.name = name or scope
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
        self._max_deliveries = policy.max_deliveries or 0
        self._replay_target = group or ""
        # resolved once, not per delivery
        self._call_event = call_event  # the handler itself when it takes just the event
        self._contract_for = (
            contracts.get if contracts is not None and not accepts_dead_letters else None
        )
        self._check_hops = not accepts_dead_letters
        self._skip_channel: dict[str, bool] = {}
        self._sync = store if isinstance(store, SyncIdempotencyStore) else None
        #: what a failure outside an attempt leads to for this handler
        self._failed = Outcome.DROPPED if accepts_dead_letters else Outcome.DEAD_LETTERED
        #: (the mesh's composed handle hook, this consumer's chain) once a middleware has it
        self._wrapped: tuple[object, Callable[[Attempt], Awaitable[None]]] | None = None

    def __repr__(self) -> str:
        return f"<handler {self.name}>"

    async def __call__(self, delivery: Delivery) -> None:
        try:
            event = delivery.event
        except DecodeError as exc:
            log.warning("undecodable message on %s: %s", delivery.channel, exc)
            self._tell(
                delivery,
                None,
                Outcome.DROPPED if self.accepts_dead_letters else Outcome.DEAD_LETTERED,
                exc,
            )
            if self.accepts_dead_letters:
                await self._drop(delivery, f"an undecodable message ({exc})")
                return
            await self._dead_letter(
                delivery,
                undecodable_event(delivery, exc, source=self.mesh.source, group=self.group),
            )
            return
        channel = delivery.channel
        skip = self._skip_channel.get(channel)
        if skip is None:
            skip = self._skips(channel)
        if skip or (self.accepts_dead_letters and event.type == REMOVED_TYPE):
            await delivery.ack()  # dead-letter copies only reach dead-letter handlers
            return
        ext = event.extensions
        if ext and REPLAY_TO in ext and ext[REPLAY_TO] != self._replay_target:
            await delivery.ack()  # a replay meant for another group
            return
        if self.predicate is not None and not self.predicate(event):
            self.stats.filtered += 1
            self._tell(delivery, event, Outcome.FILTERED)
            await delivery.ack()
            return
        if self._check_hops and ext and event.meshhops > self._hop_limit:
            await self._hop_limit_exceeded(delivery, event)
            return
        if self._contract_for is not None:
            contract = self._contract_for(event.type)
            if contract is not None:
                try:
                    contract.check(event)
                except ContractViolation as exc:
                    self._tell(delivery, event, self._failed, exc)
                    await self._fail(delivery, event, exc, attempts=0)
                    return
        key = None
        store = self.store
        if store is not None:
            key = f"{self.scope}\x1f{event.source}\x1f{event.id}"
            if self._sync.seen_nowait(key) if self._sync is not None else await store.seen(key):
                self.stats.duplicates += 1
                self._tell(delivery, event, Outcome.DUPLICATE)
                await delivery.ack()
                return
        if self._max_deliveries and delivery.redeliveries >= self._max_deliveries:
            await self._delivery_limit(delivery, event)
            return
        if self.mesh._chain.handle is not None:
            await self._chained(delivery, event, key)
            return
        attempt = 0
        while True:  # the attempts, inline (no coroutine per attempt)
            attempt += 1
            token = set_current_event((event, self.name, self.group))
            try:
                if self._call_event is not None:
                    await self._call_event(event)
                else:
                    await self.invoke(
                        event,
                        Context(
                            self.mesh,
                            event,
                            channel=channel,
                            group=self.group,
                            scope=self.scope,
                            attempt=attempt,
                            redeliveries=delivery.redeliveries,
                            delivery=delivery,
                        )
                        if self.wants_ctx
                        else None,
                    )
            except Exception as exc:
                outcome = self._judge(exc, attempt, event)
                if outcome is Outcome.RETRIED:
                    await asyncio.sleep(self.policy.backoff(attempt))
                    continue
                await self._conclude(delivery, event, outcome, exc, attempt)
                return
            finally:
                reset_current_event(token)
            # success, inline (no coroutine of its own on the hot path; `_handled` is the
            # same for the chained path): recorded before the ack, so a redelivery racing
            # the ack is a duplicate
            if key is not None and store is not None:
                if self._sync is not None:
                    self._sync.mark_nowait(key)
                else:
                    await store.mark(key)
            self.stats.handled += 1
            await delivery.ack()
            return

    async def _handled(self, delivery: Delivery, key: str | None) -> None:
        """Success: recorded before the ack, so a redelivery racing the ack is a duplicate."""
        if key is not None and self.store is not None:
            if self._sync is not None:
                self._sync.mark_nowait(key)
            else:
                await self.store.mark(key)
        self.stats.handled += 1
        await delivery.ack()

    def _judge(self, error: Exception, attempt: int, event: Event) -> Outcome:
        """What a failed attempt leads to, under the retry policy (counted and logged)."""
        if isinstance(error, RetryLater):
            return Outcome.RETRY_LATER
        if isinstance(error, DeadLetter | DataValidationError):
            return Outcome.DROPPED if self.accepts_dead_letters else Outcome.DEAD_LETTERED
        self.stats.failed_attempts += 1
        if self.policy.gives_up(error, attempt):
            log.error(
                "handler %s failed %d times on %s (%s)",
                self.name,
                attempt,
                event.id,
                type(error).__name__,
            )
            return Outcome.DROPPED if self.accepts_dead_letters else Outcome.DEAD_LETTERED
        log.info(
            "handler %s failed on %s (attempt %d/%d): %s: %s",
            self.name,
            event.id,
            attempt,
            self.policy.max_attempts,
            type(error).__name__,
            error,
        )
        return Outcome.RETRIED

    async def _conclude(
        self,
        delivery: Delivery,
        event: Event,
        outcome: Outcome,
        error: BaseException | None,
        attempt: int,
    ) -> None:
        """Settle a delivery whose last attempt failed (``outcome`` from `_judge`)."""
        if outcome is Outcome.RETRY_LATER:
            self.stats.retry_later += 1
            await delivery.nack(error.after if isinstance(error, RetryLater) else 0.0)
        else:
            await self._fail(delivery, event, error or RuntimeError("failed"), attempts=attempt)

    async def _chained(self, delivery: Delivery, event: Event, key: str | None) -> None:
        """The attempts through the middleware chain (see `mesh.middleware`): the same
        decisions as the inline loop, with an `Attempt` each middleware can look at."""
        wrap = self.mesh._chain.handle
        if self._wrapped is None or self._wrapped[0] is not wrap:
            assert wrap is not None
            self._wrapped = (wrap, wrap(self._attempt, self._absorb))
        call = self._wrapped[1]
        number = 0
        while True:
            number += 1
            attempt = Attempt(
                event,
                delivery.channel,
                self.group,
                self.name,
                number,
                delivery.redeliveries,
                delivery,
            )
            token = set_current_event((event, self.name, self.group))
            try:
                await call(attempt)
            except Exception as exc:
                self._absorb(attempt, exc)
            finally:
                reset_current_event(token)
            if attempt.outcome is None:  # a middleware returned without calling call_next
                self._record(
                    attempt,
                    RuntimeError(
                        "a middleware's handle() returned without calling call_next (and "
                        "without raising): the handler never ran; call it, or raise "
                        "RetryLater/DeadLetter to decide instead"
                    ),
                )
            outcome = attempt.outcome
            if outcome is Outcome.RETRIED:
                await asyncio.sleep(self.policy.backoff(number))
                continue
            if outcome is Outcome.ACKED:
                await self._handled(delivery, key)
            else:
                assert outcome is not None  # _record always decides one
                await self._conclude(delivery, event, outcome, attempt.error, number)
            return

    def _absorb(self, attempt: Attempt, error: Exception) -> None:
        """An exception a middleware raised: before the outcome was decided it is the
        attempt's outcome, as if the handler raised it; after, it is logged."""
        if attempt.outcome is None:
            self._record(attempt, error)
        else:
            log.error(
                "middleware failed on %s after its outcome (%s) was decided: %s: %s",
                attempt.event.id if attempt.event is not None else "?",
                attempt.outcome,
                type(error).__name__,
                error,
            )

    async def _attempt(self, attempt: Attempt) -> None:
        """The innermost link of the chain: run the handler once and record the outcome."""
        event = attempt.event
        assert event is not None
        try:
            if self._call_event is not None:
                await self._call_event(event)
            else:
                await self.invoke(
                    event,
                    Context(
                        self.mesh,
                        event,
                        channel=attempt.channel,
                        group=self.group,
                        scope=self.scope,
                        attempt=attempt.number,
                        redeliveries=attempt.redeliveries,
                        delivery=attempt.delivery,
                    )
                    if self.wants_ctx
                    else None,
                )
        except Exception as exc:
            self._record(attempt, exc)
        else:
            attempt.outcome = Outcome.ACKED

    def _record(self, attempt: Attempt, error: Exception) -> None:
        assert attempt.event is not None
        attempt.error = error
        attempt.outcome = self._judge(error, attempt.number, attempt.event)
        if attempt.outcome in (Outcome.DEAD_LETTERED, Outcome.DROPPED):
            attempt.reason = reason_of(error)

    def _tell(
        self,
        delivery: Delivery,
        event: Event | None,
        outcome: Outcome,
        error: BaseException | None = None,
    ) -> None:
        """Tell the middleware about a delivery that does not reach the handler."""
        notify = self.mesh._chain.skipped
        if notify is not None:
            notify(
                Attempt(
                    event,
                    delivery.channel,
                    self.group,
                    self.name,
                    0,
                    delivery.redeliveries,
                    delivery,
                    outcome,
                    error,
                    None if error is None else reason_of(error),
                )
            )

    def _skips(self, channel: str) -> bool:
        """Whether deliveries from ``channel`` are acked unseen: a dead-letter copy
        reaching a normal handler (or the reverse), or a mesh-internal channel reaching
        a subscription that does not name ``mesh.``. Remembered per channel."""
        skip = (channel == self._dlq_channel) != self.accepts_dead_letters or (
            self._skip_internal and channel.startswith("mesh.")
        )
        if len(self._skip_channel) < 4096:  # bounded: wildcard subscriptions see any name
            self._skip_channel[channel] = skip
        return skip

    async def _fail(
        self, delivery: Delivery, event: Event, error: BaseException, *, attempts: int
    ) -> None:
        """The event cannot be handled: dead-letter it (a dead-letter handler drops it)."""
        if self.accepts_dead_letters:
            await self._drop(delivery, f"{event.id} ({type(error).__name__}: {error})")
            return
        await self._dead_letter(
            delivery,
            dead_letter_event(
                event, error, attempts=attempts, group=self.group, channel=delivery.channel
            ),
        )

    async def _drop(self, delivery: Delivery, what: str) -> None:
        log.error(
            "dead-letter handler %s could not handle %s; dropped (dead-letter copies are "
            "never dead-lettered again; the copy stays listed by mesh dlq list)",
            self.name,
            what,
        )
        self.stats.dropped += 1
        await delivery.ack()

    async def _delivery_limit(self, delivery: Delivery, event: Event) -> None:
        error = DeliveryLimitExceeded(
            f"delivered {delivery.redeliveries} times without being settled (max_deliveries="
            f"{self._max_deliveries}): its handler probably crashes the process or gives it "
            "back every time; fix the handler and replay it, or raise its max_deliveries "
            "(max_deliveries= on the handler, or retry.max_deliveries in the config)"
        )
        log.error("handler %s: event %s %s", self.name, event.id, error)
        self._tell(delivery, event, self._failed, error)
        await self._fail(delivery, event, error, attempts=0)

    async def _dead_letter(self, delivery: Delivery, copy: Event) -> None:
        """Write ``copy`` (straight to the transport: a copy of a contract violation must
        still get there), reduced when it is too large; ack only once it is written."""
        publish = self.mesh.transport.publish
        try:
            try:
                await publish(self._dlq_channel, copy)
            except MessageTooLarge as exc:
                log.warning(
                    "dead-letter copy %s is too large for the broker (%d > %d bytes); "
                    "writing it reduced (size and digest instead of the body)",
                    copy.id,
                    exc.size,
                    exc.limit,
                )
                await publish(self._dlq_channel, reduced_copy(copy))
        except MeshError as exc:
            delay = self.policy.backoff(delivery.redeliveries + 1)
            log.error(
                "could not dead-letter %s (%s); redelivering it in %.2gs", copy.id, exc, delay
            )
            await delivery.nack(delay)
            return
        self.stats.dead_lettered += 1
        await delivery.ack()

    async def _hop_limit_exceeded(self, delivery: Delivery, event: Event) -> None:
        error = HopLimitExceeded(
            f"event {event.id} of type {event.type} has meshhops={event.meshhops}, past the "
            f"hop limit {self._hop_limit}: handlers are probably emitting in a loop"
        )
        log.warning("%s", error)
        self._tell(delivery, event, Outcome.HOP_LIMITED, error)
        alert = Event(
            LOOP_DETECTED_TYPE,
            self.mesh.source,
            {
                "event_id": event.id,
                "type": event.type,
                "source": event.source,
                "hops": event.meshhops,
                "limit": self._hop_limit,
                "group": self.group,
                "channel": delivery.channel,
            },
            id=str(uuid.uuid5(ID_NAMESPACE, f"loop\x1f{self.scope}\x1f{event.id}")),
            extensions={"correlationid": event.correlationid or event.id, "causationid": event.id},
        )
        try:
            await self.mesh.publish(alert)
        except MeshError as exc:
            log.error("could not publish %s: %s", LOOP_DETECTED_TYPE, exc)
        await self._dead_letter(
            delivery,
            dead_letter_event(event, error, attempts=0, group=self.group, channel=delivery.channel),
        )
