"""Hypothesis fuzzing of the parsers an attacker or an operator feeds (THREATS 14, 17, 46, 53, 55).

- Token parsing: `Verifier.verify` on arbitrary text, on tokens built from arbitrary
  header and payload JSON, and on mutations of a real token raises only
  `InvalidToken` (or `UpstreamUnavailable`), never sends anything out, and accepts a
  k1-signed token exactly when an independent model of the SPEC's rules says so.
- Policy: `Engine.decide` on arbitrary claims and on requests parsed from arbitrary
  JSON never raises, and for the secrets grant it agrees with a reference model of
  the SPEC (exact or full-match patterns on the claim's text, ASCII case folding for
  the four GitHub names, deny wins).
- Config: `exchanger.config.load` on arbitrary YAML documents and arbitrary text
  raises only `ConfigError`.
- HTTP: arbitrary JSON (and non-JSON) bodies to POST /token, /jitconfig, /register
  through the running gateway never answer 5xx.

Examples are bounded so that the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import string
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from exchanger.config.load import load_config
from exchanger.config.model import IssuerConfig
from exchanger.errors import ConfigError, InvalidRequest, InvalidToken, UpstreamUnavailable
from exchanger.http import make_client
from exchanger.identity.claims import Identity
from exchanger.identity.jwks import IssuerKeys
from exchanger.identity.verify import Verifier
from exchanger.policy.asks import (
    RUNNER_ACTIONS,
    SecretRequest,
    installation_request,
    runner_request,
)
from exchanger.policy.engine import Engine
from tests.fakes.github import FakeGitHub
from tests.fakes.issuer import AUDIENCE, FakeIssuer, b64url
from tests.gateway import Gateway

NOW = 1_760_000_000.0
LEEWAY = 30
MAX_LIFETIME = 21600
FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c", "crit")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(FUZZ, max_examples=60)

# --- strategies ---------------------------------------------------------------------------

#: Every JSON value, including big integers, floats, deep-ish nesting and odd text.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
B64URL = string.ascii_letters + string.digits + "-_"


def numbers_near(center: float) -> st.SearchStrategy[Any]:
    """Time claims around `center`, at the edges of the leeway, and of every wrong type."""
    offsets = st.sampled_from([-MAX_LIFETIME - 1, -301, -31, -30, -29, -1, 0, 1, 29, 30, 31, 300])
    return st.one_of(
        offsets.map(lambda d: int(center + d)),
        offsets.map(lambda d: center + d + 0.5),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["1760000000", True, False, None, [], {}]),
    )


# --- token parsing --------------------------------------------------------------------------


@dataclass
class Rig:
    """A verifier whose keys were fetched once; its key clock never moves (no refetch)."""

    loop: asyncio.AbstractEventLoop
    verifier: Verifier
    keys: IssuerKeys
    issuer: FakeIssuer
    config: IssuerConfig
    outbound: list[str]

    def outcome(self, token: str) -> Identity | Exception:
        async def attempt() -> Identity | Exception:
            try:
                return await self.verifier.verify(token)
            except Exception as exc:
                return exc

        return self.loop.run_until_complete(attempt())


@pytest.fixture(scope="module")
def rig(_issuer_server: FakeIssuer) -> Iterator[Rig]:
    issuer = _issuer_server
    issuer.reset()
    config = IssuerConfig(
        issuer=issuer.url,
        audiences=frozenset({AUDIENCE}),
        leeway_seconds=LEEWAY,
        max_lifetime_seconds=MAX_LIFETIME,
    )
    loop = asyncio.new_event_loop()
    client = make_client()
    outbound: list[str] = []

    async def record(request: httpx.Request) -> None:
        outbound.append(str(request.url))

    client.event_hooks = {"request": [record], "response": []}
    keys = IssuerKeys(config, client, clock=lambda: 0.0)
    loop.run_until_complete(keys.refresh())
    assert keys.ready
    outbound.clear()
    try:
        yield Rig(loop, Verifier({issuer.url: keys}, clock=lambda: NOW), keys, issuer, config, [])
    finally:
        assert outbound == [], "fuzzed tokens made the verifier fetch something"
        loop.run_until_complete(client.aclose())
        loop.close()


def expect_refusal(outcome: Identity | Exception) -> None:
    assert isinstance(outcome, InvalidToken | UpstreamUnavailable), repr(outcome)
    assert outcome.status in (401, 503)


@FUZZ
@given(token=st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_sec_14_arbitrary_text_is_never_a_crash(rig: Rig, token: str) -> None:
    expect_refusal(rig.outcome(token))


segment = st.one_of(
    st.text(alphabet=B64URL, max_size=40),
    st.binary(max_size=60).map(b64url),
    st.text(max_size=10),
    json_values.map(lambda v: b64url(json.dumps(v).encode())),
)


@FUZZ
@given(parts=st.lists(segment, min_size=1, max_size=5))
def test_sec_14_arbitrary_segments_are_never_a_crash(rig: Rig, parts: list[str]) -> None:
    expect_refusal(rig.outcome(".".join(parts)))


def expected_valid(
    rig: Rig, token: str, header: Mapping[str, Any], claims: Mapping[str, Any]
) -> bool:
    """The SPEC's verification rules, for a token whose signature is k1's over its content.

    Beyond the SPEC: a registered header member of the wrong type (`typ: null`) is
    refused, and so is a header segment over 512 characters (joserfc's bounds).
    """

    def number(name: str) -> float | None:
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None

    aud = claims.get("aud")
    audience_ok = aud == AUDIENCE or (
        isinstance(aud, list) and len(aud) > 0 and all(a == AUDIENCE for a in aud)
    )
    exp, iat, nbf = number("exp"), number("iat"), number("nbf")
    sub = claims.get("sub")
    return (
        header.get("alg") == "RS256"
        and not any(name in header for name in FORBIDDEN_HEADERS)
        and all(
            isinstance(header[n], kind) for n, kind in REGISTERED_HEADERS.items() if n in header
        )
        and len(token.split(".", maxsplit=1)[0]) <= 512
        and header.get("kid") == rig.issuer.k1.kid
        and claims.get("iss") == rig.issuer.url
        and audience_ok
        and exp is not None
        and iat is not None
        and exp > NOW - LEEWAY
        and iat <= NOW + LEEWAY
        and ("nbf" not in claims or (nbf is not None and nbf <= NOW + LEEWAY))
        and exp - iat <= MAX_LIFETIME
        and isinstance(sub, str)
        and sub != ""
    )


#: The JWS header members the verifier understands, and the type each must have.
#: Members outside this table are ignored (RFC 7515 §4); their own test is below.
REGISTERED_HEADERS: dict[str, type] = {
    "alg": str,
    "kid": str,
    "typ": str,
    "cty": str,
    "x5t": str,
    "x5t#S256": str,
    "b64": bool,
}
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "RS512", "HS256", "none", "rs256"]) | json_values,
        "kid": st.sampled_from(["38826b17-6a30-5f9b-b169-8beb8202f723", "unknown", ""])
        | json_values,
        "typ": st.just("JWT") | json_values,
        "cty": st.just("JWT") | json_values,
        "x5t": st.just("aGludA") | json_values,
        "x5t#S256": st.just("aGludA") | json_values,
        "b64": st.booleans() | json_values,
        **dict.fromkeys(FORBIDDEN_HEADERS, json_values),
    },
)


def claim_sets(issuer_url: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "iss": st.sampled_from([issuer_url, issuer_url + "/", issuer_url.upper()])
            | json_values,
            "aud": st.sampled_from([AUDIENCE, [AUDIENCE], [AUDIENCE, "x"], [], "x"]) | json_values,
            "sub": st.sampled_from(["repo:octo-org/octo-repo:ref:refs/heads/main", ""])
            | json_values,
            "exp": numbers_near(NOW + 300),
            "iat": numbers_near(NOW),
            "nbf": numbers_near(NOW),
            "jti": json_values,
            "repository": json_values,
        },
    )


@st.composite
def signed_tokens(draw: st.DrawFn, rig: Rig) -> tuple[str, dict[str, Any], dict[str, Any]]:
    header = draw(headers)
    for name, value in (("kid", rig.issuer.k1.kid), ("alg", "RS256")):
        if draw(st.booleans()):
            header.setdefault(name, value)
    claims = draw(claim_sets(rig.issuer.url))
    defaults: dict[str, Any] = {
        "iss": rig.issuer.url,
        "aud": AUDIENCE,
        "sub": "repo:x",
        "exp": int(NOW) + 300,
        "iat": int(NOW),
    }
    for claim, default in defaults.items():
        if draw(st.booleans()):
            claims.setdefault(claim, default)
    token = rig.issuer.sign_raw(
        json.dumps(header, separators=(",", ":")),
        json.dumps(claims, separators=(",", ":")),
        rig.issuer.k1,
        alg="RS256",
    )
    return token, header, claims


@FUZZ
@given(data=st.data())
def test_sec_13_signed_tokens_follow_the_spec_model(rig: Rig, data: st.DataObject) -> None:
    token, header, claims = data.draw(signed_tokens(rig))
    assume(len(token) <= 16 * 1024)
    outcome = rig.outcome(token)
    event(f"outcome: {type(outcome).__name__}")
    if expected_valid(rig, token, header, claims):
        assert isinstance(outcome, Identity), (header, claims, outcome)
        assert dict(outcome.claims) == claims
    else:
        expect_refusal(outcome)


@pytest.mark.parametrize("extra", [{"ver": 2}, {"zip": "DEF"}, {"x5t#S512": "aGludA"}])
def test_sec_05_unknown_header_members_are_ignored(rig: Rig, extra: dict[str, Any]) -> None:
    header = {"alg": "RS256", "typ": "JWT", "kid": rig.issuer.k1.kid, "x5t": "aGludA", **extra}
    claims = {
        "iss": rig.issuer.url,
        "aud": AUDIENCE,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
    }
    outcome = rig.outcome(rig.issuer.sign_raw(header, claims, rig.issuer.k1))
    assert isinstance(outcome, Identity), outcome


@st.composite
def mutated_tokens(draw: st.DrawFn, good: str) -> str:
    parts = good.split(".")
    kind = draw(st.sampled_from(["segment", "char", "insert", "delete", "truncate", "splice"]))
    if kind == "segment":
        index = draw(st.integers(0, 2))
        parts[index] = draw(segment)
        return ".".join(parts)
    if kind == "char":
        at = draw(st.integers(0, len(good) - 1))
        return good[:at] + draw(st.characters()) + good[at + 1 :]
    if kind == "insert":
        at = draw(st.integers(0, len(good)))
        return good[:at] + draw(st.text(min_size=1, max_size=5)) + good[at:]
    if kind == "delete":
        at = draw(st.integers(0, len(good) - 1))
        return good[:at] + good[at + draw(st.integers(1, 20)) :]
    if kind == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    return ".".join(draw(st.lists(st.sampled_from(parts), min_size=2, max_size=4)))


@FUZZ
@given(data=st.data())
def test_sec_14_mutated_real_tokens_are_refused(rig: Rig, data: st.DataObject) -> None:
    good = rig.issuer.sign_raw(
        {"alg": "RS256", "typ": "JWT", "kid": rig.issuer.k1.kid},
        {
            "iss": rig.issuer.url,
            "aud": AUDIENCE,
            "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
            "iat": int(NOW),
            "exp": int(NOW) + 300,
        },
        rig.issuer.k1,
    )
    assert isinstance(rig.outcome(good), Identity)  # the control verifies
    token = data.draw(mutated_tokens(good))
    assume(token != good)
    outcome = rig.outcome(token)
    if isinstance(outcome, Identity):
        # Only a change base64url decoding ignores (trailing bits) may keep a token valid.
        assert _decoded(token) == _decoded(good), token
    else:
        expect_refusal(outcome)


def _decoded(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")]


# --- the policy matcher ---------------------------------------------------------------------

POLICY_CONFIG = """\
issuers:
  - issuer: https://issuer.invalid
    audiences: [aud]
    claims: any
secrets:
  registry: {password: {value: x}}
  npm-publish: {token: {value: y}}
github:
  api_url: https://github.invalid
  token: {value: ghp_fuzz}
policies:
  - name: registry-from-main
    claims:
      repository_id: "74"
      repository_owner_id: 65
      ref: ["refs/heads/main", "match:refs/tags/v[0-9]+"]
    grants:
      secrets: [registry]
  - name: npm-by-name
    claims:
      repository: Octo-Org/Octo-Repo
      repository_id: "74"
      fork: false
    grants:
      secrets: ["match:npm-.*"]
  - name: runners
    claims:
      repository_owner: "match:octo-(org|labs)"
      repository_owner_id: "65"
    grants:
      runner:
        scopes: ["${repository}", "match:${repository_owner}/ci-.*", "enterprise:octo-ent"]
        runner_groups: [ci]
        labels: [linux, x64]
      installation:
        owner: "${repository_owner}"
        repositories: ["${repository}", "docs"]
        permissions: {contents: read, issues: write}
  - name: no-pull-requests
    effect: deny
    claims:
      event_name: [pull_request, pull_request_target]
  - name: no-npm-for-bots
    effect: deny
    claims:
      actor: "match:.*\\\\[bot\\\\]"
    grants:
      secrets: ["match:npm-.*"]
"""

#: Claim values that matter to the policies above, their near misses, and every JSON type.
CLAIM_VALUE_SAMPLES: list[Any] = [
    "74", 74, 74.0, "074", " 74", True, "true", False, "65", 65, "refs/heads/main",
    "refs/heads/main\n", "refs/heads/MAIN", "refs/tags/v1", "refs/tags/v1x", "xrefs/tags/v1",
    "Octo-Org/Octo-Repo", "octo-org/octo-repo", "OCTO-ORG/OCTO-REPO", "octo-org/octo-repo ",
    "Octo-Org/Octo-Repo\u212a", "octo-org", "octo-labs", "octo-orgs", "OCTO-ORG",
    "pull_request", "pull_request_target", "Pull_Request", "push", "false", "dependabot[bot]",
    "me[bot]x", "a.b*c", "${repository}", "match:.*", "",
]  # fmt: skip
claim_value = st.sampled_from(CLAIM_VALUE_SAMPLES) | json_values
CLAIM_NAMES = [
    "repository", "repository_id", "repository_owner", "repository_owner_id", "ref",
    "event_name", "actor", "fork", "sub", "environment",
]  # fmt: skip
GOOD_CLAIMS: dict[str, Any] = {
    "repository": "octo-org/octo-repo",
    "repository_id": "74",
    "repository_owner": "octo-org",
    "repository_owner_id": "65",
    "ref": "refs/heads/main",
    "event_name": "push",
    "actor": "octocat",
    "fork": False,
}

NEAR_MISSES: dict[str, list[Any]] = {
    "repository": ["OCTO-ORG/Octo-Repo", "octo-org/octo-repo ", "octo-org/octo-repo\u212a", 7],
    "repository_id": [74, "074", True, 74.0, "74\n"],
    "repository_owner": ["octo-labs", "Octo-Org", "octo-orgs", "octo-org/x", 65],
    "repository_owner_id": [65, "065", 65.5, ["65"]],
    "ref": ["refs/tags/v1", "refs/tags/v12", "refs/tags/v", "refs/tags/v1\n", "refs/heads/Main"],
    "event_name": ["pull_request", "pull_request_target", "Pull_Request", None],
    "actor": ["dependabot[bot]", "me[bot]x", "[bot]", "bot"],
    "fork": ["false", "False", 0, True, "true"],
}


@st.composite
def claims_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Claims near a granted caller: each claim kept, dropped or replaced; junk added."""
    claims: dict[str, Any] = {}
    for name, good in GOOD_CLAIMS.items():
        choice = draw(st.sampled_from(["keep", "keep", "keep", "drop", "near", "replace"]))
        if choice == "keep":
            claims[name] = good
        elif choice == "near":
            claims[name] = draw(st.sampled_from(NEAR_MISSES[name]))
        elif choice == "replace":
            claims[name] = draw(claim_value)
    extra = draw(st.dictionaries(st.sampled_from(CLAIM_NAMES) | st.text(max_size=6), claim_value))
    return {**extra, **claims} if draw(st.booleans()) else {**claims, **extra}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = tmp_path_factory.mktemp("policy") / "exchanger.yaml"
    path.write_text(POLICY_CONFIG, encoding="utf-8")
    return Engine(load_config(path, environ={}).policies)


def text_of(value: Any) -> str | None:
    """SPEC: strings as sent, integers as decimal digits, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None


def ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def secret_allowed(claims: Mapping[str, Any], name: str) -> bool:
    """A reference model of the SPEC's decision for the two secret policies above."""

    def text(claim: str) -> str | None:
        return text_of(claims.get(claim))

    denied = text("event_name") in ("pull_request", "pull_request_target")
    npm_name = re.fullmatch(r"npm-.*", name) is not None  # RE2 and re: `.` is not a newline
    bot = text("actor")
    if npm_name and bot is not None and re.fullmatch(r".*\[bot\]", bot):
        denied = True
    registry = (
        name == "registry"
        and text("repository_id") == "74"
        and text("repository_owner_id") == "65"
        and (
            text("ref") == "refs/heads/main"
            or re.fullmatch(r"refs/tags/v[0-9]+", text("ref") or "") is not None
        )
    )
    repository = text("repository")
    npm = (
        npm_name
        and repository is not None
        and ascii_lower(repository) == "octo-org/octo-repo"
        and text("repository_id") == "74"
        and text("fork") == "false"
    )
    return not denied and (registry or npm)


SECRET_NAMES = st.sampled_from(["registry", "npm-publish", "npm-", "npm", "Registry", "x"])


@FUZZ
@given(claims=claims_dicts(), name=SECRET_NAMES | st.text(max_size=10))
def test_policy_secrets_decision_matches_the_reference_model(
    engine: Engine, claims: dict[str, Any], name: str
) -> None:
    identity = Identity(issuer="https://issuer.invalid", claims=claims)
    decision = engine.decide(identity, SecretRequest(name=name))
    event(f"{decision.allowed=} by {decision.policy_name}")
    assert decision.allowed == secret_allowed(claims, name), (claims, name, decision.policy_name)
    explained = engine.decide(identity, SecretRequest(name=name), explain=True)
    assert explained.allowed == decision.allowed


#: Ask bodies: mostly the right shape, with arbitrary values and arbitrary extras.
BODY_VALUES_SAMPLES: list[Any] = [
    "octo-org/octo-repo", "octo-org", "enterprise:octo-ent", "OCTO-ORG/ci-1", "octo-org/ci-.*",
    "docs", "octo-org/docs", "*", "ci", "linux", "x64", ["linux"], ["linux", "gpu"], ["docs"],
    ["octo-repo", "docs"], {"contents": "read"}, {"issues": "write"}, {"contents": "admin"},
    {"nope": "read"},
]  # fmt: skip
body_values = st.sampled_from(BODY_VALUES_SAMPLES) | json_values
BODY_KEYS = ["scope", "name", "labels", "runner_group", "work_folder", "owner", "repositories",
             "permissions"]  # fmt: skip
bodies = st.one_of(
    st.dictionaries(st.sampled_from(BODY_KEYS), body_values, max_size=5),
    json_values,
)


@FUZZ
@given(claims=claims_dicts(), body=bodies, endpoint=st.sampled_from([*RUNNER_ACTIONS, "token"]))
def test_policy_never_raises_on_parsed_requests(
    engine: Engine, claims: dict[str, Any], body: Any, endpoint: str
) -> None:
    identity = Identity(issuer="https://issuer.invalid", claims=claims)
    try:
        if endpoint == "token":
            request: Any = installation_request(body, identity.text("repository_owner"))
        else:
            request = runner_request(endpoint, body, identity.text("repository"))  # type: ignore[arg-type]
    except InvalidRequest:
        event(f"{endpoint}: InvalidRequest")
        return
    decision = engine.decide(identity, request)
    event(f"{endpoint}: {decision.allowed=} by {decision.policy_name}")
    assert decision.allowed == (decision.policy is not None and decision.policy.effect == "allow")
    if decision.allowed and endpoint != "token":
        # Every allowed runner scope came from a grant that names it.
        assert request.scope in {
            ascii_lower(text_of(claims.get("repository")) or ""),
            "enterprise:octo-ent",
        } or re.fullmatch(
            re.escape(ascii_lower(str(claims.get("repository_owner")))) + "/ci-.*", request.scope
        )


# --- the config loader ----------------------------------------------------------------------

CONFIG_KEYS = [
    "server", "max_body_bytes", "issuers", "issuer", "audiences", "jwks_uri", "algorithms",
    "leeway_seconds", "max_lifetime_seconds", "github", "api_url", "timeout_seconds", "app",
    "id", "private_key", "installation_id", "token", "runner_scopes", "allow", "deny",
    "secrets", "value", "env", "policies", "policy_files", "name", "effect", "claims",
    "grants", "runner", "scopes", "actions", "runner_groups", "labels", "installation",
    "owner", "repositories", "permissions", "rate_limit", "per_minute", "burst", "key",
    "single_use", "state", "redis_url",
]  # fmt: skip
YAML_SAMPLES = [
    "https://issuer.example", "http://issuer.example", "https://", "RS256", "HS256", "match:(",
    "match:.*", "${repository}", "${", "allow", "deny", "read", "write", "register",
    "redis://127.0.0.1:1/0", "*.yaml", "../../etc/passwd", "/", "", "\x00", "a\x00b",
    "/dev/null", "{env}",
]  # fmt: skip
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),  # NaN and infinities are YAML too (.nan, .inf)
    st.text(max_size=15),
    st.sampled_from(YAML_SAMPLES),
)
#: `{value|env|file: …}` secret sources.
sources = st.dictionaries(
    st.sampled_from(["value", "env", "file"]),
    yaml_scalars,
    min_size=1,
    max_size=2,
)
yaml_documents = st.recursive(
    yaml_scalars | sources,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
VALID_CONFIG = {
    "server": {"max_body_bytes": 65536},
    "issuers": [{"issuer": "https://issuer.example", "audiences": ["aud"], "leeway_seconds": 30}],
    "github": {"api_url": "https://api.github.invalid", "token": {"value": "ghp_x"}},
    "runner_scopes": {"allow": ["match:octo-org/.*"], "deny": ["octo-org/secret"]},
    "secrets": {"registry": {"password": {"value": "x"}, "username": {"env": "HOME"}}},
    "rate_limit": {"per_minute": 60, "burst": 20},
    "policies": [
        {
            "name": "p",
            "claims": {"repository_id": "74", "ref": ["refs/heads/main", "match:refs/tags/.*"]},
            "grants": {
                "secrets": ["registry"],
                "runner": {"scopes": ["${repository}"], "labels": ["linux"]},
            },
            "rate_limit": {"per_minute": 1, "burst": 1},
        },
        {"name": "d", "effect": "deny", "claims": {"event_name": "pull_request"}},
    ],
}


def _mutate(document: Any, path: list[Any], value: Any) -> Any:
    """`document` with the value at `path` (as far as it exists) replaced by `value`."""
    if not path or not isinstance(document, dict | list):
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        keys = list(document)
        key = keys[head % len(keys)] if isinstance(head, int) and keys else head
        return {**document, key: _mutate(document.get(key), rest, value)}
    if not document:
        return [value]
    index = head % len(document) if isinstance(head, int) else 0
    return [*document[:index], _mutate(document[index], rest, value), *document[index + 1 :]]


config_paths = st.lists(st.sampled_from(CONFIG_KEYS) | st.integers(0, 3), max_size=5)


def load_text(text: str) -> None:
    """Load `text` as a config file; only ConfigError may come out."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "exchanger.yaml"
        path.write_text(text, encoding="utf-8")
        problems: list[str] | None = None
        try:
            load_config(path, environ={})
        except ConfigError as exc:
            problems = exc.problems
        if problems is not None:
            event("ConfigError")
            assert problems
            assert all(isinstance(p, str) and p for p in problems)


def dump(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


@FEW
@given(document=yaml_documents)
def test_config_loader_on_arbitrary_yaml_raises_only_config_error(document: Any) -> None:
    load_text(dump(document))


@FEW
@given(path=config_paths, value=yaml_documents)
def test_config_loader_on_mutated_valid_config_raises_only_config_error(
    path: list[Any], value: Any
) -> None:
    load_text(dump(_mutate(VALID_CONFIG, path, value)))


@FEW
@given(text=st.text(max_size=200))
def test_config_loader_on_arbitrary_text_raises_only_config_error(text: str) -> None:
    load_text(text)


@pytest.mark.parametrize(
    "source",
    ['secrets: {registry: {password: {file: "a\\0b"}}}', 'github: {token: {file: "\\0"}}'],
)
def test_config_nul_byte_in_a_file_source_is_a_config_error(source: str) -> None:
    base = "issuers: [{issuer: 'https://issuer.example', audiences: [aud]}]\n"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "exchanger.yaml"
        path.write_text(base + source + "\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={})
    assert any(":2: " in problem for problem in caught.value.problems)


# --- HTTP: arbitrary bodies through the running gateway -----------------------------------


@FUZZ
@given(
    endpoint=st.sampled_from(["/token", "/jitconfig", "/register"]),
    body=bodies,
    claims=st.sampled_from([{}, {"repository_id": "99"}, {"repository_owner": "other"}]),
)
def test_sec_53_arbitrary_json_bodies_never_answer_5xx(
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    endpoint: str,
    body: Any,
    claims: dict[str, Any],
) -> None:
    with app_gateway.client() as http:
        response = http.post(
            endpoint,
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {issuer.mint(**claims)}"},
        )
    event(f"{endpoint}: {response.status_code}")
    assert response.status_code < 500, (body, response.text)
    assert set(response.json()) <= {
        "error", "message", "token", "expires_at", "permissions", "repositories",
        "installation_id", "runner", "encoded_jit_config",
    }  # fmt: skip


@FEW
@given(
    endpoint=st.sampled_from(["/token", "/jitconfig", "/register"]),
    raw=st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
)
def test_sec_53_arbitrary_bytes_never_answer_5xx(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, endpoint: str, raw: bytes
) -> None:
    with app_gateway.client() as http:
        response = http.post(
            endpoint, content=raw, headers={"Authorization": f"Bearer {issuer.mint()}"}
        )
    assert response.status_code < 500, (raw, response.text)
    if response.status_code == 400:
        assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("endpoint", ["/token", "/jitconfig", "/register"])
def test_sec_53_deeply_nested_json_is_400(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, endpoint: str
) -> None:
    body = b'{"scope":' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # under max_body_bytes
    with app_gateway.client() as http:
        response = http.post(
            endpoint, content=body, headers={"Authorization": f"Bearer {issuer.mint()}"}
        )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "message": "the body is not valid JSON"}
    assert github.requests == []


@pytest.mark.parametrize("endpoint", ["/register", "/remove", "/jitconfig"])
def test_explicit_null_scope_is_a_wrong_type_not_a_missing_claim(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, endpoint: str
) -> None:
    """Found by this file's fuzzing: `{"scope": null}` blamed the token's claims."""
    with app_gateway.client() as http:
        response = http.post(
            endpoint, json={"scope": None}, headers={"Authorization": f"Bearer {issuer.mint()}"}
        )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "message": "scope must be a string"}
    assert github.requests == []
