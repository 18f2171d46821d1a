"""GitHub exchanges end to end: gateway over TLS → fake GitHub over TLS, PAT and App mode."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.github import AppCredentials, FakeGitHub, run_fake_github
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import (
    INSTALLATION_ID,
    PAT,
    Gateway,
    post,
    running_gateway,
    ssl_context,
    wait_for,
    write_github_config,
)

MINTING = re.compile(r"registration-token|remove-token|generate-jitconfig")


def minting_calls(github: FakeGitHub) -> list[str]:
    return [r.path for r in github.requests if MINTING.search(r.path)]


FreshGateway = Callable[..., AbstractContextManager[Gateway]]
OwnGitHub = Callable[..., AbstractContextManager[tuple[Gateway, FakeGitHub]]]


@pytest.fixture
def fresh_gateway(
    issuer: FakeIssuer,
    github: FakeGitHub,
    app_credentials: AppCredentials,
    ca: TestCA,
    tmp_path: Path,
) -> FreshGateway:
    """A new gateway (cold caches) in `mode`, with optional extra config."""

    @contextmanager
    def start(mode: str, extra: str = "", pem: str | None = None) -> Iterator[Gateway]:
        (tmp_path / "app.pem").write_text(pem or app_credentials.pem_pkcs8, encoding="utf-8")
        assert github.api_url is not None
        path = write_github_config(tmp_path, issuer.url, github.api_url, mode=mode, extra=extra)
        with running_gateway(path, ca) as gateway:
            yield gateway

    return start


@pytest.fixture
def own_github(
    issuer: FakeIssuer, app_credentials: AppCredentials, ca: TestCA, tmp_path: Path
) -> OwnGitHub:
    """A new App-mode gateway in front of its own fake GitHub with these installations."""

    @contextmanager
    def start(
        installations: Mapping[str, int],
        *,
        installation_repositories: Mapping[int, Sequence[str]] | None = None,
        installation_id: int | None = None,
        policies: str = "",
    ) -> Iterator[tuple[Gateway, FakeGitHub]]:
        fake = FakeGitHub(
            app=app_credentials,
            installations=installations,
            installation_repositories=installation_repositories,
        )
        with run_fake_github(ca, fake) as (running, _server):
            assert running.api_url is not None
            (tmp_path / "app.pem").write_text(app_credentials.pem_pkcs8, encoding="utf-8")
            path = write_github_config(
                tmp_path,
                issuer.url,
                running.api_url,
                mode="app",
                installation_id=installation_id,
                policies=policies,
            )
            with running_gateway(path, ca) as gateway:
                yield gateway, running
            assert running.violations == [], "the gateway sent GitHub something off-spec"

    return start


# --- registration and removal tokens ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "github_path"),
    [
        pytest.param(
            "/register", None,
            "/repos/octo-org/octo-repo/actions/runners/registration-token", id="register-default",
        ),
        pytest.param(
            "/remove", {"scope": "Octo-Org/Octo-Repo"},
            "/repos/octo-org/octo-repo/actions/runners/remove-token", id="remove-repo-any-case",
        ),
        pytest.param(
            "/register", {"scope": "octo-org"},
            "/orgs/octo-org/actions/runners/registration-token", id="register-org",
        ),
    ],
)  # fmt: skip
def test_runner_tokens(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    path: str,
    body: Any,
    github_path: str,
) -> None:
    response = post(github_gateway, path, issuer.mint(), body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"token", "expires_at"}
    assert re.fullmatch(r"[A-Z0-9]{29}", answer["token"])
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)", answer["expires_at"]
    )
    assert response.headers["cache-control"] == "no-store"
    assert minting_calls(github) == [github_path]


def test_expires_at_passes_through_both_formats(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    seen = {post(github_gateway, "/register", issuer.mint()).json()["expires_at"][-1] for _ in "ab"}
    assert seen == {"Z", "0"}  # one `…Z`, one `…-08:00`


@pytest.mark.parametrize(
    ("body", "claims"),
    [
        pytest.param({"scope": "octo-org/other-repo"}, {}, id="repo-outside-grant"),
        pytest.param({"scope": "evil-org"}, {}, id="org-outside-grant"),
        pytest.param(None, {"repository_id": "75"}, id="other-repository-id"),
        pytest.param(None, {"event_name": "pull_request"}, id="deny-policy"),
    ],
)
def test_runner_scope_outside_policy_is_denied_and_mints_nothing(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    body: Any,
    claims: dict[str, Any],
) -> None:
    response = post(github_gateway, "/register", issuer.mint(**claims), body)
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"
    assert github.requests == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"scope": "a/b/c"}, id="three-segments"),
        pytest.param({"scope": ""}, id="empty"),
        pytest.param({"scope": 7}, id="not-a-string"),
        pytest.param({"scope": "octo-org", "extra": 1}, id="unknown-field"),
        pytest.param([1], id="not-an-object"),
        pytest.param({"scope": "../../etc"}, id="traversal"),
    ],
)
def test_bad_runner_body_is_400(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, body: Any
) -> None:
    response = post(github_gateway, "/register", issuer.mint(), body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert github.requests == []


def test_malformed_json_is_400(github_gateway: Gateway, issuer: FakeIssuer) -> None:
    with github_gateway.client() as client:
        response = client.post(
            "/register", content=b"{not json", headers={"Authorization": f"Bearer {issuer.mint()}"}
        )
    assert response.status_code == 400


def test_enterprise_scope_needs_a_token_not_an_app(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, mode: str
) -> None:
    response = post(github_gateway, "/register", issuer.mint(), {"scope": "enterprise:octo-ent"})
    if mode == "app":
        assert response.status_code == 400
        assert "enterprise" in response.json()["message"]
        assert github.requests == []
    else:
        assert response.status_code == 200, response.text
        assert minting_calls(github) == ["/enterprises/octo-ent/actions/runners/registration-token"]


def test_runner_scopes_guard_applies_on_top_of_policies(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    guard = "runner_scopes:\n  allow: ['match:octo-org/.*']\n  deny: [octo-org/octo-repo]\n"
    with fresh_gateway("pat", guard) as gateway:
        denied_default = post(gateway, "/register", issuer.mint())
        org_not_allowed = post(gateway, "/register", issuer.mint(), {"scope": "octo-org"})
    assert denied_default.status_code == 403
    assert org_not_allowed.status_code == 403
    assert github.requests == []


# --- JIT runner configs -----------------------------------------------------------------


def jit_body(github: FakeGitHub) -> dict[str, Any]:
    (request,) = [r for r in github.requests if r.path.endswith("generate-jitconfig")]
    body: dict[str, Any] = request.json
    return body


def test_jitconfig_defaults(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    response = post(github_gateway, "/jitconfig", issuer.mint(), {})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"runner", "encoded_jit_config"}
    assert re.fullmatch(r"octo-repo-[0-9a-f]{8}", answer["runner"]["name"])
    assert isinstance(answer["runner"]["id"], int)
    sent = jit_body(github)
    assert sent == {
        "name": answer["runner"]["name"],
        "runner_group_id": 1,
        "labels": ["self-hosted", "linux", "x64"],
        "work_folder": "_work",
    }


def test_jitconfig_org_group_and_labels(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, mode: str
) -> None:
    name = f"gpu-{mode}"
    body = {"scope": "octo-org", "runner_group": "gpu", "labels": ["linux"], "name": name}
    response = post(github_gateway, "/jitconfig", issuer.mint(), body)
    assert response.status_code == 200, response.text
    assert response.json()["runner"]["name"] == name
    sent = jit_body(github)
    assert sent["runner_group_id"] == 3
    assert sent["labels"] == ["linux"]


def test_jitconfig_org_default_group_is_the_first_listed(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    response = post(github_gateway, "/jitconfig", issuer.mint(), {"scope": "octo-org"})
    assert response.status_code == 200, response.text
    assert jit_body(github)["runner_group_id"] == 2  # "ci"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"scope": "octo-org", "runner_group": "other"}, 403, id="group-not-granted"),
        pytest.param({"labels": ["linux", "gpu"]}, 403, id="labels-not-subset"),
        pytest.param({"runner_group": "ci"}, 400, id="group-on-repository-scope"),
        pytest.param({"labels": []}, 400, id="empty-labels"),
        pytest.param({"labels": ["x"] * 101}, 400, id="too-many-labels"),
        pytest.param({"name": 5}, 400, id="name-not-string"),
    ],
)
def test_jitconfig_refusals(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, body: Any, status: int
) -> None:
    response = post(github_gateway, "/jitconfig", issuer.mint(), body)
    assert response.status_code == status
    assert minting_calls(github) == []


def test_jitconfig_name_taken_is_409(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, mode: str
) -> None:
    body = {"name": f"fixed-name-{mode}"}
    first = post(github_gateway, "/jitconfig", issuer.mint(), body)
    second = post(github_gateway, "/jitconfig", issuer.mint(), body)
    assert first.status_code == 200, first.text
    assert second.status_code == 409
    assert second.json()["error"] == "conflict"


# --- installation tokens ----------------------------------------------------------------


def test_installation_token_defaults_to_the_grant(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    with fresh_gateway("app") as gateway:
        response = post(gateway, "/token", issuer.mint(), {})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"token", "expires_at", "permissions", "repositories", "installation_id"}
    assert answer["installation_id"] == INSTALLATION_ID
    assert sorted(answer["repositories"]) == ["octo-org/docs", "octo-org/octo-repo"]
    granted = github.describe_token(answer["token"])
    assert granted == {
        "installation_id": INSTALLATION_ID,
        "repositories": ["octo-repo", "docs"],
        "permissions": {"contents": "read", "pull_requests": "write", "issues": "read"},
    }
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("body", "repositories", "permissions"),
    [
        pytest.param(
            {"repositories": ["docs"], "permissions": {"contents": "read"}},
            ["docs"], {"contents": "read"}, id="bare-name-subset",
        ),
        pytest.param(
            {"repositories": ["Octo-Org/Octo-Repo"], "permissions": {"pull_requests": "read"}},
            ["octo-repo"], {"pull_requests": "read"}, id="full-name-lower-level",
        ),
        pytest.param(
            {"owner": "OCTO-ORG", "permissions": {"issues": "read"}},
            ["octo-repo", "docs"], {"issues": "read"}, id="owner-any-case",
        ),
    ],
)  # fmt: skip
def test_installation_token_requested_subset(
    fresh_gateway: FreshGateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    body: Any,
    repositories: list[str],
    permissions: dict[str, str],
) -> None:
    with fresh_gateway("app") as gateway:
        response = post(gateway, "/token", issuer.mint(), body)
    assert response.status_code == 200, response.text
    granted = github.describe_token(response.json()["token"])
    assert granted is not None
    assert granted["repositories"] == repositories
    assert granted["permissions"] == permissions


def test_installation_token_all_repositories(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    with fresh_gateway("app") as gateway:
        response = post(gateway, "/token", issuer.mint(repository_id="99"), {"repositories": "*"})
    assert response.status_code == 200, response.text
    granted = github.describe_token(response.json()["token"])
    assert granted is not None
    assert granted["repositories"] is None
    assert granted["permissions"] == {"contents": "read"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"permissions": {"contents": "write"}}, 403, id="higher-level"),
        pytest.param({"permissions": {"administration": "read"}}, 403, id="ungranted-permission"),
        pytest.param({"repositories": ["secret-repo"]}, 403, id="ungranted-repository"),
        pytest.param({"repositories": "*"}, 403, id="all-not-granted"),
        pytest.param({"owner": "other-org"}, 403, id="other-owner"),
        pytest.param(
            {"permissions": {"contents": "read", "issues": "write"}}, 403, id="one-too-high"
        ),
        pytest.param({"permissions": {"made_up": "read"}}, 400, id="unknown-permission"),
        pytest.param({"permissions": {"contents": "owner"}}, 400, id="unknown-level"),
        pytest.param({"repositories": ["other-org/docs"]}, 400, id="repository-of-other-owner"),
        pytest.param({"repositories": [f"r{i}" for i in range(501)]}, 400, id="over-500"),
        pytest.param({"repositories": []}, 400, id="empty-list"),
        pytest.param({"permissions": {}}, 400, id="empty-permissions"),
    ],
)
def test_installation_token_refusals_happen_before_github(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    mode: str,
    body: Any,
    status: int,
) -> None:
    response = post(github_gateway, "/token", issuer.mint(), body)
    # With a token no /token request can succeed: that 400 comes before any 403.
    assert response.status_code == (400 if mode == "pat" else status), response.text
    assert github.requests == []


def test_installation_token_in_pat_mode_is_400(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    with fresh_gateway("pat") as gateway:
        response = post(gateway, "/token", issuer.mint(), {})
    assert response.status_code == 400
    assert "GitHub App" in response.json()["message"]
    assert github.requests == []


def test_stateless_tokens_are_opaque(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    github.token_format = "stateless"
    try:
        with fresh_gateway("app") as gateway:
            response = post(gateway, "/token", issuer.mint(), {})
    finally:
        github.token_format = "classic"
    token = response.json()["token"]
    assert token.startswith("ghs_")
    assert len(token) > 300
    assert github.describe_token(token) is not None


# --- steady state: one GitHub call per exchange ------------------------------------------


def test_app_mode_steady_state_is_one_call_per_exchange(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    with fresh_gateway("app") as gateway:
        post(gateway, "/register", issuer.mint())
        post(gateway, "/token", issuer.mint(), {})
        cold = len(github.requests)
        github.reset()
        for _ in range(3):
            assert post(gateway, "/register", issuer.mint()).status_code == 200
            assert post(gateway, "/token", issuer.mint(), {}).status_code == 200
    assert cold == 4  # installation look-up, runner token, registration token, installation token
    assert len(github.requests) == 6


def test_installation_lookup_is_cached_when_missing(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    with fresh_gateway("app") as gateway:
        token = issuer.mint(repository_owner="nobody-org")
        first = post(gateway, "/token", token, {"owner": "nobody-org"})
        second = post(gateway, "/token", token, {"owner": "nobody-org"})
    assert first.status_code == second.status_code == 403  # the grant is for octo-org only
    assert github.requests == []


# --- installations are bound to their account ---------------------------------------------

PARTNER_INSTALLATION = 5151
PARTNER_POLICY = """\
- name: partner-contents
  claims:
    repository_owner_id: "66"
  grants:
    installation:
      repositories: ["${repository}"]
      permissions: {contents: read}
