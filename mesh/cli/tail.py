"""``mesh tail [FILTER]``: print events live, one line each."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any, TextIO

import typer
from rich.text import Text

from mesh import codec
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
    signals_set,
)
from mesh.cli.output import console, is_terminal
from mesh.cli.publish import parse_json
from mesh.dlq import DL_CHANNEL, DL_ERROR, DL_GROUP, DL_REASON
from mesh.errors import ConfigError, DecodeError
from mesh.event import Event, format_time
from mesh.routing.filters import FilterSpec
from mesh.transport import Delivery

#: Longest compact ``data`` shown on one ``mesh tail`` line (``--json`` shows all).
DATA_WIDTH = 200


def event_line_parts(event: Event, channel: str | None = None) -> list[tuple[str, str]]:
    """The pieces of `format_event_line`, each with the rich style a terminal shows it in."""
    when = format_time(event.time) if event.time is not None else "-"
    parts = [
        (when, "dim"),
        ("  ", ""),
        (event.type, "bold cyan"),
        ("  ", ""),
        (event.source, "green"),
        ("  ", ""),
        (event.id, "dim"),
        ("  ", ""),
        (_compact(event.data), ""),
    ]
    ext = event.extensions
    if DL_REASON in ext:
        group = str(ext.get(DL_GROUP, "")) or "(broadcast)"
        reason = " ".join(str(ext[DL_REASON]).split())
        parts.append(
            (
                f"  [dead letter of {group} from {ext.get(DL_CHANNEL, '?')}: "
                f"{ext.get(DL_ERROR, '')}: {reason}]",
                "bold red",
            )
        )
    if channel is not None and channel != event.type:
        parts.append((f"  (on {channel})", "dim"))
    return parts


def format_event_line(event: Event, channel: str | None = None) -> str:
    """One ``mesh tail`` line: time, type, source, id, compact data; a dead-letter copy
    also says which group gave up on it and why.

    Data is cut at `DATA_WIDTH` so one event stays one line in a terminal; use
    ``--json`` for everything.
    """
    return "".join(text for text, _ in event_line_parts(event, channel))


def _compact(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return f"<{len(data)} bytes>"
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= DATA_WIDTH else text[: DATA_WIDTH - 1] + "\u2026"


def parse_filter(text: str | None) -> tuple[str | None, FilterSpec | None]:
    """``mesh tail``'s FILTER -> (channel pattern, Subscriptions API filter).

    Text starting with ``{`` or ``[`` is a JSON filter; anything else is an event type
    or channel pattern. Nothing means every channel (``>``).
    """
    if text is None or not text.strip():
        return ">", None
    if text.lstrip().startswith(("{", "[")):
        spec = parse_json(text, "FILTER")
        if not isinstance(spec, (dict, list)):
            raise UsageError(
                "a JSON FILTER must be an object such as "
                '\'{"prefix": {"type": "orders."}}\' or a list of them'
            )
        return None, spec
    return text.strip(), None


async def tail_events(
    mesh: Mesh,
    *,
    pattern: str | None = None,
    filter: FilterSpec | None = None,
    group: str | None = None,
    count: int | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    skip_mesh: bool = False,
) -> int:
    """Print events arriving on an unstarted ``mesh`` until ``count`` were shown or
    ``stop`` is set; returns how many were printed.

    The tail subscribes on the transport itself, not through a handler, so it shows
    what is there: every channel ``>`` matches, the mesh's own (registry, replies, the
    dead-letter channel, with each copy's reason) included unless ``skip_mesh``;
    duplicates too (they are news to whoever debugs); a message that is not a
    CloudEvent as a line saying so. One message at a time, so lines come in delivery
    order. Messages beyond ``count`` are held unsettled and handed back when the tail
    stops, so in ``--group`` mode they go to the other members instead of being lost.
    ``ready`` is set once subscribed: what is published after that is shown. Lines are
    coloured on a terminal and plain everywhere else.
    """
    stream = out if out is not None else sys.stdout
    styled = console(stream) if is_terminal(stream) and not as_json else None
    stop = stop if stop is not None else asyncio.Event()
    shown = 0
    if pattern is None and filter is None:
        pattern = ">"
    try:
        patterns, residual = mesh._plan(pattern, filter)
    except ConfigError as exc:
        raise UsageError(f"bad FILTER: {exc}") from None
    dead_letters = mesh.config.dead_letter_channel

    def show_line(parts: list[tuple[str, str]]) -> None:
        if styled is not None:
            styled.print(Text.assemble(*parts))
            stream.flush()
        else:
            print("".join(text for text, _ in parts), file=stream, flush=True)

    async def show(delivery: Delivery) -> None:
        nonlocal shown
        if count is not None and shown >= count:
            await asyncio.Event().wait()  # park it: cancelled (not acked) at stop
        channel = delivery.channel
        if skip_mesh and channel.startswith("mesh.") and channel != dead_letters:
            await delivery.ack()
            return
        try:
            event = delivery.event
        except DecodeError as exc:
            parts = [(f"-  (not a CloudEvent on {channel}: {exc})", "yellow")]
        else:
            if residual is not None and not residual(event):
                await delivery.ack()
                return
            parts = (
                [(json.dumps(codec.to_dict(event), ensure_ascii=False), "")]
                if as_json
                else event_line_parts(event, channel)
            )
        shown += 1
        show_line(parts)
        await delivery.ack()
        if count is not None and shown >= count:
            stop.set()

    async with mesh:
        sub = await mesh.transport.subscribe(
            patterns if len(patterns) > 1 else patterns[0], show, group=group, max_in_flight=1
        )
        try:
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await sub.close(timeout=1.0)  # let the last shown event's ack through
    return shown


@app.command(
    "tail",
    short_help="print events as they arrive",
    help="Print events live, one line each (time, type, source, id, data).\n\n"
    "FILTER is an event type or channel pattern ('orders.*', 'orders.>') or a JSON "
    'Subscriptions API filter (\'{"prefix": {"type": "orders."}}\'); default: every '
    "channel, the mesh's own included (registry, replies, dead letters with their "
    "reason). Without --group the tail is a broadcast subscriber and takes nothing away "
    "from the apps; with --group it competes with that group's members.\n\n" + PRIVATE_MEMORY_NOTE,
)
def tail_command(
    ctx: typer.Context,
    filter_text: Annotated[
        str | None,
        typer.Argument(metavar="FILTER", help="pattern or JSON filter", show_default=False),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(metavar="GROUP", help="join this consumer group instead of broadcasting"),
    ] = None,
    count: Annotated[int | None, typer.Option(metavar="N", help="exit after N events")] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="print each event as structured-mode CloudEvents JSON"),
    ] = False,
    skip_mesh: Annotated[
        bool,
        typer.Option(
            "--skip-mesh",
            help="hide the mesh's own channels (registry, replies), except the dead-letter channel",
        ),
    ] = False,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    pattern, spec = parse_filter(filter_text)
    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    settings = options.tool_config()
    note_private_memory(settings)

    async def body() -> int:
        stop = asyncio.Event()
        with signals_set(stop):
            return await tail_events(
                Mesh(config=settings),
                pattern=pattern,
                filter=spec,
                group=group,
                count=count,
                as_json=as_json,
                stop=stop,
                skip_mesh=skip_mesh,
            )

    asyncio.run(body())
    return EXIT_OK
