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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from mesh import ConfigError, build_options, parse_url, redact_url, tls_context

#: Names pamqp accepts for exchanges and queues (RabbitMQ itself is more lenient).
AMQP_NAME = re.compile(r"[a-zA-Z0-9\-_.:@#,/+ ]{1,200}")
#: A stream's x-max-age: a number and a unit (years, months, days, hours, minutes, seconds).
MAX_AGE = re.compile(r"[1-9][0-9]*[YMDhms]")


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
    #: header convention written: "rabbitmq" (ce-<name>) or "amqp" (the CloudEvents AMQP
    #: binding's application properties); both are always read
    binding: Literal["rabbitmq", "amqp"] = "rabbitmq"
    #: prefix written with binding="amqp" (None = "cloudEvents_", what the Python SDK writes)
    amqp_prefix: Literal["cloudEvents_", "cloudEvents:"] | None = None
    #: x-max-age of the stream queue retain() declares (only when it does not exist yet)
    retained_max_age: str = "7D"
    #: largest message (body plus headers, bytes) publish() sends; larger ones raise
    #: MessageTooLarge without touching the broker. RabbitMQ 4's max_message_size default
    #: (16 MiB); set it to your broker's setting (3.x default: 128 MiB)
    max_message_size: int = Field(16 * 1024 * 1024, ge=1024)
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
    def header_prefix(self) -> str:
        """The prefix of the attribute headers this transport writes."""
        if self.binding == "rabbitmq":
            return "ce-"
        return self.amqp_prefix or "cloudEvents_"

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
        parts = parse_url(url, ("amqp", "amqps"), "amqp://user:password@host:5672/vhost")
        if len(parts.hosts) > 1:
            raise ConfigError(
                f"RabbitMQ URL {redact_url(url)!r} names several hosts; give "
                "one (put a load balancer in front of a cluster)"
            )
        host, port = parts.hosts[0] if parts.hosts else ("", None)
        tls = parts.scheme == "amqps"
        values: dict[str, Any] = {"tls": tls, "port": port or (5671 if tls else 5672)}
        if host:
            values["host"] = host
        if parts.username is not None:
            values["username"] = parts.username
        if parts.password is not None:
            values["password"] = parts.password
        if parts.path:
            values["vhost"] = parts.path
        given = {**parts.query, **options}
        if "tls" in given:
            raise ConfigError("TLS is chosen by the URL scheme: use amqps:// (not tls=...)")
        config = build_options(cls, {**values, **given}, transport="RabbitMQ", url=url)
        config._check()
        return config

    def _check(self) -> None:
        for option in ("exchange", "dead_letter_exchange"):
            name = getattr(self, option)
            if name and (not AMQP_NAME.fullmatch(name) or name.startswith("amq.")):
                raise ConfigError(
                    f"option {option}={name!r} is not a usable exchange name: "
                    "use letters, digits and -_.:, not starting with 'amq.'"
                )
        if self.amqp_prefix is not None and self.binding != "amqp":
            raise ConfigError(
                f"option amqp_prefix={self.amqp_prefix!r} only applies with "
                "binding=amqp; add binding=amqp or drop amqp_prefix"
            )
        if not MAX_AGE.fullmatch(self.retained_max_age):
            raise ConfigError(
                f"option retained_max_age={self.retained_max_age!r} is not a "
                "RabbitMQ stream age: write a number and a unit, e.g. 7D, 12h "
                "(Y, M, D, h, m, s)"
            )
        tls_files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if not self.tls and (any(tls_files) or not self.tls_verify):
            raise ConfigError("tls_* options need an amqps:// URL; use amqps://host:5671/")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "tls_cert_file and tls_key_file go together: give both for "
                "client-certificate authentication, or neither"
            )


def ssl_context(config: RabbitMQConfig) -> ssl.SSLContext:
    """The TLS context for amqps (reads files: call it off the event loop)."""
    return tls_context(
        config.tls_ca_file, config.tls_cert_file, config.tls_key_file, verify=config.tls_verify
    )
