"""The pure policy checks: identity anchors, glob-looking patterns, scope anchoring, typos."""

from __future__ import annotations

import pytest

from exchanger.policy.lint import (
    GITHUB_SHARED_ISSUER,
    closest,
    glob_as_regex,
    glob_star,
    identity_anchor,
    is_shared_issuer,
    matches_every_name,
    scope_anchored,
)
from exchanger.policy.patterns import compile_regex

GHES = "https://ghes.example/_services/token"

# (id, exact claim values of a policy, configured issuers, the anchor or None)
ANCHORS: list[tuple[str, dict[str, tuple[str, ...]], tuple[str, ...], str | None]] = [
    ("owner-id", {"repository_owner_id": ("65",)}, (GITHUB_SHARED_ISSUER,), "repository_owner_id"),
    ("repository-id", {"repository_id": ("74",)}, (), "repository_id"),
    ("enterprise-id", {"enterprise_id": ("2",)}, (), "enterprise_id"),
    ("owner-name", {"repository_owner": ("octo",)}, (), "repository_owner"),
    ("repository-name", {"repository": ("octo/app",)}, (), "repository"),
    ("ids-come-first", {"repository": ("o/a",), "repository_id": ("74",)}, (), "repository_id"),
    ("empty-values", {"repository_owner_id": ()}, (), None),
    ("ref-only", {"ref": ("refs/heads/main",)}, (GITHUB_SHARED_ISSUER,), None),
    ("ghes-issuer", {"iss": (GHES,)}, (GITHUB_SHARED_ISSUER, GHES), "iss"),
    ("shared-issuer", {"iss": (GITHUB_SHARED_ISSUER,)}, (GITHUB_SHARED_ISSUER,), None),
    (
        "shared-with-slash",
        {"iss": (GITHUB_SHARED_ISSUER + "/",)},
        (GITHUB_SHARED_ISSUER + "/",),
        None,
    ),
    ("ghes-or-shared", {"iss": (GHES, GITHUB_SHARED_ISSUER)}, (GITHUB_SHARED_ISSUER, GHES), None),
    ("unconfigured-issuer", {"iss": (GHES,)}, (GITHUB_SHARED_ISSUER,), None),
]


@pytest.mark.parametrize(
    ("exact", "issuers", "anchor"), [c[1:] for c in ANCHORS], ids=[c[0] for c in ANCHORS]
)
def test_identity_anchor(
    exact: dict[str, tuple[str, ...]], issuers: tuple[str, ...], anchor: str | None
) -> None:
    assert identity_anchor(exact, issuers) == anchor


def test_shared_issuer() -> None:
    assert is_shared_issuer("https://token.actions.githubusercontent.com")
    assert is_shared_issuer("https://token.actions.githubusercontent.com/")
    assert not is_shared_issuer("https://token.actions.githubusercontent.com/acme")
    assert not is_shared_issuer(GHES)


# (id, expression, the fixed expression or None when nothing looks like a glob)
GLOBS: list[tuple[str, str, str | None]] = [
    ("owner-slash-star", "acme/*", "acme/.*"),
    ("ref-prefix", "refs/heads/*", "refs/heads/.*"),
    ("dash-star", "release-*", "release-.*"),
    ("letter-star", "v1*", "v1.*"),
    ("two-globs", "acme/*/x-*", "acme/.*/x-.*"),
    ("glob-in-alternation", "main|release/*", "main|release/.*"),
    ("dot-star", "refs/heads/.*", None),
    ("class-star", "v[0-9]*", None),
    ("class-with-bracket", "v[]a]*", None),
    ("group-star", "(ab)*", None),
    ("escaped-class-star", "\\d*", None),
    ("escaped-star-is-literal", "a\\*", None),
    ("lazy-star", "a.*?b", None),
    ("no-star", "refs/heads/main", None),
    ("star-in-class", "[*]", None),
]


@pytest.mark.parametrize(("expression", "fixed"), [c[1:] for c in GLOBS], ids=[c[0] for c in GLOBS])
def test_glob_star(expression: str, fixed: str | None) -> None:
    assert glob_star(expression) == fixed


@pytest.mark.parametrize(
    ("text", "regex"),
    [
        ("refs/heads/*", "refs/heads/.*"),
        ("refs/tags/v1.*", "refs/tags/v1\\..*"),
        ("octo-org/*", "octo-org/.*"),
        ("a(b)*", "a\\(b\\).*"),
    ],
    ids=["ref", "dot-is-escaped", "owner", "parens-are-escaped"],
)
def test_glob_as_regex(text: str, regex: str) -> None:
    assert glob_as_regex(text) == regex
    compile_regex(regex)


# (id, runner-scope expression, anchored)
SCOPES: list[tuple[str, str, bool]] = [
    ("owner", "acme", True),
    ("owner-repositories", "acme/.*", True),
    ("owner-repository-prefix", "acme/ci-.*", True),
    ("owner-group", "(acme|octo)/ci-.*", True),
    ("each-branch-anchored", "acme|octo/ci", True),
    ("enterprise", "enterprise:acme", True),
    ("caret-dollar", "^acme/.*$", True),
    ("anything", ".*", False),
    ("any-owner", ".*/ci", False),
    ("owner-prefix", "acme.*", False),
    ("any-enterprise", "enterprise:.*", False),
    ("one-branch-open", "acme/.*|.*", False),
    ("owner-class", "[a-z]+/ci", False),
]


@pytest.mark.parametrize(
    ("expression", "anchored"), [c[1:] for c in SCOPES], ids=[c[0] for c in SCOPES]
)
def test_scope_anchored(expression: str, anchored: bool) -> None:
    assert scope_anchored(expression) is anchored


@pytest.mark.parametrize(
    ("expression", "everything"),
    [
        (".*", True),
        (".+", True),
        ("[^/]*", True),
        ("(?s).*", True),
        ("x|.*", True),
        ("npm-.*", False),
        ("[a-z].*", False),
        (".{1,64}", False),
        ("registry", False),
    ],
    ids=["dot-star", "dot-plus", "negated-class", "dotall", "alternation", "prefix", "letter-first",
         "bounded-length", "exact"],
)  # fmt: skip
def test_matches_every_name(expression: str, everything: bool) -> None:
    assert matches_every_name(compile_regex(expression)) is everything


@pytest.mark.parametrize(
    ("name", "guess"),
    [
        ("event_nmae", "event_name"),
        ("repository_owner_idd", "repository_owner_id"),
        ("Ref", "ref"),
        ("workflow_sah", "workflow_sha"),
        ("completely_unrelated_thing", None),
    ],
    ids=["swapped-letters", "extra-letter", "case", "suffix", "no-guess"],
)
def test_closest(name: str, guess: str | None) -> None:
    vocabulary = {
        "event_name",
        "ref",
        "repository_owner_id",
        "repository_id",
        "workflow_sha",
        "job_workflow_sha",
    }
    assert closest(name, vocabulary) == guess