"""


def partner_token(issuer: FakeIssuer) -> str:
    return issuer.mint(
        repository="partner-org/octo-repo",
        repository_id="80",
        repository_owner="partner-org",
        repository_owner_id="66",
    )


def access_token_posts(github: FakeGitHub) -> list[str]:
    return [r.path for r in github.requests if r.path.endswith("/access_tokens")]


def test_configured_installation_never_serves_another_owner(
    own_github: OwnGitHub, issuer: FakeIssuer
) -> None:
    """Regression: with `installation_id` set, partner-org's `${repository}` grant was minted
    in octo-org's installation, where `octo-repo` is octo-org/octo-repo."""
    installations = {"Octo-Org": INSTALLATION_ID, "partner-org": PARTNER_INSTALLATION}
    with own_github(installations, installation_id=INSTALLATION_ID, policies=PARTNER_POLICY) as (
        gateway,
        github,
    ):
        partner = post(gateway, "/token", partner_token(issuer), {})
        partner_again = post(gateway, "/token", partner_token(issuer), {})
        octo = post(gateway, "/token", issuer.mint(), {})
        requests = [r.path for r in github.requests if r.method == "GET"]
        posts = access_token_posts(github)
        partner_grant = github.describe_token(partner.json()["token"])
        octo_grant = github.describe_token(octo.json()["token"])

    assert partner.status_code == partner_again.status_code == octo.status_code == 200
    assert partner.json()["installation_id"] == PARTNER_INSTALLATION
    assert partner.json()["repositories"] == ["partner-org/octo-repo"]
    assert partner_grant == {
        "installation_id": PARTNER_INSTALLATION,
        "repositories": ["octo-repo"],
        "permissions": {"contents": "read"},
    }
    assert octo.json()["installation_id"] == INSTALLATION_ID  # its own account, any case
    assert octo_grant is not None
    assert octo_grant["installation_id"] == INSTALLATION_ID
    assert posts == [
        f"/app/installations/{PARTNER_INSTALLATION}/access_tokens",
        f"/app/installations/{PARTNER_INSTALLATION}/access_tokens",
        f"/app/installations/{INSTALLATION_ID}/access_tokens",
    ]
    # The configured installation is read once; partner-org is looked up once, then cached.
    assert requests == [
        f"/app/installations/{INSTALLATION_ID}",
        "/orgs/partner-org/installation",
    ]


