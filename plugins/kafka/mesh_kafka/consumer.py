"""One subscription: a consumer-group member polled on its own thread, handlers on the loop.

Threads. librdkafka's consumer calls block, so each subscription owns a thread that
is the only caller of the consumer: it keeps polling whatever the handlers do (so a
slow handler never exceeds ``max.poll.interval.ms``), serves rebalance and commit
callbacks, pauses and resumes partitions, and commits. Handlers run on the event
loop through a `mesh.Dispatcher` (``max_in_flight``, per-key order, in-client
retries). Offset bookkeeping is shared and guarded by one lock.

Commits. Handlers finish out of order, so each partition commits the lowest offset
not yet acked (the *watermark*): a failed or running offset N is never skipped by
committing N+1. Commits run every ``commit_interval`` and on revocation and close.

Nack. ``nack(delay)`` runs the record again *in the client* after ``delay`` (it is
not re-fetched); its offset stays uncommitted, so a crash still makes the broker
redeliver it. Records with the same key wait behind it (per-key order).

Flow control. At most ``max_in_flight`` records are handled or waiting, and at most
as many more wait out a nack delay; when full the thread stops taking records from
librdkafka's bounded prefetch queue until the loop has freed half the room, and
after a second of being full it pauses every assigned partition (a resumed
partition is fetched again only ~1 s later).

Redelivery counts. Kafka keeps no delivery count, so the transport keeps two kinds of
marks, as committed offsets of two companion groups (Tansu, the test broker, drops
commit metadata, so the numbers live in the offsets themselves):

* ``<group>.mesh-delivered``: a member giving up partitions cleanly with records
  unacked records "delivered below offset X"; the next owner reports those records
  with ``redeliveries >= 1``.
* ``<group>.mesh-takeovers``: when a handler starts the first record of a newly
  assigned partition, the member first writes "the takeover at offset W is the Nth"
  (``W << 16 | N``; a member that dies before it ran the record counts nothing), where
  W is that record's offset (the group's committed position) and N counts consecutive
  takeovers that started at the same W. A record that kills its process every time
  never gets acked, so it pins the committed position at W and every new owner starts
  there: the Nth owner reports the record at W with ``redeliveries = N - 1``, however
  the earlier ones died (kill -9, ``os._exit``). Such a *suspect* partition (N > 1) is
  then re-run one record at a time (`_SUSPECT_RECORDS` records): before each record the
  acked ones (of every partition) are committed and its own takeover mark written, so
  when the poison record is not the first one the blame still moves onto it; while any
  partition is suspect the member runs one record at a time in all, so a crash never
  counts against a bystander. Cost when nothing crashed: one small write per partition
  per assignment, nothing per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from mesh import (
    ConfigError,
    ConnectError,
    Delivery,
    DeliveryHandler,
    Dispatcher,
    Event,
    Subscription,
    TransportError,
    quietly,
    scrub,
)
from mesh_kafka.naming import subscribes
from mesh_kafka.wire import from_record, raw_headers

log = logging.getLogger("mesh.kafka")
_MARKS_SUFFIX = ".mesh-delivered"
_TAKEOVERS_SUFFIX = ".mesh-takeovers"
_COUNT_BITS = 16  # a takeover mark is offset << 16 | count
_COUNT_MAX = (1 << _COUNT_BITS) - 1
_MARKABLE = 1 << (63 - _COUNT_BITS)  # offsets from here on cannot be marked (never seen)
#: records of a suspect partition re-run one at a time (each costs two round trips)
_SUSPECT_RECORDS = 100
_ADMIN_TIMEOUT = 10.0
_PAUSE_AFTER = 1.0  # librdkafka refetches ~1 s late after resume: pause only when it pays
_READ_BATCH = 500
PartKey = tuple[str, int]
_C = TypeVar("_C")
#: live subscriptions of this process (see `close_subscriptions`)
_LIVE: weakref.WeakSet[KafkaSubscription] = weakref.WeakSet()


@dataclass(eq=False, slots=True)
class _Partition:
    """Offsets of one partition for one assignment (a new object per assignment).

    ``takeover`` is the (offset, count) mark former owners left; ``blamed`` the first
    record's (offset, earlier deliveries) once it arrived. While ``suspect`` > 0 the
    partition's records wait in ``held`` and go to the loop one at a time (``stepping``:
    one is there now); see the module docstring."""

    key: PartKey
    marked_below: int  # offsets below were delivered by a former owner
    next: int  # one past the highest offset received
    takeover: tuple[int, int] | None = None
    pending: set[int] = field(default_factory=set)  # received, not acked
    handed: int = -1  # one past the highest offset given to a handler
    committed: int = -1
    revoked: bool = False
    started: bool = False  # the first record of the assignment arrived
    blamed: tuple[int, int] = (-1, 0)
    marked: int = -1  # offset of this member's last takeover mark
    suspect: int = 0  # records left to re-run one at a time
    suspect_end: int = -1  # ... or until this offset
    held: deque[_Record] = field(default_factory=deque)
    stepping: bool = False

    def watermark(self) -> int:
        return min(self.pending) if self.pending else self.next

    def earlier(self, offset: int) -> int:
        """Deliveries of the record at ``offset`` by former owners (as far as marked)."""
        count = self.blamed[1] if offset == self.blamed[0] else 0
        return max(count, 1 if offset < self.marked_below else 0)


class _Record:
    """A fetched record and its in-client delivery attempts."""

    __slots__ = ("attempts", "key", "mark", "message", "offset", "part")

    def __init__(self, part: _Partition, message: Message, offset: int) -> None:
        self.part, self.message, self.attempts, self.offset = part, message, 0, offset
        #: a takeover mark to write before this record's first handler run (see `_before`)
        self.mark: TopicPartition | None = None
        key = message.key()
        self.key = None if key is None else (part.key[0], key)


class _RecordDelivery(Delivery):
    """A delivery of one Kafka record: lazy decoding, raw form and position."""

    __slots__ = ("_message",)

    def __init__(self, message: Message, redeliveries: int) -> None:
        super().__init__(message.topic() or "", redeliveries)
        self._message = message

    def _decode(self) -> Event:
        message = self._message
        return from_record(message.headers(), message.key(), message.value())

    def raw(self) -> tuple[Mapping[str, str], bytes]:
        message = self._message
        return raw_headers(message.headers()), message.value() or b""

    @property
    def position(self) -> str:
        """``topic/partition/offset``: where the record is, the same on every redelivery."""
        message = self._message
        return f"{message.topic()}/{message.partition()}/{message.offset()}"


class ReadDelivery(_RecordDelivery):
    """A record read without consuming (`read_topic`): settled from the start."""

    __slots__ = ()

    def __init__(self, message: Message) -> None:
        super().__init__(message, 0)
        self._settled = True

    async def _ack(self) -> None:
        """Nothing to settle: the record was read, not consumed."""

    async def _nack(self, delay: float) -> None:
        """Nothing to settle: the record was read, not consumed."""


class KafkaDelivery(_RecordDelivery):
    """One delivery attempt of a record; see the module docstring for nack and counts."""

    __slots__ = ("_record", "_sub")

    def __init__(self, sub: KafkaSubscription, record: _Record) -> None:
        earlier = record.part.earlier(record.offset)
        super().__init__(record.message, record.attempts - 1 + earlier)
        self._sub, self._record = sub, record

    async def _ack(self) -> None:
        self._sub.acked(self._record)

    async def _unhandled(self, cancelled: bool) -> None:
        if cancelled:  # cancelled by close: not acked, the group's next owner gets it
            self._settled = True
        else:
            await super()._unhandled(cancelled)

    async def _nack(self, delay: float) -> None:
        if not self._record.part.revoked:  # else dropped: its next owner redelivers it
            self._sub.pool.retry(self._record, delay)


class KafkaSubscription(Subscription):
    """A live subscription; built and started by `KafkaTransport.subscribe`."""

    def __init__(
        self,
        *,
        conf: dict[str, Any],
        topics: list[str],
        handler: DeliveryHandler,
        max_in_flight: int,
        broadcast: bool,
        admin: AdminClient,
        commit_interval: float,
        owner: object,
    ) -> None:
        self._conf, self._topics = conf, topics
        self._max = max(1, max_in_flight)
        self._broadcast, self._admin = broadcast, admin
        self._group = str(conf["group.id"])
        # companion groups keeping the redelivery marks (none for broadcast subscribers)
        self._marks_group = self._group + _MARKS_SUFFIX
        self._takeovers_group = self._group + _TAKEOVERS_SUFFIX
        self._commit_interval, self.owner = commit_interval, owner
        self._loop = asyncio.get_running_loop()
        # shared with the poll thread
        self._lock = threading.Lock()
        self._parts: dict[PartKey, _Partition] = {}
        self._stop = threading.Event()
        self._room = threading.Event()  # set by the loop when half the room is free
        self._thread = threading.Thread(
            target=self._pump, daemon=True, name=f"mesh-kafka-{self._group}"
        )
        self._received = 0  # written by the thread only
        self._finished = 0  # written by the loop only
        self._paused = False  # thread only
        self._full_since: float | None = None  # thread only
        self._suspects: set[_Partition] = set()  # thread only: partitions re-run one by one
        self._steps: deque[_Partition] = deque()  # loop -> thread: a suspect record finished
        self._assigned_once = False  # set before the thread starts, then thread only
        self.pool: Dispatcher[_Record] = Dispatcher(
            handler,
            self._max,
            self._attempt,
            on_done=self._done,
            before=None if broadcast else self._before,
        )
        self._closed: asyncio.Task[None] | None = None
        self._assigned: asyncio.Future[None] = self._loop.create_future()

    # --- lifecycle (loop) ---------------------------------------------------------------

    async def start(self, timeout: float, wait: bool) -> None:
        """Start polling; return once the group gave this member its first assignment.

        ``wait=False`` (a regex matching no topic yet: librdkafka joins the group only
        when a topic appears) returns at once; the topics found later are all new,
        so even a broadcast subscriber then reads them from the beginning.
        """
        _LIVE.add(self)
        self._assigned_once = not wait
        self._thread.start()
        if not wait:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._assigned), timeout)
        except BaseException as exc:
            await self.close()
            if not isinstance(exc, TimeoutError):
                raise
            raise ConnectError(
                f"consumer group {self._group!r} got no partition assignment within "
                f"{timeout:g}s; check the brokers and the group coordinator"
            ) from None

    async def close(self, timeout: float = 0.0) -> None:
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._shutdown(timeout))
        await asyncio.shield(self._closed)

    async def _shutdown(self, timeout: float) -> None:
        await self.pool.drain(timeout)  # records not run stay uncommitted: the next owner's
        self._stop.set()
        self._room.set()
        await asyncio.to_thread(self._thread.join)
        if self._broadcast:  # a broadcast group is this subscriber's alone
            await asyncio.to_thread(
                self._admin_call, self._admin.delete_consumer_groups, [self._group]
            )
        _LIVE.discard(self)

    def covers(self, servers: str, topics: list[str]) -> bool:
        """True when this subscription (on ``servers``) may read any of ``topics``."""
        return servers == self._conf["bootstrap.servers"] and any(
            subscribes(sub, topic) for sub in self._topics for topic in topics
        )

    # --- records on the loop -------------------------------------------------------------

    def _arrive(self, records: list[_Record]) -> None:
        for record in records:
            self.pool.submit(record, record.key)

    def _attempt(self, record: _Record) -> KafkaDelivery | None:
        if record.part.revoked:  # the partition moved on: its next owner has it
            return None
        record.attempts += 1
        record.part.handed = max(record.part.handed, record.offset + 1)
        return KafkaDelivery(self, record)

    def _before(self, record: _Record) -> Awaitable[None] | None:
        """The record's takeover mark to write before its handler runs, when it carries
        one (the first record of an assignment, a suspect's next): a mark counts a
        delivery only once a handler really gets the record, so a member that dies
        before it ran a partition's record does not count against it."""
        mark = record.mark
        if mark is None:
            return None
        record.mark = None
        return self._write_mark(mark)

    async def _write_mark(self, mark: TopicPartition) -> None:
        """Best effort, like every companion-group write: a failure is logged."""
        request = [ConsumerGroupTopicPartitions(self._takeovers_group, [mark])]
        alter = self._admin.alter_consumer_group_offsets
        if not await asyncio.to_thread(self._admin_call, alter, request):
            log.warning(
                "group %s: could not count a takeover of %s/%d; a crash now would not "
                "count against the record",
                self._group,
                mark.topic,
                mark.partition,
            )

    def acked(self, record: _Record) -> None:
        with self._lock:
            record.part.pending.discard(record.offset)

    def _done(self, record: _Record) -> None:
        self._finished += 1
        if record.part.stepping:  # the thread commits it and hands out the next one
            self._steps.append(record.part)
            self._room.set()
        elif (self._received - self._finished) * 2 <= self._max and not self._room.is_set():
            self._room.set()

    # --- the poll thread ----------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing left to tell
            self._loop.call_soon_threadsafe(fn, *args)

    def _pump(self) -> None:
        conf = {**self._conf, "on_commit": self._on_commit, "error_cb": _log_error, "logger": log}
        try:
            consumer = new_client(Consumer, conf, "consumer")
        except ConfigError as exc:
            self._call(resolve, self._assigned, exc)
            return
        next_commit = time.monotonic() + self._commit_interval
        try:
            consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._revoke,
                on_lost=lambda c, lost: self._revoke(c, lost, commit=False),
            )
            while not self._stop.is_set():
                while self._steps:
                    self._step(consumer, self._steps.popleft(), finished=True)
                room = self._flow(consumer)
                if room > 0 or self._paused:  # wait for one, then take what else is there
                    # a suspect record's end is noticed here: look sooner while one runs
                    wait = 0.01 if any(part.stepping for part in self._suspects) else 0.1
                    ready = consumer.consume(1, wait)  # (one hand-off to the loop for all)
                    if ready and room > 1:
                        ready += consumer.consume(min(room - 1, 1000), 0)
                    self._take(consumer, ready)
                else:  # full, not yet paused: leave records in librdkafka's queue
                    self._room.wait(0.05)  # until half the room is free
                    self._room.clear()
                if time.monotonic() >= next_commit:
                    self._commit(consumer, list(self._parts.values()))
                    next_commit = time.monotonic() + self._commit_interval
        except Exception:  # never expected; the subscription stops, loudly
            log.exception("kafka consumer of group %s failed", self._group)
            failed = ConnectError(f"the consumer of group {self._group!r} failed; see the log")
            self._call(resolve, self._assigned, failed)  # for a start() still waiting
        finally:
            self._revoke(consumer, [TopicPartition(*key) for key in self._parts])
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer of group %s: %s", self._group, exc)

    def _take(self, consumer: Consumer, messages: list[Message]) -> None:
        records: list[_Record] = []
        held = 0
        with self._lock:
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        _log_error(error)
                    continue
                part = self._parts.get((message.topic() or "", message.partition() or 0))
                if part is None:
                    continue
                offset = message.offset() or 0
                part.pending.add(offset)
                part.next = max(part.next, offset + 1)
                record = _Record(part, message, offset)
                if not part.started:
                    record.mark = self._first_record(consumer, part, offset)
                if part.suspect > 0:
                    part.held.append(record)
                    held += 1
                else:
                    records.append(record)
        self._received += len(records) + held
        if records:
            self._call(self._arrive, records)
        if held:
            for part in list(self._suspects):
                self._step(consumer, part)

    def _first_record(
        self, consumer: Consumer, part: _Partition, offset: int
    ) -> TopicPartition | None:
        """Count this takeover (see the module docstring): the first record is the one at
        the committed position; when former owners' takeovers started there too, it was
        delivered that often already, and the partition is re-run one record at a time,
        up to `_SUSPECT_RECORDS` records or the partition's end as the fetch reported it
        (what former owners can have handed out)."""
        part.started = True
        if self._broadcast:
            return None
        mark = part.takeover
        count = mark[1] if mark is not None and mark[0] == offset else 0
        part.blamed = (offset, count)
        written = None
        if offset < _MARKABLE:  # written when its handler starts (`_run`), not now
            written = TopicPartition(*part.key, _takeover_mark(offset, count + 1))
            part.marked = offset
        if count > 0:
            part.suspect = _SUSPECT_RECORDS
            _, high = consumer.get_watermark_offsets(TopicPartition(*part.key), cached=True)
            part.suspect_end = high if high > offset else offset + _SUSPECT_RECORDS
            if not self._suspects:  # one record at a time, so a crash blames the right one
                self._call(self.pool.resize, 1)
            self._suspects.add(part)
            log.info(
                "partition %s/%d of group %s was taken over %d time(s) at offset %d "
                "without progress; re-running its next records one at a time",
                *part.key,
                self._group,
                count,
                offset,
            )
        return written

    def _step(self, consumer: Consumer, part: _Partition, finished: bool = False) -> None:
        """Hand the next held record of a suspect partition to the loop (thread only):
        commit what is acked and write its takeover mark first, so a crash in its
        handler is counted against it. ``finished``: the record handed before is done."""
        if finished:
            part.stepping = False
        if part.stepping or part.revoked:
            return
        head = part.held[0].offset if part.held else part.next
        if part.suspect <= 0 or head >= part.suspect_end:  # the rest goes as usual
            self._forget_suspect(part)
            rest = list(part.held)
            part.held.clear()
            if rest:
                self._call(self._arrive, rest)
            return
        if not part.held:
            return
        record = part.held[0]
        if part.marked != record.offset:
            self._commit(consumer, list(self._parts.values()), wait=True)
            if record.offset < _MARKABLE:  # written when its handler starts (`_run`)
                record.mark = TopicPartition(*part.key, _takeover_mark(record.offset, 1))
            part.marked = record.offset
        part.held.popleft()
        part.stepping = True
        part.suspect -= 1
        self._call(self._arrive, [record])

    def _forget_suspect(self, part: _Partition) -> None:
        self._suspects.discard(part)
        if not self._suspects:
            self._call(self.pool.resize, self._max)

    def _flow(self, consumer: Consumer) -> int:
        """Pause after being full for `_PAUSE_AFTER` s, resume when not full; return room."""
        delayed = self.pool.delayed
        room = self._max - (self._received - self._finished - delayed)
        full = room <= 0 or delayed >= self._max
        now = time.monotonic()
        self._full_since = (self._full_since or now) if full else None
        pause = self._full_since is not None and now - self._full_since >= _PAUSE_AFTER
        if pause != self._paused:
            self._paused = pause
            self._set_paused(consumer, consumer.assignment())
        return room

    def _set_paused(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            (consumer.pause if self._paused else consumer.resume)(partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        marks, takeovers = self._read_marks(partitions)
        start: dict[PartKey, int] = {}
        if self._broadcast and not self._assigned_once and partitions:
            start = self._latest(consumer, partitions)  # broadcast: only what comes next
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._parts[key] = _Partition(
                    key, marks.get(key, -1), start.get(key, -1), takeovers.get(key)
                )
                tp.offset = start.get(key, tp.offset)
        consumer.assign(partitions)
        self._set_paused(consumer, partitions)  # pause flags survive reassignment
        self._assigned_once = True
        self._call(resolve, self._assigned)

    def _revoke(
        self, consumer: Consumer, partitions: list[TopicPartition], commit: bool = True
    ) -> None:
        """Commit what is acked (not when ``partitions`` were lost), mark what is still in
        flight, and let the records go."""
        with self._lock:
            parts = [
                part
                for tp in partitions
                if (part := self._parts.pop((tp.topic, tp.partition), None)) is not None
            ]
            for part in parts:
                part.revoked = True
                self._received -= len(part.held)  # never reached the loop: not in flight
                part.held.clear()
                self._forget_suspect(part)
            marks = [
                TopicPartition(*part.key, part.handed)
                for part in parts
                if part.handed > part.watermark()
            ]
        if commit:
            self._commit(consumer, parts, wait=True)
        if marks and not self._broadcast:
            self._admin_call(
                self._admin.alter_consumer_group_offsets,
                [ConsumerGroupTopicPartitions(self._marks_group, marks)],
            )

    def _commit(self, consumer: Consumer, parts: list[_Partition], wait: bool = False) -> None:
        with self._lock:
            offsets = []
            for part in parts:
                mark = part.watermark()
                if mark > part.committed:
                    offsets.append(TopicPartition(*part.key, mark))
                    part.committed = mark
        if not offsets:
            return
        try:
            if wait:
                consumer.commit(offsets=offsets, asynchronous=False)
            else:
                consumer.commit(offsets=offsets)
        except KafkaException as exc:
            log.warning(
                "offset commit for group %s failed (%s); records after the last "
                "commit will be redelivered",
                self._group,
                describe(exc),
            )

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [tp for tp in partitions if error is not None or tp.error is not None]
        if failed:
            log.debug("offset commit for group %s failed; retrying: %s", self._group, error)
            with self._lock:  # commit these again next round
                for tp in failed:
                    part = self._parts.get((tp.topic, tp.partition))
                    if part is not None:
                        part.committed = -1

    def _read_marks(
        self, partitions: list[TopicPartition]
    ) -> tuple[dict[PartKey, int], dict[PartKey, tuple[int, int]]]:
        """The companion groups' marks for ``partitions``: "delivered below" offsets and
        (offset, count) takeover marks; both requests are sent before either is awaited."""
        if self._broadcast or not partitions:
            return {}, {}
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        requests = [
            self._admin_request(
                self._admin.list_consumer_group_offsets,
                [ConsumerGroupTopicPartitions(group, wanted)],
            )
            for group in (self._marks_group, self._takeovers_group)
        ]
        below, takeovers = (
            {
                (tp.topic, tp.partition): tp.offset
                for found in self._admin_results(request)
                for tp in found.topic_partitions or []
                if tp.offset >= 0
            }
            for request in requests
        )
        return below, {k: (o >> _COUNT_BITS, o & _COUNT_MAX) for k, o in takeovers.items()}

    def _latest(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[PartKey, int]:
        try:
            ends = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, -1) for tp in partitions],
                timeout=_ADMIN_TIMEOUT,
            )
        except KafkaException as exc:
            log.warning("broadcast subscriber could not look up end offsets (%s)", describe(exc))
            return {(tp.topic, tp.partition): -1 for tp in partitions}  # OFFSET_END
        return {(tp.topic, tp.partition): tp.offset for tp in ends}

    def _admin_call(self, method: Callable[..., dict[Any, Any]], request: list[Any]) -> list[Any]:
        """Run an admin request and wait for its results (poll or worker thread only)."""
        return self._admin_results(self._admin_request(method, request))

    def _admin_request(
        self, method: Callable[..., dict[Any, Any]], request: list[Any]
    ) -> dict[Any, Any]:
        """Send an admin request: its futures, none when it failed (best effort, like
        `_admin_results`)."""
        try:
            return method(request, request_timeout=_ADMIN_TIMEOUT)
        except Exception as exc:  # best effort: marks and clean-up are optional
            log.debug("kafka admin request for group %s failed: %s", self._group, exc)
            return {}

    def _admin_results(self, futures: dict[Any, Any]) -> list[Any]:
        try:
            return [f.result(_ADMIN_TIMEOUT) for f in futures.values()]
        except Exception as exc:  # best effort: marks and clean-up are optional
            log.debug("kafka admin request for group %s failed: %s", self._group, exc)
            return []


