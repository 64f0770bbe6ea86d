"""Transport settings: URL parsing, option validation, TLS contexts, secret scrubbing.

Every transport turns ``scheme://[user[:password]@]host[:port][,host[:port]...][/path][?k=v]``
plus an options mapping into a validated pydantic model, and must do it without
ever echoing a secret. These helpers do that once, the same way for every plugin:

* `parse_url` splits a URL (one or several hosts) into a `TransportURL` whose
  password is a `SecretStr`; malformed URLs raise `ConfigError` with an example.
* `build_options` validates the merged values against the plugin's model; an
  unknown option gets "did you mean", a bad value names the option and the rule,
  never the value given.
* `redact_url` (in `mesh.transport`) masks user info and secret-looking query
  values; `scrub` removes known secret values from a client's error text.
* `tls_context` builds an `ssl.SSLContext` from PEM files (reads files: call it
  off the event loop, e.g. ``await asyncio.to_thread(tls_context, ...)``).
* `ensure_listening` fails at once when nothing listens at any broker address, so
  a refused connection is reported in milliseconds while a slow network still gets
  the client's whole connect timeout.
* `quietly` awaits a best-effort clean-up step (closing a channel, deleting a
  consumer) that must neither raise nor hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import socket
import re
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel, SecretStr, ValidationError

from mesh.errors import ConfigError, ConnectError
from mesh.transport import redact_url

M = TypeVar("M", bound=BaseModel)
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/@\[\],?#]+)(?::(\d{1,5}))?")


@dataclass(frozen=True)
class TransportURL:
    """The parts of a transport URL. ``password`` is secret; ``hosts`` are
    ``(host, port)`` pairs with ``port`` None where the URL gave none (empty when
    the URL names no host, as in ``amqp:///vhost``)."""

    scheme: str
    hosts: tuple[tuple[str, int | None], ...]
    username: str | None = field(default=None, repr=False)  # may be a token
    password: SecretStr | None = field(default=None, repr=False)
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)

    def addresses(self, default_port: int | None = None) -> list[str]:
        """``host:port`` strings (IPv6 hosts in brackets); a host without a port gets
        ``default_port`` (or, when that is None, raises `ConfigError`)."""
        if not self.hosts:
            raise ConfigError(
                f"the {self.scheme}:// URL names no host; write it as {self.scheme}://host:port"
            )
        out = []
        for host, port in self.hosts:
            if port is None and default_port is None:
                raise ConfigError(f"host {host!r} has no port; list hosts as host:port[,host:port]")
            shown = f"[{host}]" if ":" in host else host
            out.append(f"{shown}:{port if port is not None else default_port}")
        return out


def parse_url(url: str, schemes: tuple[str, ...], example: str) -> TransportURL:
    """Split ``url`` (one of ``schemes``; ``example`` shows the right form in errors).

    Several hosts are separated by commas, each optionally repeating the scheme
    (``nats://a:4222,nats://b:4222``). User info is percent-decoded.
    """
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in schemes:
        raise ConfigError(
            f"{shown!r} is not a {' / '.join(s + '://' for s in schemes)} URL; "
            f"write it as {example}"
        )
    rest = re.sub(r",\s*[A-Za-z][A-Za-z0-9+.-]*://", ",", rest)  # a:1,nats://b:2
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    hosts = []
    for raw in hostlist.split(",") if hostlist else ():
        raw = raw.strip()
        if not raw:
            raise ConfigError(f"{shown!r} has an empty host; write the URL as {example}")
        match = _HOST.fullmatch(raw)
        if not match:  # name the host only when no user info could have leaked into it
            host = "a host" if "@" in url else f"host {raw!r}"
            raise ConfigError(
                f"{shown!r}: {host} is not host or host:port; write the URL as {example}"
            )
        port = int(match.group(2)) if match.group(2) else None
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"{shown!r}: port {port} is out of range")
        hosts.append((match.group(1).strip("[]"), port))
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user)
        password = SecretStr(unquote(secret)) if colon else None
    return TransportURL(
        scheme=scheme.lower(),
        hosts=tuple(hosts),
        username=username,
        password=password,
        path=unquote(path) if slash else "",
        query=dict(parse_qsl(query, keep_blank_values=True)),
    )