def test_configured_installation_for_another_owner_is_never_used_when_not_installed(
    own_github: OwnGitHub,
    issuer: FakeIssuer,
) -> None:
    with own_github(
        {"octo-org": INSTALLATION_ID}, installation_id=INSTALLATION_ID, policies=PARTNER_POLICY
    ) as (gateway, github):
        response = post(gateway, "/token", partner_token(issuer), {})
        lookups = [r.path for r in github.requests if r.method == "GET"]
        posts = access_token_posts(github)
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "upstream_error"
    assert "partner-org" in response.json()["message"]
    assert posts == []
    assert lookups == [
        f"/app/installations/{INSTALLATION_ID}",
        "/orgs/partner-org/installation",
        "/users/partner-org/installation",
    ]


def test_unknown_configured_installation_is_a_clear_502_and_never_used(
    own_github: OwnGitHub, issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="exchanger.github"),
        own_github({"octo-org": INSTALLATION_ID}, installation_id=999) as (gateway, github),
    ):
        first = post(gateway, "/token", issuer.mint(), {})
        second = post(gateway, "/register", issuer.mint())
        lookups = [r.path for r in github.requests if r.method == "GET"]
        posts = access_token_posts(github)
        secrets = github.minted_secrets()
    for response in (first, second):
        assert response.status_code == 502, response.text
        assert response.json()["error"] == "upstream_error"
        assert "999" in response.json()["message"]
    assert posts == []
    assert lookups == ["/app/installations/999"]  # the 404 is remembered, like a missing owner
    logged = [r.getMessage() for r in caplog.records if "999" in r.getMessage()]
    assert any("installation_id" in line for line in logged), caplog.text
    assert not any(secret in caplog.text for secret in secrets)


