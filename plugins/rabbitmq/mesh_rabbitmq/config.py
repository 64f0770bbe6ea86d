"""Settings of the RabbitMQ transport, parsed from the URL plus options.

``amqp[s]://user:password@host:port/vhost?option=value`` -- every field below can
also come as a query parameter or in the ``options`` mapping (options win over
the query, the query over the URL). The password is a `SecretStr`: it never
appears in a repr, a log line or an exception message.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from mesh import ConfigError, redact_url

#: Names pamqp accepts for exchanges and queues (RabbitMQ itself is more lenient).
AMQP_NAME = re.compile(r"[a-zA-Z0-9\-_.:@#,/+ ]{1,200}")


class RabbitMQConfig(BaseModel):
    """Connection, topology and timing settings (see docs/transports/rabbitmq.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tls: bool = False
    host: str = "localhost"
    port: int = Field(5672, ge=1, le=65535)
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    vhost: str = "/"
    #: the durable topic exchange every channel is published to
    exchange: str = "mesh"
    #: broker-level safety net for messages past ``delivery_limit`` ("" = "<exchange>.dlx")
    dead_letter_exchange: str = ""
    #: x-delivery-limit of group queues: deliveries before the broker dead-letters
    delivery_limit: int = Field(1000, ge=1)
    #: x-quorum-initial-group-size of group queues (None = broker default)
    replicas: int | None = Field(None, ge=1)
    heartbeat: int = Field(60, ge=0)
    connect_timeout: float = Field(10.0, gt=0)
    #: seconds publish() waits for the broker's confirm before raising PublishError
    publish_timeout: float = Field(10.0, gt=0)
    #: seconds between reconnection attempts after the connection was lost
    reconnect_interval: float = Field(2.0, gt=0)
    connection_name: str = "event-mesh"
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True

    @property
    def dlx(self) -> str:
        return self.dead_letter_exchange or f"{self.exchange}.dlx"

    @property
    def redacted(self) -> str:
        """The broker address for logs and errors: no password."""
        scheme = "amqps" if self.tls else "amqp"
        vhost = "" if self.vhost == "/" else self.vhost
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{self.username}:***@{host}:{self.port}/{vhost}"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> RabbitMQConfig:
        """Parse ``url`` and ``options``; raises `ConfigError` naming the bad option."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(f"RabbitMQ URL {redact_url(url)!r} is malformed; write it as "
                              "amqp://user:password@host:5672/vhost") from None
        scheme = parts.scheme.lower()
        if scheme not in ("amqp", "amqps"):
            raise ConfigError(f"RabbitMQ URL scheme must be amqp:// or amqps://, got {scheme!r}")
        values: dict[str, Any] = {"tls": scheme == "amqps",
                                  "port": port or (5671 if scheme == "amqps" else 5672)}
        if parts.hostname:
            values["host"] = parts.hostname
        if parts.username is not None:
            values["username"] = unquote(parts.username)
        if parts.password is not None:
            values["password"] = unquote(parts.password)
        if parts.path not in ("", "/"):
            values["vhost"] = unquote(parts.path[1:])
        given = {**dict(parse_qsl(parts.query, keep_blank_values=True)), **options}
        if "tls" in given:
            raise ConfigError("TLS is chosen by the URL scheme: use amqps:// (not tls=...)")
        values.update(given)
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"unknown RabbitMQ transport option(s) {', '.join(unknown)}; "
                              f"known options: {', '.join(sorted(cls.model_fields))}")
        try:
            config = cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                                 for err in exc.errors())
            raise ConfigError(f"invalid RabbitMQ transport option(s) for "
                              f"{redact_url(url)}: {problems}") from None
        config._check()
        return config

    def _check(self) -> None:
        for option in ("exchange", "dead_letter_exchange"):
            name = getattr(self, option)
            if name and (not AMQP_NAME.fullmatch(name) or name.startswith("amq.")):
                raise ConfigError(f"option {option}={name!r} is not a usable exchange name: "
                                  "use letters, digits and -_.:, not starting with 'amq.'")
        tls_files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if not self.tls and (any(tls_files) or not self.tls_verify):
            raise ConfigError("tls_* options need an amqps:// URL; use amqps://host:5671/")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("tls_cert_file and tls_key_file go together: give both for "
                              "client-certificate authentication, or neither")


def ssl_context(config: RabbitMQConfig) -> ssl.SSLContext:
    """The TLS context for amqps (reads files: call it off the event loop)."""
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_ca_file {config.tls_ca_file!r} is not a readable PEM CA "
                          f"bundle: {exc}") from None
    if config.tls_cert_file:
        try:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_cert_file/tls_key_file could not be loaded (PEM "
                              f"certificate and unencrypted key expected): {exc}") from None
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
