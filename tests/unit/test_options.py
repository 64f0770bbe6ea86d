"""`mesh.options` (parse_url, TransportURL.addresses, build_options, scrub, tls_context,
ensure_listening, quietly) and `mesh.transport.redact_url`: what every transport plugin uses to
read its settings and connect without ever echoing a secret."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from mesh.errors import ConfigError, ConnectError
from mesh.options import (
    TransportURL,
    build_options,
    ensure_listening,
    parse_url,
    quietly,
    scrub,
    tls_context,
)
from mesh.transport import redact_url

SCHEMES = ("nats", "tls")
EXAMPLE = "nats://host:4222[,host2:4222]"
SECRET = "hunter2"


def parse(url: str) -> TransportURL:
    return parse_url(url, SCHEMES, EXAMPLE)


def config_error(url: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(url)
    return str(exc.value)


# --- parse_url -------------------------------------------------------------------------------


def test_single_host_url() -> None:
    parts = parse("nats://broker.example:4222")
    assert parts == TransportURL(scheme="nats", hosts=(("broker.example", 4222),))
    assert (parts.username, parts.password, parts.path, parts.query) == (None, None, "", {})


def test_scheme_is_case_insensitive_and_lowered() -> None:
    assert parse("TLS://h:1").scheme == "tls"


@pytest.mark.parametrize(
    "url",
    [
        "nats://a:4222,b:4223,c",
        "nats://a:4222,nats://b:4223,c",
        "nats://a:4222, NATS://b:4223 , c",
        "nats://a:4222,tls://b:4223,nats://c",
    ],
)
def test_multi_host_urls_with_and_without_repeated_scheme(url: str) -> None:
    parts = parse(url)
    assert parts.scheme == "nats"
    assert parts.hosts == (("a", 4222), ("b", 4223), ("c", None))


def test_repeated_scheme_keeps_user_info_path_and_query() -> None:
    parts = parse("nats://u:pw@a:1,nats://b:2/vhost?stream=S")
    assert parts.hosts == (("a", 1), ("b", 2))
    assert parts.username == "u" and parts.password is not None
    assert parts.password.get_secret_value() == "pw"
    assert (parts.path, parts.query) == ("vhost", {"stream": "S"})


def test_ipv6_hosts() -> None:
    parts = parse("nats://[::1]:4222,[fe80::1],[2001:db8::7]:4223")
    assert parts.hosts == (("::1", 4222), ("fe80::1", None), ("2001:db8::7", 4223))


def test_user_and_password_are_percent_decoded() -> None:
    parts = parse("nats://al%69ce:p%40ss%3Aw%2Frd@h:4222")
    assert parts.username == "alice"
    assert isinstance(parts.password, SecretStr)
    assert parts.password.get_secret_value() == "p@ss:w/rd"
    assert parts.hosts == (("h", 4222),)


def test_password_with_unencoded_at_sign_splits_at_the_last_one() -> None:
    parts = parse("nats://u:p@ss@h:1")
    assert parts.password is not None and parts.password.get_secret_value() == "p@ss"
    assert parts.hosts == (("h", 1),)


def test_token_only_user_info_is_the_username_without_password() -> None:
    parts = parse("nats://t0k%2Ben@h")
    assert parts.username == "t0k+en" and parts.password is None
    assert parts.hosts == (("h", None),)


def test_password_without_user_and_user_with_empty_password() -> None:
    only_password = parse("nats://:pw@h")
    assert only_password.username == "" and only_password.password is not None
    assert only_password.password.get_secret_value() == "pw"
    empty_password = parse("nats://user:@h")
    assert empty_password.username == "user" and empty_password.password is not None
    assert empty_password.password.get_secret_value() == ""


def test_path_and_query() -> None:
    parts = parse("nats://h:1/my%20vhost?stream=S1&ack_wait=12&empty=&q=a%26b")
    assert parts.path == "my vhost"
    assert parts.query == {"stream": "S1", "ack_wait": "12", "empty": "", "q": "a&b"}
    assert parse("nats://h/").path == ""
    assert parse("nats://h").path == ""
    assert parse("nats://h?x=1").hosts == (("h", None),)


def test_url_without_host_has_no_hosts() -> None:
    assert parse("nats:///vhost").hosts == ()
    with pytest.raises(ConfigError, match="names no host"):
        parse("nats:///vhost").addresses(4222)


@pytest.mark.parametrize("url", ["http://h:4222", "nats:/h", "h:4222", "://h", ""])
def test_bad_scheme_names_the_schemes_and_the_example(url: str) -> None:
    message = config_error(url)
    assert "nats://" in message and "tls://" in message and EXAMPLE in message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nats://h:0", "port 0 is out of range"),
        ("nats://h:65536", "port 65536 is out of range"),
        ("nats://h:123456", "'h:123456' is not host or host:port"),
        ("nats://h:abc", "'h:abc' is not host or host:port"),
        ("nats://bad host:1", "'bad host:1' is not host or host:port"),
        ("nats://[zz::1]:1", "is not host or host:port"),
        ("nats://h,,k", "empty host"),
        ("nats://h,", "empty host"),
    ],
)
def test_bad_host_or_port(url: str, fragment: str) -> None:
    message = config_error(url)
    assert fragment in message


@pytest.mark.parametrize(
    "url",
    [
        f"http://u:{SECRET}@h:4222",
        f"nats:/u:{SECRET}@h",
        f"nats://u:{SECRET}@h:0",
        f"nats://u:{SECRET}@h:99999",
        f"nats://u:{SECRET}@h:abc",
        f"nats://u:{SECRET}@bad host",
        f"nats://u:{SECRET}@h,,k",
        f"nats://{SECRET}@h:abc",
        f"nats://:{SECRET}@h:0",
        f"nats://u:pw@h:abc?password={SECRET}",
        f"nats://h:abc?sasl_password={SECRET}",
    ],
)
def test_error_messages_never_contain_the_password(url: str) -> None:
    message = config_error(url)
    assert SECRET not in message
    assert "***" in message or "<unparseable url>" in message


def test_repr_of_transport_url_hides_the_password_and_the_user_info() -> None:
    parts = parse(f"nats://alice:{SECRET}@h:4222/v?stream=S")
    assert parts.password is not None and parts.password.get_secret_value() == SECRET
    token = parse("nats://s3cr3t-token@h:4222")
    assert token.username == "s3cr3t-token"
    for text in (repr(parts), str(parts), f"{parts}", repr(token)):
        assert SECRET not in text and "s3cr3t-token" not in text
        assert "alice" not in text and "'h', 4222" in text


# --- TransportURL.addresses ----------------------------------------------------------------


def test_addresses_fill_in_the_default_port() -> None:
    assert parse("nats://a:4223,b,c:1").addresses(4222) == ["a:4223", "b:4222", "c:1"]


def test_addresses_put_ipv6_hosts_in_brackets() -> None:
    assert parse("nats://[::1]:4223,[fe80::1]").addresses(4222) == ["[::1]:4223", "[fe80::1]:4222"]


def test_addresses_without_default_port_need_explicit_ports() -> None:
    assert parse("nats://a:1,b:2").addresses() == ["a:1", "b:2"]
    with pytest.raises(ConfigError) as exc:
        parse("nats://a:1,b").addresses()
    message = str(exc.value)
    assert "'b'" in message and "host:port" in message


def test_addresses_carry_no_credentials() -> None:
    assert parse(f"nats://u:{SECRET}@h:1").addresses() == ["h:1"]


# --- build_options ---------------------------------------------------------------------------


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: SecretStr | None = None
    max_in_flight: int = Field(default=8, ge=1, le=1000)
    stream: str = "MESH"
    ack_wait: float = 30.0


URL = f"nats://u:{SECRET}@h:4222?token={SECRET}"


def build_error(values: dict[str, object], model: type[BaseModel] = Opts) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        build_options(model, values, transport="NATS", url=URL)
    return exc.value


def test_build_options_validates_and_coerces() -> None:
    opts = build_options(
        Opts,
        {"password": SECRET, "max_in_flight": "12", "ack_wait": "1.5"},
        transport="NATS",
        url=URL,
    )
    assert isinstance(opts, Opts)
    assert opts.max_in_flight == 12 and opts.ack_wait == 1.5 and opts.stream == "MESH"
    assert opts.password is not None and opts.password.get_secret_value() == SECRET


def test_unknown_option_gets_did_you_mean_and_the_known_options() -> None:
    message = str(build_error({"max_inflight": 3}))
    assert "unknown NATS transport option(s)" in message
    assert "max_inflight (did you mean max_in_flight?)" in message
    assert "known options: ack_wait, max_in_flight, password, stream" in message


def test_unknown_options_are_all_named_with_a_hint_only_when_one_is_close() -> None:
    message = str(build_error({"streem": "S", "colour": "blue", "stream": "ok"}))
    assert "colour, streem (did you mean stream?)" in message
    assert "colour (did you mean" not in message


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        ({"max_in_flight": 123456789}, "less than or equal to 1000"),
        ({"max_in_flight": -987654}, "greater than or equal to 1"),
        ({"max_in_flight": "plenty-of-them"}, "valid integer"),
        ({"ack_wait": "whenever-ish"}, "valid number"),
    ],
)
def test_bad_value_names_the_option_and_rule_but_not_the_value(
    values: dict[str, object], rule: str
) -> None:
    exc = build_error(values)
    message = str(exc)
    ((name, value),) = values.items()
    assert f"{name}: " in message and rule in message
    assert str(value) not in message
    assert "invalid NATS transport option(s)" in message
    assert SECRET not in message and "u:***@h:4222" in message  # the URL, redacted
    assert exc.__cause__ is None and exc.__context__ is None  # pydantic's error (inputs) not kept


def test_bad_secret_value_is_not_echoed() -> None:
    message = str(build_error({"password": 918273645}))
    assert message.count("password") == 1 and "valid string" in message
    assert "918273645" not in message


def test_every_bad_value_is_listed() -> None:
    message = str(build_error({"max_in_flight": 0, "ack_wait": "soon"}))
    assert "max_in_flight: " in message and "ack_wait: " in message


def test_model_level_error_is_attributed_to_the_transport() -> None:
    class Paired(BaseModel):
        user: str | None = None
        password: SecretStr | None = None

        @model_validator(mode="after")
        def both_or_neither(self) -> Paired:
            if (self.user is None) != (self.password is None):
                raise ValueError("user and password go together")
            return self

    message = str(build_error({"password": SECRET}, Paired))
    assert "NATS: Value error, user and password go together" in message
    assert SECRET not in message


# --- scrub -----------------------------------------------------------------------------------


def test_scrub_replaces_every_known_secret() -> None:
    text = f"auth failed for sasl://bob:{SECRET}@h (token t0k, again {SECRET})"
    assert scrub(text, SecretStr(SECRET), "t0k") == (
        "auth failed for sasl://bob:***@h (token ***, again ***)"
    )


def test_scrub_ignores_missing_and_empty_secrets() -> None:
    text = "connection refused"
    assert scrub(text, None, "", SecretStr("")) == text
    assert scrub(text) == text


# --- tls_context -----------------------------------------------------------------------------

# A throwaway self-signed EC certificate (CN=mesh-test) and its key, for loading only.
CERT = """-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUIk7qd4k8QOTyTEt+h+9E1kQnxikwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbWVzaC10ZXN0MCAXDTI2MTEyNTE3MjQ0MVoYDzIxMjYxMTAx
MTcyNDQxWjAUMRIwEAYDVQQDDAltZXNoLXRlc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATWOIy4r0rSOlOmmTIOj78txDmlDL533rt1LdnLOY5LSPBV4CtJ/pOZ
hBNrBVjmbt6bcS8hdgVl1IChMV+6om/Do1MwUTAdBgNVHQ4EFgQULTkkHMy3poo8
AVORH12bAWgj6MYwHwYDVR0jBBgwFoAULTkkHMy3poo8AVORH12bAWgj6MYwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiBd6+iexg8hQ7aQ7+iEbHxm
nRd+2wTET5P6od/vhHukHwIhAIQum2MfAIfDHN5W6sgN5KlwBhG4RF4gqPLSY5Ue
zSJb
-----END CERTIFICATE-----
"""
KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrvYn/N7rySfGN7O5
D5F+cxR/l7PeT5NfrgWxQ7Yn6ZuhRANCAATWOIy4r0rSOlOmmTIOj78txDmlDL53
3rt1LdnLOY5LSPBV4CtJ/pOZhBNrBVjmbt6bcS8hdgVl1IChMV+6om/D
-----END PRIVATE KEY-----
"""


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {"cert": CERT, "key": KEY, "both": CERT + KEY, "junk": "not a certificate\n"}
    for name, text in files.items():
        (tmp_path / f"{name}.pem").write_text(text)
    return {name: str(tmp_path / f"{name}.pem") for name in files}


