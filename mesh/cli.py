"""The ``mesh`` command: run an app, and look into a live mesh from a shell.

::

    mesh run app.py                          # or package.module:attr; until Ctrl-C/SIGTERM
    mesh publish orders.created --data '{"id": 7}'
    mesh tail 'orders.>'                     # or '{"prefix": {"type": "orders."}}'
    mesh dlq list          mesh dlq replay --all
    mesh transports

Every command reads its configuration the way an app does (``--config
mesh.yaml``, then ``MESH_*`` variables, then ``--transport``), so the CLI talks
to the broker the apps talk to without a second way to configure it.

It is built on argparse rather than click so the core distribution gains no
dependency for it. The command bodies are async functions that take a `Mesh`
(`publish_event`, `tail_events`, `list_dead_letters`, `replay_dead_letters`):
the argparse layer only builds the mesh, so tests (and scripts) can drive the
same code on a shared ``memory://name`` broker.

Exit codes: 0 success; 1 a `MeshError` (printed as ``error: ...``); 2 a command
line the CLI cannot act on (bad JSON, unknown app, ...); 130 interrupted.
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
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TextIO

from mesh import __version__, codec, plugins
from mesh.app import Mesh
from mesh.config import MeshConfig
from mesh.context import ID_NAMESPACE
from mesh.delivery import DL_ATTEMPTS, DL_CHANNEL, DL_ERROR, DL_GROUP, DL_REASON
from mesh.errors import ConfigError, InvalidEvent, MeshError
from mesh.event import Event, format_time
from mesh.routing.filters import FilterSpec

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Longest compact ``data`` shown on one ``mesh tail`` line (``--json`` shows all).
DATA_WIDTH = 200
#: Longest reason shown in the ``mesh dlq list`` table (``--json`` shows all).
REASON_WIDTH = 60

_PRIVATE_MEMORY_NOTE = (
    "On memory:// the command runs its own private in-process broker, so it only "
    "sees events of this process: point --transport (or MESH_TRANSPORT) at the broker "
    "your apps use.")


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


def format_event_line(event: Event) -> str:
    """One ``mesh tail`` line: time, type, source, id, compact data.

    Data is cut at `DATA_WIDTH` so one event stays one line in a terminal; use
    ``--json`` for everything.
    """
    when = format_time(event.time) if event.time is not None else "-"
    return f"{when}  {event.type}  {event.source}  {event.id}  {_compact(event.data)}"


def _compact(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return f"<{len(data)} bytes>"
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= DATA_WIDTH else text[:DATA_WIDTH - 1] + "\u2026"


async def tail_events(mesh: Mesh, *, pattern: str | None = None,
                      filter: FilterSpec | None = None, group: str | None = None,
                      count: int | None = None, as_json: bool = False,
                      out: TextIO | None = None, ready: asyncio.Event | None = None,
                      stop: asyncio.Event | None = None) -> int:
    """Print events arriving on an unstarted ``mesh`` until ``count`` were shown or
    ``stop`` is set; returns how many were printed.

    The handler is not idempotent (a tail should show duplicates, they are news to
    whoever debugs) and takes one event at a time so lines come in delivery order.
    Events beyond ``count`` are held unsettled and handed back when the mesh stops,
    so in ``--group`` mode they go to the other members instead of being lost.
    ``ready`` is set once subscribed: what is published after that is shown.
    """
    stream = out if out is not None else sys.stdout
    stop = stop if stop is not None else asyncio.Event()
    shown = 0

    async def show(event: Event) -> None:
        nonlocal shown
        if count is not None and shown >= count:
            await asyncio.Event().wait()   # park it: cancelled (not acked) at stop
        shown += 1
        line = json.dumps(codec.to_dict(event), ensure_ascii=False) if as_json \
            else format_event_line(event)
        print(line, file=stream, flush=True)
        if count is not None and shown >= count:
            stop.set()

    if pattern is None and filter is None:
        pattern = ">"
    try:
        mesh.on(pattern, filter=filter, group=group, name="mesh-tail", max_in_flight=1,
                idempotent=False)(show)
    except ConfigError as exc:
        raise UsageError(f"bad FILTER: {exc}") from None
    async with mesh:
        if ready is not None:
            ready.set()
        await stop.wait()
        await mesh.stop(timeout=1.0)   # let the last shown event's ack through
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
        row["reason"] = reason if len(reason) <= REASON_WIDTH \
            else reason[:REASON_WIDTH - 1] + "\u2026"
    widths = {col: max([len(col)] + [len(row[col]) for row in rows]) for col in _DLQ_COLUMNS}
    lines = ["  ".join(col.upper().ljust(widths[col]) for col in _DLQ_COLUMNS).rstrip()]
    lines += ["  ".join(row[col].ljust(widths[col]) for col in _DLQ_COLUMNS).rstrip()
              for row in rows]
    return "\n".join(lines)


async def list_dead_letters(mesh: Mesh, *, limit: int = 100, as_json: bool = False,
                            out: TextIO | None = None, idle: float = 1.0) -> list[Event]:
    """Print up to ``limit`` dead-letter copies of a started ``mesh`` (left in place)."""
    stream = out if out is not None else sys.stdout
    copies = await mesh.dead_letters.list(limit=limit, idle=idle)
    if as_json:
        print(json.dumps([codec.to_dict(copy) for copy in copies], ensure_ascii=False,
                         indent=2), file=stream, flush=True)
    elif copies:
        print(format_dead_letters(copies), file=stream, flush=True)
    else:
        print(f"no dead letters on {mesh.config.dead_letter_channel}", file=stream, flush=True)
    return copies


async def replay_dead_letters(mesh: Mesh, *, ids: Sequence[str] | None = None,
                              out: TextIO | None = None, limit: int = 1000,
                              idle: float = 1.0) -> tuple[list[Event], list[str]]:
    """Replay copies (all when ``ids`` is None) of a started ``mesh``; print each replayed
    event and return (replayed events, requested ids that matched no copy).

    An id may be the copy's id (what ``mesh dlq list`` shows) or the original event's
    id; a replayed event's id is derived from its copy's (see `mesh.dlq`), which is
    how a copy id is matched here.
    """
    stream = out if out is not None else sys.stdout
    replayed = await mesh.dead_letters.replay(ids=ids, limit=limit, idle=idle)
    for event in replayed:
        original = event.extensions.get("meshreplayof", "?")
        print(f"replayed {event.type} {original} as {event.id}", file=stream, flush=True)
    missing: list[str] = []
    if ids is not None:
        done_ids = {e.id for e in replayed} | {str(e.extensions.get("meshreplayof"))
                                               for e in replayed}
        missing = [i for i in ids if i not in done_ids
                   and str(uuid.uuid5(ID_NAMESPACE, f"replay\x1f{i}")) not in done_ids]
    return replayed, missing


# --- loading an app for `mesh run` ------------------------------------------------------


def split_target(target: str) -> tuple[str, str]:
    """``module:attr`` / ``path/app.py[:attr]`` -> (module or path, attr). attr defaults
    to ``mesh``. Only a trailing ``:dotted.name`` counts as attr, so ``C:\\app.py``
    stays a path."""
    head, sep, tail = target.rpartition(":")
    if sep and tail and all(part.isidentifier() for part in tail.split(".")) and head:
        return head, tail
    if sep and not tail:
        raise UsageError(f"app {target!r} ends with ':'; write module:attr (e.g. app:mesh) "
                         "or leave the attribute out to use 'mesh'")
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
            raise UsageError(f"app file {spec} does not exist; pass an existing .py file "
                             "or a module name (mesh run package.module:mesh)")
        name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules \
            else f"_mesh_app_{uuid.uuid4().hex[:8]}"
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
        raise UsageError(f"{spec!r} is neither a module name nor a .py file; use "
                         "package.module:attr or path/to/app.py[:attr]")
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
                "pass the file: mesh run path/to/app.py") from None
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
            hint = (f"Mesh objects in it: {', '.join(found)}; use {spec}:{found[0]}"
                    if found else "it defines no Mesh at module level; create one there, "
                    "e.g. mesh = Mesh()")
            raise UsageError(f"{spec} has no attribute {attr!r}; {hint}") from None
    if not isinstance(obj, Mesh):
        raise UsageError(f"{spec}:{attr} is a {type(obj).__name__}, not a mesh.Mesh; point "
                         "mesh run at the Mesh instance your handlers are registered on")
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
        raise UsageError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}); quote it for the shell, e.g. "
                         "--data '{\"id\": 7}'") from None


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
            raise UsageError("a JSON FILTER must be an object such as "
                             "'{\"prefix\": {\"type\": \"orders.\"}}' or a list of them")
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


def _cmd_run(args: argparse.Namespace) -> int:
    expected = _prepare_run_environment(args)
    try:
        app = load_app(args.app)
    except (UsageError, MeshError):
        raise
    except Exception:
        traceback.print_exc()
        print(f"error: importing {args.app} failed (traceback above)", file=sys.stderr)
        return EXIT_ERROR
    if (args.transport or args.config) and app.config.transport != expected.transport:
        raise UsageError(
            f"{args.app} builds its Mesh with an explicit transport "
            f"({app.config.redacted_transport}), which outranks --transport/--config; drop "
            "the argument (use Mesh() or Mesh.from_config()) so the command line can choose")

    def ready() -> None:
        print(f"mesh: running {args.app} on {app.config.redacted_transport} with "
              f"{len(app.handlers)} handler(s); press Ctrl-C to stop", file=sys.stderr,
              flush=True)

    asyncio.run(run_app(app, ready))
    print("mesh: stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def _cmd_publish(args: argparse.Namespace) -> int:
    data = _parse_json(args.data, "--data") if args.data is not None else None
    extensions = _parse_extensions(args.ext or [])
    config = _load_config(args)
    _note_private_memory(config)
    try:
        event = Event(args.type, args.source or config.source, data, subject=args.subject,
                      extensions=extensions)
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
            return await tail_events(Mesh(config=config), pattern=pattern, filter=spec,
                                     group=args.group, count=args.count, as_json=args.json,
                                     stop=stop)

    asyncio.run(body())
    return EXIT_OK


def _cmd_dlq_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    config = _load_config(args)
    _note_private_memory(config)

    async def body() -> None:
        async with Mesh(config=config) as mesh:
            await list_dead_letters(mesh, limit=args.limit, as_json=args.json, idle=args.wait)

    asyncio.run(body())
    return EXIT_OK


def _cmd_dlq_replay(args: argparse.Namespace) -> int:
    if not args.id and not args.all:
        raise UsageError("say what to replay: --id ID (repeatable; see mesh dlq list) or --all")
    if args.id and args.all:
        raise UsageError("pass either --id or --all, not both")
    config = _load_config(args)
    _note_private_memory(config)

    async def body() -> tuple[list[Event], list[str]]:
        async with Mesh(config=config) as mesh:
            return await replay_dead_letters(mesh, ids=None if args.all else args.id,
                                             idle=args.wait)

    replayed, missing = asyncio.run(body())
    print(f"replayed {len(replayed)} event(s)", file=sys.stderr, flush=True)
    if missing:
        print(f"error: no replayable dead-letter copy with id {', '.join(missing)} "
              "(mesh dlq list shows what is there)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _cmd_transports(args: argparse.Namespace) -> int:
    described = plugins.transport_registry().describe()
    width = max((len(scheme) for scheme in described), default=0) + 3
    for scheme, description in described.items():
        print(f"{(scheme + '://').ljust(width)}  {description}".rstrip())
    print("more: pip install event-mesh-kafka / event-mesh-nats / event-mesh-rabbitmq",
          file=sys.stderr)
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
    common.add_argument("--transport", metavar="URL", default=default,
                        help="broker URL (overrides the config file and MESH_TRANSPORT), "
                             "e.g. nats://localhost:4222")
    common.add_argument("--config", metavar="PATH", default=default,
                        help="a mesh.yaml (MESH_* variables and --transport still win)")
    common.add_argument("--log-level", metavar="LEVEL", default=default,
                        choices=["debug", "info", "warning", "error"],
                        help="debug, info, warning or error (default: info for run, "
                             "warning otherwise)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, for `main` and for generated documentation."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="mesh", description="Run and inspect event-mesh applications.",
                     formatter_class=formatter, parents=[_common_options(False)])
    parser.add_argument("--version", action="version", version=f"event-mesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = [_common_options(True)]

    run = sub.add_parser(
        "run", parents=common, formatter_class=formatter, help="run an app until Ctrl-C",
        description="Import an app and run its Mesh until Ctrl-C or SIGTERM; in-flight "
                    "handlers get shutdown_timeout seconds to finish.\n\n--transport and "
                    "--config reach the app through MESH_* variables set before the import, "
                    "so the app must not pass a transport to Mesh() itself.")
    run.add_argument("app", metavar="APP",
                     help="module:attr or path/to/app.py[:attr]; attr defaults to 'mesh'")
    run.set_defaults(func=_cmd_run)

    publish = sub.add_parser(
        "publish", parents=common, formatter_class=formatter, help="publish one event",
        description="Publish one CloudEvent and print its id.\n\n" + _PRIVATE_MEMORY_NOTE)
    publish.add_argument("type", metavar="TYPE", help="event type, e.g. orders.created")
    publish.add_argument("--data", metavar="JSON",
                         help="event data as JSON, or @file.json (default: no data)")
    publish.add_argument("--source", help="CloudEvents source (default: the config's source)")
    publish.add_argument("--subject", help="CloudEvents subject")
    publish.add_argument("--channel", help="channel to publish on (default: the type)")
    publish.add_argument("--ext", metavar="NAME=VALUE", action="append",
                         help="an extension attribute (repeatable), e.g. "
                              "--ext correlationid=abc")
    publish.set_defaults(func=_cmd_publish)

    tail = sub.add_parser(
        "tail", parents=common, formatter_class=formatter, help="print events as they arrive",
        description="Print events live, one line each (time, type, source, id, data).\n\n"
                    "FILTER is an event type or channel pattern ('orders.*', 'orders.>') or a "
                    "JSON Subscriptions API filter ('{\"prefix\": {\"type\": \"orders.\"}}'); "
                    "default: every channel. Without --group the tail is a broadcast "
                    "subscriber and takes nothing away from the apps; with --group it "
                    "competes with that group's members.\n\n" + _PRIVATE_MEMORY_NOTE)
    tail.add_argument("filter", metavar="FILTER", nargs="?", help="pattern or JSON filter")
    tail.add_argument("--group", help="join this consumer group instead of broadcasting")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N events")
    tail.add_argument("--json", action="store_true",
                      help="print each event as structured-mode CloudEvents JSON")
    tail.set_defaults(func=_cmd_tail)

    dlq = sub.add_parser(
        "dlq", formatter_class=formatter, help="list or replay dead letters",
        description="Inspect the dead-letter channel.\n\n" + _PRIVATE_MEMORY_NOTE)
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq_list = dlq_sub.add_parser(
        "list", parents=common, formatter_class=formatter, help="show dead-letter copies",
        description="Show dead-letter copies (they stay where they are): id, type, original "
                    "channel, group, attempts, error type and reason.\n\n"
                    + _PRIVATE_MEMORY_NOTE)
    dlq_list.add_argument("--limit", type=int, default=100, metavar="N",
                          help="show at most N copies (default 100)")
    dlq_list.add_argument("--json", action="store_true", help="print CloudEvents JSON")
    dlq_list.add_argument("--wait", type=float, default=1.0, metavar="SECONDS",
                          help="stop after no copy arrived for this long (default 1)")
    dlq_list.set_defaults(func=_cmd_dlq_list)
    dlq_replay = dlq_sub.add_parser(
        "replay", parents=common, formatter_class=formatter,
        help="republish dead letters to their original channels",
        description="Republish dead-letter copies to their original channels and remove "
                    "them. Replayed events get a new id and a meshreplayof extension naming "
                    "the original.\n\n" + _PRIVATE_MEMORY_NOTE)
    dlq_replay.add_argument("--id", action="append", metavar="ID",
                            help="copy id or original event id (repeatable)")
    dlq_replay.add_argument("--all", action="store_true", help="replay every copy")
    dlq_replay.add_argument("--wait", type=float, default=1.0, metavar="SECONDS",
                            help="stop after no copy arrived for this long (default 1)")
    dlq_replay.set_defaults(func=_cmd_dlq_replay)
    dlq.set_defaults(func=lambda args: _missing_subcommand(dlq))

    transports = sub.add_parser("transports", parents=common, help="list installed transports",
                                description="List the installed transport URL schemes.")
    transports.set_defaults(func=_cmd_transports)
    return parser


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _setup_logging(args: argparse.Namespace) -> None:
    level = args.log_level or ("info" if args.command == "run" else "warning")
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
