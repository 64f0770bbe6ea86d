"""The examples run as users run them: a subprocess, stdout piped (so plain output).

They are documentation that executes; a change that breaks one should fail here,
not in front of a reader.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def test_hello_sends_one_event_each_way_and_exits() -> None:
    proc = run_example("hello.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sent = re.search(r"^alice sent (\S+)$", proc.stdout, re.MULTILINE)
    assert sent is not None, proc.stdout
    assert "bob got 'hello bob' from /alice" in proc.stdout
    # the reply is caused by the greeting: ctx.emit carried the conversation over
    assert f"alice got 'hello alice' from /bob (reply to {sent.group(1)})" in proc.stdout
    assert proc.stderr == ""


def test_hello_stays_the_twenty_lines_the_docs_promise() -> None:
    code = [
        line
        for line in (EXAMPLES / "hello.py").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(code) <= 22, f"examples/hello.py has {len(code)} non-blank lines"


def test_research_swarm_recovers_the_crashed_task_on_another_worker() -> None:
    proc = run_example("research_swarm.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\x1b[" not in out, "piped output must be plain lines, not terminal codes"

    recovered = re.search(
        r"task (\d+) crashed on (worker-\d+), redelivered, completed by "
        r"(worker-\d+)",
        out,
    )
    assert recovered is not None, out
    task, crashed_on, completed_by = recovered.groups()
    assert crashed_on != completed_by
    assert f"task {task} redelivered to {completed_by}" in out
    assert re.search(rf"^  {task}\. .*\[{completed_by}\]$", out, re.MULTILINE), out

    sections = re.findall(r"^  (\d)\. .*\[(worker-\d+)\]$", out, re.MULTILINE)
    assert [index for index, _ in sections] == ["1", "2", "3", "4", "5", "6"]
    after_crash = out[out.index(f"task {task} crashed on {crashed_on}:") :]
    assert f"started on {crashed_on}" not in after_crash, "a crashed worker takes no more"


def test_research_swarm_prints_the_sessions_trace_with_otel() -> None:
    proc = run_example("research_swarm.py", "--otel")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout[proc.stdout.index("TRACE (") :]
    assert out.startswith("TRACE (1 trace(s), "), out[:200]  # the whole session: one trace
    lines = out.splitlines()
    roots = [line for line in lines[1:] if line.startswith("  ") and line[2] != " "]
    assert len(roots) == 1 and roots[0].startswith("  send research.requested [producer]")
    assert "process research.report.ready [watch]" in out
    # the crashed attempt is in the trace, cancelled, and its task completed elsewhere
    assert re.search(r"process research\.task\.created \[research\] .* ERROR cancelled", out)
    assert len(re.findall(r"process research\.task\.completed \[collect\]", out)) == 6


def test_research_swarm_otel_without_the_extra_names_it(tmp_path: Path) -> None:
    """--otel on an install without OpenTelemetry: the error names the extra to install."""
    (tmp_path / "opentelemetry").mkdir()  # a package that shadows it and fails to import
    (tmp_path / "opentelemetry" / "__init__.py").write_text("raise ImportError('absent')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "research_swarm.py"), "--otel"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pip install 'event-mesh[otel]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_research_swarm_otel_to_an_otlp_endpoint_needs_the_exporter() -> None:
    env_endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    old = {k: os.environ.get(k) for k in env_endpoint}
    os.environ.update(env_endpoint)
    try:
        proc = run_example("research_swarm.py", "--otel")
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        assert proc.returncode == 1
        assert "pip install opentelemetry-exporter-otlp-proto-http" in proc.stderr
    else:  # installed: the run exports (to a closed port: the exporter logs, the run ends)
        assert "trace exported over OTLP to http://127.0.0.1:9" in proc.stdout


def test_research_swarm_with_one_worker_does_not_crash() -> None:
    proc = run_example("research_swarm.py", "--workers", "1", "--question", "Why queues?")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REPORT: Why queues?" in proc.stdout
    assert "no crash this run" in proc.stdout


def test_research_swarm_reports_a_bad_transport() -> None:
    proc = run_example("research_swarm.py", "--transport", "memry://user:secret@host")
    assert proc.returncode == 1
    assert "Did you mean 'memory://'?" in proc.stderr
    assert "secret" not in proc.stdout + proc.stderr


def test_supply_chain_fans_out_requests_a_capability_and_enforces_the_contract() -> None:
    proc = run_example("supply_chain.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\x1b[" not in out, "piped output must be plain lines, not terminal codes"

    run = re.search(r"dispatch: publishing shipment.delayed (\S+) \(correlationid (\S+)\)", out)
    assert run is not None, out
    event_id, correlation = run.groups()
    assert event_id == correlation
    # one event, every consumer group
    for group in ("route-optimizer", "customer-service", "inventory", "supervisor"):
        assert (
            f"fan-out: {group} [group {group}] got shipment.delayed SHP-1042 (event {event_id})"
        ) in out
    # the capability found through the registry, and its request/reply correlated
    assert re.search(
        r"^registry: optimize.route v1.2.0 served by "
        r"/supply-chain/route-optimizer .*group route-optimizers",
        out,
        re.M,
    )
    served = re.search(
        rf"route-optimizer: serving optimize.route request (\S+) "
        rf"\(correlationid {correlation}, reply to instance (\w+)\)",
        out,
    )
    assert served is not None, out
    request_id = served.group(1)
    assert re.search(
        rf"supervisor: reply mesh.reply.optimize.route \S+ to request "
        rf"{request_id} \(correlationid {correlation}\): via Lyon",
        out,
    ), out
    # the outcomes, and the contract refusing the bad event before the broker saw it
    assert "supervisor: emitted shipment.decision" in out
    assert re.search(
        r"customer-service: emitted customer.notified \S+ "
        rf"\(causationid {event_id}\)",
        out,
    )
    assert "inventory: emitted inventory.rebalanced" in out
    assert re.search(
        r"dispatch: refused an invalid shipment.delayed at the publisher, nothing "
        r"was sent: ContractViolation: .*delay_hours: -3 is less than the "
        r"minimum of 0",
        out,
    )
    assert out.count("got shipment.delayed") == 4, "the refused event reached nobody"
    summary = out[out.index("SUMMARY for SHP-1042") :]
    assert f"request {request_id} -> reply" in summary
    assert "decision: reroute via Lyon (shipment.decision)" in summary
    assert "inventory: 40 x SKU-7 from Turin to Milan" in summary
    assert "contract: 1 invalid shipment.delayed refused at the publisher" in summary


def test_supply_chain_times_out_with_a_message() -> None:
    proc = run_example("supply_chain.py", "--timeout", "0.001")
    assert proc.returncode == 1
    assert "error: the supply chain did not finish within 0.001s (missing: " in proc.stderr


def test_supply_chain_refuses_an_invalid_shipment_it_was_asked_to_send() -> None:
    proc = run_example("supply_chain.py", "--shipment", "not-an-id")
    assert proc.returncode == 1
    assert "error: data of shipment.delayed" in proc.stderr
    assert "shipment_id: 'not-an-id' does not match" in proc.stderr


def test_research_swarm_tells_the_crash_story_in_any_order_of_notices() -> None:
    """Start, crash and completion notices travel on different channels, and Kafka keeps
    no order across topics: a late 'started' or 'crashed' must not undo a completion."""
    import importlib

    sys.path.insert(0, str(EXAMPLES))
    try:
        swarm = importlib.import_module("research_swarm")
    finally:
        sys.path.remove(str(EXAMPLES))
    view = swarm.View(plain=True)
    view.created(3, "competing approaches")
    view.completed(3, "worker-2", 1)  # the redelivered attempt finished first
    view.started(3, "worker-1", 0)  # the crashed attempt's start notice, late
    view.crashed(3, "worker-1")  # and its crash notice, later still
    assert view.progress.recoveries() == [
        "task 3 crashed on worker-1, redelivered, completed by worker-2"
    ]
