"""HTTPS_PROXY and NO_PROXY: keys and GitHub fetched through a real CONNECT proxy (tinyproxy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.github import AppCredentials, FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.proxy import Proxy, run_tinyproxy
from tests.fakes.tls import TestCA
from tests.gateway import running_gateway, write_github_config

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with run_tinyproxy(tmp_path_factory.mktemp("proxy")) as running:
        yield running


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _exchange(
    tmp_path: Path,
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
) -> int:
    (tmp_path / "app.pem").write_text(app_credentials.pem_pkcs8, encoding="utf-8")
    assert github.api_url is not None
    path = write_github_config(tmp_path, issuer.url, github.api_url, mode="app")
    with running_gateway(path, ca) as gateway, gateway.client() as client:
        answer = client.post(
            "/token", json={}, headers={"Authorization": f"Bearer {issuer.mint()}"}
        )
    return answer.status_code


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/", 1)[0]


def test_keys_and_github_go_through_the_proxy_with_tls_intact(
    tmp_path: Path,
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    proxy: Proxy,
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("HTTPS_PROXY", proxy.url)
    assert _exchange(tmp_path, issuer, github, app_credentials, ca) == 200
    assert github.api_url is not None
    tunnels = proxy.connects()
    assert f"127.0.0.1:{_port(issuer.url)}" in tunnels  # discovery and JWKS
    assert f"127.0.0.1:{_port(github.api_url)}" in tunnels  # the App JWT and the token


def test_no_proxy_hosts_are_reached_directly(
    tmp_path: Path,
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    proxy: Proxy,
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("https_proxy", proxy.url)
    clean_environment.setenv("no_proxy", "localhost,127.0.0.1")
    assert _exchange(tmp_path, issuer, github, app_credentials, ca) == 200
    assert proxy.connects() == []


def test_without_proxy_variables_nothing_uses_the_proxy(
    tmp_path: Path,
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    proxy: Proxy,
    clean_environment: pytest.MonkeyPatch,
) -> None:
    assert _exchange(tmp_path, issuer, github, app_credentials, ca) == 200
    assert proxy.connects() == []
