"""Fault injection through a running gateway over TLS (THREATS 8, 46, 49, 55).

What `test_jwks.py` (the key cache on its own), `test_github.py` (a warm gateway whose
registration-token mint fails) and `test_limits.py` (Redis) already prove is not
repeated here. This file adds, end to end over HTTP:

- the issuer slow (slower than the gateway's outbound timeout), down, serving garbage
  or an empty key set, at cold start (503 with Retry-After, not ready, no fetch storm,
  recovery once the issuer is back) and after a good fetch (cached keys keep serving,
  an unknown kid is a 401, never a 503, and a key published after the outage works);
- GitHub slower than `timeout_seconds`, answering 5xx, rate-limited, dropping the
  connection mid-answer, or answering 200 with garbage, at every other step an
  exchange takes on a cold gateway: the installation look-up, the installation-token
  mint (for `/token` and for the runner credential), the JIT config, the runner-group
  listing. Each gives the SPEC's status, nothing is minted twice (a POST is never
  retried, a GET at most once), no credential is echoed, and afterwards `/healthz`
  answers and the same exchange succeeds.

An issuer's fetch timeout defaults to 10 s; the issuer tests configure
`timeout_seconds: 0.4` for it (a real config option), rather than sleeping 10 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml

from tests.fakes.github import AppCredentials, FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import (
    BASE_CONFIG,
    PAT,
    REGISTRY_PASSWORD,
    Gateway,
    running_gateway,
    ssl_context,
    wait_for,
    write_config,
    write_github_config,
)

#: The gateway's outbound timeout in these tests (seconds), and how long a slow peer takes.
SHORT_TIMEOUT = 0.4
SLOW = 3.0  # GitHub's fake releases held requests on reset()
ISSUER_SLOW = 1.0  # the fake issuer's sleeps run out on their own: keep them short
SECRET = "/secrets/registry/password"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
DESCRIPTION = schemathesis.openapi.from_path(SPEC_PATH)
RAW_DESCRIPTION: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = RAW_DESCRIPTION
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def assert_documented(response: httpx.Response) -> None:
    """The status, its required headers and its body are as docs/openapi.yaml says."""
    method = response.request.method
    operation = DESCRIPTION.find_operation_by_path(method, response.request.url.path)
    assert operation is not None, f"{method} {response.request.url.path} is not described"
    path = operation.path
    responses = RAW_DESCRIPTION["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in responses, f"{method} {path}: {response.status_code}"
    for name, header in _resolve(responses[str(response.status_code)]).get("headers", {}).items():
        if _resolve(header).get("required"):
            assert name in response.headers, f"{method} {path}: no {name}"
    operation.validate_response(response)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The SPEC's error shape: status, code, fixed message, headers; nothing else."""
    assert response.status_code == status, response.text
    assert_documented(response)
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert "traceback" not in response.text.lower()
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]
    if status in (429, 503):
        assert response.headers["retry-after"].isdigit()
        assert int(response.headers["retry-after"]) >= 1


def ready(gateway: Gateway) -> bool:
    with gateway.client() as client:
        return client.get("/readyz").status_code == 200


def healthy(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.get("/healthz").status_code == 200


def issuer_config(directory: Path, issuer: FakeIssuer) -> Path:
    """The base config with the issuer's fetch timeout at SHORT_TIMEOUT."""
    body = BASE_CONFIG.replace(
        '    audiences: ["{audience}"]\n',
        f'    audiences: ["{{audience}}"]\n    timeout_seconds: {SHORT_TIMEOUT}\n',
    )
    return write_config(directory, issuer.url, body=body)


# --- the issuer -------------------------------------------------------------------------------

ISSUER_OUTAGES = ["slow", "down", "garbage", "empty"]


def break_issuer(issuer: FakeIssuer, outage: str) -> None:
    if outage == "slow":
        issuer.slow_seconds = ISSUER_SLOW  # well beyond SHORT_TIMEOUT
    else:
        issuer.mode = outage


def fetches(issuer: FakeIssuer) -> int:
    return issuer.discovery_requests + issuer.jwks_requests


@pytest.mark.parametrize("outage", ISSUER_OUTAGES)
def test_sec_55_cold_start_issuer_outage_is_503_then_recovers(
    issuer: FakeIssuer, ca: TestCA, config_dir: Path, outage: str
) -> None:
    break_issuer(issuer, outage)
    path = issuer_config(config_dir, issuer)
    with running_gateway(path, ca, ready=False) as gateway:
        wait_for(lambda: fetches(issuer) >= 1, what="the first key fetch")

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=gateway.url, verify=ssl_context(ca), timeout=30
            ) as client:
                return list(
                    await asyncio.gather(
                        *(client.get(SECRET, headers=bearer(issuer.mint())) for _ in range(20))
                    )
                )

        for response in asyncio.run(burst()):
            assert_error(response, 503, "upstream_unavailable")
            assert REGISTRY_PASSWORD not in response.text
        assert fetches(issuer) <= 4  # back-off and single flight: no fetch per request
        assert not ready(gateway)
        healthy(gateway)

        issuer.reset()  # the issuer comes back; the back-off retries within seconds
        wait_for(lambda: ready(gateway), what="readiness after the issuer came back")
        with gateway.client() as client:
            response = client.get(SECRET, headers=bearer(issuer.mint()))
        assert response.status_code == 200
        assert response.text == REGISTRY_PASSWORD


