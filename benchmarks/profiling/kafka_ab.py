"""Interleaved A/B runs of Kafka scenarios across copies of ``mesh_kafka`` (profiling aid).

``python -m benchmarks.profiling.kafka_ab --variant base=/tmp/kbase --variant new=tree
--scenario e2e_1 --scenario latency --repeat 4 --events 20000``

Each variant is a directory holding a ``mesh_kafka`` package (``tree`` = the working
tree's ``plugins/kafka``). Every run is a child process (its own interpreter, with
that variant first on ``PYTHONPATH``) against a private Tansu restarted before the
run, exactly as ``python -m benchmarks`` runs one side; the order is
``for scenario: for repeat: for variant: for side``, with the variant order reversed
on every other repeat (A B B A ...), so drifts of a shared machine hit every variant
alike. ``--side raw`` adds the raw client as a reference (``raw+conf`` with the
consumer properties of ``--raw-conf``).
``--pyspy DIR`` records each mesh run with ``py-spy record --format raw`` (all
threads, GIL-holding samples only, ``--nonblocking``) into ``DIR``; aggregate with
``python -m benchmarks.profiling.kafka_ab --fold FILE``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child(args: argparse.Namespace) -> None:
    import asyncio

    from benchmarks.common import Settings, Target
    from benchmarks.mesh_side import MeshSide
    from benchmarks.raw import RawSide
    from benchmarks.runner import _run

    import mesh_kafka

    settings = replace(Settings(), events=args.events, latency_sends=args.latency_sends)
    if args.raw_conf:  # extra consumer properties for the raw side (like-for-like checks)
        from benchmarks.raw import KafkaSession

        extra = {
            k: int(v) if v.isdigit() else v
            for k, v in (item.split("=", 1) for item in args.raw_conf)
        }
        conf = KafkaSession._consumer_conf
        KafkaSession._consumer_conf = lambda self: {**conf(self), **extra}  # type: ignore
    side = {
        "mesh": MeshSide(),
        "mesh-noidem": MeshSide(False),
        "raw": RawSide(),
        "raw+conf": RawSide(),
    }[args.side]
    value = asyncio.run(_run(side, Target("kafka", args.url), settings, args.scenario))
    value["_module"] = str(Path(mesh_kafka.__file__).parent)
    print("RESULT " + json.dumps(value), flush=True)


def parent(args: argparse.Namespace) -> None:
    from benchmarks.env import Tansu

    variants = dict(v.split("=", 1) for v in args.variant) or {"tree": "tree"}
    sides = args.side or ["mesh"]
    tansu = Tansu()
    tansu.start()
    results: dict[tuple[str, str, str], list[dict[str, float]]] = collections.defaultdict(list)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    try:
        for scenario in args.scenario or ["e2e_1"]:
            for repeat in range(args.repeat):
                order = list(variants.items())
                for name, path in order if repeat % 2 == 0 else order[::-1]:  # ABBA
                    for side in sides:
                        if side.startswith("raw") and name != order[0][0]:
                            continue  # the raw side does not depend on the variant
                        tansu.restart()
                        env = dict(os.environ)
                        pythonpath = [str(ROOT)]
                        if path != "tree":
                            pythonpath.insert(0, path)
                        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
                        cmd = [
                            sys.executable,
                            "-m",
                            "benchmarks.profiling.kafka_ab",
                            "--child",
                            "--url",
                            tansu.url,
                            "--scenario",
                            scenario,
                            "--side",
                            side,
                            "--events",
                            str(args.events),
                            "--latency-sends",
                            str(args.latency_sends),
                        ]
                        if side == "raw+conf":
                            cmd += [a for item in args.raw_conf for a in ("--raw-conf", item)]
                        if args.pyspy and side.startswith("mesh"):
                            out = Path(args.pyspy) / f"{scenario}-{name}-{repeat}.txt"
                            spy = str(Path(sys.executable).parent / "py-spy")
                            cmd = [
                                spy,
                                "record",
                                "--format",
                                "raw",
                                "--nonblocking",
                                "--threads",
                                "--gil",
                                "-r",
                                "1000",
                                "-o",
                                str(out),
                                "--",
                                *cmd,
                            ]
                        proc = subprocess.run(
                            cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
                        )
                        line = next(
                            (ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")),
                            None,
                        )
                        if line is None:
                            print(
                                f"  {scenario} #{repeat} {name} {side}: FAILED\n"
                                f"{proc.stderr[-2000:]}",
                                flush=True,
                            )
                            continue
                        value = json.loads(line[7:])
                        value.pop("_module", None)
                        results[(scenario, name, side)].append(value)
                        print(
                            f"  {scenario:9s} #{repeat} {name:8s} {side:11s} {_brief(value)}",
                            flush=True,
                        )
    finally:
        tansu.stop()
    print(f"load average at end: {os.getloadavg()}")
    print("medians:")
    for (scenario, name, side), values in results.items():
        med = {k: statistics.median(v[k] for v in values) for k in values[0]}
        print(f"  {scenario:9s} {name:8s} {side:11s} {_brief(med)}  (n={len(values)})")


def _brief(value: dict[str, float]) -> str:
    if "p50_ms" in value:
        return f"p50 {value['p50_ms']:.3f} ms  p99 {value['p99_ms']:.3f} ms"
    return f"{value['events_per_s']:9,.0f} ev/s  cpu {value['cpu_us_per_event']:6.1f} us/ev"


#: stacks left out of `fold`: start-up, group joins and tear-down
DROP = (
    "importlib",
    "__aenter__",
    "__aexit__",
    "start_consumers",
    "Mesh.start",
    "Mesh.stop",
    "_shutdown",
    "_on_assign",
    "_on_revoke",
)
#: components of the measured path: (label, a frame name in the stack, thread prefix)
COMPONENTS = (
    ("publish: Event() + publish_many", "MeshSession.publish_batch", ""),
    ("  of it: to_record (SDK binding + JSON)", "to_record", ""),
    (
        "  of it: produce() C call",
        "KafkaTransport.publish_batch (mesh_kafka/transport.py:{produce})",
        "",
    ),
    ("consume: dispatch (_arrive -> Dispatcher.submit -> tasks)", "KafkaSubscription._arrive", ""),
    ("consume: deliver (mesh Consumer + handler + ack)", "deliver (", ""),
    ("  of it: decode (from_record)", "_decode", ""),
    ("  of it: dateutil isoparse", "isoparse", ""),
    ("poll thread (consume, _take, flow, commits)", "", "mesh-kafka-bench"),
    ("producer poll thread (delivery reports)", "", "mesh-kafka-producer"),
)


def fold(path: str, top: int) -> None:
    """Self and inclusive sample shares per function of a py-spy raw (folded) file,
    without start-up and tear-down (`DROP`), and the shares of `COMPONENTS`."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    import mesh_kafka.transport

    source = Path(mesh_kafka.transport.__file__).read_text().splitlines()
    produce = next(i for i, text in enumerate(source, 1) if "producer.produce(" in text)
    components = [
        (label, frame.format(produce=produce), prefix) for label, frame, prefix in COMPONENTS
    ]
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if any(d in stack for d in DROP):
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += n
        own[frames[-1]] += n
        for frame in set(frames[1:]):
            incl[frame] += n
        for label, frame, prefix in components:
            if (not frame or frame in stack) and thread.startswith(prefix):
                parts[label] += n
    print(f"{total} samples (start-up and tear-down left out)")
    for name, n in threads.most_common(8):
        print(f"  thread {name}: {100 * n / total:.1f} %")
    print("components:")
    for label, _, _ in COMPONENTS:
        print(f"  {100 * parts[label] / total:5.1f} %  {label}")
    print("self:")
    for name, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {name}")
    print("inclusive:")
    for name, n in incl.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {name}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--url")
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--scenario", action="append")
    p.add_argument("--side", action="append")
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--latency-sends", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--raw-conf",
        action="append",
        default=[],
        help="prop=value added to the consumer config of the 'raw+conf' side",
    )
    p.add_argument("--pyspy")
    p.add_argument("--fold")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    if args.fold:
        fold(args.fold, args.top)
    elif args.child:
        args.scenario, args.side = args.scenario[0], args.side[0]
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
