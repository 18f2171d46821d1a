"""Policy lint: shapes a policy may take that open more than the operator meant.

Pure checks on pattern text and claim names (identity anchors, glob-looking
patterns, owner-anchored regexes, likely typos); `exchanger.config.policies`
calls them while the YAML lines are at hand and reports the result as an error
or a warning.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

import re2

from exchanger.policy.patterns import Regex

#: GitHub's shared issuer: it signs for every repository on github.com.
GITHUB_SHARED_ISSUER = "https://token.actions.githubusercontent.com"

#: Claims whose exact value binds a policy to one enterprise, owner or repository.
ANCHOR_CLAIMS = (
    "repository_owner_id",
    "repository_id",
    "enterprise_id",
    "repository_owner",
    "repository",
)


def is_shared_issuer(issuer: str) -> bool:
    """Whether `issuer` is GitHub's shared one (a trailing slash changes nothing)."""
    return issuer.rstrip("/") == GITHUB_SHARED_ISSUER


def identity_anchor(exact: Mapping[str, tuple[str, ...]], issuers: Collection[str]) -> str | None:
    """The claim that binds a policy to one identity, or None when nothing does.

    `exact` maps each claim the policy matches only by exact values to those
    values. An anchor claim counts, and so does `iss` when every value names a
    configured issuer other than GitHub's shared one (a GHES or enterprise-unique
    issuer signs for one company only).
    """
    for claim in ANCHOR_CLAIMS:
        if exact.get(claim):
            return claim
    pinned = exact.get("iss")
    if pinned and all(i in issuers and not is_shared_issuer(i) for i in pinned):
        return "iss"
    return None


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate `name` was most likely meant to be (`event_nmae` -> `event_name`)."""
    found = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def glob_star(expression: str) -> str | None:
    """`expression` with each glob-looking `*` made `.*`, or None when none looks like a glob.

    In RE2 `*` repeats the atom before it: after `.`, `)`, `]` or an escape it is
    meant as one; after a plain character (`acme/*`, `refs/heads/*`, `v1*`) it is
    almost always a shell glob, which matches far less (or more) than intended.
    """
    cuts: list[int] = []
    last_index, last_char = -2, ""
    for index, char, _ in _structure(expression):
        # `_structure` skips escapes and classes: a gap before the `*` is one of those.
        if char == "*" and last_index == index - 1 and last_char not in ".)*+?}":
            cuts.append(index)
        last_index, last_char = index, char
    if not cuts:
        return None
    out, start = [], 0
    for index in cuts:
        out.append(expression[start:index] + ".*")
        start = index + 1
    return "".join(out) + expression[start:]


_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")


def glob_as_regex(text: str) -> str:
    """A glob-looking exact value as the `match:` expression it was probably meant as."""
    return ".*".join(
        "".join("\\" + c if c in _REGEX_SPECIAL else c for c in part) for part in text.split("*")
    )


#: Names of every shape a secret may have; a regex matching them all matches any secret.
_NAME_PROBES = ("a", "Z", "0", "_", "-", ".", "registry", "npm-token_2.prod", "x" * 128)


def matches_every_name(regex: Regex) -> bool:
    """Whether a `match:` entry on names matches everything (`.*`, `.+`, `[^/]*`...)."""
    return all(regex.fullmatch(probe) is not None for probe in _NAME_PROBES)


# A regex on an owner or repository is safe only when a literal owner leads every
# top-level branch: `octo-org/.*`, `(octo-org|octo-labs)/.*`, `octo-org/a|octo-labs/b`.
_OWNER_LITERAL = r"(?:\((?:\?:)?[A-Za-z0-9-]+(?:\|[A-Za-z0-9-]+)*\)|[A-Za-z0-9-]+)"
_ANCHORED = {
    "repository": re2.compile(_OWNER_LITERAL + "/.*"),
    "repository_owner": re2.compile(_OWNER_LITERAL),
}


def owner_anchored(claim: str, expression: str) -> bool:
    """Whether a regex on `repository`/`repository_owner` names its owner literally.

    Other claims have no owner to anchor to and always pass.
    """
    anchor = _ANCHORED.get(claim)
    return anchor is None or _anchored(expression, anchor)


# A runner scope is `owner`, `owner/name` or `enterprise:slug`: the owner (or slug) leads.
_SCOPE_ANCHOR = re2.compile(r"(?:enterprise:)?" + _OWNER_LITERAL + r"(?:/.*)?")


def scope_anchored(expression: str) -> bool:
    """Whether a `match:` runner scope names its owner or enterprise literally."""
    return _anchored(expression, _SCOPE_ANCHOR)


def _anchored(expression: str, anchor: Any) -> bool:
    """Whether every top-level branch of `expression` starts with a literal owner."""
    for branch in _branches(expression):
        body = branch.removeprefix("^")
        if body.endswith("$") and not body.endswith("\\$"):
            body = body[:-1]
        inner = _group_body(body)
        if inner is not None:
            if not _anchored(inner, anchor):
                return False
        elif anchor.fullmatch(body) is None:
            return False
    return True


def _structure(expression: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, group depth) of the unescaped characters outside classes."""
    depth, i = 0, 0
    while i < len(expression):
        char = expression[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i += 2 if expression[i + 1 : i + 2] == "^" else 1
            i += 1 if expression[i : i + 1] == "]" else 0
            while i < len(expression) and expression[i] != "]":
                i += 2 if expression[i] == "\\" else 1
            i += 1
            continue
        if char == ")":
            depth -= 1
        yield i, char, depth
        if char == "(":
            depth += 1
        i += 1


def _branches(expression: str) -> list[str]:
    cuts = [i for i, char, depth in _structure(expression) if char == "|" and depth == 0]
    starts = [0, *(i + 1 for i in cuts)]
    ends = [*cuts, len(expression)]
    return [expression[a:b] for a, b in zip(starts, ends, strict=True)]


def _group_body(branch: str) -> str | None:
    """The inside of `(…)` / `(?:…)` when that group is the whole branch."""
    if not branch.startswith("("):
        return None
    for i, char, depth in _structure(branch):
        if char == ")" and depth == 0:
            if i != len(branch) - 1:
                return None
            return branch[1:-1].removeprefix("?:")
    return None