def unknown_kid_token(issuer: FakeIssuer) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": "not-published"}
    return issuer.sign_raw(header, issuer.claims(), issuer.attacker)


# --- GitHub -----------------------------------------------------------------------------------

INSTALLATION_LOOKUP_ORG = "apps/get-org-installation"
INSTALLATION_LOOKUP_REPO = "apps/get-repo-installation"
ACCESS_TOKEN = "apps/create-installation-access-token"
JIT_REPO = "actions/generate-runner-jitconfig-for-repo"
RUNNER_GROUPS = "actions/list-self-hosted-runner-groups-for-org"
REGISTRATION = "actions/create-registration-token-for-repo"

#: fault name -> (inject, expected status, code, calls when the target is a GET).
Inject = Callable[[FakeGitHub, str], None]
FAULTS: dict[str, tuple[Inject, int, str, int]] = {
    "slow": (lambda g, op: g.delay(op, SLOW), 503, "upstream_unavailable", 2),
    "500": (lambda g, op: g.fail(op, 500, times=None), 502, "upstream_error", 2),
    "503": (lambda g, op: g.fail(op, 503, times=None), 503, "upstream_unavailable", 2),
    "rate-limited": (lambda g, op: g.rate_limit(op, times=None), 429, "rate_limited", 1),
    "secondary-429": (
        lambda g, op: g.secondary_rate_limit(op, status=429, retry_after=7, times=None),
        429,
        "rate_limited",
        1,
    ),
    "reset": (lambda g, op: g.reset_connection(op), 503, "upstream_unavailable", 2),
    "garbage-200": (
        lambda g, op: g.fail(op, 200, body="<html>oops", times=None),
        502,
        "upstream_error",
        1,
    ),
}

#: exchange -> (path, body, the operations it makes on a cold App-mode gateway, in order).
EXCHANGES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "token": ("/token", {}, [INSTALLATION_LOOKUP_ORG, ACCESS_TOKEN]),
    "register": ("/register", {}, [INSTALLATION_LOOKUP_REPO, ACCESS_TOKEN, REGISTRATION]),
    "jit-repo": ("/jitconfig", {}, [INSTALLATION_LOOKUP_REPO, ACCESS_TOKEN, JIT_REPO]),
    "jit-org-group": (
        "/jitconfig",
        {"scope": "octo-org", "runner_group": "gpu"},
        [
            INSTALLATION_LOOKUP_ORG,
            ACCESS_TOKEN,
            RUNNER_GROUPS,
            "actions/generate-runner-jitconfig-for-org",
        ],
    ),
}
GETS = {INSTALLATION_LOOKUP_ORG, INSTALLATION_LOOKUP_REPO, RUNNER_GROUPS}
MINTS = {ACCESS_TOKEN, JIT_REPO, REGISTRATION, "actions/generate-runner-jitconfig-for-org"}

#: (exchange, failing step) pairs; every fault is injected at each of them.
STEPS = [
    ("token", INSTALLATION_LOOKUP_ORG),
    ("token", ACCESS_TOKEN),
    ("register", ACCESS_TOKEN),  # the runner credential, before the registration token
    ("jit-repo", JIT_REPO),
    ("jit-org-group", RUNNER_GROUPS),
]


@contextmanager
def cold_app_gateway(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    directory: Path,
) -> Iterator[Gateway]:
    """A new App-mode gateway (cold caches) whose GitHub timeout is SHORT_TIMEOUT."""
    (directory / "app.pem").write_text(app_credentials.pem_pkcs8, encoding="utf-8")
    assert github.api_url is not None
    path = write_github_config(directory, issuer.url, github.api_url, mode="app")
    text = path.read_text(encoding="utf-8")
    assert "timeout_seconds: 2\n" in text
    path.write_text(text.replace("timeout_seconds: 2\n", f"timeout_seconds: {SHORT_TIMEOUT}\n"))
    with running_gateway(path, ca) as gateway:
        yield gateway


def calls(github: FakeGitHub, operation: str) -> int:
    return sum(1 for r in github.requests if r.operation == operation)


