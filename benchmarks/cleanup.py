"""Removing a run's broker state, the same way for every side (fresh names per run)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

log = logging.getLogger("benchmarks")


def kafka_bootstrap(url: str) -> str:
    return url.split("://", 1)[1].split("?", 1)[0].rsplit("@", 1)[-1]


def create_kafka_topics(url: str, topics: Iterable[str], partitions: int) -> None:
    """Create ``topics`` with ``partitions`` partitions (every side reads the same layout)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(url)})
    futures = admin.create_topics([NewTopic(t, partitions, -1) for t in topics], request_timeout=15)
    for future in futures.values():
        try:
            future.result(20)
        except KafkaException as exc:
            if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def delete_kafka_topics(url: str, topics: Iterable[str]) -> None:
    from confluent_kafka.admin import AdminClient

    topics = list(topics)
    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(url)})
    for future in admin.delete_topics(topics, operation_timeout=15).values():
        with contextlib.suppress(Exception):
            future.result(20)


async def delete_nats_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
    finally:
        await nc.close()


async def delete_rabbitmq(
    url: str, queues: Iterable[str] = (), exchanges: Iterable[str] = ()
) -> None:
    import aio_pika

    conn = await aio_pika.connect(url, timeout=10)
    try:
        deletions = [("queue_delete", name) for name in queues]
        deletions += [("exchange_delete", name) for name in exchanges]
        for method, name in deletions:  # a channel each: a failed delete closes it
            channel = await conn.channel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await getattr(channel, method)(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await conn.close()
