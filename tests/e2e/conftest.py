"""End-to-end fixtures: a gateway set up like the README's examples, the Actions runtime's
token service, a real container registry, and the tools the clients need.

The clients under test (`@actions/core` from npm, Debian's `docker-registry` and `skopeo`,
`curl`, `htpasswd`) are installed by `scripts/install-test-deps.sh`. A missing one fails
the test that needs it with a message naming that script: these tests never skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.actions_runtime import ActionsRuntime, run_actions_runtime
from tests.fakes.github import AppCredentials, FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import APP_ID, REGISTRY_PASSWORD, Gateway, running_gateway, ssl_context
from tests.servers import loopback_socket

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
NODE_DIR = Path(__file__).resolve().parent / "node"
INSTALL = "scripts/install-test-deps.sh"

#: The audience and gateway URL of the README's examples; the e2e gateway accepts it.
README_AUDIENCE = "https://exchanger.example.com"
REGISTRY_USERNAME = "ci-bot"
#: The @actions/core version pinned in tests/e2e/node/package.json.
ACTIONS_CORE_VERSION = "3.0.1"


def require_command(name: str) -> str:
    """The path of `name`, or a test failure that says how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: run {INSTALL} (end-to-end tests never skip)")
    return path


def require_actions_core() -> None:
    """node and the pinned @actions/core in tests/e2e/node/node_modules, or a failure."""
    require_command("node")
    package = NODE_DIR / "node_modules" / "@actions" / "core" / "package.json"
    if not package.is_file():
        pytest.fail(f"@actions/core is not installed in {NODE_DIR}: run {INSTALL}")
    version = json.loads(package.read_text(encoding="utf-8"))["version"]
    if version != ACTIONS_CORE_VERSION:
        pytest.fail(
            f"@actions/core {version} installed, {ACTIONS_CORE_VERSION} pinned: run {INSTALL}"
        )


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for a client process: PATH and HOME, no proxies, no CA overrides,
    nothing of a surrounding GitHub Actions job (GITHUB_OUTPUT, ACTIONS_*…); plus `extra`."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update(extra)
    return env


# --- the gateway --------------------------------------------------------------------


def e2e_config(issuer: str, api_url: str) -> dict[str, object]:
    """The README's setup: its audience, the registry secret, runners and an App token."""
    return {
        "issuers": [{"issuer": issuer, "audiences": [README_AUDIENCE]}],
        "github": {
            "api_url": api_url,
            "timeout_seconds": 5,
            "app": {"id": APP_ID, "private_key": {"file": "app.pem"}},
        },
        "secrets": {
            "registry": {
                "username": {"value": REGISTRY_USERNAME},
                "password": {"value": REGISTRY_PASSWORD},
            }
        },
        "policies": [
            {
                "name": "registry-from-main",
                "claims": {
                    "repository_owner_id": "65",
                    "repository_id": "74",
                    "ref": "refs/heads/main",
                },
                "grants": {"secrets": ["registry"]},
            },
            {
                "name": "runners-and-docs",
                "claims": {"repository_owner_id": "65", "repository_id": "74"},
                "grants": {
                    "runner": {
                        "scopes": ["${repository}", "octo-org"],
                        "actions": ["register", "remove", "jitconfig"],
                        "labels": ["self-hosted", "linux", "x64"],
                    },
                    "installation": {
                        "repositories": ["octo-org/docs"],
                        "permissions": {"contents": "write"},
                    },
                },
            },
        ],
    }


@pytest.fixture(scope="session")
def _e2e_gateway(
    _issuer_server: FakeIssuer,
    _github_server: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("e2e-gateway")
    (directory / "app.pem").write_text(app_credentials.pem_pkcs8, encoding="utf-8")
    assert _github_server.api_url is not None
    config = e2e_config(_issuer_server.url, _github_server.api_url)
    path = directory / "exchanger.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with running_gateway(path, ca) as gateway:
        yield gateway


@pytest.fixture
def e2e_gateway(_e2e_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer) -> Gateway:
    """A gateway (App mode, the fake GitHub) accepting the README examples' audience."""
    return _e2e_gateway


# --- the Actions runtime's token service -------------------------------------------------


@pytest.fixture(scope="session")
def _actions_runtime(_issuer_server: FakeIssuer, ca: TestCA) -> Iterator[ActionsRuntime]:
    with run_actions_runtime(ca, _issuer_server) as runtime:
        yield runtime


@pytest.fixture
def actions_runtime(_actions_runtime: ActionsRuntime, issuer: FakeIssuer) -> ActionsRuntime:
    """The stand-in for ACTIONS_ID_TOKEN_REQUEST_URL, with no requests recorded yet."""
    _actions_runtime.reset()
    return _actions_runtime


# --- a container registry --------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """A running CNCF Distribution registry with htpasswd auth, over TLS from the test CA."""

    host: str  # 127.0.0.1:PORT, as a registry client names it
    cert_dir: Path  # the test CA as ca.crt: what `skopeo --cert-dir` wants
    log: Path


def _htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd entry (the only hash Distribution accepts), from apache2-utils."""
    htpasswd = require_command("htpasswd")
    result = subprocess.run(
        [htpasswd, "-n", "-i", "-B", username],
        input=password,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    line = result.stdout.strip()
    assert line.startswith(f"{username}:$2"), "htpasswd did not make a bcrypt entry"
    return line


def _wait_for_registry(url: str, process: subprocess.Popen[bytes], log: Path, ca: TestCA) -> None:
    """Poll /v2/ until it answers 401 (up, TLS working, auth on), with a deadline."""
    deadline = time.monotonic() + 20
    with httpx.Client(verify=ssl_context(ca), timeout=2) as client:
        while True:
            if process.poll() is not None:
                pytest.fail(f"docker-registry exited with {process.returncode}:\n{log.read_text()}")
            try:
                status = client.get(f"{url}/v2/").status_code
            except httpx.TransportError:
                status = None
            if status == 401:
                return
            if status is not None:
                pytest.fail(f"docker-registry answered /v2/ with {status}, not 401")
            if time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not answer in time:\n{log.read_text()}")
            time.sleep(0.02)


@pytest.fixture(scope="module")
def registry(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry on a free loopback port; stopped after the module's tests."""
    binary = require_command("docker-registry")
    directory = tmp_path_factory.mktemp("registry")
    (directory / "data").mkdir()
    cert_dir = directory / "certs.d"
    cert_dir.mkdir()
    shutil.copyfile(ca.ca_file, cert_dir / "ca.crt")
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(_htpasswd_line(REGISTRY_USERNAME, REGISTRY_PASSWORD) + "\n")
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": secrets.token_hex(16),
            "tls": {"certificate": str(ca.cert_file), "key": str(ca.key_file)},
        },
        "auth": {"htpasswd": {"realm": "exchanger-e2e", "path": str(htpasswd)}},
    }
    config_path = directory / "config.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = directory / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=base_env(),
        )
    try:
        _wait_for_registry(f"https://127.0.0.1:{port}", process, log, ca)
        yield Registry(host=f"127.0.0.1:{port}", cert_dir=cert_dir, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
