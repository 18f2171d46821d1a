"""The docker/login-action path without a Docker engine: credentials from the gateway's
`/secrets/registry/*`, `skopeo login` (Debian) to a real CNCF Distribution registry
(Debian's docker-registry) with htpasswd auth, over TLS from the test CA."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import README_AUDIENCE, Registry, base_env, require_command
from tests.fakes.issuer import FakeIssuer
from tests.gateway import REGISTRY_PASSWORD, Gateway


def fetch_secret_field(gateway: Gateway, token: str, field: str) -> str:
    with gateway.client() as client:
        response = client.get(
            f"/secrets/registry/{field}", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def skopeo_login(
    registry: Registry, username: str, password: str, authfile: Path, *, trust_ca: bool = True
) -> subprocess.CompletedProcess[str]:
    """`skopeo login --password-stdin`, as docker/login-action pipes the password to
    `docker login`; its credentials go to `authfile` only."""
    command = [
        require_command("skopeo"), "login", "--authfile", str(authfile),
        "--username", username, "--password-stdin",
    ]  # fmt: skip
    if trust_ca:
        command += ["--cert-dir", str(registry.cert_dir)]
    command.append(registry.host)
    return subprocess.run(
        command,
        input=password,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_skopeo_login_with_the_credentials_the_gateway_hands_out(
    e2e_gateway: Gateway, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    token = issuer.mint(aud=README_AUDIENCE)
    username = fetch_secret_field(e2e_gateway, token, "username")
    password = fetch_secret_field(e2e_gateway, token, "password")
    assert password == REGISTRY_PASSWORD  # the raw value: no quotes, no trailing newline

    good = tmp_path / "auth.json"
    login = skopeo_login(registry, username, password, good)
    assert login.returncode == 0, login.stdout + login.stderr
    assert "Login Succeeded" in login.stdout
    saved = json.loads(good.read_text(encoding="utf-8"))["auths"][registry.host]["auth"]
    assert base64.b64decode(saved).decode() == f"{username}:{password}"
    assert 'msg="authorized request"' in registry.log.read_text()

    # The registry really checks the password: a wrong one is refused, and nothing is saved.
    bad = tmp_path / "bad-auth.json"
    login = skopeo_login(registry, username, password + "-wrong", bad)
    assert login.returncode != 0
    assert "invalid username/password" in login.stderr, login.stderr
    assert 'error authenticating user \\"ci-bot\\"' in registry.log.read_text()
    assert not bad.exists() or registry.host not in bad.read_text(encoding="utf-8")
    assert password not in login.stdout + login.stderr


def test_skopeo_verifies_the_registry_certificate(
    e2e_gateway: Gateway, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    """Without the test CA the login fails on the certificate: TLS is really checked."""
    token = issuer.mint(aud=README_AUDIENCE)
    password = fetch_secret_field(e2e_gateway, token, "password")
    login = skopeo_login(registry, "ci-bot", password, tmp_path / "auth.json", trust_ca=False)
    assert login.returncode != 0
    assert "certificate" in login.stderr, login.stderr
