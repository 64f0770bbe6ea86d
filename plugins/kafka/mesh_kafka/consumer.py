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

Redelivery marks. Kafka keeps no delivery count. A member giving up partitions with
records unacked records "delivered below offset X" as committed offsets of a
companion group ``<group>.mesh-delivered``; the next owner reports those records
with ``redeliveries >= 1``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from mesh import (ConfigError, ConnectError, Delivery, DeliveryHandler, Dispatcher, Event,
                  Subscription)
from mesh_kafka.wire import from_record, raw_headers

log = logging.getLogger("mesh_kafka")
_MARKS_SUFFIX = ".mesh-delivered"
_ADMIN_TIMEOUT = 10.0
_PAUSE_AFTER = 1.0   # librdkafka refetches ~1 s late after resume: pause only when it pays
PartKey = tuple[str, int]
#: live subscriptions of this process (see `close_subscriptions_on`)
_LIVE: weakref.WeakSet[KafkaSubscription] = weakref.WeakSet()


class _Partition:
    """Offsets of one partition for one assignment (a new object per assignment)."""

    __slots__ = ("committed", "handed", "key", "marked_below", "next", "pending", "revoked")

    def __init__(self, key: PartKey, marked_below: int, start: int) -> None:
        self.key = key
        self.pending: set[int] = set()     # received, not acked
        self.next = start                  # one past the highest offset received
        self.handed = -1                   # one past the highest offset given to a handler
        self.committed = -1
        self.marked_below = marked_below   # offsets below were delivered by a former owner
        self.revoked = False

    def watermark(self) -> int:
        return min(self.pending) if self.pending else self.next


class _Record:
    """A fetched record and its in-client delivery attempts."""

    __slots__ = ("attempts", "key", "message", "part")

    def __init__(self, part: _Partition, message: Message) -> None:
        self.part, self.message, self.attempts = part, message, 0
        key = message.key()
        self.key = None if key is None else (part.key[0], key)


class KafkaDelivery(Delivery):
    """One delivery attempt of a record; see the module docstring for nack."""

    __slots__ = ("_record", "_sub")

    def __init__(self, sub: KafkaSubscription, record: _Record) -> None:
        earlier = (record.message.offset() or 0) < record.part.marked_below   # 1 or 0
        super().__init__(record.part.key[0], record.attempts - 1 + earlier)
        self._sub, self._record = sub, record

    def _decode(self) -> Event:
        message = self._record.message
        return from_record(message.headers(), message.key(), message.value())

    def raw(self) -> tuple[Mapping[str, str], bytes]:
        message = self._record.message
        return raw_headers(message.headers()), message.value() or b""

    async def _ack(self) -> None:
        self._sub.acked(self._record)

    async def _unhandled(self, cancelled: bool) -> None:
        if cancelled:  # cancelled by close: not acked, the group's next owner gets it
            self._settled = True
        else:
            await super()._unhandled(cancelled)

    async def _nack(self, delay: float) -> None:
        if not self._record.part.revoked:   # else dropped: its next owner redelivers it
            self._sub.pool.retry(self._record, delay)


