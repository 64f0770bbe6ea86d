"""A griffe extension for the documentation site (mkdocs.yml loads it for mkdocstrings).

The docstrings introduce literal blocks the reST way, with ``::`` (a line of its own, or
the end of the sentence before the block), because that reads well in the source and in
``help()``. Markdown already renders the indented block that follows as code, but would
print the ``::`` itself; this drops a lone ``::`` and turns a trailing one into ``:``, in
the docstrings mkdocstrings renders only (the source is not touched).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_LITERAL = re.compile(r"^(?P<text>.*?)(?P<space>\s*)::$")


def without_literal_markers(text: str) -> str:
    """``text`` with reST literal-block markers (a line ending in ``::``) made Markdown."""
    lines = []
    for line in text.split("\n"):
        match = _LITERAL.match(line)
        if match is None:
            lines.append(line)
        elif match["text"].strip():
            lines.append(match["text"] + ("" if match["space"] else ":"))
        else:
            lines.append("")
    return "\n".join(lines)


class RstLiterals(griffe.Extension):
    """Rewrite the docstring of every object griffe loads (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and "::" in obj.docstring.value:
            obj.docstring.value = without_literal_markers(obj.docstring.value)
