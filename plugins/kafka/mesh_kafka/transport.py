"""KafkaTransport: channels are topics, groups are consumer groups (confluent-kafka).

Publishing. One idempotent producer (``enable.idempotence``, ``acks=all``) per
transport; a background thread polls it, and its delivery reports resolve asyncio
futures through ``call_soon_threadsafe``, so ``publish`` returns only after the
broker confirmed and no librdkafka call blocks the event loop. ``publish_batch``
produces everything first and then awaits all reports. Topics are created through
the admin client on first use with ``partitions`` partitions.

Subscribing. See `mesh_kafka.consumer`. A group maps to a consumer group reading
from the earliest offset when it has no commits; a broadcast subscriber is a
consumer group of its own starting at the end of every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # what confluent_kafka.admin re-exports

from mesh import (ConfigError, ConnectError, DeliveryHandler, Event, MeshError, PublishError,
                  Subscription, Transport, TransportClosed, TransportError, TransportFeatures,
                  pattern_list, pattern_matcher, redact_url, scrub)
from mesh_kafka.config import KafkaConfig
from mesh_kafka.consumer import KafkaSubscription, close_subscriptions_on, resolve
from mesh_kafka.naming import group_id_for, subscription_for, topic_for
from mesh_kafka.wire import to_record

log = logging.getLogger("mesh_kafka")


#: The topic every capability reply travels on (see `KafkaTransport.reply_channel`).
REPLIES_TOPIC = "mesh.replies"


class KafkaTransport(Transport):
    """``kafka://host:port[,host:port]`` — see the module docstring and docs/transports/kafka.md."""

    schemes: ClassVar[tuple[str, ...]] = ("kafka",)
    features: ClassVar[TransportFeatures] = TransportFeatures(
        consumer_groups=True, broadcast=True, per_key_ordering=True, persistence=True,
        replay_for_new_groups=True, native_dedup=False, wildcard_patterns=True,
        pattern_syntax="kafka-regex")

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.config = KafkaConfig.from_url(url, options)
        self._url = redact_url(url)
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._producer_conf: dict[str, Any] = {}
        self._poller: threading.Thread | None = None
        self._polling = self._fatal = False
        self._topics: set[str] = set()
        self._creating = asyncio.Lock()
        self._subs: set[KafkaSubscription] = set()
        self._closing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"KafkaTransport({self._url!r})"

    # --- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._producer is not None:
            return
        try:
            admin_conf: dict[str, Any] = {**self.config.common(), "logger": log}
            producer_conf: dict[str, Any] = {**self.config.producer(), "logger": log,
                                             "error_cb": self._on_error}
            admin, producer = AdminClient(admin_conf), Producer(producer_conf)
        except (KafkaException, ValueError, TypeError) as exc:
            raise ConfigError("librdkafka rejected the client configuration: "
                              f"{self._scrub(exc)}") from None
        try:
            await asyncio.to_thread(admin.list_topics, timeout=self.config.connect_timeout)
        except KafkaException as exc:
            raise ConnectError(f"cannot reach Kafka at {self._url}: {self._scrub(exc)}; check "
                               "the brokers, security_protocol and credentials") from None
        self._admin, self._producer, self._closing = admin, producer, None
        self._producer_conf, self._fatal, self._polling = producer_conf, False, True
        self._poller = threading.Thread(target=self._poll, daemon=True,
                                        name="mesh-kafka-producer")
        self._poller.start()

    def _poll(self) -> None:
        while self._polling:   # serves delivery reports (and logs) off the event loop
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
        await asyncio.gather(*(sub.close() for sub in list(self._subs)))
        producer, self._producer, self._admin = self._producer, None, None
        if producer is None:
            return
        self._polling = False
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        if await asyncio.to_thread(producer.flush, 30.0):
            log.warning("kafka producer closed with unconfirmed events; their publishers "
                        "get PublishError")
            producer.purge()
            await asyncio.to_thread(producer.flush, 5.0)

    def _on_error(self, error: KafkaError) -> None:
        self._fatal = self._fatal or error.fatal()
        log.log(logging.ERROR if error.fatal() else logging.WARNING,
                "kafka producer: %s", error.str())

    def _clients(self) -> tuple[Producer, AdminClient]:
        if self._producer is None or self._admin is None:
            raise TransportClosed("kafka transport is not connected; call connect() first")
        return self._producer, self._admin

    def _scrub(self, exc: BaseException) -> str:
        err = exc.args[0] if exc.args else None
        text = err.str() if isinstance(err, KafkaError) else str(exc)
        return scrub(text, self.config.sasl_password, self.config.ssl_key_password)

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        await self.publish_batch([(channel, event)])

    async def publish_batch(self, items: Sequence[tuple[str, Event]]) -> None:
        """Produce every record, then wait once for the whole batch: one delivery-report
        counter per batch and one wake-up of the loop when the last report came back
        (not a future and a ``call_soon_threadsafe`` per record)."""
        if not items:
            return
        producer = self._clients()[0]
        topics = [topic_for(channel) for channel, _ in items]
        if not self._topics.issuperset(topics):
            await self._ensure_topics(set(topics), PublishError)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        reports, size = itertools.count(1), len(items)
        errors: list[str] = []

        def report(error: KafkaError | None, message: Message) -> None:
            # where librdkafka serves reports: the poll thread (or a replaced producer's
            # flush thread: next() on a count is atomic)
            if error is not None:
                errors.append(f"Kafka did not confirm the event on {message.topic()}: "
                              f"{error.str()}")
            if next(reports) == size:
                with contextlib.suppress(RuntimeError):   # the loop is gone
                    loop.call_soon_threadsafe(resolve, done)
        for topic, (_, event) in zip(topics, items, strict=True):
            if self._fatal:
                producer = await self._replace_producer()
            try:
                record = to_record(event)
            except MeshError:
                raise
            except Exception as exc:
                raise PublishError(f"cannot encode event {event.id}: {exc}") from None
            while True:
                try:
                    producer.produce(topic, value=record.value, key=record.key,
                                     headers=record.headers,  # type: ignore[arg-type]
                                     on_delivery=report)
                    break
                except BufferError:   # local queue full: let the poll thread drain it
                    await asyncio.sleep(0.005)
                except KafkaException as exc:   # records produced so far still report
                    raise PublishError(f"cannot publish to {topic}: "
                                       f"{self._scrub(exc)}") from None
        await done
        if errors:
            raise PublishError(errors[0] if size == 1 else f"{len(errors)} of {size} events "
                               f"were not confirmed; first error: {errors[0]}")

    # --- topics --------------------------------------------------------------------------

    async def _ensure_topics(self, topics: set[str], error: type[TransportError]) -> None:
        """Create missing topics (``partitions``, ``replication_factor``) once per transport;
        one creation at a time (it is rare), so concurrent callers never race on a topic."""
        _, admin = self._clients()
        async with self._creating:
            missing = sorted(topics - self._topics)
            failures: dict[str, str] = {}
            if missing and self.config.create_topics:
                new = [NewTopic(t, self.config.partitions, self.config.replication_factor)
                       for t in missing]
                try:
                    futures = admin.create_topics(new, request_timeout=self.config.connect_timeout)
                    errors = await asyncio.to_thread(_wait, futures,
                                                     KafkaError.TOPIC_ALREADY_EXISTS)
                    failures = {topic: self._scrub(exc) for topic, exc in errors.items()}
                except KafkaException as exc:
                    failures = dict.fromkeys(missing, self._scrub(exc))
            self._topics.update(t for t in missing if t not in failures)
        if failures:
            topic = min(failures)
            raise error(f"cannot create topic {topic}: {failures[topic]}")

    # --- subscribing ---------------------------------------------------------------------

    async def subscribe(self, pattern: str | Sequence[str], handler: DeliveryHandler, *,
                        group: str | None = None, max_in_flight: int = 1) -> Subscription:
        _, admin = self._clients()
        topics = [subscription_for(p) for p in pattern_list(pattern)]
        await self._ensure_topics({t for t in topics if not t.startswith("^")}, ConnectError)
        group_id = group_id_for(group) if group else f"mesh-broadcast-{uuid.uuid4().hex}"
        sub = KafkaSubscription(
            conf=self.config.consumer(group_id), topics=topics, handler=handler,
            max_in_flight=max_in_flight, broadcast=group is None, admin=admin,
            commit_interval=self.config.commit_interval, on_closed=self._subs.discard)
        self._subs.add(sub)
        await sub.start(self.config.assignment_timeout, wait=await self._any_topic(topics))
        return sub

    async def _any_topic(self, topics: list[str]) -> bool:
        """True when some topic or topic regex of a subscription matches an existing topic."""
        if any(not t.startswith("^") for t in topics):
            return True   # exact topics were just created
        _, admin = self._clients()
        try:
            metadata = await asyncio.to_thread(admin.list_topics,
                                               timeout=self.config.connect_timeout)
        except KafkaException as exc:
            raise ConnectError(f"cannot list topics: {self._scrub(exc)}") from None
        return any(re.fullmatch(t[1:], name) for t in topics for name in metadata.topics)

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
        self._clients()
        group_id_for(group)
        topics = [subscription_for(p) for p in pattern_list(pattern)]
        await self._ensure_topics({t for t in topics if not t.startswith("^")}, ConnectError)

    async def delete_channels(self, pattern: str) -> None:
        """Delete every topic matching ``pattern`` (test clean-up).

        Subscriptions of this process reading those topics are closed first: a
        consumer whose topic disappears under it crashes librdkafka.
        """
        _, admin = self._clients()
        matches = pattern_matcher(pattern)
        try:
            metadata = await asyncio.to_thread(admin.list_topics,
                                               timeout=self.config.connect_timeout)
            doomed = [t for t in metadata.topics if matches(t) and not t.startswith("__")]
            if doomed:
                await close_subscriptions_on(self.config.bootstrap_servers, doomed)
                futures = admin.delete_topics(doomed,
                                              operation_timeout=self.config.connect_timeout)
                errors = await asyncio.to_thread(_wait, futures, KafkaError.UNKNOWN_TOPIC_OR_PART)
                if errors:
                    raise min(errors.items())[1]
        except KafkaException as exc:
            raise TransportError(f"cannot delete topics matching {pattern}: "
                                 f"{self._scrub(exc)}") from None
        self._topics -= set(doomed)


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
