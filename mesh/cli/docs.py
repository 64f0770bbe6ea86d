"""``mesh docs APP``: the AsyncAPI 3.0 document of an app, without running it."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from mesh.app import Mesh
from mesh.asyncapi import asyncapi_document
from mesh.cli.app import (
    EXIT_ERROR,
    EXIT_OK,
    AppArgument,
    ConfigOption,
    LogLevelOption,
    OutputOption,
    TransportOption,
    app,
    common,
    write_output,
)
from mesh.cli.loading import import_app, prepare_environment


class Format(StrEnum):
    """``--format`` values."""

    json = "json"
    yaml = "yaml"


def render_asyncapi(
    app: Mesh, *, fmt: str = "json", title: str | None = None, version: str = "1.0.0"
) -> str:
    """The AsyncAPI document of ``app`` as JSON or YAML text (ending in a newline)."""
    document = asyncapi_document(app, title=title, version=version)
    if fmt == "yaml":
        import yaml

        text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
        return text
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


@app.command(
    "docs",
    short_help="write the AsyncAPI 3.0 document of an app",
    help="Import an app (without starting it) and write the AsyncAPI 3.0.0 document of its "
    "handlers, capabilities and contracts (see docs/asyncapi.md). The server comes from "
    "the app's transport URL, without credentials; --transport/--config reach the app "
    "like in mesh run.",
)
def docs_command(
    ctx: typer.Context,
    target: AppArgument,
    output: OutputOption = None,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format", help="json or yaml (default: yaml for a .yaml/.yml FILE, else json)"
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option(metavar="TITLE", help="info.title (default: the app's source)")
    ] = None,
    api_version: Annotated[
        str,
        typer.Option(metavar="VERSION", help="info.version, the version of your API"),
    ] = "1.0.0",
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    chosen = fmt.value if fmt is not None else None
    chosen = chosen or ("yaml" if str(output or "").endswith((".yaml", ".yml")) else "json")
    prepare_environment(options)
    mesh = import_app(target)
    if mesh is None:
        return EXIT_ERROR
    write_output(render_asyncapi(mesh, fmt=chosen, title=title, version=api_version), output)
    return EXIT_OK
