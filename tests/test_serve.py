"""`exchanger serve` as a real process: logs carry no credential, SIGTERM exits cleanly."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.github import AppCredentials, FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import (
    NPM_TOKEN,
    REGISTRY_PASSWORD,
    gateway_process,
    write_config,
    write_github_config,
)


def test_logs_never_carry_tokens_or_secrets(
    issuer: FakeIssuer, ca: TestCA, config_dir: Path
) -> None:
    path = write_config(config_dir, issuer.url)
    good = issuer.mint()
    release = issuer.mint(ref="refs/tags/v9")
    forged = issuer.forge_hmac()
    expired = issuer.mint(exp=1, iat=0, nbf=0)
    tokens = [good, release, forged, expired, issuer.mint(aud="https://elsewhere.test")]
    with gateway_process(path, ca) as gateway:
        with gateway.client() as client:
            for token in tokens:
                headers = {"Authorization": f"Bearer {token}", "X-Request-Id": "leak-check"}
                for target in ("/secrets/registry", "/secrets/registry/password",
                               "/secrets/npm-publish/token", "/secrets/unknown"):  # fmt: skip
                    client.get(target, headers=headers)
                client.get(f"/secrets/registry?token={token}", headers=headers)
            assert client.get("/secrets/registry/password", headers={
                "Authorization": f"Bearer {good}"}).text == REGISTRY_PASSWORD  # fmt: skip
        code, out, err = gateway.stop()
    assert code == 0
    logs = out + err
    for secret in (REGISTRY_PASSWORD, NPM_TOKEN):
        assert secret not in logs
    for token in tokens:
        _header, payload, signature = token.split(".")
        assert signature not in logs
        assert payload not in logs
    audit = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(audit) == len(tokens) * 5 + 1
    assert {line["event"] for line in audit} == {"exchange"}
    assert {line["status"] for line in audit} >= {200, 400, 401, 403}


def test_sigterm_exits_zero(issuer: FakeIssuer, ca: TestCA, config_dir: Path) -> None:
    path = write_config(config_dir, issuer.url)
    with gateway_process(path, ca) as gateway:
        with gateway.client() as client:
            assert client.get("/healthz").status_code == 200
        code, _out, err = gateway.stop()
    assert code == 0, err


def test_github_credentials_never_reach_logs(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    config_dir: Path,
) -> None:
    (config_dir / "app.pem").write_text(app_credentials.pem_pkcs1, encoding="utf-8")
    assert github.api_url is not None
    path = write_github_config(config_dir, issuer.url, github.api_url, mode="app")
    answers: list[str] = []
    with gateway_process(path, ca) as gateway:
        with gateway.client() as client:
            headers = {"Authorization": f"Bearer {issuer.mint()}"}
            requests = [
                ("/register", {}),
                ("/remove", {}),
                ("/jitconfig", {}),
                ("/token", {}),
                ("/token", {"permissions": {"x": "read"}}),
            ]
            for endpoint, body in requests:
                answers.append(client.post(endpoint, json=body, headers=headers).text)
            echo = {"message": f"echo {app_credentials.pem_pkcs1[:60]}", "documentation_url": "x"}
            github.fail("apps/create-installation-access-token", 422, echo)
            answers.append(client.post("/token", json={}, headers=headers).text)
        code, out, err = gateway.stop()
    assert code == 0
    minted = github.minted_secrets()
    assert len(minted) >= 5  # PAT, two PEM forms, runner tokens, JIT config, installation token
    logs = out + err
    for secret in minted:
        for line in secret.strip().splitlines():
            if len(line) > 20 and "-----" not in line:
                assert line not in logs
    assert all("PRIVATE KEY" not in answer for answer in answers)
