"""The GitHub App key in AWS KMS: a real gateway signs its App JWTs with moto's KMS.

moto's own server (`python -m moto.server`) runs once for this module as a separate
process, serving HTTPS with the test CA's certificate (`--ssl-cert/--ssl-key`); the
gateway's boto3 client trusts that CA through `AWS_CA_BUNDLE`, the standard AWS setting,
and takes fake credentials from the environment through boto3's default chain. The only
private key of the App lives inside moto; the fake GitHub knows its public half only.
moto records every request it gets (`MOTO_ENABLE_RECORDING`), which is how the tests
count `Sign` and `GetPublicKey` calls without looking inside the gateway.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exchanger import cli, metrics
from exchanger.config.load import load_config
from exchanger.config.model import KmsKey
from exchanger.errors import ConfigError, UpstreamUnavailable
from exchanger.exchange.github.auth import AppCredentials as GatewayAppCredentials
from exchanger.exchange.github.signers.kms import KmsSigner
from exchanger.http import make_client
from exchanger.runtime import Gateway as RuntimeGateway
from exchanger.runtime import Runtime
from tests.fakes.github import AppCredentials, FakeGitHub, run_fake_github
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import (
    APP_ID,
    INSTALLATION_ID,
    Gateway,
    metrics_text,
    post,
    running_gateway,
    sample,
    ssl_context,
    wait_for,
    write_github_config,
)
from tests.keys import private_material, reachable
from tests.servers import loopback_socket

if TYPE_CHECKING:
    from types_boto3_kms.client import KMSClient
    from types_boto3_kms.literals import KeySpecType, KeyUsageTypeType

REGION = "eu-west-1"
#: The fake AWS secret; no log line or answer may carry it.
AWS_SECRET = "canary-aws-secret-3c9e51d0"
UNAVAILABLE = "the GitHub App's key (kms) cannot sign right now"
SIGNER_COUNT = "exchanger_signer_duration_seconds_count"
#: Accounts where the App is installed too, each with its own installation.
OTHER_OWNERS = [f"org-{n}" for n in range(8)]
SIGN_UNAVAILABLE = {"signer": "kms", "operation": "sign", "outcome": "unavailable"}


@dataclass
class MotoKms:
    """moto's KMS over HTTPS, and what it was asked."""

    url: str
    recording: Path
    client: KMSClient

    def create_key(
        self, spec: KeySpecType = "RSA_2048", usage: KeyUsageTypeType = "SIGN_VERIFY"
    ) -> str:
        """A new key; its ARN."""
        return self.client.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["Arn"]

    def public_key(self, key_id: str) -> rsa.RSAPublicKey:
        der = self.client.get_public_key(KeyId=key_id)["PublicKey"]
        key = serialization.load_der_public_key(der)
        assert isinstance(key, rsa.RSAPublicKey)
        return key

    def calls(self, action: str | None = None) -> int:
        """KMS requests recorded since `forget_calls` (all of them, or one `action`'s)."""
        lines = self.recording.read_text(encoding="utf-8").splitlines()
        targets = [json.loads(line)["headers"].get("X-Amz-Target", "") for line in lines if line]
        kms = [t.removeprefix("TrentService.") for t in targets if t.startswith("TrentService.")]
        return len(kms) if action is None else kms.count(action)

    def forget_calls(self) -> None:
        self.recording.write_text("", encoding="utf-8")


