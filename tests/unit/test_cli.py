"""The ``mesh`` command: argument handling in-process, ``run`` and ``--help`` in a
subprocess, and the async command bodies on a shared named memory broker.

On ``memory://`` every CLI process has its own private broker, so publish/tail/dlq
are exercised through the async helpers the CLI is built on, with the app and the
"CLI" as two Mesh instances on one ``memory://<name>`` broker of this process.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import yaml
from pydantic import BaseModel

from mesh import Context, DeadLetter, Event, Mesh, codec
from mesh.cli import (
    UsageError,
    contract_report,
    format_event_line,
    list_agents,
    list_dead_letters,
    parse_since,
    load_app,
    main,
    parse_filter,
    publish_event,
    replay_dead_letters,
    split_target,
    tail_events,
)

REPO = Path(__file__).resolve().parents[2]


def shared_url() -> str:
    """A broker name of its own per test: named memory brokers live as long as the process."""
    return f"memory://clitest-{uuid.uuid4().hex[:8]}"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


async def wait_for(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# --- argument handling, in-process --------------------------------------------------------


def test_help_runs_as_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mesh", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "publish", "tail", "dlq", "transports", "agents", "docs", "contracts"):
        assert command in proc.stdout


def test_subcommand_help_explains_private_memory_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "--help"]) == 0
    assert "private in-process broker" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "a.b", "--nope"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_transports_lists_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transports"]) == 0
    out = capsys.readouterr().out
    assert "memory://" in out and "in-process" in out


def test_transports_hints_only_at_plugins_not_installed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 item 27: it always printed "more: pip install ..." (names that install
    nothing) even with every plugin installed."""
    from mesh import plugins

    class Registry:
        def __init__(self, described: dict[str, str]) -> None:
            self.described = described

        def describe(self) -> dict[str, str]:
            return self.described

    everything = {"memory": "m", "kafka": "k", "nats": "n", "amqp": "a", "amqps": "a"}
    monkeypatch.setattr(plugins, "transport_registry", lambda: Registry(everything))
    assert main(["transports"]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(
        plugins, "transport_registry", lambda: Registry({"memory": "m", "kafka": "k"})
    )
    assert main(["transports"]) == 0
    assert capsys.readouterr().err.strip() == (
        "more brokers from a clone of the event-mesh repository: pip install ./plugins/nats "
        "./plugins/rabbitmq"
    )


def test_publish_invalid_json_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "orders.created", "--data", "{id: 7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data is not valid JSON")
    assert "--data '{\"id\": 7}'" in err


def test_publish_bad_extension_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "a.b", "--ext", "novalue"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["publish", "a.b", "--ext", "Bad_Name=1"]) == 2
    assert "extension name" in capsys.readouterr().err


def test_publish_prints_the_event_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["publish", "orders.created", "--data", '{"id": 7}', "--transport", "memory://"]) == 0
    )
    captured = capsys.readouterr()
    uuid.UUID(captured.out.strip())
    assert "private in-process broker" in captured.err


def test_unknown_scheme_exits_1_with_suggestion_and_no_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["publish", "a.b", "--transport", "memry://user:hunter2@host:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown transport scheme")
    assert "Did you mean 'memory://'?" in err
    assert "hunter2" not in err


def test_transport_option_is_accepted_before_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--transport", "memry://", "publish", "a.b"]) == 1
    assert "Did you mean" in capsys.readouterr().err


def test_bad_config_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("transport: memory://\nretries: 3\n")
    assert main(["publish", "a.b", "--config", str(config)]) == 1
    assert "retries: unknown field" in capsys.readouterr().err


def test_dlq_replay_needs_ids_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay"]) == 2
    err = capsys.readouterr().err
    assert "--id" in err and "--all" in err
    assert main(["dlq", "replay", "--all", "--id", "x"]) == 2


def test_dlq_without_action_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq"]) == 2
    assert "replay" in capsys.readouterr().err


def test_tail_bad_filter_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "{not json", "--count", "1"]) == 2
    assert "FILTER is not valid JSON" in capsys.readouterr().err
    assert main(["tail", '{"nodialect": {}}', "--count", "1"]) == 2
    assert "unknown filter dialect" in capsys.readouterr().err
    assert main(["tail", "orders..x", "--count", "1"]) == 2
    assert "empty token" in capsys.readouterr().err


