"""KafkaConfig: the ``kafka://`` URL plus options, validated once, turned into librdkafka dicts.

URL form: ``kafka://[user:password@]host:port[,host:port...][?option=value&...]``.
Query parameters and the ``options`` mapping fill the same fields (``options`` win).
Raw librdkafka properties pass through as ``producer.<prop>``, ``consumer.<prop>`` or
``client.<prop>`` query keys (or the ``producer_config`` / ``consumer_config`` /
``client_config`` options), except the ones the delivery guarantees rest on: those
are pinned or rejected with a `ConfigError` naming the property and the fix.
Secrets are `SecretStr`; no error message ever echoes an input value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from mesh import build_options, parse_url

ClientValue = str | int | float | bool
#: consumer group liveness defaults (see `KafkaConfig.consumer`)
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
_CLIENT_PREFIXES = {
    "client.": "client_config",
    "producer.": "producer_config",
    "consumer.": "consumer_config",
}

#: properties the transport sets itself; value None = may not be set at all, else the
#: only accepted spellings (the guarantee they carry).
_PINNED: dict[str, tuple[set[str] | None, str]] = {
    "bootstrap.servers": (None, "put the brokers in the URL: kafka://host1:9092,host2:9092"),
    "group.id": (None, "the group id is derived from the handler's group="),
    "enable.auto.commit": ({"false", "0"}, "offsets are committed only after handling"),
    "enable.auto.offset.store": ({"false", "0"}, "offsets are stored only after handling"),
    "auto.offset.reset": (None, "groups start at the earliest offset, broadcast at the end"),
    "enable.idempotence": ({"true", "1"}, "the producer must be idempotent"),
    "acks": ({"all", "-1"}, "publish confirms only writes to all in-sync replicas"),
    "request.required.acks": ({"all", "-1"}, "publish confirms only fully replicated writes"),
    "partition.assignment.strategy": (
        {"range", "roundrobin", "range,roundrobin"},
        "the consumer commits on eager (not cooperative) rebalances",
    ),
    "group.protocol": ({"classic"}, "the consumer relies on the classic rebalance protocol"),
    "security.protocol": (None, "use the security_protocol option"),
    "sasl.mechanism": (None, "use the sasl_mechanism option"),
    "sasl.mechanisms": (None, "use the sasl_mechanism option"),
    "sasl.username": (None, "use the sasl_username option or the URL's user"),
    "sasl.password": (None, "use the sasl_password option (kept secret)"),
    "ssl.key.password": (None, "use the ssl_key_password option (kept secret)"),
    "ssl.keystore.password": (None, "use ssl_certificate_location/ssl_key_location"),
    "sasl.oauthbearer.client.secret": (None, "OAUTHBEARER is not supported yet"),
}
_CALLBACKS = {
    "on_delivery",
    "on_commit",
    "error_cb",
    "stats_cb",
    "throttle_cb",
    "logger",
    "oauth_cb",
}


class KafkaConfig(BaseModel):
    """Connection, security, topic and client settings of one Kafka transport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    partitions: int = Field(8, ge=1, description="partitions of topics the mesh creates")
    replication_factor: int = Field(-1, ge=-1, description="-1: the broker's default")
    create_topics: bool = True
    client_id: str = "event-mesh"
    connect_timeout: float = Field(10.0, gt=0)
    assignment_timeout: float = Field(60.0, gt=0)
    commit_interval: float = Field(0.5, gt=0, description="seconds between offset commits")
    client_config: dict[str, ClientValue] = Field(default_factory=dict)
    producer_config: dict[str, ClientValue] = Field(default_factory=dict)
    consumer_config: dict[str, ClientValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> KafkaConfig:
        if self.replication_factor == 0:
            raise ValueError("replication_factor must be -1 (broker default) or >= 1")
        sasl = self.sasl_username is not None or self.sasl_password is not None
        if sasl and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError("SASL needs both sasl_username and sasl_password")
        if (self.security_protocol or "").startswith("SASL") and not sasl:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        for name in ("client_config", "producer_config", "consumer_config"):
            for key, value in getattr(self, name).items():
                _check_property(name, key, value)
        return self

    # --- parsing ----------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> KafkaConfig:
        """Parse ``url`` and ``options``; raise `ConfigError` naming what is wrong."""
        parts = parse_url(url, ("kafka",), "kafka://host:9092[,host2:9092]")
        data: dict[str, Any] = {"bootstrap_servers": ",".join(parts.addresses())}
        if parts.username is not None:
            data.update(sasl_username=parts.username, sasl_password=parts.password)
        for key, value in [*parts.query.items(), *dict(options or {}).items()]:
            prefix = next((p for p in _CLIENT_PREFIXES if key.startswith(p)), None)
            if prefix is not None:
                data.setdefault(_CLIENT_PREFIXES[prefix], {})[key[len(prefix) :]] = value
            elif key in _CLIENT_PREFIXES.values() and isinstance(value, Mapping):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        return build_options(cls, data, transport="kafka", url=url)

    # --- librdkafka dicts -------------------------------------------------------------

    def common(self) -> dict[str, Any]:
        """Connection and security properties shared by producer, consumer and admin."""
        files = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        sasl = self.sasl_password is not None  # then sasl_username is set too (`_check`)
        tls = any(files.values())
        protocol = self.security_protocol or ("SASL_SSL" if sasl else "SSL" if tls else "PLAINTEXT")
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": protocol,
            **{prop: path for prop, path in files.items() if path is not None},
        }
        if self.sasl_password is not None:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return {**conf, **self.client_config}

    def producer(self) -> dict[str, Any]:
        """Idempotent producer, acks=all; murmur2 keys land where Java clients put them.

        Topics are created explicitly (with ``partitions``), never by the broker's
        auto-creation on a metadata request.
        """
        return {
            **self.common(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "allow.auto.create.topics": False,
            **self.producer_config,
        }

    def consumer(self, group_id: str) -> dict[str, Any]:
        """Manual commits only; internal topics (``__*``) invisible to regex subscriptions;
        a queue past ``queued.min.messages`` is refetched after 20 ms, not librdkafka's 1 s.

        A member that dies without leaving (kill -9, a lost host) keeps its partitions
        until the group coordinator misses its heartbeats for ``session.timeout.ms``:
        6 s (librdkafka's default is 45 s) gets its records to another member within
        10 s, and 6 s is the smallest session Kafka brokers accept by default
        (``group.min.session.timeout.ms``). Heartbeats every second keep a live member in
        the group through five lost heartbeats, and tell the survivors of the rebalance
        within a second, so they rejoin at once (measured on Tansu, whose join waits
        about half the session timeout: 9.4 s from kill -9 to the first record at the
        other member; Kafka completes the join as soon as the members rejoined)."""
        return {
            **self.common(),
            "topic.metadata.refresh.interval.ms": 30000,
            "queued.min.messages": 1000,
            "fetch.queue.backoff.ms": 20,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            **self.consumer_config,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "topic.blacklist": "^__.*",
        }


def _check_property(option: str, key: str, value: ClientValue) -> None:
    if key in _CALLBACKS:
        raise ValueError(
            f"{option}[{key!r}]: callbacks belong to the transport; "
            "use Python logging (logger 'mesh_kafka') instead"
        )
    pinned = _PINNED.get(key)
    if pinned is None:
        return
    allowed, why = pinned
    if allowed is None or str(value).lower().replace(" ", "") not in allowed:
        shown = "" if allowed is None else f" (only {' / '.join(sorted(allowed))})"
        raise ValueError(f"{option}[{key!r}] cannot be set{shown}: {why}")
