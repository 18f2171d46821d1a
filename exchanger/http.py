"""Outbound HTTP hygiene shared by every upstream call.

One `httpx.AsyncClient` per process; certificates checked against the system
store (OpenSSL honours `SSL_CERT_FILE`/`SSL_CERT_DIR`, so a private CA works);
no redirects followed; every body read with a size cap.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from exchanger import __version__, tracing

USER_AGENT = f"exchanger/{__version__}"
MAX_RESPONSE_BYTES = 1 << 20


class FetchError(Exception):
    """An upstream fetch failed; the message is safe to log (no bodies, no credentials)."""


def describe(exc: BaseException) -> str:
    """Why a request failed, in words an operator can act on: DNS, refused, timeout, TLS.

    httpx wraps the OS's and OpenSSL's errors; the cause chain says which one it was.
    No URL query, header or body is part of any of these texts.
    """
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for the answer",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "")
        return f"timed out{' ' + phase if phase else ''}"
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause.__class__.__name__}"
        if isinstance(cause, socket.gaierror):
            return "DNS: the name does not resolve"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the peer"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the peer broke off the HTTP exchange"
    return exc.__class__.__name__


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def system_ssl_context() -> ssl.SSLContext:
    """The system trust store, as OpenSSL finds it (SSL_CERT_FILE/SSL_CERT_DIR included)."""
    return ssl.create_default_context()


def make_client(
    timeout: float = 10.0, environ: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """The process's one outbound client; `HTTPS_PROXY`/`NO_PROXY` route it through a proxy.

    Only the proxy variables are read from the environment (httpx's `trust_env`
    would also send `~/.netrc` credentials along): TLS is still verified end to
    end through the proxy's CONNECT tunnel.
    """
    verify = system_ssl_context()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
        limits=limits,
        mounts=proxy_mounts(os.environ if environ is None else environ, verify, limits),
    )


def proxy_mounts(
    environ: Mapping[str, str], verify: ssl.SSLContext, limits: httpx.Limits
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """Transports for `HTTPS_PROXY` (or `https_proxy`, then `ALL_PROXY`), minus `NO_PROXY`.

    `NO_PROXY` takes hosts, `.domain` or `*.domain` suffixes, IP addresses, and `*`
    for none at all; a listed host is reached directly.
    """
    proxy = _variable(environ, "HTTPS_PROXY") or _variable(environ, "ALL_PROXY")
    if not proxy:
        return {}
    exempt = [h.strip() for h in (_variable(environ, "NO_PROXY") or "").split(",") if h.strip()]
    if "*" in exempt:
        return {}
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {
        "https://": httpx.AsyncHTTPTransport(proxy=proxy, verify=verify, limits=limits)
    }
    for entry in exempt:
        mounts.update(dict.fromkeys(_direct_patterns(entry)))
    return mounts


def _direct_patterns(entry: str) -> list[str]:
    """httpx mount patterns for one `NO_PROXY` entry: the host, and its subdomains."""
    host = entry.lower().removeprefix("*").removeprefix(".")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return [f"all://{host}", f"all://*.{host}"]
    return [f"all://[{address}]" if address.version == 6 else f"all://{address}"]


def _variable(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name) or environ.get(name.lower()) or None


async def read_capped(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The body of a streamed response, refusing anything over `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchError(f"response larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise FetchError(f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    limit: int = MAX_RESPONSE_BYTES,
    timeout: float | None = None,
) -> Any:
    """GET a JSON document over https: 200 only, no redirect, at most `limit` bytes."""
    if not url.startswith("https://"):
        raise FetchError("refusing a non-https URL")
    headers = {"Accept": "application/json"}
    per_request = httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout)
    with tracing.span("fetch", url=tracing.bare_url(url)) as trace:
        try:
            async with client.stream("GET", url, headers=headers, timeout=per_request) as response:
                trace.set_attribute("status", response.status_code)
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code} ({url})")
                body = await read_capped(response, limit)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            # InvalidURL and ValueError (e.g. IDNA's UnicodeError) come from a malformed URL,
            # which a discovery document controls; they are fetch failures, not crashes.
            raise FetchError(f"{describe(exc)} ({url})") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError("response is not JSON") from None
