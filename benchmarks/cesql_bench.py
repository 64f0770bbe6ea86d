"""CESQL evaluation throughput: ``python benchmarks/cesql_bench.py [N]``.

Prints evaluations per second (best of 5 timed loops of N evaluations each) for a
simple equality, a 3-clause filter and a filter using the data extension. A harness
can call :func:`run` instead, which returns ops/s by benchmark name.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path
from typing import Any

try:
    from mesh.routing import cesql
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mesh.routing import cesql

EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "0b5c5a4e-1",
    "source": "/orders",
    "type": "com.example.order",
    "subject": "order-42",
    "time": "2024-05-01T12:00:00Z",
    "data": {"severity": 5, "order": {"kind": "express", "items": 3}},
}

BENCHMARKS: dict[str, str] = {
    "simple": "type = 'com.example.order'",
    "three_clauses": "type LIKE 'com.example.%' AND source = '/orders' AND EXISTS subject",
    "data_extension": "type = 'com.example.order' AND data.severity > 3 "
                      "AND data.order.kind = 'express'",
}

REPEAT = 5


def run(n: int = 200_000) -> dict[str, float]:
    """Evaluations per second for each benchmark (best of 5 loops of ``n`` evaluations)."""
    results: dict[str, float] = {}
    for name, text in BENCHMARKS.items():
        expression = cesql.parse(text)
        value, errors = expression.evaluate(EVENT)
        if value is not True or errors:
            raise RuntimeError(f"benchmark {name!r} does not match its event: {value!r} {errors}")
        timer = timeit.Timer("evaluate(event)",
                             globals={"evaluate": expression.evaluate, "event": EVENT})
        best = min(timer.repeat(repeat=REPEAT, number=n))
        results[name] = n / best
    return results


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 200_000
    print(f"CESQL evaluation, Python {sys.version.split()[0]}, best of {REPEAT} x {n:,}")
    for name, ops in run(n).items():
        print(f"  {name:<16} {ops:>12,.0f} evals/s  {1e9 / ops:>8.0f} ns/eval"
              f"   {BENCHMARKS[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
