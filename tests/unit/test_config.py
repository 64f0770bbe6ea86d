"""MeshConfig: sources, precedence, errors, and secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh import ConfigError, Mesh, MeshConfig
from mesh.testing.util import chain_text

CANARY = "Canary-S3cret-41c2"


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


def test_precedence_arguments_environment_file_defaults(tmp_path: Path) -> None:
    """Each source wins over the ones below it, field by field and inside sections."""
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "hop_limit: 4\nshutdown_timeout: 3\ndefault_max_in_flight: 2\n"
        "retry: {max_attempts: 7, initial_backoff: 0.7, max_backoff: 7}\n"
    )
    env = {
        "MESH_HOP_LIMIT": "5",
        "MESH_SHUTDOWN_TIMEOUT": "5",
        "MESH_RETRY__INITIAL_BACKOFF": "0.5",
        "MESH_RETRY__MAX_BACKOFF": "5",
    }
    config = MeshConfig.load(path, env=env, hop_limit=6, retry={"max_backoff": 6})
    assert config.hop_limit == 6  # argument > environment > file
    assert config.shutdown_timeout == 5  # environment > file
    assert config.default_max_in_flight == 2  # file > default
    assert config.dead_letter_channel == "mesh.deadletter"  # default
    assert config.retry.max_backoff == 6  # argument, inside a section
    assert config.retry.initial_backoff == 0.5  # environment, inside a section
    assert config.retry.max_attempts == 7  # file, inside a section
    assert config.retry.multiplier == 2.0  # default, inside a section


def test_environment_nesting_and_json_values() -> None:
    env = {
        "MESH_RETRY__MAX_ATTEMPTS": "5",
        "MESH_IDEMPOTENCY__STORE": "sqlite:///tmp/idem.db",
        "MESH_IDEMPOTENCY__ENABLED": "false",
        "MESH_CAPABILITIES__HEARTBEAT": "2",
        "MESH_TRANSPORT_OPTIONS": '{"stream": "APP", "max_age": 60}',
        "MESH_ROUTES": '[{"name": "big", "filter": {"exact": {"type": "a"}}, "to": "b"}]',
        "mesh_source": "/lower/case",  # names are matched case-insensitively
    }
    config = MeshConfig.load(env=env)
    assert config.retry.max_attempts == 5 and config.capabilities.heartbeat == 2.0
    assert config.idempotency.store == "sqlite:///tmp/idem.db"
    assert config.idempotency.enabled is False
    assert config.transport_options == {"stream": "APP", "max_age": 60}
    assert config.routes[0].name == "big" and config.routes[0].to == "b"
    assert config.source == "/lower/case"


def test_a_bad_json_value_names_the_field_and_the_format() -> None:
    with pytest.raises(ConfigError, match=r"transport_options.*must be JSON") as info:
        MeshConfig.load(env={"MESH_TRANSPORT_OPTIONS": "{stream: " + CANARY})
    assert CANARY not in chain_text(info.value)


def test_variables_the_mesh_does_not_define_are_ignored() -> None:
    """Kubernetes injects these for a Service named ``mesh``; test suites keep their own
    ``MESH_*`` variables. None of them is configuration, and no list in the core names
    them."""
    env = {
        "MESH_PORT": "tcp://10.0.0.1:80",
        "MESH_PORT_8080_TCP": "tcp://10.0.0.1:8080",
        "MESH_PORT_8080_TCP_PROTO": "tcp",
        "MESH_PORT_8080_TCP_PORT": "8080",
        "MESH_PORT_8080_TCP_ADDR": "10.0.0.1",
        "MESH_SERVICE_HOST": "10.0.0.1",
        "MESH_SERVICE_PORT": "80",
        "MESH_TEST_SHORT": "1",
        "MESH_NATS_URL": "nats://x",
        "MESH_KAFKA_URL": "k://",
        "MESH_SOMETHING_NEW_A_SUITE_INVENTS": "x",
    }
    assert MeshConfig.load(env=env) == MeshConfig.load(env={})


def test_a_mesh_builds_under_kubernetes_service_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_PORT", "tcp://10.0.0.1:80")
    monkeypatch.setenv("MESH_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("MESH_SERVICE_PORT", "80")
    monkeypatch.setenv("MESH_PORT_80_TCP_ADDR", "10.0.0.1")
    monkeypatch.delenv("MESH_TRANSPORT", raising=False)
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    mesh = Mesh()
    assert mesh.config.transport_url == "memory://"
    assert Mesh.from_config(hop_limit=3).config.hop_limit == 3


def test_an_unknown_key_inside_a_section_variable_is_ignored_by_name(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesh import config as config_module

    monkeypatch.setattr(config_module, "_WARNED", set())
    env = {"MESH_RETRY__MAX_ATEMPTS": CANARY, "MESH_RETRY__JITTER": "0.1"}
    with caplog.at_level("WARNING", logger="mesh.config"):
        config = MeshConfig.load(env=env)
    assert config.retry.jitter == 0.1 and config.retry.max_attempts == 3
    assert "MESH_RETRY__MAX_ATEMPTS is set, but retry has no setting" in caplog.text
    assert "max_attempts" in caplog.text and CANARY not in caplog.text


def test_unknown_keys_in_a_file_or_an_argument_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("hop_limit: 3\nretry: {max_atempts: 5}\n")
    with pytest.raises(ConfigError) as info:
        MeshConfig.load(path, env={})
    text = str(info.value)
    assert text.startswith(f"invalid {path}: retry.max_atempts: unknown field; known fields: ")
    assert "initial_backoff, jitter, max_attempts" in text
    assert "did you mean 'max_attempts'?" in text
    with pytest.raises(ConfigError, match="hop_limt: unknown field; known fields: ") as info:
        MeshConfig.load(env={}, hop_limt=3)
    assert "did you mean 'hop_limit'?" in str(info.value) and "transport" in str(info.value)
    with pytest.raises(ConfigError, match=r"routes\.0\.grup: unknown field; known fields: filter"):
        MeshConfig.build({"routes": [{"name": "r", "filter": {}, "grup": "g"}]})


def test_build_validates_exactly_what_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment, no file: `Mesh(config=...)` and the CLI rebuild a loaded config."""
    monkeypatch.setenv("MESH_HOP_LIMIT", "0")
    monkeypatch.setenv("MESH_RETRY__BOGUS", "1")
    monkeypatch.setenv("MESH_CONFIG", "/nonexistent/mesh.yaml")
    assert MeshConfig.build({}).hop_limit == 10
    assert MeshConfig().hop_limit == 10


