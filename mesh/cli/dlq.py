"""``mesh dlq list`` and ``mesh dlq replay``: the dead-letter channel from a shell."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TextIO

import typer

from mesh import codec
from mesh.app import Mesh
from mesh.cli.app import (
    EXIT_ERROR,
    EXIT_OK,
    PRIVATE_MEMORY_NOTE,
    Common,
    ConfigOption,
    LogLevelOption,
    TransportOption,
    UsageError,
    app,
    common,
    missing_command,
    note_private_memory,
)
from mesh.cli.output import console, cut, error, is_terminal, plain_table, rich_table, say
from mesh.config import MeshConfig
from mesh.dlq import DL_ATTEMPTS, DL_CHANNEL, DL_ERROR, DL_GROUP, DL_REASON, REPLAY_TO, replay_id
from mesh.event import Event

#: Longest reason shown in the ``mesh dlq list`` table (``--json`` shows all).
REASON_WIDTH = 60

_COLUMNS = ("id", "type", "channel", "group", "attempts", "error", "reason")

dlq_app = typer.Typer(
    name="dlq",
    help="Inspect the dead-letter channel.\n\n" + PRIVATE_MEMORY_NOTE,
    short_help="list or replay dead letters",
)
app.add_typer(dlq_app)


@dlq_app.callback(invoke_without_command=True)
def _dlq(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        missing_command(ctx)


def dead_letter_row(copy: Event) -> dict[str, str]:
    """The fields ``mesh dlq list`` shows of one dead-letter copy (see `mesh.dlq`)."""
    ext = copy.extensions
    return {
        "id": copy.id,
        "type": copy.type,
        "channel": str(ext.get(DL_CHANNEL, "")),
        "group": str(ext.get(DL_GROUP, "")) or "(broadcast)",
        "attempts": str(ext.get(DL_ATTEMPTS, "")),
        "error": str(ext.get(DL_ERROR, "")),
        "reason": str(ext.get(DL_REASON, "")),
    }


def _rows(copies: Sequence[Event]) -> list[dict[str, str]]:
    rows = [dead_letter_row(copy) for copy in copies]
    for row in rows:
        row["reason"] = cut(row["reason"], REASON_WIDTH)
    return rows


def format_dead_letters(copies: Sequence[Event]) -> str:
    """The plain-text table of dead-letter copies (reasons cut at `REASON_WIDTH`)."""
    return plain_table(_COLUMNS, _rows(copies))


async def list_dead_letters(
    mesh: Mesh,
    *,
    limit: int = 100,
    as_json: bool = False,
    out: TextIO | None = None,
    idle: float = 1.0,
    **selection: Any,
) -> list[Event]:
    """Print up to ``limit`` dead-letter copies of a started ``mesh`` (read, not consumed:
    nothing changes for anyone else); ``selection`` is `DeadLetters.list`'s filters.
    A terminal gets a rich table, anything else `format_dead_letters`."""
    stream = out if out is not None else sys.stdout
    copies = await mesh.dead_letters.list(limit=limit, idle=idle, **selection)
    if as_json:
        print(
            json.dumps([codec.to_dict(copy) for copy in copies], ensure_ascii=False, indent=2),
            file=stream,
            flush=True,
        )
    elif not copies:
        say(f"no dead letters on {mesh.config.dead_letter_channel}", stream=stream)
    elif is_terminal(stream):
        title = f"{len(copies)} dead letter(s) on {mesh.config.dead_letter_channel}"
        table = rich_table(
            _COLUMNS, _rows(copies), title=title, keep=("id", "attempts"), fold=("reason",)
        )
        console(stream).print(table)
    else:
        print(format_dead_letters(copies), file=stream, flush=True)
    return copies


async def replay_dead_letters(
    mesh: Mesh,
    *,
    ids: Sequence[str] | None = None,
    out: TextIO | None = None,
    limit: int = 1000,
    idle: float = 1.0,
    all_groups: bool = False,
    **selection: Any,
) -> tuple[list[Event], list[str]]:
    """Replay copies (all matching ``selection`` when ``ids`` is None) of a started
    ``mesh`` to the group that failed (every group with ``all_groups``); print each
    replayed event and return (replayed events, requested ids that matched no copy).

    An id may be the copy's id (what ``mesh dlq list`` shows) or the original event's
    id; a replayed event's id is derived from its copy's (see `mesh.dlq`), which is
    how a copy id is matched here.
    """
    stream = out if out is not None else sys.stdout
    replayed = await mesh.dead_letters.replay(
        ids=ids, limit=limit, idle=idle, all_groups=all_groups, **selection
    )
    for event in replayed:
        original = event.extensions.get("meshreplayof", "?")
        target = event.extensions.get(REPLAY_TO)
        to = (
            "every group"
            if target is None
            else (f"group {target}" if target else "broadcast handlers")
        )
        say(
            f"{event.type} {original} as {event.id} to {to}",
            label="replayed",
            style="green",
            stream=stream,
        )
    missing: list[str] = []
    if ids is not None:
        done_ids = {e.id for e in replayed} | {
            str(e.extensions.get("meshreplayof")) for e in replayed
        }
        missing = [i for i in ids if i not in done_ids and replay_id(i) not in done_ids]
    return replayed, missing


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an RFC 3339 time (``2026-12-01T10:00:00Z``) or an age such as
    ``30s``, ``15m``, ``2h``, ``7d`` (that long ago)."""
    now = now or datetime.now(UTC)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a time (2026-12-01T10:00:00Z) nor an "
            "age like 30m, 2h or 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- the options both actions take --------------------------------------------------------

