"""Shared fixtures: the test CA, the fake issuer, and gateways that trust them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.fakes.github import AppCredentials, FakeGitHub, run_fake_github
from tests.fakes.issuer import FakeIssuer, run_issuer
from tests.fakes.tls import TestCA
from tests.gateway import (
    APP_ID,
    INSTALLATION_ID,
    PAT,
    Gateway,
    running_gateway,
    write_config,
    write_github_config,
)

_E2E = Path(__file__).parent / "e2e"
#: Modules that start `exchanger serve` processes or real servers of other programs.
_E2E_MODULES = frozenset({"test_serve.py", "test_proxy.py", "test_serving.py"})
_SLOW_MODULES = frozenset({"test_fuzz.py", "test_faults.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tiers by where a test lives: `pytest -m "not e2e and not slow"` is the fast one."""
    for item in items:
        path = item.path
        if _E2E in path.parents or path.name in _E2E_MODULES:
            item.add_marker(pytest.mark.e2e)
        if path.name in _SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def app_credentials() -> AppCredentials:
    return AppCredentials.generate(APP_ID)


@pytest.fixture(scope="session")
def _github_server(ca: TestCA, app_credentials: AppCredentials) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(
        app=app_credentials,
        pat=PAT,
        installations={"octo-org": INSTALLATION_ID},
        runner_groups={"octo-org": [(2, "ci"), (3, "gpu"), (4, "other")]},
    )
    with run_fake_github(ca, fake) as (running, _server):
        yield running


@pytest.fixture
def github(_github_server: FakeGitHub) -> Iterator[FakeGitHub]:
    """The fake GitHub, cleared of records and faults around each test."""
    _github_server.reset()
    yield _github_server
    assert _github_server.violations == [], "the gateway sent GitHub something off-spec"
    _github_server.reset()


@pytest.fixture(scope="session", params=["app", "pat"])
def mode(request: pytest.FixtureRequest) -> str:
    """GitHub credential mode: a GitHub App key, or a personal access token."""
    return str(request.param)


@pytest.fixture(scope="session")
def _start_github_gateway(
    _issuer_server: FakeIssuer,
    _github_server: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., AbstractContextManager[Gateway]]:
    """Starts a gateway on the GitHub test config in a mode ("app" or "pat"), plus `extra`."""

    @contextmanager
    def start(mode: str, extra: str = "") -> Iterator[Gateway]:
        directory = tmp_path_factory.mktemp(f"{mode}-gateway")
        pem = app_credentials.pem_pkcs1.replace("\n", "\r\n")  # GitHub's format, CRLF ok
        (directory / "app.pem").write_text(pem, encoding="utf-8")
        assert _github_server.api_url is not None
        api_url = _github_server.api_url
        path = write_github_config(directory, _issuer_server.url, api_url, mode=mode, extra=extra)
        with running_gateway(path, ca) as gateway:
            yield gateway

    return start


@pytest.fixture(scope="session")
def _mode_gateway(
    mode: str, _start_github_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> Iterator[Gateway]:
    with _start_github_gateway(mode) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def app_gateway(
    _start_github_gateway: Callable[..., AbstractContextManager[Gateway]],
) -> Iterator[Gateway]:
    """A gateway in GitHub App mode (it serves every operation, /token included)."""
    with _start_github_gateway("app") as gateway:
        yield gateway


@pytest.fixture
def github_gateway(_mode_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer) -> Gateway:
    """A gateway with GitHub configured, once with an App key and once with a PAT."""
    return _mode_gateway
