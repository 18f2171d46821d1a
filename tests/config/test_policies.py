"""Unsafe policies cannot load silently: identity anchors, claim vocabularies, runner grants.

Each rule is a table of configs with readable ids; the loader must refuse
(error) or flag (`FILE:LINE: warning: …`) exactly the rows marked so.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from exchanger.config.load import load_config
from exchanger.config.model import Config
from exchanger.errors import ConfigError

GITHUB = "https://token.actions.githubusercontent.com"
GHES = "https://ghes.example/_services/token"
ENTERPRISE = "https://token.actions.githubusercontent.com/acme"
PRIVATE = "https://issuer.internal"
ENV = {"GITHUB_TOKEN": "not-a-real-token"}
WARNING = re.compile(r".+:\d+: warning: .+")


def issuers(*urls: str, claims: str | None = None) -> str:
    """An `issuers:` section; `claims` (YAML text) goes on the last issuer."""
    out = "issuers:\n"
    for url in urls:
        out += f"  - issuer: {url}\n    audiences: [https://exchanger.example]\n"
    if claims is not None:
        out += f"    claims: {claims}\n"
    return out


def config(
    policy: str, *, issuer_urls: tuple[str, ...] = (GITHUB,), claims: str | None = None
) -> str:
    """A config with one `registry` secret and the policies in `policy` (YAML list items).

    The first policy starts at line `len(issuer_urls) * 2 + 5`; its claims are on the next.
    """
    return (
        issuers(*issuer_urls, claims=claims)
        + "secrets:\n  registry: {username: {value: ci-bot}}\npolicies:\n"
        + textwrap.indent(textwrap.dedent(policy), "  ")
    )


def allow(claims: str, extra: str = "") -> str:
    return f"- name: p\n  claims: {claims}\n  grants: {{secrets: [registry]}}\n{extra}"


def deny(claims: str) -> str:
    return f"- name: d\n  effect: deny\n  claims: {claims}\n"


def load(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "exchanger.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=ENV if environ is None else environ)


def outcome(tmp_path: Path, text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of loading `text`."""
    try:
        loaded = load(tmp_path, text)
    except ConfigError as exc:
        return exc.problems, list(exc.warnings)
    return [], list(loaded.warnings)


def errors(tmp_path: Path, text: str) -> list[str]:
    return outcome(tmp_path, text)[0]


def warnings_about(tmp_path: Path, text: str, needle: str) -> list[str]:
    found, warned = outcome(tmp_path, text)
    assert not found, found
    return [w for w in warned if needle in w]


# --- identity anchor --------------------------------------------------------------------------

WORLD_OPEN = [
    pytest.param('{ref: "refs/heads/main"}', id="ref-only"),
    pytest.param("{event_name: push}", id="event-name-only"),
    pytest.param(
        "{job_workflow_ref: 'octo-org/deploy/.github/workflows/deploy.yml@refs/heads/main'}",
        id="job-workflow-ref-only",
    ),
    pytest.param("{ref: refs/heads/main, event_name: push, sub: 'match:repo:.*'}", id="several"),
]


@pytest.mark.parametrize("claims", WORLD_OPEN)
def test_world_open_policy_is_refused(tmp_path: Path, claims: str) -> None:
    """Regression: a policy matching only a ref lets any repository on github.com in."""
    [problem] = errors(tmp_path, config(allow(claims)))
    path = tmp_path / "exchanger.yaml"
    assert problem.startswith(f"{path}:8: policy 'p' has no identity anchor: ")
    assert "any repository on github.com could mint a token it matches" in problem
    for anchor in (
        "repository_owner_id",
        "repository_id",
        "enterprise_id",
        "repository_owner",
        "repository",
    ):
        assert anchor in problem
    assert "not match:" in problem


