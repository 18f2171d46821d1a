"""`exchanger serve` as a real process: logs carry no credential, SIGTERM exits cleanly."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from exchanger import cli
from tests.fakes.github import AppCredentials, FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import (
    NPM_TOKEN,
    REGISTRY_PASSWORD,
    gateway_process,
    sample,
    wait_for,
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


def _reloads(client: httpx.Client, result: str) -> float:
    text = client.get("/metrics").text
    return sample(text, "exchanger_config_reloads_total", result=result)


def test_sighup_reloads_config_and_keeps_serving_through_a_bad_one(
    issuer: FakeIssuer, ca: TestCA, config_dir: Path
) -> None:
    path = write_config(config_dir, issuer.url)
    token = {"Authorization": f"Bearer {issuer.mint()}"}
    with gateway_process(path, ca) as gateway, gateway.client() as client:
        assert client.get("/secrets/registry/password", headers=token).text == REGISTRY_PASSWORD
        path.write_text(path.read_text().replace(REGISTRY_PASSWORD, "rotated-password-1"))
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: _reloads(client, "ok") == 1, "reload")
        assert client.get("/secrets/registry/password", headers=token).text == "rotated-password-1"

        good = path.read_text()
        path.write_text(good + "policies: [oops\n")
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: _reloads(client, "invalid") == 1, "refused reload")
        assert client.get("/secrets/registry/password", headers=token).text == "rotated-password-1"
        assert client.get("/readyz").status_code == 200
        client.close()
        code, _out, err = gateway.stop()
    assert code == 0
    assert f"reload refused, keeping the current config: {path}:" in err
    assert "rotated-password-1" not in err


def test_sigterm_lets_requests_in_flight_finish(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    config_dir: Path,
) -> None:
    assert github.api_url is not None
    path = write_github_config(config_dir, issuer.url, github.api_url, mode="pat")
    github.delay("actions/create-registration-token-for-repo", 1.0, times=None)
    headers = {"Authorization": f"Bearer {issuer.mint()}"}
    with gateway_process(path, ca) as gateway:
        with gateway.client() as client, ThreadPoolExecutor(max_workers=5) as pool:
            pending = [pool.submit(client.post, "/register", headers=headers) for _ in range(5)]
            wait_for(lambda: len(github.requests) == 5, "requests reached GitHub")
            gateway.process.send_signal(signal.SIGTERM)
            answers = [future.result(timeout=30) for future in pending]
        code, _out, _err = gateway.stop()
    assert [a.status_code for a in answers] == [200] * 5
    assert code == 0


def test_regression_single_use_without_redis_refuses_several_workers(
    tmp_path: Path, issuer: FakeIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    """With two workers and per-process claims, one token could be used once per worker."""
    extra = """\
    rate_limit: {per_minute: 60, burst: 5}
    """
    path = write_config(tmp_path, issuer.url, extra)
    text = path.read_text(encoding="utf-8").replace(
        "  - name: registry-from-main\n", "  - name: registry-from-main\n    single_use: true\n"
    )
    path.write_text(text, encoding="utf-8")
    assert cli.main(["serve", "--config", str(path), "--workers", "2", "--port", "1"]) == 2
    assert "single_use policies need state.redis_url" in capsys.readouterr().err