GroupOption = Annotated[
    str | None,
    typer.Option(
        metavar="GROUP", help="only copies of this group's failures ('' = broadcast handlers)"
    ),
]
TypeOption = Annotated[
    str | None,
    typer.Option(
        "--type", metavar="PATTERN", help="only these event types: a type or pattern ('orders.*')"
    ),
]
SourceOption = Annotated[
    str | None, typer.Option(metavar="SOURCE", help="only events of this CloudEvents source")
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        metavar="WHEN",
        help="only copies dead-lettered since WHEN: a time (2026-12-01T10:00:00Z) or an "
        "age (30m, 2h, 7d)",
    ),
]
ChannelOption = Annotated[
    str | None,
    typer.Option(
        metavar="CHANNEL",
        help="the app's own dead-letter channel (default: the config's "
        "dead_letter_channel, mesh.deadletter)",
    ),
]
WaitOption = Annotated[
    float,
    typer.Option(metavar="SECONDS", help="stop after no copy arrived for this long"),
]


def _filters(
    group: str | None, type_pattern: str | None, source: str | None, since: str | None
) -> dict[str, Any]:
    """`DeadLetters.list`'s keyword filters from the command line's."""
    return {
        "group": group,
        "type": type_pattern,
        "source": source,
        "since": parse_since(since) if since else None,
    }


def _config(options: Common, dead_letter_channel: str | None) -> MeshConfig:
    """The config for a dlq command: the app's, with ``--dead-letter-channel`` applied and
    the capability registry off (the tools serve nothing)."""
    config = options.tool_config()
    if dead_letter_channel:
        config = config.merged({"dead_letter_channel": dead_letter_channel})
    note_private_memory(config)
    return config


@dlq_app.command(
    "list",
    short_help="show dead-letter copies",
    help="Show dead-letter copies: id, type, original channel, group, attempts, error "
    "type and reason. Listing reads the dead-letter channel without consuming it: "
    "nothing is removed, hidden or reordered for anyone.\n\n" + PRIVATE_MEMORY_NOTE,
)
def list_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(metavar="N", help="show at most N copies")] = 100,
    group: GroupOption = None,
    type_pattern: TypeOption = None,
    source: SourceOption = None,
    since: SinceOption = None,
    dead_letter_channel: ChannelOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print CloudEvents JSON")] = False,
    wait: WaitOption = 1.0,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    settings = _config(options, dead_letter_channel)
    filters = _filters(group, type_pattern, source, since)

    async def body() -> None:
        async with Mesh(config=settings) as mesh:
            await list_dead_letters(mesh, limit=limit, as_json=as_json, idle=wait, **filters)

    asyncio.run(body())
    return EXIT_OK


@dlq_app.command(
    "replay",
    short_help="republish dead letters to their original channels",
    help="Republish dead-letter copies to their original channels and remove them from "
    "the list. A replayed event reaches only the group that failed (groups that "
    "handled it do not run it again) unless --all-groups. It gets a new id and a "
    "meshreplayof extension naming the original.\n\n" + PRIVATE_MEMORY_NOTE,
)
def replay_command(
    ctx: typer.Context,
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", metavar="ID", help="copy id or original event id (repeatable)"),
    ] = None,
    everything: Annotated[
        bool,
        typer.Option("--all", help="replay every copy (or every one the filters select)"),
    ] = False,
    all_groups: Annotated[
        bool,
        typer.Option(
            "--all-groups",
            help="deliver replayed events to every group on the channel, not only to the "
            "group that failed",
        ),
    ] = False,
    group: GroupOption = None,
    type_pattern: TypeOption = None,
    source: SourceOption = None,
    since: SinceOption = None,
    dead_letter_channel: ChannelOption = None,
    wait: WaitOption = 1.0,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    filters = _filters(group, type_pattern, source, since)
    if not ids and not everything and not any(filters.values()):
        raise UsageError(
            "say what to replay: --id ID (repeatable; see mesh dlq list), a "
            "filter (--group/--type/--source/--since) or --all"
        )
    if ids and everything:
        raise UsageError("pass either --id or --all, not both")
    settings = _config(options, dead_letter_channel)

    async def body() -> tuple[list[Event], list[str]]:
        async with Mesh(config=settings) as mesh:
            return await replay_dead_letters(
                mesh, ids=ids or None, idle=wait, all_groups=all_groups, **filters
            )

    replayed, missing = asyncio.run(body())
    say(f"replayed {len(replayed)} event(s)")
    if missing:
        error(
            f"no replayable dead-letter copy with id {', '.join(missing)} "
            "(mesh dlq list shows what is there)"
        )
        return EXIT_ERROR
    return EXIT_OK