async def close_subscriptions(which: Callable[[KafkaSubscription], bool]) -> None:
    """Close this process's subscriptions (on the running loop) that ``which`` picks:
    a transport's own when it closes, or every one reading topics about to be deleted
    (`KafkaSubscription.covers`): a consumer whose topic is deleted under it crashes
    librdkafka (deterministically on Tansu, and librdkafka has open crash reports for it
    on Kafka), so topics are only deleted after their local consumers stopped."""
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(s.close() for s in list(_LIVE) if s._loop is loop and which(s)))


def _takeover_mark(offset: int, count: int) -> int:
    """A takeover mark as one committed offset: ``offset << 16 | count`` (see the module
    docstring; the broker keeps no commit metadata on Tansu)."""
    return offset << _COUNT_BITS | min(count, _COUNT_MAX)


# --- reading without consuming -------------------------------------------------------------


class _Reading:
    """What one `read_topic` knows about its partitions (used by one thread at a time).

    Records are yielded oldest first across partitions: each partition's records wait
    in its buffer until every partition not yet at its end has one, then the oldest head
    (record timestamp, then partition and offset) goes first. So every read of the same
    records yields them in the same order, and each partition in offset order."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self.consumer, self.topic = consumer, topic
        self.ends: dict[int, int] = {}  # partition not read to its end -> that end
        self.seen: set[int] = set()  # partitions a fetch answered already
        self.buffers: dict[int, deque[Message]] = {}

    def plan(self, timeout: float) -> None:
        """Find the topic's partitions and their ends, and assign the non-empty ones from
        their beginning. Lists every topic rather than naming this one: a metadata
        request naming a missing topic creates it on some brokers (Tansu)."""
        metadata = self.consumer.list_topics(timeout=timeout)
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            return
        for partition in sorted(found.partitions):
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=timeout
            )
            if high > low:
                self.ends[partition] = high
                self.buffers[partition] = deque()
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.ends])

    @property
    def unfinished(self) -> bool:
        return bool(self.ends) or any(self.buffers.values())

    def batch(self, wait: float) -> tuple[list[Message], bool]:
        """Fetch, then the records that can go out in order now; and whether anything (a
        record or an end of partition) arrived at all."""
        got = self.consumer.consume(_READ_BATCH, wait)
        for message in got:
            partition = message.partition() or 0
            end = self.ends.get(partition)
            if end is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    del self.ends[partition]  # at the partition's end: nothing more
                else:
                    _log_error(error)
                continue
            if partition not in self.seen:
                # the end as the fetch reports it: Tansu's ListOffsets answers the last
                # batch's base offset + 1, short of the records after it in that batch
                self.seen.add(partition)
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
                end = self.ends[partition] = max(end, high)
            offset = message.offset() or 0
            if offset < end:
                self.buffers[partition].append(message)
            if offset + 1 >= end:
                del self.ends[partition]
        return self.merge(), bool(got)

    def merge(self, everything: bool = False) -> list[Message]:
        """Buffered records in order, as long as no unfinished partition's buffer is
        empty (its next record could be older); ``everything``: regardless."""
        out = []
        buffers = self.buffers
        while everything or not any(not buffers[p] for p in self.ends):
            heads = [(_age(queue[0]), p) for p, queue in buffers.items() if queue]
            if not heads:
                break
            out.append(buffers[min(heads)[1]].popleft())
        return out


def _age(message: Message) -> tuple[int, int, int]:
    return message.timestamp()[1], message.partition() or 0, message.offset() or 0


async def read_topic(
    conf: dict[str, Any], topic: str, *, idle: float, timeout: float
) -> AsyncIterator[Delivery]:
    """The records of ``topic`` up to each partition's end as the read starts, oldest
    first, without consuming: a consumer assigned every non-empty partition from its
    beginning, which never subscribes (so joins no group), commits nothing (auto commit
    off, no offsets stored) and is closed at the end. Each partition is read to the end
    its first fetch reports (at least its high watermark when the read began) or to its
    end-of-partition event; reading stops early when nothing arrives for ``idle``
    seconds after the first answer (``timeout`` before it). Blocking calls run in worker
    threads, one at a time."""
    conf = {**conf, "enable.partition.eof": True, "error_cb": _log_error, "logger": log}
    consumer = new_client(Consumer, conf, "reader")
    reading = _Reading(consumer, topic)
    try:
        problem = None
        try:
            await asyncio.to_thread(reading.plan, timeout)
        except KafkaException as exc:
            problem = describe(exc)
        if problem is not None:  # outside the except block: no chained error
            raise TransportError(f"cannot read topic {topic}: {problem}")
        loop = asyncio.get_running_loop()
        last, patience = loop.time(), max(timeout, idle)
        while reading.unfinished:
            messages, answered = await asyncio.to_thread(reading.batch, min(0.2, idle))
            if answered:
                last, patience = loop.time(), idle
            elif loop.time() - last > patience:
                log.debug(
                    "reading %s: nothing arrived for %.1fs; stopping before the end "
                    "of partitions %s",
                    topic,
                    patience,
                    sorted(reading.ends),
                )
                messages += reading.merge(everything=True)
                reading.ends.clear()
            for message in messages:
                yield ReadDelivery(message)
    finally:
        await quietly(asyncio.to_thread(consumer.close))


def resolve(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    if not future.done():
        future.set_result(None) if error is None else future.set_exception(error)


def new_client(kind: Callable[[dict[str, Any]], _C], conf: dict[str, Any], what: str) -> _C:
    """``kind(conf)``, a librdkafka client, or `ConfigError` when librdkafka refuses the
    configuration: its reason scrubbed of the configuration's secrets and raised outside
    the except block, so no chained error carries the raw text (it may hold a value)."""
    try:
        return kind(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        problem = scrub(describe(exc), conf.get("sasl.password"), conf.get("ssl.key.password"))
    raise ConfigError(f"librdkafka rejected the {what} configuration: {problem}")


def describe(exc: BaseException) -> str:
    """The text of a client error (a `KafkaError`'s own, not its repr)."""
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def _log_error(error: KafkaError) -> None:
    log.warning("kafka consumer: %s", error.str())