class KafkaSubscription(Subscription):
    """A live subscription; built and started by `KafkaTransport.subscribe`."""

    def __init__(self, *, conf: dict[str, Any], topics: list[str], handler: DeliveryHandler,
                 max_in_flight: int, broadcast: bool, admin: AdminClient,
                 commit_interval: float, on_closed: Callable[[KafkaSubscription], None]) -> None:
        self._conf, self._topics, self._handler = conf, topics, handler
        self._max = max(1, max_in_flight)
        self._broadcast, self._admin = broadcast, admin
        self._group = str(conf["group.id"])
        self._marks_group = None if broadcast else self._group + _MARKS_SUFFIX
        self._commit_interval, self._on_closed = commit_interval, on_closed
        self._loop = asyncio.get_running_loop()
        # shared with the poll thread
        self._lock = threading.Lock()
        self._parts: dict[PartKey, _Partition] = {}
        self._stop = threading.Event()
        self._room = threading.Event()   # set by the loop when half the room is free
        self._thread = threading.Thread(target=self._pump, daemon=True,
                                        name=f"mesh-kafka-{self._group}")
        self._received = 0          # written by the thread only
        self._finished = 0          # written by the loop only
        self._paused = False        # thread only
        self._full_since: float | None = None   # thread only
        self._assigned_once = False  # set before the thread starts, then thread only
        self.pool: Dispatcher[_Record] = Dispatcher(handler, self._max, self._attempt,
                                                    on_done=self._done)
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
        except TimeoutError:
            await self.close()
            raise ConnectError(f"consumer group {self._group!r} got no partition assignment "
                               f"within {timeout:g}s; check the brokers and the group "
                               "coordinator") from None
        except BaseException:
            await self.close()
            raise

    async def close(self, timeout: float = 0.0) -> None:
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._shutdown(timeout))
        await asyncio.shield(self._closed)

    async def _shutdown(self, timeout: float) -> None:
        await self.pool.drain(timeout)   # records not run stay uncommitted: the next owner's
        self._stop.set()
        self._room.set()
        await asyncio.to_thread(self._thread.join)
        if self._broadcast:   # a broadcast group is this subscriber's alone
            await asyncio.to_thread(self._admin_call, self._admin.delete_consumer_groups,
                                    [self._group], request_timeout=_ADMIN_TIMEOUT)
        self._on_closed(self)
        _LIVE.discard(self)

    def covers(self, servers: str, topics: list[str]) -> bool:
        """True when this subscription (on ``servers``) may read any of ``topics``."""
        return servers == self._conf["bootstrap.servers"] and any(
            re.fullmatch(sub[1:], topic) if sub.startswith("^") else sub == topic
            for sub in self._topics for topic in topics)

    # --- records on the loop -------------------------------------------------------------

    def _arrive(self, records: list[_Record]) -> None:
        for record in records:
            self.pool.submit(record, record.key)

    def _attempt(self, record: _Record) -> KafkaDelivery | None:
        if record.part.revoked:    # the partition moved on: its next owner has it
            return None
        record.attempts += 1
        record.part.handed = max(record.part.handed, (record.message.offset() or 0) + 1)
        return KafkaDelivery(self, record)

    def acked(self, record: _Record) -> None:
        with self._lock:
            record.part.pending.discard(record.message.offset() or 0)

    def _done(self, record: _Record) -> None:
        self._finished += 1
        if (self._received - self._finished) * 2 <= self._max and not self._room.is_set():
            self._room.set()

    # --- the poll thread ----------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the loop is gone: nothing left to tell
            pass

    def _pump(self) -> None:
        try:
            consumer = Consumer({**self._conf, "on_commit": self._on_commit,
                                 "error_cb": _log_error, "logger": log})
            consumer.subscribe(self._topics, on_assign=self._on_assign,
                               on_revoke=self._revoke,
                               on_lost=lambda c, lost: self._revoke(c, lost, commit=False))
        except (KafkaException, ValueError, TypeError) as exc:
            self._call(resolve, self._assigned, ConfigError(
                f"librdkafka rejected the consumer configuration: {_describe(exc)}"))
            return
        next_commit = time.monotonic() + self._commit_interval
        try:
            while not self._stop.is_set():
                room = self._flow(consumer)
                if room > 0 or self._paused:   # wait for one, then take what else is there
                    ready = consumer.consume(1, 0.1)   # (one hand-off to the loop for both)
                    if ready and room > 1:
                        ready += consumer.consume(min(room - 1, 1000), 0)
                    self._take(ready)
                else:   # full, not yet paused: leave records in librdkafka's queue
                    self._room.wait(0.05)   # until half the room is free
                    self._room.clear()
                if time.monotonic() >= next_commit:
                    self._commit(consumer, list(self._parts.values()))
                    next_commit = time.monotonic() + self._commit_interval
        except Exception:   # never expected; the subscription stops, loudly
            log.exception("kafka consumer of group %s failed", self._group)
        finally:
            self._revoke(consumer, [TopicPartition(*key) for key in self._parts])
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer of group %s: %s", self._group, exc)

    def _take(self, messages: list[Message]) -> None:
        records = []
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
                records.append(_Record(part, message))
        if records:
            self._received += len(records)
            self._call(self._arrive, records)

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
        marks = self._read_marks(partitions)
        start: dict[PartKey, int] = {}
        if self._broadcast and not self._assigned_once and partitions:
            start = self._latest(consumer, partitions)   # broadcast: only what comes next
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._parts[key] = _Partition(key, marks.get(key, -1), start.get(key, -1))
        consumer.assign([TopicPartition(tp.topic, tp.partition, start[(tp.topic, tp.partition)])
                         if (tp.topic, tp.partition) in start else tp for tp in partitions])
        self._set_paused(consumer, partitions)   # pause flags survive reassignment
        self._assigned_once = True
        self._call(resolve, self._assigned)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition],
                commit: bool = True) -> None:
        """Commit what is acked (not when ``partitions`` were lost), mark what is still in
        flight, and let the records go."""
        with self._lock:
            parts = [part for tp in partitions
                     if (part := self._parts.pop((tp.topic, tp.partition), None)) is not None]
            for part in parts:
                part.revoked = True
            marks = [TopicPartition(*part.key, part.handed) for part in parts
                     if part.handed > part.watermark()]
        if commit:
            self._commit(consumer, parts, wait=True)
        if marks and self._marks_group is not None:
            self._admin_call(self._admin.alter_consumer_group_offsets,
                             [ConsumerGroupTopicPartitions(self._marks_group, marks)],
                             request_timeout=_ADMIN_TIMEOUT)

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
                consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning("offset commit for group %s failed (%s); records after the last "
                        "commit will be redelivered", self._group, _describe(exc))

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [tp for tp in partitions if error is not None or tp.error is not None]
        if failed:
            log.debug("offset commit for group %s failed; retrying: %s", self._group, error)
            with self._lock:   # commit these again next round
                for tp in failed:
                    part = self._parts.get((tp.topic, tp.partition))
                    if part is not None:
                        part.committed = -1

    def _read_marks(self, partitions: list[TopicPartition]) -> dict[PartKey, int]:
        if self._marks_group is None or not partitions:
            return {}
        request = ConsumerGroupTopicPartitions(
            self._marks_group, [TopicPartition(tp.topic, tp.partition) for tp in partitions])
        result = self._admin_call(self._admin.list_consumer_group_offsets, [request],
                                  request_timeout=_ADMIN_TIMEOUT)
        found = result[0].topic_partitions if result else []
        return {(tp.topic, tp.partition): tp.offset for tp in found or [] if tp.offset >= 0}

    def _latest(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[PartKey, int]:
        try:
            ends = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, -1) for tp in partitions],
                timeout=_ADMIN_TIMEOUT)
        except KafkaException as exc:
            log.warning("broadcast subscriber could not look up end offsets (%s)",
                        _describe(exc))
            return {(tp.topic, tp.partition): -1 for tp in partitions}   # OFFSET_END
        return {(tp.topic, tp.partition): tp.offset for tp in ends}

    def _admin_call(self, method: Callable[..., Any], *args: Any, **kw: Any) -> list[Any]:
        """Run an admin request and wait (poll thread or worker thread only)."""
        try:
            return [f.result(_ADMIN_TIMEOUT) for f in method(*args, **kw).values()]
        except Exception as exc:  # best effort: marks and clean-up are optional
            log.debug("kafka admin request for group %s failed: %s", self._group, exc)
            return []


async def close_subscriptions_on(servers: str, topics: list[str]) -> None:
    """Close this process's subscriptions that read any of ``topics``.

    A consumer whose topic is deleted under it crashes librdkafka (deterministically
    on Tansu, and librdkafka has open crash reports for it on Kafka), so topics are
    only deleted after their local consumers stopped.
    """
    loop = asyncio.get_running_loop()
    doomed = [sub for sub in list(_LIVE) if sub._loop is loop and sub.covers(servers, topics)]
    await asyncio.gather(*(sub.close() for sub in doomed))


def resolve(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    if not future.done():
        future.set_result(None) if error is None else future.set_exception(error)


def _describe(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def _log_error(error: KafkaError) -> None:
    log.warning("kafka consumer: %s", error.str())
