"""The ``mesh`` command: run an app, and look into a live mesh from a shell.

::

    mesh run app.py                          # or package.module:attr; until Ctrl-C/SIGTERM
    mesh publish orders.created --data '{"id": 7}'
    mesh tail 'orders.>'                     # or '{"prefix": {"type": "orders."}}'
    mesh dlq list          mesh dlq replay --all
    mesh agents --watch                      # the live capability registry
    mesh docs app.py -o asyncapi.yaml        # AsyncAPI 3.0 document of an app
    mesh contracts check app.py --against contracts.json     # in CI
    mesh contracts snapshot app.py -o contracts.json
    mesh transports

Every command reads its configuration the way an app does (``--config
mesh.yaml``, then ``MESH_*`` variables, then ``--transport``), so the CLI talks
to the broker the apps talk to without a second way to configure it.

It is built on argparse rather than click so the core distribution gains no
dependency for it. The command bodies are async functions that take a `Mesh`
(`publish_event`, `tail_events`, `list_dead_letters`, `replay_dead_letters`):
the argparse layer only builds the mesh, so tests (and scripts) can drive the
same code on a shared ``memory://name`` broker (`list_agents` too). The commands that
take an APP (``run``, ``docs``, ``contracts``) load it the same way (`load_app`).

Exit codes: 0 success; 1 a `MeshError` (printed as ``error: ...``), an app that
fails to import, or ``mesh contracts check`` finding problems; 2 a command line the
CLI cannot act on (bad JSON, unknown app, ...); 130 interrupted.
Transport URLs are only ever shown redacted, since they may carry passwords.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TextIO

from mesh import __version__, codec, plugins
from mesh.app import Mesh
from mesh.asyncapi import asyncapi_document
from mesh.capabilities import ANNOUNCE_TYPE, LEAVE_TYPE, REGISTRY_CHANNEL, Capability
from mesh.config import MeshConfig
from mesh.delivery import DL_ATTEMPTS, DL_CHANNEL, DL_ERROR, DL_GROUP, DL_REASON, REPLAY_TO
from mesh.dlq import replay_id
from mesh.errors import ConfigError, ContractViolation, DecodeError, InvalidEvent, MeshError
from mesh.event import Event, format_time
from mesh.routing.filters import FilterSpec
from mesh.transport import Delivery, install_hint

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Longest compact ``data`` shown on one ``mesh tail`` line (``--json`` shows all).
DATA_WIDTH = 200
#: Longest reason shown in the ``mesh dlq list`` table (``--json`` shows all).
REASON_WIDTH = 60
#: Longest description shown in the ``mesh agents`` table (``--json`` shows all).
DESCRIPTION_WIDTH = 50
#: Added to ``capabilities.resync_wait`` before ``mesh agents`` reads the registry: the
#: resync answers are on their way when the wait ends, this lets them land.
AGENTS_GRACE = 0.5

_PRIVATE_MEMORY_NOTE = (
    "On memory:// the command runs its own private in-process broker, so it only "
    "sees events of this process: point --transport (or MESH_TRANSPORT) at the broker "
    "your apps use."
)


class UsageError(Exception):
    """A command line the CLI cannot act on. Exits 2 (like argparse) with what to do.

    Kept apart from `MeshError` because the fix is in the command line, not in the
    mesh or the broker, and scripts can tell the two apart by exit code.
    """


# --- async command bodies (the part tests drive directly) -------------------------------


async def publish_event(mesh: Mesh, event: Event, *, channel: str | None = None) -> str:
    """Publish ``event`` on a started ``mesh`` and return its id once confirmed."""
    await mesh.publish(event, channel=channel)
    return event.id


def format_event_line(event: Event, channel: str | None = None) -> str:
    """One ``mesh tail`` line: time, type, source, id, compact data; a dead-letter copy
    also says which group gave up on it and why.

    Data is cut at `DATA_WIDTH` so one event stays one line in a terminal; use
    ``--json`` for everything.
    """
    when = format_time(event.time) if event.time is not None else "-"
    line = f"{when}  {event.type}  {event.source}  {event.id}  {_compact(event.data)}"
    ext = event.extensions
    if DL_REASON in ext:
        group = str(ext.get(DL_GROUP, "")) or "(broadcast)"
        reason = " ".join(str(ext[DL_REASON]).split())
        line += (
            f"  [dead letter of {group} from {ext.get(DL_CHANNEL, '?')}: "
            f"{ext.get(DL_ERROR, '')}: {reason}]"
        )
    if channel is not None and channel != event.type:
        line += f"  (on {channel})"
    return line


def _compact(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return f"<{len(data)} bytes>"
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= DATA_WIDTH else text[: DATA_WIDTH - 1] + "\u2026"


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
    ``ready`` is set once subscribed: what is published after that is shown.
    """
    stream = out if out is not None else sys.stdout
    stop = stop if stop is not None else asyncio.Event()
    shown = 0
    if pattern is None and filter is None:
        pattern = ">"
    try:
        patterns, residual = mesh._plan(pattern, filter)
    except ConfigError as exc:
        raise UsageError(f"bad FILTER: {exc}") from None
    dead_letters = mesh.config.dead_letter_channel

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
            line = f"-  (not a CloudEvent on {channel}: {exc})"
        else:
            if residual is not None and not residual(event):
                await delivery.ack()
                return
            line = (
                json.dumps(codec.to_dict(event), ensure_ascii=False)
                if as_json
                else format_event_line(event, channel)
            )
        shown += 1
        print(line, file=stream, flush=True)
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