@pytest.mark.parametrize(
    ("inject", "status", "code"),
    [
        pytest.param(lambda g: g.fail("apps/get-installation", 503, times=2), 503,
                     "upstream_unavailable", id="503"),
        pytest.param(lambda g: g.fail("apps/get-installation", 401, times=1), 502,
                     "upstream_error", id="401"),
        pytest.param(lambda g: g.reset_connection("apps/get-installation", times=2), 503,
                     "upstream_unavailable", id="reset"),
    ],
)  # fmt: skip
def test_unreadable_configured_installation_fails_and_is_not_used_blindly(
    own_github: OwnGitHub,
    issuer: FakeIssuer,
    inject: Callable[[FakeGitHub], None],
    status: int,
    code: str,
) -> None:
    with own_github({"octo-org": INSTALLATION_ID}, installation_id=INSTALLATION_ID) as (
        gateway,
        github,
    ):
        inject(github)
        failed = post(gateway, "/token", issuer.mint(), {})
        posts_while_down = access_token_posts(github)
        recovered = post(gateway, "/token", issuer.mint(), {})
    assert failed.status_code == status, failed.text
    assert failed.json()["error"] == code
    assert posts_while_down == []
    assert recovered.status_code == 200, recovered.text  # a failure is not remembered
    assert recovered.json()["installation_id"] == INSTALLATION_ID