def test_tls_context_verifies_by_default() -> None:
    context = tls_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_tls_context_without_verification() -> None:
    context = tls_context(verify=False)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_tls_context_loads_a_ca_file(pem: dict[str, str]) -> None:
    context = tls_context(ca_file=pem["cert"])
    subjects = [cert["subject"] for cert in context.get_ca_certs()]
    assert ((("commonName", "mesh-test"),),) in subjects
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_tls_context_missing_ca_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError) as exc:
        tls_context(ca_file=missing)
    assert "tls_ca_file" in str(exc.value) and missing in str(exc.value)
    assert exc.value.__cause__ is None


def test_tls_context_ca_file_that_is_not_pem(pem: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="tls_ca_file"):
        tls_context(ca_file=pem["junk"])


def test_tls_context_key_without_cert(pem: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="tls_key_file needs tls_cert_file"):
        tls_context(key_file=pem["key"])


def test_tls_context_loads_a_client_certificate(pem: dict[str, str]) -> None:
    assert isinstance(tls_context(cert_file=pem["cert"], key_file=pem["key"]), ssl.SSLContext)
    assert isinstance(tls_context(cert_file=pem["both"]), ssl.SSLContext)  # key inside


@pytest.mark.parametrize(
    ("cert", "key"), [("junk", None), ("cert", None), ("cert", "junk"), ("missing", None)]
)
def test_tls_context_bad_client_certificate(
    pem: dict[str, str], tmp_path: Path, cert: str, key: str | None
) -> None:
    paths = {**pem, "missing": str(tmp_path / "missing.pem")}
    with pytest.raises(ConfigError, match="tls_cert_file/tls_key_file could not be loaded"):
        tls_context(cert_file=paths[cert], key_file=paths[key] if key else None)


