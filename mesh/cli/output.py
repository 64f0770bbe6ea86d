"""How the ``mesh`` command writes: rich (tables, colours) on a terminal, plain text
everywhere else.

Scripts, pipes, CI logs and tests read the plain form, so it is a contract: one record
per line, stable upper-case column headers, no escape codes, no wrapping. A stream
counts as a terminal only if it says so (``isatty``); the rich form is for people and
may change. Errors always go to stderr as one ``error: ...`` line, red on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping, Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for pipes, files, StringIO)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def console(stream: TextIO) -> Console:
    """A rich console on ``stream`` that keeps each printed line one logical line (the
    terminal wraps it) and highlights nothing it was not told to."""
    return Console(file=stream, highlight=False, soft_wrap=True)


def error(message: str, stream: TextIO | None = None) -> None:
    """Print ``error: message`` on stderr: the one line a failed command leaves."""
    say(message, label="error:", style="bold red", stream=stream)


def say(
    message: str,
    *,
    label: str = "",
    style: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """One status line (stderr by default): ``label`` styled on a terminal, the message
    as it is (never read as rich markup: it may quote user input)."""
    out = stream if stream is not None else sys.stderr
    if is_terminal(out):
        text = Text.assemble((label, style or ""), " " if label else "", message)
        console(out).print(text)
        out.flush()
    else:
        print(f"{label} {message}" if label else message, file=out, flush=True)


def plain_table(columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> str:
    """Rows as space-aligned columns under an upper-case header, trailing blanks cut:
    the scriptable form of every CLI table (``awk``/``split()`` friendly)."""
    widths = {col: max([len(col)] + [len(row[col]) for row in rows]) for col in columns}
    lines = ["  ".join(col.upper().ljust(widths[col]) for col in columns).rstrip()]
    lines += ["  ".join(row[col].ljust(widths[col]) for col in columns).rstrip() for row in rows]
    return "\n".join(lines)


def rich_table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, str]],
    *,
    title: str | None = None,
    keep: Collection[str] = (),
    fold: Collection[str] = (),
    right: Collection[str] = (),
) -> Table:
    """The terminal form of `plain_table`: columns in ``keep`` are never cut (they
    identify a row), ``fold`` columns wrap instead of being cut, ``right`` ones are
    right-aligned; every other column is cut with an ellipsis when space runs out."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        width = max([len(col)] + [len(row[col]) for row in rows])
        table.add_column(
            col,
            overflow="fold" if col in fold else "ellipsis",
            justify="right" if col in right else "left",
            no_wrap=col in keep,
            min_width=width if col in keep else None,
        )
    for row in rows:
        table.add_row(*(Text(row[col]) for col in columns))
    return table


def cut(text: str, width: int) -> str:
    """``text`` on one line (runs of whitespace become one blank), at most ``width``
    characters: a longer one ends in an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "\u2026"
