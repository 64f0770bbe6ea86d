"""MeshConfig: one pydantic model, filled from kwargs, a YAML file, or ``MESH_*`` variables.

Precedence, lowest first: defaults, the YAML file (``path``, else ``MESH_CONFIG``),
environment variables, explicit keyword arguments. Environment variables use ``__`` for nesting::

    MESH_TRANSPORT=nats://localhost:4222
    MESH_RETRY__MAX_ATTEMPTS=5
    MESH_IDEMPOTENCY__STORE=sqlite:///var/lib/app/idem.db

The transport URL is a `SecretStr` because it may hold a password: it never
appears in a repr, a log line or an error (`redacted_transport` is safe to show).
Every validation problem raises `ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mesh.errors import ConfigError
from mesh.transport import redact_url

ENV_PREFIX = "MESH_"
log = logging.getLogger("mesh.config")


class RetryConfig(BaseModel):
    """Exponential backoff with jitter between attempts of a failing handler."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(3, ge=1, description="attempts before dead-lettering")
    initial_backoff: float = Field(0.1, ge=0, description="seconds before the 2nd attempt")
    max_backoff: float = Field(30.0, ge=0, description="cap on one backoff, seconds")
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, le=1, description="+/- fraction of random spread")
    max_deliveries: int = Field(
        10,
        ge=0,
        description="deliveries of one message (by the "
        "broker's count) before it is dead-lettered unrun; 0: no limit",
    )


class IdempotencyConfig(BaseModel):
    """Duplicate suppression per consumer group (on by default for groups)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    store: str = Field("memory://", description="memory:// or sqlite:///path.db")


class CapabilitiesConfig(BaseModel):
    """The capability registry: heartbeats, expiry, and how long a newcomer waits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    heartbeat: float = Field(5.0, gt=0, description="seconds between announcements")
    ttl: float | None = Field(None, gt=0, description="expiry; default 3 heartbeats")
    resync_wait: float = Field(
        1.0, ge=0, description="a newcomer waits this long for announcements before NoProvider"
    )


class RouteConfig(BaseModel):
    """A route in config: a filter and either a handler group or a channel to republish to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    filter: dict[str, Any] | list[dict[str, Any]]
    group: str | None = None
    to: str | None = None


class MeshConfig(BaseModel):
    """Everything a Mesh needs. See the module docstring for the sources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: SecretStr = Field(SecretStr("memory://"), description="transport URL")
    transport_options: dict[str, Any] = Field(default_factory=dict)
    source: str = Field(
        default_factory=lambda: f"/mesh/{socket.gethostname()}",
        description="CloudEvents source of events this app emits",
    )
    hop_limit: int = Field(10, ge=1)
    dead_letter_channel: str = "mesh.deadletter"
    shutdown_timeout: float = Field(10.0, ge=0)
    default_max_in_flight: int = Field(16, ge=1)
    retry: RetryConfig = Field(default_factory=RetryConfig)  # type: ignore[arg-type]
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig)  # type: ignore[arg-type]
    capabilities: CapabilitiesConfig = Field(default_factory=CapabilitiesConfig)  # type: ignore[arg-type]
    routes: list[RouteConfig] = Field(default_factory=list)

    @field_validator("transport")
    @classmethod
    def _has_scheme(cls, value: SecretStr) -> SecretStr:
        if "://" not in value.get_secret_value():
            raise ValueError(
                "must be a URL like memory://, nats://host:4222, "
                "kafka://host:9092 or amqp://user:pass@host:5672/"
            )
        return value

    @property
    def transport_url(self) -> str:
        """The real URL (may contain a password: do not log it)."""
        return self.transport.get_secret_value()

    @property
    def redacted_transport(self) -> str:
        return redact_url(self.transport_url)

    # --- loading ---------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> MeshConfig:
        """Defaults < YAML file at ``path`` < ``MESH_*`` environment < ``overrides``.

        Without ``path``, ``MESH_CONFIG`` names the file (so ``mesh run --config`` reaches
        an app that builds its Mesh at import time).
        """
        environ = os.environ if env is None else env
        data: dict[str, Any] = {}
        if path is None:
            path = environ.get("MESH_CONFIG") or None
        if path is not None:
            data = _read_yaml(Path(path))
        from_env = env_overrides(environ)
        given = {k: v for k, v in overrides.items() if v is not None}
        _warn_overridden(from_env, given)
        _merge(data, from_env)
        _merge(data, given)
        return cls.build(data, origin=str(path) if path else "configuration")

    @classmethod
    def build(cls, data: Mapping[str, Any], origin: str = "configuration") -> MeshConfig:
        # The ConfigError is raised after the except block, not in it: pydantic's error
        # holds the input values (a URL with its password), and an exception raised
        # inside the block would keep it as __context__, where error reporters find it.
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_input=False, include_url=False):
                field = ".".join(str(p) for p in err["loc"]) or "(root)"
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    msg = f"unknown field; known fields: {', '.join(_known(cls, err['loc']))}"
                problems.append(f"{field}: {msg}")
        raise ConfigError(f"invalid {origin}: " + "; ".join(problems))

    def __repr__(self) -> str:
        return (
            f"MeshConfig(transport={self.redacted_transport!r}, source={self.source!r}, "
            f"hop_limit={self.hop_limit}, retry={self.retry!r})"
        )


def _known(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part)) if hasattr(current, "model_fields") else None
        if field is None or not isinstance(field.annotation, type):
            break
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its message quotes the file (a password, maybe): not kept
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
    else:
        problem = None
    if problem is not None:
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


#: ``MESH_*`` variables that are not configuration: where the config file is, and the
#: test suite's own settings (servers to test against, reports to write).
_NOT_CONFIG = frozenset(
    {
        "MESH_CONFIG",
        "MESH_KAFKA_URL",
        "MESH_NATS_URL",
        "MESH_RABBITMQ_URL",
        "MESH_POSTGRES_URL",
        "MESH_REDIS_URL",
        "MESH_KAFKA_PROXY_URL",
        "MESH_KAFKA_PROXY_TARGET",
        "MESH_CESQL_TCK",
        "MESH_RELIABILITY_REPORT",
    }
)


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``MESH_A__B=v`` -> ``{"a": {"b": v}}`` (values parsed as YAML scalars)."""
    result: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key.startswith("MESH_TEST"):
            continue
        if key in _NOT_CONFIG:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        if path[-1] == "transport" or not isinstance(value, (int, float, bool, dict, list)):
            value = raw
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return result


def _warn_overridden(
    from_env: Mapping[str, Any], given: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> None:
    """Say (once per variable, without its value: it may be a secret) when an explicit
    argument outranks a ``MESH_*`` variable, so a variable never seems silently ignored."""
    for key, value in given.items():
        if key not in from_env:
            continue
        here = (*prefix, key)
        if isinstance(value, Mapping) and isinstance(from_env[key], Mapping):
            _warn_overridden(from_env[key], value, here)
            continue
        variable = ENV_PREFIX + "__".join(part.upper() for part in here)
        if variable not in _WARNED:
            _WARNED.add(variable)
            log.warning(
                "%s is set, but the app passes %s explicitly, which wins (precedence: "
                "defaults < config file < MESH_* variables < arguments); to let the "
                "environment choose, build the Mesh without it (Mesh() or "
                "Mesh.from_config())",
                variable,
                ".".join(here),
            )


_WARNED: set[str] = set()


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
