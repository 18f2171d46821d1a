"""The GitHub App key on a PKCS#11 token: a real gateway signs its App JWTs with SoftHSM2.

One SoftHSM2 token serves the session (`tests/fakes/softhsm.py`): the App's key (the
one the fake GitHub checks App JWTs against) imported as `github-app`, a second
RSA-2048 key GitHub has never seen as `stranger`, and two odd pairs written with
pkcs11-tool (the App's private key alone; the App's private key beside the stranger's
public key). The key files used for the imports are deleted before any gateway
starts. Signatures are counted through the gateway's own
`exchanger_signer_duration_seconds` histogram (one observation per call to the
signer), never by looking inside the token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import Attribute

from exchanger import metrics
from exchanger.config.load import load_config
from exchanger.config.model import Pkcs11Key, Secret
from exchanger.errors import ConfigError, UpstreamUnavailable
from exchanger.exchange.github.auth import AppCredentials as GatewayAppCredentials
from exchanger.exchange.github.signers import SIGNER_RETRY_AFTER
from exchanger.exchange.github.signers import pkcs11 as pkcs11_signer
from exchanger.exchange.github.signers.pkcs11 import Pkcs11Signer
from exchanger.http import make_client
from exchanger.runtime import Gateway as RuntimeGateway
from exchanger.runtime import Runtime
from tests.fakes.github import AppCredentials, FakeGitHub, run_fake_github
from tests.fakes.issuer import FakeIssuer
from tests.fakes.softhsm import SoftHsm, softhsm
from tests.fakes.tls import TestCA
from tests.gateway import (
    INSTALLATION_ID,
    Gateway,
    gateway_process,
    metrics_text,
    post,
    running_gateway,
    sample,
    ssl_context,
    wait_for,
    write_github_config,
)
from tests.keys import private_material, reachable

pytestmark = pytest.mark.e2e  # a real PKCS#11 module and softhsm2-util

APP_LABEL = "github-app"
STRANGER_LABEL = "stranger"
PRIVATE_ONLY_LABEL = "github-app-private-only"
MISMATCHED_LABEL = "github-app-mismatched"
UNAVAILABLE = "the GitHub App's key (pkcs11) cannot sign right now"
SIGNER_COUNT = "exchanger_signer_duration_seconds_count"
#: Accounts where the App is installed too, each with its own installation.
OTHER_OWNERS = [f"org-{n}" for n in range(8)]
WRONG_PIN = "canary-wrong-pin-5a17"


# --- the token, the fake GitHub, gateways ----------------------------------------------


@pytest.fixture(scope="session")
def hsm(
    app_credentials: AppCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SoftHsm]:
    """A SoftHSM2 token holding the App's key, a key GitHub does not know, odd pairs."""
    assert app_credentials.private_key is not None
    with softhsm(tmp_path_factory.mktemp("softhsm")) as token:
        token.import_key(app_credentials.private_key, APP_LABEL, "01")
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token.import_key(stranger, STRANGER_LABEL, "02")
        # The App's key without its public object; and with another key's public object.
        token.write_objects(PRIVATE_ONLY_LABEL, "03", app_credentials.private_key)
        token.write_objects(
            MISMATCHED_LABEL, "04", app_credentials.private_key, stranger.public_key()
        )
        yield token


@pytest.fixture(scope="module")
def _hsm_github(ca: TestCA, app_credentials: AppCredentials) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(
        app=app_credentials,
        installations={
            "octo-org": INSTALLATION_ID,
            **{o: 5000 + i for i, o in enumerate(OTHER_OWNERS)},
        },
        runner_groups={"octo-org": [(2, "ci"), (3, "gpu")]},
    )
    with run_fake_github(ca, fake) as (running, _server):
        yield running


@pytest.fixture
def github(_hsm_github: FakeGitHub) -> Iterator[FakeGitHub]:
    """A fake GitHub with more installed owners (overrides conftest's)."""
    _hsm_github.reset()
    yield _hsm_github
    assert _hsm_github.violations == [], "the gateway sent GitHub something off-spec"
    _hsm_github.reset()


@pytest.fixture(autouse=True)
def _sessions_closed(hsm: SoftHsm) -> Iterator[None]:
    """Every test ends with every signer closed: no PKCS#11 session left open."""
    yield
    assert pkcs11_signer._SHARED == {}


def pkcs11_yaml(
    hsm: SoftHsm,
    *,
    key_label: str = APP_LABEL,
    token_label: str | None = None,
    module: str | None = None,
) -> str:
    return (
        "pkcs11:\n"
        f"  module: {module or hsm.module}\n"
        f"  token_label: {token_label or hsm.token_label}\n"
        f"  key_label: {key_label}\n"
        "  pin: {file: pin.txt}\n"
    )


