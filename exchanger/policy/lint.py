"""Policy lint: shapes a policy may take that open more than the operator meant.

Pure checks on pattern text; `exchanger.config.policies` calls them while the
YAML lines are at hand and reports the result as an error or a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import re2

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