def test_concurrent_reads_of_the_configured_installation_share_one_request(
    own_github: OwnGitHub,
    issuer: FakeIssuer,
) -> None:
    async def burst(gateway: Gateway, token: str) -> list[int]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=ssl_context(gateway.ca), timeout=10
        ) as client:
            answers = await asyncio.gather(
                *(client.post("/token", json={}, headers=headers) for _ in range(10))
            )
        return [a.status_code for a in answers]

    with own_github({"octo-org": INSTALLATION_ID}, installation_id=INSTALLATION_ID) as (
        gateway,
        github,
    ):
        statuses = asyncio.run(burst(gateway, issuer.mint()))
        lookups = [r.path for r in github.requests if r.method == "GET"]
    assert statuses == [200] * 10
    assert lookups == [f"/app/installations/{INSTALLATION_ID}"]


def test_a_token_for_another_accounts_repositories_is_never_handed_out(
    issuer: FakeIssuer, app_credentials: AppCredentials, ca: TestCA, tmp_path: Path
) -> None:
    """Should GitHub ever mint in another account's installation, the answer shows it."""

    class Confused(FakeGitHub):
        def _installation_login(self, installation_id: int) -> str | None:
            return "octo-org"  # every installation mints octo-org's repositories

    fake = Confused(
        app=app_credentials,
        installations={"octo-org": INSTALLATION_ID, "partner-org": PARTNER_INSTALLATION},
    )
    with run_fake_github(ca, fake) as (running, _server):
        assert running.api_url is not None
        (tmp_path / "app.pem").write_text(app_credentials.pem_pkcs8, encoding="utf-8")
        path = write_github_config(
            tmp_path, issuer.url, running.api_url, mode="app", policies=PARTNER_POLICY
        )
        with running_gateway(path, ca) as gateway:
            response = post(gateway, "/token", partner_token(issuer), {})
        assert running.violations == []
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "upstream_error"
    assert "ghs_" not in response.text