# --- redact_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"nats://alice:{SECRET}@h:4222", "nats://alice:***@h:4222"),
        (f"nats://alice:{SECRET}@h:4222/vhost", "nats://alice:***@h:4222/vhost"),
        (f"nats://:{SECRET}@h", "nats://***@h"),
        ("nats://alice:@h", "nats://alice:***@h"),
        (f"nats://{SECRET}@h:4222", "nats://***@h:4222"),  # token-only user info
        (f"nats://alice:p@ss@{SECRET}@h", "nats://alice:***@h"),  # '@' in the password
        (f"nats://alice:{SECRET}@[::1]:4222", "nats://alice:***@[::1]:4222"),
        (f"kafka://u:{SECRET}@a:9092,b:9092,c", "kafka://u:***@a:9092,b:9092,c"),
        (f"nats://{SECRET}@a:1,nats://b:2", "nats://***@a:1,nats://b:2"),
        ("nats://a:1,nats://b:2/v?stream=S", "nats://a:1,nats://b:2/v?stream=S"),
        ("nats://h:4222", "nats://h:4222"),
    ],
)
def test_redact_url_user_info(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_masks_secret_looking_query_values_and_keeps_the_rest() -> None:
    url = (
        f"kafka://h:9092?password={SECRET}&token={SECRET}&sasl_password={SECRET}"
        f"&ssl_key_password={SECRET}&client_secret={SECRET}&user_credentials={SECRET}"
        "&stream=S&ack_wait=12&group=g&empty_token=&Password=x"
    )
    assert redact_url(url) == (
        "kafka://h:9092?password=***&token=***&sasl_password=***&ssl_key_password=***"
        "&client_secret=***&user_credentials=***&stream=S&ack_wait=12&group=g"
        "&empty_token=&Password=***"
    )


def test_redact_url_masks_user_info_and_query_together() -> None:
    shown = redact_url(f"amqp://guest:{SECRET}@h:5672/vh?heartbeat=30&password={SECRET}")
    assert shown == "amqp://guest:***@h:5672/vh?heartbeat=30&password=***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("h:4222", "h:4222"),
        ("localhost", "localhost"),
        (f"alice:{SECRET}@h:4222", "<unparseable url>"),
        (f"{SECRET}@h", "<unparseable url>"),
    ],
)
def test_redact_url_without_scheme(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_without_scheme_still_masks_secret_query_values() -> None:
    shown = redact_url(f"h:4222?stream=S&password={SECRET}")
    assert SECRET not in shown and "stream=S" in shown


@pytest.mark.parametrize(
    "url",
    [
        f"nats://user:pa/{SECRET}@host:4222",
        f"amqp://u:pa?{SECRET}@h/v",
        f"nats://u:{SECRET}@a,nats://u:{SECRET}@b",
    ],
)
def test_unencoded_separators_in_a_password_never_leak(url: str) -> None:
    from mesh import redact_url

    assert SECRET not in redact_url(url)
    try:
        parse(url)
    except ConfigError as exc:
        assert SECRET not in str(exc)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_ensure_listening_takes_pairs_and_address_strings() -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    refused = _closed_port()
    try:
        for addresses in (
            [("127.0.0.1", port)],
            [f"127.0.0.1:{port}"],
            [f"nats://127.0.0.1:{refused}", f" nats://127.0.0.1:{port}"],
        ):
            spent = await ensure_listening(addresses, timeout=5.0, broker="X")
            assert 0.0 <= spent < 5.0
        assert await ensure_listening([], timeout=1.0, broker="X") >= 0.0
    finally:
        server.close()
        await server.wait_closed()


async def test_ensure_listening_refused_everywhere_names_every_address() -> None:
    refused = _closed_port()
    with pytest.raises(ConnectError) as exc:
        await ensure_listening(
            [f"kafka://127.0.0.1:{refused}", ("127.0.0.1", refused)], timeout=5.0, broker="Kafka"
        )
    text = str(exc.value)
    assert text.startswith("nothing accepts connections for Kafka at ")
    assert text.count(f"127.0.0.1:{refused} (connection refused)") == 2


async def test_quietly_drops_errors_and_bounds_the_wait() -> None:
    done: list[str] = []

    async def step(what: str, wait: float = 0.0, fail: bool = False) -> None:
        await asyncio.sleep(wait)
        if fail:
            raise RuntimeError("connection reset")
        done.append(what)

    await quietly(step("ok"))
    await quietly(step("failed", fail=True))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await quietly(step("hung", wait=30.0), timeout=0.05)
    assert loop.time() - started < 5.0
    assert done == ["ok"]


async def test_quietly_lets_cancellation_through() -> None:
    task = asyncio.ensure_future(quietly(asyncio.sleep(30.0)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