def _aws_environment(env: pytest.MonkeyPatch, ca: TestCA, directory: Path) -> None:
    """Fake credentials through boto3's default chain; nothing from this host's AWS setup."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        env.delenv(name, raising=False)
    env.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGEXCHANGER")
    env.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    env.setenv("AWS_CONFIG_FILE", str(directory / "no-aws-config"))
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "no-aws-credentials"))
    env.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env.setenv("AWS_CA_BUNDLE", str(ca.ca_file))
    env.setenv("NO_PROXY", "127.0.0.1,localhost")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def moto_kms(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoKms]:
    """moto's server on a free loopback port, over TLS with the test CA's certificate."""
    directory = tmp_path_factory.mktemp("moto")
    recording = directory / "recording.jsonl"
    recording.touch()
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    with pytest.MonkeyPatch.context() as env:
        _aws_environment(env, ca, directory)
        env.setenv("MOTO_ENABLE_RECORDING", "true")
        env.setenv("MOTO_RECORDER_FILEPATH", str(recording))
        command = [
            sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port),
            "--ssl-cert", str(ca.cert_file), "--ssl-key", str(ca.key_file),
        ]  # fmt: skip
        with (directory / "moto.log").open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        env.delenv("MOTO_ENABLE_RECORDING")
        env.delenv("MOTO_RECORDER_FILEPATH")
        try:
            wait_for(lambda: process.poll() is None and _listening(port), "moto's server")
            url = f"https://127.0.0.1:{port}"
            client = boto3.session.Session().client(
                "kms",
                region_name=REGION,
                endpoint_url=url,
                config=Config(retries={"total_max_attempts": 1}),
            )
            yield MotoKms(url=url, recording=recording, client=client)
            client.close()
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def app_key(moto_kms: MotoKms) -> str:
    """The App's key: RSA-2048, generated inside moto's KMS (its ARN)."""
    return moto_kms.create_key()


@pytest.fixture(scope="module")
def _kms_github(ca: TestCA, moto_kms: MotoKms, app_key: str) -> Iterator[FakeGitHub]:
    app = AppCredentials.from_public_key(APP_ID, moto_kms.public_key(app_key))
    fake = FakeGitHub(
        app=app,
        installations={
            "octo-org": INSTALLATION_ID,
            **{o: 5000 + i for i, o in enumerate(OTHER_OWNERS)},
        },
        runner_groups={"octo-org": [(2, "ci"), (3, "gpu")]},
    )
    with run_fake_github(ca, fake) as (running, _server):
        yield running


@pytest.fixture
def github(_kms_github: FakeGitHub) -> Iterator[FakeGitHub]:
    """The fake GitHub that knows the KMS key's public half only (overrides conftest's)."""
    _kms_github.reset()
    yield _kms_github
    assert _kms_github.violations == [], "the gateway sent GitHub something off-spec"
    _kms_github.reset()


StartGateway = Callable[..., AbstractContextManager[Gateway]]


def kms_config(directory: Path, issuer: FakeIssuer, github: FakeGitHub, key: str) -> Path:
    assert github.api_url is not None
    return write_github_config(directory, issuer.url, github.api_url, mode="app", key=key)


def kms_key_yaml(key_id: str, endpoint_url: str) -> str:
    return f'kms: {{key_id: "{key_id}", region: {REGION}, endpoint_url: "{endpoint_url}"}}'


@pytest.fixture
def kms_gateway(
    issuer: FakeIssuer,
    github: FakeGitHub,
    moto_kms: MotoKms,
    ca: TestCA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> StartGateway:
    """A new gateway whose App key is `key_id` in moto's KMS (or at `endpoint_url`)."""
    monkeypatch.delenv("GITHUB_APP_PRIVATE_KEY", raising=False)

    @contextmanager
    def start(key_id: str, endpoint_url: str | None = None) -> Iterator[Gateway]:
        key = kms_key_yaml(key_id, endpoint_url or moto_kms.url)
        path = kms_config(tmp_path, issuer, github, key)
        with running_gateway(path, ca) as gateway:
            yield gateway

    return start


def signer_count(operation: str, outcome: str) -> float:
    labels = {"signer": "kms", "operation": operation, "outcome": outcome}
    return metrics.REGISTRY.get_sample_value(SIGNER_COUNT, labels) or 0.0


def closed_port() -> str:
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"https://127.0.0.1:{port}"


# --- end to end -----------------------------------------------------------------------


def test_an_app_key_in_kms_mints_installation_and_runner_tokens(
    kms_gateway: StartGateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    moto_kms: MotoKms,
    app_key: str,
) -> None:
    moto_kms.forget_calls()
    with kms_gateway(app_key) as gateway:
        assert moto_kms.calls() == moto_kms.calls("GetPublicKey") == 1  # checked at start
        token = post(gateway, "/token", issuer.mint(), {})
        register = post(gateway, "/register", issuer.mint())
    assert token.status_code == 200, token.text
    assert github.describe_token(token.json()["token"]) == {
        "installation_id": INSTALLATION_ID,
        "repositories": ["octo-repo", "docs"],
        "permissions": {"contents": "read", "pull_requests": "write", "issues": "read"},
    }
    assert register.status_code == 200, register.text
    assert set(register.json()) == {"token", "expires_at"}
    app_calls = [r for r in github.requests if r.headers.get("authorization") == "Bearer <app-jwt>"]
    assert app_calls, "GitHub saw no App JWT"
    assert moto_kms.calls("Sign") == 1  # one App JWT, reused by every App call


