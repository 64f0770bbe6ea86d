"""Bad input written with the raw clients: each message is dead-lettered once, with a
reason, and the consumer goes on with the next event.

What is sent (binary content mode where the broker has headers; structured JSON on
memory, which has no headers): a body that is not JSON under ``application/json``,
a nesting bomb (100,000 nested arrays), a message without ``id`` and ``source``, a
header that is not UTF-8 (brokers with headers), and a forged negative ``meshhops``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from mesh import Event, Mesh, Transport
from tests.faults.conftest import Report, Target

SCENARIO = (
    "bad input: invalid JSON, nesting bomb, missing attributes, non-UTF-8 header, forged meshhops"
)
BOMB = b"[" * 100_000 + b"]" * 100_000


def _binary(channel: str, **override: bytes | None) -> dict[str, bytes]:
    headers: dict[str, bytes | None] = {
        "specversion": b"1.0",
        "id": b"bad-1",
        "source": b"/evil",
        "type": channel.encode(),
    }
    headers.update(override)
    return {name: value for name, value in headers.items() if value is not None}


def _cases(channel: str, binary: bool) -> list[tuple[str, dict[str, bytes], bytes]]:
    """(name, ce attributes or {} for structured mode, body)."""
    if not binary:
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": "x",
            "source": "/evil",
            "type": channel,
        }
        return [
            ("invalid JSON", {}, b'{"specversion": "1.0", "id": "1", "source": '),
            (
                "nesting bomb",
                {},
                json.dumps({**event, "id": "bomb"}).encode()[:-1] + b', "data": ' + BOMB + b"}",
            ),
            (
                "missing attributes",
                {},
                json.dumps({"specversion": "1.0", "type": channel}).encode(),
            ),
            ("forged meshhops", {}, json.dumps({**event, "id": "hops", "meshhops": -40}).encode()),
        ]
    return [
        ("invalid JSON", _binary(channel, id=b"json"), b'{"a": 1'),
        ("nesting bomb", _binary(channel, id=b"bomb"), BOMB),
        ("missing attributes", _binary(channel, id=None, source=None), b"{}"),
        ("non-UTF-8 header", _binary(channel, id=b"bad-\xff\xfe"), b"{}"),
        ("forged meshhops", _binary(channel, id=b"hops", meshhops=b"-40"), b"{}"),
    ]


async def _inject(
    target: Target, transport: Transport, channel: str, attributes: dict[str, bytes], body: bytes
) -> None:
    """Write one message with the broker's own client."""
    if target.name == "memory":
        await transport.publish_raw(channel, body)  # type: ignore[attr-defined]
    elif target.name == "kafka":
        from confluent_kafka import Producer

        producer = Producer(transport.config.producer())  # type: ignore[attr-defined]
        headers = [(f"ce_{k}", v) for k, v in attributes.items()] + [
            ("content-type", b"application/json")
        ]
        producer.produce(channel, value=body, headers=headers)
        assert await asyncio.to_thread(producer.flush, 30) == 0
    elif target.name == "rabbitmq":
        import aio_pika

        await transport.send_raw(
            channel,
            aio_pika.Message(  # type: ignore[attr-defined]
                body,
                content_type="application/json",
                headers={f"ce-{k}": v for k, v in attributes.items()},
            ),
        )
    elif target.name == "nats":
        await _nats_raw(target, transport, channel, attributes, body)


async def _nats_raw(
    target: Target, transport: Transport, channel: str, attributes: dict[str, bytes], body: bytes
) -> None:
    """An HPUB written on a socket: nats-py only takes ``str`` header values, and a
    foreign client can send any bytes."""
    host, port = transport.config.servers[0].removeprefix("nats://").rsplit(":", 1)  # type: ignore[attr-defined]
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        await reader.readline()  # INFO
        header = (
            b"NATS/1.0\r\n"
            + b"".join(f"ce-{k}: ".encode() + v + b"\r\n" for k, v in attributes.items())
            + b"content-type: application/json\r\n\r\n"
        )
        subject = transport.config.subject(channel)  # type: ignore[attr-defined]
        writer.write(b'CONNECT {"headers":true,"verbose":false,"pedantic":false}\r\n')
        writer.write(
            f"HPUB {subject} {len(header)} {len(header) + len(body)}\r\n".encode()
            + header
            + body
            + b"\r\nPING\r\n"
        )
        await writer.drain()
        while not (await reader.readline()).startswith((b"PONG", b"-ERR")):
            pass
    finally:
        writer.close()


async def test_bad_input_is_dead_lettered_once_each(target: Target, reliability: Report) -> None:
    channel = target.channel("input")
    mesh = Mesh(target.url, **target.mesh_config())
    handled: list[str] = []
    dead: list[tuple[float, Event]] = []

    @mesh.on(channel, group=f"{target.prefix}-readers")
    async def read(event: Event) -> None:
        handled.append(event.id)

    @mesh.on_dead_letter(group=f"{target.prefix}-watch")
    async def watch(event: Event) -> None:
        dead.append((time.time(), event))

    cases = _cases(channel, binary=target.name != "memory")
    async with mesh:
        await asyncio.sleep(0.5 if target.name == "kafka" else 0.0)
        sent: list[float] = []
        for _, attributes, body in cases:
            sent.append(time.time())
            await _inject(target, mesh.transport, channel, attributes, body)
        good = Event(channel, "/faults", {"after": "the garbage"})
        await mesh.publish(good)
        deadline = time.monotonic() + 60
        while not (len(dead) >= len(cases) and good.id in handled):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{len(dead)} of {len(cases)} bad messages dead-lettered, good "
                    f"event handled: {good.id in handled}"
                )
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything more would be a duplicate
    assert len(dead) == len(cases), f"{len(dead)} dead-letter copies for {len(cases)} messages"
    assert all(
        copy.type == "mesh.undecodable" and copy.extensions["meshdlreason"] for _, copy in dead
    )
    assert len({copy.id for _, copy in dead}) == len(cases)
    reasons = " | ".join(str(copy.extensions["meshdlreason"])[:60] for _, copy in dead)
    assert "meshhops" in reasons
    reliability.record(
        SCENARIO,
        target.name,
        lost=0,
        rerun=0,
        to_dead_letter=max(t for t, _ in dead) - min(sent),
        note=f"{len(cases)} messages, each its own entry"
        + ("; no headers on memory" if target.name == "memory" else ""),
    )
