"""`NatsConfig`: the NATS transport's settings, parsed from the URL and the options.

``nats://[user:password@|token@]host[:port][,host[:port]...][?option=value&...]``;
``options`` (the mapping given next to the URL in the mesh config) override query
parameters. Credentials are `SecretStr` and the parsed server list carries none;
parsing and validation use `mesh.parse_url` and `mesh.build_options`, so no
secret reaches a repr, a log line or an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from mesh import ConfigError, build_options, parse_url, redact_url

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
    ack_wait: float = Field(
        5.0,
        ge=1,
        description="seconds; a dead worker's messages come "
        "back after it, running ones are kept by +WPI every third of it",
    )
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
            raise ValueError(
                "use one or more '.'-separated tokens without spaces or wildcards, "
                "e.g. 'mesh' or 'prod.mesh'"
            )
        return value

    def subject(self, channel: str) -> str:
        """The NATS subject of a channel, or the subject filter of a neutral pattern:
        NATS's ``*`` and ``>`` mean what the neutral wildcards mean, so a pattern
        translates token for token, under the prefix."""
        return f"{self.subject_prefix}.{channel}"

    def channel(self, subject: str) -> str:
        return subject[len(self.subject_prefix) + 1 :]


def parse(url: str, options: Mapping[str, Any] | None = None) -> NatsConfig:
    """Build a `NatsConfig` from a ``nats://`` (or ``tls://``) URL and an options mapping."""
    parts = parse_url(url, ("nats", "tls"), "nats://host:4222[,host2:4222][?stream=MESH]")
    if parts.path.strip("/"):
        raise ConfigError(
            f"NATS URL {redact_url(url)!r} has a path; NATS URLs have none, "
            "put settings in the query: nats://host:4222?stream=MESH"
        )
    values: dict[str, Any] = {"tls": True} if parts.scheme == "tls" else {}
    if parts.password is not None:
        values.update(user=parts.username, password=parts.password)
    elif parts.username:
        values["token"] = parts.username
    values.update(parts.query)
    values.update(options or {})
    values["servers"] = ["nats://" + address for address in parts.addresses(4222)]
    return build_options(NatsConfig, values, transport="NATS", url=url)
