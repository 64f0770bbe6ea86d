"""LIKE pattern matching (section 3.4.3), compiled once per pattern.

``%`` matches any run of characters, ``_`` exactly one; ``\\%`` and ``\\_`` match
the literal characters; any other character (a backslash included) matches itself,
case-sensitively.

Patterns are split at ``%`` into fixed-length segments; ``_``-free segments are
matched with ``str`` methods, others with a precompiled ``re.Pattern`` that holds no
repetition. Each middle segment is matched at its leftmost position, which is
optimal for ``%``-only globs, so matching is linear-ish and cannot backtrack
exponentially whatever the pattern (no ReDoS from ``'%a%a%a%a%b'``). Common shapes
(``abc``, ``abc%``, ``%abc``, ``%abc%``) compile to a single ``str`` operation.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["Matcher", "compile_like"]

Matcher = Callable[[str], bool]

_ANY = object()  # a "_" in a segment


class _Segment:
    """A fixed-length piece of the pattern between two ``%``."""

    __slots__ = ("literal", "regex", "size")

    def __init__(self, chars: list[str | object]) -> None:
        self.size = len(chars)
        if any(c is _ANY for c in chars):
            source = "".join("." if c is _ANY else re.escape(str(c)) for c in chars)
            self.regex: re.Pattern[str] | None = re.compile(source, re.DOTALL)
            self.literal: str | None = None
        else:
            self.regex = None
            self.literal = "".join(str(c) for c in chars)

    def match_at(self, text: str, pos: int) -> bool:
        if self.literal is not None:
            return text.startswith(self.literal, pos)
        assert self.regex is not None
        return self.regex.match(text, pos) is not None

    def find(self, text: str, start: int, end: int) -> int:
        """Leftmost index >= start where the segment fits before ``end``, or -1."""
        if self.literal is not None:
            return text.find(self.literal, start, end)
        assert self.regex is not None
        found = self.regex.search(text, start, end)
        return -1 if found is None else found.start()


def _segments(pattern: str) -> list[list[str | object]]:
    segments: list[list[str | object]] = [[]]
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
            segments[-1].append(_ANY)
        else:
            segments[-1].append(c)
        i += 1
    return segments


def compile_like(pattern: str) -> Matcher:
    """A function telling whether a string matches the LIKE ``pattern``."""
    parts = [_Segment(chars) for chars in _segments(pattern)]
    if len(parts) == 1:
        (only,) = parts
        if only.literal is not None:
            return only.literal.__eq__
        regex = only.regex
        assert regex is not None
        size = only.size
        return lambda text: len(text) == size and regex.match(text) is not None
    first, last = parts[0], parts[-1]
    middle = [p for p in parts[1:-1] if p.size]
    if not middle and first.regex is None and last.regex is None:
        head, tail = first.literal or "", last.literal or ""
        if not tail:
            return (lambda text: True) if not head else (lambda text: text.startswith(head))
        if not head:
            return lambda text: text.endswith(tail)
        minimum = len(head) + len(tail)
        return lambda text: (len(text) >= minimum and text.startswith(head)
                             and text.endswith(tail))
    if (len(middle) == 1 and first.size == 0 and last.size == 0
            and middle[0].literal is not None):
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
        for segment in middle:
            found = segment.find(text, pos, end)
            if found < 0:
                return False
            pos = found + segment.size
        return True

    return match
