"""CESQL evaluation: ``python benchmarks/cesql_bench.py [N] [--like-size CHARS] [--repeat R]``.

Prints evaluations per second (best of 5 timed loops of N evaluations each) for a
simple equality, a 3-clause filter and a filter using the data extension; then the
LIKE worst cases: milliseconds for one evaluation of ``s LIKE '<pattern>'`` against
an event whose ``s`` is a 1 MB text (best of R runs), for patterns and texts built to
be as costly as we know how (long segments with many ``_`` that the text nearly
matches at many positions; see :func:`like_worst_cases`). ``--like-only`` skips the
throughput part. A harness can call :func:`run` (ops/s by benchmark name) and
:func:`like_worst_ms` (ms by case name) instead.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
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

#: Characters for periodic texts: printable, and neither a quote, a backslash, % nor _.
SAFE = string.ascii_letters + string.digits + " !#$&()*+,-./:;<=>?@[]^`{|}~"
#: Longest pattern in ``s LIKE '...'`` under the 4,096-character expression limit.
MAX_PATTERN = cesql.MAX_LENGTH - len("s LIKE ''")


def run(n: int = 200_000) -> dict[str, float]:
    """Evaluations per second for each benchmark (best of 5 loops of ``n`` evaluations)."""
    results: dict[str, float] = {}
    for name, text in BENCHMARKS.items():
        expression = cesql.parse(text)
        value, errors = expression.evaluate(EVENT)
        if value is not True or errors:
            raise RuntimeError(f"benchmark {name!r} does not match its event: {value!r} {errors}")
        timer = timeit.Timer(
            "evaluate(event)", globals={"evaluate": expression.evaluate, "event": EVENT}
        )
        best = min(timer.repeat(repeat=REPEAT, number=n))
        results[name] = n / best
    return results


def _holes(text: list[str], every: int, rnd: random.Random, chars: str) -> None:
    """Overwrite one position in each stretch of ``every`` with one of ``chars``."""
    for i in range(0, len(text) - every, every):
        text[i + rnd.randrange(every)] = rnd.choice(chars)


def like_worst_cases(size: int = 1_000_000) -> dict[str, tuple[str, str, bool]]:
    """LIKE worst cases: name -> (pattern, text of ``size`` characters, expected result).

    Deterministic (seeded by name). Patterns stay within :data:`MAX_PATTERN`.
    """
    n = size
    cases: dict[str, tuple[str, str, bool]] = {}
    a, ab = "a" * n, ("ab" * (n // 2 + 1))[:n]

    def rnd(name: str) -> random.Random:
        return random.Random(name)

    # the issue: a pattern of "_" (and a letter that never comes) against a 1 MB subject
    cases["%____...x% vs aaa"] = ("%" + "_" * 4080 + "x%", a, False)
    cases["%a_a_..._b% vs aaa"] = ("%" + "a_" * 2040 + "b%", a, False)
    cases["%a_a_..._b% vs aaa...ab"] = ("%" + "a_" * 2040 + "b%", a[:-1] + "b", True)
    cases["%a_a_..._c% vs abab"] = ("%" + "a_" * 2040 + "c%", ab, False)
    r = rnd("flip")
    flip = ["a" if k % 2 == 0 else "b" if r.random() > 0.3 else "_" for k in range(4085)]
    flip[3001] = "a"  # the one position that rules every alignment out
    cases["abab, 30% _, one flip"] = ("%" + "".join(flip) + "%", ab, False)
    # "a" at even positions with a "b" every 300, random "b"/"c" at odd positions
    r = rnd("holes")
    chars = ["a"] * n
    chars[1::2] = r.choices("bc", k=len(chars[1::2]))
    chars[::300] = ["b"] * len(chars[::300])
    holes = "".join(chars)
    cases["a?a? with holes vs %a_a_...%"] = ("%" + "a_" * 2040 + "a%", holes, False)
    chars[::150] = ["b"] * len(chars[::150])
    half = "".join("a" if k % 2 == 0 and r.random() < 0.5 else "_" for k in range(4084))
    cases["a?a? with holes/150 vs random a/_"] = ("%" + half + "a%", "".join(chars), False)
    # runs of one character with a hole every ~150 or ~60, against random halves
    for every, density, letters in ((150, 0.5, "a"), (150, 0.5, "ab"), (60, 0.3, "ab")):
        r = rnd(f"run{every}{density}{letters}")
        chars = list((letters * (n // len(letters) + 1))[:n])
        _holes(chars, every, r, "q")
        pattern = "".join(
            letters[k % len(letters)] if r.random() < density else "_" for k in range(4084)
        )
        cases[f"{letters * 2}... holes/{every} vs {int(density * 100)}% letters"] = (
            "%" + pattern + letters[0] + "%",
            "".join(chars),
            False,
        )
    # periodic texts over many characters, with holes, against the period with _
    for period, every in ((64, 500), (90, 150)):
        r = rnd(f"period{period}")
        cycle = SAFE[:period]
        chars = list((cycle * (n // period + 1))[:n])
        _holes(chars, every, r, cycle)
        pattern = "".join(cycle[k % period] if r.random() > 0.125 else "_" for k in range(4080))
        cases[f"period {period}, holes/{every}"] = ("%" + pattern + "%", "".join(chars), False)
    r = rnd("period64anomaly")
    cycle = SAFE[:64]
    pattern_chars = [cycle[k % 64] if r.random() > 0.125 else "_" for k in range(4080)]
    pattern_chars[2500] = cycle[(2500 + 7) % 64]
    cases["period 64, one anomaly"] = (
        "%" + "".join(pattern_chars) + "%",
        (cycle * (n // 64 + 1))[:n],
        False,
    )
    # many %, between short literal and gapped runs
    cases["%a%a%...% vs bbb"] = ("%a" * 2043 + "%", "b" * n, False)
    cases["%a%a%...%b% vs aaa"] = ("%a" * 2000 + "%b%", a, False)
    cases["%a_b%a_b%...% (1,021), sparse hits"] = (
        "%a_b" * 1021 + "%",
        (("a" * 997 + "acb") * (n // 1000 + 1))[:n],
        False,
    )
    cases["escapes %\\%_\\%_...\\_% vs %%%"] = ("%" + "\\%_" * 1360 + "\\_%", "%" * n, False)
    cases["Unicode %€_€_...中% vs €€€"] = ("%" + "€_" * 2040 + "中%", "€" * n, False)
    cases["Latin-1 %é_é_...ü% vs ééé"] = ("%" + "é_" * 2040 + "ü%", "é" * n, False)
    r = rnd("distinct")
    distinct = "".join(chr(0x4E00 + k) for k in range(4080))
    pattern_chars = list(distinct)
    pattern_chars[100] = "_"
    pattern_chars[2000] = chr(0x4E00 + 7)
    cases["4,080 distinct CJK, one anomaly"] = (
        "%" + "".join(pattern_chars) + "%",
        (distinct * (n // 4080 + 1))[:n],
        False,
    )
    r = rnd("random")
    letters = "".join(r.choices(string.ascii_lowercase, k=n))
    pattern = "".join(
        r.choice(string.ascii_lowercase) if r.random() > 0.3 else "_" for _ in range(4080)
    )
    cases["random letters, 30% _"] = ("%" + pattern + "%", letters, False)
    for name, (pattern, _, _) in cases.items():
        if len(pattern) > MAX_PATTERN:
            raise AssertionError(f"{name}: pattern of {len(pattern)} characters")
    return cases


def like_worst_ms(size: int = 1_000_000, repeat: int = 3) -> dict[str, float]:
    """Milliseconds for one evaluation of each LIKE worst case (best of ``repeat``).

    The whole filter path: ``cesql.parse("s LIKE '<pattern>'")`` once, then
    ``evaluate`` on an event holding the text; the result is checked.
    """
    results: dict[str, float] = {}
    for name, (pattern, text, expected) in like_worst_cases(size).items():
        expression = cesql.parse(f"s LIKE '{pattern}'")
        event = {"specversion": "1.0", "id": "1", "source": "/bench", "type": "t", "s": text}
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            value, errors = expression.evaluate(event)
            best = min(best, time.perf_counter() - started)
            if (value, errors) != (expected, []):
                raise RuntimeError(f"LIKE case {name!r} gave {value!r} {errors}")
        results[name] = best * 1000
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "n",
        nargs="?",
        type=int,
        default=200_000,
        help="evaluations per timed loop (throughput part)",
    )
    parser.add_argument(
        "--like-size",
        type=int,
        default=1_000_000,
        help="length of the LIKE worst-case texts (characters)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per LIKE case (best kept)")
    parser.add_argument("--like-only", action="store_true", help="skip the throughput part")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.like_only:
        print(f"CESQL evaluation, Python {sys.version.split()[0]}, best of {REPEAT} x {args.n:,}")
        for name, ops in run(args.n).items():
            print(
                f"  {name:<16} {ops:>12,.0f} evals/s  {1e9 / ops:>8.0f} ns/eval"
                f"   {BENCHMARKS[name]}"
            )
    print(
        f"LIKE worst cases, one evaluation against {args.like_size:,} characters, "
        f"best of {args.repeat}"
    )
    results = like_worst_ms(args.like_size, args.repeat)
    for name, ms in results.items():
        print(f"  {ms:9.2f} ms  {name}", flush=True)
    print(f"  {max(results.values()):9.2f} ms  worst")
    return 0


if __name__ == "__main__":
    sys.exit(main())
