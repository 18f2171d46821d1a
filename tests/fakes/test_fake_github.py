"""Tests of the fake GitHub itself, over real HTTPS: it must act like GitHub, within its schema."""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from openapi_core import OpenAPI

from tests.fakes.github import (
    API_VERSION,
    SPEC_PATH,
    AppCredentials,
    FakeGitHub,
    RecordedRequest,
    decode_stateless_token,
    openapi_spec,
    run_fake_github,
)
from tests.fakes.tls import TestCA

APP_ID = 4242
PAT = "ghp_FakeGitHubTestPat1234567890abcdefABCD"
ORG = "acme"  # installation 77, repositories web and api, every default permission
USER = "octo-user"  # installation 78, a user account, all repositories
NARROW = "narrow-org"  # installation 79, contents: read only
BIG = "big-org"  # 45 runner groups, for pagination
HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": API_VERSION,
    "User-Agent": "exchanger-fake-github-tests",
}
UNDECODABLE = "A JSON web token could not be decoded"
NOT_ACCESSIBLE = "Resource not accessible by integration"
REPO_UNREACHABLE = (
    "There is at least one repository that does not exist or is not accessible to the parent "
    "installation."
)
NOT_GRANTED = "The permissions requested are not granted to this installation."
CLASSIC = re.compile(r"ghs_[A-Za-z0-9]{36}")
GITHUB_PATTERN = re.compile(r"ghs_[A-Za-z0-9._]{36,}")  # GitHub's regex for both formats
RUNNER_TOKEN = re.compile(r"[A-Z0-9]{29}")


def _fake(app: AppCredentials, **overrides: Any) -> FakeGitHub:
    settings: dict[str, Any] = {
        "app": app,
        "pat": PAT,
        "installations": {"ACME": 77, USER: 78, NARROW: 79},
        "installation_repositories": {77: ["web", "api"]},
        "installation_permissions": {79: {"contents": "read", "metadata": "read"}},
        "user_accounts": [USER],
        "runner_groups": {
            ORG: [(2, "ci"), (3, "gpu")],
            BIG: [(i, f"group-{i:02d}") for i in range(2, 46)],
        },
        "enterprise_runner_groups": {"megacorp": [(7, "enterprise-ci")]},
    }
    settings.update(overrides)
    return FakeGitHub(**settings)


@pytest.fixture(scope="module")
def gh_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("github-ca"))


@pytest.fixture(scope="module")
def tls(gh_ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(gh_ca.ca_file))


@pytest.fixture(scope="module")
def app_creds() -> AppCredentials:
    return AppCredentials.generate(APP_ID)


@pytest.fixture(scope="module")
def stranger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def _served(gh_ca: TestCA, app_creds: AppCredentials) -> Iterator[FakeGitHub]:
    with run_fake_github(gh_ca, _fake(app_creds)) as (fake, _server):
        yield fake


@pytest.fixture
def fake(_served: FakeGitHub) -> Iterator[FakeGitHub]:
    _served.reset()
    _served.token_format = "classic"
    _served.expiry_style = "alternate"
    yield _served
    _served.reset()


