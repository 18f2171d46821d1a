"""A test certificate authority and a uvicorn server on a background thread.

Every fake (issuer, GitHub) is a real ASGI app served over real TLS on
loopback by the same thread server the demo uses, so the gateway's HTTP
client, certificate checks and timeouts are exercised exactly as in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme
from starlette.types import ASGIApp

from tests.servers import serve_in_thread


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


@dataclass
class RunningServer:
    """Where a background server listens."""

    url: str
    port: int


@contextmanager
def serve_tls(app: ASGIApp, ca: TestCA, *, lifespan: str = "off") -> Iterator[RunningServer]:
    """Serve `app` over HTTPS on 127.0.0.1 in a daemon thread until the block exits."""
    tls = {"ssl_certfile": str(ca.cert_file), "ssl_keyfile": str(ca.key_file)}
    with serve_in_thread(app, lifespan=lifespan, timeout_graceful_shutdown=1, **tls) as address:
        yield RunningServer(url=f"https://{address}", port=int(address.rpartition(":")[2]))