# (id, issuers, claims, anchored)
ANCHOR_CASES: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("owner-id", (GITHUB,), '{repository_owner_id: "65"}', True),
    ("owner-id-integer", (GITHUB,), "{repository_owner_id: 65}", True),
    ("repository-id", (GITHUB,), '{repository_id: "74", ref: refs/heads/main}', True),
    ("enterprise-id", (GITHUB,), '{enterprise_id: "2"}', True),
    ("owner-name", (GITHUB,), '{repository_owner: octo-org, repository_owner_id: "65"}', True),
    ("repository-name", (GITHUB,), "{repository: octo-org/app, repository_id: '74'}", True),
    ("owner-id-list", (GITHUB,), '{repository_owner_id: ["65", "66"]}', True),
    ("owner-id-regex", (GITHUB,), '{repository_owner_id: "match:6[0-9]"}', False),
    ("owner-id-list-with-regex", (GITHUB,), '{repository_owner_id: ["65", "match:.*"]}', False),
    ("owner-name-regex", (GITHUB,), "{repository_owner: 'match:octo-org'}", False),
    ("enterprise-name-is-no-anchor", (GITHUB,), "{enterprise: acme}", False),
    ("actor-is-no-anchor", (GITHUB,), "{actor: octocat}", False),
    ("sub-is-no-anchor", (GITHUB,), "{sub: 'repo:octo-org/app:ref:refs/heads/main'}", False),
    ("shared-issuer-pinned", (GITHUB,), f"{{iss: '{GITHUB}', ref: refs/heads/main}}", False),
    ("ghes-issuer-pinned", (GITHUB, GHES), f"{{iss: '{GHES}', ref: refs/heads/main}}", True),
    ("enterprise-issuer-pinned", (ENTERPRISE,), f"{{iss: '{ENTERPRISE}'}}", True),
    ("private-issuer-pinned", (PRIVATE,), f"{{iss: '{PRIVATE}', sub: x}}", True),
    ("ghes-issuer-by-regex", (GITHUB, GHES), "{iss: 'match:https://ghes\\.example/.*'}", False),
    ("ghes-and-shared-pinned", (GITHUB, GHES), f"{{iss: ['{GHES}', '{GITHUB}']}}", False),
    ("unconfigured-issuer-pinned", (GITHUB,), f"{{iss: '{GHES}'}}", False),
    ("private-issuer-not-pinned", (PRIVATE,), "{sub: x}", False),
]


@pytest.mark.parametrize(
    ("urls", "claims", "anchored"),
    [c[1:] for c in ANCHOR_CASES],
    ids=[c[0] for c in ANCHOR_CASES],
)
def test_allow_policies_need_an_identity_anchor(
    tmp_path: Path, urls: tuple[str, ...], claims: str, anchored: bool
) -> None:
    found = [p for p in errors(tmp_path, config(allow(claims), issuer_urls=urls)) if "anchor" in p]
    assert (not found) is anchored, found


def test_anchor_error_for_a_private_issuer_names_it(tmp_path: Path) -> None:
    [problem] = errors(tmp_path, config(allow("{sub: x}"), issuer_urls=(PRIVATE,)))
    assert f"anyone {PRIVATE} signs for could mint a token it matches" in problem
    assert "github.com" not in problem.split(": ", 2)[2].split(";")[0]


@pytest.mark.parametrize("claims", WORLD_OPEN)
def test_deny_policies_need_no_anchor(tmp_path: Path, claims: str) -> None:
    text = config(allow('{repository_owner_id: "65"}') + deny(claims))
    assert errors(tmp_path, text) == []


def test_anchor_error_points_at_the_claims_key_of_a_policy_file(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "# comment\n- name: open\n  claims:\n    ref: refs/heads/main\n  grants:\n"
        "    secrets: [registry]\n"
    )
    text = issuers(GITHUB) + "secrets: {registry: {u: {value: x}}}\npolicy_files: [p.yaml]\n"
    [problem] = errors(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'p.yaml'}:3: policy 'open' has no identity anchor")


# --- the explicit opt-out: unanchored: {anyone_signed_by: ISSUER} -----------------------------