def test_version_comes_from_the_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11: the version is defined once, in pyproject.toml, and read from the
    installed metadata by mesh.__version__ and mesh --version."""
    from importlib.metadata import version

    import mesh

    assert mesh.__version__ == version("event-mesh")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"event-mesh {version('event-mesh')}\n"


def test_the_console_script_is_main() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="mesh")
    assert script.value == "mesh.cli:main" and script.load() is main


def _commands(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_every_command_and_option_has_help() -> None:
    import typer

    from mesh.cli import app

    seen = dict(_commands(typer.main.get_command(app), "mesh"))
    assert {"mesh run", "mesh publish", "mesh tail", "mesh dlq list", "mesh dlq replay"} <= set(
        seen
    )
    assert {"mesh agents", "mesh docs", "mesh contracts check", "mesh contracts snapshot"} <= set(
        seen
    )
    for path, command in seen.items():
        assert command.help, f"{path} has no help"
        if path != "mesh":
            assert command.short_help, f"{path} has no line in its group's help"
        for param in command.params:
            assert getattr(param, "help", None), f"{path}: {param.name} is not documented"


def test_shared_options_work_on_both_sides_of_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The value after the command name wins over the one before it."""
    assert main(["--transport", "memory://", "publish", "a.b", "--transport", "memry://"]) == 1
    assert "Did you mean" in capsys.readouterr().err
    assert main(["--transport", "memry://", "publish", "a.b", "--transport", "memory://"]) == 0


def test_help_off_a_terminal_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", "--help"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out and "\u256d" not in out  # no colours, no rich panels
    assert "--all-groups" in out and "--dead-letter-channel CHANNEL" in out


def test_help_on_a_terminal_is_rich(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mesh.cli

    monkeypatch.setattr(mesh.cli, "is_terminal", lambda stream: True)
    assert main(["tail", "--help"]) == 0
    out = capsys.readouterr().out
    assert "\u256d" in out and "Connection and logging" in out  # typer's rich panels
    assert "--skip-mesh" in out


def test_a_mesh_error_is_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "--transport", "nope://u:hunter2@h", "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown transport scheme")
    assert "Traceback" not in err and "hunter2" not in err


class Terminal(io.StringIO):
    """What the CLI takes for an interactive terminal."""

    def isatty(self) -> bool:
        return True


def test_parse_filter() -> None:
    assert parse_filter(None) == (">", None)
    assert parse_filter("orders.*") == ("orders.*", None)
    assert parse_filter('{"prefix": {"type": "orders."}}') == (
        None,
        {"prefix": {"type": "orders."}},
    )
    assert parse_filter('[{"exact": {"type": "a"}}]') == (None, [{"exact": {"type": "a"}}])
    with pytest.raises(UsageError, match="FILTER is not valid JSON"):
        parse_filter("[1")


def test_split_target() -> None:
    assert split_target("app") == ("app", "mesh")
    assert split_target("pkg.app:agents") == ("pkg.app", "agents")
    assert split_target("src/app.py") == ("src/app.py", "mesh")
    assert split_target("src/app.py:app.mesh") == ("src/app.py", "app.mesh")
    assert split_target("C:\\apps\\app.py") == ("C:\\apps\\app.py", "mesh")
    with pytest.raises(UsageError, match="ends with ':'"):
        split_target("app:")


def test_format_event_line_is_one_compact_line() -> None:
    event = Event(
        "orders.created",
        "/shop",
        {"id": 7, "text": "x\ny" * 200},
        id="e1",
        time="2024-01-02T03:04:05Z",
    )
    line = format_event_line(event)
    assert "\n" not in line
    assert line.startswith('2024-01-02T03:04:05Z  orders.created  /shop  e1  {"id":7')
    assert line.endswith("\u2026")


# --- mesh run, in a subprocess ------------------------------------------------------------

APP = '''\
import os
from mesh import Event, Mesh


mesh = Mesh()
not_a_mesh = 42


@mesh.on_start
async def ping_once() -> None:
    """Publish one ping once started, so the test can see a handler run."""
    await mesh.publish(Event("demo.ping", "/test", {"n": 1}))


@mesh.on("demo.ping")
async def ping(event: Event) -> None:
    with open(os.environ["APP_OUT"], "a") as out:
        out.write(f"handled {event.data['n']} on {mesh.config.redacted_transport} "
                  f"max_attempts={mesh.config.retry.max_attempts}\\n")
'''


