"""``mesh agents``: the live capability registry, once or refreshed (``--watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, TextIO

import typer

from mesh.app import Mesh
from mesh.capabilities import ANNOUNCE_TYPE, LEAVE_TYPE, REGISTRY_CHANNEL, Capability
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
from mesh.cli.output import console, cut, is_terminal, plain_table, rich_table
from mesh.errors import ConfigError
from mesh.event import Event

#: Longest description shown in the ``mesh agents`` table (``--json`` shows all).
DESCRIPTION_WIDTH = 50
#: Added to ``capabilities.resync_wait`` before ``mesh agents`` reads the registry: the
#: resync answers are on their way when the wait ends, this lets them land.
AGENTS_GRACE = 0.5

_COLUMNS = ("name", "version", "group", "instance", "source", "tags", "expires", "description")


def agent_row(capability: Capability, expires_in: float | None) -> dict[str, str]:
    """The fields ``mesh agents`` shows of one announced capability."""
    return {
        "name": capability.name,
        "version": capability.version,
        "group": capability.group,
        "instance": capability.instance,
        "source": capability.source,
        "tags": ",".join(capability.tags) or "-",
        "expires": "?" if expires_in is None else f"{expires_in:.0f}s",
        "description": cut(capability.description, DESCRIPTION_WIDTH) or "-",
    }


def format_agents(rows: Sequence[Mapping[str, str]]) -> str:
    """The plain-text table of `agent_row` rows (stable for scripts)."""
    return plain_table(_COLUMNS, rows)


class _Expiry:
    """When each instance's registry entry expires, as this process last heard it.

    `Mesh.capabilities()` lists what is live but not for how long; the time left tells an
    operator whether an agent is healthy (it resets every heartbeat) or about to drop
    out (its heartbeats stopped). It is rebuilt from the registry channel itself, the
    same announcements the directory is built from, so only public API is needed.
    """

    def __init__(self, default_ttl: float) -> None:
        self.default_ttl = default_ttl
        self.until: dict[str, float] = {}

    async def observe(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        instance = str(data.get("instance") or "")
        if not instance:
            return
        if event.type == ANNOUNCE_TYPE:
            try:
                ttl = float(data.get("ttl") or self.default_ttl)
            except (TypeError, ValueError):
                ttl = self.default_ttl
            self.until[instance] = time.monotonic() + ttl
        elif event.type == LEAVE_TYPE:
            self.until.pop(instance, None)

    def expires_in(self, instance: str) -> float | None:
        until = self.until.get(instance)
        return None if until is None else max(0.0, until - time.monotonic())


async def list_agents(
    mesh: Mesh,
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    wait: float | None = None,
    interval: float | None = None,
    count: int | None = 1,
    stop: asyncio.Event | None = None,
    use_rich: bool | None = None,
) -> list[Capability]:
    """Print the live capability registry seen by an unstarted ``mesh``, ``count`` times
    (None: until ``stop`` is set) every ``interval`` seconds; return the last listing.

    The mesh serves nothing; starting it asks every live instance for a resync, and
    ``wait`` (default ``capabilities.resync_wait`` plus `AGENTS_GRACE`) gives the answers
    time to arrive. ``interval`` defaults to the heartbeat, the rate at which the
    registry can change. Rich renders the table on a terminal (``use_rich`` forces it
    either way); ``--json`` prints one JSON array per listing, indented for a single
    listing, one line each when watching (JSON Lines).
    """
    stream = out if out is not None else sys.stdout
    stop = stop if stop is not None else asyncio.Event()
    settings = mesh.config.capabilities
    if not settings.enabled:
        raise ConfigError(
            "capabilities are disabled in the config (capabilities.enabled: "
            "false), so there is no registry to list"
        )
    wait = settings.resync_wait + AGENTS_GRACE if wait is None else wait
    interval = settings.heartbeat if interval is None else interval
    if use_rich is None:
        use_rich = not as_json and is_terminal(stream)
    expiry = _Expiry(settings.ttl or 3 * settings.heartbeat)
    mesh.on(REGISTRY_CHANNEL, name="mesh-agents", max_in_flight=1, idempotent=False)(expiry.observe)
    listing: list[Capability] = []
    shown = 0
    async with mesh:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        while not stop.is_set():
            listing = mesh.capabilities()
            shown += 1
            _print_agents(
                mesh,
                listing,
                expiry,
                stream,
                as_json=as_json,
                watching=count != 1,
                use_rich=use_rich,
            )
            if count is not None and shown >= count:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    return listing


def _print_agents(
    mesh: Mesh,
    listing: Sequence[Capability],
    expiry: _Expiry,
    stream: TextIO,
    *,
    as_json: bool,
    watching: bool,
    use_rich: bool,
) -> None:
    where = mesh.config.redacted_transport
    if as_json:
        records = []
        for cap in listing:
            left = expiry.expires_in(cap.instance)
            records.append(dict(cap.to_dict(), expires_in=None if left is None else round(left, 1)))
        print(
            json.dumps(records, ensure_ascii=False, indent=None if watching else 2),
            file=stream,
            flush=True,
        )
        return
    rows = [agent_row(cap, expiry.expires_in(cap.instance)) for cap in listing]
    instances = len({cap.instance for cap in listing})
    title = f"{len(listing)} capability(ies) on {instances} instance(s) at {where}" + (
        f" ({time.strftime('%H:%M:%S')})" if watching else ""
    )
    if use_rich:
        screen = console(stream)
        if watching and is_terminal(stream):
            screen.clear()
        if rows:
            keep = ("name", "version", "instance", "expires")  # never cut what identifies one
            screen.print(
                rich_table(
                    _COLUMNS,
                    rows,
                    title=title,
                    keep=keep,
                    fold=("description",),
                    right=("expires",),
                )
            )
        else:
            screen.print(f"no capabilities announced on {where}", markup=False)
        stream.flush()
        return
    if watching:
        print(
            f"# {title}"
            if rows
            else f"# no capabilities announced on {where} ({time.strftime('%H:%M:%S')})",
            file=stream,
        )
    if rows:
        print(format_agents(rows), file=stream, flush=True)
    elif not watching:
        print(f"no capabilities announced on {where}", file=stream, flush=True)
    if watching:
        print(file=stream, flush=True)


@app.command(
    "agents",
    short_help="list the live capability registry",
    help="List the capabilities live instances announce on the registry channel: name, "
    "version, group, instance, source, tags, the time left before the entry expires (it "
    "resets every heartbeat: an entry running down means that instance stopped beating) "
    "and the description.\n\nThe command joins the registry without serving anything, "
    "asks for a resync and waits capabilities.resync_wait (plus a little) for the "
    "answers.\n\n" + PRIVATE_MEMORY_NOTE,
)
def agents_command(
    ctx: typer.Context,
    watch: Annotated[
        bool, typer.Option("--watch", help="refresh until Ctrl-C (every --interval seconds)")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="seconds between refreshes (default: the heartbeat)"),
    ] = None,
    count: Annotated[
        int | None, typer.Option(metavar="N", help="stop after N listings (implies --watch)")
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="wait this long for announcements before the first listing "
            "(default: capabilities.resync_wait + 0.5)",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="print JSON (one array per listing; one line each with --watch)"
        ),
    ] = False,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    for name, value in (("interval", interval), ("wait", wait)):
        if value is not None and value < 0:
            raise UsageError(f"--{name} must be at least 0 seconds")
    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    settings = options.tool_config(registry=True)
    note_private_memory(settings)
    listings = count if count is not None else (None if watch else 1)

    async def body() -> None:
        stop = asyncio.Event()
        with signals_set(stop):
            await list_agents(
                Mesh(config=settings),
                as_json=as_json,
                wait=wait,
                interval=interval,
                count=listings,
                stop=stop,
            )

    asyncio.run(body())
    return EXIT_OK
