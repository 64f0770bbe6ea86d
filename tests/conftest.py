"""Guard for the rule in DEVELOPERS.md: the tests never stop, restart or reconfigure a
server they did not start.

The servers at the brokers' configured URLs (the machine's NATS and RabbitMQ, or yours
through ``MESH_NATS_URL`` / ``MESH_RABBITMQ_URL``, when on loopback) are fingerprinted
when first seen (`mesh.testing.brokers.identify`: the listening socket, the PID and its
start time). After every test the socket is checked again (one read of
``/proc/net/tcp``), so a test that restarted one fails in its teardown, named; at the
end of the session the PID and start time are compared too, and a change fails the
run. A replaced process and a listener reopened in place (``rabbitmqctl stop_app`` /
``start_app``, same PID) both change the fingerprint. Linux only; elsewhere inert.

A server that was not running when first looked at is fingerprinted once something
(`brokers.ensure`) has started it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mesh.testing import brokers

GUARDED = ("nats", "rabbitmq")
_first_seen: dict[str, brokers.ServerIdentity] = {}
_reported: set[str] = set()


def _changed(*, with_pid: bool) -> list[str]:
    """Describe each guarded server whose fingerprint changed since first seen."""
    problems = []
    for name in GUARDED:
        url = brokers.broker_url(name)
        before = _first_seen.get(name)
        if before is None:
            seen = brokers.identify(url)
            if seen is not None:
                _first_seen[name] = seen
            continue
        now = brokers.identify(url, with_pid=with_pid)
        same = (
            now is not None
            and now.socket == before.socket
            and (not with_pid or before.same_server(now))
        )
        if not same and name not in _reported:
            _reported.add(name)  # report each server once, in the test that changed it
            now = brokers.identify(url)  # with its PID, for the message
            problems.append(
                f"{name} at {brokers.redact(url)} was {before}, now {now or 'not listening'}"
            )
    return problems


def pytest_sessionstart(session: pytest.Session) -> None:
    _changed(with_pid=True)


@pytest.fixture(autouse=True)
def _servers_we_did_not_start_are_untouched() -> Iterator[None]:
    yield
    problems = _changed(with_pid=False)
    if problems:
        pytest.fail(
            "this test stopped or restarted a server the tests did not start "
            "(DEVELOPERS.md): " + "; ".join(problems),
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _reported.clear()
    problems = _changed(with_pid=True)
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            "a server the tests did not start was stopped or restarted during "
            "the run (DEVELOPERS.md): " + "; ".join(problems)
        )
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