def assert_minted_at_most_once(github: FakeGitHub) -> None:
    for operation in MINTS:
        assert calls(github, operation) <= 1, f"{operation} was sent more than once"


def assert_no_credential(response: httpx.Response, github: FakeGitHub) -> None:
    for secret in [PAT, *github.minted_secrets()]:
        assert secret not in response.text
    assert "BEGIN" not in response.text


CASES = [
    pytest.param(exchange, step, fault, id=f"{exchange}-{step.partition('/')[2]}-{fault}")
    for exchange, step in STEPS
    for fault in FAULTS
    # A 200 with an unreadable body on a GET is its own test below.
    if not (fault == "garbage-200" and step in GETS)
]


@pytest.mark.parametrize(("exchange", "step", "fault"), CASES)
def test_sec_55_github_fault_at_each_step(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path: Path,
    exchange: str,
    step: str,
    fault: str,
) -> None:
    inject, status, code, get_calls = FAULTS[fault]
    path, body, operations = EXCHANGES[exchange]
    with cold_app_gateway(issuer, github, app_credentials, ca, tmp_path) as gateway:
        inject(github, step)
        minted_before = len(github.minted_secrets())
        with gateway.client() as client:
            response = client.post(path, json=body, headers=bearer(issuer.mint()))
        # Each earlier minting step minted once; the failing step minted nothing (a held
        # request is still held: it may mint once released, and is never sent again).
        earlier = operations[: operations.index(step)]
        assert len(github.minted_secrets()) - minted_before == len(MINTS.intersection(earlier))
        assert_error(response, status, code)
        assert_no_credential(response, github)
        if fault == "500":
            assert "500" in response.json()["message"]
        expected = get_calls if step in GETS else 1
        assert calls(github, step) == expected, [r.operation for r in github.requests]
        assert_minted_at_most_once(github)
        later = operations[operations.index(step) + 1 :]
        assert all(calls(github, op) == 0 for op in later), "went on after the failure"

        github.reset()  # GitHub recovers (requests still delayed are released)
        healthy(gateway)
        with gateway.client() as client:
            again = client.post(path, json=body, headers=bearer(issuer.mint()))
        assert again.status_code == 200, again.text
        assert_documented(again)
        assert_minted_at_most_once(github)


@pytest.mark.parametrize("fault", ["slow", "reset", "503"])
def test_sec_55_one_failed_get_is_hidden_by_its_single_retry(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path: Path,
    fault: str,
) -> None:
    with cold_app_gateway(issuer, github, app_credentials, ca, tmp_path) as gateway:
        if fault == "slow":
            github.delay(INSTALLATION_LOOKUP_ORG, SLOW, times=1)
        elif fault == "reset":
            github.reset_connection(INSTALLATION_LOOKUP_ORG, times=1)
        else:
            github.fail(INSTALLATION_LOOKUP_ORG, 503, times=1)
        with gateway.client() as client:
            response = client.post("/token", json={}, headers=bearer(issuer.mint()))
        assert response.status_code == 200, response.text
        assert calls(github, INSTALLATION_LOOKUP_ORG) == 2
        assert calls(github, ACCESS_TOKEN) == 1


def test_sec_46_garbage_runner_groups_answer_is_502_and_not_cached(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path: Path,
) -> None:
    path, body, _ = EXCHANGES["jit-org-group"]
    with cold_app_gateway(issuer, github, app_credentials, ca, tmp_path) as gateway:
        github.fail(RUNNER_GROUPS, 200, body="<html>oops", times=1)
        with gateway.client() as client:
            response = client.post(path, json=body, headers=bearer(issuer.mint()))
            assert_error(response, 502, "upstream_error")
            assert "oops" not in response.text
            assert calls(github, RUNNER_GROUPS) == 1  # a refused answer is not retried
            again = client.post(path, json=body, headers=bearer(issuer.mint()))
        assert again.status_code == 200, again.text


@pytest.mark.parametrize("answer", ["<html>oops", "[]"])
def test_sec_55_unreadable_installation_lookup_is_not_cached_as_missing(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path: Path,
    answer: str,
) -> None:
    with cold_app_gateway(issuer, github, app_credentials, ca, tmp_path) as gateway:
        github.fail(INSTALLATION_LOOKUP_REPO, 200, body=answer, times=1)
        with gateway.client() as client:
            response = client.post("/register", json={}, headers=bearer(issuer.mint()))
            assert_error(response, 502, "upstream_error")
            assert calls(github, ACCESS_TOKEN) == 0
            github.reset()  # GitHub answers properly again
            again = client.post("/register", json={}, headers=bearer(issuer.mint()))
        assert again.status_code == 200, again.text
