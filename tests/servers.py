"""Servers on loopback for tests: an ASGI app served by uvicorn on a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class ThreadServer(uvicorn.Server):
    """A uvicorn server on a background thread that says when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def loopback_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1."""
    # IPPROTO_TCP (not 0) lets asyncio set TCP_NODELAY on accepted connections;
    # without it every response stalls ~40 ms between its headers and its body.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, **options: Any) -> Iterator[str]:
    """Serve `app` on a free loopback port until the block exits; yields host:port."""
    sock = loopback_socket()
    server = ThreadServer(uvicorn.Config(app, log_level="warning", **options))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True
    )
    thread.start()
    try:
        if not server.ready.wait(timeout=15):
            raise RuntimeError("server did not start")
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        loop.close()
        sock.close()
