"""Outbound failures in words: what an operator setting up a private CA or a proxy reads."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from exchanger.http import FetchError, describe, get_json
from tests.fakes.tls import TestCA, serve_tls
from tests.servers import loopback_socket


async def _ok(request: object) -> JSONResponse:
    return JSONResponse({"ok": True})


APP = Starlette(routes=[Route("/doc", _ok)])


def fetch(url: str, ca_file: Path, timeout: float = 5.0) -> str:
    """The FetchError text of one GET, through a client trusting `ca_file` only."""

    async def attempt() -> str:
        context = ssl.create_default_context(cafile=str(ca_file))
        async with httpx.AsyncClient(verify=context, trust_env=False) as client:
            with pytest.raises(FetchError) as failure:
                await get_json(client, url, timeout=timeout)
        return str(failure.value)

    return asyncio.run(attempt())


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("other-ca"))


def test_an_untrusted_certificate_says_so(ca: TestCA, other_ca: TestCA) -> None:
    with serve_tls(APP, other_ca) as server:
        text = fetch(f"{server.url}/doc", ca.ca_file)
    assert text.startswith("TLS: certificate verify failed (unable to get local issuer")
    assert f"({server.url}/doc)" in text


def test_a_certificate_for_another_name_says_so(tmp_path: Path) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("other.test")
    ca_file, chain, key = tmp_path / "ca.pem", tmp_path / "chain.pem", tmp_path / "key.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    wrong_name = TestCA(ca=authority, ca_file=ca_file, cert_file=chain, key_file=key)
    with serve_tls(APP, wrong_name) as server:
        text = fetch(f"{server.url}/doc", ca_file)
    assert text.startswith("TLS: certificate verify failed (IP address mismatch")


def test_a_closed_port_is_connection_refused(ca: TestCA) -> None:
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()  # bound and released: nothing listens there
    assert fetch(f"https://127.0.0.1:{port}/doc", ca.ca_file).startswith("connection refused")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that accepts and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_a_silent_peer_is_a_timeout(ca: TestCA, silent_port: int) -> None:
    text = fetch(f"https://127.0.0.1:{silent_port}/doc", ca.ca_file, timeout=0.3)
    assert text.startswith("timed out connecting")  # the TLS handshake never completes


def test_describe_falls_back_to_the_class_name() -> None:
    assert describe(httpx.UnsupportedProtocol("x")) == "UnsupportedProtocol"