def dead_letter_row(copy: Event) -> dict[str, str]:
    """The fields ``mesh dlq list`` shows of one dead-letter copy (see `mesh.delivery`)."""
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


_DLQ_COLUMNS = ("id", "type", "channel", "group", "attempts", "error", "reason")


def format_dead_letters(copies: Sequence[Event]) -> str:
    """A plain-text table of dead-letter copies (no rich: the core has no such dependency)."""
    rows = [dead_letter_row(copy) for copy in copies]
    for row in rows:
        reason = " ".join(row["reason"].split())
        row["reason"] = (
            reason if len(reason) <= REASON_WIDTH else reason[: REASON_WIDTH - 1] + "\u2026"
        )
    widths = {col: max([len(col)] + [len(row[col]) for row in rows]) for col in _DLQ_COLUMNS}
    lines = ["  ".join(col.upper().ljust(widths[col]) for col in _DLQ_COLUMNS).rstrip()]
    lines += [
        "  ".join(row[col].ljust(widths[col]) for col in _DLQ_COLUMNS).rstrip() for row in rows
    ]
    return "\n".join(lines)


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
    nothing changes for anyone else); ``selection`` is `DeadLetters.list`'s filters."""
    stream = out if out is not None else sys.stdout
    copies = await mesh.dead_letters.list(limit=limit, idle=idle, **selection)
    if as_json:
        print(
            json.dumps([codec.to_dict(copy) for copy in copies], ensure_ascii=False, indent=2),
            file=stream,
            flush=True,
        )
    elif copies:
        print(format_dead_letters(copies), file=stream, flush=True)
    else:
        print(f"no dead letters on {mesh.config.dead_letter_channel}", file=stream, flush=True)
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
        print(f"replayed {event.type} {original} as {event.id} to {to}", file=stream, flush=True)
    missing: list[str] = []
    if ids is not None:
        done_ids = {e.id for e in replayed} | {
            str(e.extensions.get("meshreplayof")) for e in replayed
        }
        missing = [i for i in ids if i not in done_ids and replay_id(i) not in done_ids]
    return replayed, missing


# --- mesh agents: the live capability registry ------------------------------------------

_AGENT_COLUMNS = (
    "name",
    "version",
    "group",
    "instance",
    "source",
    "tags",
    "expires",
    "description",
)


def agent_row(capability: Capability, expires_in: float | None) -> dict[str, str]:
    """The fields ``mesh agents`` shows of one announced capability."""
    description = " ".join(capability.description.split())
    if len(description) > DESCRIPTION_WIDTH:
        description = description[: DESCRIPTION_WIDTH - 1] + "\u2026"
    return {
        "name": capability.name,
        "version": capability.version,
        "group": capability.group,
        "instance": capability.instance,
        "source": capability.source,
        "tags": ",".join(capability.tags) or "-",
        "expires": "?" if expires_in is None else f"{expires_in:.0f}s",
        "description": description or "-",
    }


