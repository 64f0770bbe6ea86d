"""What the bigger examples share: how they show progress, and how they run as scripts.

Output is plain lines when stdout is not a terminal (CI logs, pipes: the tests read
these lines), or with ``--plain``; on a terminal, with rich installed (the ``examples``
extra), the same story is told above a live table that each example draws from its own
state. Either way the facts are the same: an example records them and says them once.

`main` runs an example's ``async def main_async(args)`` with what every example does
the same way: the common options (``--transport``, ``--timeout``, ``--plain``), the
transport URL resolved from the option or ``MESH_TRANSPORT``, errors as one line on
stderr, and Ctrl-C.

Not part of the mesh API: the examples import it as a sibling module (``python
examples/<name>.py`` puts ``examples/`` on ``sys.path``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol


class Output(Protocol):
    """Where an example's lines go.

    ``say`` is a line in both kinds of output (a step worth keeping on screen).
    ``note`` is a fact the live table shows: a line only in plain output; on a terminal
    the table is redrawn instead. ``refresh`` redraws the table after a state change
    that has no line of its own."""

    def say(self, text: str, style: str = "") -> None: ...
    def note(self, text: str) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


class PlainLines:
    """One line per fact, flushed at once: readable in logs and easy to assert on."""

    def say(self, text: str, style: str = "") -> None:
        print(text, flush=True)

    def note(self, text: str) -> None:
        print(text, flush=True)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class LiveTable:
    """Lines printed (styled) above a rich live table, which ``render`` draws from the
    example's state (it returns any rich renderable) on every refresh."""

    def __init__(self, render: Callable[[], Any]) -> None:
        from rich.console import Console
        from rich.live import Live

        self._render = render
        self.live = Live(render(), console=Console(), refresh_per_second=12)
        self.live.start()

    def say(self, text: str, style: str = "") -> None:
        self.live.console.print(text, style=style or None, markup=False, highlight=False)
        self.refresh()

    def note(self, text: str) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.live.update(self._render())

    def close(self) -> None:
        self.live.stop()


def output(plain: bool, render: Callable[[], Any]) -> Output:
    """A `LiveTable` drawn by ``render`` on a terminal when rich is installed and
    ``plain`` is false; `PlainLines` otherwise."""
    if not plain and sys.stdout.isatty() and importlib.util.find_spec("rich") is not None:
        return LiveTable(render)
    return PlainLines()


def resolve_transport(url: str | None, name: str) -> str:
    """``--transport``, else ``MESH_TRANSPORT``, else memory. A bare ``memory://`` is one
    private broker per Mesh, so it becomes ``memory://<name>``, which every agent of the
    example shares."""
    url = url or os.environ.get("MESH_TRANSPORT") or "memory://"
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "memory" and not rest.strip("/"):
        return f"memory://{name}"
    return url


def parser(doc: str | None, *, timeout: float) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc`` (the example's
    docstring), with the options every example takes; add the example's own to it."""
    result = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    result.add_argument(
        "--transport", metavar="URL", help="broker URL (default: MESH_TRANSPORT, else memory://)"
    )
    result.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        help="give up after this many seconds (default %(default)g)",
    )
    result.add_argument(
        "--plain", action="store_true", help="plain lines even on a terminal (default when piped)"
    )
    return result


def fail(message: object) -> int:
    """Say what went wrong on stderr, in one line; the exit code to return (1)."""
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace
) -> int:
    """Run ``run(args)`` to completion; its result is the exit code (130 on Ctrl-C)."""
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