def _run_until_handled(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    out = tmp_path / "handled.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh", "run", *args],
        cwd=tmp_path,
        env=cli_env(APP_OUT=str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out.read_text() if out.exists() else "", stderr


def test_run_app_file_until_sigint(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    code, handled, stderr = _run_until_handled(
        ["app.py", "--transport", "memory://runtest"], tmp_path
    )
    assert code == 0, stderr
    assert handled == "handled 1 on memory://runtest max_attempts=3\n"
    assert "press Ctrl-C to stop" in stderr
    assert "mesh: stopped" in stderr


STUBBORN_APP = """
import asyncio, os
from mesh import Event, Mesh

mesh = Mesh(shutdown_timeout=0.5)


@mesh.on_start
async def kick() -> None:
    await mesh.publish(Event("demo.ping", "/test", {"n": 1}))


@mesh.on("demo.ping")
async def stubborn(event: Event) -> None:
    with open(os.environ["APP_OUT"], "a") as out:
        out.write("started\\n")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue   # ignores every cancellation
"""


def test_run_ends_although_a_handler_ignores_cancellation(tmp_path: Path) -> None:
    """Issue 10 item 8: stop abandons such a handler after the timeout and a grace,
    naming it, and the process ends (asyncio.run alone would wait for it forever)."""
    (tmp_path / "app.py").write_text(STUBBORN_APP)
    began = time.monotonic()
    code, handled, stderr = _run_until_handled(["app.py", "--transport", "memory://stub"], tmp_path)
    assert code == 0, stderr
    assert handled == "started\n" and time.monotonic() - began < 20
    assert "handler stubborn ignored cancellation" in stderr and "mesh: stopped" in stderr


def test_run_module_attr_with_config_file(tmp_path: Path) -> None:
    (tmp_path / "demoapp.py").write_text(APP)
    (tmp_path / "mesh.yaml").write_text(
        "transport: memory://fromconfig\nretry:\n  max_attempts: 5\n"
    )
    code, handled, stderr = _run_until_handled(["demoapp:mesh", "--config", "mesh.yaml"], tmp_path)
    assert code == 0, stderr
    assert handled == "handled 1 on memory://fromconfig max_attempts=5\n"


def test_run_missing_module_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no_such_module_here:mesh"]) == 2
    err = capsys.readouterr().err
    assert "cannot import app module 'no_such_module_here'" in err
    assert "PYTHONPATH" in err


def test_run_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_missing_attr_names_the_meshes_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app_attr.py").write_text(APP)
    assert main(["run", f"{tmp_path / 'app_attr.py'}:agents"]) == 2
    err = capsys.readouterr().err
    assert "has no attribute 'agents'" in err and "app_attr.py:mesh" in err


def test_run_attr_that_is_not_a_mesh_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app_notmesh.py").write_text(APP)
    assert main(["run", f"{tmp_path / 'app_notmesh.py'}:not_a_mesh"]) == 2
    assert "is a int, not a mesh.Mesh" in capsys.readouterr().err


def test_run_app_that_fails_to_import_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app_broken.py").write_text("raise RuntimeError('boom at import')\n")
    assert main(["run", str(tmp_path / "app_broken.py")]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom at import" in err and "traceback above" in err


def test_run_refuses_transport_the_app_hardcodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESH_TRANSPORT", "memory://")  # restored after the test
    (tmp_path / "app_fixed.py").write_text(
        "from mesh import Mesh\nmesh = Mesh('memory://hardcoded')\n"
    )
    assert main(["run", str(tmp_path / "app_fixed.py"), "--transport", "memory://other"]) == 2
    assert "explicit transport (memory://hardcoded)" in capsys.readouterr().err


# --- the async command bodies on a shared memory broker -----------------------------------


@pytest.fixture
async def url() -> AsyncIterator[str]:
    yield shared_url()


async def test_publish_event_reaches_a_subscriber(url: str) -> None:
    app = Mesh(url)
    got: list[Event] = []

    @app.on("orders.created")
    async def handle(event: Event) -> None:
        got.append(event)

    async with app, Mesh(url) as cli:
        event = Event(
            "orders.created", "/cli", {"id": 7}, subject="o-7", extensions={"partitionkey": "o-7"}
        )
        assert await publish_event(cli, event) == event.id
        await wait_for(lambda: len(got) == 1)
    assert got[0].id == event.id and got[0].data == {"id": 7}
    assert got[0].partitionkey == "o-7"


async def test_tail_prints_count_events_then_returns(url: str) -> None:
    out, ready = io.StringIO(), asyncio.Event()
    tail = asyncio.create_task(
        tail_events(Mesh(url), pattern="orders.>", count=2, out=out, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 5)
    async with Mesh(url) as publisher:
        for n in range(3):
            await publisher.publish(Event("orders.created", "/shop", {"n": n}, id=f"e{n}"))
        await publisher.publish(Event("users.created", "/shop", {"n": 9}))
        assert await asyncio.wait_for(tail, 5) == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert 'orders.created  /shop  e0  {"n":0}' in lines[0]
    assert "e1" in lines[1]


async def test_tail_json_filter_and_json_output(url: str) -> None:
    out, ready = io.StringIO(), asyncio.Event()
    _, spec = parse_filter(
        '{"all": [{"prefix": {"type": "orders."}}, {"sql": "subject = \'vip\'"}]}'
    )
    tail = asyncio.create_task(
        tail_events(Mesh(url), filter=spec, count=1, as_json=True, out=out, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 5)
    async with Mesh(url) as publisher:
        await publisher.publish(Event("users.created", "/shop", {}, subject="vip"))
        await publisher.publish(Event("orders.created", "/shop", {"n": 1}))
        wanted = Event("orders.paid", "/shop", {"n": 2}, subject="vip")
        await publisher.publish(wanted)
        await asyncio.wait_for(tail, 5)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [codec.to_dict(wanted)]


async def test_tail_stops_when_told(url: str) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    tail = asyncio.create_task(tail_events(Mesh(url), out=io.StringIO(), ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 5)
    stop.set()
    assert await asyncio.wait_for(tail, 5) == 0


async def test_tail_in_a_group_hands_back_what_it_did_not_show(url: str) -> None:
    out, ready = io.StringIO(), asyncio.Event()
    tail = asyncio.create_task(
        tail_events(
            Mesh(url), pattern="jobs.created", group="workers", count=1, out=out, ready=ready
        )
    )
    await asyncio.wait_for(ready.wait(), 5)
    async with Mesh(url) as publisher:
        await publisher.publish(Event("jobs.created", "/q", {"n": 1}, id="job-1"))
        await publisher.publish(Event("jobs.created", "/q", {"n": 2}, id="job-2"))
        await asyncio.wait_for(tail, 5)
    assert "job-1" in out.getvalue() and "job-2" not in out.getvalue()

    worker = Mesh(url)
    got: list[str] = []

    @worker.on("jobs.created", group="workers")
    async def work(event: Event) -> None:
        got.append(event.id)

    async with worker:
        await wait_for(lambda: got == ["job-2"])


async def _app_with_a_dead_letter(url: str, got: list[Event]) -> tuple[Mesh, Event]:
    app = Mesh(url)

    @app.on("orders.created", group="billing")
    async def bill(event: Event, ctx: Context) -> None:
        got.append(event)
        raise DeadLetter("customer 42 is unknown")

    await app.start()
    event = Event("orders.created", "/shop", {"customer": 42})
    await app.publish(event)
    await wait_for(lambda: app.stats("bill").dead_lettered == 1)
    return app, event


async def test_dlq_list_shows_why_and_leaves_copies(url: str) -> None:
    got: list[Event] = []
    app, original = await _app_with_a_dead_letter(url, got)
    try:
        async with Mesh(url) as cli:
            out = io.StringIO()
            copies = await list_dead_letters(cli, out=out, idle=0.3)
            assert len(copies) == 1
            header, row = out.getvalue().splitlines()
            assert header.split() == [
                "ID",
                "TYPE",
                "CHANNEL",
                "GROUP",
                "ATTEMPTS",
                "ERROR",
                "REASON",
            ]
            assert row.split()[:6] == [
                copies[0].id,
                "orders.created",
                "orders.created",
                "billing",
                "1",
                "DeadLetter",
            ]
            assert row.endswith("customer 42 is unknown")

            out = io.StringIO()
            await list_dead_letters(cli, out=out, as_json=True, idle=0.3)
            (listed,) = json.loads(out.getvalue())
            assert listed["meshdlid"] == original.id
            assert listed["meshdlreason"] == "customer 42 is unknown"
            assert listed["data"] == {"customer": 42}
    finally:
        await app.stop()


async def test_dlq_list_and_tail_on_a_terminal_are_rich(url: str) -> None:
    """A terminal gets a rich table and coloured lines; the plain form (above) is for
    everything else."""
    got: list[Event] = []
    tail_out, ready, stop = Terminal(), asyncio.Event(), asyncio.Event()
    tail = asyncio.create_task(
        tail_events(Mesh(url), pattern="orders.>", out=tail_out, ready=ready, stop=stop)
    )
    await asyncio.wait_for(ready.wait(), 5)
    app, original = await _app_with_a_dead_letter(url, got)
    try:
        await wait_for(lambda: original.id in tail_out.getvalue())
        stop.set()
        await asyncio.wait_for(tail, 5)
        assert "\x1b[" in tail_out.getvalue() and "orders.created" in tail_out.getvalue()
        async with Mesh(url) as cli:
            out = Terminal()
            (copy,) = await list_dead_letters(cli, out=out, idle=0.3)
        table = out.getvalue()
        assert "\u2501" in table and "\x1b[" in table  # rich's table rules, colours
        assert "1 dead letter(s) on mesh.deadletter" in table and copy.id in table
        assert "ID  TYPE" not in table
    finally:
        await app.stop()


async def test_dlq_list_when_empty(url: str) -> None:
    async with Mesh(url) as cli:
        out = io.StringIO()
        assert await list_dead_letters(cli, out=out, idle=0.1) == []
    assert out.getvalue() == "no dead letters on mesh.deadletter\n"


async def test_dlq_replay_by_id_republishes_to_the_original_channel(url: str) -> None:
    got: list[Event] = []
    app, original = await _app_with_a_dead_letter(url, got)
    try:
        async with Mesh(url) as cli:
            out = io.StringIO()
            replayed, missing = await replay_dead_letters(
                cli, ids=[original.id, "no-such-id"], out=out, idle=0.3
            )
            assert missing == ["no-such-id"]
            assert [e.extensions["meshreplayof"] for e in replayed] == [original.id]
            assert out.getvalue() == (
                f"replayed orders.created {original.id} as {replayed[0].id} to group billing\n"
            )
            await wait_for(lambda: len(got) == 2)
            assert got[1].extensions["meshreplayof"] == original.id

            # the replay failed again: one new copy, found by its copy id this time
            await wait_for(lambda: app.stats("bill").dead_lettered == 2)
            (copy,) = await list_dead_letters(cli, out=io.StringIO(), idle=0.3)
            replayed, missing = await replay_dead_letters(
                cli, ids=[copy.id], out=io.StringIO(), idle=0.3
            )
            assert len(replayed) == 1 and missing == []
    finally:
        await app.stop()


async def test_dlq_replay_all(url: str) -> None:
    got: list[Event] = []
    app, _ = await _app_with_a_dead_letter(url, got)
    try:
        async with Mesh(url) as cli:
            replayed, missing = await replay_dead_letters(cli, out=io.StringIO(), idle=0.3)
            assert len(replayed) == 1 and missing == []
            await wait_for(lambda: len(got) == 2)
    finally:
        await app.stop()


# --- issue 10 items 16-19: the dead-letter tools ------------------------------------------


async def test_dlq_replay_reaches_only_the_group_that_failed(url: str) -> None:
    """Item 16: replay used to re-publish to every group, re-running groups that had
    succeeded (with new ids, so idempotency could not catch it)."""
    app = Mesh(url)
    runs: dict[str, list[str]] = {"billing": [], "shipping": []}
    broken = True

    @app.on("orders.created", group="billing")
    async def bill(event: Event) -> None:
        runs["billing"].append(event.id)
        if broken:
            raise DeadLetter("billing is down")

    @app.on("orders.created", group="shipping")
    async def ship(event: Event) -> None:
        runs["shipping"].append(event.id)

    async with app:
        await app.publish(Event("orders.created", "/shop", {"n": 1}))
        await wait_for(lambda: app.stats("bill").dead_lettered == 1 and runs["shipping"])
        broken = False
        async with Mesh(url) as cli:
            replayed, _ = await replay_dead_letters(cli, out=io.StringIO(), idle=0.2)
            await wait_for(lambda: len(runs["billing"]) == 2)
            await asyncio.sleep(0.2)
            assert len(runs["shipping"]) == 1, "a group that had succeeded ran it again"
            assert app.stats("ship").handled == 1
            await cli.publish(Event("orders.created", "/shop", {"n": 2}))  # both still run
            await wait_for(lambda: len(runs["shipping"]) == 2 and len(runs["billing"]) == 3)
            # --all-groups reaches everyone
            broken = True
            await cli.publish(Event("orders.created", "/shop", {"n": 3}))
            await wait_for(lambda: app.stats("bill").dead_lettered == 2)
            broken = False
            replayed, _ = await replay_dead_letters(
                cli, out=io.StringIO(), idle=0.2, all_groups=True
            )
            assert len(replayed) == 1
            await wait_for(lambda: len(runs["shipping"]) == 4)


async def test_concurrent_dlq_lists_each_see_every_entry(url: str) -> None:
    """Item 17: two concurrent lists showed 5 entries and none (the list was a competing
    consumer). Listing never removes, hides or reorders entries for anyone."""
    app = Mesh(url)
    seen_by_repair: list[str] = []

    @app.on("jobs.run", group="workers")
    async def work(event: Event) -> None:
        raise DeadLetter("no")

    @app.on_dead_letter(group="repair")
    async def repair(event: Event) -> None:
        seen_by_repair.append(event.id)

    async with app:
        for n in range(5):
            await app.publish(Event("jobs.run", "/q", {"n": n}))
        await wait_for(lambda: app.stats("work").dead_lettered == 5 and len(seen_by_repair) == 5)
        async with Mesh(url) as one, Mesh(url) as two:
            first, second = await asyncio.gather(
                one.dead_letters.list(idle=0.3), two.dead_letters.list(idle=0.3)
            )
            again = await one.dead_letters.list(idle=0.3)
        assert len(first) == len(second) == 5
        assert [e.id for e in first] == [e.id for e in second] == [e.id for e in again]
        await asyncio.sleep(0.2)
        assert len(seen_by_repair) == 5, "listing redelivered copies to a dead-letter handler"


async def test_dlq_filters_and_an_apps_own_channel(url: str) -> None:
    """Item 18: dead letters of every app were mixed with no filter."""
    shop = Mesh(url, source="/shop", dead_letter_channel="shop.deadletter")
    other = Mesh(url, source="/crm")

    @shop.on("orders.created", group="billing")
    async def bill(event: Event) -> None:
        raise DeadLetter("bill")

    @shop.on("orders.paid", group="mail")
    async def mail(event: Event) -> None:
        raise DeadLetter("mail")

    @other.on("leads.created", group="sales")
    async def sell(event: Event) -> None:
        raise DeadLetter("sales")

    async with shop, other:
        await shop.publish(Event("orders.created", "/web", {}))
        await shop.publish(Event("orders.paid", "/pos", {}))
        await other.publish(Event("leads.created", "/web", {}))
        await wait_for(
            lambda: (
                shop.stats("bill").dead_lettered == 1
                and shop.stats("mail").dead_lettered == 1
                and other.stats("sell").dead_lettered == 1
            )
        )
        async with (
            Mesh(url, dead_letter_channel="shop.deadletter") as tool,
            Mesh(url) as default_tool,
        ):
            assert {e.type for e in await tool.dead_letters.list(idle=0.2)} == {
                "orders.created",
                "orders.paid",
            }
            assert [e.type for e in await default_tool.dead_letters.list(idle=0.2)] == [
                "leads.created"
            ]
            assert [e.type for e in await tool.dead_letters.list(idle=0.2, group="mail")] == [
                "orders.paid"
            ]
            assert [
                e.type
                for e in await tool.dead_letters.list(idle=0.2, type="orders.*", source="/web")
            ] == ["orders.created"]
            from datetime import UTC, datetime, timedelta

            assert (
                await tool.dead_letters.list(
                    idle=0.2, since=datetime.now(UTC) + timedelta(minutes=1)
                )
                == []
            )
            assert len(await tool.dead_letters.list(idle=0.2, since=parse_since("5m"))) == 2


def test_since_accepts_times_and_ages() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert parse_since("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterday")


async def test_tail_shows_dead_letters_with_their_reason(url: str) -> None:
    """Item 19: dead letters never appeared in mesh tail, even `mesh tail mesh.deadletter`,
    and the default '>' hid every mesh.* channel while the help said 'every channel'."""
    app = Mesh(url)

    @app.on("orders.created", group="billing")
    async def bill(event: Event) -> None:
        raise DeadLetter("customer 42 is unknown")

    wanted = "[dead letter of billing from orders.created: DeadLetter: customer 42 is unknown]"
    for pattern in ("mesh.deadletter", None):
        out, ready, stop = io.StringIO(), asyncio.Event(), asyncio.Event()
        tail = asyncio.create_task(
            tail_events(Mesh(url), pattern=pattern, out=out, ready=ready, stop=stop)
        )
        await asyncio.wait_for(ready.wait(), 5)
        async with app:
            await app.publish(Event("orders.created", "/shop", {"customer": 42}))
            await wait_for(lambda out=out: wanted in out.getvalue())  # type: ignore[misc]
        stop.set()
        await asyncio.wait_for(tail, 5)
        assert "(on mesh.deadletter)" in out.getvalue()
    assert "mesh.registry" in out.getvalue(), "the default tail must show the mesh's channels"


# --- mesh agents: the live registry, on a shared memory broker ----------------------------


class Summarize(BaseModel):
    text: str


def _provider(url: str, name: str, *, tags: tuple[str, ...] = ()) -> Mesh:
    app = Mesh(url, source=f"/agents/{name}")

    @app.capability(name, input=Summarize, tags=tags, version="1.2.0", group=f"{name}-workers")
    async def serve(request: Summarize, ctx: Context) -> dict[str, str]:
        """Serve the test capability, one line of docs."""
        return {"ok": request.text}

    return app


async def test_agents_lists_capabilities_of_other_instances(url: str) -> None:
    one, two = _provider(url, "summarize", tags=("nlp", "text")), _provider(url, "translate")
    async with one, two:
        out = io.StringIO()
        listing = await list_agents(Mesh(url), out=out, wait=0.3)
    assert [(c.name, c.instance) for c in listing] == [
        ("summarize", one.instance_id),
        ("translate", two.instance_id),
    ]
    header, *rows = out.getvalue().splitlines()
    assert header.split() == [
        "NAME",
        "VERSION",
        "GROUP",
        "INSTANCE",
        "SOURCE",
        "TAGS",
        "EXPIRES",
        "DESCRIPTION",
    ]
    first = rows[0].split()
    assert first[:6] == [
        "summarize",
        "1.2.0",
        "summarize-workers",
        one.instance_id,
        "/agents/summarize",
        "nlp,text",
    ]
    ttl = 3 * one.config.capabilities.heartbeat
    assert first[6].endswith("s") and 0 < int(first[6][:-1]) <= ttl
    assert rows[0].endswith("Serve the test capability, one line of docs.")
    assert rows[1].split()[5] == "-"  # no tags


async def test_agents_json_has_expiry_and_schema(url: str) -> None:
    async with _provider(url, "summarize") as one:
        out = io.StringIO()
        await list_agents(Mesh(url), out=out, wait=0.3, as_json=True)
    (record,) = json.loads(out.getvalue())
    assert record["instance"] == one.instance_id and record["group"] == "summarize-workers"
    assert record["input_schema"]["required"] == ["text"]
    assert 0 < record["expires_in"] <= 3 * one.config.capabilities.heartbeat


async def test_agents_watch_refreshes_and_sees_a_leave(url: str) -> None:
    one, two = _provider(url, "summarize"), _provider(url, "translate")
    await one.start()
    await two.start()
    out, stop = io.StringIO(), asyncio.Event()
    watching = asyncio.create_task(
        list_agents(Mesh(url), out=out, wait=0.3, interval=0.2, count=None, as_json=True, stop=stop)
    )
    try:
        await wait_for(lambda: len(out.getvalue().splitlines()) >= 1)
        await two.stop()  # a graceful stop announces the leave
        await wait_for(lambda: len(json.loads(out.getvalue().splitlines()[-1])) == 1)
        stop.set()
        last = await asyncio.wait_for(watching, 5)
    finally:
        stop.set()
        await one.stop()
        await two.stop()
    assert [c.name for c in last] == ["summarize"]
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("[") for line in lines)  # JSON Lines
    assert {r["name"] for r in json.loads(lines[0])} == {"summarize", "translate"}


async def test_agents_watch_stops_after_count_plain(url: str) -> None:
    async with _provider(url, "summarize"):
        out = io.StringIO()
        await list_agents(Mesh(url), out=out, wait=0.2, interval=0.05, count=3)
    text = out.getvalue()
    assert text.count("# 1 capability(ies) on 1 instance(s) at " + url) == 3
    assert text.count("NAME ") == 3


async def test_agents_when_nothing_is_announced(url: str) -> None:
    out = io.StringIO()
    assert await list_agents(Mesh(url), out=out, wait=0.1) == []
    assert out.getvalue() == f"no capabilities announced on {url}\n"


def test_agents_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "--count", "0"]) == 2
    assert "--count must be at least 1" in capsys.readouterr().err
    assert main(["agents", "--interval", "-1"]) == 2


def test_agents_help_explains_private_memory_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "--help"]) == 0
    out = capsys.readouterr().out
    assert "private in-process broker" in out and "--watch" in out


def test_agents_command_on_private_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "--transport", "memory://", "--wait", "0", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "private in-process broker" in captured.err


# --- mesh docs ----------------------------------------------------------------------------

DOCS_APP = """\
from pydantic import BaseModel
from mesh import Context, Event, Mesh, MeshConfig
from mesh.transports.memory import MemoryTransport


class Order(BaseModel):
    id: int


# the documented URL is a RabbitMQ one; the transport object keeps the test plugin-free
mesh = Mesh(MemoryTransport(), config=MeshConfig.load(
    transport="amqp://guest:hunter2@rabbit.internal:5672/shop"))
mesh.contract("orders.created", Order)


@mesh.on("orders.created", group="billing")
async def bill(order: Order, ctx: Context) -> None: ...


@mesh.capability("refund", input=Order)
async def refund(order: Order, ctx: Context) -> dict:
    return {}
"""


def _write_app(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"app_{uuid.uuid4().hex[:8]}.py"
    path.write_text(text)
    return path


def test_docs_writes_asyncapi_json_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, DOCS_APP)
    assert main(["docs", str(app), "--title", "Shop", "--api-version", "2.0.0"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "Shop" and document["info"]["version"] == "2.0.0"
    # title and protocolVersion are what the RabbitMQ plugin declares (tested with it)
    ((key, server),) = document["servers"].items()
    assert key == "amqp" and server["host"] == "rabbit.internal:5672"
    assert server["protocol"] == "amqp" and server["pathname"] == "/shop"
    assert "hunter2" not in out
    assert {"receive.billing.bill", "capability.refund", "send.orders.created"} <= set(
        document["operations"]
    )


def test_docs_yaml_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = _write_app(tmp_path, DOCS_APP)
    target = tmp_path / "asyncapi.yaml"
    assert main(["docs", f"{app}:mesh", "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    document = yaml.safe_load(target.read_text())
    assert document["asyncapi"] == "3.0.0" and "orders.created" in document["channels"]
    explicit = tmp_path / "asyncapi.out"
    assert main(["docs", str(app), "-o", str(explicit), "--format", "yaml"]) == 0
    assert yaml.safe_load(explicit.read_text()) == document


def test_docs_app_that_fails_to_import_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, "raise RuntimeError('boom at import')\n")
    assert main(["docs", str(app)]) == 1
    assert "RuntimeError: boom at import" in capsys.readouterr().err


def test_docs_missing_app_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", str(tmp_path / "nope.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- mesh contracts -----------------------------------------------------------------------

CONTRACTS_APP = """\
from mesh import Mesh

mesh = Mesh()
mesh.contract("orders.created", {"type": "object", "required": ["id"],
                                 "properties": {"id": {"type": "integer"},
                                                "note": {"type": "string"}}})
mesh.contract("orders.created", {"type": "object", "required": ["id"],
                                 "properties": {"id": {"type": "integer"},
                                                "note": {"type": "string"},
                                                "tags": {"type": "array"}}}, version=2)
"""

BROKEN_ON_PURPOSE = (
    CONTRACTS_APP
    + """\
mesh.contract("orders.created", {"type": "object", "required": ["id", "customer"],
                                 "properties": {"id": {"type": "string"},
                                                "customer": {"type": "string"}}},
              version=3, compatible=False)
"""
)

REFUSED_AT_IMPORT = (
    CONTRACTS_APP
    + """\
mesh.contract("orders.created", {"type": "object", "required": ["id"],
                                 "properties": {"id": {"type": "integer"}}}, version=3)
"""
)


def test_contracts_check_passes_a_compatible_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, CONTRACTS_APP)
    assert main(["contracts", "check", str(app)]) == 0
    assert capsys.readouterr().out == "contracts ok: 1 contract(s)\n"


def test_contracts_check_reports_versions_registered_incompatible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, BROKEN_ON_PURPOSE)
    assert main(["contracts", "check", str(app)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "orders.created v2 -> v3: (root): new required field 'customer'" in lines
    assert "orders.created v2 -> v3: (root): property 'note' removed" in lines
    assert any(line.startswith("orders.created v2 -> v3: id: type changed") for line in lines)
    assert lines[-1] == "contracts check failed: 4 problem(s) in 1 contract(s)"


def test_contracts_check_reports_an_app_refused_at_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, REFUSED_AT_IMPORT)
    assert main(["contracts", "check", str(app)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "contract orders.created v3 is not backward compatible with v2" in captured.out
    assert "property 'note' removed" in captured.out
    assert captured.out.splitlines()[-1].startswith("contracts check failed: the app refused")


def test_contracts_snapshot_then_check_against_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, CONTRACTS_APP)
    snapshot = tmp_path / "contracts.json"
    assert main(["contracts", "snapshot", str(app), "-o", str(snapshot)]) == 0
    stored = json.loads(snapshot.read_text())
    assert list(stored) == ["orders.created"] and stored["orders.created"]["version"] == 2
    assert main(["contracts", "check", str(app), "--against", str(snapshot)]) == 0
    assert f"against {snapshot}" in capsys.readouterr().out

    # the next build narrows the contract (in one step, so it imports) and drops none
    changed = _write_app(
        tmp_path,
        CONTRACTS_APP.replace(
            '"tags": {"type": "array"}}}, version=2)',
            '"tags": {"type": "array", "maxItems": 3}}}, version=2)',
        ),
    )
    assert main(["contracts", "check", str(changed), "--against", str(snapshot)]) == 1
    out = capsys.readouterr().out
    assert "orders.created v2 -> v2: tags: maxItems 3 added (narrowed)" in out

    # a contract the snapshot has and the app lost is a problem too
    empty = _write_app(tmp_path, "from mesh import Mesh\nmesh = Mesh()\n")
    assert main(["contracts", "check", str(empty), "--against", str(snapshot)]) == 1
    assert "orders.created: contract removed" in capsys.readouterr().out


def test_contracts_snapshot_to_stdout_is_stable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, CONTRACTS_APP)
    assert main(["contracts", "snapshot", str(app)]) == 0
    first = capsys.readouterr().out
    assert main(["contracts", "snapshot", str(app)]) == 0
    assert capsys.readouterr().out == first
    assert json.loads(first)["orders.created"]["schema"]["required"] == ["id"]


def test_contracts_check_bad_snapshot_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _write_app(tmp_path, CONTRACTS_APP)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["contracts", "check", str(app), "--against", str(bad)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    bad.write_text('{"orders.created": 1}')
    assert main(["contracts", "check", str(app), "--against", str(bad)]) == 2
    assert "not a contracts snapshot" in capsys.readouterr().err
    assert main(["contracts", "check", str(app), "--against", str(tmp_path / "no.json")]) == 2


def test_contracts_without_action_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["contracts"]) == 2
    assert "snapshot" in capsys.readouterr().err


def test_contract_report_merges_history_and_snapshot(tmp_path: Path) -> None:
    app = load_app(str(_write_app(tmp_path, CONTRACTS_APP)))
    snapshot = {
        "orders.created": {
            "version": 1,
            "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "gone": {}}},
        }
    }
    assert contract_report(app, snapshot) == {
        "orders.created v1 -> v2": [
            "(root): property 'gone' removed",
            "(root): new required field 'id'",
        ]
    }
