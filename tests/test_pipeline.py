"""The exchange path end to end: check order, nothing consumed by a refusal, no 500s,
and the server deciding exactly what `explain` decides."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exchanger.config.load import load_config
from exchanger.errors import InvalidRequest
from exchanger.policy import dryrun
from exchanger.policy.engine import Engine
from tests.fakes.github import AppCredentials, FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import Gateway, running_gateway, write_github_config

ONCE = """\
- name: jit-once
  single_use: true
  claims: {repository_owner_id: "65", repository_id: "80"}
  grants:
    runner: {scopes: [octo-org], actions: [jitconfig]}
    installation: {repositories: [docs], permissions: {contents: read}}
    secrets: [npm-publish]
"""

Start = Callable[[str], AbstractContextManager[tuple[Gateway, Path]]]


@pytest.fixture
def start(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path: Path,
) -> Start:
    """A new gateway in `mode` with a single-use policy first; yields it and its config."""

    @contextmanager
    def run(mode: str) -> Iterator[tuple[Gateway, Path]]:
        (tmp_path / "app.pem").write_text(app_credentials.pem_pkcs8, encoding="utf-8")
        assert github.api_url is not None
        path = write_github_config(tmp_path, issuer.url, github.api_url, mode=mode)
        policies = tmp_path / "github-policies.yaml"
        policies.write_text(ONCE + policies.read_text(encoding="utf-8"), encoding="utf-8")
        with running_gateway(path, ca) as gateway:
            yield gateway, path

    return run


def call(gateway: Gateway, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
    with gateway.client() as client:
        return client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})


def test_regression_pat_mode_token_request_is_400_and_consumes_no_jti(
    start: Start, issuer: FakeIssuer
) -> None:
    token = issuer.mint(repository_id="80")
    with start("pat") as (gateway, _):
        refused = call(gateway, "POST", "/token", token, {})
        assert refused.status_code == 400, refused.text
        assert call(gateway, "GET", "/secrets/npm-publish", token).status_code == 200
        replay = call(gateway, "GET", "/secrets/npm-publish", token)
    assert (replay.status_code, replay.json()["message"]) == (401, "token already used")


def test_regression_enterprise_scope_in_app_mode_is_400_before_any_policy(
    start: Start, issuer: FakeIssuer, github: FakeGitHub
) -> None:
    with start("app") as (gateway, _):
        for scope in ("enterprise:octo-ent", "enterprise:not-granted"):
            answer = call(gateway, "POST", "/register", issuer.mint(), {"scope": scope})
            assert answer.status_code == 400, (scope, answer.text)
            assert "cannot manage enterprise runners" in answer.json()["message"]
    assert github.requests == []


def test_regression_github_refusal_after_settling_gives_the_jti_back(
    start: Start, issuer: FakeIssuer
) -> None:
    first, second = issuer.mint(repository_id="80"), issuer.mint(repository_id="80")
    body = {"scope": "octo-org", "name": "taken-by-first"}
    with start("app") as (gateway, _):
        assert call(gateway, "POST", "/jitconfig", first, body).status_code == 200
        assert call(gateway, "POST", "/jitconfig", second, body).status_code == 409
        fresh = {"scope": "octo-org", "name": "free-for-second"}
        answer = call(gateway, "POST", "/jitconfig", second, fresh)
        assert answer.status_code == 200, answer.text
        assert call(gateway, "POST", "/jitconfig", second, fresh).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"scope": "octo-org", "name": "\\ud800"}', id="name"),
        pytest.param(b'{"scope": "octo-org", "work_folder": "_w\\udfff"}', id="work-folder"),
        pytest.param(b'{"scope": "octo-org", "labels": ["linux", "\\ud83d"]}', id="label"),
        pytest.param(b'{"scope": "octo-org", "runner_group": "\\udc00"}', id="group"),
        pytest.param(b'{"scope": "octo-org", "\\ud800": 1}', id="key"),
        pytest.param(b'{"scope": "octo-org", "name": "\xed\xa0\x80"}', id="raw-surrogate-bytes"),
    ],
)
def test_regression_lone_surrogate_in_a_body_is_400(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, body: bytes
) -> None:
    with github_gateway.client() as client:
        answer = client.post(
            "/jitconfig",
            content=body,
            headers={
                "Authorization": f"Bearer {issuer.mint()}",
                "Content-Type": "application/json",
            },
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert github.requests == []


def test_regression_lone_surrogate_claim_in_a_template_is_not_a_500(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    token = issuer.mint(repository="octo-org/\ud800")
    answer = call(github_gateway, "POST", "/register", token, {"scope": "octo-org/octo-repo"})
    assert answer.status_code == 403, answer.text


# --- the server decides what explain decides ---------------------------------------------

_NAMES = itertools.count()
_SCOPES = st.sampled_from(
    ["octo-org", "octo-org/octo-repo", "Octo-Org/Octo-Repo", "octo-org/other",
     "enterprise:octo-ent", "other-org"]
)  # fmt: skip
_LABELS = st.lists(st.sampled_from(["self-hosted", "linux", "X64", "gpu"]), min_size=1, max_size=3)
_PERMISSIONS = st.dictionaries(
    st.sampled_from(["contents", "pull_requests", "issues", "administration"]),
    st.sampled_from(["read", "write"]),
    min_size=1,
    max_size=2,
)
_REQUESTS = st.one_of(
    st.tuples(st.just("secret"), st.sampled_from(["registry", "npm-publish", "nope"])),
    st.tuples(
        st.just("runner"),
        st.builds(lambda a, s: f"{a}:{s}", st.sampled_from(["register", "remove"]), _SCOPES),
    ),
    st.tuples(
        st.just("jitconfig"),
        st.fixed_dictionaries(
            # Enterprise runner groups are outside the fake's API description: no JIT there.
            {"scope": _SCOPES.filter(lambda scope: not scope.startswith("enterprise:"))},
            optional={"labels": _LABELS, "runner_group": st.sampled_from(["ci", "gpu", "other"])},
        ),
    ),
    st.tuples(
        st.just("installation"),
        st.fixed_dictionaries(
            {},
            optional={
                "repositories": st.lists(
                    st.sampled_from(["octo-repo", "docs", "other"]), min_size=1, max_size=2
                ),
                "permissions": _PERMISSIONS,
            },
        ),
    ),
)
_CLAIMS = st.fixed_dictionaries(
    {
        "repository_id": st.sampled_from(["74", "75", "80", "99"]),
        "event_name": st.sampled_from(["push", "pull_request"]),
        "ref": st.sampled_from(["refs/heads/main", "refs/tags/v1", "refs/heads/dev"]),
    }
)
_ROUTES = {"secret": "GET", "runner": "POST", "jitconfig": "POST", "installation": "POST"}


#: The guard decides some runner requests: org runners of octo-org, which a policy grants.
GUARDED = """\
runner_scopes:
  deny: [octo-org]
