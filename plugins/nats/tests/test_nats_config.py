"""URL/options parsing, secrets hygiene and broker naming of the NATS plugin (no broker)."""

from __future__ import annotations

import pytest
from mesh_nats import NatsTransport, NatsTransportWithoutDedup, create, parse
from mesh_nats.naming import check_channel, consumer_name, msg_id

from mesh import ConfigError, Event, plugins


def test_url_forms() -> None:
    cfg = parse("nats://a.example:4223,b.example,[::1]:4224?stream=S1&ack_wait=12&tls=true")
    assert cfg.servers == ["nats://a.example:4223", "nats://b.example:4222", "nats://[::1]:4224"]
    assert (cfg.stream, cfg.ack_wait, cfg.tls) == ("S1", 12.0, True)
    assert parse("tls://h").tls
    assert parse("nats://x:1,nats://y:2").servers == ["nats://x:1", "nats://y:2"]
    assert parse("nats://h?ack_wait=5", {"ack_wait": 7}).ack_wait == 7  # options win


def test_credentials_are_secret_everywhere() -> None:
    cfg = parse("nats://alice:s3cr%40t@h:4222")
    assert cfg.user == "alice" and cfg.password is not None
    assert cfg.password.get_secret_value() == "s3cr@t"
    token = parse("nats://t0ken@h").token
    assert token is not None and token.get_secret_value() == "t0ken"
    for text in (
        repr(cfg),
        str(cfg),
        repr(parse("nats://t0ken@h")),
        cfg.servers[0],
        repr(NatsTransport("nats://alice:s3cr%40t@h?token=t0ken", {})),
    ):
        assert "s3cr" not in text and "t0ken" not in text
    with pytest.raises(ConfigError) as exc:
        parse("nats://t0ken@h?password=hunter2&ack_wait=soon")
    assert "t0ken" not in str(exc.value) and "hunter2" not in str(exc.value)
    assert "ack_wait" in str(exc.value)


@pytest.mark.parametrize(
    "url,options,needle",
    [
        ("http://h", {}, "nats://host"),
        ("nats://h/path", {}, "path"),
        ("nats://h,,k", {}, "empty host"),
        ("nats://h?stream=a.b", {}, "stream"),
        ("nats://h", {"subject_prefix": "a.>"}, "subject_prefix"),
        ("nats://h", {"colour": "blue"}, "colour"),
        ("nats://h", {"storage": "tape"}, "storage"),
        ("nats://h", {"ack_wait": 0}, "ack_wait"),
    ],
)
def test_bad_options_name_the_option(url: str, options: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse(url, options)


def test_registered_through_the_entry_point() -> None:
    registry = plugins.transport_registry()
    assert "nats" in registry.schemes
    assert type(registry.create("nats://127.0.0.1:4222")) is NatsTransport
    assert type(create("nats://h", {"dedup": "false"})) is NatsTransportWithoutDedup
    assert not NatsTransportWithoutDedup.features.native_dedup
    assert NatsTransport.features.native_dedup and NatsTransport.features.persistence


def test_consumer_names_are_legal_stable_and_distinct() -> None:
    names = {consumer_name(g, "orders.>") for g in ("a.b", "a_b", "a:b", "a-b")}
    assert len(names) == 4
    assert consumer_name("a.b", "x") == consumer_name("a.b", "x") != consumer_name("a.b", "y")
    for name in names | {consumer_name("ä ö/\\*>" * 20, "x")}:
        assert len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


def test_msg_id_is_per_channel_source_and_id() -> None:
    e = Event("t", "/a", None, id="1")
    assert msg_id("c", e) == msg_id("c", e)
    assert len({msg_id("c", e), msg_id("d", e), msg_id("c", e.replace(source="/b"))}) == 3


def test_channels_must_be_subject_tokens() -> None:
    assert check_channel("orders.created") == "orders.created"
    for bad in ("", "a..b", "a b", "a.*", "a.>", "."):
        with pytest.raises(ConfigError):
            check_channel(bad)


def test_default_ack_wait_bounds_recovery_from_a_dead_worker() -> None:
    """A dead worker's messages come back after ``ack_wait`` (the pull request of another
    member is already waiting): with the defaults that must be within 10 s. Long handlers
    are covered by the in-progress signals, sent at a third of ``ack_wait``."""
    cfg = parse("nats://h")
    assert cfg.ack_wait <= 8.0
    assert cfg.ack_wait >= 3.0, "too short for in-progress signals to have slack"