def format_agents(rows: Sequence[Mapping[str, str]]) -> str:
    """A plain-text table of `agent_row` rows (no rich needed, stable for scripts)."""
    widths = {col: max([len(col)] + [len(row[col]) for row in rows]) for col in _AGENT_COLUMNS}
    lines = ["  ".join(col.upper().ljust(widths[col]) for col in _AGENT_COLUMNS).rstrip()]
    lines += [
        "  ".join(row[col].ljust(widths[col]) for col in _AGENT_COLUMNS).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _rich_agents(rows: Sequence[Mapping[str, str]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    keep = ("name", "version", "instance", "expires")  # never cut what identifies an entry
    for col in _AGENT_COLUMNS:
        width = max([len(col)] + [len(row[col]) for row in rows])
        table.add_column(
            col,
            overflow="fold" if col == "description" else "ellipsis",
            justify="right" if col == "expires" else "left",
            no_wrap=col in keep,
            min_width=width if col in keep else None,
        )
    for row in rows:
        table.add_row(*(row[col] for col in _AGENT_COLUMNS))
    return table


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
    registry can change. Rich renders the table on a terminal when it is installed
    (``use_rich`` forces it either way); ``--json`` prints one JSON array per listing,
    indented for a single listing, one line each when watching (JSON Lines).
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
        use_rich = not as_json and stream.isatty() and _has_rich()
    expiry = _Expiry(settings.ttl or 3 * settings.heartbeat)
    mesh.on(REGISTRY_CHANNEL, name="mesh-agents", max_in_flight=1, idempotent=False)(expiry.observe)
    listing: list[Capability] = []
    shown = 0
    async with mesh:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        while not stop.is_set():
            listing = mesh.capabilities()
            rows = [agent_row(cap, expiry.expires_in(cap.instance)) for cap in listing]
            shown += 1
            _print_agents(
                mesh,
                listing,
                rows,
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


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _print_agents(
    mesh: Mesh,
    listing: Sequence[Capability],
    rows: Sequence[dict[str, str]],
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
    instances = len({cap.instance for cap in listing})
    title = f"{len(listing)} capability(ies) on {instances} instance(s) at {where}" + (
        f" ({time.strftime('%H:%M:%S')})" if watching else ""
    )
    if use_rich:
        from rich.console import Console

        console = Console(file=stream)
        if watching and stream.isatty():
            console.clear()
        if rows:
            console.print(_rich_agents(rows, title))
        else:
            console.print(f"no capabilities announced on {where}")
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


# --- mesh docs and mesh contracts: about an app, without running it ---------------------


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


def contract_report(app: Mesh, snapshot: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Every contract problem of ``app``: incompatible consecutive versions, and with
    ``snapshot`` incompatibilities with it (keys say which versions are compared)."""
    report = dict(app.contracts.problems())
    if snapshot is not None:
        for key, problems in app.contracts.problems_against(snapshot).items():
            report.setdefault(key if key not in report else f"{key} (snapshot)", problems)
    return report


def print_contract_report(
    app: Mesh,
    report: Mapping[str, Sequence[str]],
    *,
    against: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Print ``report`` (one line per problem) and return the exit code: 1 if any."""
    stream = out if out is not None else sys.stdout
    for key, problems in report.items():
        for problem in problems:
            print(f"{key}: {problem}", file=stream)
    count = sum(len(problems) for problems in report.values())
    checked = f"{len(app.contracts)} contract(s)" + (f" against {against}" if against else "")
    if count:
        print(f"contracts check failed: {count} problem(s) in {checked}", file=stream, flush=True)
        return EXIT_ERROR
    print(f"contracts ok: {checked}", file=stream, flush=True)
    return EXIT_OK


def snapshot_json(app: Mesh) -> str:
    """``app.contracts.snapshot()`` as stable JSON (sorted keys) for committing."""
    return json.dumps(app.contracts.snapshot(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def read_snapshot(path: str) -> dict[str, Any]:
    """Load a ``mesh contracts snapshot`` file; `UsageError` says what is wrong with it."""
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read snapshot {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"snapshot {path} is not valid JSON: {exc}") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("schema"), dict) and "version" in entry
        for entry in loaded.values()
    ):
        raise UsageError(
            f"snapshot {path} is not a contracts snapshot (an object of "
            "{type: {version, schema}}); write one with mesh contracts snapshot"
        )
    return loaded


# --- loading an app (run, docs, contracts) ----------------------------------------------


def split_target(target: str) -> tuple[str, str]:
    """``module:attr`` / ``path/app.py[:attr]`` -> (module or path, attr). attr defaults
    to ``mesh``. Only a trailing ``:dotted.name`` counts as attr, so ``C:\\app.py``
    stays a path."""
    head, sep, tail = target.rpartition(":")
    if sep and tail and all(part.isidentifier() for part in tail.split(".")) and head:
        return head, tail
    if sep and not tail:
        raise UsageError(
            f"app {target!r} ends with ':'; write module:attr (e.g. app:mesh) "
            "or leave the attribute out to use 'mesh'"
        )
    return target, "mesh"


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def import_target(spec: str) -> ModuleType:
    """Import a module by dotted name (from the current directory, like ``python -m``)
    or execute a ``.py`` file as a module (its directory first on ``sys.path``, like
    ``python app.py``, so the app's sibling modules import)."""
    if _is_path(spec):
        path = Path(spec)
        if not path.is_file():
            raise UsageError(
                f"app file {spec} does not exist; pass an existing .py file "
                "or a module name (mesh run package.module:mesh)"
            )
        name = (
            path.stem
            if path.stem.isidentifier() and path.stem not in sys.modules
            else f"_mesh_app_{uuid.uuid4().hex[:8]}"
        )
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"cannot load {spec} as a Python module; is it a .py file?")
        module = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.resolve().parent))
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    if not all(part.isidentifier() for part in spec.split(".")):
        raise UsageError(
            f"{spec!r} is neither a module name nor a .py file; use "
            "package.module:attr or path/to/app.py[:attr]"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise UsageError(
                f"cannot import app module {spec!r} (no module named {exc.name!r}); run mesh "
                "from the directory that contains it, add that directory to PYTHONPATH, or "
                "pass the file: mesh run path/to/app.py"
            ) from None
        raise


def load_app(target: str) -> Mesh:
    """Import ``target`` and return its `Mesh`; `UsageError` says what to pass instead."""
    spec, attr = split_target(target)
    module = import_target(spec)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = [name for name, value in vars(module).items() if isinstance(value, Mesh)]
            hint = (
                f"Mesh objects in it: {', '.join(found)}; use {spec}:{found[0]}"
                if found
                else "it defines no Mesh at module level; create one there, e.g. mesh = Mesh()"
            )
            raise UsageError(f"{spec} has no attribute {attr!r}; {hint}") from None
    if not isinstance(obj, Mesh):
        raise UsageError(
            f"{spec}:{attr} is a {type(obj).__name__}, not a mesh.Mesh; point "
            "mesh run at the Mesh instance your handlers are registered on"
        )
    return obj


def _prepare_run_environment(args: argparse.Namespace) -> MeshConfig:
    """Export --config/--transport as ``MESH_CONFIG``/``MESH_TRANSPORT`` before the app is
    imported (its Mesh is usually built at import time and reads them), and return the
    configuration the app's Mesh must end up with."""
    expected = MeshConfig.load(args.config, transport=args.transport)
    if args.config:
        os.environ["MESH_CONFIG"] = str(Path(args.config).resolve())
    if args.transport:
        os.environ["MESH_TRANSPORT"] = args.transport
    return expected


async def run_app(app: Mesh, on_ready: Callable[[], None] | None = None) -> None:
    """Start ``app``, report readiness, then ``app.run()`` until SIGINT/SIGTERM.

    Starting first (``start`` is idempotent, so ``run`` does not start twice) lets the
    CLI say "ready" only once every handler is subscribed.
    """
    try:
        await app.start()
        if on_ready is not None:
            on_ready()
        await app.run()
    finally:
        await app.stop()


def run_bounded(main: Coroutine[Any, Any, Any], grace: float = 2.0) -> Any:
    """``asyncio.run(main)``, except that tasks still alive when ``main`` returned get
    ``grace`` seconds after their cancellation instead of forever: `Mesh.stop` abandons
    a handler that ignores cancellation (and says so), and ``asyncio.run`` would then
    wait for it at exit, so ``mesh run`` would never end."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


# --- the argparse layer -----------------------------------------------------------------


def _parse_json(text: str, what: str) -> Any:
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


def _parse_extensions(items: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--ext {item!r} must be NAME=VALUE, e.g. --ext partitionkey=o-7")
        result[name] = value
    return result


def parse_filter(text: str | None) -> tuple[str | None, FilterSpec | None]:
    """``mesh tail``'s FILTER -> (channel pattern, Subscriptions API filter).

    Text starting with ``{`` or ``[`` is a JSON filter; anything else is an event type
    or channel pattern. Nothing means every channel (``>``).
    """
    if text is None or not text.strip():
        return ">", None
    if text.lstrip().startswith(("{", "[")):
        spec = _parse_json(text, "FILTER")
        if not isinstance(spec, (dict, list)):
            raise UsageError(
                "a JSON FILTER must be an object such as "
                '\'{"prefix": {"type": "orders."}}\' or a list of them'
            )
        return None, spec
    return text.strip(), None


def _load_config(args: argparse.Namespace) -> MeshConfig:
    return MeshConfig.load(args.config, transport=args.transport)


def _note_private_memory(config: MeshConfig) -> None:
    if config.transport_url.partition("://")[0].lower() == "memory":
        print(f"note: {_PRIVATE_MEMORY_NOTE}", file=sys.stderr)


@contextlib.contextmanager
def _signals_set(event: asyncio.Event) -> Iterator[None]:
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


def _import_app(args: argparse.Namespace) -> Mesh | None:
    """`load_app` for a command: None (after printing the traceback) when the app's own
    code failed at import, so the command exits 1 rather than showing a CLI crash."""
    try:
        return load_app(args.app)
    except (UsageError, MeshError):
        raise
    except Exception:
        traceback.print_exc()
        print(f"error: importing {args.app} failed (traceback above)", file=sys.stderr)
        return None


def _cmd_run(args: argparse.Namespace) -> int:
    expected = _prepare_run_environment(args)
    app = _import_app(args)
    if app is None:
        return EXIT_ERROR
    if (args.transport or args.config) and app.config.transport != expected.transport:
        raise UsageError(
            f"{args.app} builds its Mesh with an explicit transport "
            f"({app.config.redacted_transport}), which outranks --transport/--config; drop "
            "the argument (use Mesh() or Mesh.from_config()) so the command line can choose"
        )

    def ready() -> None:
        print(
            f"mesh: running {args.app} on {app.config.redacted_transport} with "
            f"{len(app.handlers)} handler(s); press Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )

    run_bounded(run_app(app, ready))
    print("mesh: stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def _cmd_publish(args: argparse.Namespace) -> int:
    data = _parse_json(args.data, "--data") if args.data is not None else None
    extensions = _parse_extensions(args.ext or [])
    config = _load_config(args)
    _note_private_memory(config)
    try:
        event = Event(
            args.type,
            args.source or config.source,
            data,
            subject=args.subject,
            extensions=extensions,
        )
    except InvalidEvent as exc:
        raise UsageError(str(exc)) from None

    async def body() -> str:
        async with Mesh(config=config) as mesh:
            return await publish_event(mesh, event, channel=args.channel)

    print(asyncio.run(body()), flush=True)
    return EXIT_OK


def _cmd_tail(args: argparse.Namespace) -> int:
    pattern, spec = parse_filter(args.filter)
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    config = _load_config(args)
    _note_private_memory(config)

    async def body() -> int:
        stop = asyncio.Event()
        with _signals_set(stop):
            return await tail_events(
                Mesh(config=config),
                pattern=pattern,
                filter=spec,
                group=args.group,
                count=args.count,
                as_json=args.json,
                stop=stop,
                skip_mesh=args.skip_mesh,
            )

    asyncio.run(body())
    return EXIT_OK


def _dlq_config(args: argparse.Namespace) -> MeshConfig:
    """The config for a dlq command: the app's, with ``--dead-letter-channel`` applied and
    the capability registry off (the tools serve nothing)."""
    config = _load_config(args)
    update: dict[str, Any] = {"capabilities": {"enabled": False}}
    if args.dead_letter_channel:
        update["dead_letter_channel"] = args.dead_letter_channel
    config = MeshConfig.build({**config.model_dump(), **update})
    _note_private_memory(config)
    return config


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "group": args.group,
        "type": args.type,
        "source": args.source,
        "since": parse_since(args.since) if args.since else None,
    }


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


def _cmd_dlq_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    config = _dlq_config(args)
    selection = _selection(args)

    async def body() -> None:
        async with Mesh(config=config) as mesh:
            await list_dead_letters(
                mesh, limit=args.limit, as_json=args.json, idle=args.wait, **selection
            )

    asyncio.run(body())
    return EXIT_OK


def _cmd_dlq_replay(args: argparse.Namespace) -> int:
    selection = _selection(args)
    if not args.id and not args.all and not any(selection.values()):
        raise UsageError(
            "say what to replay: --id ID (repeatable; see mesh dlq list), a "
            "filter (--group/--type/--source/--since) or --all"
        )
    if args.id and args.all:
        raise UsageError("pass either --id or --all, not both")
    config = _dlq_config(args)

    async def body() -> tuple[list[Event], list[str]]:
        async with Mesh(config=config) as mesh:
            return await replay_dead_letters(
                mesh, ids=args.id or None, idle=args.wait, all_groups=args.all_groups, **selection
            )

    replayed, missing = asyncio.run(body())
    print(f"replayed {len(replayed)} event(s)", file=sys.stderr, flush=True)
    if missing:
        print(
            f"error: no replayable dead-letter copy with id {', '.join(missing)} "
            "(mesh dlq list shows what is there)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def _write_output(text: str, path: str | None) -> None:
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {path}", file=sys.stderr)


def _cmd_docs(args: argparse.Namespace) -> int:
    fmt = args.format or ("yaml" if str(args.output or "").endswith((".yaml", ".yml")) else "json")
    _prepare_run_environment(args)
    app = _import_app(args)
    if app is None:
        return EXIT_ERROR
    _write_output(
        render_asyncapi(app, fmt=fmt, title=args.title, version=args.api_version), args.output
    )
    return EXIT_OK


def _cmd_agents(args: argparse.Namespace) -> int:
    for name in ("interval", "wait"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name} must be at least 0 seconds")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    config = _load_config(args)
    _note_private_memory(config)
    count = args.count if args.count is not None else (None if args.watch else 1)

    async def body() -> None:
        stop = asyncio.Event()
        with _signals_set(stop):
            await list_agents(
                Mesh(config=config),
                as_json=args.json,
                wait=args.wait,
                interval=args.interval,
                count=count,
                stop=stop,
            )

    asyncio.run(body())
    return EXIT_OK


def _load_contract_app(args: argparse.Namespace) -> Mesh | int:
    """The app, or the exit code when it cannot be checked: an incompatible contract
    version raises `ContractViolation` while the module registers it, and that is the
    finding a CI job wants reported, not a traceback."""
    _prepare_run_environment(args)
    try:
        app = _import_app(args)
    except ContractViolation as exc:
        print(f"{args.app}: {exc}", file=sys.stdout)
        print(
            "contracts check failed: the app refused to load (register the new version "
            "with compatible=False only if breaking consumers is intended)",
            file=sys.stdout,
            flush=True,
        )
        return EXIT_ERROR
    return EXIT_ERROR if app is None else app


def _cmd_contracts_check(args: argparse.Namespace) -> int:
    snapshot = read_snapshot(args.against) if args.against else None
    app = _load_contract_app(args)
    if isinstance(app, int):
        return app
    return print_contract_report(app, contract_report(app, snapshot), against=args.against)


def _cmd_contracts_snapshot(args: argparse.Namespace) -> int:
    app = _load_contract_app(args)
    if isinstance(app, int):
        return app
    _write_output(snapshot_json(app), args.output)
    return EXIT_OK


def _cmd_transports(args: argparse.Namespace) -> int:
    described = plugins.transport_registry().describe()
    width = max((len(scheme) for scheme in described), default=0) + 3
    for scheme, description in described.items():
        print(f"{(scheme + '://').ljust(width)}  {description}".rstrip())
    hint = install_hint(described)
    if hint:  # only for bundled plugins that are not installed
        print(f"more brokers {hint}", file=sys.stderr)
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse with errors that end in the usage exit code, and help that keeps the
    paragraphs of the descriptions (they explain when a command is meaningful)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def _common_options(suppress: bool) -> _Parser:
    """--transport/--config/--log-level, accepted before and after the command name.

    On subcommands they default to SUPPRESS so a value given before the command
    is not overwritten by the subcommand's default (an argparse quirk).
    """
    default: Any = argparse.SUPPRESS if suppress else None
    common = _Parser(add_help=False)
    common.add_argument(
        "--transport",
        metavar="URL",
        default=default,
        help="broker URL (overrides the config file and MESH_TRANSPORT), "
        "e.g. nats://localhost:4222",
    )
    common.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="a mesh.yaml (MESH_* variables and --transport still win)",
    )
    common.add_argument(
        "--log-level",
        metavar="LEVEL",
        default=default,
        choices=["debug", "info", "warning", "error"],
        help="debug, info, warning or error (default: info for run, warning otherwise)",
    )
    return common


def _dlq_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group", help="only copies of this group's failures ('' = broadcast handlers)"
    )
    parser.add_argument(
        "--type", metavar="PATTERN", help="only these event types: a type or pattern ('orders.*')"
    )
    parser.add_argument("--source", help="only events of this CloudEvents source")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only copies dead-lettered since WHEN: a time "
        "(2026-12-01T10:00:00Z) or an age (30m, 2h, 7d)",
    )
    parser.add_argument(
        "--dead-letter-channel",
        metavar="CHANNEL",
        help="the app's own dead-letter channel (default: the config's "
        "dead_letter_channel, mesh.deadletter)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, for `main` and for generated documentation."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="mesh",
        description="Run and inspect event-mesh applications.",
        formatter_class=formatter,
        parents=[_common_options(False)],
    )
    parser.add_argument("--version", action="version", version=f"event-mesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = [_common_options(True)]

    run = sub.add_parser(
        "run",
        parents=common,
        formatter_class=formatter,
        help="run an app until Ctrl-C",
        description="Import an app and run its Mesh until Ctrl-C or SIGTERM; in-flight "
        "handlers get shutdown_timeout seconds to finish.\n\n--transport and "
        "--config reach the app through MESH_* variables set before the import, "
        "so the app must not pass a transport to Mesh() itself.",
    )
    run.add_argument(
        "app", metavar="APP", help="module:attr or path/to/app.py[:attr]; attr defaults to 'mesh'"
    )
    run.set_defaults(func=_cmd_run)

    publish = sub.add_parser(
        "publish",
        parents=common,
        formatter_class=formatter,
        help="publish one event",
        description="Publish one CloudEvent and print its id.\n\n" + _PRIVATE_MEMORY_NOTE,
    )
    publish.add_argument("type", metavar="TYPE", help="event type, e.g. orders.created")
    publish.add_argument(
        "--data", metavar="JSON", help="event data as JSON, or @file.json (default: no data)"
    )
    publish.add_argument("--source", help="CloudEvents source (default: the config's source)")
    publish.add_argument("--subject", help="CloudEvents subject")
    publish.add_argument("--channel", help="channel to publish on (default: the type)")
    publish.add_argument(
        "--ext",
        metavar="NAME=VALUE",
        action="append",
        help="an extension attribute (repeatable), e.g. --ext correlationid=abc",
    )
    publish.set_defaults(func=_cmd_publish)

    tail = sub.add_parser(
        "tail",
        parents=common,
        formatter_class=formatter,
        help="print events as they arrive",
        description="Print events live, one line each (time, type, source, id, data).\n\n"
        "FILTER is an event type or channel pattern ('orders.*', 'orders.>') or a "
        'JSON Subscriptions API filter (\'{"prefix": {"type": "orders."}}\'); '
        "default: every channel, the mesh's own included (registry, replies, "
        "dead letters with their reason). Without --group the tail is a broadcast "
        "subscriber and takes nothing away from the apps; with --group it "
        "competes with that group's members.\n\n" + _PRIVATE_MEMORY_NOTE,
    )
    tail.add_argument("filter", metavar="FILTER", nargs="?", help="pattern or JSON filter")
    tail.add_argument("--group", help="join this consumer group instead of broadcasting")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N events")
    tail.add_argument(
        "--json", action="store_true", help="print each event as structured-mode CloudEvents JSON"
    )
    tail.add_argument(
        "--skip-mesh",
        action="store_true",
        help="hide the mesh's own channels (registry, replies), except the dead-letter channel",
    )
    tail.set_defaults(func=_cmd_tail)

    dlq = sub.add_parser(
        "dlq",
        formatter_class=formatter,
        help="list or replay dead letters",
        description="Inspect the dead-letter channel.\n\n" + _PRIVATE_MEMORY_NOTE,
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq_list = dlq_sub.add_parser(
        "list",
        parents=common,
        formatter_class=formatter,
        help="show dead-letter copies",
        description="Show dead-letter copies: id, type, original channel, group, attempts, "
        "error type and reason. Listing reads the dead-letter channel without "
        "consuming it: nothing is removed, hidden or reordered for anyone.\n\n"
        + _PRIVATE_MEMORY_NOTE,
    )
    dlq_list.add_argument(
        "--limit", type=int, default=100, metavar="N", help="show at most N copies (default 100)"
    )
    _dlq_options(dlq_list)
    dlq_list.add_argument("--json", action="store_true", help="print CloudEvents JSON")
    dlq_list.add_argument(
        "--wait",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="stop after no copy arrived for this long (default 1)",
    )
    dlq_list.set_defaults(func=_cmd_dlq_list)
    dlq_replay = dlq_sub.add_parser(
        "replay",
        parents=common,
        formatter_class=formatter,
        help="republish dead letters to their original channels",
        description="Republish dead-letter copies to their original channels and remove "
        "them from the list. A replayed event reaches only the group that failed "
        "(groups that handled it do not run it again) unless --all-groups. It "
        "gets a new id and a meshreplayof extension naming the original.\n\n"
        + _PRIVATE_MEMORY_NOTE,
    )
    dlq_replay.add_argument(
        "--id", action="append", metavar="ID", help="copy id or original event id (repeatable)"
    )
    dlq_replay.add_argument(
        "--all", action="store_true", help="replay every copy (or every one the filters select)"
    )
    dlq_replay.add_argument(
        "--all-groups",
        action="store_true",
        help="deliver replayed events to every group on the channel, not "
        "only to the group that failed",
    )
    _dlq_options(dlq_replay)
    dlq_replay.add_argument(
        "--wait",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="stop after no copy arrived for this long (default 1)",
    )
    dlq_replay.set_defaults(func=_cmd_dlq_replay)
    dlq.set_defaults(func=lambda args: _missing_subcommand(dlq))

    agents = sub.add_parser(
        "agents",
        parents=common,
        formatter_class=formatter,
        help="list the live capability registry",
        description="List the capabilities live instances announce on the registry "
        "channel: name, version, group, instance, source, tags, the time left "
        "before the entry expires (it resets every heartbeat: an entry running "
        "down means that instance stopped beating) and the description.\n\n"
        "The command joins the registry without serving anything, asks for a "
        "resync and waits capabilities.resync_wait (plus a little) for the "
        "answers.\n\n" + _PRIVATE_MEMORY_NOTE,
    )
    agents.add_argument(
        "--watch", action="store_true", help="refresh until Ctrl-C (every --interval seconds)"
    )
    agents.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="seconds between refreshes (default: the heartbeat)",
    )
    agents.add_argument(
        "--count", type=int, metavar="N", help="stop after N listings (implies --watch)"
    )
    agents.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="wait this long for announcements before the first listing "
        "(default: capabilities.resync_wait + 0.5)",
    )
    agents.add_argument(
        "--json",
        action="store_true",
        help="print JSON (one array per listing; one line each with --watch)",
    )
    agents.set_defaults(func=_cmd_agents)

    docs = sub.add_parser(
        "docs",
        parents=common,
        formatter_class=formatter,
        help="write the AsyncAPI 3.0 document of an app",
        description="Import an app (without starting it) and write the AsyncAPI 3.0.0 "
        "document of its handlers, capabilities and contracts (see "
        "docs/asyncapi.md). The server comes from the app's transport URL, "
        "without credentials; --transport/--config reach the app like in "
        "mesh run.",
    )
    docs.add_argument(
        "app", metavar="APP", help="module:attr or path/to/app.py[:attr]; attr defaults to 'mesh'"
    )
    docs.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    docs.add_argument(
        "--format",
        choices=["json", "yaml"],
        help="json or yaml (default: yaml for a .yaml/.yml FILE, else json)",
    )
    docs.add_argument("--title", help="info.title (default: the app's source)")
    docs.add_argument(
        "--api-version",
        default="1.0.0",
        metavar="VERSION",
        help="info.version, the version of your API (default 1.0.0)",
    )
    docs.set_defaults(func=_cmd_docs)

    contracts = sub.add_parser(
        "contracts",
        formatter_class=formatter,
        help="check data contracts (for CI)",
        description="Check an app's data contracts for backward compatibility, and keep a "
        "snapshot to check future builds against.",
    )
    contracts_sub = contracts.add_subparsers(dest="contracts_command", metavar="ACTION")
    check = contracts_sub.add_parser(
        "check",
        parents=common,
        formatter_class=formatter,
        help="report incompatible contract versions",
        description="Import an app and report every incompatibility between consecutive "
        "registered versions of a contract and, with --against, between the "
        "snapshot and the current contracts (a contract removed from the app is "
        "a problem too). Exits 1 when there is any problem, 0 otherwise. An app "
        "that refuses to load because it registers an incompatible version "
        "counts as a failed check.",
    )
    check.add_argument("app", metavar="APP", help="module:attr or path/to/app.py[:attr]")
    check.add_argument(
        "--against", metavar="SNAPSHOT", help="a JSON file written by mesh contracts snapshot"
    )
    check.set_defaults(func=_cmd_contracts_check)
    snapshot = contracts_sub.add_parser(
        "snapshot",
        parents=common,
        formatter_class=formatter,
        help="write the app's latest contracts as JSON",
        description="Write {type: {version, schema}} of the app's latest contracts as JSON "
        "(sorted, stable): commit it, and let CI run mesh contracts check "
        "--against it.",
    )
    snapshot.add_argument("app", metavar="APP", help="module:attr or path/to/app.py[:attr]")
    snapshot.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    snapshot.set_defaults(func=_cmd_contracts_snapshot)
    contracts.set_defaults(func=lambda args: _missing_subcommand(contracts))

    transports = sub.add_parser(
        "transports",
        parents=common,
        help="list installed transports",
        description="List the installed transport URL schemes.",
    )
    transports.set_defaults(func=_cmd_transports)
    return parser


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _setup_logging(args: argparse.Namespace) -> None:
    level = args.log_level or ("info" if args.command == "run" else "warning")
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mesh`` script and ``python -m mesh``; returns the exit code.

    Returns instead of exiting (argparse's own exits included) so it can be called
    in-process by tests and by other tools.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    try:
        return func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