def build_options(model: type[M], values: Mapping[str, Any], *, transport: str, url: str) -> M:
    """Validate ``values`` against ``model``; raise `ConfigError` naming every unknown
    option (with the nearest known one) or bad value (never echoing it)."""
    known = sorted(model.model_fields)
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = []
        for name in unknown:
            near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hints.append(f"{name} (did you mean {near[0]}?)" if near else name)
        raise ConfigError(
            f"unknown {transport} transport option(s): {', '.join(hints)}; "
            f"known options: {', '.join(known)}"
        )
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:  # raised below, outside: the error holds the inputs
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or transport}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
    raise ConfigError(f"invalid {transport} transport option(s) for {redact_url(url)}: {problems}")


def scrub(text: str, *secrets: SecretStr | str | None) -> str:
    """``text`` with every non-empty secret value replaced by ``***`` (for client
    errors that may quote a connection string)."""
    for secret in secrets:
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if value:
            text = text.replace(value, "***")
    return text


def tls_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    *,
    verify: bool = True,
) -> ssl.SSLContext:
    """A client TLS context: system CAs or ``ca_file``, an optional client certificate
    (``cert_file``, PEM, its key inside or in ``key_file``); ``verify=False`` skips
    certificate checks (tests only). Unreadable files raise `ConfigError`."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"tls_ca_file {ca_file!r} is not a readable PEM CA bundle: {exc}"
        ) from None
    if key_file and not cert_file:
        raise ConfigError("tls_key_file needs tls_cert_file (the client certificate)")
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls_cert_file/tls_key_file could not be loaded (PEM "
                f"certificate and unencrypted key expected): {exc}"
            ) from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def ensure_listening(
    addresses: Sequence[tuple[str, int] | str], *, timeout: float, broker: str
) -> float:
    """Raise `ConnectError` at once when every address refuses a TCP connection or does
    not resolve; return as soon as one accepts, or when an attempt is still pending
    after ``timeout`` seconds (a slow network: the client's own connect timeout then
    decides). ``broker`` names the broker in the message. Opens and closes plain TCP
    connections only: no protocol bytes are sent.

    An address is a ``(host, port)`` pair or a ``[scheme://]host:port`` string (IPv6
    hosts in brackets), as `TransportURL.addresses` and client server lists write them.
    Returns the seconds it took, so the caller can give its client the rest of a
    connect timeout.

    Broker clients retry a refused connection until their connect timeout (10 s
    and more), which makes "the broker is not running" the slowest error to see."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    pairs = [_host_port(a) if isinstance(a, str) else a for a in addresses]
    if pairs:
        await _probe(pairs, timeout, broker)
    return loop.time() - started


def _host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``[scheme://]host:port`` (an IPv6 host without brackets)."""
    host, _, port = address.strip().rpartition("://")[2].rpartition(":")
    return host.strip("[]"), int(port)


async def _probe(addresses: Sequence[tuple[str, int]], timeout: float, broker: str) -> None:
    failures: list[str] = []

    async def attempt(host: str, port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except (OSError, socket.gaierror) as exc:
            reason = (
                "connection refused"
                if isinstance(exc, ConnectionRefusedError)
                else (exc.strerror or type(exc).__name__)
            )
            shown = f"[{host}]" if ":" in host else host
            failures.append(f"{shown}:{port} ({reason})")
            return False
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    tasks = [asyncio.ensure_future(attempt(host, port)) for host, port in addresses]
    try:
        for next_done in asyncio.as_completed(tasks, timeout=timeout):
            if await next_done:
                return
    except TimeoutError:
        return  # still trying somewhere: not a refusal, leave it to the client
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raise ConnectError(
        f"nothing accepts connections for {broker} at {', '.join(failures)}; "
        "check that the broker runs there and the host and port are right"
    )


async def quietly(step: Awaitable[object], timeout: float | None = None) -> None:
    """Await a best-effort clean-up ``step`` (closing a client or channel, deleting a
    consumer, unsubscribing): any `Exception` it raises is dropped, and with a
    ``timeout`` it is abandoned after that many seconds (a broker that stopped
    answering must not hang a close). Cancellation still propagates.

    For steps whose failure changes nothing for the caller (the broker cleans up
    after a lost connection anyway); never for a step whose error the caller reports."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await step
