"""Hostile clients cost bounded memory and time: `exchanger serve` against raw TLS sockets."""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import GatewayProcess, gateway_process, ssl_context, write_config

LIMITS = """\
server:
  max_header_bytes: 8192
  header_timeout_seconds: 1
  body_timeout_seconds: 1
  max_concurrency: 12
"""


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, _issuer_server: FakeIssuer, ca: TestCA
) -> Iterator[GatewayProcess]:
    path = write_config(tmp_path_factory.mktemp("serving"), _issuer_server.url, LIMITS)
    with gateway_process(path, ca) as gateway:
        yield gateway


def connect(gateway: GatewayProcess) -> ssl.SSLSocket:
    port = int(gateway.url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ssl_context(gateway.ca).wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(sock: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, ssl.SSLError):
        pass
    return b"".join(chunks)


def read_response(sock: ssl.SSLSocket) -> bytes:
    """One whole response: its head, then as many body bytes as content-length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def rss_kib(gateway: GatewayProcess) -> int:
    status = Path(f"/proc/{gateway.process.pid}/status").read_text(encoding="ascii")
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_normal_clients_are_unaffected_and_keep_alive_works(served: GatewayProcess) -> None:
    with connect(served) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert answer.endswith(b"\r\n\r\nok")


@pytest.mark.parametrize("size", [9000, 64 << 20], ids=["over-the-cap", "64-mib"])
def test_regression_oversized_headers_are_431_and_the_connection_closed(
    served: GatewayProcess, size: int
) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: ")
        try:
            for _ in range(0, size, 1 << 16):
                sock.sendall(b"a" * (1 << 16))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server stopped listening: what this test wants
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer
    assert b'"error":"headers_too_large"' in answer.replace(b" ", b"")


def test_ten_unterminated_30_mib_heads_keep_memory_bounded(served: GatewayProcess) -> None:
    before = rss_kib(served)
    sockets = [connect(served) for _ in range(5)] + [connect(served) for _ in range(5)]
    for sock in sockets:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: ")
    chunk = b"a" * (1 << 16)
    for sock in sockets:
        try:
            for _ in range((30 << 20) // len(chunk)):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
    after = rss_kib(served)
    for sock in sockets:
        sock.close()
    assert after - before < 20 * 1024, (before, after)


def test_an_idle_connection_is_closed_at_the_header_deadline(served: GatewayProcess) -> None:
    started = time.monotonic()
    with connect(served) as sock:
        assert read_all(sock) == b""  # closed without a word: nothing was asked
    assert time.monotonic() - started < 5


def test_a_trickled_head_is_408_at_its_deadline(served: GatewayProcess) -> None:
    """A byte every 0.3 s keeps the connection busy, but its head is due within 1 s."""
    with connect(served) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        for _ in range(20):  # at most 6 s of trickling
            readable, _, _ = select.select([sock], [], [], 0.3)  # paces the trickle
            if readable:
                break
            sock.sendall(b"a")
        answered = time.monotonic() - started
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert answered < 3


def test_a_trickled_body_is_408_at_its_deadline(served: GatewayProcess, issuer: FakeIssuer) -> None:
    token = issuer.mint().encode()
    with connect(served) as sock:
        sock.sendall(
            b"POST /token HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token + b"\r\nContent-Length: 40\r\n\r\n{"
        )
        started = time.monotonic()
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"error":"request_timeout"' in answer
    assert time.monotonic() - started < 5


def test_beyond_the_concurrency_cap_is_503(served: GatewayProcess) -> None:
    held = [connect(served) for _ in range(12)]
    try:
        with connect(served) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()