"""


@pytest.fixture(scope="module")
def guarded_gateway(
    mode: str, _start_github_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> Iterator[Gateway]:
    """A gateway in `mode` whose `runner_scopes` guard refuses what a policy would allow."""
    with _start_github_gateway(mode, GUARDED) as gateway:
        yield gateway


@settings(
    max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(claims=_CLAIMS, request=_REQUESTS)
def test_server_and_explain_decide_alike(
    guarded_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    mode: str,
    claims: dict[str, Any],
    request: tuple[str, Any],
) -> None:
    kind, value = request
    engine = _engine(guarded_gateway)
    token = issuer.mint(**claims)
    identity = dryrun.identity_from_claims(issuer.claims(**claims))
    if kind == "jitconfig":
        value = {**value, "name": f"differential-{next(_NAMES)}"}
    try:
        decision = engine.decide(identity, dryrun.ask_from_spec(kind, value, identity))
    except InvalidRequest:
        expected = {400}
    else:
        event(f"decided by {decision.decider}")
        expected = {200} if decision.allowed else {400 if decision.decider == "mode" else 403}
    path, body = _route(kind, value)
    answer = call(guarded_gateway, _ROUTES[kind], path, token, body)
    assert answer.status_code in expected, (mode, claims, request, answer.text)


def _route(kind: str, value: Any) -> tuple[str, Any]:
    if kind == "secret":
        return f"/secrets/{value}", None
    if kind == "runner":
        action, _, scope = value.partition(":")
        return f"/{action}", {"scope": scope}
    return ("/jitconfig" if kind == "jitconfig" else "/token"), value


_ENGINES: dict[str, Engine] = {}


def _engine(gateway: Gateway) -> Engine:
    """The engine `explain` builds from the config this gateway serves."""
    if gateway.url not in _ENGINES:
        _ENGINES[gateway.url] = Engine.for_config(load_config(gateway.config_path))
    return _ENGINES[gateway.url]
