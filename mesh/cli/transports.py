"""``mesh transports``: the transport URL schemes this installation can use."""

from __future__ import annotations

import sys

import typer

from mesh import plugins
from mesh.cli.app import EXIT_OK, ConfigOption, LogLevelOption, TransportOption, app, common
from mesh.cli.output import console, is_terminal, rich_table, say
from mesh.transport import install_hint


@app.command(
    "transports",
    short_help="list installed transports",
    help="List the installed transport URL schemes.",
)
def transports_command(
    ctx: typer.Context,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    common(ctx, transport, config, log_level)
    described = plugins.transport_registry().describe()
    if is_terminal(sys.stdout):
        rows = [{"url": f"{scheme}://", "transport": text} for scheme, text in described.items()]
        console(sys.stdout).print(rich_table(("url", "transport"), rows, keep=("url",)))
    else:
        width = max((len(scheme) for scheme in described), default=0) + 3
        for scheme, description in described.items():
            print(f"{(scheme + '://').ljust(width)}  {description}".rstrip())
    hint = install_hint(described)
    if hint:  # only for bundled plugins that are not installed
        say(f"more brokers {hint}")
    return EXIT_OK
