"""Routing cost: compiled CESQL evaluation, and per-event dispatch with N subscriptions.

``python -m benchmarks.routing`` prints, for 10, 100 and 1,000 rules, the cost of
finding the rules that match an event whose type only a few rules can match
(`RuleIndex.match`), and the same through a started memory `Mesh` with N handlers
(publish to handled). With the index, the cost follows the candidate rules, not
the total; the ratio 1,000 / 10 is printed. It also records the CESQL LIKE worst
cases of `benchmarks.cesql_bench` (ms for one evaluation against a 1 MB text) under
``cesql_like_worst_ms``, so that a regression shows in the results files.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks import cesql_bench
from mesh import Event, Mesh
from mesh.routing import cesql
from mesh.routing.router import RuleIndex

SIZES = (10, 100, 1000)


def _rules(n: int) -> list[tuple[str, dict[str, Any]]]:
    """n rules: 3 that can match ``orders.created``, the rest on other types, mixed dialects."""
    rules: list[tuple[str, dict[str, Any]]] = [
        ("hit-exact", {"exact": {"type": "orders.created"}}),
        ("hit-prefix", {"prefix": {"type": "orders."}}),
        ("hit-sql", {"sql": "type = 'orders.created' AND data.total > 100"}),
    ]
    kinds = (
        lambda i: {"exact": {"type": f"svc{i}.created"}},
        lambda i: {"prefix": {"type": f"svc{i}."}},
        lambda i: {"sql": f"type LIKE 'svc{i}.%' AND source = '/s{i}'"},
        lambda i: {
            "all": [{"exact": {"type": f"svc{i}.updated"}}, {"suffix": {"subject": ".pdf"}}]
        },
    )
    for i in range(n - len(rules)):
        rules.append((f"r{i}", kinds[i % len(kinds)](i)))
    return rules


def index_cost(n: int, events: int = 100_000) -> float:
    """Nanoseconds per RuleIndex.match for an event that 3 of n rules can match."""
    index: RuleIndex[str] = RuleIndex()
    for key, spec in _rules(n):
        index.add(key, spec)
    event = Event("orders.created", "/shop", {"total": 150})
    assert sorted(index.match(event)) == ["hit-exact", "hit-prefix", "hit-sql"]
    match = index.match
    start = time.perf_counter()
    for _ in range(events):
        match(event)
    return (time.perf_counter() - start) / events * 1e9


async def _mesh_cost(n: int, events: int) -> float:
    mesh = Mesh("memory://", idempotency={"enabled": False})
    done = asyncio.Event()
    count = 0

    for key, spec in _rules(n):
        if key.startswith("hit"):
            continue

        async def other(event: Event) -> None:
            raise AssertionError("must not be called")

        mesh.on(filter=spec, group=f"g-{key}", name=key)(other)

    @mesh.on("orders.created", group="target", max_in_flight=64)
    async def target(event: Event) -> None:
        nonlocal count
        count += 1
        if count == events:
            done.set()

    async with mesh:
        batch = [Event("orders.created", "/shop", {"total": 150}) for _ in range(events)]
        start = time.perf_counter()
        await mesh.publish_many(batch)
        await done.wait()
        return (time.perf_counter() - start) / events * 1e9


def mesh_cost(n: int, events: int = 20_000) -> float:
    """Nanoseconds per event, publish to handled, with n subscriptions on the mesh."""
    return asyncio.run(_mesh_cost(n, events))


def cesql_rates(loops: int = 200_000) -> dict[str, float]:
    """Evaluations per second of a simple and a 3-clause compiled expression."""
    event = Event("com.example.order", "/orders", {"total": 5}, subject="o-1")
    exprs = {
        "simple": cesql.parse("type = 'com.example.order'"),
        "3-clause": cesql.parse(
            "type LIKE 'com.example.%' AND source = '/orders' AND EXISTS subject"
        ),
    }
    rates = {}
    for name, expr in exprs.items():
        evaluate = expr.evaluate
        start = time.perf_counter()
        for _ in range(loops):
            evaluate(event)
        rates[name] = loops / (time.perf_counter() - start)
    return rates


def run(quick: bool = False) -> dict[str, Any]:
    scale = 10 if quick else 1
    result: dict[str, Any] = {"cesql_evals_per_s": cesql_rates(200_000 // scale)}
    result["index_ns_per_event"] = {n: index_cost(n, 100_000 // scale) for n in SIZES}
    result["mesh_ns_per_event"] = {n: mesh_cost(n, 20_000 // scale) for n in SIZES}
    idx, msh = result["index_ns_per_event"], result["mesh_ns_per_event"]
    result["index_ratio_1000_vs_10"] = idx[1000] / idx[10]
    result["mesh_ratio_1000_vs_10"] = msh[1000] / msh[10]
    size = 100_000 if quick else 1_000_000
    result["cesql_like_text_chars"] = size
    result["cesql_like_worst_ms"] = cesql_bench.like_worst_ms(size, repeat=1 if quick else 3)
    return result


def main() -> None:
    result = run()
    for name, rate in result["cesql_evals_per_s"].items():
        print(f"CESQL {name:9s}: {rate:,.0f} evaluations/s")
    for n in SIZES:
        print(
            f"{n:5d} subscriptions: index {result['index_ns_per_event'][n]:8.0f} ns/event, "
            f"mesh publish->handled {result['mesh_ns_per_event'][n]:8.0f} ns/event"
        )
    print(
        f"1000 vs 10: index x{result['index_ratio_1000_vs_10']:.2f}, "
        f"mesh x{result['mesh_ratio_1000_vs_10']:.2f}"
    )
    like = result["cesql_like_worst_ms"]
    worst = max(like, key=like.get)
    print(
        f"CESQL LIKE worst cases against {result['cesql_like_text_chars']:,} characters: "
        f"at most {like[worst]:.1f} ms ({worst}); all: benchmarks/cesql_bench.py"
    )


if __name__ == "__main__":
    main()