DOCS_RUNNERS_POLICY = """\
- name: runners-for-docs
  claims:
    repository_owner_id: "65"
    repository_id: "76"
  grants:
    runner:
      scopes: ["${repository}"]
"""


def test_one_repository_without_the_app_does_not_poison_its_owner(
    own_github: OwnGitHub,
    issuer: FakeIssuer,
) -> None:
    """Regression: a 404 from one repository's installation look-up was cached as "not
    installed" for the whole owner, so every other repository of it got 502 for 5 minutes."""
    with own_github(
        {"octo-org": INSTALLATION_ID},
        installation_repositories={INSTALLATION_ID: ["docs"]},  # octo-repo is not selected
        policies=DOCS_RUNNERS_POLICY,
    ) as (gateway, github):
        outside = post(gateway, "/register", issuer.mint())  # octo-org/octo-repo
        docs_token = issuer.mint(repository="octo-org/docs", repository_id="76")
        docs = post(gateway, "/register", docs_token)
        lookups = [r.path for r in github.requests if r.path.endswith("/installation")]
        minted = minting_calls(github)
    assert outside.status_code == 502, outside.text
    assert outside.json()["error"] == "upstream_error"
    assert docs.status_code == 200, docs.text
    assert lookups == [
        "/repos/octo-org/octo-repo/installation",
        "/repos/octo-org/docs/installation",
    ]
    assert minted == ["/repos/octo-org/docs/actions/runners/registration-token"]


