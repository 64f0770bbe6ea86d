"""One side, one scenario, repeated in one process: throughput and CPU µs per event,
optionally under cProfile. For A/B runs of the NATS/RabbitMQ plugins: run it with
``PYTHONPATH`` pointing at two trees in turn (interleaved) and compare.

    python -m benchmarks.profiling.plugin_runs nats mesh e2e_1 --events 20000 --runs 3
    python -m benchmarks.profiling.plugin_runs rabbitmq raw publish --profile /tmp/p.prof

Prints one JSON line per run: side, scenario, events/s, CPU µs per event, load average.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
from dataclasses import replace

from benchmarks.common import Settings, Target
from benchmarks.env import Brokers
from benchmarks.faststream_side import FastStreamSide
from benchmarks.mesh_side import MeshSide
from benchmarks.raw import RawSide
from benchmarks.runner import _run

SIDES = {
    "mesh": MeshSide,
    "mesh-noidem": lambda: MeshSide(idempotency=False),
    "raw": RawSide,
    "faststream": FastStreamSide,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("transport", choices=["nats", "rabbitmq", "kafka", "memory"])
    p.add_argument("side", choices=list(SIDES))
    p.add_argument("scenario", choices=["e2e_1", "e2e_group", "publish", "latency"])
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--profile", default=None, help="cProfile output file (last run)")
    p.add_argument("--tag", default=os.environ.get("AB_TAG", ""))
    args = p.parse_args()
    settings = replace(Settings(), events=args.events, latency_sends=500)
    brokers = Brokers()
    url = brokers.url(args.transport)
    side = SIDES[args.side]()
    # warm-up run (imports, connections), not reported
    asyncio.run(
        _run(
            side,
            Target(args.transport, url),
            replace(settings, events=1000),
            "e2e_1" if args.scenario != "latency" else "latency",
        )
    )
    for i in range(args.runs):
        prof = cProfile.Profile() if args.profile and i == args.runs - 1 else None
        if prof is not None:
            prof.enable()
        value = asyncio.run(_run(side, Target(args.transport, url), settings, args.scenario))
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.profile)
        print(
            json.dumps(
                {
                    "tag": args.tag,
                    "side": args.side,
                    "scenario": args.scenario,
                    **{k: round(v, 3) for k, v in value.items()},
                    "load": os.getloadavg()[0],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
