"""GitHub's REST API over the process's one HTTP client.

Every call sends GitHub's media type, API version and a User-Agent, reads at
most 1 MiB, and maps failures to the gateway's errors in one place:

- 403/429 with `x-ratelimit-remaining: 0` or `retry-after` → 429 `rate_limited`
- 409 → 409 `conflict` (a JIT runner name already taken)
- 502/503/504, connect errors, timeouts → 503 `upstream_unavailable`
- any other error status → 502 `upstream_error`, naming GitHub's status and
  message with anything credential-shaped scrubbed out

A POST that may have minted something is never retried; a GET is retried
once, with jitter, after a transport error or a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import re2

from exchanger import metrics, tracing
from exchanger.errors import Conflict, RateLimited, UpstreamError, UpstreamUnavailable
from exchanger.http import FetchError, describe, read_capped

log = logging.getLogger("exchanger.github")

API_VERSION = "2022-11-28"
MEDIA_TYPE = "application/vnd.github+json"
UNAVAILABLE_RETRY_AFTER = 5
DEFAULT_RATE_LIMIT_WAIT = 60
# Anything credential-shaped never reaches a message: GitHub tokens, JWTs, PEM
# blocks (from the marker on), and any long base64-looking run.
_CREDENTIAL = re2.compile(
    r"gh[pousr]_[A-Za-z0-9_.\-]+|github_pat_[A-Za-z0-9_]+|eyJ[A-Za-z0-9_.\-]+"
    r"|-----BEGIN[\s\S]*|[A-Za-z0-9+/=_\-]{32,}"
)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: httpx.Headers


class GitHubClient:
    """Authenticated calls to one GitHub API root (github.com or GHES `/api/v3`)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_url: str,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.api_url = api_url.rstrip("/")
        self._timeout = timeout
        self._clock = clock

    async def post(
        self, path: str, credential: str, body: Mapping[str, Any] | None = None
    ) -> Reply:
        """POST once: whatever it may have minted must not be minted twice."""
        return await self._send("POST", path, credential, body)

    async def delete(self, path: str, credential: str, *, gone_ok: bool = False) -> Reply:
        """DELETE once (GitHub answers 204): revoke a token, remove a runner.

        With `gone_ok`, GitHub's 401 (a token already revoked or expired) counts as done.
        """
        return await self._send("DELETE", path, credential, None, accept=(401,) if gone_ok else ())

    async def get(self, path: str, credential: str, *, allow_404: bool = False) -> Reply:
        """GET, retried once with jitter after a transport error or a 5xx."""
        accept = (404,) if allow_404 else ()
        try:
            return await self._send("GET", path, credential, None, accept=accept)
        except (UpstreamUnavailable, UpstreamError) as exc:
            if isinstance(exc, UpstreamError) and not exc.retryable:
                raise
            await asyncio.sleep(random.uniform(0.05, 0.25))  # noqa: S311 - jitter, not crypto
            return await self._send("GET", path, credential, None, accept=accept)

    async def _send(
        self,
        method: str,
        path: str,
        credential: str,
        body: Mapping[str, Any] | None,
        *,
        accept: tuple[int, ...] = (),
    ) -> Reply:
        """One request; statuses in `accept` are answers, not failures."""
        url = path if path.startswith(self.api_url + "/") else f"{self.api_url}{path}"
        headers = {
            "Accept": MEDIA_TYPE,
            "X-GitHub-Api-Version": API_VERSION,
            "Authorization": f"Bearer {credential}",
        }
        operation = f"{method} {_template(path)}"
        with tracing.span("github", operation=operation) as trace:
            try:
                async with self._client.stream(
                    method, url, headers=headers, json=body, timeout=self._timeout
                ) as response:
                    trace.set_attribute("status", response.status_code)
                    raw = await read_capped(response)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                metrics.UPSTREAM.labels(operation, exc.__class__.__name__).inc()
                log.warning("github %s to %s failed: %s", operation, self.api_url, describe(exc))
                raise UpstreamUnavailable(
                    "GitHub is unreachable or timed out", retry_after=UNAVAILABLE_RETRY_AFTER
                ) from None
            except FetchError as exc:
                raise UpstreamError(f"GitHub's answer was refused: {exc}") from None
        metrics.UPSTREAM.labels(operation, str(response.status_code)).inc()
        reply = Reply(response.status_code, _json(raw), response.headers)
        if reply.status < 300 or reply.status in accept:
            return reply
        raise self._failure(operation, reply)

    def _failure(self, operation: str, reply: Reply) -> Exception:
        status, headers = reply.status, reply.headers
        message = scrub(_message(reply.body))
        request_id = escape(headers.get("x-github-request-id", "-")[:64])
        log.warning(
            "github %s answered %d (request id %s): %s", operation, status, request_id, message
        )
        if status in (403, 429) and (
            headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers
        ):
            return RateLimited(
                "GitHub's rate limit was reached", retry_after=self._rate_limit_wait(headers)
            )
        if status == 409:
            return Conflict(f"GitHub refused: {message}")
        if status in (502, 503, 504):
            return UpstreamUnavailable(
                f"GitHub answered {status}", retry_after=_retry_after(headers)
            )
        error = UpstreamError(f"GitHub answered {status}: {message}")
        error.retryable = status >= 500
        return error

    def _rate_limit_wait(self, headers: httpx.Headers) -> int:
        """GitHub's documented order: retry-after, then x-ratelimit-reset, then a minute."""
        retry_after = headers.get("retry-after", "")
        if retry_after.isdigit():
            return max(1, int(retry_after))
        reset = headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            return max(1, int(reset) - int(self._clock()))
        return DEFAULT_RATE_LIMIT_WAIT


def scrub(text: str) -> str:
    """GitHub's message, shortened, credential-shaped text removed, control characters escaped.

    GitHub echoes caller input (a JIT runner's name) in its messages: escaped, a
    newline in it cannot start a forged line in the log.
    """
    cleaned: str = _CREDENTIAL.sub("[redacted]", text)
    return escape(cleaned[:300])


def escape(text: str) -> str:
    """Control and line-breaking characters as `\\uXXXX`: one log line stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _retry_after(headers: httpx.Headers) -> int:
    value = headers.get("retry-after", "")
    return max(1, int(value)) if value.isdigit() else UNAVAILABLE_RETRY_AFTER


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None


def _message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return "no message"


def _template(path: str) -> str:
    """The path with its variable segments elided, for logs and metrics labels."""
    head = path.split("?", 1)[0].split("/")
    keep = {
        "repos",
        "orgs",
        "users",
        "enterprises",
        "app",
        "installations",
        "actions",
        "runners",
        "runner-groups",
        "registration-token",
        "remove-token",
        "generate-jitconfig",
        "access_tokens",
        "installation",
    }
    return "/".join(p if p in keep or not p else "{}" for p in head)
