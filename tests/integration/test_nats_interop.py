"""Interop on a real NATS server: what the mesh writes, a plain nats-py client and the
cloudevents SDK read; what they write (binary and structured mode), a mesh handler
gets. The mesh is built from a URL, so the plugin is found through its entry point.

The SDK has no NATS binding; the plain side decodes with ``mesh_nats.binding``
(NATS binding spec) into the SDK's own ``CloudEvent`` with the SDK's
``JSONFormat``, and cross-checks with the SDK's HTTP binding, whose ``ce-``
headers and percent-encoding are the same. Credentials are checked against a
throw-away nats-server with user/password auth (skipped without the binary).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from mesh_nats import binding, create, parse

from mesh import ConfigError, ConnectError, Event, Mesh, codec
from mesh.testing import brokers

QUERY = "stream=MESH_TEST&subject_prefix=meshtest&max_age=3600"


@pytest.fixture
def url() -> str:
    found = brokers.ensure_or_skip("nats")
    return f"{found}{'&' if '?' in found else '?'}{QUERY}"


@pytest.fixture
async def raw(url: str) -> AsyncIterator[Any]:
    """A plain nats-py connection with the same servers and credentials."""
    cfg = parse(url)
    nc = await nats.connect(
        cfg.servers,
        user=cfg.user,
        password=cfg.password.get_secret_value() if cfg.password else None,
        token=cfg.token.get_secret_value() if cfg.token else None,
    )
    yield nc
    await nc.close()


@pytest.fixture
async def mesh(url: str) -> AsyncIterator[Mesh]:
    prefix = f"interop{uuid.uuid4().hex[:8]}"
    app = Mesh(url, dead_letter_channel=f"{prefix}.deadletter", source="/interop")
    app.prefix = prefix  # type: ignore[attr-defined]
    yield app
    await app.stop()
    await app.transport.connect()
    await app.transport.delete_channels(f"{prefix}.>")
    await app.transport.close()


def expected_attributes(event: Event) -> dict[str, Any]:
    """Attributes as a binary-mode reader sees them: extensions are strings on the wire."""
    return {
        k: v if isinstance(v, str | datetime) else codec.canonical(v)
        for k, v in event.get_attributes().items()
    }


async def test_mesh_event_read_by_plain_client_and_sdk(mesh: Mesh, raw: Any) -> None:
    channel = f"{mesh.prefix}.order.created"  # type: ignore[attr-defined]
    sub = await raw.subscribe(f"meshtest.{channel}")
    sent = Event(
        channel,
        "https://example.com/shop?x=1",
        {"text": "héllo ✓", "n": [1, 2.5]},
        subject="Euro € 😀 100%",
        dataschema="https://example.com/s.json",
        time=datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC),
        extensions={
            "correlationid": "c-1",
            "partitionkey": "k",
            "meshhops": 2,
            "custom": "with spaces",
        },
    )
    await mesh.start()
    await mesh.publish(sent)
    msg = await sub.next_msg(timeout=10)
    headers = dict(msg.headers or {})
    assert headers["Nats-Msg-Id"]
    assert headers["ce-specversion"] == "1.0" and headers["ce-id"] == sent.id

    sdk = binding.from_nats(binding.NATSMessage(headers, msg.data), JSONFormat(), CloudEvent)
    assert isinstance(sdk, CloudEvent)
    assert sdk.get_attributes() == expected_attributes(sent)
    assert sdk.get_data() == sent.data

    via_http = http.from_binary(http.HTTPMessage(headers, msg.data), JSONFormat(), CloudEvent)
    assert via_http.get_attributes() == expected_attributes(sent)
    assert via_http.get_data() == sent.data


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_sdk_message_handled_by_mesh(mesh: Mesh, raw: Any, mode: str) -> None:
    channel = f"{mesh.prefix}.sdk.{mode}"  # type: ignore[attr-defined]
    got: list[Event] = []
    arrived = asyncio.Event()

    @mesh.on(channel, group=f"{mesh.prefix}-readers")  # type: ignore[attr-defined]
    async def read(event: Event) -> None:
        got.append(event)
        arrived.set()

    await mesh.start()
    sdk = CloudEvent(
        attributes={
            "type": channel,
            "source": "urn:sdk:producer",
            "id": f"sdk-{mode}",
            "subject": "a b/ü",
            "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "datacontenttype": "application/json",
            "correlationid": "corr-9",
        },
        data={"answer": 42, "text": "ünïcode"},
    )
    to_message = binding.to_binary if mode == "binary" else binding.to_structured
    message = to_message(sdk, JSONFormat())
    js = raw.jetstream()
    await js.publish(f"meshtest.{channel}", message.data, headers=message.headers)
    await asyncio.wait_for(arrived.wait(), 20)
    event = got[0]
    assert (event.id, event.type, event.source) == (f"sdk-{mode}", channel, "urn:sdk:producer")
    assert event.subject == "a b/ü" and event.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event.datacontenttype == "application/json"
    assert event.extensions["correlationid"] == "corr-9"
    assert event.data == {"answer": 42, "text": "ünïcode"}


@pytest.fixture
def auth_server(tmp_path: Any) -> Iterator[int]:
    """A throw-away nats-server with JetStream and user/password auth on a free port."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(binary):
        pytest.skip("nats-server binary not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(tmp_path),
            "--user",
            "mesh",
            "--pass",
            "s3cret!",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not brokers.reachable(f"nats://127.0.0.1:{port}", 0.2):
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_credentials_from_url_and_options(
    auth_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    good = create(f"nats://mesh:s3cret%21@127.0.0.1:{auth_server}", {"connect_timeout": 5})
    await good.connect()
    await good.publish("auth.ok", Event("auth.ok", "/t", {}))
    await good.close()
    by_option = create(
        f"nats://127.0.0.1:{auth_server}",
        {"user": "mesh", "password": "s3cret!", "connect_timeout": 5},
    )
    await by_option.connect()
    await by_option.close()
    bad = create(f"nats://mesh:wrong-pw@127.0.0.1:{auth_server}", {"connect_timeout": 2})
    with pytest.raises(ConnectError) as exc:
        await bad.connect()
    assert "Authorization" in str(exc.value)
    shown = str(exc.value) + repr(bad) + caplog.text
    assert "wrong-pw" not in shown and "s3cret" not in shown


async def test_unloadable_tls_files_are_a_config_error() -> None:
    transport = create("nats://127.0.0.1:1", {"tls": True, "tls_ca_file": "/nonexistent/ca.pem"})
    with pytest.raises(ConfigError, match="tls_ca_file"):
        await transport.connect()
