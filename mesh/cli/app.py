"""The typer app every ``mesh`` command registers on, the options they share and the
helpers their bodies need (configuration, signals, exit codes, writing a file).

``--transport``, ``--config`` and ``--log-level`` are accepted before the command name
and after it (``mesh --transport URL tail`` and ``mesh tail --transport URL``); a value
given after the name wins. `common` merges the two for a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mesh import __version__, logs
from mesh.cli.output import say
from mesh.config import MeshConfig
from mesh.errors import MeshError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PRIVATE_MEMORY_NOTE = (
    "On memory:// the command runs its own private in-process broker, so it only "
    "sees events of this process: point --transport (or MESH_TRANSPORT) at the broker "
    "your apps use."
)

#: The rich help panel the shared options are listed in.
CONNECTION = "Connection and logging"


class UsageError(Exception):
    """A command line the CLI cannot act on. Exits 2 (like a parse error) with what to do.

    Kept apart from `MeshError` because the fix is in the command line, not in the
    mesh or the broker, and scripts can tell the two apart by exit code.
    """


class LogFormat(StrEnum):
    """``--log-format`` values (see `mesh.logs`)."""

    text = "text"
    json = "json"


class LogLevel(StrEnum):
    """``--log-level`` values (the logging module's level names, lower case)."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class _Commands(TyperGroup):
    """The ``mesh`` group, listing its commands in the order people reach for them
    (typer would list them in registration order, which is import order)."""

    ORDER = ("run", "publish", "tail", "dlq", "agents", "top", "docs", "contracts", "transports")

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: self.ORDER.index(n) if n in self.ORDER else 99)


def _show_version(value: bool) -> None:
    if value:
        print(f"event-mesh {__version__}")
        raise typer.Exit(EXIT_OK)


app = typer.Typer(
    name="mesh",
    cls=_Commands,
    help="Run and inspect event-mesh applications.\n\n"
    "Every command reads its configuration the way an app does (--config mesh.yaml, "
    "then MESH_* variables, then --transport). Exit codes: 0 success; 1 a mesh error, "
    "an app that fails to import or a failed contracts check; 2 a command line the "
    "CLI cannot act on; 130 interrupted.",
    # a crash shows Python's own traceback: typer's pretty one could print locals
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

TransportOption = Annotated[
    str | None,
    typer.Option(
        "--transport",
        metavar="URL",
        help="broker URL (overrides the config file and MESH_TRANSPORT), "
        "e.g. nats://localhost:4222",
        rich_help_panel=CONNECTION,
    ),
]
ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        metavar="PATH",
        help="a mesh.yaml (MESH_* variables and --transport still win)",
        rich_help_panel=CONNECTION,
    ),
]
LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option(
        "--log-level",
        metavar="LEVEL",
        help="debug, info, warning or error (default: info for run, warning otherwise)",
        rich_help_panel=CONNECTION,
    ),
]
LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        metavar="FORMAT",
        help="text (default) or json: one object per line with the event, trace and "
        "handler of each record (also log_format in the config, MESH_LOG_FORMAT)",
        rich_help_panel=CONNECTION,
    ),
]
AppArgument = Annotated[
    str,
    typer.Argument(
        metavar="APP",
        help="module:attr or path/to/app.py[:attr]; attr defaults to 'mesh'",
        show_default=False,
    ),
]
OutputOption = Annotated[
    str | None,
    typer.Option("-o", "--output", metavar="FILE", help="write to FILE instead of stdout"),
]


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="print the event-mesh version and exit",
        ),
    ] = False,
) -> None:
    if ctx.invoked_subcommand is None:
        missing_command(ctx)


def missing_command(ctx: typer.Context) -> None:
    """A group run without its command: the usage and the commands on stderr, exit 2."""
    group = ctx.command
    assert isinstance(group, TyperGroup), "only a group has commands to miss"
    lines = [ctx.get_usage(), f"error: {ctx.command_path} needs a COMMAND, one of:"]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            lines.append(f"  {name.ljust(12)}{command.get_short_help_str(limit=70)}")
    lines.append(f"({ctx.command_path} COMMAND --help describes one)")
    print("\n".join(lines), file=sys.stderr)
    raise typer.Exit(EXIT_USAGE)


@dataclass(frozen=True)
class Common:
    """The shared options of one command, merged from both sides of its name."""

    transport: str | None = None
    config: str | None = None
    log_level: str | None = None
    log_format: str = "text"

    def load_config(self) -> MeshConfig:
        """The configuration an app would get: the file, then ``MESH_*``, then --transport.
        `tool_config` is what a command that builds its own mesh uses."""
        return MeshConfig.load(self.config, transport=self.transport)

    def tool_config(self, *, registry: bool = False) -> MeshConfig:
        """`load_config` for a mesh the command builds to look at the broker: the app's
        broker and channels, but no stats reports, no metrics server (``MESH_METRICS_PORT``
        set in a pod is the app's port, not the tool's) and, unless ``registry``, no
        capability registry."""
        overrides: dict[str, Any] = {"stats": {"enabled": False}, "metrics_port": None}
        if not registry:
            overrides["capabilities"] = {"enabled": False}
        return self.load_config().merged(overrides)


def common(
    ctx: typer.Context,
    transport: str | None,
    config: str | None,
    log_level: LogLevel | None,
    *,
    default_level: str = "warning",
    log_format: LogFormat | None = None,
) -> Common:
    """Merge a command's shared options with those given before its name (the command's
    win), and set up logging to stderr at the chosen level and format (``--log-format``,
    else the config's ``log_format``)."""
    before = ctx.find_root().params
    level = log_level if log_level is not None else before.get("log_level")
    merged = Common(
        transport=transport if transport is not None else before.get("transport"),
        config=config if config is not None else before.get("config"),
        log_level=str(level) if level is not None else None,
    )
    chosen = log_format if log_format is not None else before.get("log_format")
    if chosen is None:
        try:
            chosen = merged.load_config().log_format
        except MeshError:  # the command reports a bad config itself, when it needs one
            chosen = "text"
    fmt = str(chosen)
    merged = replace(merged, log_format=fmt)
    logs.setup(merged.log_level or default_level, "json" if fmt == "json" else "text")
    return merged


def note_private_memory(config: MeshConfig) -> None:
    """Warn (stderr) that a memory:// command cannot see the apps' broker."""
    if config.transport_url.partition("://")[0].lower() == "memory":
        say(PRIVATE_MEMORY_NOTE, label="note:", style="yellow")


@contextlib.contextmanager
def signals_set(event: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``event`` (graceful stop) instead of raising mid-await."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, event.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def write_output(text: str, path: str | None) -> None:
    """``text`` to stdout (no path, or ``-``) or to the file ``path``."""
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    say(f"wrote {path}")