def test_a_repository_lookup_is_not_shared_with_another_repository(
    own_github: OwnGitHub,
    issuer: FakeIssuer,
) -> None:
    """Concurrent look-ups of two repositories of one owner are two look-ups, not one."""

    async def both(gateway: Gateway, outside: str, docs: str) -> tuple[int, int]:
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=ssl_context(gateway.ca), timeout=10
        ) as client:
            first = asyncio.create_task(
                client.post("/register", headers={"Authorization": f"Bearer {outside}"})
            )
            await asyncio.to_thread(
                wait_for, lambda: len(github.requests) == 1, "the first look-up"
            )
            second = await client.post("/register", headers={"Authorization": f"Bearer {docs}"})
            return (await first).status_code, second.status_code

    with own_github(
        {"octo-org": INSTALLATION_ID},
        installation_repositories={INSTALLATION_ID: ["docs"]},
        policies=DOCS_RUNNERS_POLICY,
    ) as (gateway, github):
        github.delay("apps/get-repo-installation", 1.5, times=1)  # holds octo-repo's look-up
        outside, docs = asyncio.run(
            both(
                gateway, issuer.mint(), issuer.mint(repository="octo-org/docs", repository_id="76")
            )
        )
    assert (outside, docs) == (502, 200)


def test_pkcs1_key_with_crlf_and_pkcs8_both_work(
    fresh_gateway: FreshGateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    app_credentials: AppCredentials,
) -> None:
    for pem in (app_credentials.pem_pkcs1.replace("\n", "\r\n"), app_credentials.pem_pkcs8):
        with fresh_gateway("app", pem=pem) as gateway:
            assert post(gateway, "/register", issuer.mint()).status_code == 200


# --- upstream failures -------------------------------------------------------------------

REGISTRATION = "actions/create-registration-token-for-repo"


@pytest.mark.parametrize(
    ("inject", "status", "code"),
    [
        pytest.param(lambda g: g.fail(REGISTRATION, 500), 502, "upstream_error", id="500"),
        pytest.param(lambda g: g.fail(REGISTRATION, 502), 503, "upstream_unavailable", id="502"),
        pytest.param(lambda g: g.fail(REGISTRATION, 503), 503, "upstream_unavailable", id="503"),
        pytest.param(lambda g: g.fail(REGISTRATION, 504), 503, "upstream_unavailable", id="504"),
        pytest.param(lambda g: g.fail(REGISTRATION, 401), 502, "upstream_error", id="401"),
        pytest.param(lambda g: g.fail(REGISTRATION, 404), 502, "upstream_error", id="404"),
        pytest.param(lambda g: g.fail(REGISTRATION, 422), 502, "upstream_error", id="422"),
        pytest.param(lambda g: g.rate_limit(REGISTRATION), 429, "rate_limited", id="primary-403"),
        pytest.param(
            lambda g: g.rate_limit(REGISTRATION, status=429), 429, "rate_limited", id="primary-429"
        ),
        pytest.param(
            lambda g: g.secondary_rate_limit(REGISTRATION), 429, "rate_limited", id="secondary"
        ),
        pytest.param(
            lambda g: g.delay(REGISTRATION, 5, times=1), 503, "upstream_unavailable", id="timeout"
        ),
        pytest.param(
            lambda g: g.reset_connection(REGISTRATION, times=1),
            503,
            "upstream_unavailable",
            id="reset",
        ),
    ],
)
def test_upstream_failures_map_to_the_contract(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    inject: Callable[[FakeGitHub], None],
    status: int,
    code: str,
) -> None:
    post(github_gateway, "/register", issuer.mint())  # warm caches: the failure hits the mint
    github.reset()
    inject(github)
    response = post(github_gateway, "/register", issuer.mint())
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    if code == "upstream_error":
        assert str(re.search(r"\d{3}", response.json()["message"]).group()) in response.text  # type: ignore[union-attr]
    assert len(minting_calls(github)) == 1  # a POST is never retried
    assert post(github_gateway, "/register", issuer.mint()).status_code == 200


