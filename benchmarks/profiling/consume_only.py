"""Consume-only CPU per event: publish N events into a declared group first (not
timed), then start one consumer (or ``--consumers``) and time until all are handled.
Separates the consume path from the publish path, which e2e runs mix.

    python -m benchmarks.profiling.consume_only rabbitmq mesh --events 8000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from dataclasses import replace

from benchmarks.common import Counter, Settings, Target, chunks, payloads
from benchmarks.env import Brokers
from benchmarks.profiling.plugin_runs import SIDES


async def consume_only(
    side_name: str, target: Target, settings: Settings, consumers: int
) -> dict[str, float]:
    async with SIDES[side_name]().session(target, settings) as session:
        await session.declare()
        for chunk in chunks(payloads(settings.events), settings.publish_chunk):
            await session.publish_batch(chunk)
        counter = Counter(settings.events)
        gc.collect()
        cpu0, start = time.process_time(), time.perf_counter()
        await session.start_consumers(consumers, counter.hit)
        await asyncio.wait_for(asyncio.shield(counter.done), settings.run_timeout)
        cpu = time.process_time() - cpu0
        return {
            "events_per_s": settings.events / (counter.last - start),
            "cpu_us_per_event": cpu / settings.events * 1e6,
        }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("transport", choices=["nats", "rabbitmq"])
    p.add_argument("side", choices=list(SIDES))
    p.add_argument("--events", type=int, default=8000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--consumers", type=int, default=1)
    args = p.parse_args()
    settings = replace(Settings(), events=args.events)
    url = Brokers().url(args.transport)
    asyncio.run(
        consume_only(
            args.side, Target(args.transport, url), replace(settings, events=500), args.consumers
        )
    )  # warm-up
    for _ in range(args.runs):
        value = asyncio.run(
            consume_only(args.side, Target(args.transport, url), settings, args.consumers)
        )
        print(
            json.dumps(
                {
                    "tag": os.environ.get("AB_TAG", ""),
                    "side": args.side,
                    "scenario": "consume_only",
                    **{k: round(v, 3) for k, v in value.items()},
                    "load": os.getloadavg()[0],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