def test_no_source_puts_the_password_in_a_log_or_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pydantic-settings logs what each source read when PYDANTIC_SETTINGS_DEBUG is set;
    the mesh merges the sources itself, so nothing it reads reaches that log."""
    monkeypatch.setenv("PYDANTIC_SETTINGS_DEBUG", "1")
    monkeypatch.setenv("MESH_TRANSPORT", f"amqp://u:{CANARY}@h/")
    path = tmp_path / "mesh.yaml"
    path.write_text(f"transport_options: {{password: {CANARY}}}\n")
    with caplog.at_level("DEBUG"):
        config = MeshConfig.load(path)
        with pytest.raises(ConfigError) as info:
            MeshConfig.load(path, hop_limit=CANARY)
    assert CANARY not in caplog.text and CANARY not in repr(config)
    assert CANARY not in chain_text(info.value) and "hop_limit" in str(info.value)
    monkeypatch.setenv("MESH_TRANSPORT", f"guest:{CANARY}@host")
    with pytest.raises(ConfigError, match="transport: ") as info:
        MeshConfig.load(env=None)
    assert CANARY not in chain_text(info.value)


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


def test_overrides_of_a_given_config_merge_sections_field_by_field() -> None:
    config = MeshConfig.load(transport="memory://", retry={"max_attempts": 7, "max_deliveries": 4})
    mesh = Mesh(config=config, retry={"initial_backoff": 0.5})
    assert mesh.config.retry.max_attempts == 7 and mesh.config.retry.max_deliveries == 4
    assert mesh.config.retry.initial_backoff == 0.5
    assert config.retry.initial_backoff != 0.5  # the given config is not changed
    with pytest.raises(ConfigError, match=r"retry\.max_atempts"):
        config.merged({"retry": {"max_atempts": 1}})
