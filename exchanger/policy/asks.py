"""What a caller asks for, as typed values the policy engine can judge.

HTTP bodies are parsed here, strictly: unknown fields, wrong types and bad
scope syntax are `InvalidRequest`. Owner, repository and scope names are
lower-cased (ASCII) because GitHub treats them case-insensitively and the
caller chooses how to spell them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from exchanger.errors import InvalidRequest
from exchanger.policy import permissions
from exchanger.policy.patterns import ascii_lower, is_text

RunnerAction = Literal["register", "remove", "jitconfig"]
RUNNER_ACTIONS: tuple[RunnerAction, ...] = ("register", "remove", "jitconfig")
MAX_REPOSITORIES = 500
ENTERPRISE_PREFIX = "enterprise:"

_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_OWNER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class SecretRequest:
    name: str
    field: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"secret": self.name, "field": self.field}


@dataclass(frozen=True, slots=True)
class RunnerRequest:
    action: RunnerAction
    scope: str
    runner_group: str | None = None
    labels: tuple[str, ...] | None = None
    name: str | None = None
    work_folder: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "scope": self.scope}
        if self.runner_group is not None:
            out["runner_group"] = self.runner_group
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out


@dataclass(frozen=True, slots=True)
class InstallationRequest:
    owner: str
    repositories: tuple[str, ...] | Literal["*"] | None = None
    permissions: Mapping[str, str] | None = None

    def describe(self) -> dict[str, Any]:
        repos = self.repositories
        return {
            "owner": self.owner,
            "repositories": repos if repos is None or repos == "*" else list(repos),
            "permissions": None if self.permissions is None else dict(self.permissions),
        }


@dataclass(frozen=True, slots=True)
class RevokeRequest:
    """`POST /revoke`: give up an installation token the caller holds."""

    token: str = field(repr=False)

    def describe(self) -> dict[str, Any]:
        return {"revoke": "installation_token"}  # never the token


#: What a policy can grant.
Grantable = SecretRequest | RunnerRequest | InstallationRequest
Ask = Grantable | RevokeRequest

#: Longest token `/revoke` takes (GitHub's installation tokens are 40 characters today).
MAX_REVOKED_TOKEN = 512


def revoke_request(body: Any) -> RevokeRequest:
    """Parse a `POST /revoke` body: `{"token": "<installation token>"}`."""
    token = expect_object(body, frozenset({"token"})).get("token")
    if not isinstance(token, str) or not _INSTALLATION_TOKEN.fullmatch(token):
        raise InvalidRequest("token must be a GitHub App installation token (ghs_…)")
    return RevokeRequest(token=token)


#: GitHub's installation tokens: `ghs_` and base62. Nothing else is relayed to GitHub.
_INSTALLATION_TOKEN = re.compile(rf"ghs_[A-Za-z0-9_]{{1,{MAX_REVOKED_TOKEN - 4}}}")


def scope_kind(scope: str) -> Literal["repository", "organization", "enterprise"] | None:
    """Classify a lower-cased scope: `owner/name`, `owner` or `enterprise:slug`."""
    if scope.startswith(ENTERPRISE_PREFIX):
        slug = scope[len(ENTERPRISE_PREFIX) :]
        return "enterprise" if _is_owner(slug) else None
    owner, slash, name = scope.partition("/")
    if not slash:
        return "organization" if _is_owner(owner) else None
    return "repository" if _is_owner(owner) and _is_repo(name) else None


def _is_owner(name: str) -> bool:
    return 0 < len(name) <= 100 and set(name) <= _OWNER


def _is_repo(name: str) -> bool:
    return 0 < len(name) <= 100 and set(name) <= _NAME and name not in {".", ".."}


def parse_scope(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("scope must be a string")
    scope = ascii_lower(value)
    if scope_kind(scope) is None:
        raise InvalidRequest("scope must be 'owner/name', 'owner' or 'enterprise:slug'")
    return scope


def parse_body(body: bytes) -> Any:
    """The request body as JSON; empty means `{}`.

    JSON may spell a lone surrogate (`"\\ud800"`), which is no text at all: it is
    refused here, so nothing behind the parser ever meets a string it cannot encode.
    """
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not valid JSON") from None
    if not _all_text(value):
        raise InvalidRequest("the body holds a string that is not valid Unicode")
    return value


def _all_text(value: Any) -> bool:
    """Every string (keys too) is valid text; iterative, so nesting depth costs no stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_text(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def expect_object(body: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    """A JSON object with only `allowed` keys."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)[:200]}")
    return body


def installation_request(body: Any, default_owner: str | None) -> InstallationRequest:
    """Parse a `POST /token` body; the owner defaults to the caller's repository_owner."""
    data = expect_object(body, frozenset({"owner", "repositories", "permissions"}))
    owner = data.get("owner", default_owner)
    if not isinstance(owner, str) or not _is_owner(ascii_lower(owner)):
        raise InvalidRequest("owner must be a GitHub account name")
    owner = ascii_lower(owner)
    return InstallationRequest(
        owner=owner,
        repositories=_repositories(data.get("repositories"), owner),
        permissions=_permissions(data.get("permissions")),
    )


def _repositories(value: Any, owner: str) -> tuple[str, ...] | Literal["*"] | None:
    if value is None:
        return None
    if value == "*":
        return "*"
    if not isinstance(value, list) or not value:
        raise InvalidRequest("repositories must be '*' or a non-empty list of names")
    if len(value) > MAX_REPOSITORIES:
        raise InvalidRequest(f"at most {MAX_REPOSITORIES} repositories")
    names: dict[str, None] = {}
    for item in value:
        if not isinstance(item, str):
            raise InvalidRequest("repositories must be strings")
        name = ascii_lower(item)
        repo_owner, slash, bare = name.rpartition("/")
        if slash and repo_owner != owner:
            raise InvalidRequest("repositories must belong to the requested owner")
        if not _is_repo(bare):
            raise InvalidRequest("repositories must be 'name' or 'owner/name'")
        names[bare] = None
    return tuple(names)


def _permissions(value: Any) -> Mapping[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise InvalidRequest("permissions must be a non-empty object")
    for name, level in value.items():
        wrong = permissions.problem(name, level)
        if wrong is not None:
            raise InvalidRequest(f"permission {name[:64]!r} {wrong}")
    return dict(value)


_JIT_FIELDS = frozenset({"scope", "name", "labels", "runner_group", "work_folder"})
MAX_LABELS = 100


def runner_request(action: RunnerAction, body: Any, default_scope: str | None) -> RunnerRequest:
    """Parse a runner body; the scope defaults to the caller's repository."""
    data = expect_object(body, _JIT_FIELDS if action == "jitconfig" else frozenset({"scope"}))
    if "scope" in data:
        scope = parse_scope(data["scope"])  # an explicit null is a wrong type, not a default
    elif default_scope is None:
        raise InvalidRequest("scope is required: the token has no repository claim")
    else:
        scope = parse_scope(default_scope)
    group = data.get("runner_group")
    if group is not None and (not isinstance(group, str) or not 0 < len(group) <= 200):
        raise InvalidRequest("runner_group must be a group name")
    if group is not None and scope_kind(scope) == "repository":
        raise InvalidRequest("runner_group applies to organization and enterprise scopes only")
    labels = data.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not 0 < len(labels) <= MAX_LABELS:
            raise InvalidRequest(f"labels must be a list of 1 to {MAX_LABELS} strings")
        if not all(isinstance(x, str) and 0 < len(x) <= 256 for x in labels):
            raise InvalidRequest("labels must be non-empty strings")
        labels = tuple(dict.fromkeys(labels))
    for key in ("name", "work_folder"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 256):
            raise InvalidRequest(f"{key} must be a non-empty string")
    return RunnerRequest(
        action=action,
        scope=scope,
        runner_group=group,
        labels=labels,
        name=data.get("name"),
        work_folder=data.get("work_folder"),
    )
