"""MeshConfig: one pydantic model, read by pydantic-settings from keyword arguments,
``MESH_*`` environment variables and a YAML file.

Precedence, lowest first: defaults, the YAML file (``path``, else ``MESH_CONFIG``),
environment variables, explicit keyword arguments. Environment variables use ``__`` for
nesting; a list or mapping value is JSON::

    MESH_TRANSPORT=nats://localhost:4222
    MESH_RETRY__MAX_ATTEMPTS=5
    MESH_IDEMPOTENCY__STORE=sqlite:///var/lib/app/idem.db

A ``MESH_*`` variable that names no setting is ignored: Kubernetes injects ``MESH_PORT``
and ``MESH_SERVICE_HOST`` for a Service named ``mesh``, test suites keep their own
``MESH_*_URL`` variables. One inside a known section (``MESH_RETRY__ATTEMPTS``) is
ignored too, with a warning naming it (a likely typo). An unknown key in the file or in
the arguments is a `ConfigError` naming it and the known ones.

The transport URL is a `SecretStr` because it may hold a password: it never
appears in a repr, a log line or an error (`redacted_transport` is safe to show).
Every validation problem raises `ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal, Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

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


class StatsConfig(BaseModel):
    """Stats reports for ``mesh top`` (see `mesh.stats`): off unless enabled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    interval: float = Field(5.0, gt=0, description="seconds between reports")


class RouteConfig(BaseModel):
    """A route in config: a filter and either a handler group or a channel to republish to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    filter: dict[str, Any] | list[dict[str, Any]]
    group: str | None = None
    to: str | None = None


class MeshConfig(BaseModel):
    """Everything a Mesh needs.

    `load` reads it (defaults < YAML file < ``MESH_*`` variables, ``__`` nesting <
    keyword arguments; variables that name no setting are ignored); `build` and the
    constructor validate exactly what they are given. An unknown key is a `ConfigError`
    naming it and listing the known ones.
    """

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
    #: serve Prometheus ``/metrics`` on this port while the mesh runs (needs the
    #: prometheus extra; 0: any free port; None: no server)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    #: the address the metrics server binds (all interfaces: Prometheus scrapes pods)
    metrics_host: str = "0.0.0.0"
    #: seconds between consumer-lag reads from the broker (the lag gauge)
    metrics_interval: float = Field(5.0, gt=0)
    #: how the ``mesh`` command logs: ``text`` (for people) or ``json`` (one object per
    #: line with the event, trace and handler of each record; see `mesh.logs`)
    log_format: Literal["text", "json"] = "text"
    retry: RetryConfig = Field(default_factory=RetryConfig)  # type: ignore[arg-type]
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig)  # type: ignore[arg-type]
    capabilities: CapabilitiesConfig = Field(default_factory=CapabilitiesConfig)  # type: ignore[arg-type]
    stats: StatsConfig = Field(default_factory=StatsConfig)  # type: ignore[arg-type]
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
        an app that builds its Mesh at import time). ``env`` stands in for ``os.environ``.
        ``None`` overrides count as not given.
        """
        environ = os.environ if env is None else env
        if path is None:
            path = environ.get("MESH_CONFIG") or None
        data = _YamlFile(Path(path))() if path is not None else {}
        from_env = _environment(env)
        given = {k: v for k, v in overrides.items() if v is not None}
        _warn_overridden(from_env, given)
        _merge(data, from_env)
        _merge(data, given)
        return cls.build(data, origin=str(path) if path else "configuration")

    def merged(self, overrides: Mapping[str, Any]) -> MeshConfig:
        """This config with ``overrides`` applied as `load` applies keyword arguments:
        sections merge field by field (``retry={"max_attempts": 5}`` keeps the other
        retry fields), anything else is replaced. A ConfigError as `build` raises."""
        data = self.model_dump()
        _merge(data, overrides)
        return MeshConfig.build(data, origin="arguments")

    @classmethod
    def build(cls, data: Mapping[str, Any], origin: str = "configuration") -> MeshConfig:
        """Validate exactly ``data`` (no environment, no file): a ConfigError otherwise."""
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
                    known = _known(cls, err["loc"])
                    msg = f"unknown field; known fields: {', '.join(known)}"
                    msg += _did_you_mean(str(err["loc"][-1]), known)
                problems.append(f"{field}: {msg}")
        raise ConfigError(f"invalid {origin}: " + "; ".join(problems))

    def __repr__(self) -> str:
        return (
            f"MeshConfig(transport={self.redacted_transport!r}, source={self.source!r}, "
            f"hop_limit={self.hop_limit}, retry={self.retry!r})"
        )

    #: pydantic's own ``__str__`` lists every field, transport options (a SASL password,
    #: a token) included: ``str(config)`` and f-strings must say no more than the repr
    __str__ = __repr__


