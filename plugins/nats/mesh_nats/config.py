"""`NatsConfig`: the NATS transport's settings, parsed from the URL and the options.

``nats://[user:password@|token@]host[:port][,host[:port]...][?option=value&...]``;
``options`` (the mapping given next to the URL in the mesh config) override query
parameters. Credentials are `SecretStr` and the parsed server list carries none,
so nothing secret reaches a repr, a log line or an error. Every bad value raises
`mesh.ConfigError` naming the option and the fix (never echoing the value).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mesh import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"[^\s.*>]+")


class NatsConfig(BaseModel):
    """Connection, stream and consumer settings (see docs/transports/nats.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: list[str] = Field(min_length=1, description="nats://host:port, no credentials")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds: str | None = Field(None, description="path of a .creds file (JWT + NKEY seed)")
    nkey: str | None = Field(None, description="path of an NKEY seed file")
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    name: str = "event-mesh"
    stream: str = "MESH"
    subject_prefix: str = "mesh"
    manage_stream: bool = True
    storage: Literal["file", "memory"] = "file"
    replicas: int = Field(1, ge=1, le=5)
    max_age: float = Field(7 * 86400.0, ge=0, description="seconds; 0 keeps forever")
    max_bytes: int = Field(-1, ge=-1)
    duplicate_window: float = Field(120.0, gt=0)
    dedup: bool = True
    ack_wait: float = Field(30.0, ge=1)
    max_ack_pending: int = Field(1000, ge=1)
    pull_expires: float = Field(5.0, ge=0.5)
    publish_timeout: float = Field(5.0, gt=0)
    request_timeout: float = Field(5.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    reconnect_wait: float = Field(1.0, gt=0)
    broadcast_inactive: float = Field(300.0, ge=5)

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or not all(_TOKEN.fullmatch(t) for t in value.split(".")):
            raise ValueError("use one or more '.'-separated tokens without spaces or wildcards, "
                             "e.g. 'mesh' or 'prod.mesh'")
        return value

    def subject(self, channel: str) -> str:
        """The NATS subject of a channel (or a neutral pattern: the syntax is the same)."""
        return f"{self.subject_prefix}.{channel}"

    def channel(self, subject: str) -> str:
        return subject[len(self.subject_prefix) + 1:]


_FIELDS = set(NatsConfig.model_fields) - {"servers"}


def safe_url(url: str) -> str:
    """``scheme://host,...`` of ``url`` with user info masked and the query dropped:
    NATS puts tokens before '@' without a ':' (which `mesh.redact_url` would show),
    and the query may hold ``password=``."""
    scheme, sep, rest = url.partition("://")
    netloc = re.split(r"[/?]", rest, maxsplit=1)[0]
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}"


def parse(url: str, options: Mapping[str, Any] | None = None) -> NatsConfig:
    """Build a `NatsConfig` from a ``nats://`` URL and an options mapping."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("nats", "tls"):
        raise ConfigError(f"NATS transport URL {safe_url(url)!r} must look like "
                          "nats://host:4222[,host2:4222][?stream=MESH]")
    values: dict[str, Any] = {"tls": True} if "tls://" in url.lower() else {}
    rest = re.sub(r"(?<=,)(nats|tls)://", "", rest, flags=re.IGNORECASE)  # nats://a,nats://b
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if path.strip("/"):
        raise ConfigError(f"NATS URL {safe_url(url)!r} has a path; NATS URLs have none, "
                          "put settings in the query: nats://host:4222?stream=MESH")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and userinfo:
        user, colon, password = userinfo.partition(":")
        if colon:
            values.update(user=unquote(user), password=unquote(password))
        else:
            values["token"] = unquote(user)
    servers = []
    for host in hosts.split(","):
        host = host.strip()
        if not host:
            raise ConfigError(f"NATS URL {safe_url(url)!r} has an empty host; "
                              "write nats://host:4222 or nats://a:4222,b:4222")
        if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/@\[\]]+)(:\d{1,5})?", host):
            raise ConfigError(f"NATS URL host {host!r} is not host or host:port")
        servers.append("nats://" + (host if re.search(r":\d+$", host) else host + ":4222"))
    values.update(parse_qsl(query, keep_blank_values=True))
    values.update(options or {})
    unknown = sorted(set(values) - _FIELDS - {"servers"})
    if unknown:
        raise ConfigError(f"unknown NATS transport option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_FIELDS))}")
    try:
        return NatsConfig(servers=servers, **values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in exc.errors(include_input=False, include_url=False))
        raise ConfigError(f"invalid NATS transport option(s) for {safe_url(url)}: "
                          f"{problems} (see docs/transports/nats.md)") from None
