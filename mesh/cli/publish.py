"""``mesh publish TYPE``: publish one CloudEvent and print its id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from mesh.app import Mesh
from mesh.cli.app import (
    EXIT_OK,
    PRIVATE_MEMORY_NOTE,
    ConfigOption,
    LogLevelOption,
    TransportOption,
    UsageError,
    app,
    common,
    note_private_memory,
)
from mesh.errors import InvalidEvent
from mesh.event import Event


async def publish_event(mesh: Mesh, event: Event, *, channel: str | None = None) -> str:
    """Publish ``event`` on a started ``mesh`` and return its id once confirmed."""
    await mesh.publish(event, channel=channel)
    return event.id


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON, or the JSON file ``@path``; `UsageError` says how to quote it."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {what} file {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); quote it for the shell, e.g. "
            "--data '{\"id\": 7}'"
        ) from None


def parse_extensions(items: Sequence[str]) -> dict[str, str]:
    """``--ext NAME=VALUE`` items as a dict (the event checks the names)."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--ext {item!r} must be NAME=VALUE, e.g. --ext partitionkey=o-7")
        result[name] = value
    return result


@app.command(
    "publish",
    short_help="publish one event",
    help="Publish one CloudEvent and print its id.\n\n" + PRIVATE_MEMORY_NOTE,
)
def publish_command(
    ctx: typer.Context,
    event_type: Annotated[
        str,
        typer.Argument(metavar="TYPE", help="event type, e.g. orders.created", show_default=False),
    ],
    data: Annotated[
        str | None,
        typer.Option(metavar="JSON", help="event data as JSON, or @file.json (default: no data)"),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(metavar="SOURCE", help="CloudEvents source (default: the config's source)"),
    ] = None,
    subject: Annotated[
        str | None, typer.Option(metavar="SUBJECT", help="CloudEvents subject")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(metavar="CHANNEL", help="channel to publish on (default: the type)"),
    ] = None,
    ext: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=VALUE",
            help="an extension attribute (repeatable), e.g. --ext correlationid=abc",
        ),
    ] = None,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    payload = parse_json(data, "--data") if data is not None else None
    extensions = parse_extensions(ext or [])
    settings = options.tool_config()
    note_private_memory(settings)
    try:
        event = Event(
            event_type, source or settings.source, payload, subject=subject, extensions=extensions
        )
    except InvalidEvent as exc:
        raise UsageError(str(exc)) from None

    async def body() -> str:
        async with Mesh(config=settings) as mesh:
            return await publish_event(mesh, event, channel=channel)

    print(asyncio.run(body()), flush=True)
    return EXIT_OK
