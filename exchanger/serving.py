"""What a hostile client may cost: capped request headers, deadlines, a concurrency cap.

uvicorn's httptools parser buffers request headers without limit and waits for
them forever, so `BoundedHttpTools` counts the bytes of each request's head
and arms a deadline for it:

- headers over `max_header_bytes` → 431, connection closed (at most one read
  buffer more is parsed: the parser cannot say where in a chunk the head ends);
- a connection that sends no complete head within `header_timeout_seconds` of
  connecting, or of a request's first byte → 408 (or a silent close when
  nothing was sent), connection closed;
- the body's deadline (`body_timeout_seconds`) is enforced where the body is
  read (`pipeline`), idle keep-alive by uvicorn's `timeout_keep_alive`, and
  `limit_concurrency` answers 503 beyond `max_concurrency`.

Workers may be separate processes that import this module afresh, so the
limits travel in the environment (`serve` sets them from the config).
"""

from __future__ import annotations

import asyncio
import json
import os
from secrets import token_hex
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from exchanger.config.model import ServerConfig
from exchanger.errors import ExchangerError, HeadersTooLarge, RequestTimeout

_ENV = "EXCHANGER_SERVER_LIMITS"


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """The `uvicorn.run` options that bound what one client costs; also exports the limits."""
    limits = {
        "max_header_bytes": server.max_header_bytes,
        "header_timeout": server.header_timeout_seconds,
    }
    os.environ[_ENV] = json.dumps(limits)
    return {
        "http": BoundedHttpTools,
        "timeout_keep_alive": server.keepalive_timeout_seconds,
        "limit_concurrency": server.max_concurrency,
    }


def _limits() -> tuple[int, float]:
    raw = json.loads(os.environ.get(_ENV) or "{}")
    defaults = ServerConfig()
    return (
        int(raw.get("max_header_bytes", defaults.max_header_bytes)),
        float(raw.get("header_timeout", defaults.header_timeout_seconds)),
    )


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on request heads and a deadline for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head, self._head_timeout = _limits()
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_timer is None:
            self._arm()
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._refuse(HeadersTooLarge, "Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request's head, if any

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(RequestTimeout, "Request Timeout")
        else:
            self.transport.close()  # idle: nothing to answer

    def _refuse(self, error: type[ExchangerError], reason: str) -> None:
        """Answer with `error` as the SPEC's JSON and close the connection."""
        if self.transport.is_closing():
            return
        body = json.dumps({"error": error.code, "message": error.default_message}).encode()
        head = (
            f"HTTP/1.1 {error.status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\ncache-control: no-store\r\n"
            f"x-request-id: {token_hex(16)}\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
        self._in_head = False
        self._disarm()
