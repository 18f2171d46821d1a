"""A test certificate authority and a uvicorn server on a background thread.

Every fake (issuer, GitHub) is a real ASGI app served over real TLS on
loopback, so the gateway's HTTP client, certificate checks and timeouts are
exercised exactly as in production.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme
import uvicorn
from starlette.types import ASGIApp


@dataclass(frozen=True)
class TestCA:
    """A throw-away CA and one server certificate for 127.0.0.1/localhost."""

    __test__ = False  # not a pytest test class, despite the name

    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path) -> TestCA:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost", "::1")
        ca_file = directory / "ca.pem"
        cert_file = directory / "server.pem"
        key_file = directory / "server.key"
        ca.cert_pem.write_to_path(str(ca_file))
        server.private_key_pem.write_to_path(str(key_file))
        with cert_file.open("wb") as out:
            for blob in server.cert_chain_pems:
                out.write(blob.bytes())
        return cls(ca=ca, ca_file=ca_file, cert_file=cert_file, key_file=key_file)


def free_socket() -> socket.socket:
    """A loopback socket bound to a free port, ready to hand to uvicorn."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class RunningServer:
    """Where a background server listens, and its event loop for scheduling."""

    url: str
    port: int
    loop: asyncio.AbstractEventLoop


class _ThreadServer(uvicorn.Server):
    """A uvicorn server that says when it listens (uvicorn skips signals off the main thread)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


@contextmanager
def serve_tls(app: ASGIApp, ca: TestCA, *, lifespan: str = "off") -> Iterator[RunningServer]:
    """Serve `app` over HTTPS on 127.0.0.1 in a daemon thread until the block exits."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        ssl_certfile=str(ca.cert_file),
        ssl_keyfile=str(ca.key_file),
        log_level="warning",
        lifespan=lifespan,  # type: ignore[arg-type]
        timeout_graceful_shutdown=1,
    )
    server = _ThreadServer(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True
    )
    thread.start()
    if not server.ready.wait(timeout=10):
        raise RuntimeError("test server did not start")
    try:
        yield RunningServer(url=f"https://127.0.0.1:{port}", port=port, loop=loop)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        loop.close()
        sock.close()
