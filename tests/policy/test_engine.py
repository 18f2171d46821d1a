"""Policy decisions, one rule per test, with policies loaded through `config.load`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from exchanger.config.load import load_config
from exchanger.errors import InvalidRequest
from exchanger.identity.claims import Identity
from exchanger.policy.asks import (
    Ask,
    SecretRequest,
    installation_request,
    runner_request,
)
from exchanger.policy.engine import Decision, Engine, InstallationTerms, RunnerTerms

ISS = "https://token.actions.githubusercontent.com"

CLAIMS: dict[str, Any] = {
    "iss": ISS,
    "sub": "repo:octo-org/octo-repo:environment:production",
    "repository": "octo-org/octo-repo",
    "repository_id": "74",
    "repository_owner": "octo-org",
    "repository_owner_id": "65",
    "ref": "refs/heads/main",
    "ref_protected": "true",
    "event_name": "push",
    "actor": "octocat",
    "environment": "production",
    "workflow_ref": "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main",
    "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
    "runner_environment": "github-hosted",
}
MISSING = object()
OWNER_ID = {"repository_owner_id": "65"}


def engine(
    tmp_path: Path, *policies: dict[str, Any], files: dict[str, Any] | None = None
) -> Engine:
    """Write a config holding `policies` (and policy `files`) and load it the real way.

    Each call writes into a fresh directory under `tmp_path`, so a test may build several.
    """
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    document: dict[str, Any] = {
        "issuers": [{"issuer": ISS, "audiences": ["https://exchanger.example"]}],
        "secrets": {
            name: {"v": {"value": "not-a-real-secret"}}
            for name in ("x", "y", "registry", "npm-a", "production-creds")
        },
        "policies": list(policies),
        "github": {"token": {"value": "not-a-real-token"}},
    }
    if files:
        (directory / "policies.d").mkdir()
        for name, content in files.items():
            (directory / "policies.d" / name).write_text(yaml.safe_dump(content, sort_keys=False))
        document["policy_files"] = ["policies.d/*.yaml"]
    path = directory / "exchanger.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), "utf-8")
    return Engine(load_config(path, environ={}).policies)


def policy(
    name: str,
    claims: dict[str, Any] | None = None,
    effect: str | None = None,
    **grants: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "claims": OWNER_ID if claims is None else claims}
    if effect is not None:
        out["effect"] = effect
    if grants:
        out["grants"] = grants
    return out


def identity(**overrides: Any) -> Identity:
    claims = dict(CLAIMS)
    for key, value in overrides.items():
        if value is MISSING:
            claims.pop(key, None)
        else:
            claims[key] = value
    return Identity(issuer=ISS, claims=claims)


def decide(rules: Engine, request: Ask, **overrides: Any) -> Decision:
    return rules.decide(identity(**overrides), request)


def secret(name: str) -> SecretRequest:
    return SecretRequest(name=name)


def runner(action: str = "register", **body: Any) -> Ask:
    return runner_request(action, body, CLAIMS["repository"])  # type: ignore[arg-type]


def install(body: dict[str, Any] | None = None, owner: str | None = "octo-org") -> Ask:
    return installation_request(body or {}, owner)


ALL_GRANTS: dict[str, Any] = {
    "secrets": ["x", "y"],
    "runner": {"scopes": ["${repository}", "octo-org"]},
    "installation": {"repositories": ["${repository}"], "permissions": {"contents": "write"}},
}


# --- default deny ---------------------------------------------------------------------------


def test_no_policies_no_exchange(tmp_path: Path) -> None:
    rules = engine(tmp_path)
    for request in (secret("x"), runner(), install()):
        decision = decide(rules, request)
        assert not decision.allowed
        assert decision.policy is None


def test_no_matching_policy_no_exchange(tmp_path: Path) -> None:
    rules = engine(tmp_path, policy("other-org", {"repository_owner_id": "999"}, **ALL_GRANTS))
    for request in (secret("x"), runner(), install()):
        decision = decide(rules, request)
        assert not decision.allowed
        assert decision.policy is None


def test_matching_policy_allows_and_is_named(tmp_path: Path) -> None:
    rules = engine(tmp_path, policy("octo", **ALL_GRANTS))
    decision = decide(rules, secret("x"))
    assert decision.allowed
    assert decision.policy_name == "octo"


# --- claim matching -------------------------------------------------------------------------

# (id, claim rules of the policy, claim overrides of the caller, allowed)
CLAIM_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("exact-string", {"repository_id": "74"}, {}, True),
    ("exact-string-other-value", {"repository_id": "74"}, {"repository_id": "75"}, False),
    ("missing-claim", {"repository_id": "74"}, {"repository_id": MISSING}, False),
    ("list-claim", {"repository_id": "74"}, {"repository_id": ["74"]}, False),
    ("object-claim", {"repository_id": "74"}, {"repository_id": {"id": "74"}}, False),
    ("null-claim", {"repository_id": "74"}, {"repository_id": None}, False),
    ("float-claim-int-pattern", {"repository_id": 74}, {"repository_id": 74.0}, False),
    ("float-claim-string-pattern", {"repository_id": "74"}, {"repository_id": 74.0}, False),
    ("int-pattern-string-claim", {"repository_id": 74}, {}, True),
    ("int-pattern-int-claim", {"repository_id": 74}, {"repository_id": 74}, True),
    ("string-pattern-int-claim", {"repository_id": "74"}, {"repository_id": 74}, True),
    ("int-pattern-leading-zero", {"repository_id": 74}, {"repository_id": "074"}, False),
    ("int-pattern-trailing-space", {"repository_id": 74}, {"repository_id": "74 "}, False),
    ("int-pattern-plus-sign", {"repository_id": 74}, {"repository_id": "+74"}, False),
    ("int-pattern-arabic-digits", {"repository_id": 74}, {"repository_id": "\u0667\u0664"}, False),
    ("int-pattern-bool-claim", {"repository_id": 1}, {"repository_id": True}, False),
    ("bool-pattern-bool-claim", {"ref_protected": True}, {"ref_protected": True}, True),
    ("bool-pattern-string-claim", {"ref_protected": True}, {"ref_protected": "true"}, True),
    ("bool-pattern-false-claim", {"ref_protected": True}, {"ref_protected": False}, False),
    ("bool-pattern-title-case", {"ref_protected": True}, {"ref_protected": "True"}, False),
    ("bool-pattern-int-claim", {"ref_protected": True}, {"ref_protected": 1}, False),
    ("false-pattern-false-claim", {"ref_protected": False}, {"ref_protected": False}, True),
    ("string-pattern-bool-claim", {"ref_protected": "true"}, {"ref_protected": True}, True),
    ("regex-missing-claim", {"environment": "match:.*"}, {"environment": MISSING}, False),
    ("regex-null-claim", {"environment": "match:.*"}, {"environment": None}, False),
    ("regex-list-claim", {"environment": "match:.*"}, {"environment": ["production"]}, False),
    ("regex-float-claim", {"run_attempt": "match:[0-9]+"}, {"run_attempt": 1.0}, False),
    ("regex-int-claim", {"run_attempt": "match:[0-9]+"}, {"run_attempt": 2}, True),
    ("list-any-item", {"ref": ["refs/heads/dev", "refs/heads/main"]}, {}, True),
    ("list-no-item", {"ref": ["refs/heads/dev", "refs/heads/main"]}, {"ref": "refs/x"}, False),
    ("all-claims-must-match", {"repository_id": "74", "ref": "refs/heads/dev"}, {}, False),
    (
        "repository-ignores-ascii-case",
        {"repository": "octo-org/octo-repo", "repository_id": "74"},
        {"repository": "Octo-Org/OCTO-REPO"},
        True,
    ),
    ("owner-ignores-ascii-case", {"repository_owner": "Octo-Org"}, {}, True),
    ("actor-ignores-ascii-case", {"actor": "OctoCat"}, {}, True),
    (
        "environment-ignores-ascii-case",
        {"environment": "production"},
        {"environment": "PRODUCTION"},
        True,
    ),
    ("ref-is-case-sensitive", {"ref": "refs/heads/main"}, {"ref": "refs/heads/Main"}, False),
    (
        "workflow-ref-is-case-sensitive",
        {"workflow_ref": CLAIMS["workflow_ref"]},
        {"workflow_ref": CLAIMS["workflow_ref"].replace("ci.yml", "CI.yml")},
        False,
    ),
    (
        "job-workflow-ref-is-case-sensitive",
        {"job_workflow_ref": CLAIMS["job_workflow_ref"]},
        {"job_workflow_ref": CLAIMS["job_workflow_ref"].replace("Main", "main").upper()},
        False,
    ),
    ("sub-is-case-sensitive", {"sub": CLAIMS["sub"]}, {"sub": CLAIMS["sub"].upper()}, False),
    ("event-name-is-case-sensitive", {"event_name": "push"}, {"event_name": "PUSH"}, False),
    (
        "non-ascii-not-folded",
        {"environment": "\u00e9t\u00e9"},
        {"environment": "\u00c9T\u00c9"},
        False,
    ),
    (
        "kelvin-sign-is-not-k",
        {"repository_owner": "kube-org"},
        {"repository_owner": "\u212aube-org"},
        False,
    ),
    ("cyrillic-lookalike", {"ref": "refs/heads/main"}, {"ref": "refs/heads/m\u0430in"}, False),
    (
        "regex-sees-value-as-sent",
        {"repository_owner": "match:octo-org"},
        {"repository_owner": "Octo-Org"},
        False,
    ),
    (
        "regex-full-match-not-prefix",
        {"repository_owner": "match:octo-org"},
        {"repository_owner": "octo-org-evil"},
        False,
    ),
    (
        "regex-full-match-not-search",
        {"repository": "match:octo-org/.*"},
        {"repository": "evil-octo-org/app"},
        False,
    ),
    (
        "regex-alternation-anchored",
        {"ref": "match:refs/heads/main|refs/heads/dev"},
        {"ref": "refs/heads/main-x"},
        False,
    ),
    (
        "exact-dot-is-literal",
        {"repository": "octo-org/app.v1"},
        {"repository": "octo-org/appXv1"},
        False,
    ),
    (
        "exact-trailing-newline",
        {"repository": "octo-org/octo-repo"},
        {"repository": "octo-org/octo-repo\n"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("claims", "overrides", "allowed"),
    [case[1:] for case in CLAIM_CASES],
    ids=[case[0] for case in CLAIM_CASES],
)
def test_claim_matching(
    tmp_path: Path, claims: dict[str, Any], overrides: dict[str, Any], allowed: bool
) -> None:
    rules = engine(tmp_path, policy("p", {**OWNER_ID, **claims}, secrets=["x"]))
    assert decide(rules, secret("x"), **overrides).allowed is allowed


def test_each_missing_claim_denies(tmp_path: Path) -> None:
    pinned = ("repository_owner_id", "repository_id", "ref", "event_name", "runner_environment")
    rules = engine(tmp_path, policy("p0", {k: CLAIMS[k] for k in pinned}, secrets=["x"]))
    assert decide(rules, secret("x")).allowed
    for claim in pinned:
        assert not decide(rules, secret("x"), **{claim: MISSING}).allowed, claim


# --- deny -----------------------------------------------------------------------------------

_ALLOW = policy("allow-octo", **ALL_GRANTS)
_DENY_PUSH = policy("no-push", {"event_name": "push"}, effect="deny")


@pytest.mark.parametrize("order", ["deny-first", "deny-last"])
def test_deny_wins_regardless_of_order(tmp_path: Path, order: str) -> None:
    policies = [_DENY_PUSH, _ALLOW] if order == "deny-first" else [_ALLOW, _DENY_PUSH]
    rules = engine(tmp_path, *policies)
    decision = decide(rules, secret("x"))
    assert not decision.allowed
    assert decision.policy_name == "no-push"
    assert decide(rules, secret("x"), event_name="workflow_dispatch").allowed


@pytest.mark.parametrize(
    "request_",
    [secret("x"), runner("register"), runner("jitconfig", scope="octo-org"), install()],
    ids=["secret", "runner-register", "runner-jitconfig", "installation"],
)
def test_deny_without_grants_covers_everything(tmp_path: Path, request_: Ask) -> None:
    rules = engine(tmp_path, _ALLOW, _DENY_PUSH)
    assert decide(rules, request_, event_name="workflow_dispatch").allowed
    assert not decide(rules, request_).allowed


def test_deny_with_grants_covers_only_what_it_grants(tmp_path: Path) -> None:
    deny = policy("no-x", {"event_name": "push"}, effect="deny", secrets=["x"])
    rules = engine(tmp_path, _ALLOW, deny)
    assert decide(rules, secret("x")).policy_name == "no-x"
    assert not decide(rules, secret("x")).allowed
    assert decide(rules, secret("y")).allowed
    assert decide(rules, runner()).allowed
    assert decide(rules, install()).allowed


def test_deny_of_one_grant_kind_leaves_the_others(tmp_path: Path) -> None:
    deny = policy(
        "no-runners", {"event_name": "push"}, effect="deny", runner={"scopes": ["match:.*"]}
    )
    rules = engine(tmp_path, _ALLOW, deny)
    assert not decide(rules, runner()).allowed
    assert not decide(rules, runner("jitconfig", scope="octo-org")).allowed
    assert decide(rules, secret("x")).allowed
    assert decide(rules, install()).allowed


def test_deny_whose_claims_do_not_match_does_nothing(tmp_path: Path) -> None:
    rules = engine(
        tmp_path, policy("no-prs", {"event_name": "pull_request"}, effect="deny"), _ALLOW
    )
    assert decide(rules, secret("x")).allowed
    assert not decide(rules, secret("x"), event_name="pull_request").allowed


def test_deny_compares_names_case_insensitively(tmp_path: Path) -> None:
    deny = policy("no-secret-repo", {"repository": "octo-org/secret-repo"}, effect="deny")
    rules = engine(tmp_path, _ALLOW, deny)
    assert not decide(rules, secret("x"), repository="Octo-Org/Secret-Repo").allowed
    deny_env = policy("no-prod", {"environment": "production"}, effect="deny")
    rules = engine(tmp_path, _ALLOW, deny_env)
    assert not decide(rules, secret("x"), environment="PRODUCTION").allowed


_ALLOW_WIDE = policy(
    "allow-wide",
    installation={
        "repositories": "*",
        "permissions": {"contents": "write", "issues": "write"},
    },
    runner={"scopes": ["octo-org"], "runner_groups": ["ci", "gpu"]},
)
_DENY_NARROW = policy(
    "deny-narrow",
    {"event_name": "push"},
    effect="deny",
    installation={"repositories": ["secret-repo"], "permissions": {"contents": "read"}},
    runner={"scopes": ["octo-org"], "labels": ["gpu"]},
)

# (id, request, allowed): a deny applies when the request asks for anything it names.
DENY_OVERLAP: list[tuple[str, Ask, bool]] = [
    ("extra-repository", install({"repositories": ["secret-repo", "octo-repo"]}), False),
    (
        "extra-permission",
        install(
            {
                "repositories": ["secret-repo"],
                "permissions": {"contents": "read", "issues": "write"},
            }
        ),
        False,
    ),
    (
        "higher-level",
        install({"repositories": ["secret-repo"], "permissions": {"contents": "write"}}),
        False,
    ),
    ("default-repositories", install({"permissions": {"contents": "read"}}), False),
    ("all-repositories", install({"repositories": "*"}), False),
    ("other-repository", install({"repositories": ["octo-repo"]}), True),
    (
        "other-permission",
        install({"repositories": ["secret-repo"], "permissions": {"issues": "write"}}),
        True,
    ),
    ("extra-label", runner("jitconfig", scope="octo-org", labels=["gpu", "linux"]), False),
    ("default-labels", runner("jitconfig", scope="octo-org"), False),
    ("other-labels", runner("jitconfig", scope="octo-org", labels=["linux"]), True),
]


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [case[1:] for case in DENY_OVERLAP],
    ids=[case[0] for case in DENY_OVERLAP],
)
def test_deny_cannot_be_dodged_by_asking_for_more(
    tmp_path: Path, request_: Ask, allowed: bool
) -> None:
    rules = engine(tmp_path, _ALLOW_WIDE, _DENY_NARROW)
    assert decide(rules, request_, event_name="workflow_dispatch").allowed
    decision = decide(rules, request_)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.policy_name == "deny-narrow"


def test_deny_of_a_permission_level_denies_that_level_and_above(tmp_path: Path) -> None:
    deny = policy(
        "no-writes",
        {"event_name": "push"},
        effect="deny",
        installation={"repositories": "*", "permissions": {"contents": "write"}},
    )
    rules = engine(tmp_path, _ALLOW_WIDE, deny)
    assert decide(rules, install({"permissions": {"contents": "read"}})).allowed
    assert not decide(rules, install({"permissions": {"contents": "write"}})).allowed
    assert not decide(
        rules, install({"permissions": {"issues": "write", "contents": "write"}})
    ).allowed
    assert decide(rules, install({"permissions": {"issues": "write"}})).allowed
    assert not decide(rules, install()).allowed  # defaults could include it: denied


def test_deny_runner_grant_without_groups_denies_every_group(tmp_path: Path) -> None:
    deny = policy(
        "no-org-runners", {"event_name": "push"}, effect="deny", runner={"scopes": ["octo-org"]}
    )
    rules = engine(tmp_path, _ALLOW_WIDE, deny)
    for group in (None, "ci", "gpu"):
        body = {"scope": "octo-org"} | ({} if group is None else {"runner_group": group})
        assert decide(rules, runner("jitconfig", **body), event_name="pr").allowed
        assert not decide(rules, runner("jitconfig", **body)).allowed, group


def test_deny_runner_groups_listed(tmp_path: Path) -> None:
    deny = policy(
        "no-gpu",
        {"event_name": "push"},
        effect="deny",
        runner={"scopes": ["octo-org"], "runner_groups": ["gpu"]},
    )
    rules = engine(tmp_path, _ALLOW_WIDE, deny)
    assert not decide(rules, runner("jitconfig", scope="octo-org", runner_group="gpu")).allowed
    assert decide(rules, runner("jitconfig", scope="octo-org", runner_group="ci")).allowed


# --- grants of different policies are never merged -------------------------------------------


def test_grants_of_two_policies_are_never_merged(tmp_path: Path) -> None:
    a = policy(
        "a",
        secrets=["x"],
        installation={"repositories": ["${repository}"], "permissions": {"contents": "read"}},
    )
    b = policy(
        "b",
        secrets=["y"],
        installation={
            "repositories": ["${repository}", "docs"],
            "permissions": {"issues": "write"},
        },
    )
    rules = engine(tmp_path, a, b)
    assert decide(rules, secret("x")).policy_name == "a"
    assert decide(rules, secret("y")).policy_name == "b"
    assert decide(rules, install({"permissions": {"contents": "read"}})).policy_name == "a"
    assert decide(rules, install({"permissions": {"issues": "write"}})).policy_name == "b"
    both = decide(rules, install({"permissions": {"contents": "read", "issues": "write"}}))
    assert not both.allowed
    assert both.policy is None
    repos = decide(
        rules, install({"repositories": ["octo-repo", "docs"], "permissions": {"contents": "read"}})
    )
    assert not repos.allowed


# --- secrets ----------------------------------------------------------------------------------

SECRET_CASES: list[tuple[str, str, bool]] = [
    ("exact-name", "registry", True),
    ("exact-name-other-case", "Registry", False),
    ("exact-name-prefix", "registry2", False),
    ("regex-name", "npm-a", True),
    ("regex-needs-whole-prefix", "npm", False),
    ("regex-full-match", "xnpm-a", False),
    ("regex-no-newline", "npm-a\n", False),
    ("templated-name", "production-creds", True),
    ("not-granted", "x", False),
]


@pytest.mark.parametrize(
    ("name", "allowed"), [c[1:] for c in SECRET_CASES], ids=[c[0] for c in SECRET_CASES]
)
def test_secret_grants(tmp_path: Path, name: str, allowed: bool) -> None:
    rules = engine(
        tmp_path, policy("p", secrets=["registry", "match:npm-.*", "${environment}-creds"])
    )
    assert decide(rules, secret(name)).allowed is allowed


def test_secret_template_that_cannot_render_voids_the_secrets_grant(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy(
            "p",
            secrets=["registry", "${environment}-creds"],
            runner={"scopes": ["${repository}"]},
        ),
    )
    assert decide(rules, secret("registry")).allowed
    for bad in (MISSING, None, ["production"], 1.5, True):
        assert not decide(rules, secret("registry"), environment=bad).allowed, bad
        assert not decide(rules, secret("production-creds"), environment=bad).allowed, bad
        assert decide(rules, runner(), environment=bad).allowed, bad


# --- runner grants ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "action", "allowed"),
    [
        (None, "register", True),
        (None, "remove", True),
        (None, "jitconfig", True),
        (["register"], "register", True),
        (["register"], "remove", False),
        (["register"], "jitconfig", False),
        (["jitconfig", "remove"], "remove", True),
    ],
    ids=[
        "default-register",
        "default-remove",
        "default-jit",
        "only-register",
        "not-remove",
        "not-jit",
        "listed-remove",
    ],
)
def test_runner_actions(
    tmp_path: Path, actions: list[str] | None, action: str, allowed: bool
) -> None:
    grant: dict[str, Any] = {"scopes": ["${repository}"]}
    if actions is not None:
        grant["actions"] = actions
    rules = engine(tmp_path, policy("p", runner=grant))
    assert decide(rules, runner(action)).allowed is allowed


SCOPE_CASES: list[tuple[str, str, str | None, bool]] = [
    ("template-default-scope", "${repository}", None, True),
    ("template-explicit", "${repository}", "octo-org/octo-repo", True),
    ("template-request-case", "${repository}", "Octo-Org/OCTO-REPO", True),
    ("template-other-repo", "${repository}", "octo-org/other", False),
    ("template-org-scope", "${repository}", "octo-org", False),
    ("template-in-regex-literal", "match:${repository_owner}/.*", "octo-org/any", True),
    ("template-in-regex-other-owner", "match:${repository_owner}/.*", "evil-org/any", False),
    ("template-integer-claim", "octo-org/repo-${repository_id}", "octo-org/repo-74", True),
    ("org-exact", "octo-org", "octo-org", True),
    ("org-exact-request-case", "octo-org", "OCTO-ORG", True),
    ("org-exact-longer", "octo-org", "octo-org-evil", False),
    ("org-exact-grant-case", "Octo-Org", "octo-org", True),
    ("regex-repos", "match:octo-org/.*", "octo-org/x", True),
    ("regex-repos-search", "match:octo-org/.*", "evil-octo-org/x", False),
    ("regex-repos-not-org", "match:octo-org/.*", "octo-org", False),
    ("enterprise", "enterprise:acme", "enterprise:acme", True),
    ("enterprise-other", "enterprise:acme", "enterprise:acme2", False),
]


@pytest.mark.parametrize(
    ("grant", "scope", "allowed"), [c[1:] for c in SCOPE_CASES], ids=[c[0] for c in SCOPE_CASES]
)
def test_runner_scopes(tmp_path: Path, grant: str, scope: str | None, allowed: bool) -> None:
    rules = engine(tmp_path, policy("p", runner={"scopes": [grant]}))
    body = {} if scope is None else {"scope": scope}
    assert decide(rules, runner("register", **body)).allowed is allowed


def test_runner_scope_template_that_cannot_render_voids_the_runner_grant_only(
    tmp_path: Path,
) -> None:
    rules = engine(
        tmp_path, policy("p", secrets=["x"], runner={"scopes": ["octo-org", "${environment}-org"]})
    )
    assert decide(rules, runner("register", scope="octo-org")).allowed
    for bad in (MISSING, None, 1.5, ["x"], {"a": 1}, False):
        assert not decide(rules, runner("register", scope="octo-org"), environment=bad).allowed
        assert decide(rules, secret("x"), environment=bad).allowed


@pytest.mark.parametrize(
    ("labels", "requested", "expected"),
    [
        (["self-hosted", "linux"], None, ("self-hosted", "linux")),
        (["self-hosted", "linux"], ["linux"], ("linux",)),
        (["self-hosted", "linux"], ["linux", "self-hosted"], ("linux", "self-hosted")),
        (["self-hosted", "linux"], ["linux", "gpu"], None),
        (["self-hosted", "linux"], ["Linux"], ("Linux",)),
        (None, None, ("self-hosted",)),
        (None, ["gpu", "arm64"], ("gpu", "arm64")),
    ],
    ids=[
        "listed-default-all",
        "listed-subset",
        "listed-all",
        "listed-not-subset",
        "listed-other-case-is-the-same-label",
        "absent-default",
        "absent-any",
    ],
)
def test_runner_labels(
    tmp_path: Path,
    labels: list[str] | None,
    requested: list[str] | None,
    expected: tuple[str, ...] | None,
) -> None:
    grant: dict[str, Any] = {"scopes": ["octo-org"]}
    if labels is not None:
        grant["labels"] = labels
    rules = engine(tmp_path, policy("p", runner=grant))
    body: dict[str, Any] = {"scope": "octo-org"}
    if requested is not None:
        body["labels"] = requested
    decision = decide(rules, runner("jitconfig", **body))
    if expected is None:
        assert not decision.allowed
    else:
        assert decision.terms == RunnerTerms(runner_group=None, labels=expected)


@pytest.mark.parametrize(
    ("groups", "requested", "expected"),
    [
        (["ci", "build"], None, "ci"),
        (["ci", "build"], "build", "build"),
        (["ci", "build"], "ci", "ci"),
        (["ci", "build"], "prod", False),
        (["ci", "build"], "CI", False),
        (None, None, None),
        (None, "ci", False),
        (None, "Default", False),
    ],
    ids=[
        "listed-default-first",
        "listed-second",
        "listed-first",
        "listed-other",
        "listed-other-case-is-the-same-label",
        "absent-default-group",
        "absent-named",
        "absent-named-default",
    ],
)
def test_runner_groups(
    tmp_path: Path, groups: list[str] | None, requested: str | None, expected: str | bool | None
) -> None:
    grant: dict[str, Any] = {"scopes": ["octo-org", "enterprise:acme"]}
    if groups is not None:
        grant["runner_groups"] = groups
    rules = engine(tmp_path, policy("p", runner=grant))
    for scope in ("octo-org", "enterprise:acme"):
        body: dict[str, Any] = {"scope": scope}
        if requested is not None:
            body["runner_group"] = requested
        decision = decide(rules, runner("jitconfig", **body))
        if expected is False:
            assert not decision.allowed
        else:
            assert decision.allowed
            assert isinstance(decision.terms, RunnerTerms)
            assert decision.terms.runner_group == expected


def test_repository_scope_always_uses_the_default_group(tmp_path: Path) -> None:
    rules = engine(
        tmp_path, policy("p", runner={"scopes": ["${repository}"], "runner_groups": ["ci"]})
    )
    decision = decide(rules, runner("jitconfig"))
    assert decision.allowed
    assert decision.terms == RunnerTerms(runner_group=None, labels=("self-hosted",))
    with pytest.raises(InvalidRequest):
        runner("jitconfig", scope="octo-org/octo-repo", runner_group="ci")


# --- installation grants ----------------------------------------------------------------------


def test_installation_owner_defaults_to_the_callers_repository_owner(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy("p", installation={"repositories": "*", "permissions": {"contents": "read"}}),
    )
    decision = decide(rules, install(owner="Octo-Org"), repository_owner="Octo-Org")
    assert decision.allowed
    assert decision.terms == InstallationTerms("octo-org", None, {"contents": "read"})
    assert decide(rules, install({"owner": "OCTO-ORG"}), repository_owner="octo-org").allowed
    assert not decide(rules, install({"owner": "other-org"})).allowed
    assert not decide(rules, install({"owner": "octo-org-evil"})).allowed


def test_installation_owner_explicit_and_templated(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy(
            "acme",
            installation={
                "owner": "Acme",
                "repositories": "*",
                "permissions": {"contents": "read"},
            },
        ),
    )
    assert decide(rules, install({"owner": "acme"})).allowed
    assert not decide(rules, install()).allowed


def test_installation_template_that_cannot_render_voids_the_installation_grant_only(
    tmp_path: Path,
) -> None:
    rules = engine(
        tmp_path,
        policy(
            "p",
            secrets=["x"],
            installation={
                "owner": "${custom_owner}",
                "repositories": "*",
                "permissions": {"contents": "read"},
            },
        ),
        policy(
            "q",
            {"repository_owner_id": "65", "event_name": "push"},
            installation={"repositories": ["${custom_repo}"], "permissions": {"issues": "read"}},
        ),
    )
    assert decide(rules, install(), custom_owner="octo-org").allowed
    assert not decide(rules, install()).allowed
    assert not decide(rules, install(), custom_owner=65.0).allowed
    assert decide(rules, secret("x")).allowed
    assert not decide(rules, install({"permissions": {"issues": "read"}})).allowed
    assert decide(
        rules, install({"permissions": {"issues": "read"}}), custom_repo="octo-repo"
    ).allowed


REPOSITORY_CASES: list[tuple[str, Any, tuple[str, ...] | bool | None]] = [
    ("default-all-granted", None, ("octo-repo", "docs", "tools")),
    ("bare-name", ["octo-repo"], ("octo-repo",)),
    ("owner-slash-name", ["octo-org/docs"], ("docs",)),
    ("owner-slash-name-case", ["OCTO-ORG/Docs"], ("docs",)),
    ("bare-entry-any-owner", ["tools"], ("tools",)),
    ("subset", ["docs", "octo-repo"], ("docs", "octo-repo")),
    ("other-owners-entry", ["x"], False),
    ("not-granted", ["secret"], False),
    ("partly-granted", ["docs", "secret"], False),
    ("all-when-listed", "*", False),
]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [c[1:] for c in REPOSITORY_CASES],
    ids=[c[0] for c in REPOSITORY_CASES],
)
def test_installation_repositories(
    tmp_path: Path, requested: Any, expected: tuple[str, ...] | bool | None
) -> None:
    grant = {
        "repositories": ["${repository}", "octo-org/docs", "other-org/x", "tools"],
        "permissions": {"contents": "read"},
    }
    rules = engine(tmp_path, policy("p", installation=grant))
    body = {} if requested is None else {"repositories": requested}
    decision = decide(rules, install(body))
    if expected is False:
        assert not decision.allowed
    else:
        assert decision.allowed
        assert isinstance(decision.terms, InstallationTerms)
        assert decision.terms.repositories == expected


def test_installation_repositories_of_another_owner_in_the_request_are_a_bad_request() -> None:
    with pytest.raises(InvalidRequest):
        install({"repositories": ["other-org/x"]})


def test_installation_all_repositories(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy("p", installation={"repositories": "*", "permissions": {"contents": "read"}}),
    )
    for body in ({}, {"repositories": "*"}):
        decision = decide(rules, install(body))
        assert isinstance(decision.terms, InstallationTerms)
        assert decision.terms.repositories is None
    decision = decide(rules, install({"repositories": ["anything"]}))
    assert isinstance(decision.terms, InstallationTerms)
    assert decision.terms.repositories == ("anything",)


def test_installation_grant_naming_only_other_owners_never_means_all(tmp_path: Path) -> None:
    grant = {"repositories": ["other-org/x"], "permissions": {"contents": "read"}}
    rules = engine(tmp_path, policy("p", installation=grant))
    assert not decide(rules, install()).allowed
    assert not decide(rules, install({"repositories": "*"})).allowed


PERMISSION_CASES: list[tuple[str, dict[str, str] | None, bool]] = [
    ("default-granted-set", None, True),
    ("read-under-write", {"contents": "read"}, True),
    ("write-under-write", {"contents": "write"}, True),
    ("read-under-read", {"metadata": "read"}, True),
    ("write-over-read", {"metadata": "write"}, False),
    ("admin-over-write", {"repository_projects": "admin"}, False),
    ("write-under-write-rwa", {"repository_projects": "write"}, True),
    ("not-granted", {"issues": "read"}, False),
    ("one-not-granted", {"contents": "read", "issues": "read"}, False),
]


@pytest.mark.parametrize(
    ("permissions", "allowed"),
    [c[1:] for c in PERMISSION_CASES],
    ids=[c[0] for c in PERMISSION_CASES],
)
def test_installation_permission_levels(
    tmp_path: Path, permissions: dict[str, str] | None, allowed: bool
) -> None:
    granted = {"contents": "write", "metadata": "read", "repository_projects": "write"}
    rules = engine(
        tmp_path, policy("p", installation={"repositories": "*", "permissions": granted})
    )
    body = {} if permissions is None else {"permissions": permissions}
    decision = decide(rules, install(body))
    assert decision.allowed is allowed
    if allowed:
        assert isinstance(decision.terms, InstallationTerms)
        assert dict(decision.terms.permissions) == (permissions or granted)


BAD_INSTALLATION_REQUESTS: list[tuple[str, Any]] = [
    ("unknown-permission", {"permissions": {"superpowers": "read"}}),
    ("bad-level", {"permissions": {"contents": "admin"}}),
    ("write-only-permission-read", {"permissions": {"workflows": "read"}}),
    ("level-not-a-string", {"permissions": {"contents": 1}}),
    ("empty-permissions", {"permissions": {}}),
    ("empty-repositories", {"repositories": []}),
    ("repository-not-a-string", {"repositories": [74]}),
    ("bad-repository-name", {"repositories": ["a b"]}),
    ("dot-dot-repository", {"repositories": [".."]}),
    ("bad-owner", {"owner": "octo org"}),
    ("owner-not-a-string", {"owner": 65}),
    ("unknown-field", {"repository_ids": [74]}),
    ("not-an-object", ["contents"]),
]


@pytest.mark.parametrize(
    "body", [c[1] for c in BAD_INSTALLATION_REQUESTS], ids=[c[0] for c in BAD_INSTALLATION_REQUESTS]
)
def test_bad_installation_request_is_a_400(body: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        installation_request(body, "octo-org")
    assert info.value.status == 400


def test_defaults_come_from_the_first_covering_allow_policy_in_file_order(tmp_path: Path) -> None:
    first = policy(
        "first", installation={"repositories": ["docs"], "permissions": {"contents": "read"}}
    )
    second = policy(
        "second",
        installation={"repositories": ["${repository}"], "permissions": {"contents": "write"}},
    )
    rules = engine(tmp_path, first, second)
    decision = decide(rules, install())
    assert decision.policy_name == "first"
    assert decision.terms == InstallationTerms("octo-org", ("docs",), {"contents": "read"})
    write = decide(rules, install({"permissions": {"contents": "write"}}))
    assert write.policy_name == "second"
    assert write.terms == InstallationTerms("octo-org", ("octo-repo",), {"contents": "write"})

    rules = engine(tmp_path, second, first)
    assert decide(rules, install()).terms == InstallationTerms(
        "octo-org", ("octo-repo",), {"contents": "write"}
    )


def test_file_order_is_inline_first_then_policy_files_sorted(tmp_path: Path) -> None:
    grant = {"repositories": "*", "permissions": {"contents": "read"}}
    rules = engine(
        tmp_path,
        policy("inline", installation={**grant, "permissions": {"issues": "read"}}),
        files={
            "b.yaml": [policy("from-b", installation={**grant, "permissions": {"checks": "read"}})],
            "a.yaml": [policy("from-a", installation=grant)],
        },
    )
    assert [p.name for p in rules.policies] == ["inline", "from-a", "from-b"]
    assert decide(rules, install()).policy_name == "inline"
    assert decide(rules, install({"permissions": {"checks": "read"}})).policy_name == "from-b"
    assert decide(rules, install({"permissions": {"contents": "read"}})).policy_name == "from-a"


# --- explain trace ----------------------------------------------------------------------------


def test_explain_trace_records_claim_by_claim_results(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy("dev-only", {"repository_id": 74, "ref": "refs/heads/dev"}, secrets=["x"]),
        policy("no-prs", {"event_name": ["pull_request", "match:pull_.*"]}, effect="deny"),
        policy("main", {"repository_id": "74", "environment": "match:prod.*"}, secrets=["y"]),
        policy("main-x", {"repository_id": "74", "check_run_id": "a"}, secrets=["x"]),
    )
    decision = rules.decide(identity(repository_id=74), secret("y"), explain=True)
    assert decision.allowed
    assert decision.policy_name == "main"
    assert [t.name for t in decision.trace] == ["dev-only", "no-prs", "main", "main-x"]
    dev, prs, main, main_x = decision.trace
    assert (dev.effect, dev.matched, dev.covers) == ("allow", False, None)
    assert [(c.claim, c.value, c.matched, c.patterns) for c in dev.checks] == [
        ("repository_id", "74", True, ("74",)),
        ("ref", "refs/heads/main", False, ("refs/heads/dev",)),
    ]
    assert (prs.effect, prs.matched, prs.covers) == ("deny", False, None)
    assert prs.checks[0].patterns == ("pull_request", "match:pull_.*")
    assert (main.matched, main.covers) == (True, True)
    assert [c.matched for c in main.checks] == [True, True]
    assert main_x.checks[1].value is None
    assert not main_x.checks[1].matched


def test_explain_traces_every_policy_even_after_a_deny(tmp_path: Path) -> None:
    rules = engine(tmp_path, _DENY_PUSH, _ALLOW, policy("wrong-secret", secrets=["y"]))
    decision = rules.decide(identity(), secret("x"), explain=True)
    assert not decision.allowed
    assert decision.policy_name == "no-push"
    assert [(t.name, t.matched, t.covers) for t in decision.trace] == [
        ("no-push", True, True),
        ("allow-octo", True, True),
        ("wrong-secret", True, False),
    ]
    assert rules.decide(identity(), secret("x")).trace == ()


# --- regressions: one engine, deny entries, case, modes (issue "One decision") ---------------


def configured(tmp_path: Path, extra: dict[str, Any], *policies: dict[str, Any]) -> Engine:
    """The engine `serve` builds (`Engine.for_config`): guard, GitHub mode and secrets too."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    document: dict[str, Any] = {
        "issuers": [{"issuer": ISS, "audiences": ["https://exchanger.example"]}],
        "secrets": {"registry": {"password": {"value": "not-a-real-secret"}}},
        "policies": list(policies),
        "github": {"token": {"value": "not-a-real-token"}},
        **extra,
    }
    path = directory / "exchanger.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
    return Engine.for_config(load_config(path, environ={}))


