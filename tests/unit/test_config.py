"""MeshConfig: sources, precedence, errors, and secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh import ConfigError, Mesh, MeshConfig


def test_defaults() -> None:
    config = MeshConfig.load(env={})
    assert config.transport_url == "memory://"
    assert config.retry.max_attempts == 3 and config.hop_limit == 10
    assert config.idempotency.enabled and config.idempotency.store == "memory://"


def test_precedence_yaml_env_kwargs(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("transport: memory://file\nhop_limit: 4\nretry:\n  max_attempts: 7\n")
    config = MeshConfig.load(
        path, env={"MESH_HOP_LIMIT": "5", "MESH_RETRY__INITIAL_BACKOFF": "0.5"}
    )
    assert config.transport_url == "memory://file"
    assert config.hop_limit == 5 and config.retry.max_attempts == 7
    assert config.retry.initial_backoff == 0.5
    assert MeshConfig.load(path, env={"MESH_HOP_LIMIT": "5"}, hop_limit=6).hop_limit == 6


def test_test_variables_are_not_config() -> None:
    env = {"MESH_TEST_SHORT": "1", "MESH_NATS_URL": "nats://x", "MESH_KAFKA_URL": "k://"}
    assert MeshConfig.load(env=env).transport_url == "memory://"


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"transport": "localhost:4222"}, "transport: "),
        ({"hop_limit": 0}, "hop_limit"),
        ({"retry": {"max_attempts": "many"}}, "retry.max_attempts"),
        ({"retrys": {}}, "retrys: unknown field; known fields: "),
        (
            {"retry": {"attempts": 3}},
            "retry.attempts: unknown field; known fields: initial_backoff",
        ),
    ],
)
def test_bad_config_names_the_field(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        MeshConfig.build(data)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        MeshConfig.load(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("transport: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        MeshConfig.load(bad, env={})
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        MeshConfig.load(bad, env={})


def test_password_never_in_repr_or_errors() -> None:
    config = MeshConfig.build({"transport": "amqp://user:s3cret@host:5672/"})
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)
    assert config.redacted_transport == "amqp://user:***@host:5672/"
    with pytest.raises(ConfigError) as info:
        Mesh("amqpp://user:s3cret@host:5672/")
    assert "s3cret" not in str(info.value)


def test_unknown_scheme_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'memory://'") as info:
        Mesh("memroy://")
    assert "memory://" in str(info.value)


def test_from_config_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("transport: memory://\nsource: /agents/test\n")
    assert Mesh.from_config(path).source == "/agents/test"


def test_mesh_config_variable_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("hop_limit: 3\n")
    config = MeshConfig.load(env={"MESH_CONFIG": str(path), "MESH_SOURCE": "/x"})
    assert config.hop_limit == 3 and config.source == "/x"


def test_token_user_info_is_masked() -> None:
    from mesh import redact_url

    assert redact_url("nats://s3cr3ttoken@host:4222") == "nats://***@host:4222"
    assert redact_url("nats://host:4222") == "nats://host:4222"


def test_an_argument_that_outranks_a_variable_is_reported(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 item 21: MESH_TRANSPORT was silently ignored when the app passed a URL.
    The documented precedence stays (arguments win); the override is logged by name,
    never with the value (a URL may hold a password)."""
    from mesh import config as config_module

    monkeypatch.setattr(config_module, "_WARNED", set())
    monkeypatch.setenv("MESH_TRANSPORT", "amqp://u:Canary-pw@h/")
    monkeypatch.setenv("MESH_RETRY__MAX_ATTEMPTS", "7")
    with caplog.at_level("WARNING", logger="mesh.config"):
        cfg = MeshConfig.load(transport="memory://", retry={"max_attempts": 2})
    assert cfg.transport_url == "memory://" and cfg.retry.max_attempts == 2
    text = caplog.text
    assert "MESH_TRANSPORT is set, but the app passes transport explicitly" in text
    assert "MESH_RETRY__MAX_ATTEMPTS" in text and "Canary-pw" not in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mesh.config"):
        MeshConfig.load()  # nothing passed: the variable decides, nothing to report
    assert caplog.text == ""