def test_a_kms_key_github_does_not_know_is_refused_by_github(
    kms_gateway: StartGateway, github: FakeGitHub, issuer: FakeIssuer, moto_kms: MotoKms
) -> None:
    stranger = moto_kms.create_key()  # a sound RSA-2048 key, but not the App's
    with kms_gateway(stranger) as gateway:
        token = post(gateway, "/token", issuer.mint(), {})
        register = post(gateway, "/register", issuer.mint())
    for response in (token, register):
        assert response.status_code == 502, response.text
        assert response.json()["error"] == "upstream_error"
    seen = {r.headers.get("authorization") for r in github.requests}
    assert seen == {"Bearer <invalid-jwt>"}  # GitHub checked the signature and refused it


# --- key custody -------------------------------------------------------------------------


def runtime_for(gateway: Gateway) -> Runtime:
    """The in-process gateway's Runtime (the one serving `gateway.config_path`)."""
    path = gateway.config_path.resolve()
    found = [
        o
        for o in gc.get_objects()
        if isinstance(o, Runtime) and o.gateway.config.path.resolve() == path
    ]
    assert len(found) == 1
    return found[0]


def test_with_kms_no_private_key_ever_enters_the_gateway(
    kms_gateway: StartGateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    moto_kms: MotoKms,
    app_key: str,
    app_credentials: AppCredentials,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def load(*args: Any, **kwargs: Any) -> Any:
            loaded.append(name)
            raise AssertionError(f"{name} called")

        return load

    for name in ("load_pem_private_key", "load_der_private_key"):
        monkeypatch.setattr(serialization, name, refuse(name))

    with kms_gateway(app_key) as gateway:
        assert post(gateway, "/token", issuer.mint(), {}).status_code == 200
        assert post(gateway, "/register", issuer.mint()).status_code == 200
        runtime = runtime_for(gateway)
        config_text = gateway.config_path.read_text(encoding="utf-8")
        state = reachable(runtime)
    assert "private_key" not in config_text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exchanger.yaml", "github-policies.yaml"]
    assert loaded == []  # no PEM or DER private key was parsed while it ran
    assert runtime.gateway.github is not None
    credentials = runtime.gateway.github.credentials
    assert isinstance(credentials, GatewayAppCredentials)
    assert isinstance(credentials.signer, KmsSigner)
    assert credentials.signer in state
    assert any(type(o).__module__.startswith("botocore") for o in state)  # the walk went in
    assert private_material(state) == []

    # Both checks can fail: a PEM-mode config trips the spy, and the same walk over a
    # PEM-mode gateway finds its key.
    pem_dir = tmp_path / "pem"
    pem_dir.mkdir()
    (pem_dir / "app.pem").write_text(app_credentials.pem_pkcs8, encoding="utf-8")
    assert github.api_url is not None
    pem_path = write_github_config(pem_dir, issuer.url, github.api_url, mode="app")
    with pytest.raises(AssertionError, match="load_pem_private_key"):
        load_config(pem_path)
    monkeypatch.undo()
    client = make_client()
    try:
        pem_state = reachable(RuntimeGateway.build(load_config(pem_path), client))
    finally:
        asyncio.run(client.aclose())
    assert "RSAPrivateKey" in private_material(pem_state)


def test_loading_and_building_a_kms_gateway_contacts_nothing(
    issuer: FakeIssuer, github: FakeGitHub, moto_kms: MotoKms, app_key: str, tmp_path: Path
) -> None:
    path = kms_config(tmp_path, issuer, github, kms_key_yaml(app_key, moto_kms.url))
    moto_kms.forget_calls()
    config = load_config(path)
    client = make_client()
    try:
        RuntimeGateway.build(config, client)
    finally:
        asyncio.run(client.aclose())
    assert moto_kms.calls() == 0


# --- the public key: start-up and check --online ---------------------------------------

WRONG_KEYS = [
    pytest.param(
        "ECC_NIST_P256", "SIGN_VERIFY", "is ECC_NIST_P256, not an RSA key (RSA_2048 or larger)",
        id="ec-p256",
    ),
    pytest.param(
        "RSA_2048", "ENCRYPT_DECRYPT", "has KeyUsage ENCRYPT_DECRYPT; it must be SIGN_VERIFY",
        id="rsa-encrypt-decrypt",
    ),
]  # fmt: skip


async def start_and_stop(path: Path) -> None:
    """What `serve` does before it listens: build the gateway and check the App key."""
    async with make_client() as client:
        runtime = Runtime(client, RuntimeGateway.build(load_config(path), client))
        try:
            await runtime.start()
        finally:
            await runtime.stop()


@pytest.mark.parametrize(("spec", "usage", "problem"), WRONG_KEYS)
def test_start_up_refuses_a_kms_key_that_cannot_sign_rs256(
    issuer: FakeIssuer,
    github: FakeGitHub,
    moto_kms: MotoKms,
    tmp_path: Path,
    spec: KeySpecType,
    usage: KeyUsageTypeType,
    problem: str,
) -> None:
    key = moto_kms.create_key(spec, usage)
    path = kms_config(tmp_path, issuer, github, kms_key_yaml(key, moto_kms.url))
    refused = signer_count("public_key", "refused")
    with pytest.raises(ConfigError) as caught:
        asyncio.run(start_and_stop(path))
    assert caught.value.problems == [f"github.app.kms: the key {key} {problem}"]
    assert signer_count("public_key", "refused") == refused + 1


def check(capsys: pytest.CaptureFixture[str], path: Path, *flags: str) -> tuple[int, str, str]:
    """`exchanger check`: exit code, stdout, stderr without the test policies' warnings."""
    code = cli.main(["check", *flags, "--config", str(path)])
    out, err = capsys.readouterr()
    problems = [line for line in err.splitlines(keepends=True) if ": warning: " not in line]
    return code, out, "".join(problems)


@pytest.mark.parametrize(("spec", "usage", "problem"), WRONG_KEYS)
def test_check_online_refuses_a_kms_key_that_cannot_sign_rs256(
    issuer: FakeIssuer,
    github: FakeGitHub,
    moto_kms: MotoKms,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: KeySpecType,
    usage: KeyUsageTypeType,
    problem: str,
) -> None:
    key = moto_kms.create_key(spec, usage)
    path = kms_config(tmp_path, issuer, github, kms_key_yaml(key, moto_kms.url))
    moto_kms.forget_calls()
    assert check(capsys, path)[0] == 0
    assert moto_kms.calls() == 0  # plain check never asks KMS
    code, out, err = check(capsys, path, "--online")
    assert (code, out) == (1, "")
    assert err == f"{path}: github.app.kms: the key {key} {problem}\n"
    assert moto_kms.calls() == moto_kms.calls("GetPublicKey") == 1


def test_check_online_accepts_the_app_key_in_kms(
    issuer: FakeIssuer,
    github: FakeGitHub,
    moto_kms: MotoKms,
    app_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = kms_config(tmp_path, issuer, github, kms_key_yaml(app_key, moto_kms.url))
    moto_kms.forget_calls()
    code, out, err = check(capsys, path, "--online")
    assert (code, err) == (0, "")
    assert ": ok: " in out
    assert moto_kms.calls() == moto_kms.calls("GetPublicKey") == 1


def test_check_online_fails_when_kms_cannot_be_reached(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = kms_config(tmp_path, issuer, github, kms_key_yaml(app_key, closed_port()))
    assert check(capsys, path)[0] == 0
    code, out, err = check(capsys, path, "--online")
    assert (code, out) == (1, "")
    assert err == f"{path}: github.app: {UNAVAILABLE}\n"
    assert "EndpointConnectionError" in caplog.text
    assert AWS_SECRET not in caplog.text + err


@pytest.mark.parametrize(
    ("problem", "setup"),
    [
        pytest.param(
            "github.app.kms: needs boto3, which is not installed (pip install 'exchanger[kms]')",
            lambda mp: mp.setitem(sys.modules, "botocore.exceptions", None),
            id="no-boto3",
        ),
        pytest.param(
            "github.app.kms: no AWS region; set github.app.kms.region or AWS_REGION",
            lambda mp: None,
            id="no-region",
        ),
    ],
)
def test_a_config_aws_cannot_be_asked_with_is_a_config_error(
    moto_kms: MotoKms,
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
    setup: Callable[[pytest.MonkeyPatch], None],
) -> None:
    setup(monkeypatch)
    signer = KmsSigner(KmsKey(key_id="alias/app", endpoint_url=moto_kms.url))  # no region

    async def use() -> None:
        try:
            with pytest.raises(ConfigError) as caught:
                await signer.public_key()
            assert caught.value.problems == [problem]
            with pytest.raises(UpstreamUnavailable):
                await signer.sign(b"header.claims")
        finally:
            await signer.close()

    moto_kms.forget_calls()
    asyncio.run(use())
    assert moto_kms.calls() == 0


# --- outages, single flight, caching -----------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "key", "code"),
    [
        pytest.param("closed", "app", "EndpointConnectionError", id="kms-unreachable"),
        pytest.param("moto", "alias/no-such-key", "NotFoundException", id="key-not-found"),
    ],
)
def test_a_kms_outage_is_503_with_retry_after(
    kms_gateway: StartGateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    moto_kms: MotoKms,
    app_key: str,
    caplog: pytest.LogCaptureFixture,
    endpoint: str,
    key: str,
    code: str,
) -> None:
    key_id = app_key if key == "app" else key
    url = closed_port() if endpoint == "closed" else moto_kms.url
    with caplog.at_level(logging.WARNING), kms_gateway(key_id, url) as gateway:
        before = sample(metrics_text(gateway), SIGNER_COUNT, **SIGN_UNAVAILABLE)
        response = post(gateway, "/token", issuer.mint(), {})
        after = sample(metrics_text(gateway), SIGNER_COUNT, **SIGN_UNAVAILABLE)
    assert response.status_code == 503, response.text
    assert response.json() == {"error": "upstream_unavailable", "message": UNAVAILABLE}
    assert int(response.headers["retry-after"]) >= 1
    assert after == before + 1
    assert github.requests == []  # nothing unsigned or half-signed reached GitHub
    kms_lines = [r for r in caplog.records if r.getMessage().startswith("AWS KMS")]
    assert {r.getMessage().rpartition(": ")[2] for r in kms_lines} == {code}
    assert all(r.exc_info is None for r in caplog.records)  # no stack trace anywhere
    assert AWS_SECRET not in caplog.text
    assert "Traceback" not in caplog.text + response.text


def test_signing_is_single_flight_and_cached(
    kms_gateway: StartGateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    moto_kms: MotoKms,
    app_key: str,
) -> None:
    """Eight owners at once: eight installation look-ups, each needing the App JWT."""

    async def burst(gateway: Gateway) -> list[int]:
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=ssl_context(gateway.ca), timeout=10
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.post("/token", json={}, headers={"Authorization": f"Bearer {token}"})
                    for token in tokens
                )
            )
        return [a.status_code for a in answers]

    tokens = [issuer.mint(repository=f"{o}/octo-repo", repository_owner=o) for o in OTHER_OWNERS]
    with kms_gateway(app_key) as gateway:
        moto_kms.forget_calls()
        signed = signer_count("sign", "ok")
        statuses = asyncio.run(burst(gateway))  # cold: no App JWT yet
        cold = moto_kms.calls("Sign")
        assert post(gateway, "/token", issuer.mint(), {}).status_code == 200
        assert post(gateway, "/register", issuer.mint()).status_code == 200
        warm = moto_kms.calls("Sign")
    assert statuses == [200] * len(OTHER_OWNERS)
    lookups = {r.path for r in github.requests if r.path.endswith("/installation")}
    assert lookups >= {f"/orgs/{o}/installation" for o in OTHER_OWNERS}
    assert (cold, warm) == (1, 1)  # the callers shared one Sign; later ones reuse the JWT
    assert moto_kms.calls() == 1
    assert signer_count("sign", "ok") == signed + 1