def test_regression_scope_guard_is_part_of_the_decision(tmp_path: Path) -> None:
    rules = configured(
        tmp_path,
        {"runner_scopes": {"deny": ["octo-org"]}},
        policy("org-runners", runner={"scopes": ["octo-org"]}),
    )
    decision = decide(rules, runner("jitconfig", scope="octo-org"))
    assert (decision.allowed, decision.decider, decision.policy) == (False, "scope_guard", None)
    assert decide(rules, runner("jitconfig", scope="octo-org/octo-repo")).decider == "no_policy"


def test_regression_scope_guard_allow_list_limits_every_grant(tmp_path: Path) -> None:
    rules = configured(
        tmp_path,
        {"runner_scopes": {"allow": ["match:octo-org/.*"]}},
        policy("org-runners", runner={"scopes": ["octo-org", "${repository}"]}),
    )
    assert decide(rules, runner("register", scope="octo-org")).decider == "scope_guard"
    assert decide(rules, runner("register")).allowed


def test_regression_enterprise_scope_in_token_mode_is_decided_by_policies(tmp_path: Path) -> None:
    rules = configured(tmp_path, {}, policy("p", runner={"scopes": ["enterprise:acme"]}))
    assert decide(rules, runner("register", scope="enterprise:acme")).allowed


