"""Shared fixtures: the test CA, the fake issuer, and gateways that trust them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.issuer import FakeIssuer, run_issuer
from tests.fakes.tls import TestCA
from tests.gateway import Gateway, running_gateway, write_config


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCA]:
    """The test CA; this process's outbound TLS (the gateway's) trusts it only."""
    test_ca = TestCA.create(tmp_path_factory.mktemp("ca"))
    previous = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(test_ca.ca_file)
    yield test_ca
    if previous is None:
        os.environ.pop("SSL_CERT_FILE", None)
    else:
        os.environ["SSL_CERT_FILE"] = previous


@pytest.fixture(scope="session")
def _issuer_server(ca: TestCA) -> Iterator[FakeIssuer]:
    with run_issuer(ca) as (issuer, _server):
        yield issuer


@pytest.fixture
def issuer(_issuer_server: FakeIssuer) -> Iterator[FakeIssuer]:
    """The fake issuer, reset to its published keys and healthy after each test."""
    _issuer_server.reset()
    yield _issuer_server
    _issuer_server.reset()


@pytest.fixture(scope="session")
def _session_gateway(
    _issuer_server: FakeIssuer, ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    path = write_config(tmp_path_factory.mktemp("gateway"), _issuer_server.url)
    with running_gateway(path, ca) as gateway:
        yield gateway


@pytest.fixture
def gateway(_session_gateway: Gateway, issuer: FakeIssuer) -> Gateway:
    """A running gateway on the base test config (shared by the session)."""
    return _session_gateway


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path
