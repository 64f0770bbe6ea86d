"""KafkaTransport: channels are topics, groups are consumer groups (confluent-kafka).

Publishing. One idempotent producer (``enable.idempotence``, ``acks=all``) per
transport; a background thread polls it, and its delivery reports resolve asyncio
futures through ``call_soon_threadsafe``, so ``publish`` returns only after the
broker confirmed and no librdkafka call blocks the event loop. ``publish_batch``
produces everything first and then awaits all reports. Topics are created through
the admin client on first use with ``partitions`` partitions.

Size. A record larger than the producer's ``message.max.bytes`` (key, value, headers
and framing, computed as librdkafka does: `mesh_kafka.wire.wire_size`) raises
`MessageTooLarge` before ``produce()`` is called, and nothing of the batch is sent; a
record the broker refuses as too large (``MSG_SIZE_TOO_LARGE``, ``RECORD_LIST_TOO_LARGE``
in its delivery report) raises it too, with the topic's ``max.message.bytes``.

Subscribing. See `mesh_kafka.consumer`. A group maps to a consumer group reading
from the earliest offset when it has no commits; a broadcast subscriber is a
consumer group of its own starting at the end of every partition.

Retained reads. Topics are logs, so `retain` only makes sure the topic exists, and
`read` assigns every partition to a consumer that joins no group and commits nothing
(`mesh_kafka.consumer.read_topic`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # confluent_kafka.admin's too
from confluent_kafka.admin._config import ConfigResource  # what confluent_kafka.admin
from confluent_kafka.admin._resource import ResourceType  # re-exports (implicitly)
from confluent_kafka.cimpl import NewTopic  # what confluent_kafka.admin re-exports

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
    ensure_listening,
    pattern_list,
    pattern_matcher,
    redact_url,
    scrub,
)
from mesh_kafka.config import KafkaConfig
from mesh_kafka.consumer import (
    KafkaSubscription,
    close_subscriptions,
    describe,
    new_client,
    read_topic,
    resolve,
)
from mesh_kafka.naming import group_id_for, subscribes, subscription_for, topic_for
from mesh_kafka.wire import HEADER_PREFIX, received_size, size_bound, to_record, wire_size

log = logging.getLogger("mesh.kafka")


#: The topic every capability reply travels on (see `KafkaTransport.reply_channel`).
REPLIES_TOPIC = "mesh.replies"
#: librdkafka's default ``message.max.bytes`` (the producer's own record size limit)
CLIENT_MAX_MESSAGE = 1_000_000
#: Kafka's default ``max.message.bytes`` of a topic, when the topic's cannot be read
BROKER_MAX_MESSAGE = 1_048_588
#: seconds `connect` lets a TCP connection attempt run before leaving it to the client
_LISTEN_TIMEOUT = 1.0
_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]


class KafkaTransport(Transport):
    """``kafka://host:port[,host:port]`` — see the module docstring and docs/transports/kafka.md."""

    schemes: ClassVar[tuple[str, ...]] = ("kafka",)
    features: ClassVar[TransportFeatures] = TransportFeatures(
        consumer_groups=True,
        broadcast=True,
        per_key_ordering=True,
        persistence=True,
        replay_for_new_groups=True,
        native_dedup=False,
        wildcard_patterns=True,
        retained_reads=True,
        backlog=True,
    )
    wire: ClassVar[WireFormat] = WireFormat(
        title="Apache Kafka",
        protocol="kafka",
        system="kafka",
        header_prefix=HEADER_PREFIX,
        binding=f"Kafka protocol binding (`{HEADER_PREFIX}` headers)",
    )

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.config = KafkaConfig.from_url(url, options)
        self._url = redact_url(url)
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._producer_conf: dict[str, Any] = {}
        self._max_message = CLIENT_MAX_MESSAGE
        self._poller: threading.Thread | None = None
        self._polling = self._fatal = False
        self._topics: set[str] = set()
        self._creating = asyncio.Lock()
        self._closing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"KafkaTransport({self._url!r})"

    # --- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, or raise `ConnectError` at once when every bootstrap server refuses
        the TCP connection (librdkafka would retry until ``connect_timeout``, logging
        each attempt); a slow network still gets the whole ``connect_timeout``. The
        clients are only created once a server listens, so a refused connection leaves
        no librdkafka log lines."""
        if self._producer is not None:
            return
        spent = await ensure_listening(
            self.config.bootstrap_servers.split(","),
            timeout=min(_LISTEN_TIMEOUT, self.config.connect_timeout),
            broker="Kafka",
        )
        left = max(0.1, self.config.connect_timeout - spent)
        admin = new_client(AdminClient, {**self.config.common(), "logger": log}, "client")
        producer_conf = {**self.config.producer(), "logger": log, "error_cb": self._on_error}
        producer = new_client(Producer, producer_conf, "client")
        reason = None
        try:
            await asyncio.to_thread(admin.list_topics, timeout=left)
        except KafkaException as exc:
            reason = self._scrub(exc)
        if reason is not None:  # raised outside the except block: no __context__ chain
            raise ConnectError(
                f"cannot reach Kafka at {self._url}: {reason}; check "
                "the brokers, security_protocol and credentials"
            )
        self._max_message = _int_property(producer_conf, "message.max.bytes", CLIENT_MAX_MESSAGE)
        self._admin, self._producer, self._closing = admin, producer, None
        self._producer_conf, self._fatal, self._polling = producer_conf, False, True
        self._poller = threading.Thread(target=self._poll, daemon=True, name="mesh-kafka-producer")
        self._poller.start()

    def _poll(self) -> None:
        while self._polling:  # serves delivery reports (and logs) off the event loop
            producer = self._producer
            if producer is not None:
                producer.poll(0.1)

    async def _replace_producer(self) -> Producer:
        """A fatal error (e.g. the idempotent sequence broke) kills a producer for good;
        the documented recovery is a new one. Unconfirmed events fail with PublishError."""
        old, self._fatal = self._producer, False
        self._producer = producer = Producer(self._producer_conf)
        log.warning("kafka producer hit a fatal error; replaced it with a new producer")
        if old is not None:
            await asyncio.to_thread(old.flush, 5.0)
        return producer

    async def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        await close_subscriptions(lambda sub: sub.owner is self)
        producer, self._producer, self._admin = self._producer, None, None
        if producer is None:
            return
        self._polling = False
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        if await asyncio.to_thread(producer.flush, 30.0):
            log.warning(
                "kafka producer closed with unconfirmed events; their publishers get PublishError"
            )
            producer.purge()
            await asyncio.to_thread(producer.flush, 5.0)

    def _on_error(self, error: KafkaError) -> None:
        self._fatal = self._fatal or error.fatal()
        log.log(
            logging.ERROR if error.fatal() else logging.WARNING, "kafka producer: %s", error.str()
        )

    def _clients(self) -> tuple[Producer, AdminClient]:
        if self._producer is None or self._admin is None:
            raise TransportClosed("kafka transport is not connected; call connect() first")
        return self._producer, self._admin

    def _scrub(self, exc: BaseException) -> str:
        return scrub(describe(exc), self.config.sasl_password, self.config.ssl_key_password)

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        await self.publish_batch([(channel, event)])

    async def publish_batch(self, items: Sequence[tuple[str, Event]]) -> None:
        """Encode every record and check its size, then produce them all and wait once
        for the whole batch: one delivery-report counter per batch and one wake-up of the
        loop when the last report came back (not a future and a ``call_soon_threadsafe``
        per record).

        A record over the producer's ``message.max.bytes`` raises `MessageTooLarge`
        before anything of the batch is produced: librdkafka would refuse it in
        ``produce()`` anyway, and that failing path is not worth taking (a caller
        retrying it in a loop only burns CPU and memory)."""
        if not items:
            return
        producer = self._clients()[0]
        topics = [topic_for(channel) for channel, _ in items]
        records = []
        for (_, event), topic in zip(items, topics, strict=True):
            try:
                record = to_record(event)
            except MeshError:
                raise
            except Exception as exc:
                raise PublishError(f"cannot encode event {event.id}: {exc}") from None
            if (
                size_bound(record) > self._max_message
                and (size := wire_size(record)) > self._max_message
            ):
                raise MessageTooLarge(
                    f"event {event.id} is {size} bytes as a Kafka record (key, value and "
                    f"headers), over the producer's message.max.bytes of {self._max_message} "
                    f"bytes; nothing was sent to {topic}. Make the event smaller (keep large "
                    "payloads elsewhere and send a reference), or raise message.max.bytes "
                    "(producer.message.max.bytes) together with the topic's "
                    "max.message.bytes",
                    size=size,
                    limit=self._max_message,
                )
            records.append(record)
        if not self._topics.issuperset(topics):
            await self._ensure_topics(set(topics), PublishError)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        reports, count = itertools.count(1), len(items)
        errors: list[str] = []
        too_large: list[tuple[str, int]] = []  # (topic, size) the broker refused as too large

        def report(error: KafkaError | None, message: Message) -> None:
            # where librdkafka serves reports: the poll thread (or a replaced producer's
            # flush thread: next() on a count is atomic)
            if error is not None:
                topic = message.topic() or ""
                if error.code() in _TOO_LARGE:
                    too_large.append(
                        (topic, received_size(message.headers(), message.key(), message.value()))
                    )
                errors.append(f"Kafka did not confirm the event on {topic}: {error.str()}")
            if next(reports) == count:
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    loop.call_soon_threadsafe(resolve, done)

        for topic, record in zip(topics, records, strict=True):
            if self._fatal:
                producer = await self._replace_producer()
            failed: str | None = None
            while True:
                try:
                    producer.produce(
                        topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,  # type: ignore[arg-type]
                        on_delivery=report,
                    )
                    break
                except BufferError:  # local queue full: let the poll thread drain it
                    await asyncio.sleep(0.005)
                except KafkaException as exc:  # records produced so far still report
                    failed = self._scrub(exc)
                    break
            if failed is not None:  # outside the except block: no __context__ chain
                raise PublishError(f"cannot publish to {topic}: {failed}")
        await done
        if too_large:
            topic, size = too_large[0]
            limit = await self._broker_limit(topic)
            shown = (
                ""
                if count == 1
                else f" ({len(too_large)} of {count} events; the others may have been written)"
            )
            raise MessageTooLarge(
                f"Kafka refused an event on {topic} as too large: about {size} bytes, over the "
                f"topic's max.message.bytes of {limit} bytes{shown}. Make the event smaller "
                "or raise the topic's max.message.bytes",
                size=size,
                limit=limit,
            )
        if errors:
            raise PublishError(
                errors[0]
                if count == 1
                else f"{len(errors)} of {count} events were not confirmed; first error: {errors[0]}"
            )

    async def _broker_limit(self, topic: str) -> int:
        """The topic's ``max.message.bytes`` (what the broker refused a record over), or
        Kafka's default when the topic's configuration cannot be read."""
        _, admin = self._clients()
        resource = ConfigResource(ResourceType.TOPIC, topic)
        try:
            futures = admin.describe_configs(
                [resource], request_timeout=self.config.connect_timeout
            )
            entries = await asyncio.to_thread(futures[resource].result, self.config.connect_timeout)
            return int(entries["max.message.bytes"].value)
        except Exception as exc:  # best effort: only the number in an error message
            log.debug("could not read max.message.bytes of %s: %s", topic, exc)
            return BROKER_MAX_MESSAGE

    # --- retained reads ----------------------------------------------------------------

    async def retain(self, channel: str) -> None:
        """Topics are logs that keep every record for their ``retention.ms`` whether
        anyone consumed it or not, so this only makes sure the topic exists (creating it
        like `publish` does; with ``create_topics=false`` a missing topic is a
        `ConfigError`). Nothing is changed on an existing topic."""
        topic = topic_for(channel)
        if topic in self._topics:
            return
        if self.config.create_topics:
            await self._ensure_topics({topic}, TransportError)
            return
        found = (await self._list_topics(TransportError)).get(topic)
        if found is None or found.error is not None:
            raise ConfigError(
                f"topic {topic} does not exist and create_topics is false; "
                "create it (the dead-letter tools read it)"
            )
        self._topics.add(topic)

    def read(self, channel: str, *, idle: float = 1.0) -> AsyncIterator[Delivery]:
        """Every record of ``channel``'s topic up to each partition's end when the read
        starts, oldest first (record timestamp, then partition and offset), through a
        consumer that is
        assigned the partitions directly: it joins no group and commits nothing, so no
        group's position, membership or lag changes and concurrent readers never see
        less. The deliveries are settled from the start and count no redeliveries;
        their ``position`` is ``topic/partition/offset``. ``idle`` bounds a wait for a
        partition that reports an end it never delivers (say, records deleted by
        retention meanwhile). See `mesh_kafka.consumer.read_topic`."""
        self._clients()
        topic = topic_for(channel)
        return read_topic(
            self.config.consumer(f"mesh-reader-{uuid.uuid4().hex}"),
            topic,
            idle=idle,
            timeout=self.config.connect_timeout,
        )

    # --- topics --------------------------------------------------------------------------

    async def _list_topics(self, error: type[TransportError]) -> dict[str, Any]:
        """Every topic's metadata by name, or ``error``. Lists them all rather than naming
        one: a metadata request naming a missing topic creates it on Tansu."""
        _, admin = self._clients()
        try:
            metadata = await asyncio.to_thread(
                admin.list_topics, timeout=self.config.connect_timeout
            )
        except KafkaException as exc:
            reason = self._scrub(exc)
        else:
            return dict(metadata.topics)
        raise error(f"cannot list topics: {reason}")  # outside the except: no chained error

    async def _ensure_topics(self, topics: set[str], error: type[TransportError]) -> None:
        """Create missing topics (``partitions``, ``replication_factor``) once per transport;
        one creation at a time (it is rare), so concurrent callers never race on a topic."""
        _, admin = self._clients()
        async with self._creating:
            missing = sorted(topics - self._topics)
            failures: dict[str, str] = {}
            if missing and self.config.create_topics:
                new = [
                    NewTopic(t, self.config.partitions, self.config.replication_factor)
                    for t in missing
                ]
                try:
                    futures = admin.create_topics(new, request_timeout=self.config.connect_timeout)
                    errors = await asyncio.to_thread(
                        _wait, futures, KafkaError.TOPIC_ALREADY_EXISTS
                    )
                    failures = {topic: self._scrub(exc) for topic, exc in errors.items()}
                except KafkaException as exc:
                    failures = dict.fromkeys(missing, self._scrub(exc))
            self._topics.update(t for t in missing if t not in failures)
        if failures:
            topic = min(failures)
            raise error(f"cannot create topic {topic}: {failures[topic]}")

    # --- subscribing ---------------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 1,
    ) -> Subscription:
        _, admin = self._clients()
        topics = await self._subscriptions(pattern)
        group_id = group_id_for(group) if group else f"mesh-broadcast-{uuid.uuid4().hex}"
        sub = KafkaSubscription(
            conf=self.config.consumer(group_id),
            topics=topics,
            handler=handler,
            max_in_flight=max_in_flight,
            broadcast=group is None,
            admin=admin,
            commit_interval=self.config.commit_interval,
            owner=self,
        )
        await sub.start(self.config.assignment_timeout, wait=await self._any_topic(topics))
        return sub

    async def _subscriptions(self, pattern: str | Sequence[str]) -> list[str]:
        """The topics and topic regexes of ``pattern``, its exact topics created."""
        topics = [subscription_for(p) for p in pattern_list(pattern)]
        await self._ensure_topics({t for t in topics if not t.startswith("^")}, ConnectError)
        return topics

    async def _any_topic(self, topics: list[str]) -> bool:
        """True when some topic or topic regex of a subscription matches an existing topic."""
        if any(not t.startswith("^") for t in topics):
            return True  # exact topics were just created
        names = await self._list_topics(ConnectError)
        return any(subscribes(t, name) for t in topics for name in names)

    def reply_channel(self, instance_id: str) -> str:
        """One shared replies topic for every instance: a topic per instance would pile
        up topics. Each instance reads it and ignores replies addressed to others."""
        return REPLIES_TOPIC

    async def ensure_group(self, pattern: str | Sequence[str], group: str) -> None:
        """Create the topics of ``pattern``; nothing else is needed on Kafka.

        Topics keep every record for their retention time whether or not a group
        exists, and a group without commits starts at the earliest offset, so the
        group's first member gets everything published since the topic was created
        (a superset of "since the group was declared"). No member joins, so this is
        fast and triggers no rebalance of a running group.
        """
        group_id_for(group)
        await self._subscriptions(pattern)

    async def backlog(self, pattern: str | Sequence[str], group: str) -> dict[str, int] | None:
        """Per topic of ``pattern``, the records the group has not committed: each
        partition's high watermark minus the group's committed offset (its low watermark
        when the group committed nothing there: a new group starts at the earliest
        record), summed. Records handled but not committed yet (commits run every
        ``commit_interval``) still count."""
        _, admin = self._clients()
        subscriptions = [subscription_for(p) for p in pattern_list(pattern)]
        found = await self._list_topics(TransportError)
        wanted = [
            TopicPartition(name, partition)
            for name, topic in found.items()
            if any(subscribes(sub, name) for sub in subscriptions)
            for partition in topic.partitions
        ]
        if not wanted:
            return {}
        group_id, timeout = group_id_for(group), self.config.connect_timeout

        def read() -> dict[str, int]:
            committed = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group_id, wanted)], request_timeout=timeout
            )
            ends = admin.list_offsets({tp: _LATEST for tp in wanted}, request_timeout=timeout)
            starts = admin.list_offsets({tp: _EARLIEST for tp in wanted}, request_timeout=timeout)
            done = {
                (tp.topic, tp.partition): tp.offset
                for result in committed.values()
                for tp in result.result(timeout).topic_partitions or []
            }
            lag: dict[str, int] = {}
            for tp in wanted:
                key = (tp.topic, tp.partition)
                high = ends[tp].result(timeout).offset
                mark = done.get(key, -1)
                if mark < 0:
                    mark = starts[tp].result(timeout).offset
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - mark)
            return lag

        try:
            return await asyncio.to_thread(read)
        except KafkaException as exc:
            reason = self._scrub(exc)
        raise TransportError(f"cannot read the lag of group {group}: {reason}")

    async def delete_channels(self, pattern: str) -> None:
        """Delete every topic matching ``pattern`` (test clean-up).

        Subscriptions of this process reading those topics are closed first: a
        consumer whose topic disappears under it crashes librdkafka.
        """
        _, admin = self._clients()
        matches = pattern_matcher(pattern)
        names = await self._list_topics(TransportError)
        doomed = [t for t in names if matches(t) and not t.startswith("__")]
        try:
            if doomed:
                servers = self.config.bootstrap_servers
                await close_subscriptions(lambda sub: sub.covers(servers, doomed))
                futures = admin.delete_topics(doomed, operation_timeout=self.config.connect_timeout)
                errors = await asyncio.to_thread(_wait, futures, KafkaError.UNKNOWN_TOPIC_OR_PART)
                if errors:
                    raise min(errors.items())[1]
        except KafkaException as exc:
            raise TransportError(
                f"cannot delete topics matching {pattern}: {self._scrub(exc)}"
            ) from None
        self._topics -= set(doomed)


def _int_property(conf: Mapping[str, Any], name: str, default: int) -> int:
    """A numeric librdkafka property as an int (librdkafka accepted its text already)."""
    try:
        return int(conf.get(name, default))
    except (TypeError, ValueError):
        return default


def _wait(futures: dict[str, Any], ignore: int) -> dict[str, KafkaException]:
    """Wait for an admin request's futures; their errors by topic, except ``ignore``."""
    errors = {}
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != ignore:
                errors[topic] = exc
    return errors