def test_regression_installation_in_token_mode_is_a_mode_refusal_before_policies(
    tmp_path: Path,
) -> None:
    rules = configured(tmp_path, {}, policy("p", secrets=["registry"]))
    decision = decide(rules, install())
    assert (decision.allowed, decision.decider) == (False, "mode")
    assert "GitHub App" in decision.reason


def test_regression_unknown_secret_or_field_is_no_policy_not_an_allow(tmp_path: Path) -> None:
    rules = configured(tmp_path, {}, policy("p", secrets=["match:.*"]))
    assert decide(rules, SecretRequest("registry", "password")).allowed
    for ask in (SecretRequest("nope"), SecretRequest("registry", "nope")):
        decision = rules.decide(identity(), ask, explain=True)
        assert (decision.allowed, decision.decider) == (False, "no_policy")
        assert "no secret 'nope'" in (decision.trace[0].shortfall or "") or "with that field" in (
            decision.trace[0].shortfall or ""
        )


def test_regression_templated_regex_deny_scope_folds_the_claim_value(tmp_path: Path) -> None:
    """`repository_owner: Octo-Org` must not let `octo-org/prod-x` past the deny."""
    rules = engine(
        tmp_path,
        policy("org", runner={"scopes": ["match:octo-org/.*"]}),
        policy(
            "no-prod",
            {"repository_owner_id": "65"},
            effect="deny",
            runner={"scopes": ["match:${repository_owner}/prod-.*"]},
        ),
    )
    ask = runner("register", scope="octo-org/prod-db")
    assert decide(rules, ask, repository_owner="octo-org").policy_name == "no-prod"
    decision = decide(rules, ask, repository_owner="Octo-Org")
    assert (decision.allowed, decision.policy_name) == (False, "no-prod")