def hsm_config(
    directory: Path, issuer: FakeIssuer, github: FakeGitHub, hsm: SoftHsm, pin: str, **key: Any
) -> Path:
    """A GitHub App config whose key is on the token; the PIN in a file beside it."""
    (directory / "pin.txt").write_text(pin + "\n", encoding="utf-8")
    assert github.api_url is not None
    return write_github_config(
        directory, issuer.url, github.api_url, mode="app", key=pkcs11_yaml(hsm, **key)
    )


StartGateway = Callable[..., AbstractContextManager[Gateway]]


@pytest.fixture
def hsm_gateway(
    issuer: FakeIssuer,
    github: FakeGitHub,
    hsm: SoftHsm,
    ca: TestCA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> StartGateway:
    """A new gateway (cold caches) whose App key is on the token; `pin` defaults to right."""
    monkeypatch.delenv("GITHUB_APP_PRIVATE_KEY", raising=False)

    @contextmanager
    def start(pin: str | None = None, **key: Any) -> Iterator[Gateway]:
        path = hsm_config(tmp_path, issuer, github, hsm, pin or hsm.user_pin, **key)
        with running_gateway(path, ca) as gateway:
            yield gateway

    return start


def signer_count(operation: str, outcome: str) -> float:
    labels = {"signer": "pkcs11", "operation": operation, "outcome": outcome}
    return metrics.REGISTRY.get_sample_value(SIGNER_COUNT, labels) or 0.0


def cache_misses() -> float:
    labels = {"cache": "installation_id", "result": "miss"}
    return metrics.REGISTRY.get_sample_value("exchanger_cache_lookups_total", labels) or 0.0


def app_signer(hsm: SoftHsm, key_label: str = APP_LABEL) -> Pkcs11Signer:
    """A signer of a key on the token (the App's by default), as a config would build it."""
    return Pkcs11Signer(
        Pkcs11Key(hsm.module, hsm.token_label, key_label, Secret(hsm.user_pin, "test"))
    )


# --- end to end -----------------------------------------------------------------------


def test_an_app_key_on_a_token_mints_installation_and_runner_tokens(
    hsm_gateway: StartGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    checked, signed = signer_count("public_key", "ok"), signer_count("sign", "ok")
    with hsm_gateway() as gateway:
        token = post(gateway, "/token", issuer.mint(), {})
        register = post(gateway, "/register", issuer.mint())
        exposition = metrics_text(gateway)
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
    assert signer_count("public_key", "ok") == checked + 1  # checked once, at start
    assert signer_count("sign", "ok") == signed + 1  # one App JWT, reused by every App call
    assert sample(exposition, SIGNER_COUNT, signer="pkcs11", operation="sign", outcome="ok") >= 1


def test_a_token_key_github_does_not_know_is_refused_by_github(
    hsm_gateway: StartGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    signed = signer_count("sign", "ok")
    with hsm_gateway(key_label=STRANGER_LABEL) as gateway:
        token = post(gateway, "/token", issuer.mint(), {})
        register = post(gateway, "/register", issuer.mint())
    for response in (token, register):
        assert response.status_code == 502, response.text
        assert response.json()["error"] == "upstream_error"
    assert signer_count("sign", "ok") == signed + 1  # the token signed; GitHub said no
    seen = {r.headers.get("authorization") for r in github.requests}
    assert seen == {"Bearer <invalid-jwt>"}  # GitHub checked the signature and refused it


def test_the_signer_signs_rs256_with_the_token_key_and_reads_its_public_half(
    hsm: SoftHsm, app_credentials: AppCredentials
) -> None:
    key = Pkcs11Key(hsm.module, hsm.token_label, APP_LABEL, Secret(hsm.user_pin, "test"))
    signer = Pkcs11Signer(key)
    messages = [f"header.claims-{n}".encode() for n in range(6)]

    async def use() -> tuple[rsa.RSAPublicKey, list[bytes]]:
        try:
            public = await signer.public_key()
            # Concurrent callers are serialised onto the one session.
            signatures = await asyncio.gather(*(signer.sign(m) for m in messages))
            return public, list(signatures)
        finally:
            await signer.close()

    public, signatures = asyncio.run(use())
    assert public.public_numbers() == app_credentials.public_key.public_numbers()
    for message, signature in zip(messages, signatures, strict=True):
        app_credentials.public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    assert hsm.token_label in repr(signer)
    assert hsm.user_pin not in repr(signer) + repr(key)


def test_a_session_that_went_stale_is_reopened(
    hsm: SoftHsm, app_credentials: AppCredentials
) -> None:
    signer = app_signer(hsm)

    async def use() -> bytes:
        try:
            await signer.sign(b"first")
            shared = signer._shared
            assert shared is not None
            assert shared.session is not None
            with pkcs11_signer._LOCK:
                shared.session.close()  # behind the signer's back: the handle is now invalid
            return await signer.sign(b"second")
        finally:
            await signer.close()

    signature = asyncio.run(use())
    app_credentials.public_key.verify(signature, b"second", padding.PKCS1v15(), hashes.SHA256())


def test_without_a_public_key_object_the_private_key_states_the_public_half(
    hsm: SoftHsm, app_credentials: AppCredentials
) -> None:
    signer = app_signer(hsm, PRIVATE_ONLY_LABEL)

    async def use() -> tuple[rsa.RSAPublicKey, bytes]:
        try:
            return await signer.public_key(), await signer.sign(b"header.claims")
        finally:
            await signer.close()

    public, signature = asyncio.run(use())
    assert public.public_numbers() == app_credentials.public_key.public_numbers()
    public.verify(signature, b"header.claims", padding.PKCS1v15(), hashes.SHA256())


def test_start_up_refuses_a_public_key_object_that_is_not_the_private_keys_half(
    hsm: SoftHsm, github: FakeGitHub, issuer: FakeIssuer, tmp_path: Path
) -> None:
    path = hsm_config(tmp_path, issuer, github, hsm, hsm.user_pin, key_label=MISMATCHED_LABEL)
    refused = signer_count("public_key", "refused")

    async def start_and_stop() -> None:
        """What `serve` does before it listens: build the gateway and check the App key."""
        async with make_client() as client:
            runtime = Runtime(client, RuntimeGateway.build(load_config(path), client))
            try:
                await runtime.start()
            finally:
                await runtime.stop()

    with pytest.raises(ConfigError) as caught:
        asyncio.run(start_and_stop())
    assert caught.value.problems == [
        f"github.app.pkcs11: the public key labelled {MISMATCHED_LABEL!r} on token "
        f"{hsm.token_label!r} is not the private key's half"
    ]
    assert signer_count("public_key", "refused") == refused + 1


def test_without_python_pkcs11_the_key_check_is_a_config_error(
    hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pkcs11", None)  # `import pkcs11` raises ImportError
    signer = app_signer(hsm)

    async def use() -> None:
        try:
            with pytest.raises(ConfigError) as caught:
                await signer.public_key()
            assert caught.value.problems == [pkcs11_signer.NOT_INSTALLED]
            with pytest.raises(UpstreamUnavailable):
                await signer.sign(b"header.claims")
        finally:
            await signer.close()

    asyncio.run(use())
    assert "pip install 'exchanger[pkcs11]'" in pkcs11_signer.NOT_INSTALLED
    assert [r.getMessage() for r in caplog.records] == [pkcs11_signer.NOT_INSTALLED] * 2


def test_a_token_that_does_not_answer_fails_after_the_deadline(
    hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pkcs11_signer, "DEADLINE", 0.2)
    signer = app_signer(hsm)

    async def use() -> None:
        try:
            with pkcs11_signer._LOCK:  # an earlier call that hangs in the module
                with pytest.raises(UpstreamUnavailable) as caught:
                    await signer.sign(b"header.claims")
                assert caught.value.retry_after == SIGNER_RETRY_AFTER
            assert len(await signer.sign(b"header.claims")) == 256  # and then it answers
        finally:
            await signer.close()

    asyncio.run(use())
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("github.app.pkcs11: cannot sign with the App key 'github-app'")
    assert "did not answer within 0.2 s" in line or "is busy" in line


# --- key custody -------------------------------------------------------------------------


def test_with_a_token_no_private_key_ever_enters_the_gateway(
    hsm_gateway: StartGateway,
    hsm: SoftHsm,
    github: FakeGitHub,
    issuer: FakeIssuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The PEMs the token was loaded from were deleted before any gateway started.
    assert [p.name for p in hsm.imported_pems] == [
        f"{APP_LABEL}.pem",
        f"{STRANGER_LABEL}.pem",
        f"{PRIVATE_ONLY_LABEL}-privkey.der",
        f"{MISMATCHED_LABEL}-privkey.der",
        f"{MISMATCHED_LABEL}-pubkey.der",
    ]
    assert not any(p.exists() for p in hsm.imported_pems)
    assert "GITHUB_APP_PRIVATE_KEY" not in os.environ
    loaded: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def load(*args: Any, **kwargs: Any) -> Any:
            loaded.append(name)
            raise AssertionError(f"{name} called with a PKCS#11 App key")

        return load

    for name in ("load_pem_private_key", "load_der_private_key"):
        monkeypatch.setattr(serialization, name, refuse(name))
    runtimes: list[Runtime] = []
    start = Runtime.start

    async def recording_start(self: Runtime) -> None:
        runtimes.append(self)
        await start(self)

    monkeypatch.setattr(Runtime, "start", recording_start)

    with hsm_gateway() as gateway:
        assert post(gateway, "/token", issuer.mint(), {}).status_code == 200
        assert post(gateway, "/register", issuer.mint()).status_code == 200
        [runtime] = runtimes
        config_text = gateway.config_path.read_text(encoding="utf-8")
        state = reachable(runtime)
    assert "private_key" not in config_text
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exchanger.yaml",
        "github-policies.yaml",
        "pin.txt",
    ]
    assert loaded == []  # no PEM or DER private key was parsed while it ran
    assert runtime.gateway.github is not None
    credentials = runtime.gateway.github.credentials
    assert isinstance(credentials, GatewayAppCredentials)
    assert isinstance(credentials.signer, Pkcs11Signer)
    assert credentials.signer in state
    assert credentials in state
    assert private_material(state) == []

    # And the token will not hand the key out: sensitive, not extractable. (The module by
    # its real path, as the signer loads it: python-pkcs11 loads each path string once.)
    with (
        pkcs11.lib(os.path.realpath(hsm.module))
        .get_token(token_label=hsm.token_label)
        .open(user_pin=hsm.user_pin) as session
    ):
        key = session.get_key(pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.KeyType.RSA, APP_LABEL)
        assert (key[Attribute.SENSITIVE], key[Attribute.EXTRACTABLE]) == (True, False)
        with pytest.raises(pkcs11.AttributeSensitive):
            key[Attribute.PRIVATE_EXPONENT]


# --- a token that cannot sign: 503, the cause in the log, check --online -----------------

FAILURES = [
    pytest.param({"pin": WRONG_PIN}, "the token refused the PIN (incorrect)", id="wrong-pin"),
    pytest.param({"token_label": "no-such-token"}, "no token has this label", id="missing-token"),
    pytest.param(
        {"key_label": "no-such-key"},
        "the token has no RSA private key with this label",
        id="missing-key",
    ),
    pytest.param(
        {"module": "/nonexistent/libpkcs11.so"},
        "cannot load the PKCS#11 module",
        id="missing-module",
    ),
]


@pytest.mark.parametrize(("setting", "cause"), FAILURES)
def test_a_token_that_cannot_sign_is_503_with_the_cause_in_the_log(
    hsm_gateway: StartGateway,
    hsm: SoftHsm,
    github: FakeGitHub,
    issuer: FakeIssuer,
    caplog: pytest.LogCaptureFixture,
    setting: dict[str, str],
    cause: str,
) -> None:
    with caplog.at_level(logging.WARNING), hsm_gateway(**setting) as gateway:
        before = sample(
            metrics_text(gateway), SIGNER_COUNT, signer="pkcs11", operation="sign",
            outcome="unavailable",
        )  # fmt: skip
        response = post(gateway, "/token", issuer.mint(), {})
        again = post(gateway, "/token", issuer.mint(), {})
        after = sample(
            metrics_text(gateway), SIGNER_COUNT, signer="pkcs11", operation="sign",
            outcome="unavailable",
        )  # fmt: skip
    for answer in (response, again):
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"error": "upstream_unavailable", "message": UNAVAILABLE}
        assert int(answer.headers["retry-after"]) >= 1
    assert after == before + 2
    assert github.requests == []  # nothing unsigned reached GitHub
    lines = [r.getMessage() for r in caplog.records if "github.app.pkcs11" in r.getMessage()]
    # One line when the key was checked at start, one per failed exchange.
    assert len(lines) == 3, lines
    assert all(cause in line for line in lines), lines
    if "pin" in setting:  # a refused PIN is not tried again: HSMs lock it after a few
        assert all("not tried again" in line for line in lines[1:]), lines
    assert all(r.exc_info is None for r in caplog.records)  # no stack trace anywhere
    for text in (caplog.text, response.text):
        assert "Traceback" not in text
        assert hsm.user_pin not in text
        assert WRONG_PIN not in text


def check_online(path: Path, hsm: SoftHsm) -> subprocess.CompletedProcess[str]:
    """`exchanger check --online` as an operator runs it: a process of its own."""
    env = {k: v for k, v in hsm.environ.items() if k != "GITHUB_APP_PRIVATE_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "exchanger", "check", "--online", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("setting", "cause"), FAILURES)
def test_check_online_fails_with_the_cause_when_the_token_cannot_sign(
    hsm: SoftHsm,
    github: FakeGitHub,
    issuer: FakeIssuer,
    tmp_path: Path,
    setting: dict[str, str],
    cause: str,
) -> None:
    pin = setting.get("pin", hsm.user_pin)
    key = {k: v for k, v in setting.items() if k != "pin"}
    path = hsm_config(tmp_path, issuer, github, hsm, pin, **key)
    done = check_online(path, hsm)
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    problems = [line for line in done.stderr.splitlines() if ": warning: " not in line]
    assert problems[-1] == f"{path}: github.app: {UNAVAILABLE}"
    [logged] = [line for line in problems if "github.app.pkcs11" in line]
    assert cause in logged
    assert "Traceback" not in done.stderr
    assert hsm.user_pin not in done.stderr
    assert WRONG_PIN not in done.stderr


def test_check_online_accepts_the_app_key_on_the_token(
    hsm: SoftHsm, github: FakeGitHub, issuer: FakeIssuer, tmp_path: Path
) -> None:
    done = check_online(hsm_config(tmp_path, issuer, github, hsm, hsm.user_pin), hsm)
    assert done.returncode == 0, done.stderr
    assert ": ok: " in done.stdout
    assert "github.app.pkcs11" not in done.stderr


# --- single flight, caching, rotation ----------------------------------------------------


def test_signing_is_single_flight_and_cached(
    hsm_gateway: StartGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    """Eight owners at once: eight installation look-ups, each needing the App JWT.

    The token is held busy (the process-wide PKCS#11 lock) until all eight requests are
    inside the gateway waiting for the App JWT, so they really do overlap.
    """

    async def burst(gateway: Gateway) -> list[int]:
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=ssl_context(gateway.ca), timeout=20
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.post("/token", json={}, headers={"Authorization": f"Bearer {token}"})
                    for token in tokens
                )
            )
        return [a.status_code for a in answers]

    tokens = [issuer.mint(repository=f"{o}/octo-repo", repository_owner=o) for o in OTHER_OWNERS]
    statuses: list[int] = []
    with hsm_gateway() as gateway:
        signed, missed = signer_count("sign", "ok"), cache_misses()
        with pkcs11_signer._LOCK:  # a slow HSM: no PKCS#11 call completes meanwhile
            requests = threading.Thread(
                target=lambda: statuses.extend(asyncio.run(burst(gateway))), daemon=True
            )
            requests.start()
            wait_for(lambda: cache_misses() == missed + len(OTHER_OWNERS), "eight look-ups")
        requests.join(timeout=30)
        cold = signer_count("sign", "ok") - signed
        assert post(gateway, "/token", issuer.mint(), {}).status_code == 200
        assert post(gateway, "/register", issuer.mint()).status_code == 200
        warm = signer_count("sign", "ok") - signed
    assert statuses == [200] * len(OTHER_OWNERS)
    lookups = {r.path for r in github.requests if r.path.endswith("/installation")}
    assert lookups >= {f"/orgs/{o}/installation" for o in OTHER_OWNERS}
    assert (cold, warm) == (1, 1)  # the callers shared one signature; later ones reuse it


def test_rotating_the_key_label_with_sighup(
    hsm: SoftHsm,
    github: FakeGitHub,
    issuer: FakeIssuer,
    ca: TestCA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve` on the stranger key, then `key_label` switched and SIGHUP: the new key signs
    through the same logged-in token (no second login, no restart)."""
    path = hsm_config(tmp_path, issuer, github, hsm, hsm.user_pin, key_label=STRANGER_LABEL)
    monkeypatch.delenv("GITHUB_APP_PRIVATE_KEY", raising=False)
    with gateway_process(path, ca) as gateway:
        refused = post(gateway, "/token", issuer.mint(), {})
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace(f"key_label: {STRANGER_LABEL}", f"key_label: {APP_LABEL}"),
            encoding="utf-8",
        )
        gateway.process.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            exposition = metrics_text(gateway)
            return sample(exposition, "exchanger_config_reloads_total", result="ok") == 1

        wait_for(reloaded, "the reload")
        minted = post(gateway, "/token", issuer.mint(), {})
        code, _out, err = gateway.stop()
    assert refused.status_code == 502, refused.text
    assert minted.status_code == 200, minted.text
    assert code == 0, err
    assert "github.app.pkcs11" not in err  # no PKCS#11 failure, before or after the reload
    assert "could not be checked" not in err
    assert hsm.user_pin not in err
