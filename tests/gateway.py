"""Running gateways for tests: in-process over real TLS, or as an `exchanger serve` process."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from exchanger.app import create_app
from exchanger.config.load import load_config
from tests.fakes.issuer import AUDIENCE
from tests.fakes.tls import TestCA
from tests.servers import loopback_socket, serve_in_thread

#: Canary credentials: tests grep every captured log for them.
REGISTRY_PASSWORD = "canary-registry-password-7d41c9"
NPM_TOKEN = "canary-npm-token-0b3e55"

BASE_CONFIG = """\
issuers:
  - issuer: {issuer}
    audiences: ["{audience}"]
secrets:
  registry:
    username: {{value: ci-bot}}
    password: {{value: {password}}}
  npm-publish:
    token: {{value: {npm}}}
policies:
  - name: registry-from-main
    claims:
      repository_owner_id: "65"
      repository_id: "74"
      ref: ["refs/heads/main", "match:refs/tags/v[0-9]+"]
    grants:
      secrets: [registry]
  - name: npm-for-releases
    claims:
      repository_owner_id: "65"
      repository_id: 74
      ref: "match:refs/tags/v[0-9]+"
    grants:
      secrets: ["match:npm-.*"]
  - name: no-pull-requests
    effect: deny
    claims:
      event_name: [pull_request, pull_request_target]
"""


def write_config(directory: Path, issuer: str, extra: str = "", body: str | None = None) -> Path:
    """The base test config (or `body`) for `issuer`, plus `extra` YAML appended."""
    text = body if body is not None else BASE_CONFIG
    text = text.format(issuer=issuer, audience=AUDIENCE, password=REGISTRY_PASSWORD, npm=NPM_TOKEN)
    path = directory / "exchanger.yaml"
    path.write_text(text + textwrap.dedent(extra), encoding="utf-8")
    return path


@dataclass
class Gateway:
    url: str
    ca: TestCA
    config_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl_context(self.ca), timeout=10)


def post(gateway: Gateway, path: str, token: str | None, body: Any = None) -> httpx.Response:
    """POST `body` as JSON with `token` as the bearer (none when `token` is None)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with gateway.client() as client:
        return client.post(path, json=body, headers=headers)


def metrics_text(gateway: Gateway) -> str:
    with gateway.client() as client:
        return client.get("/metrics").text


def ssl_context(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.ca_file))


def wait_for(condition: Callable[[], bool], what: str = "condition", timeout: float = 15.0) -> None:
    """Poll a condition the test can observe until it holds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        time.sleep(0.02)


def wait_ready(client: httpx.Client, timeout: float = 15.0) -> None:
    """Poll /readyz until the gateway has its issuers' keys."""

    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, "gateway readiness", timeout)


@contextmanager
def running_gateway(config_path: Path, ca: TestCA, *, ready: bool = True) -> Iterator[Gateway]:
    """The gateway app in this process, served by uvicorn over TLS on loopback."""
    app = create_app(load_config(config_path))
    tls = {"ssl_certfile": str(ca.cert_file), "ssl_keyfile": str(ca.key_file)}
    with serve_in_thread(app, lifespan="on", **tls) as address:
        gateway = Gateway(url=f"https://{address}", ca=ca, config_path=config_path)
        if ready:
            with gateway.client() as client:
                wait_ready(client)
        yield gateway


@dataclass
class GatewayProcess(Gateway):
    process: subprocess.Popen[str]

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, wait, and return (exit code, stdout, stderr)."""
        self.process.terminate()
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, err


@contextmanager
def gateway_process(config_path: Path, ca: TestCA, *args: str) -> Iterator[GatewayProcess]:
    """`exchanger serve` as a real process, over TLS, trusting the test CA."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "SSL_CERT_FILE": str(ca.ca_file), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "exchanger", "serve", "--config", str(config_path),
        "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert", str(ca.cert_file), "--tls-key", str(ca.key_file), *args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    gateway = GatewayProcess(
        url=f"https://127.0.0.1:{port}", ca=ca, config_path=config_path, process=process
    )
    try:
        with gateway.client() as client:
            wait_ready(client, timeout=30)
        yield gateway
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


PAT = "ghp_canaryPersonalAccessToken0000000000000"
APP_ID = 12345
INSTALLATION_ID = 4242

GITHUB_POLICIES = """\
- name: runners-for-repo
  claims:
    repository_owner_id: "65"
    repository_id: "74"
  grants:
    runner:
      scopes: ["${repository}", "octo-org", "enterprise:octo-ent"]
      actions: [register, remove, jitconfig]
      runner_groups: [ci, gpu]
      labels: [self-hosted, linux, x64]
    installation:
      repositories: ["${repository}", "octo-org/docs"]
      permissions: {contents: read, pull_requests: write, issues: read}
- name: installation-everything-for-admins
  claims:
    repository_owner_id: "65"
    repository_id: "99"
  grants:
    installation:
      repositories: "*"
      permissions: {contents: read}
"""


def write_github_config(
    directory: Path,
    issuer: str,
    api_url: str,
    *,
    mode: str,
    extra: str = "",
    installation_id: int | None = None,
    policies: str = "",
    key: str | None = None,
) -> Path:
    """The base config plus a `github:` section in App or PAT mode and GitHub policies.

    `installation_id` goes into `github.app`; `policies` (a YAML list) is appended to
    GITHUB_POLICIES; `key` (YAML such as `kms: {key_id: …}`) replaces the App's
    `private_key: {file: app.pem}`.
    """
    policy_text = GITHUB_POLICIES + textwrap.dedent(policies)
    (directory / "github-policies.yaml").write_text(policy_text, encoding="utf-8")
    if mode == "app":
        app_key = textwrap.dedent(key or "private_key: {file: app.pem}").strip("\n")
        credential = f"  app:\n    id: {APP_ID}\n" + textwrap.indent(app_key, "    ") + "\n"
        if installation_id is not None:
            credential += f"    installation_id: {installation_id}\n"
    else:
        credential = f"  token: {{value: {PAT}}}\n"
    section = (
        f"github:\n  api_url: {api_url}\n  timeout_seconds: 2\n{credential}"
        "policy_files: [github-policies.yaml]\n"
    )
    return write_config(directory, issuer, section + textwrap.dedent(extra))


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (labels in any order), 0 when absent."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric == name and set(filter(None, rest.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0