def test_regression_templated_regex_allow_scope_folds_the_claim_value(tmp_path: Path) -> None:
    rules = engine(tmp_path, policy("own", runner={"scopes": ["match:${repository_owner}/.*"]}))
    assert decide(
        rules, runner("register", scope="Octo-Org/x"), repository_owner="Octo-Org"
    ).allowed


def test_regression_deny_entry_without_value_leaves_static_entries_denying(
    tmp_path: Path,
) -> None:
    rules = engine(
        tmp_path,
        policy("all", secrets=["match:.*"]),
        policy(
            "no-db",
            {"repository_owner_id": "65"},
            effect="deny",
            secrets=["registry", "${environment}-creds"],
        ),
    )
    for environment in ("production", MISSING, None, ["x"]):
        decision = decide(rules, secret("registry"), environment=environment)
        assert (decision.allowed, decision.policy_name) == (False, "no-db"), environment
    assert not decide(rules, secret("production-creds")).allowed
    assert decide(rules, secret("production-creds"), environment=MISSING).allowed
    assert decide(rules, secret("x"), environment=MISSING).allowed


def test_regression_deny_runner_and_installation_entries_without_value_skip_only_themselves(
    tmp_path: Path,
) -> None:
    rules = engine(
        tmp_path,
        policy(
            "all",
            runner={"scopes": ["octo-org", "${repository}"]},
            installation={"repositories": "*", "permissions": {"contents": "write"}},
        ),
        policy(
            "deny",
            {"repository_owner_id": "65"},
            effect="deny",
            runner={"scopes": ["octo-org", "${environment}"]},
            installation={
                "repositories": ["octo-repo", "${environment}"],
                "permissions": {"contents": "read"},
            },
        ),
    )
    assert not decide(rules, runner("register", scope="octo-org"), environment=MISSING).allowed
    assert decide(rules, runner("register"), environment=MISSING).allowed
    wants_repo = install({"repositories": ["octo-repo"]})
    assert not decide(rules, wants_repo, environment=MISSING).allowed
    assert decide(rules, install({"repositories": ["docs"]}), environment=MISSING).allowed


