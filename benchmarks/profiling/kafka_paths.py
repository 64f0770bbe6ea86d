"""CPU per event of the Kafka plugin's own code paths, without a broker (profiling aid).

``PYTHONPATH=<dir with a mesh_kafka copy> python -m benchmarks.profiling.kafka_paths``

* ``consume``: records (``confluent_kafka.Message`` objects carrying what the mesh
  publishes) go through a `KafkaSubscription` exactly as its poll thread hands them
  over (``_take`` -> ``call_soon_threadsafe`` -> ``Dispatcher`` -> `KafkaDelivery` ->
  decode -> the mesh's `Consumer` with its idempotency store -> handler -> ack), with
  ``max_in_flight`` 64; no thread, no broker, no librdkafka ``consume()``.
* ``decode`` / ``encode`` / ``produce``: `from_record`, `to_record` and
  ``Producer.produce`` with the record's headers (into a producer that never sends),
  and the SDK binding's ``to_binary`` / ``from_kafka`` alone, for comparison.

Best of ``--rounds`` (process CPU time, µs per event); run it pinned
(``taskset -c 1``) and compare variants in alternation.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import time
import timeit
from typing import Any

from cloudevents.core.bindings import kafka
from cloudevents.core.bindings.kafka import KafkaMessage
from confluent_kafka import Message, Producer

from benchmarks.common import payload
from mesh import Event, Mesh, codec
from mesh_kafka.consumer import KafkaSubscription, _Partition
from mesh_kafka.wire import from_record, to_record

TOPIC = "bench.paths"


def _records(count: int) -> list[Message]:
    out = []
    for offset in range(count):
        record = to_record(Event(TOPIC, "/bench/publisher", payload(offset)))
        out.append(
            Message(
                topic=TOPIC,
                partition=0,
                offset=offset,
                key=None,
                value=record.value,
                headers=list(record.headers.items()),
            )
        )
    return out


async def consume(count: int, mode: str = "mesh") -> float:
    """Loop-side CPU per record; ``mode`` is the handler: ``mesh`` (the mesh's
    `Consumer` and a counting handler), ``decode`` (decode, ack) or ``ack`` (ack only)."""
    app = Mesh("memory://paths", capabilities={"enabled": False})
    handled = 0

    @app.on(TOPIC, group="paths", max_in_flight=64)
    async def handle(event: Event) -> None:
        nonlocal handled
        handled += 1

    async def bare(delivery: Any) -> None:
        nonlocal handled
        if mode == "decode":
            assert delivery.event is not None
        handled += 1
        await delivery.ack()

    await app.start()
    try:
        handler: Any = next(iter(app._consumers.values())) if mode == "mesh" else bare
        sub = KafkaSubscription(
            conf={"group.id": "paths", "bootstrap.servers": "-"},
            topics=[TOPIC],
            handler=handler,
            max_in_flight=64,
            broadcast=False,
            admin=None,  # type: ignore[arg-type]
            commit_interval=0.5,
            owner=None,
        )
        part = _Partition((TOPIC, 0), -1, 0)
        sub._parts[part.key] = part
        messages = _records(count)
        # _take(consumer, messages) since the crash counts (the consumer is only used for
        # a suspect partition's watermarks); _take(messages) before
        take = (
            sub._take
            if len(inspect.signature(sub._take).parameters) == 1
            else functools.partial(sub._take, None)
        )
        cpu0, fed = time.process_time(), 0
        while handled < count:
            room = 64 - (sub._received - sub._finished)
            if room >= 32 and fed < count:  # what the poll thread takes at a time
                take(messages[fed : fed + room])
                fed += min(room, count - fed)
            await asyncio.sleep(0)
        return (time.process_time() - cpu0) / count * 1e6
    finally:
        await app.stop()


def _best(fn: Any, number: int = 20000, rounds: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1e6


def parts() -> dict[str, float]:
    event = Event(TOPIC, "/bench/publisher", payload(1))
    record = to_record(event)
    headers = list(record.headers.items())
    message = KafkaMessage(headers=dict(record.headers), key=None, value=record.value)
    producer = Producer(
        {
            "bootstrap.servers": "127.0.0.1:9",
            "linger.ms": 100000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "log_level": 0,
        }
    )

    def report(_err: Any, _msg: Any) -> None:
        pass

    try:
        return {
            "Event() (publisher side)": _best(lambda: Event(TOPIC, "/p", payload(1))),
            "to_record (mesh)": _best(lambda: to_record(event)),
            "SDK to_binary alone": _best(lambda: kafka.to_binary(event, codec.FORMAT)),
            "JSON data encoding alone": _best(lambda: codec.encode_data(event.data, None)),
            "produce() with the CE headers": _best(
                lambda: producer.produce(
                    TOPIC, value=record.value, headers=headers, on_delivery=report
                )
            ),
            "produce() bare value": _best(
                lambda: producer.produce(TOPIC, value=record.value, on_delivery=report)
            ),
            "from_record (mesh)": _best(lambda: from_record(headers, None, record.value)),
            "SDK from_kafka alone (Event factory)": _best(
                lambda: kafka.from_kafka(message, codec.FORMAT, Event.from_attributes)
            ),
            "json.loads of the data alone": _best(lambda: codec.decode_data(record.value, None)),
        }
    finally:
        producer.purge()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    import mesh_kafka

    print(f"mesh_kafka from {mesh_kafka.__file__}")
    for mode, what in (
        ("mesh", "the mesh's Consumer + handler"),
        ("decode", "decode + ack"),
        ("ack", "ack only"),
    ):
        best = min(asyncio.run(consume(args.events, mode)) for _ in range(args.rounds))
        print(f"  {best:7.2f} us  consume path per record, loop side: {what}")
    for name, value in parts().items():
        print(f"  {value:7.2f} us  {name}")


if __name__ == "__main__":
    main()
