"""Outbound HTTP hygiene shared by every upstream call.

One `httpx.AsyncClient` per process; certificates checked against the system
store (OpenSSL honours `SSL_CERT_FILE`/`SSL_CERT_DIR`, so a private CA works);
no redirects followed; every body read with a size cap.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from exchanger import __version__

USER_AGENT = f"exchanger/{__version__}"
MAX_RESPONSE_BYTES = 1 << 20


class FetchError(Exception):
    """An upstream fetch failed; the message is safe to log (no bodies, no credentials)."""


def system_ssl_context() -> ssl.SSLContext:
    """The system trust store, as OpenSSL finds it (SSL_CERT_FILE/SSL_CERT_DIR included)."""
    return ssl.create_default_context()


def make_client(timeout: float = 10.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=system_ssl_context(),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


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
    try:
        async with client.stream("GET", url, headers=headers, timeout=per_request) as response:
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            body = await read_capped(response, limit)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        # InvalidURL and ValueError (e.g. IDNA's UnicodeError) come from a malformed URL,
        # which a discovery document controls; they are fetch failures, not crashes.
        raise FetchError(exc.__class__.__name__) from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError("response is not JSON") from None