@pytest.fixture
def gh(fake: FakeGitHub, tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    assert fake.api_url is not None
    with httpx.Client(base_url=fake.api_url, verify=tls, headers=HEADERS, timeout=5) as client:
        yield client


def pat() -> dict[str, str]:
    return {"Authorization": f"token {PAT}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def app_jwt(app: AppCredentials) -> dict[str, str]:
    return bearer(app.jwt())


def mint(
    gh: httpx.Client,
    app: AppCredentials,
    installation: int = 77,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = gh.post(
        f"/app/installations/{installation}/access_tokens",
        json=body or {},
        headers={**app_jwt(app), **(headers or {})},
    )
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


def unique(prefix: str = "runner") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_github_error(response: httpx.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"message", "documentation_url", "status"}
    assert body["status"] == str(status)
    assert body["documentation_url"].startswith("https://docs.github.com/")
    if message is not None:
        assert body["message"] == message


# --------------------------------------------------------------------------- runner tokens

RUNNER_BASES = {
    "repo": f"/repos/{ORG}/web",
    "org": f"/orgs/{ORG}",
    "enterprise": "/enterprises/megacorp",
}


@pytest.mark.parametrize("action", ["registration-token", "remove-token"])
@pytest.mark.parametrize("scope", list(RUNNER_BASES))
def test_runner_tokens(gh: httpx.Client, fake: FakeGitHub, scope: str, action: str) -> None:
    response = gh.post(f"{RUNNER_BASES[scope]}/actions/runners/{action}", headers=pat())

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "expires_at"}
    assert RUNNER_TOKEN.fullmatch(body["token"])
    lifetime = datetime.fromisoformat(body["expires_at"]).timestamp() - time.time()
    assert 3500 < lifetime <= 3601
    assert response.headers["x-ratelimit-resource"] == "actions_runner_registration"
    assert fake.violations == []


def test_runner_token_expiry_has_milliseconds_and_both_offsets(
    gh: httpx.Client, fake: FakeGitHub
) -> None:
    def expiry() -> str:
        response = gh.post(f"/orgs/{ORG}/actions/runners/registration-token", headers=pat())
        value: str = response.json()["expires_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|-08:00)", value)
        return value

    assert {expiry()[-6:] == "-08:00" for _ in range(2)} == {True, False}
    fake.expiry_style = "utc"
    assert expiry().endswith("Z")
    assert expiry().endswith("Z")
    fake.expiry_style = "offset"
    assert expiry().endswith("-08:00")


# --------------------------------------------------------------------------- JIT configs


@pytest.mark.parametrize(
    ("scope", "group"), [("repo", 1), ("org", 2), ("org", 1), ("enterprise", 7)]
)
def test_jitconfig(gh: httpx.Client, fake: FakeGitHub, scope: str, group: int) -> None:
    name = unique()
    response = gh.post(
        f"{RUNNER_BASES[scope]}/actions/runners/generate-jitconfig",
        json={"name": name, "runner_group_id": group, "labels": ["linux", "x64"]},
        headers=pat(),
    )

    assert response.status_code == 201, response.text
    body = response.json()
    runner = body["runner"]
    assert runner["name"] == name
    assert runner["runner_group_id"] == group
    assert (runner["os"], runner["status"], runner["busy"]) == ("unknown", "offline", False)
    assert [label["name"] for label in runner["labels"]] == ["self-hosted", "linux", "x64"]
    files = json.loads(base64.b64decode(body["encoded_jit_config"]))
    assert set(files) == {".runner", ".credentials", ".credentials_rsaparams"}
    dot_runner = json.loads(base64.b64decode(files[".runner"]))
    assert (dot_runner["AgentName"], dot_runner["WorkFolder"]) == (name, "_work")
    assert body["encoded_jit_config"] in fake.minted_secrets()
    assert fake.runners[-1]["runner"]["id"] == runner["id"]
    assert fake.violations == []


def test_jitconfig_duplicate_name_is_409_per_scope(gh: httpx.Client, fake: FakeGitHub) -> None:
    name = unique()

    def create(base: str, runner_name: str) -> httpx.Response:
        return gh.post(
            f"{base}/actions/runners/generate-jitconfig",
            json={"name": runner_name, "runner_group_id": 1, "labels": ["linux"]},
            headers=pat(),
        )

    assert create(f"/repos/{ORG}/web", name).status_code == 201
    assert_github_error(
        create(f"/repos/{ORG}/web", name),
        409,
        f"Already exists - A runner with the name {name} already exists.",
    )
    assert create(f"/repos/{ORG}/WEB", name.upper()).status_code == 409
    assert create(f"/repos/{ORG}/api", name).status_code == 201
    assert create(f"/orgs/{ORG}", name).status_code == 201
    assert fake.violations == []


def test_jitconfig_names_are_unique_under_concurrency(
    fake: FakeGitHub, tls: ssl.SSLContext
) -> None:
    name = unique()
    assert fake.api_url is not None

    def create(_: int) -> int:
        with httpx.Client(base_url=fake.api_url or "", verify=tls, headers=HEADERS) as client:
            return client.post(
                f"/orgs/{ORG}/actions/runners/generate-jitconfig",
                json={"name": name, "runner_group_id": 1, "labels": ["linux"]},
                headers=pat(),
            ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(create, range(8)))

    assert statuses == [201] + [409] * 7
    assert fake.violations == []


@pytest.mark.parametrize(
    ("scope", "group"),
    [("repo", 2), ("org", 99), ("enterprise", 2)],
    ids=["repo-has-only-default", "org-unknown-group", "enterprise-unknown-group"],
)
def test_jitconfig_unknown_runner_group_is_404(
    gh: httpx.Client, fake: FakeGitHub, scope: str, group: int
) -> None:
    response = gh.post(
        f"{RUNNER_BASES[scope]}/actions/runners/generate-jitconfig",
        json={"name": unique(), "runner_group_id": group, "labels": ["linux"]},
        headers=pat(),
    )

    assert_github_error(response, 404, "Not Found")
    assert fake.violations == []


# --------------------------------------------------------------------------- OpenAPI checks

JIT = f"/orgs/{ORG}/actions/runners/generate-jitconfig"


@dataclass(frozen=True)
class Malformed:
    method: str
    path: str
    body: Any
    app_auth: bool = False


MALFORMED = {
    "labels-empty": Malformed("POST", JIT, {"name": "r", "runner_group_id": 1, "labels": []}),
    "labels-over-100": Malformed(
        "POST", JIT, {"name": "r", "runner_group_id": 1, "labels": [f"l{i}" for i in range(101)]}
    ),
    "group-id-string": Malformed(
        "POST", JIT, {"name": "r", "runner_group_id": "1", "labels": ["a"]}
    ),
    "name-missing": Malformed("POST", JIT, {"runner_group_id": 1, "labels": ["a"]}),
    "labels-not-strings": Malformed(
        "POST", JIT, {"name": "r", "runner_group_id": 1, "labels": [1]}
    ),
    "jit-body-missing": Malformed("POST", JIT, None),
    "permission-level-admin": Malformed(
        "POST", "/app/installations/77/access_tokens", {"permissions": {"contents": "admin"}}, True
    ),
    "repositories-not-a-list": Malformed(
        "POST", "/app/installations/77/access_tokens", {"repositories": "web"}, True
    ),
    "installation-id-not-integer": Malformed(
        "POST", "/app/installations/x/access_tokens", {}, True
    ),
    "per-page-not-integer": Malformed("GET", f"/orgs/{ORG}/actions/runner-groups?per_page=x", None),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
def test_requests_outside_githubs_schema_are_422_and_recorded(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials, case: Malformed
) -> None:
    headers = app_jwt(app_creds) if case.app_auth else pat()
    response = gh.request(
        case.method,
        case.path,
        headers=headers,
        content=None if case.body is None else json.dumps(case.body),
    )

    assert_github_error(response, 422)
    assert response.json()["message"].startswith("Invalid request.")
    assert len(fake.violations) == 1
    assert "request breaks the spec" in fake.violations[0]


def test_malformed_json_is_400(gh: httpx.Client, fake: FakeGitHub) -> None:
    response = gh.post(JIT, content=b"{not json", headers=pat())

    assert_github_error(response, 400, "Problems parsing JSON")
    assert fake.violations == [f"POST {JIT}: body is not JSON"]


def test_unknown_path_is_404_and_a_violation(gh: httpx.Client, fake: FakeGitHub) -> None:
    response = gh.post(f"/repos/{ORG}/web/actions/runners/registration-tokens", headers=pat())

    assert_github_error(response, 404, "Not Found")
    assert "x-ratelimit-remaining" in response.headers
    assert len(fake.violations) == 1
    assert "no such operation" in fake.violations[0]


# --------------------------------------------------------------------------- runner groups


def test_runner_groups_follow_link_pagination(gh: httpx.Client, fake: FakeGitHub) -> None:
    seen: list[int] = []
    url: str | None = f"/orgs/{BIG}/actions/runner-groups"
    pages = 0
    while url:
        response = gh.get(url, headers=pat())
        assert response.status_code == 200
        body = response.json()
        assert body["total_count"] == 45
        seen += [group["id"] for group in body["runner_groups"]]
        pages += 1
        url = response.links.get("next", {}).get("url")

    assert pages == 2
    assert seen == list(range(1, 46))
    first = gh.get(f"/orgs/{BIG}/actions/runner-groups", headers=pat())
    assert len(first.json()["runner_groups"]) == 30
    assert first.links["last"]["url"].endswith("page=2")
    assert fake.violations == []


@pytest.mark.parametrize(
    ("query", "count", "has_next"),
    [
        ("per_page=100", 45, False),
        ("per_page=500", 45, False),
        ("per_page=10&page=5", 5, False),
        ("per_page=10&page=2", 10, True),
        ("per_page=10&page=9", 0, False),
    ],
)
def test_runner_groups_page_sizes(
    gh: httpx.Client, fake: FakeGitHub, query: str, count: int, has_next: bool
) -> None:
    response = gh.get(f"/orgs/{BIG}/actions/runner-groups?{query}", headers=pat())

    assert len(response.json()["runner_groups"]) == count
    assert ("next" in response.links) is has_next
    assert fake.violations == []


def test_runner_groups_always_include_default(gh: httpx.Client, fake: FakeGitHub) -> None:
    groups = gh.get(f"/orgs/{ORG}/actions/runner-groups", headers=pat()).json()["runner_groups"]
    unknown = gh.get("/orgs/nobody/actions/runner-groups", headers=pat()).json()["runner_groups"]

    assert [(g["id"], g["name"], g["default"]) for g in groups] == [
        (1, "Default", True),
        (2, "ci", False),
        (3, "gpu", False),
    ]
    assert [(g["id"], g["name"]) for g in unknown] == [(1, "Default")]
    assert "link" not in gh.get(f"/orgs/{ORG}/actions/runner-groups", headers=pat()).headers
    assert fake.violations == []


# --------------------------------------------------------------------------- installations


@pytest.mark.parametrize(
    ("path", "status", "installation", "target_type"),
    [
        (f"/repos/{ORG}/web", 200, 77, "Organization"),
        (f"/repos/{ORG.upper()}/Web", 200, 77, "Organization"),
        (f"/orgs/{ORG}", 200, 77, "Organization"),
        (f"/users/{ORG}", 200, 77, "Organization"),
        (f"/users/{USER}", 200, 78, "User"),
        (f"/repos/{USER}/anything", 200, 78, "User"),
        (f"/repos/{ORG}/secret", 404, None, None),
        (f"/orgs/{USER}", 404, None, None),
        ("/orgs/nobody", 404, None, None),
        ("/users/nobody", 404, None, None),
    ],
)
def test_installation_lookup(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    *,
    path: str,
    status: int,
    installation: int | None,
    target_type: str | None,
) -> None:
    response = gh.get(f"{path}/installation", headers=app_jwt(app_creds))

    if status == 404:
        assert_github_error(response, 404, "Not Found")
    else:
        body = response.json()
        assert (body["id"], body["target_type"], body["app_id"]) == (
            installation,
            target_type,
            APP_ID,
        )
        assert (
            body["access_tokens_url"]
            == f"{fake.api_url}/app/installations/{installation}/access_tokens"
        )
    assert fake.violations == []


@pytest.mark.parametrize(
    ("installation", "login", "target_type", "selection"),
    [
        (77, "ACME", "Organization", "selected"),  # the account's login as it spells itself
        (78, USER, "User", "all"),
    ],
)
def test_get_installation_by_id(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    installation: int,
    login: str,
    target_type: str,
    selection: str,
) -> None:
    body = gh.get(f"/app/installations/{installation}", headers=app_jwt(app_creds)).json()

    assert (body["id"], body["app_id"], body["repository_selection"]) == (
        installation,
        APP_ID,
        selection,
    )
    assert (body["account"]["login"], body["account"]["type"]) == (login, target_type)
    assert body["target_type"] == target_type
    assert fake.violations == []


def test_get_installation_by_id_unknown_is_404(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    assert_github_error(gh.get("/app/installations/5", headers=app_jwt(app_creds)), 404)
    assert fake.violations == []


def test_get_app(gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials) -> None:
    body = gh.get("/app", headers=app_jwt(app_creds)).json()

    assert (body["id"], body["slug"], body["client_id"]) == (
        APP_ID,
        app_creds.slug,
        app_creds.client_id,
    )
    assert fake.violations == []


# --------------------------------------------------------------------------- access tokens


def test_access_token_defaults_to_everything_the_installation_has(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    selected = mint(gh, app_creds, 77)
    everything = mint(gh, app_creds, 78)

    assert selected["repository_selection"] == "selected"
    assert [r["full_name"] for r in selected["repositories"]] == ["acme/web", "acme/api"]
    assert selected["permissions"]["administration"] == "write"
    assert everything["repository_selection"] == "all"
    assert "repositories" not in everything
    assert fake.describe_token(everything["token"]) == {
        "installation_id": 78,
        "repositories": None,
        "permissions": everything["permissions"],
    }
    lifetime = datetime.fromisoformat(selected["expires_at"]).timestamp() - time.time()
    assert selected["expires_at"].endswith("Z")
    assert 3500 < lifetime <= 3601
    assert fake.violations == []


def test_access_token_scoped_down(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    by_name = mint(
        gh, app_creds, 77, {"repositories": ["WEB"], "permissions": {"contents": "read"}}
    )
    repo_id = by_name["repositories"][0]["id"]
    by_id = mint(gh, app_creds, 77, {"repository_ids": [repo_id]})

    assert by_name["permissions"] == {"contents": "read"}
    assert [r["name"] for r in by_name["repositories"]] == ["web"]
    assert [r["full_name"] for r in by_id["repositories"]] == ["acme/web"]
    assert fake.describe_token(by_name["token"]) == {
        "installation_id": 77,
        "repositories": ["web"],
        "permissions": {"contents": "read"},
    }
    assert fake.violations == []


@pytest.mark.parametrize(
    ("installation", "body", "status", "message"),
    [
        (77, {"permissions": {"bogus_permission": "read"}}, 422, NOT_GRANTED),
        (79, {"permissions": {"administration": "write"}}, 422, NOT_GRANTED),
        (79, {"permissions": {"contents": "write"}}, 422, NOT_GRANTED),
        (77, {"repositories": ["secret"]}, 422, REPO_UNREACHABLE),
        (77, {"repositories": ["acme/web"]}, 422, REPO_UNREACHABLE),
        (77, {"repository_ids": [1]}, 422, REPO_UNREACHABLE),
        (999, {}, 404, "Not Found"),
    ],
    ids=[
        "unknown-permission",
        "permission-not-granted",
        "level-above-grant",
        "repository-not-in-installation",
        "full-name-instead-of-name",
        "unknown-repository-id",
        "unknown-installation",
    ],
)
def test_access_token_refusals(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    *,
    installation: int,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    response = gh.post(
        f"/app/installations/{installation}/access_tokens", json=body, headers=app_jwt(app_creds)
    )

    assert_github_error(response, status, message)
    assert fake.violations == []


# --------------------------------------------------------------------------- token formats


def test_classic_token_format(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    token = mint(gh, app_creds)["token"]

    assert CLASSIC.fullmatch(token)
    assert GITHUB_PATTERN.fullmatch(token)
    assert decode_stateless_token(token) is None
    assert fake.token_is_active(token)


def test_stateless_token_encodes_its_grant(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    fake.token_format = "stateless"
    tokens = [
        mint(
            gh, app_creds, 77, {"repositories": ["web"], "permissions": {"administration": "write"}}
        )["token"]
        for _ in range(5)
    ]

    for token in tokens:
        assert GITHUB_PATTERN.fullmatch(token)
        assert token.startswith(f"ghs_{APP_ID}_")
        assert token.count(".") == 2
        assert 400 <= len(token) <= 700
        claims = decode_stateless_token(token)
        described = fake.describe_token(token)
        assert claims is not None
        assert described == {
            "installation_id": claims["installation_id"],
            "repositories": claims["repositories"],
            "permissions": claims["permissions"],
        }
        assert described["repositories"] == ["web"]
    assert len(set(tokens)) == 5


@pytest.mark.parametrize(
    ("rollout", "header", "expected"),
    [
        ("classic", "enabled", "stateless"),
        ("stateless", "disabled", "classic"),
        ("classic", "true", "classic"),
        ("stateless", "1", "stateless"),
        ("stateless", None, "stateless"),
    ],
)
def test_stateless_header_overrides_rollout(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    *,
    rollout: str,
    header: str | None,
    expected: str,
) -> None:
    fake.token_format = "stateless" if rollout == "stateless" else "classic"
    headers = {} if header is None else {"X-GitHub-Stateless-S2S-Token": header}
    token = mint(gh, app_creds, headers=headers)["token"]

    assert ("." in token) is (expected == "stateless")


def test_describe_token_knows_only_its_own(fake: FakeGitHub) -> None:
    assert fake.describe_token("ghs_" + "A" * 36) is None
    assert fake.describe_token(PAT) is None


# --------------------------------------------------------------------------- authentication


def _raw_jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


JwtFactory = Callable[[AppCredentials, rsa.RSAPrivateKey, int], str]
TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
    "which the assertion expires"
)
IAT = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was "
    "issued"
)

APP_JWTS: dict[str, tuple[JwtFactory, int, str | None]] = {
    "string-iss": (lambda a, k, now: a.jwt(now=now), 200, None),
    "integer-iss": (lambda a, k, now: a.jwt(now=now, iss=APP_ID), 200, None),
    "client-id-iss": (lambda a, k, now: a.jwt(now=now, iss=a.client_id), 200, None),
    "iat-within-drift": (lambda a, k, now: a.jwt(iat=now + 30, exp=now + 500), 200, None),
    "ten-minutes-plus-drift": (lambda a, k, now: a.jwt(iat=now - 60, exp=now + 600), 200, None),
    "bad-signature": (lambda a, k, now: a.jwt(now=now, key=k), 401, UNDECODABLE),
    "wrong-iss": (lambda a, k, now: a.jwt(now=now, iss=APP_ID + 1), 401, UNDECODABLE),
    "exp-too-far": (lambda a, k, now: a.jwt(iat=now, exp=now + 1200), 401, TOO_FAR),
    "lifetime-too-long": (lambda a, k, now: a.jwt(iat=now - 500, exp=now + 500), 401, TOO_FAR),
    "expired": (lambda a, k, now: a.jwt(iat=now - 700, exp=now - 10), 401, EXPIRED),
    "iat-in-future": (lambda a, k, now: a.jwt(iat=now + 300, exp=now + 500), 401, IAT),
    "iat-not-an-integer": (
        lambda a, k, now: a.jwt(now=now, extra_claims={"iat": "yesterday"}),
        401,
        IAT,
    ),
    "alg-none": (
        lambda a, k, now: _raw_jwt({"alg": "none"}, {"iss": APP_ID, "iat": now, "exp": now + 60}),
        401,
        UNDECODABLE,
    ),
    "not-a-jwt": (lambda a, k, now: "not.a.jwt", 401, UNDECODABLE),
}


@pytest.mark.parametrize("case", APP_JWTS.values(), ids=APP_JWTS.keys())
def test_app_jwt_rules(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    stranger_key: rsa.RSAPrivateKey,
    case: tuple[JwtFactory, int, str | None],
) -> None:
    factory, status, message = case
    token = factory(app_creds, stranger_key, int(time.time()))

    response = gh.get("/app", headers=bearer(token))

    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_github_error(response, status, message)
    assert fake.violations == []


def test_app_jwt_needs_the_bearer_scheme(gh: httpx.Client, app_creds: AppCredentials) -> None:
    response = gh.get("/app", headers={"Authorization": f"token {app_creds.jwt()}"})

    assert_github_error(response, 401, UNDECODABLE)


REG = f"/repos/{ORG}/web/actions/runners/registration-token"
ENT_REG = "/enterprises/megacorp/actions/runners/registration-token"


@pytest.mark.parametrize(
    ("credential", "method", "path", "status", "message"),
    [
        ("token-pat", "POST", REG, 201, None),
        ("bearer-pat", "POST", REG, 201, None),
        ("bearer-pat", "POST", ENT_REG, 201, None),
        ("bearer-pat", "GET", f"/orgs/{ORG}/actions/runner-groups", 200, None),
        ("wrong-pat", "POST", REG, 401, "Bad credentials"),
        ("wrong-scheme", "POST", REG, 401, "Bad credentials"),
        ("none", "POST", REG, 401, "Requires authentication"),
        ("app-jwt", "POST", REG, 403, NOT_ACCESSIBLE),
        ("app-jwt", "POST", ENT_REG, 403, NOT_ACCESSIBLE),
        ("app-jwt", "GET", f"/orgs/{ORG}/actions/runner-groups", 403, NOT_ACCESSIBLE),
        ("bearer-pat", "GET", "/app", 401, UNDECODABLE),
        ("bearer-pat", "GET", f"/orgs/{ORG}/installation", 401, UNDECODABLE),
        ("bearer-pat", "POST", "/app/installations/77/access_tokens", 401, UNDECODABLE),
        ("bearer-pat", "GET", "/app/installations/77", 401, UNDECODABLE),
        ("none", "GET", "/app", 401, "Requires authentication"),
        ("bearer-pat", "DELETE", "/installation/token", 401, "Bad credentials"),
        ("app-jwt", "DELETE", "/installation/token", 401, "Bad credentials"),
        ("app-jwt", "DELETE", f"/orgs/{ORG}/actions/runners/5", 403, NOT_ACCESSIBLE),
        ("app-jwt", "DELETE", "/enterprises/megacorp/actions/runners/5", 403, NOT_ACCESSIBLE),
        ("none", "DELETE", f"/repos/{ORG}/web/actions/runners/5", 401, "Requires authentication"),
        ("bearer-pat", "DELETE", f"/orgs/{ORG}/actions/runners/999999", 404, "Not Found"),
    ],
)
def test_who_may_call_what(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    *,
    credential: str,
    method: str,
    path: str,
    status: int,
    message: str | None,
) -> None:
    headers = {
        "token-pat": {"Authorization": f"token {PAT}"},
        "bearer-pat": bearer(PAT),
        "wrong-pat": {"Authorization": "token ghp_not-the-right-one"},
        "wrong-scheme": {"Authorization": f"Basic {PAT}"},
        "none": {},
        "app-jwt": app_jwt(app_creds),
    }[credential]

    response = gh.request(method, path, headers=headers)

    if message is None:
        assert response.status_code == status, response.text
    else:
        assert_github_error(response, status, message)
    assert fake.violations == []


INSTALLATION_TOKEN_CASES = [
    # (token request, method, path, expected status)
    ({}, "POST", f"/repos/{ORG}/web/actions/runners/registration-token", 201),
    ({}, "POST", f"/repos/{ORG}/web/actions/runners/generate-jitconfig", 201),
    ({}, "POST", f"/orgs/{ORG}/actions/runners/remove-token", 201),
    ({}, "DELETE", f"/orgs/{ORG}/actions/runners/999999", 404),
    ({}, "DELETE", "/orgs/other/actions/runners/999999", 404),
    ({}, "DELETE", "/enterprises/megacorp/actions/runners/999999", 403),
    (
        {"permissions": {"contents": "read"}},
        "DELETE",
        f"/repos/{ORG}/web/actions/runners/999999",
        403,
    ),
    ({}, "GET", f"/orgs/{ORG}/actions/runner-groups", 200),
    ({}, "POST", "/enterprises/megacorp/actions/runners/registration-token", 403),
    ({}, "POST", "/enterprises/megacorp/actions/runners/generate-jitconfig", 403),
    (
        {"repositories": ["web"]},
        "POST",
        f"/repos/{ORG}/api/actions/runners/registration-token",
        404,
    ),
    ({}, "POST", "/repos/other/web/actions/runners/registration-token", 404),
    ({}, "POST", "/orgs/other/actions/runners/registration-token", 404),
    (
        {"permissions": {"contents": "read"}},
        "POST",
        f"/repos/{ORG}/web/actions/runners/registration-token",
        403,
    ),
    (
        {"permissions": {"administration": "write"}},
        "POST",
        f"/orgs/{ORG}/actions/runners/registration-token",
        403,
    ),
    (
        {"permissions": {"organization_self_hosted_runners": "write"}},
        "POST",
        f"/orgs/{ORG}/actions/runners/registration-token",
        201,
    ),
    (
        {"permissions": {"organization_self_hosted_runners": "write"}},
        "POST",
        f"/repos/{ORG}/web/actions/runners/registration-token",
        403,
    ),
    (
        {"permissions": {"administration": "read"}},
        "POST",
        f"/repos/{ORG}/web/actions/runners/registration-token",
        403,
    ),
    (
        {"permissions": {"organization_self_hosted_runners": "read"}},
        "GET",
        f"/orgs/{ORG}/actions/runner-groups",
        200,
    ),
    ({}, "GET", "/app", 401),
    ({}, "GET", f"/orgs/{ORG}/installation", 401),
    ({}, "POST", "/app/installations/77/access_tokens", 401),
]


@pytest.fixture(scope="module")
def reach_tokens() -> dict[tuple[str, str], str]:
    """Installation tokens of the module's fake, minted once per (format, grant)."""
    return {}


@pytest.mark.parametrize(("grant", "method", "path", "status"), INSTALLATION_TOKEN_CASES)
@pytest.mark.parametrize("token_format", ["classic", "stateless"])
def test_installation_token_reach(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    reach_tokens: dict[tuple[str, str], str],
    *,
    token_format: str,
    grant: dict[str, Any],
    method: str,
    path: str,
    status: int,
) -> None:
    key = (token_format, json.dumps(grant, sort_keys=True))
    if key not in reach_tokens:  # minting once per grant keeps this table fast
        fake.token_format = "stateless" if token_format == "stateless" else "classic"
        reach_tokens[key] = mint(gh, app_creds, 77, grant)["token"]
    token = reach_tokens[key]
    body = (
        {"name": unique(), "runner_group_id": 1, "labels": ["linux"]}
        if path.endswith("jitconfig")
        else None
    )

    response = gh.request(method, path, headers=bearer(token), json=body)

    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["message"] == NOT_ACCESSIBLE
    assert fake.violations == []


def test_expired_and_revoked_installation_tokens(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    expiring = mint(gh, app_creds)["token"]
    revoked = mint(gh, app_creds)["token"]

    fake.advance_clock(3601)
    assert_github_error(gh.post(REG, headers=bearer(expiring)), 401, "Bad credentials")
    assert not fake.token_is_active(expiring)
    fake.reset()
    assert gh.post(REG, headers=bearer(expiring)).status_code == 201

    assert gh.delete("/installation/token", headers=bearer(revoked)).status_code == 204
    assert_github_error(gh.post(REG, headers=bearer(revoked)), 401, "Bad credentials")
    assert_github_error(gh.delete("/installation/token", headers=bearer(revoked)), 401)
    assert not fake.token_is_active(revoked)
    assert fake.token_is_active(expiring)
    assert fake.violations == []


def test_revocations_are_recorded_with_the_very_token(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    kept = mint(gh, app_creds)["token"]
    revoked = mint(gh, app_creds)["token"]
    before = fake.revocations

    assert gh.delete("/installation/token", headers=bearer(revoked)).status_code == 204

    assert fake.revocations == [*before, revoked]
    assert fake.installation_tokens[-2:] == [kept, revoked]
    (record,) = [r for r in fake.requests if r.method == "DELETE"]
    assert record.operation == "apps/revoke-installation-access-token"
    assert record.headers["authorization"] == "Bearer <installation-token>"
    assert fake.violations == []


# ------------------------------------------------------------- answers other than asked

ASKED = {"repositories": ["web"], "permissions": {"contents": "read", "issues": "write"}}


@pytest.mark.parametrize(
    ("switch", "permissions", "repositories", "selection"),
    [
        pytest.param(
            {"permissions": {"administration": "write"}},
            {"contents": "read", "issues": "write", "administration": "write"},
            ["acme/web"], "selected", id="extra-permission",
        ),
        pytest.param(
            {"permissions": {"contents": "write"}},
            {"contents": "write", "issues": "write"}, ["acme/web"], "selected", id="higher-level",
        ),
        pytest.param(
            {"permissions": {"issues": None}},
            {"contents": "read"}, ["acme/web"], "selected", id="dropped-permission",
        ),
        pytest.param(
            {"repositories": ["api", "partner-org/secret"]},
            {"contents": "read", "issues": "write"},
            ["acme/web", "acme/api", "partner-org/secret"], "selected", id="extra-repositories",
        ),
        pytest.param(
            {"selection_all": True},
            {"contents": "read", "issues": "write"}, None, "all", id="selection-all",
        ),
    ],
)  # fmt: skip
def test_skewed_tokens_grant_what_the_answer_says(
    gh: httpx.Client,
    fake: FakeGitHub,
    app_creds: AppCredentials,
    switch: dict[str, Any],
    permissions: dict[str, str],
    repositories: list[str] | None,
    selection: str,
) -> None:
    fake.skew_tokens(**switch)
    skewed = mint(gh, app_creds, 77, ASKED)
    normal = mint(gh, app_creds, 77, ASKED)  # times=1: the next answer is as asked

    assert skewed["permissions"] == permissions
    assert skewed["repository_selection"] == selection
    listed = skewed.get("repositories")
    assert (None if listed is None else [r["full_name"] for r in listed]) == repositories
    granted = fake.describe_token(skewed["token"])
    assert granted is not None
    assert granted["permissions"] == permissions
    if repositories is None:
        assert granted["repositories"] is None
    assert normal["permissions"] == ASKED["permissions"]
    assert [r["full_name"] for r in normal["repositories"]] == ["acme/web"]
    assert fake.violations == []  # a skewed answer is still within GitHub's description


def test_skewed_tokens_times_and_reset(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    fake.skew_tokens(permissions={"actions": "write"}, times=None)
    assert all("actions" in mint(gh, app_creds, 77, ASKED)["permissions"] for _ in range(3))
    fake.reset()
    assert "actions" not in mint(gh, app_creds, 77, ASKED)["permissions"]
    with pytest.raises(ValueError, match="at least 1"):
        fake.skew_tokens(selection_all=True, times=0)


@pytest.mark.parametrize(
    ("switch", "group", "labels"),
    [
        pytest.param({"group_id": 3}, 3, ["self-hosted", "linux"], id="other-group"),
        pytest.param({"labels": ["gpu"]}, 2, ["self-hosted", "gpu"], id="other-labels"),
    ],
)
def test_misplaced_runners_land_where_the_answer_says(
    gh: httpx.Client, fake: FakeGitHub, switch: dict[str, Any], group: int, labels: list[str]
) -> None:
    fake.misplace_runners(**switch)
    body = {"name": unique(), "runner_group_id": 2, "labels": ["linux"]}
    misplaced = gh.post(JIT, json=body, headers=pat())
    normal = gh.post(JIT, json={**body, "name": unique()}, headers=pat())

    assert misplaced.status_code == normal.status_code == 201
    runner = misplaced.json()["runner"]
    assert runner["runner_group_id"] == group
    assert [label["name"] for label in runner["labels"]] == labels
    (recorded,) = [r["runner"] for r in fake.runners if r["runner"]["id"] == runner["id"]]
    assert recorded == runner
    assert normal.json()["runner"]["runner_group_id"] == 2
    assert [label["name"] for label in normal.json()["runner"]["labels"]] == [
        "self-hosted",
        "linux",
    ]
    assert fake.violations == []


@pytest.mark.parametrize("scope", list(RUNNER_BASES))
def test_deleted_runner_is_gone_and_its_name_free(
    gh: httpx.Client, fake: FakeGitHub, scope: str
) -> None:
    base = RUNNER_BASES[scope]
    body = {"name": unique(), "runner_group_id": 1, "labels": ["linux"]}
    runner_id = gh.post(
        f"{base}/actions/runners/generate-jitconfig", json=body, headers=pat()
    ).json()["runner"]["id"]

    deleted = gh.delete(f"{base}/actions/runners/{runner_id}", headers=pat())
    again = gh.delete(f"{base}/actions/runners/{runner_id}", headers=pat())
    recreated = gh.post(f"{base}/actions/runners/generate-jitconfig", json=body, headers=pat())

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_github_error(again, 404, "Not Found")
    assert recreated.status_code == 201  # the name is free again
    assert runner_id not in [r["runner"]["id"] for r in fake.runners]
    assert [r.operation for r in fake.requests if r.method == "DELETE"] == [
        fake_operation(scope),
        fake_operation(scope),
    ]
    assert fake.violations == []


def fake_operation(scope: str) -> str:
    return {
        "repo": "actions/delete-self-hosted-runner-from-repo",
        "org": "actions/delete-self-hosted-runner-from-org",
        "enterprise": "enterprise-admin/delete-self-hosted-runner-from-enterprise",
    }[scope]


def test_a_runner_is_deleted_only_in_its_own_scope(gh: httpx.Client, fake: FakeGitHub) -> None:
    body = {"name": unique(), "runner_group_id": 1, "labels": ["linux"]}
    runner_id = gh.post(JIT, json=body, headers=pat()).json()["runner"]["id"]

    elsewhere = gh.delete(f"/repos/{ORG}/web/actions/runners/{runner_id}", headers=pat())

    assert_github_error(elsewhere, 404, "Not Found")
    assert runner_id in [r["runner"]["id"] for r in fake.runners]
    assert fake.violations == []


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("override", "status", "violation"),
    [
        ({}, 201, None),
        ({"User-Agent": ""}, 403, "no User-Agent"),
        ({"X-GitHub-Api-Version": "2021-01-01"}, 400, "unknown X-GitHub-Api-Version"),
        ({"X-GitHub-Api-Version": None}, 201, "no X-GitHub-Api-Version"),
        ({"X-GitHub-Api-Version": "2026-03-10"}, 201, "expected 2022-11-28"),
        ({"Accept": "application/json"}, 201, "Accept does not include"),
        ({"Accept": "application/json, application/vnd.github+json"}, 201, None),
    ],
    ids=["all-good", "no-ua", "bad-version", "no-version", "newer-version", "no-accept", "list"],
)
def test_required_headers(
    fake: FakeGitHub,
    tls: ssl.SSLContext,
    override: dict[str, str | None],
    status: int,
    violation: str | None,
) -> None:
    headers = {**HEADERS, **pat()}
    for name, value in override.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with httpx.Client(verify=tls) as client:
        request = client.build_request("POST", f"{fake.api_url}{REG}", headers=headers)
        if override.get("User-Agent") == "":
            del request.headers["User-Agent"]
        response = client.send(request)

    assert response.status_code == status, response.text
    if violation is None:
        assert fake.violations == []
    else:
        assert len(fake.violations) == 1
        assert violation in fake.violations[0]


def test_every_response_carries_rate_limit_headers(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    fake.fail("/orgs/", 500, times=1)
    responses = [
        gh.post(REG, headers=pat()),
        gh.post(REG, headers=pat()),
        gh.post(REG, headers={"Authorization": "token wrong"}),
        gh.get("/app", headers=app_jwt(app_creds)),
        gh.get("/no/such/thing", headers=pat()),
        gh.post(f"/orgs/{ORG}/actions/runners/registration-token", headers=pat()),
    ]

    names = ["limit", "remaining", "used", "reset", "resource"]
    for response in responses:
        for name in names:
            assert response.headers[f"x-ratelimit-{name}"], (response.url, name)
        assert re.fullmatch(r"[0-9A-F:]+", response.headers["x-github-request-id"])
        assert response.headers["content-type"] == "application/json; charset=utf-8"
    first, second = (int(r.headers["x-ratelimit-used"]) for r in responses[:2])
    assert second == first + 1
    assert int(responses[0].headers["x-ratelimit-reset"]) > time.time()
    assert responses[3].headers["x-ratelimit-resource"] == "core"
    assert responses[5].status_code == 500


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected_body"),
    [
        (500, None, None, {"message": "Internal Server Error"}),
        (502, "<html>Bad gateway</html>", None, None),
        (503, {"message": "Service unavailable"}, None, {"message": "Service unavailable"}),
        (401, None, None, {"message": "Bad credentials"}),
        (404, None, None, {"message": "Not Found"}),
        (
            422,
            {"message": "Validation Failed", "errors": []},
            None,
            {"message": "Validation Failed"},
        ),
        (429, None, {"Retry-After": "7"}, {"message": "Too Many Requests"}),
    ],
)
def test_fail_answers_once_then_recovers(
    gh: httpx.Client,
    fake: FakeGitHub,
    *,
    status: int,
    body: dict[str, Any] | str | None,
    headers: dict[str, str] | None,
    expected_body: dict[str, str] | None,
) -> None:
    fake.fail("registration-token$", status, body, headers)

    failed = gh.post(REG, headers=pat())
    other = gh.post(f"/repos/{ORG}/web/actions/runners/remove-token", headers=pat())
    recovered = gh.post(REG, headers=pat())

    assert failed.status_code == status
    if expected_body is None:
        assert failed.text == body
    else:
        assert failed.json().items() >= expected_body.items()
    for name, value in (headers or {}).items():
        assert failed.headers[name] == value
    assert "x-ratelimit-limit" in failed.headers
    assert (other.status_code, recovered.status_code) == (201, 201)


def test_fail_by_operation_id(gh: httpx.Client, fake: FakeGitHub) -> None:
    fake.fail("actions/create-registration-token-for-org", 500)

    repo = gh.post(REG, headers=pat())
    org = gh.post(f"/orgs/{ORG}/actions/runners/registration-token", headers=pat())

    assert (repo.status_code, org.status_code) == (201, 500)


def test_fail_times(gh: httpx.Client, fake: FakeGitHub) -> None:
    fake.fail("registration-token", 500, times=2)
    statuses = [gh.post(REG, headers=pat()).status_code for _ in range(3)]
    fake.fail("registration-token", 502, times=None)
    forever = [gh.post(REG, headers=pat()).status_code for _ in range(3)]
    fake.reset()

    assert statuses == [500, 500, 201]
    assert forever == [502, 502, 502]
    assert gh.post(REG, headers=pat()).status_code == 201
    with pytest.raises(ValueError, match="times"):
        fake.fail("x", 500, times=0)


def test_primary_rate_limit(gh: httpx.Client, fake: FakeGitHub) -> None:
    fake.rate_limit("registration-token", reset_in=120)
    fake.rate_limit("remove-token", status=429)

    forbidden = gh.post(REG, headers=pat())
    too_many = gh.post(f"/repos/{ORG}/web/actions/runners/remove-token", headers=pat())

    for response, status in ((forbidden, 403), (too_many, 429)):
        assert_github_error(response, status)
        assert response.json()["message"].startswith("API rate limit exceeded")
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert response.headers["x-ratelimit-used"] == response.headers["x-ratelimit-limit"]
        assert "retry-after" not in response.headers
    assert 100 < int(forbidden.headers["x-ratelimit-reset"]) - time.time() <= 121


@pytest.mark.parametrize(("status", "retry_after"), [(403, 60), (429, 3), (403, None)])
def test_secondary_rate_limit(
    gh: httpx.Client, fake: FakeGitHub, status: int, retry_after: int | None
) -> None:
    fake.secondary_rate_limit("generate-jitconfig", status=status, retry_after=retry_after)

    response = gh.post(
        JIT, headers=pat(), json={"name": unique(), "runner_group_id": 1, "labels": ["l"]}
    )

    assert_github_error(response, status)
    assert response.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert response.headers.get("retry-after") == (
        None if retry_after is None else str(retry_after)
    )
    assert response.headers["x-ratelimit-remaining"] != "0"


def test_delay_makes_the_client_time_out(gh: httpx.Client, fake: FakeGitHub) -> None:
    fake.delay("registration-token", 30)
    started = time.monotonic()

    for _ in range(2):  # held until reset(), so a retrying client times out again
        with pytest.raises(httpx.ReadTimeout):
            gh.post(REG, headers=pat(), timeout=0.2)

    assert time.monotonic() - started < 5
    fake.reset()  # releases the held request
    assert gh.post(REG, headers=pat()).status_code == 201


def test_delay_shorter_than_the_timeout_still_answers(gh: httpx.Client, fake: FakeGitHub) -> None:
    fake.delay(JIT.rsplit("/", 1)[-1], 0.2, times=1)
    started = time.monotonic()

    response = gh.post(
        JIT, headers=pat(), json={"name": unique(), "runner_group_id": 1, "labels": ["l"]}
    )

    assert response.status_code == 201
    assert time.monotonic() - started >= 0.2


def test_reset_connection_breaks_the_response(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    fake.reset_connection("apps/create-installation-access-token", times=1)

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        gh.post("/app/installations/77/access_tokens", headers=app_jwt(app_creds), json={})

    assert mint(gh, app_creds)["token"].startswith("ghs_")
    assert gh.post(REG, headers=pat()).status_code == 201


# --------------------------------------------------------------------------- records and secrets


def test_requests_are_recorded_with_credentials_redacted(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    token = mint(gh, app_creds)["token"]
    jwt = app_creds.jwt()
    gh.post(REG, headers=bearer(token))
    gh.post(REG, headers=pat())
    gh.get("/app", headers=bearer(jwt))
    gh.post(REG, headers={"Authorization": "token ghp_wrong"})
    gh.post(JIT, headers=pat(), json={"name": "x", "runner_group_id": "1", "labels": []})
    gh.post(REG)

    records = fake.requests
    assert [r.headers.get("authorization") for r in records] == [
        "Bearer <app-jwt>",
        "Bearer <installation-token>",
        "token <pat>",
        "Bearer <app-jwt>",
        "token <invalid>",
        "token <pat>",
        None,
    ]
    assert records[0] == RecordedRequest(
        method="POST",
        path="/app/installations/77/access_tokens",
        query={},
        headers=records[0].headers,
        json={},
        operation="apps/create-installation-access-token",
    )
    assert records[-2].json == {"name": "x", "runner_group_id": "1", "labels": []}
    dump = repr(records) + repr(fake.violations)
    for secret in [*fake.minted_secrets(), jwt, PAT]:
        assert secret not in dump
    assert token in fake.minted_secrets()
    assert PAT in fake.minted_secrets()


def test_app_credentials(app_creds: AppCredentials) -> None:
    assert app_creds.pem_pkcs1.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert app_creds.pem_pkcs8.startswith("-----BEGIN PRIVATE KEY-----")
    assert app_creds.public_key.key_size == 2048
    assert "PRIVATE" not in repr(app_creds)
    assert str(APP_ID) in repr(app_creds)


# --------------------------------------------------------------------------- GHES prefix


def test_ghes_prefix(gh_ca: TestCA, tls: ssl.SSLContext, app_creds: AppCredentials) -> None:
    with (
        run_fake_github(gh_ca, _fake(app_creds, prefix="/api/v3")) as (fake, server),
        httpx.Client(verify=tls, headers=HEADERS) as client,
    ):
        assert fake.api_url == f"{server.url}/api/v3"
        ok = client.post(f"{fake.api_url}{REG}", headers=pat())
        groups = client.get(f"{fake.api_url}/orgs/{BIG}/actions/runner-groups", headers=pat())
        token = client.post(
            f"{fake.api_url}/app/installations/77/access_tokens",
            headers=app_jwt(app_creds),
            json={"repositories": ["web"]},
        )
        unprefixed = client.post(f"{server.url}{REG}", headers=pat())

        assert ok.status_code == 201
        assert groups.links["next"]["url"].startswith(f"{server.url}/api/v3/orgs/")
        assert token.json()["repositories"][0]["url"] == f"{server.url}/api/v3/repos/acme/web"
        assert unprefixed.status_code == 404
        assert len(fake.violations) == 1
        assert "no such operation" in fake.violations[0]


# --------------------------------------------------------------------------- the contract


def test_the_fake_notices_when_its_own_answers_drift(
    gh_ca: TestCA, tls: ssl.SSLContext, app_creds: AppCredentials
) -> None:
    class Drifting(FakeGitHub):
        async def _runner_token(self, *args: Any) -> Any:
            return self._json(201, {"token": "ABC", "expires_at": "tomorrow"})

    with (
        run_fake_github(gh_ca, Drifting(app=app_creds, pat=PAT)) as (fake, server),
        httpx.Client(verify=tls, headers=HEADERS) as client,
    ):
        response = client.post(f"{server.url}{REG}", headers=pat())

        assert response.status_code == 201  # sent as produced, but flagged
        assert len(fake.violations) == 1
        assert "response breaks the spec" in fake.violations[0]
        assert "date-time" in fake.violations[0]


def test_every_canned_response_validates(
    gh: httpx.Client, fake: FakeGitHub, app_creds: AppCredentials
) -> None:
    """One pass over every operation, success and GitHub's usual errors; no violation allowed."""
    operations_seen: set[str] = set()
    token = mint(gh, app_creds, 77)["token"]
    for base in RUNNER_BASES.values():
        for action in ("registration-token", "remove-token"):
            assert gh.post(f"{base}/actions/runners/{action}", headers=pat()).status_code == 201
        name = unique()
        for expected in (201, 409):
            jit = gh.post(
                f"{base}/actions/runners/generate-jitconfig",
                json={"name": name, "runner_group_id": 1, "labels": ["a"], "work_folder": "w"},
                headers=pat(),
            )
            assert jit.status_code == expected
            if expected == 201:
                runner = f"{base}/actions/runners/{jit.json()['runner']['id']}"
        for expected in (204, 404):
            assert gh.delete(runner, headers=pat()).status_code == expected
    jwt = app_jwt(app_creds)
    calls = [
        ("GET", f"/orgs/{ORG}/actions/runner-groups", pat(), None),
        ("GET", f"/orgs/{BIG}/actions/runner-groups?page=2", pat(), None),
        ("GET", f"/repos/{ORG}/web/installation", jwt, None),
        ("GET", f"/repos/{ORG}/nope/installation", jwt, None),
        ("GET", f"/orgs/{ORG}/installation", jwt, None),
        ("GET", f"/users/{USER}/installation", jwt, None),
        ("GET", "/app", jwt, None),
        ("GET", "/app", pat(), None),
        ("GET", "/app/installations/77", jwt, None),
        ("GET", "/app/installations/5", jwt, None),
        ("POST", "/app/installations/77/access_tokens", jwt, {"repositories": ["nope"]}),
        ("POST", "/app/installations/78/access_tokens", jwt, {"permissions": {"issues": "read"}}),
        ("POST", "/app/installations/5/access_tokens", jwt, None),
        ("POST", JIT, pat(), {"name": "x", "runner_group_id": 1, "labels": []}),
        ("POST", JIT, pat(), {"name": " ", "runner_group_id": 1, "labels": ["a"]}),
        ("POST", JIT, bearer(token), {"name": unique(), "runner_group_id": 42, "labels": ["a"]}),
        ("POST", ENT_REG, bearer(token), None),
        ("DELETE", "/installation/token", bearer(token), None),
    ]
    for method, path, headers, body in calls:
        response = gh.request(method, path, headers=headers, json=body)
        assert response.status_code < 500, (path, response.text)
    for record in fake.requests:
        assert record.operation is not None
        operations_seen.add(record.operation)

    assert operations_seen == set(openapi_spec().operations)
    # the only violation is the deliberately malformed JIT body
    assert len(fake.violations) == 1
    assert "request breaks the spec" in fake.violations[0]


def test_spec_subset_is_small_cached_and_fast_to_load() -> None:
    raw = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    started = time.perf_counter()
    OpenAPI.from_dict(raw)
    elapsed = time.perf_counter() - started

    assert openapi_spec() is openapi_spec()
    assert elapsed < 1.0
    assert 50_000 < SPEC_PATH.stat().st_size < 200_000
    assert raw["info"]["version"] == "23.0.2"
    assert len(openapi_spec().operations) == 20
    readme = (SPEC_PATH.parent / "README.md").read_text(encoding="utf-8")
    assert "MIT" in readme
    assert "23.0.2" in readme
