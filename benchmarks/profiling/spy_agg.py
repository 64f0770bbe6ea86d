"""Aggregate a ``py-spy record -f raw`` file per function: inclusive and self share of
the busy samples (stacks ending in the selector's poll are counted as idle).

    py-spy record -r 1000 -f raw -o /tmp/x.spy -- python -m benchmarks.profiling.plugin_runs \
        nats mesh e2e_1 --events 20000 --runs 3
    python -m benchmarks.profiling.spy_agg /tmp/x.spy [regex]

Multiply a share by the run's CPU µs per event to get µs per event for a function.
"""

from __future__ import annotations

import re
import sys
from collections import Counter


def main() -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    busy = idle = 0
    for line in open(sys.argv[1]):
        stack, _, count = line.rstrip().rpartition(" ")
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        if any("select (selectors.py" in f for f in frames[-2:]):
            idle += int(count)
            continue
        busy += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
        own[frames[-1]] += int(count)
    print(f"busy samples {busy}, idle {idle}")
    pattern = re.compile(sys.argv[2]) if len(sys.argv) > 2 else None
    for name, count in inclusive.most_common(300):
        if pattern is None or pattern.search(name):
            print(f"{100 * count / busy:5.1f}% incl {100 * own[name] / busy:5.1f}% self  {name}")


if __name__ == "__main__":
    main()