def test_regression_deny_on_a_label_matches_any_case(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy("org", runner={"scopes": ["octo-org"]}),
        policy(
            "no-gpu",
            {"repository_owner_id": "65"},
            effect="deny",
            runner={"scopes": ["octo-org"], "labels": ["gpu"]},
        ),
    )
    for label in ("gpu", "GPU", "Gpu"):
        decision = decide(rules, runner("jitconfig", scope="octo-org", labels=["linux", label]))
        assert (decision.allowed, decision.policy_name) == (False, "no-gpu"), label
    assert decide(rules, runner("jitconfig", scope="octo-org", labels=["linux"])).allowed


def test_regression_lone_surrogate_claim_renders_no_template_value(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy("own", runner={"scopes": ["match:${repository_owner}/.*", "${repository}"]}),
    )
    decision = decide(rules, runner("register", scope="octo-org/x"), repository_owner="\ud800")
    assert not decision.allowed
    assert not decide(rules, runner("register"), repository="octo-org/\udfff").allowed


def test_deny_shortfall_names_what_fell_short(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        policy(
            "docs",
            installation={"repositories": ["octo-repo"], "permissions": {"contents": "read"}},
        ),
    )
    decision = rules.decide(
        identity(),
        install({"repositories": ["other"], "permissions": {"contents": "read"}}),
        explain=True,
    )
    assert decision.trace[0].shortfall == "repositories ['other'] are not granted"
    decision = rules.decide(identity(), install({"permissions": {"issues": "write"}}), explain=True)
    assert decision.trace[0].shortfall == "permissions ['issues: write'] are not granted"