class _Sources(BaseSettings, MeshConfig):
    """MeshConfig's fields as pydantic-settings reads them: ``MESH_`` prefix, ``__`` nesting.

    Only the sources below use it; it is never instantiated. MeshConfig itself stays a
    plain model, so `MeshConfig.build` (and ``MeshConfig(...)``) validate exactly what
    they are given, and `MeshConfig.load` merges the sources itself, keeping the values
    (a URL with its password) out of pydantic-settings' debug log."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__")


def _environment(env: Mapping[str, str] | None) -> dict[str, Any]:
    """The settings the ``MESH_*`` variables of ``env`` (default ``os.environ``) make,
    nested. pydantic-settings reads only variables that name a setting."""
    source = EnvSettingsSource(_Sources)
    if env is not None:
        source.env_vars = {key.lower(): value for key, value in env.items()}
    try:
        values = source()
    except SettingsError as exc:  # names the field, never the value
        problem: str = str(exc)
    else:
        _drop_undefined(values, MeshConfig)
        return values
    raise ConfigError(
        f"cannot read the MESH_* variables: {problem}; a list or mapping value must be "
        """JSON, e.g. MESH_TRANSPORT_OPTIONS='{"stream": "APP"}'"""
    )


def _drop_undefined(
    values: dict[str, Any], model: type[BaseModel], here: tuple[str, ...] = ()
) -> None:
    """Drop what a variable sets inside a section that has no such setting
    (``MESH_RETRY__ATTEMPTS``): ignored like every variable the mesh does not define, but
    said once by name, being a likely typo."""
    for key in list(values):
        field = model.model_fields.get(key)
        if field is None:
            del values[key]
            _warn_once(
                (*here, key),
                "%s is set, but %s has no setting %r (known: %s); the variable is ignored",
                ".".join(here),
                key,
                ", ".join(sorted(model.model_fields)),
            )
        elif isinstance(values[key], dict) and (nested := _model_of(field.annotation)):
            _drop_undefined(values[key], nested, (*here, key))


class _YamlFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, stricter: a missing or unreadable file, bad YAML or
    no mapping at the top is a ConfigError, and no message quotes the file (a YAML error
    quotes the lines around the problem, maybe a password)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"cannot read config file {path}: no such file")
        super().__init__(_Sources, yaml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            text = file_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
        else:
            problem = None
        if problem is not None:
            raise ConfigError(f"config file {file_path} is not valid YAML{where}: {problem}")
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file_path} must hold a mapping at the top level")
        return loaded


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: itself, or the item model of a list (``routes``)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _known(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The fields known where ``loc`` points (``("retry", "attemps")``: RetryConfig's)."""
    current = model
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list: same model
            continue
        field = current.model_fields.get(str(part))
        nested = _model_of(field.annotation) if field is not None else None
        if nested is None:
            break
        current = nested
    return sorted(current.model_fields)


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        _warn_once(
            here,
            "%s is set, but the app passes %s explicitly, which wins (precedence: "
            "defaults < config file < MESH_* variables < arguments); to let the "
            "environment choose, build the Mesh without it (Mesh() or Mesh.from_config())",
            ".".join(here),
        )


def _warn_once(path: tuple[str, ...], message: str, *args: object) -> None:
    """Log ``message`` about the variable that sets ``path``, once per process."""
    variable = ENV_PREFIX + "__".join(part.upper() for part in path)
    if variable not in _WARNED:
        _WARNED.add(variable)
        log.warning(message, variable, *args)


_WARNED: set[str] = set()


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