# (id, issuers, policy, the error expected, or None)
OPT_OUT_CASES: list[tuple[str, tuple[str, ...], str, str | None]] = [
    (
        "private-issuer",
        (PRIVATE,),
        allow("{sub: 'match:ci:.*'}", f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n"),
        None,
    ),
    (
        "private-issuer-beside-github",
        (GITHUB, PRIVATE),
        allow("{sub: 'match:ci:.*'}", f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n"),
        None,
    ),
    (
        "github-shared-issuer",
        (GITHUB,),
        allow("{ref: refs/heads/main}", f"  unanchored: {{anyone_signed_by: '{GITHUB}'}}\n"),
        "unanchored.anyone_signed_by: GitHub's shared issuer signs for every repository",
    ),
    (
        "github-shared-issuer-trailing-slash",
        (GITHUB,),
        allow("{ref: refs/heads/main}", f"  unanchored: {{anyone_signed_by: '{GITHUB}/'}}\n"),
        "GitHub's shared issuer",
    ),
    (
        "unconfigured-issuer",
        (GITHUB,),
        allow("{ref: refs/heads/main}", f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n"),
        f"unanchored.anyone_signed_by: '{PRIVATE}' is not a configured issuer",
    ),
    (
        "on-a-deny",
        (PRIVATE,),
        deny("{sub: x}") + f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n",
        "unanchored: applies to allow policies only",
    ),
    (
        "issuer-missing",
        (PRIVATE,),
        allow("{sub: x}", "  unanchored: {}\n"),
        "anyone_signed_by: required",
    ),
    (
        "not-a-mapping",
        (PRIVATE,),
        allow("{sub: x}", "  unanchored: true\n"),
        "unanchored: must be a mapping",
    ),
    (
        "unknown-key",
        (PRIVATE,),
        allow("{sub: x}", f"  unanchored: {{anyone_signed_by: '{PRIVATE}', really: true}}\n"),
        "really: unknown key",
    ),
]


@pytest.mark.parametrize(
    ("urls", "policy", "error"),
    [c[1:] for c in OPT_OUT_CASES],
    ids=[c[0] for c in OPT_OUT_CASES],
)
def test_unanchored_opt_out(
    tmp_path: Path, urls: tuple[str, ...], policy: str, error: str | None
) -> None:
    found = errors(tmp_path, config(policy, issuer_urls=urls))
    if error is None:
        assert found == []
    else:
        assert any(error in p for p in found), found


def test_unanchored_policy_matches_only_its_issuer(tmp_path: Path) -> None:
    text = config(
        allow("{sub: 'match:ci:.*'}", f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n"),
        issuer_urls=(GITHUB, PRIVATE),
    )
    [policy] = load(tmp_path, text).policies
    assert policy.matches({"iss": PRIVATE, "sub": "ci:build"})
    assert not policy.matches({"iss": GITHUB, "sub": "ci:build"})
    assert not policy.matches({"sub": "ci:build"})


def test_unanchored_on_an_anchored_policy_warns(tmp_path: Path) -> None:
    text = config(
        allow('{repository_owner_id: "65"}', f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n"),
        issuer_urls=(PRIVATE,),
    )
    found = warnings_about(tmp_path, text, "unanchored is not needed")
    assert found == [
        f"{tmp_path / 'exchanger.yaml'}:10: warning: policy 'p' is anchored by "
        "repository_owner_id; unanchored is not needed"
    ]


# --- claim vocabulary -------------------------------------------------------------------------


def test_misspelt_claim_in_deny_is_refused(tmp_path: Path) -> None:
    """Regression: `event_nmae:` never matches, so the deny was silently off."""
    text = config(allow('{repository_owner_id: "65"}') + deny("{event_nmae: pull_request}"))
    [problem] = errors(tmp_path, text)
    assert problem == (
        f"{tmp_path / 'exchanger.yaml'}:12: policy 'd'.claims.event_nmae: unknown claim: "
        f"not in the claims of issuer {GITHUB}; did you mean event_name?"
    )


GITHUB_CLAIMS = [
    "actor", "actor_id", "aud", "base_ref", "check_run_id", "enterprise", "environment",
    "environment_node_id", "event_name", "exp", "head_ref", "iat", "iss", "issuer_scope",
    "job_workflow_ref", "job_workflow_sha", "jti", "nbf", "ref", "ref_protected", "ref_type",
    "repository_visibility", "run_attempt", "run_id", "run_number", "runner_environment", "sha",
    "sub", "workflow", "workflow_ref", "workflow_sha", "repo_property_team",
]  # fmt: skip


@pytest.mark.parametrize("claim", GITHUB_CLAIMS)
def test_githubs_documented_claims_are_known(tmp_path: Path, claim: str) -> None:
    text = config(allow(f'{{repository_owner_id: "65", {claim}: x}}') + deny(f"{{{claim}: y}}"))
    assert errors(tmp_path, text) == []


# (id, issuers, `claims:` of the last issuer, policy claims, the error expected or None)
VOCABULARY_CASES: list[tuple[str, tuple[str, ...], str | None, str, str | None]] = [
    ("typo-in-allow", (GITHUB,), None, '{repository_owner_id: "65", reff: x}', "mean ref?"),
    ("typo-of-an-anchor", (GITHUB,), None, '{repository_owner_idd: "65"}', "repository_owner_id?"),
    ("case-matters", (GITHUB,), None, '{repository_owner_id: "65", Ref: x}', "mean ref?"),
    ("bare-property-prefix", (GITHUB,), None, '{repository_owner_id: "65", repo_property_: x}', ""),
    (
        "not-a-github-claim",
        (GITHUB,),
        None,
        '{repository_owner_id: "65", groups: admins}',
        "if the issuer sends it, list it in that issuer's claims (issuers[].claims)",
    ),
    ("declared-claim", (PRIVATE,), "[groups]", f"{{iss: '{PRIVATE}', groups: admins}}", None),
    ("declared-prefix", (PRIVATE,), "['team_*']", f"{{iss: '{PRIVATE}', team_x: a}}", None),
    ("registered-claims-always", (PRIVATE,), "[groups]", f"{{iss: '{PRIVATE}', sub: a}}", None),
    (
        "github-claim-for-a-declared-issuer",
        (PRIVATE,),
        "[groups]",
        f"{{iss: '{PRIVATE}', ref: x}}",
        f"not in the claims of issuer {PRIVATE}",
    ),
    ("any-opts-out", (PRIVATE,), "any", f"{{iss: '{PRIVATE}', whatever_claim: a}}", None),
    (
        "union-when-iss-not-pinned",
        (GITHUB, PRIVATE),
        "[groups]",
        '{repository_owner_id: "65", groups: a, iss: "match:.*"}',
        None,
    ),
    (
        "pinned-iss-narrows-the-vocabulary",
        (GITHUB, PRIVATE),
        "[groups]",
        f'{{repository_owner_id: "65", groups: a, iss: "{GITHUB}"}}',
        f"not in the claims of issuer {GITHUB}",
    ),
    (
        "neither-issuer-sends-it",
        (GITHUB, PRIVATE),
        "[groups]",
        '{repository_owner_id: "65", grups: a, iss: "match:.*"}',
        f"not in the claims of any of its issuers ({GITHUB}, {PRIVATE}); did you mean groups?",
    ),
]


@pytest.mark.parametrize(
    ("urls", "vocabulary", "claims", "error"),
    [c[1:] for c in VOCABULARY_CASES],
    ids=[c[0] for c in VOCABULARY_CASES],
)
def test_claim_vocabulary(
    tmp_path: Path,
    urls: tuple[str, ...],
    vocabulary: str | None,
    claims: str,
    error: str | None,
) -> None:
    found = errors(tmp_path, config(allow(claims), issuer_urls=urls, claims=vocabulary))
    if error is None:
        assert found == []
    else:
        assert any("unknown claim" in p and error in p for p in found), found


def test_vocabulary_of_an_unanchored_policy_is_its_issuers(tmp_path: Path) -> None:
    policy = allow("{groups: admins}", f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n")
    assert errors(tmp_path, config(policy, issuer_urls=(GITHUB, PRIVATE), claims="[groups]")) == []
    policy = allow("{ref: x}", f"  unanchored: {{anyone_signed_by: '{PRIVATE}'}}\n")
    found = errors(tmp_path, config(policy, issuer_urls=(GITHUB, PRIVATE), claims="[groups]"))
    assert any(f"ref: unknown claim: not in the claims of issuer {PRIVATE}" in p for p in found)


ISSUER_CLAIMS_ERRORS: list[tuple[str, str, str]] = [
    ("a-word-other-than-any", "all", "issuers[].claims: must be a list of claim names, or 'any'"),
    ("a-mapping", "{groups: true}", "must be a list of claim names, or 'any'"),
    ("empty-list", "[]", "claims: must not be empty"),
    ("lone-star", "['*']", "a * may only end a prefix"),
    ("inner-star", "['team_*_x']", "a * may only end a prefix"),
    ("not-a-string", "[1]", "items must be non-empty strings"),
]


@pytest.mark.parametrize(
    ("vocabulary", "error"),
    [c[1:] for c in ISSUER_CLAIMS_ERRORS],
    ids=[c[0] for c in ISSUER_CLAIMS_ERRORS],
)
def test_issuer_claims_must_be_a_list_or_any(tmp_path: Path, vocabulary: str, error: str) -> None:
    text = config(allow('{repository_owner_id: "65"}'), claims=vocabulary)
    found = errors(tmp_path, text)
    assert any(error in p for p in found), found
    assert all(p.startswith(f"{tmp_path / 'exchanger.yaml'}:4: ") for p in found), found


# --- runner grants that limit groups or labels --------------------------------------------

# (id, runner grant, the actions it grants)
RUNNER_ACTION_CASES: list[tuple[str, str, set[str]]] = [
    ("no-limits", "{scopes: [octo-org]}", {"register", "remove", "jitconfig"}),
    ("runner-groups", "{scopes: [octo-org], runner_groups: [ci]}", {"jitconfig"}),
    ("labels", "{scopes: [octo-org], labels: [linux]}", {"jitconfig"}),
    ("both", "{scopes: [octo-org], runner_groups: [ci], labels: [linux]}", {"jitconfig"}),
    (
        "repository-scope-too",
        "{scopes: ['${repository}'], labels: [linux]}",
        {"jitconfig"},
    ),
    (
        "explicit-actions-win",
        "{scopes: [octo-org], runner_groups: [ci], actions: [register, jitconfig]}",
        {"register", "jitconfig"},
    ),
]


@pytest.mark.parametrize(
    ("grant", "actions"),
    [c[1:] for c in RUNNER_ACTION_CASES],
    ids=[c[0] for c in RUNNER_ACTION_CASES],
)
def test_limited_runner_grant_defaults_to_jitconfig_only(
    tmp_path: Path, grant: str, actions: set[str]
) -> None:
    """Regression: register/remove tokens let config.sh pick any runner group and labels."""
    text = config(
        f'- name: p\n  claims: {{repository_owner_id: "65"}}\n  grants: {{runner: {grant}}}\n'
    )
    [policy] = load(tmp_path, text).policies
    assert policy.grants.runner is not None
    assert set(policy.grants.runner.actions) == actions


@pytest.mark.parametrize(
    ("grant", "warned"),
    [
        ("{scopes: [octo-org], runner_groups: [ci], actions: [register]}", True),
        ("{scopes: [octo-org], labels: [linux], actions: [jitconfig, remove]}", True),
        ("{scopes: [octo-org], runner_groups: [ci], actions: [jitconfig]}", False),
        ("{scopes: [octo-org], runner_groups: [ci]}", False),
        ("{scopes: [octo-org], actions: [register, remove]}", False),
    ],
    ids=["register-with-groups", "remove-with-labels", "jitconfig-only", "default", "no-limits"],
)
def test_warns_about_register_or_remove_with_groups_or_labels(
    tmp_path: Path, grant: str, warned: bool
) -> None:
    text = config(
        f'- name: p\n  claims: {{repository_owner_id: "65"}}\n  grants: {{runner: {grant}}}\n'
    )
    found = warnings_about(tmp_path, text, "config.sh --runnergroup/--labels")
    assert bool(found) is warned, found


def test_register_with_groups_warning_text(tmp_path: Path) -> None:
    grant = "{scopes: [octo-org], runner_groups: [ci], labels: [x], actions: [register, remove]}"
    text = config(
        f'- name: p\n  claims: {{repository_owner_id: "65"}}\n  grants: {{runner: {grant}}}\n'
    )
    [warning] = warnings_about(tmp_path, text, "config.sh")
    assert warning == (
        f"{tmp_path / 'exchanger.yaml'}:9: warning: policy 'p'.grants.runner.actions: register "
        "and remove with runner_groups and labels: a registration or removal token lets "
        "config.sh --runnergroup/--labels pick any runner group and labels, so those limits "
        "hold for jitconfig only"
    )


# --- warnings ---------------------------------------------------------------------------------

OWNER = 'repository_owner_id: "65"'


def granting(grants: str, extra: str = "") -> str:
    """A config with one anchored policy `p` granting `grants` (YAML flow text)."""
    return config(f"- name: p\n  claims: {{{OWNER}}}\n  grants: {grants}\n{extra}")


def matching(claims: str) -> str:
    """A config with one policy `p` matching the owner and `claims` (YAML flow entries)."""
    return config(allow(f"{{{OWNER}, {claims}}}"))


def everywhere(permissions: str) -> str:
    """A config granting an installation token on every repository with `permissions`."""
    return granting(f"{{installation: {{repositories: '*', permissions: {{{permissions}}}}}}}")


def scope(pattern: str) -> str:
    return granting(f"{{runner: {{scopes: ['{pattern}']}}}}")


def secret(pattern: str) -> str:
    return granting(f"{{secrets: ['{pattern}']}}")


# (id, config text, the warning's text, or None when there must be no such warning)
WARNING_CASES: list[tuple[str, str, str | None]] = [
    (
        "glob-ref",
        matching("ref: 'match:refs/heads/*'"),
        "policy 'p'.claims.ref: 'match:refs/heads/*' looks like a glob, but match: takes a "
        "regular expression (* repeats the character before it); "
        "did you mean 'match:refs/heads/.*'?",
    ),
    (
        "glob-workflow",
        matching("job_workflow_ref: 'match:acme/*@refs/heads/main'"),
        "did you mean 'match:acme/.*@refs/heads/main'?",
    ),
    ("glob-repository", matching("repository: 'match:acme/*'"), "did you mean 'match:acme/.*'?"),
    ("regex-star-is-fine", matching("ref: 'match:refs/heads/.*'"), None),
    ("class-star-is-fine", matching("ref: 'match:v[0-9]*'"), None),
    ("group-star-is-fine", matching("ref: 'match:(ab)*'"), None),
    ("escape-star-is-fine", matching("run_id: 'match:\\d*'"), None),
    (
        "exact-value-with-star",
        matching("ref: 'refs/heads/*'"),
        "policy 'p'.claims.ref: 'refs/heads/*' is compared exactly, * included; "
        "did you mean 'match:refs/heads/.*'?",
    ),
    (
        "exact-value-with-star-in-a-deny",
        config(deny("{ref: 'refs/tags/v1.*'}") + allow(f"{{{OWNER}}}")),
        "did you mean 'match:refs/tags/v1\\..*'?",
    ),
    ("glob-secret", secret("match:npm-*"), "policy 'p'.grants.secrets: 'match:npm-*' looks like"),
    (
        "glob-runner-scope",
        scope("match:acme/*"),
        "policy 'p'.grants.runner.scopes: 'match:acme/*' looks like a glob",
    ),
    (
        "glob-runner-scopes-guard",
        granting("{secrets: [registry]}") + "runner_scopes: {allow: ['match:acme/*']}\n",
        "runner_scopes.allow: 'match:acme/*' looks like a glob",
    ),
    (
        "secret-regex-matching-everything",
        secret("match:.*"),
        "policy 'p'.grants.secrets: 'match:.*' matches every secret, including any added "
        "later; name the secrets this policy needs",
    ),
    ("secret-regex-dot-plus", secret("match:.+"), "matches every secret"),
    ("secret-regex-negated-class", secret("match:[^/]*"), "matches every secret"),
    ("secret-regex-prefix-is-fine", secret("match:npm-.*"), None),
    (
        "installation-everywhere-administration",
        everywhere("administration: write"),
        "policy 'p'.grants.installation: repositories \"*\" with administration: write reaches "
        "every repository the installation can; list the repositories this policy needs",
    ),
    (
        "installation-everywhere-secrets",
        everywhere("secrets: write, contents: read"),
        'repositories "*" with secrets: write reaches',
    ),
    (
        "installation-everywhere-workflows",
        everywhere("workflows: write"),
        'repositories "*" with workflows: write reaches',
    ),
    (
        "installation-everywhere-org-admin",
        everywhere("organization_administration: write"),
        'repositories "*" with organization_administration: write reaches',
    ),
    ("installation-everywhere-read-is-fine", everywhere("administration: read"), None),
    (
        "installation-listed-repositories-are-fine",
        granting(
            "{installation: {repositories: ['${repository}'], "
            "permissions: {administration: write}}}"
        ),
        None,
    ),
    (
        "runner-scope-any",
        scope("match:.*"),
        "policy 'p'.grants.runner.scopes: 'match:.*' is not anchored to a literal owner; it "
        "reaches the runners of any organization or repository the GitHub credential can manage",
    ),
    ("runner-scope-any-owner", scope("match:.*/ci"), "is not anchored to a literal owner"),
    ("runner-scope-owner-prefix", scope("match:acme.*"), "is not anchored to a literal owner"),
    (
        "runner-scope-any-enterprise",
        scope("match:enterprise:.*"),
        "is not anchored to a literal owner",
    ),
    ("runner-scope-owner-anchored", scope("match:acme/ci-.*"), None),
    ("runner-scope-template-owner", scope("match:${repository_owner}/ci-.*"), None),
    (
        "single-use-without-shared-state",
        granting("{secrets: [registry]}", "  single_use: true\n"),
        "policy 'p': single_use without shared state (state.redis_url) holds only within one "
        "process: with several replicas a token can be used once per replica, and serve "
        "refuses --workers above 1",
    ),
    (
        "single-use-with-redis",
        granting("{secrets: [registry]}", "  single_use: true\n")
        + "state: {redis_url: 'redis://redis:6379/0'}\n",
        None,
    ),
    ("zero-policies", issuers(GITHUB), "no policies are configured: every exchange is denied"),
    (
        "zero-policies-empty-list",
        issuers(GITHUB) + "policies: []\n",
        "no policies are configured: every exchange is denied",
    ),
    ("some-policies", granting("{secrets: [registry]}"), None),
    (
        "iss-not-configured",
        matching(f"iss: '{GHES}'"),
        f"policy 'p': iss '{GHES}' is not a configured issuer; never matches",
    ),
]


@pytest.mark.parametrize(
    ("text", "warning"), [c[1:] for c in WARNING_CASES], ids=[c[0] for c in WARNING_CASES]
)
def test_policy_warnings(tmp_path: Path, text: str, warning: str | None) -> None:
    found, warned = outcome(tmp_path, text)
    assert found == []
    assert all(WARNING.fullmatch(w) for w in warned), warned
    needle = warning or "(no such warning)"
    matching = [w for w in warned if needle in w]
    if warning is None:
        assert not [w for w in warned if "glob" in w or "every" in w or "anchored" in w], warned
        assert not [w for w in warned if "single_use" in w or "no policies" in w], warned
    else:
        assert len(matching) == 1, warned
        assert matching[0].startswith(f"{tmp_path / 'exchanger.yaml'}:"), matching


def test_glob_warning_points_at_the_list_item(tmp_path: Path) -> None:
    text = config(
        f"- name: p\n  claims:\n    {OWNER}\n    ref:\n      - refs/heads/main\n"
        "      - 'match:refs/tags/*'\n  grants: {secrets: [registry]}\n"
    )
    [warning] = warnings_about(tmp_path, text, "looks like a glob")
    assert warning.startswith(f"{tmp_path / 'exchanger.yaml'}:12: warning: ")


# --- secret sources, and warnings that come with errors ----------------------------------


@pytest.mark.parametrize(
    ("source", "environ", "error"),
    [
        (
            "{env: REGISTRY_PASSWORD}",
            {"REGISTRY_PASSWORD": ""},
            "REGISTRY_PASSWORD is set but empty",
        ),
        ("{env: ''}", {}, "secret registry.password: must name a variable"),
        ("{file: ''}", {}, "secret registry.password: must name a file"),
    ],
    ids=["env-set-but-empty", "env-name-empty", "file-name-empty"],
)
def test_empty_secret_sources_are_errors(
    tmp_path: Path, source: str, environ: dict[str, str], error: str
) -> None:
    text = issuers(GITHUB) + f"secrets:\n  registry:\n    password: {source}\n"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / 'exchanger.yaml'}:6: ")
    assert error in problem


def test_config_error_carries_the_warnings(tmp_path: Path) -> None:
    text = config(allow("{event_name: push}") + allow('{repository_id: "74", repository_owner: o}'))
    text = text.replace("name: p\n  claims: {repo", "name: q\n  claims: {repo")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert [p for p in info.value.problems if "no identity anchor" in p]
    assert [w for w in info.value.warnings if "by name without repository_owner_id" in w]
    assert all(WARNING.fullmatch(w) for w in info.value.warnings)
