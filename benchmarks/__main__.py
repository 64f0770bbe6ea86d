"""``python -m benchmarks --transport nats --events 20000 --repeat 3``

Runs the scenarios of `benchmarks.runner` for the mesh, the raw client and
FastStream on each chosen transport, interleaved, and writes Markdown and JSON to
``benchmarks/results/`` (see `benchmarks.report`). ``--smoke`` is a tiny run that
only proves the harness works (CI); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.common import TRANSPORTS, Settings, Side
from benchmarks.env import Brokers, broker_info, machine
from benchmarks.faststream_side import FastStreamSide
from benchmarks.mesh_side import MeshSide
from benchmarks.raw import RawSide
from benchmarks.runner import run_transport

RESULTS = Path(__file__).resolve().parent / "results"
#: events per throughput run when --events is not given: about the same wall time per
#: run on each broker, so that ``--transport all`` takes about 10 minutes on 2 cores
DEFAULT_EVENTS = {"memory": 20_000, "kafka": 10_000, "nats": 5_000, "rabbitmq": 4_000}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--transport",
        default="all",
        choices=[*TRANSPORTS, "all"],
        help="transport to measure (default: all)",
    )
    p.add_argument(
        "--events",
        type=int,
        default=None,
        help="events per throughput run (default: memory 20000, kafka 10000, "
        "nats 5000, rabbitmq 4000; 500 with --smoke)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="interleaved repetitions, medians reported (default 3; 1 with --smoke)",
    )
    p.add_argument(
        "--latency-sends",
        type=int,
        default=None,
        help="one-at-a-time sends per latency run (default 500; 50 with --smoke)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="a tiny, fast run that proves the harness works (CI)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="directory for the result files (default benchmarks/results)",
    )
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.smoke:
        base = Settings(
            events=0,
            repeat=1,
            latency_sends=50,
            latency_warmup=5,
            publish_chunk=250,
            smoke=True,
            run_timeout=60,
        )
    else:
        base = Settings(events=0)
    changes: dict[str, Any] = {}
    if args.events is not None:
        changes["events"] = args.events
    elif args.smoke:
        changes["events"] = 500
    if args.repeat is not None:
        changes["repeat"] = args.repeat
    if args.latency_sends is not None:
        changes["latency_sends"] = args.latency_sends
    return replace(base, **changes)


def sides(settings: Settings) -> list[Side]:
    chosen: list[Side] = [MeshSide(), RawSide(), FastStreamSide()]
    if not settings.smoke:  # the extra rows; a smoke run proves the harness only
        chosen[1:1] = [
            MeshSide(idempotency=False),
            MeshSide(middleware="pass-through"),
            MeshSide(middleware="observed"),
        ]
    return chosen


def notes(transport: str, settings: Settings, private_tansu: bool) -> list[str]:
    common = [
        "Each side: 1 publisher + N consumer instances (own connection each) in one "
        "process and one asyncio loop; handlers only count. The raw client decodes the "
        "JSON body (json.loads) before its handler, as the frameworks do.",
        "The mesh apps run with capabilities disabled (no registry heartbeats) and a "
        "per-run dead-letter channel; everything else is the default `Mesh(url)`.",
    ]
    if transport == "memory":
        return [
            *common,
            "FastStream has no in-memory transport; its `TestNatsBroker` (the in-memory "
            "test client) is the closest: publish runs the handler inline.",
        ]
    if transport == "kafka":
        fmt = {
            "fetch": settings.kafka_fetch_wait_ms,
            "session": settings.kafka_session_timeout_ms,
            "heartbeat": settings.kafka_heartbeat_ms,
            "linger": settings.kafka_linger_ms,
            "backoff": settings.kafka_fetch_backoff_ms,
            "partitions": settings.kafka_partitions,
            "chunk": settings.publish_chunk,
        }
        kafka = [n.format(**fmt) for n in report.KAFKA_NOTES]
        if not private_tansu:
            kafka[0] = "Kafka: the broker at MESH_KAFKA_URL; each run's topic is deleted."
        return [
            *common,
            *kafka,
            "FastStream's Kafka subscriber with AckPolicy.ACK commits after every message "
            "and refuses max_workers > 1 in that mode; the mesh and the raw client commit "
            "per batch. That is each one's way of giving the same at-least-once "
            "guarantee.",
        ]
    if transport == "nats":
        return [
            *common,
            "Every side uses a fresh stream per run (file storage, "
            "duplicate_window 120 s), deleted afterwards.",
        ]
    return [
        *common,
        "Every side uses a fresh topic exchange and durable quorum queue per "
        "run, deleted afterwards.",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    base = settings_from(args)  # events=0: the transport's default
    transports = list(TRANSPORTS) if args.transport == "all" else [args.transport]
    command = "python -m benchmarks " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    brokers = Brokers()
    failed = False
    try:
        for transport in transports:
            started = datetime.now(UTC)
            print(f"== {transport}", flush=True)
            try:
                url = brokers.url(transport)
            except Exception as exc:
                print(f"  {transport}: broker unavailable: {exc}", file=sys.stderr)
                failed = True
                continue
            meta_machine = machine()
            settings = base if base.events else replace(base, events=DEFAULT_EVENTS[transport])
            broker = asyncio.run(broker_info(transport, url))
            result = run_transport(
                transport,
                sides(settings),
                settings,
                brokers,
                progress=lambda line: print(line, flush=True),
            )
            result["settings"] = asdict(settings)
            result["broker"] = broker
            result["notes"] = notes(transport, settings, brokers.kafka_private)
            if transport == "memory":
                from benchmarks import footprint, routing

                print("  memory footprint ...", flush=True)
                result["footprint"] = footprint.run(1 if settings.smoke else 3)
                print("  routing ...", flush=True)
                result["routing"] = routing.run(quick=settings.smoke)
            result["meta"] = {
                "command": command,
                "machine": meta_machine,
                "started": started.strftime("%Y-%m-%d %H:%M:%S"),
                "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
            }
            result["targets"] = report.targets(result)
            for path in report.write(args.out, result):
                print(f"  wrote {path}")
            if any(s["errors"] for s in result["scenarios"].values()):
                failed = True
    finally:
        brokers.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
