"""The ``mesh`` command: run an app, and look into a live mesh from a shell.

::

    mesh run app.py                          # or package.module:attr; until Ctrl-C/SIGTERM
    mesh publish orders.created --data '{"id": 7}'
    mesh tail 'orders.>'                     # or '{"prefix": {"type": "orders."}}'
    mesh dlq list          mesh dlq replay --all
    mesh agents --watch                      # the live capability registry
    mesh top --sort p99                      # live rates, latency, lag (stats.enabled apps)
    mesh docs app.py -o asyncapi.yaml        # AsyncAPI 3.0 document of an app
    mesh contracts check app.py --against contracts.json     # in CI
    mesh contracts snapshot app.py -o contracts.json
    mesh transports
    mesh --version

Every command reads its configuration the way an app does (``--config
mesh.yaml``, then ``MESH_*`` variables, then ``--transport``), so the CLI talks
to the broker the apps talk to without a second way to configure it.

The command line is a typer app (`mesh.cli.app`), one module per command. The command
bodies are async functions that take a `Mesh` (`publish_event`, `tail_events`,
`list_dead_letters`, `replay_dead_letters`, `list_agents`): the typer layer only
builds the mesh, so tests (and scripts) can drive the same code on a shared
``memory://name`` broker. The commands that take an APP (``run``, ``docs``,
``contracts``) load it the same way (`load_app`).

Output is rich (tables, colours, rich help) on a terminal and plain text otherwise, so
pipes, scripts and tests parse it (`mesh.cli.output`). Exit codes: 0 success; 1 a
`MeshError` (printed as one ``error: ...`` line, no traceback), an app that fails to
import, or ``mesh contracts check`` finding problems; 2 a command line the CLI cannot
act on (unknown option, bad JSON, unknown app, ...); 130 interrupted. Transport URLs
are only ever shown redacted, since they may carry passwords.
"""

from __future__ import annotations

import sys

import typer

from mesh.cli import agents, contracts, docs, dlq, publish, run, tail, top, transports
from mesh.cli._click import ClickException, ClickUsageError, NoSuchOption
from mesh.cli.agents import list_agents
from mesh.cli.app import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, app
from mesh.cli.contracts import contract_report
from mesh.cli.dlq import list_dead_letters, parse_since, replay_dead_letters
from mesh.cli.loading import load_app, split_target
from mesh.cli.output import error, is_terminal, say
from mesh.cli.publish import publish_event
from mesh.cli.run import run_bounded
from mesh.cli.tail import format_event_line, parse_filter, tail_events
from mesh.errors import MeshError

# the command bodies, and the helpers other tools (and the tests) use
__all__ = [
    "UsageError",
    "app",
    "contract_report",
    "format_event_line",
    "list_agents",
    "list_dead_letters",
    "load_app",
    "main",
    "parse_filter",
    "parse_since",
    "publish_event",
    "replay_dead_letters",
    "run_bounded",
    "split_target",
    "tail_events",
]

# the command modules register themselves on `app` when imported, in this order of help
_COMMANDS = (run, publish, tail, dlq, agents, top, docs, contracts, transports)

#: Help is not wrapped off a terminal: a paragraph stays one line for grep and scripts.
PLAIN_WIDTH = 10_000


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mesh`` script and ``python -m mesh``; returns the exit code.

    Returns instead of exiting (typer's own exits included) so it can be called
    in-process by tests and by other tools.
    """
    terminal = is_terminal(sys.stdout)
    app.rich_markup_mode = "rich" if terminal else None  # rich help for people only
    command = typer.main.get_command(app)
    width = None if terminal else PLAIN_WIDTH  # None: the terminal's width
    try:
        code = command.main(
            args=argv,
            prog_name="mesh",
            standalone_mode=False,
            terminal_width=width,
            max_content_width=width,
        )
    except UsageError as exc:
        error(str(exc))
        return EXIT_USAGE
    except MeshError as exc:
        error(str(exc))
        return EXIT_ERROR
    except ClickUsageError as exc:
        _usage_error(exc)
        return EXIT_USAGE
    except ClickException as exc:
        error(exc.format_message())
        return exc.exit_code
    except typer.Abort:
        error("aborted")
        return EXIT_ERROR
    if code == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into this exit code
        say("interrupted")
    return code if isinstance(code, int) else EXIT_OK


def _usage_error(exc: ClickUsageError) -> None:
    """A command line that does not parse: its usage, then one ``error:`` line saying
    what is wrong (an unknown option in the words scripts have matched for years)."""
    if exc.ctx is not None:
        print(exc.ctx.get_usage(), file=sys.stderr)
        print(f"Try '{exc.ctx.command_path} --help' for help.", file=sys.stderr)
    message = exc.format_message()
    if isinstance(exc, NoSuchOption):
        message = f"unrecognized arguments: {exc.option_name}"
        if exc.possibilities:
            message += f" (did you mean {', '.join(sorted(exc.possibilities))}?)"
    error(message)
