"""LIKE pattern matching (CESQL 1.0 section 3.4.3), compiled once per pattern.

Semantics: ``%`` matches any run of characters (the empty one included), ``_``
exactly one character; ``\\%`` and ``\\_`` match the literal characters; any other
character, a backslash included, matches itself, case-sensitively. Characters are
code points; a newline is one like any other.

Algorithm. The pattern is split at ``%`` into fixed-length *segments*. The first
must match at offset 0, the last at the end, and the middle ones are placed
greedily, each at its leftmost fit after the previous one: placing a segment
earlier never hurts the ones after it, so greedy placement finds a match whenever
one exists, and the searches of successive segments scan disjoint stretches of the
text. Common shapes (``abc``, ``abc%``, ``%abc``, ``%abc%``) are one ``str``
operation, and a segment without ``_`` is found with ``str.find`` (two-way, linear).

A segment with ``_`` (:class:`_Gapped`) is where a naive search costs
O(text x segment): a regex tries every position and runs along the segment from
each. Here a short segment starts with a regex scan of a bounded stretch (early
matches cost nothing more); then the text is taken in windows of doubling size (up
to ``_MAX_WINDOW`` positions). In a window the candidate start positions are the
bits of one integer, and two ways of dropping candidates take turns, the second
kept within ``_CHECK_RATIO`` times what the first has spent:

* **by character**: ``bits(c)`` marks where character ``c`` occurs in the window
  (built in C: ``translate`` to ``'0'``/``'1'``, then ``int(..., 2)``), and each
  offset of ``c`` in the segment is ANDed in (``candidates &= bits(c) << offset``).
  The offsets of a character are grouped into arithmetic progressions (``aaaa``,
  or ``a_a_a_``), each ANDed by doubling in O(log length) operations, outlying
  offsets first. A character absent from few positions may instead *clear* the
  candidates that conflict with each absence (:meth:`_Gapped.clear`). Characters
  go rarest first (estimated on a sample), except that one on which candidate
  checks keep failing jumps the queue.
* **by candidate** (a *sweep*, :meth:`_Gapped.sweep`): the leftmost candidate is
  checked from its end, block by block, with precompiled regular expressions
  holding escaped literals and fixed ``.{k}`` gaps only. Its last mismatch, a text
  position ``x`` holding ``y``, drops every candidate between the two that puts
  another character than ``y`` (and not ``_``) on ``x``; an offset at which checks
  keep failing is ANDed in for all candidates at once.

A window ends when no candidate is left, when a check succeeds (the leftmost
remaining candidate is a match), or when every character has been ANDed in (the
leftmost remaining bit is then exact).

Why this is linear, and its worst case. Nothing backtracks, and each step touches
the window a bounded number of times: a character costs one ``translate`` and one
``int()`` (about 3 ns per position; past ``_PLANES_AFTER`` characters a window
derives bitsets from bit planes, so an ASCII window makes at most 14 such passes,
see :class:`_Text`), then one shift and one AND of window-sized integers (30
positions per machine digit) per doubling step, or a clearing that costs a few
small-integer operations per absence; a check costs at most the segment's literal
characters and drops at least the candidate checked, and checks get at most
``_CHECK_RATIO`` times the characters' work, except to finish off a window whose
remaining candidates are estimated to cost less than the steps left. Windows
overlap by less than a segment, so a search costs O(n x (passes + steps / 30)) for
``n`` text positions, the steps being bounded by the segment's literal characters
(at most 4,087 under the expression limit), never O(n x segment). The costliest
inputs known are texts that agree with a long segment at most of the positions
without matching (periodic texts and runs of one character with scattered
"holes"): ``benchmarks/cesql_bench.py`` times them against 1 MB texts, within
about 25 ms on the development machine (a naive search took up to 4 s). Every step
adds its estimated cost to :attr:`_Text.work`, a deterministic measure the tests
use instead of timing.

Text that is not ASCII is classified from its Latin-1 or UTF-32 encoding with
``bytes.translate``, as ``str.translate`` has no fast path for it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from functools import lru_cache
from itertools import chain, pairwise
from typing import Final

__all__ = ["Matcher", "compile_like"]

Matcher = Callable[[str], bool]
#: A fixed-length piece of pattern: a character, or None for ``_``.
Chars = list[str | None]

#: Segments up to this size start a search with a regex scan of a stretch of
#: ``_DIRECT // (size + 4)`` positions (a regex scan costs up to size steps each).
_DIRECT_SIZE: Final = 64
_DIRECT: Final = 1 << 15
#: Candidate positions of the first window of a search (at least 4 x the segment
#: size); windows then double up to _MAX_WINDOW.
_FIRST_WINDOW: Final = 4096
_MAX_WINDOW: Final = 1 << 17
#: Positions sampled per window to tell rare characters from frequent ones.
_SAMPLE: Final = 128
#: A text lane switches to bit planes once it has built this many values in a window.
_PLANES_AFTER: Final = 7
#: Literal characters per precompiled regex when checking one candidate.
_BLOCK: Final = 32
#: Candidate positions a sweep works on (as one small integer), and per slice when
#: dropping the candidates that conflict with a character's absences (a multiple of 8).
_SWEEP: Final = 1 << 13
_SLICE: Final = 1 << 13
#: Checks may spend up to _CHECK_RATIO times what ANDing characters in has spent; a
#: sweep starts once it may spend _SWEEP_MIN window-sized operations (its setup
#: costs about three).
_CHECK_RATIO: Final = 2
_SWEEP_MIN: Final = 16
#: Check every candidate once at most this many are left after a character, or once
#: checking them all would cost at most _PREFER_CHECKS bitset builds.
_FEW: Final = 16
_PREFER_CHECKS: Final = 2
#: While ANDing in, recount the candidates every _RECOUNT steps and check them all
#: if that looks cheaper than the steps left (a check costs _CHECK_GUESS_NS before
#: any was measured).
_RECOUNT: Final = 16
_CHECK_GUESS_NS: Final = 3000

# Estimated costs in ns on a 2020s machine. They only steer the alternation above and
# make up _Text.work; being deterministic, they keep both reproducible.
#: Classifying one position (a translate plus an int() digit).
_BUILD_NS: Final = 3
#: ANDing one bit plane: 1 ns per this many positions.
_PLANE_DIV: Final = 100
#: A shift and an AND of window-sized integers: 1 ns per this many positions, plus:
_OP_DIV: Final = 40
_OP_NS: Final = 60
#: One regex call; one Python comparison; dropping the candidates conflicting with one
#: absence of a character.
_CALL_NS: Final = 500
_CHECK_NS: Final = 200
_HOLE_NS: Final = 2300
#: Splitting text that is not Latin-1 into UTF-32 lanes, per character.
_ENCODE_NS: Final = 4


# --- the subject text, as bitsets -------------------------------------------------------


class _ZeroTable(dict[int, int]):
    """A ``str.translate`` table sending every code point to ``'0'`` except its keys."""

    def __missing__(self, key: int) -> int:
        return 48  # "0"


@lru_cache(maxsize=1024)
def _str_table(code: int) -> _ZeroTable:
    """Marks code point ``code`` (ASCII text)."""
    table = _ZeroTable()
    table[code] = 49  # "1"
    return table


@lru_cache(maxsize=8)
def _str_plane_table(bit: int) -> _ZeroTable:
    """Marks the ASCII code points with ``bit`` set."""
    table = _ZeroTable()
    for code in range(128):
        if code >> bit & 1:
            table[code] = 49
    return table


@lru_cache(maxsize=256)
def _byte_table(value: int) -> bytes:
    """Marks byte ``value``."""
    return b"0" * value + b"1" + b"0" * (255 - value)


@lru_cache(maxsize=8)
def _byte_plane_table(bit: int) -> bytes:
    """Marks the bytes with ``bit`` set."""
    return bytes(48 + (value >> bit & 1) for value in range(256))


class _Text:
    """The subject text of one evaluation, with position bitsets built on demand.

    ``bits(char, start, stop)`` is an integer whose bit ``stop - 1 - i`` is set iff
    ``text[i] == char``, for ``start <= i < stop``: the first position is the most
    significant bit, so ``bits << k`` moves the mark of position ``i + k`` onto
    position ``i``.

    The text is seen as *lanes* of small code units: one for ASCII text (``str``,
    using ``str.translate``'s fast path) or Latin-1 text (its encoding), three for
    other text (the significant bytes of its UTF-32 encoding), each classified with
    ``bytes.translate``. A character's bitset is the AND of its lanes' value bitsets.
    Building one costs a ``translate`` and an ``int()`` over the window; once a lane
    has built ``_PLANES_AFTER`` values in the current window, its bit planes (7, 8
    or 5 builds) are built and further values are ANDs of planes, about a hundredth
    of a build each: a window never pays for more than ``_PLANES_AFTER`` + 8 builds
    per lane, however many distinct characters it tests.

    ``work`` accumulates the estimated cost (ns) of the searches made on this text.
    """

    __slots__ = ("_lanes", "_planes", "_values", "_window", "text", "work")

    def __init__(self, text: str) -> None:
        self.text = text
        self.work = 0
        # (data, value bits) per lane
        self._lanes: list[tuple[str | bytes, int]]
        if text.isascii():
            self._lanes = [(text, 7)]
        else:
            try:
                self._lanes = [(text.encode("latin-1"), 8)]
            except UnicodeEncodeError:
                wide = text.encode("utf-32-be", "surrogatepass")
                self._lanes = [(wide[1::4], 5), (wide[2::4], 8), (wide[3::4], 8)]
                self.work += _ENCODE_NS * len(text)
        self._window = (0, 0)
        self._values: list[dict[int, int]] = [{} for _ in self._lanes]
        self._planes: list[list[int] | None] = [None for _ in self._lanes]

    def bits(self, char: str, start: int, stop: int) -> int:
        if self._window != (start, stop):
            self._window = (start, stop)
            self._values = [{} for _ in self._lanes]
            self._planes = [None for _ in self._lanes]
        code = ord(char)
        if len(self._lanes) == 1:
            if code >> self._lanes[0][1]:
                return 0
            return self._value(0, code, start, stop)
        result = -1
        for lane, value in enumerate((code >> 16, (code >> 8) & 255, code & 255)):
            result &= self._value(lane, value, start, stop)
            if not result:
                break
        return result

    def _value(self, lane: int, value: int, start: int, stop: int) -> int:
        values = self._values[lane]
        found = values.get(value)
        if found is not None:
            return found
        data, width = self._lanes[lane]
        span = stop - start
        planes = self._planes[lane]
        if planes is None and len(values) >= _PLANES_AFTER:
            planes = self._planes[lane] = [
                self._build(data[start:stop], bit, True) for bit in range(width)
            ]
            self.work += _BUILD_NS * span * width
        if planes is None:
            found = self._build(data[start:stop], value, False)
            self.work += _BUILD_NS * span
        else:
            full = (1 << span) - 1
            found = full
            for bit, plane in enumerate(planes):
                found &= plane if value >> bit & 1 else plane ^ full
                if not found:
                    break
            self.work += span * width // _PLANE_DIV
        values[value] = found
        return found

    @staticmethod
    def _build(data: str | bytes, value: int, plane: bool) -> int:
        """The bitset of ``data`` positions equal to ``value`` (or with bit ``value`` set)."""
        if isinstance(data, str):
            return int(data.translate(_str_plane_table(value) if plane else _str_table(value)), 2)
        return int(data.translate(_byte_plane_table(value) if plane else _byte_table(value)), 2)


# --- segments --------------------------------------------------------------------------


class _Literal:
    """A segment without ``_``: ``str`` methods."""

    __slots__ = ("literal", "size")

    def __init__(self, literal: str) -> None:
        self.literal = literal
        self.size = len(literal)

    def match_at(self, text: str, pos: int) -> bool:
        return text.startswith(self.literal, pos)


#: A progression of one character's offsets: (first offset, number of offsets).
Piece = tuple[int, int]
#: How to AND one character in: (character, step of its progressions, progressions,
#: number of shift-and operations they take).
Plan = tuple[str, int, list[Piece], int]


def _plan(char: str, offsets: list[int]) -> Plan:
    """How to AND ``char`` in at its sorted ``offsets`` (see :data:`Plan`)."""
    step, pieces = _progressions(offsets)
    longest = max(n for _, n in pieces)
    return char, step, pieces, longest.bit_length() + sum(n.bit_count() for _, n in pieces)


def _progressions(offsets: list[int]) -> tuple[int, list[Piece]]:
    """Group sorted ``offsets`` into progressions of one common step: ``(step, pieces)``.

    Tried steps: 1, 2 and the commonest gaps between consecutive offsets; the one
    kept minimises the shift-and operations the pieces cost (see
    :meth:`_Gapped.terms`). Pieces whose residue class holds few offsets come
    first: an offset out of line with the others (``a`` at an odd offset among
    even ones) is the likeliest to rule candidates out.
    """
    if len(offsets) < 3:
        return 1, [(o, 1) for o in offsets]
    gaps = Counter(b - a for a, b in pairwise(offsets))
    steps = {1, 2} | {gap for gap, _ in gaps.most_common(3)}
    best: tuple[int, int, list[Piece], dict[int, int]] | None = None
    for step in sorted(steps):
        pieces: list[Piece] = []
        classes: dict[int, int] = {}
        open_piece: dict[int, int] = {}  # residue -> index of its last piece
        for o in offsets:
            r = o % step
            classes[r] = classes.get(r, 0) + 1
            i = open_piece.get(r)
            if i is not None and pieces[i][0] + pieces[i][1] * step == o:
                pieces[i] = (pieces[i][0], pieces[i][1] + 1)
            else:
                open_piece[r] = len(pieces)
                pieces.append((o, 1))
        longest = max(n for _, n in pieces)
        cost = longest.bit_length() + sum(n.bit_count() for _, n in pieces)
        if best is None or cost < best[0]:
            best = (cost, step, pieces, classes)
    assert best is not None
    _, step, pieces, classes = best
    pieces.sort(key=lambda piece: (classes[piece[0] % step], -piece[1]))
    return step, pieces


class _Gapped:
    """A segment with ``_``, searched as the module docstring describes."""

    __slots__ = (
        "_conflicts",
        "_regex",
        "blocks",
        "by_char",
        "chars",
        "literals",
        "offsets",
        "plans",
        "size",
    )

    def __init__(self, chars: Chars) -> None:
        self.chars = chars
        self.size = len(chars)
        self._regex: re.Pattern[str] | None = None  # for short segments: see scan()
        offsets: dict[str, list[int]] = {}
        for k, c in enumerate(chars):
            if c is not None:
                offsets.setdefault(c, []).append(k)
        self.offsets = offsets
        #: Bit k is set iff offset k holds a character (not ``_``).
        self.literals = _mask([k for v in offsets.values() for k in v], self.size)
        #: Per character, most frequent in the segment first (a tie-break for rarity).
        self.plans: list[Plan] = sorted(
            (_plan(c, v) for c, v in offsets.items()), key=lambda plan: -len(offsets[plan[0]])
        )
        self.by_char = {plan[0]: plan for plan in self.plans}
        #: For checking one candidate (compiled now: a few ms for the longest segments).
        self.blocks = _Block.split(chars, _BLOCK)
        self._conflicts: dict[str, int] = {}

    def match_at(self, text: str, pos: int) -> bool:
        """Whether the segment matches ``text`` at ``pos`` (cost: its literal characters)."""
        if len(text) - pos < self.size:
            return False
        return all(block.regex.match(text, pos + block.first) for block in self.blocks)

    def scan(self) -> re.Pattern[str]:
        """The whole segment as one regex, compiled on first use (short segments only)."""
        if self._regex is None:
            self._regex = re.compile(_regex_source(self.chars), re.DOTALL)
        return self._regex

    def find(self, view: _Text, start: int, stop: int) -> int:
        """The leftmost ``p`` in ``[start, stop)`` where the segment fits, or -1.

        ``stop - 1 + size`` must not exceed the text length.
        """
        if stop <= start:
            return -1
        if not self.plans:  # only "_": any position fits
            return start
        if self.size <= _DIRECT_SIZE:
            # A regex scan tries every position (and the last size - 1 ones against a
            # shortened text), so keep it to short segments and a bounded stretch.
            direct = min(stop, start + _DIRECT // (self.size + 4))
            view.work += (direct - start + self.size) * (self.size + 4)
            found = self.scan().search(view.text, start, direct - 1 + self.size)
            if found is not None:
                return found.start()
            start = direct
        width = max(_FIRST_WINDOW, 4 * self.size)
        while start < stop:
            end = min(stop, start + width)
            found_at = self.window(view, start, end)
            if found_at >= 0:
                return found_at
            start = end
            width = min(2 * width, _MAX_WINDOW)
        return -1

    def window(self, view: _Text, start: int, stop: int) -> int:
        """The leftmost fit in ``[start, stop)``, or -1: one window of :meth:`find`.

        Characters are ANDed in one operation at a time (``terms`` generators, the
        most recently started on top of ``active``), alternating with sweeps of
        candidate checks, which may spend ``_CHECK_RATIO`` times as much.
        """
        text = view.text
        span = stop - start + self.size - 1  # text positions the window reads
        top = start + span - 1
        # Bit top - p stands for candidate p, start <= p < stop.
        candidates = ((1 << (stop - start)) - 1) << (self.size - 1)
        pending = self.order(text, start, start + span)
        by_char = self.by_char
        built: dict[str, int] = {}  # the window's bitset of each character ANDed in
        started: set[str] = set()
        applied: set[int] = set()  # offsets whose failures were dropped in one AND
        failures: dict[int, int] = {}  # failed checks per offset
        active: list[Iterator[tuple[int, int]]] = []
        op_ns = span // _OP_DIV + _OP_NS
        spent_bits = spent_checks = checks = 0
        steps = todo = 0  # shift-and steps done, and planned for the characters started
        few = anded = False
        while candidates:
            allowed = _CHECK_RATIO * spent_bits - spent_checks
            if few or (anded and allowed > _SWEEP_MIN * op_ns):
                budget = None if few else allowed
                candidates, found, cost, k, count = self.sweep(
                    text, top, candidates, budget, applied, failures, built
                )
                spent_checks += cost
                checks += count
                if found >= 0:
                    view.work += spent_bits + spent_checks
                    return found
                char = self.chars[k] if k >= 0 else None
                if (
                    char is not None
                    and char not in started
                    and candidates.bit_count() * spent_checks > _BUILD_NS * span * checks
                ):
                    # Checks keep failing on a character not ANDed in yet, and checking
                    # the candidates left would cost more than its bitset: start it.
                    started.add(char)
                    todo += by_char[char][3]
                    active.append(self.terms(view, by_char[char], start, span, built, op_ns))
                continue
            if not active:
                if (
                    checks
                    and candidates.bit_count() * spent_checks
                    <= _PREFER_CHECKS * _BUILD_NS * span * checks
                ):
                    few = True  # checking every candidate left costs less than a bitset
                    continue
                plan = next((plan for plan in pending if plan[0] not in started), None)
                if plan is None:  # every character is in: the leftmost bit is exact
                    view.work += spent_bits + spent_checks
                    return start + span - candidates.bit_length()
                started.add(plan[0])
                todo += plan[3]
                active.append(self.terms(view, plan, start, span, built, op_ns))
            step = next(active[-1], None)
            if step is None:
                active.pop()
                few = candidates.bit_count() <= _FEW
                spent_bits += op_ns
                continue
            term, cost = step
            candidates &= term
            anded = True
            spent_bits += cost
            steps += 1
            if steps % _RECOUNT == 0:
                # Few candidates left and many operations to go: check them instead.
                spent_bits += op_ns
                per_check = spent_checks // checks if checks else _CHECK_GUESS_NS
                few = candidates.bit_count() * per_check < (todo - steps) * op_ns
        view.work += spent_bits + spent_checks
        return -1

    def terms(
        self, view: _Text, plan: Plan, start: int, span: int, built: dict[str, int], op_ns: int
    ) -> Iterator[tuple[int, int]]:
        """The masks ANDing one character in, one at a time, each with its cost (ns).

        The bitset of the character is recorded in ``built``. When the character is
        absent from few positions of the window, one mask from :meth:`clear` may
        replace the remaining shift-and steps.
        """
        char, step, pieces, ops = plan
        before = view.work
        bits = view.bits(char, start, start + span)
        built[char] = bits
        cost = view.work - before
        view.work = before
        if not bits:
            yield 0, cost
            return
        # When the character is rarely absent, clearing the candidates that conflict
        # with its absences may beat the steps; ANDing usually empties the window
        # long before its last step, so it goes first, for up to half what clearing
        # would cost (clearing is then at most 1.5 times the better of the two).
        clearing = (span - bits.bit_count()) * _HOLE_NS
        budget = clearing // 2 if clearing < ops * op_ns else None
        spent = 0
        powers = [bits]
        for offset, length in pieces:
            # AND in bits << (offset + i * step) for i < length, by doubling:
            # powers[t] holds the AND over i < 2**t.
            covered = t = 0
            while length:
                if length & 1:
                    while len(powers) <= t:
                        last = powers[-1]
                        powers.append(last & (last << ((1 << (len(powers) - 1)) * step)))
                        cost += op_ns
                    if budget is not None and spent > budget:
                        keep, cleared = self.clear(view.text, bits, start, span)
                        yield keep, cost + cleared
                        return
                    yield powers[t] << (offset + covered * step), cost + op_ns
                    spent += cost + op_ns
                    cost = 0
                    covered += 1 << t
                length >>= 1
                t += 1

    def clear(self, text: str, bits: int, start: int, span: int) -> tuple[int, int]:
        """The candidates of a window (as in :meth:`window`) compatible with every position
        where ``bits`` (a character's bitset) is 0, and the estimated cost (ns).

        Each such position ``x`` drops the candidates that put a character other than
        ``text[x]`` on it (including every offset of the character). The masks are
        ORed into slices of ``_SLICE`` candidates, small integers, joined at the end.
        """
        size = self.size
        width = span - size + 1  # candidates: start <= p < start + width
        count = -(-width // _SLICE)
        kills = [0] * count
        absent = bin(((1 << span) - 1) ^ bits)  # "0b1...": index i is position first + i
        first = start + span - (len(absent) - 2) - 2
        cost = (span // _OP_DIV + _OP_NS) * 4 + count * _OP_NS
        i = absent.find("1", 2)
        conflicts = self.conflicts
        while i >= 0:
            x = first + i
            mask = conflicts(text[x])
            low = max(0, x - size + 1 - start) // _SLICE
            high = min(width - 1, x - start) // _SLICE
            for s in range(low, high + 1):
                shift = start + (s + 1) * _SLICE - 1 - x  # candidate x - j: local bit j + shift
                kills[s] |= mask << shift if shift >= 0 else mask >> -shift
            cost += _HOLE_NS
            i = absent.find("1", i + 1)
        full = (1 << _SLICE) - 1
        killed = int.from_bytes(
            b"".join((k & full).to_bytes(_SLICE // 8, "big") for k in kills), "big"
        )
        shift = span - count * _SLICE
        killed = killed << shift if shift >= 0 else killed >> -shift
        return ((1 << span) - 1) ^ killed, cost

    def order(self, text: str, start: int, stop: int) -> Iterator[Plan]:
        """The characters' plans, rarest in a sample of ``text[start:stop]`` first.

        Lazy, so that a window testing few characters does not pay for sorting many.
        """
        if len(self.plans) == 1:
            return iter(self.plans)
        stride = max(1, (stop - start) // _SAMPLE)
        seen = Counter(text[start:stop:stride])
        by_char = self.by_char
        frequent = sorted(
            ((n, c) for c, n in seen.items() if c in by_char), key=lambda item: item[0]
        )
        rare = (plan for plan in self.plans if plan[0] not in seen)
        return chain(rare, (by_char[c] for _, c in frequent))

    def sweep(
        self,
        text: str,
        top: int,
        candidates: int,
        budget: int | None,
        applied: set[int],
        failures: dict[int, int],
        built: dict[str, int],
    ) -> tuple[int, int, int, int, int]:
        """Check candidates from the leftmost on, for about ``budget`` ns (None: no limit).

        ``candidates`` is as in :meth:`window` (bit ``top - p`` for candidate ``p``).
        The sweep works on a slice of at most ``_SWEEP`` candidates, a small integer:
        each failure at text position ``x`` drops the slice's candidates that put a
        character other than ``text[x]`` on ``x``. An offset where checks failed twice
        (``failures``) is worth one AND over all candidates, done at the end of the
        sweep if its character's bitset is in ``built``; if not, the sweep stops so
        that the caller may start that character. Offsets go to ``applied`` once.

        Returns ``(candidates, found, cost, k, checks)``: the candidates left, the
        first one that fits (-1: none), the estimated cost (ns), the offset that
        stopped the sweep (-1: none), and the number of checks made.
        """
        length = candidates.bit_length()
        shift = max(0, length - _SWEEP)
        local = before = candidates >> shift  # bit base - p for candidate p
        base = top - shift
        op_ns = local.bit_length() // _OP_DIV + _OP_NS
        cost = length // _OP_DIV + _OP_NS
        stop = -1
        count = 0
        shared: list[int] = []  # offsets to AND in at the end
        while local and (budget is None or cost < budget):
            p = base + 1 - local.bit_length()
            k, spent = self.mismatch(text, p)
            cost += spent + 2 * op_ns
            count += 1
            if k < 0:
                return candidates, p, cost, -1, count
            x = p + k
            conflicts = self.conflicts(text[x])
            offset = base - x  # candidate x - j has bit offset + j
            local ^= local & (conflicts << offset if offset >= 0 else conflicts >> -offset)
            if k not in applied:
                seen = failures[k] = failures.get(k, 0) + 1
                if seen > 1:
                    applied.add(k)
                    if self.chars[k] in built:
                        shared.append(k)
                    else:
                        stop = k
                        break
        if local != before:
            candidates ^= (before ^ local) << shift
            cost += 2 * (length // _OP_DIV + _OP_NS)
        for k in shared:
            char = self.chars[k]
            assert char is not None
            candidates &= built[char] << k
            cost += length // _OP_DIV + _OP_NS
        return candidates, -1, cost, stop, count

    def mismatch(self, text: str, pos: int) -> tuple[int, int]:
        """The offset of the last mismatch with the segment placed at ``pos`` (-1: none).

        The last one, because the candidates dropped for conflicting with it are the
        ones between ``pos`` and it. Also returns the estimated cost (ns): a regex call
        per block of ``_BLOCK`` literal characters, from the end back to the failing
        one, then Python comparisons within it.
        """
        cost = 0
        for block in reversed(self.blocks):
            cost += _CALL_NS
            if block.regex.match(text, pos + block.first) is None:
                for k, c in reversed(block.checks):
                    cost += _CHECK_NS
                    if text[pos + k] != c:
                        return k, cost
        return -1, cost

    def conflicts(self, char: str) -> int:
        """Bit k set iff offset k holds a character other than ``char`` (not ``_``)."""
        mask = self._conflicts.get(char)
        if mask is None:
            same = _mask(self.offsets.get(char, []), self.size)
            mask = self._conflicts[char] = self.literals & ~same
        return mask


def _mask(offsets: list[int], size: int) -> int:
    """The integer with bit k set for each k in ``offsets`` (all below ``size``)."""
    digits = bytearray(b"0") * size
    for k in offsets:
        digits[size - 1 - k] = 49  # "1"
    return int(digits, 2) if size else 0


class _Block:
    """Consecutive literal characters of a segment, with a regex matching them in place."""

    __slots__ = ("checks", "first", "regex")

    def __init__(self, chars: Chars, checks: list[tuple[int, str]]) -> None:
        self.checks = checks  # (offset, character)
        self.first = checks[0][0]
        self.regex = re.compile(_regex_source(chars[self.first : checks[-1][0] + 1]), re.DOTALL)

    @classmethod
    def split(cls, chars: Chars, size: int) -> list[_Block]:
        """The literal characters of ``chars`` in blocks of ``size``."""
        literals = [(k, c) for k, c in enumerate(chars) if c is not None]
        return [cls(chars, literals[i : i + size]) for i in range(0, len(literals), size)]


def _regex_source(chars: Chars) -> str:
    """A regex for ``chars``: escaped literal runs and ``.{k}`` gaps (no repetition)."""
    out: list[str] = []
    gap = 0
    for c in chars:
        if c is None:
            gap += 1
            continue
        if gap:
            out.append("." if gap == 1 else f".{{{gap}}}")
            gap = 0
        out.append(re.escape(c))
    if gap:
        out.append("." if gap == 1 else f".{{{gap}}}")
    return "".join(out)


def _segments(pattern: str) -> list[Chars]:
    """``pattern`` split at unescaped ``%``; ``_`` becomes None."""
    segments: list[Chars] = [[]]
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n and pattern[i + 1] in "%_":
            segments[-1].append(pattern[i + 1])
            i += 2
            continue
        if c == "%":
            segments.append([])
        elif c == "_":
            segments[-1].append(None)
        else:
            segments[-1].append(c)
        i += 1
    return segments


Segment = _Literal | _Gapped


def _segment(chars: Chars) -> Segment:
    if any(c is None for c in chars):
        return _Gapped(chars)
    return _Literal("".join(c for c in chars if c is not None))


def compile_like(pattern: str) -> Matcher:
    """A function telling whether a string matches the LIKE ``pattern``."""
    made: dict[tuple[str | None, ...], Segment] = {}  # repeated segments share one
    parts: list[Segment] = []
    for chars in _segments(pattern):
        key = tuple(chars)
        if key not in made:
            made[key] = _segment(chars)
        parts.append(made[key])
    if len(parts) == 1:
        (only,) = parts
        if isinstance(only, _Literal):
            return only.literal.__eq__
        size, match_at = only.size, only.match_at
        return lambda text: len(text) == size and match_at(text, 0)
    first, last = parts[0], parts[-1]
    middle = [p for p in parts[1:-1] if p.size]
    if not middle and isinstance(first, _Literal) and isinstance(last, _Literal):
        head, tail = first.literal, last.literal
        if not tail:
            return (lambda text: True) if not head else (lambda text: text.startswith(head))
        if not head:
            return lambda text: text.endswith(tail)
        minimum = len(head) + len(tail)
        return lambda text: len(text) >= minimum and text.startswith(head) and text.endswith(tail)
    if len(middle) == 1 and first.size == 0 and last.size == 0 and isinstance(middle[0], _Literal):
        needle = middle[0].literal
        return lambda text: needle in text
    minimum = sum(p.size for p in parts)

    def match(text: str) -> bool:
        if len(text) < minimum:
            return False
        if first.size and not first.match_at(text, 0):
            return False
        end = len(text) - last.size
        if last.size and not last.match_at(text, end):
            return False
        pos = first.size
        view: _Text | None = None
        for segment in middle:
            if isinstance(segment, _Literal):
                found = text.find(segment.literal, pos, end)
            else:
                if view is None:
                    view = _Text(text)
                found = segment.find(view, pos, end - segment.size + 1)
            if found < 0:
                return False
            pos = found + segment.size
        return True

    return match