def test_rate_limit_retry_after_follows_reset(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    post(github_gateway, "/register", issuer.mint())
    github.rate_limit(REGISTRATION, reset_in=120)
    response = post(github_gateway, "/register", issuer.mint())
    assert response.status_code == 429
    assert 100 <= int(response.headers["retry-after"]) <= 121


def test_upstream_message_never_carries_a_credential(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    post(github_gateway, "/register", issuer.mint())
    leak = f"Bad credentials for {PAT} and ghs_{'a' * 36}"
    github.fail(REGISTRATION, 422, {"message": leak, "documentation_url": "https://docs"})
    response = post(github_gateway, "/register", issuer.mint())
    assert response.status_code == 502
    assert "422" in response.json()["message"]
    assert PAT not in response.text
    assert "ghs_" not in response.text


def test_runner_group_listing_is_paginated_and_cached(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    with fresh_gateway("pat") as gateway:
        for group in ("ci", "gpu"):
            body = {"scope": "octo-org", "runner_group": group}
            assert post(gateway, "/jitconfig", issuer.mint(), body).status_code == 200
    listings = [r for r in github.requests if r.path.endswith("runner-groups")]
    assert len(listings) == 1


def test_concurrent_installation_lookups_share_one_request(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    async def burst(gateway: Gateway) -> list[int]:
        headers = {"Authorization": f"Bearer {issuer.mint()}"}
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=ssl_context(gateway.ca), timeout=10
        ) as client:
            answers = await asyncio.gather(
                *(client.post("/token", json={}, headers=headers) for _ in range(10))
            )
        return [a.status_code for a in answers]

    with fresh_gateway("app") as gateway:
        statuses = asyncio.run(burst(gateway))
    assert statuses == [200] * 10
    lookups = [r for r in github.requests if r.path.endswith("/installation")]
    assert len(lookups) == 1


def test_a_failed_get_is_retried_once(
    fresh_gateway: FreshGateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    github.fail("actions/list-self-hosted-runner-groups-for-org", 500, times=1)
    with fresh_gateway("pat") as gateway:
        body = {"scope": "octo-org", "runner_group": "gpu"}
        response = post(gateway, "/jitconfig", issuer.mint(), body)
    assert response.status_code == 200, response.text
    listings = [r for r in github.requests if r.path.endswith("runner-groups")]
    assert len(listings) == 2


def test_github_enterprise_server_api_prefix(
    issuer: FakeIssuer, app_credentials: AppCredentials, ca: TestCA, tmp_path: Path
) -> None:
    ghes = FakeGitHub(app=app_credentials, pat=PAT, installations={"octo-org": 7}, prefix="/api/v3")
    with run_fake_github(ca, ghes) as (fake, _server):
        assert fake.api_url is not None
        assert fake.api_url.endswith("/api/v3")
        (tmp_path / "app.pem").write_text(app_credentials.pem_pkcs1, encoding="utf-8")
        path = write_github_config(tmp_path, issuer.url, fake.api_url, mode="app")
        with running_gateway(path, ca) as gateway:
            register = post(gateway, "/register", issuer.mint())
            minted = post(gateway, "/token", issuer.mint(), {})
        assert register.status_code == 200, register.text
        assert minted.json()["installation_id"] == 7
        assert all(r.path.startswith("/api/v3/") for r in fake.requests)
        assert fake.violations == []
