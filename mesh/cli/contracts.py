"""``mesh contracts check`` and ``mesh contracts snapshot``: data contracts in CI."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from mesh.app import Mesh
from mesh.cli.app import (
    EXIT_ERROR,
    EXIT_OK,
    AppArgument,
    Common,
    ConfigOption,
    LogLevelOption,
    OutputOption,
    TransportOption,
    UsageError,
    app,
    common,
    missing_command,
    write_output,
)
from mesh.cli.loading import import_app, prepare_environment
from mesh.cli.output import say
from mesh.errors import ContractViolation

contracts_app = typer.Typer(
    name="contracts",
    help="Check an app's data contracts for backward compatibility, and keep a snapshot "
    "to check future builds against.",
    short_help="check data contracts (for CI)",
)
app.add_typer(contracts_app)


@contracts_app.callback(invoke_without_command=True)
def _contracts(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        missing_command(ctx)


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
        say(
            f"{count} problem(s) in {checked}",
            label="contracts check failed:",
            style="bold red",
            stream=stream,
        )
        return EXIT_ERROR
    say(checked, label="contracts ok:", style="bold green", stream=stream)
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


def _load(target: str, options: Common) -> Mesh | int:
    """The app, or the exit code when it cannot be checked: an incompatible contract
    version raises `ContractViolation` while the module registers it, and that is the
    finding a CI job wants reported, not a traceback."""
    prepare_environment(options)
    try:
        mesh = import_app(target)
    except ContractViolation as exc:
        print(f"{target}: {exc}", file=sys.stdout)
        say(
            "the app refused to load (register the new version with compatible=False "
            "only if breaking consumers is intended)",
            label="contracts check failed:",
            style="bold red",
            stream=sys.stdout,
        )
        return EXIT_ERROR
    return EXIT_ERROR if mesh is None else mesh


@contracts_app.command(
    "check",
    short_help="report incompatible contract versions",
    help="Import an app and report every incompatibility between consecutive registered "
    "versions of a contract and, with --against, between the snapshot and the current "
    "contracts (a contract removed from the app is a problem too). Exits 1 when there is "
    "any problem, 0 otherwise. An app that refuses to load because it registers an "
    "incompatible version counts as a failed check.",
)
def check_command(
    ctx: typer.Context,
    target: AppArgument,
    against: Annotated[
        str | None,
        typer.Option(metavar="SNAPSHOT", help="a JSON file written by mesh contracts snapshot"),
    ] = None,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    snapshot = read_snapshot(against) if against else None
    mesh = _load(target, options)
    if isinstance(mesh, int):
        return mesh
    return print_contract_report(mesh, contract_report(mesh, snapshot), against=against)


@contracts_app.command(
    "snapshot",
    short_help="write the app's latest contracts as JSON",
    help="Write {type: {version, schema}} of the app's latest contracts as JSON (sorted, "
    "stable): commit it, and let CI run mesh contracts check --against it.",
)
def snapshot_command(
    ctx: typer.Context,
    target: AppArgument,
    output: OutputOption = None,
    transport: TransportOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> int:
    options = common(ctx, transport, config, log_level)
    mesh = _load(target, options)
    if isinstance(mesh, int):
        return mesh
    write_output(snapshot_json(mesh), output)
    return EXIT_OK
