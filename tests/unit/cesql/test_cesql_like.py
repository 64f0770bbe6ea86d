"""LIKE matching: escapes, wildcards, fast paths, and no catastrophic backtracking."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.routing.cesql.like import compile_like


def reference(pattern: str, text: str) -> bool:
    """LIKE via a straightforward regex translation (fine for short test inputs)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), text, re.DOTALL) is not None


@pytest.mark.parametrize(("pattern", "text", "expected"), [
    ("abc", "abc", True), ("abc", "abcd", False), ("", "", True), ("", "a", False),
    ("%", "", True), ("%", "anything", True), ("%%", "", True), ("_", "", False),
    ("_", "\n", True), ("a%", "abc", True), ("a%", "ba", False), ("%c", "abc", True),
    ("%b%", "abc", True), ("%x%", "abc", False), ("a%c", "ac", True), ("a%c", "a", False),
    ("ab%bc", "abc", False), ("ab%bc", "abbc", True), ("_b_", "abc", True),
    ("a\\%", "a%", True), ("a\\%", "ab", False), ("a\\_", "a_", True), ("a\\_", "ab", False),
    ("a\\b", "a\\b", True), ("a\\\\%", "a\\%", True),
    ("a\\\\%", "a\\\\x", False),  # a backslash only escapes % and _
    ("\\", "\\", True),
    ("a%b%c", "a%b%c", True), ("%a_c%", "xxabcxx", True), ("%a_c", "abcabd", False),
    ("_%_", "a", False), ("_%_", "ab", True), ("%_x_%", "axb", True),
    ("Abc", "abc", False), ("é_", "éa", True),
])
def test_like(pattern: str, text: str, expected: bool) -> None:
    assert compile_like(pattern)(text) is expected
    assert reference(pattern, text) is expected


ALPHABET = st.sampled_from(["a", "b", "%", "_", "\\", ".", "\n"])


@settings(max_examples=400, deadline=None, database=None)
@given(pattern=st.lists(ALPHABET, max_size=8).map("".join),
       text=st.lists(st.sampled_from(["a", "b", "%", "_", "\\", ".", "\n"]), max_size=10)
       .map("".join))
def test_like_agrees_with_regex_reference(pattern: str, text: str) -> None:
    assert compile_like(pattern)(text) is reference(pattern, text)


@pytest.mark.parametrize("pattern", [
    "%a%a%a%a%a%a%a%a%a%a%a%a%b", "%a_a_a_a_a_a_a_a%b", "_%_%_%_%_%_%_%_%_%_%b",
])
def test_no_catastrophic_backtracking(pattern: str) -> None:
    matches = compile_like(pattern)
    text = "a" * 20_000
    start = time.perf_counter()
    assert matches(text) is False
    assert matches(text + "b") is True
    assert time.perf_counter() - start < 0.5
