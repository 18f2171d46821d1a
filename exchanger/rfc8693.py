"""OAuth 2.0 Token Exchange (RFC 8693) on `POST /oauth2/token`: the standard shape of an ask.

A form (`application/x-www-form-urlencoded`) carries the caller's OIDC token as
`subject_token` and names what it wants with the standard parameters; this
module turns that form into the same `Ask` the JSON endpoints produce, so the
request goes through the same engine, limits, single use and audit:

| `resource` / `audience`              | ask                                         |
| ------------------------------------ | ------------------------------------------- |
| `https://github.com/OWNER`           | an installation token for OWNER             |
| `https://github.com/OWNER/REPO` (1+) | an installation token for those repositories |
| `urn:exchanger:secret:NAME/FIELD`    | one field of a static secret                |
| `urn:exchanger:runner:ACTION:SCOPE`  | a runner registration or removal token      |

`scope` lists permissions for an installation token (`contents:read
issues:write`); other targets take none. Errors follow RFC 6749 §5.2: `app`
renders the `oauth_error` of the one exception family for this route.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from exchanger.errors import InvalidRequest, InvalidScope, InvalidTarget, UnsupportedGrantType
from exchanger.exchange.github.auth import parse_timestamp
from exchanger.policy.asks import (
    Ask,
    SecretRequest,
    installation_request,
    runner_request,
)
from exchanger.policy.patterns import is_text

PATH = "/oauth2/token"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:id_token", "urn:ietf:params:oauth:token-type:jwt"}
)
# Identifiers of the standards and of this gateway's targets, not credentials.
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
NOT_APPLICABLE = "N_A"  # RFC 8693 §2.2.1: the issued token is no OAuth access token
GITHUB = "https://github.com/"
SECRET_URN = "urn:exchanger:secret:"  # noqa: S105
RUNNER_URN = "urn:exchanger:runner:"
_SINGLE = ("grant_type", "subject_token", "subject_token_type", "scope", "requested_token_type")
_KNOWN = frozenset({*_SINGLE, "resource", "audience", "actor_token", "actor_token_type"})


def parse_form(body: bytes) -> Mapping[str, list[str]]:
    """The form's parameters; each of the single-valued ones at most once (RFC 6749 §3.2)."""
    try:
        text = body.decode("ascii")
        form = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the body must be application/x-www-form-urlencoded") from None
    for name, values in form.items():
        if name not in _KNOWN:
            raise InvalidRequest(f"unknown parameter {name[:64]!r}")
        if name in _SINGLE and len(values) > 1:
            raise InvalidRequest(f"{name} may be given once")
        if not all(is_text(value) for value in values):
            raise InvalidRequest(f"{name} is not valid text")
    return form


def subject_token(body: bytes) -> str:
    """Check the grant and return the OIDC token to verify (before any target is read)."""
    form = parse_form(body)
    if _one(form, "grant_type") != GRANT_TYPE:
        raise UnsupportedGrantType(f"grant_type must be {GRANT_TYPE}")
    if _one(form, "subject_token_type") not in SUBJECT_TOKEN_TYPES:
        kinds = ", ".join(sorted(SUBJECT_TOKEN_TYPES))
        raise InvalidRequest(f"subject_token_type must be one of {kinds}")
    if "actor_token" in form or "actor_token_type" in form:
        raise InvalidRequest("delegation (actor_token) is not supported")
    requested = _one(form, "requested_token_type")
    if requested not in (None, ACCESS_TOKEN):
        raise InvalidTarget(f"requested_token_type must be {ACCESS_TOKEN}")
    token = _one(form, "subject_token")
    if not token:
        raise InvalidRequest("subject_token is required")
    return token


def ask_from_form(body: bytes) -> Ask:
    """The ask the form's targets and scope name."""
    return ask_from_targets(parse_form(body))


def ask_from_targets(form: Mapping[str, list[str]]) -> Ask:
    targets = [*form.get("resource", []), *form.get("audience", [])]
    scope = _one(form, "scope")
    if not targets:
        raise InvalidTarget("name the target with resource or audience")
    if all(t.startswith(GITHUB) for t in targets):
        return _installation(targets, scope)
    if len(targets) != 1:
        raise InvalidTarget("one secret or runner target at a time")
    if scope:
        raise InvalidScope("scope applies to installation tokens only")
    target = targets[0]
    if target.startswith(SECRET_URN):
        name, slash, field = target[len(SECRET_URN) :].partition("/")
        if not name or not slash or not field:
            raise InvalidTarget(f"a secret target is {SECRET_URN}NAME/FIELD")
        return SecretRequest(name=name, field=field)
    if target.startswith(RUNNER_URN):
        action, _, runner_scope = target[len(RUNNER_URN) :].partition(":")
        if not runner_scope:
            raise InvalidTarget(f"a runner target is {RUNNER_URN}register|remove:SCOPE")
        if action == "register":
            return runner_request("register", {"scope": runner_scope}, None)
        if action == "remove":
            return runner_request("remove", {"scope": runner_scope}, None)
        raise InvalidTarget(f"a runner target is {RUNNER_URN}register|remove:SCOPE")
    raise InvalidTarget("unknown target")


def _installation(targets: list[str], scope: str | None) -> Ask:
    owners: set[str] = set()
    repositories: list[str] = []
    for target in targets:
        path = target[len(GITHUB) :].rstrip("/")
        owner, slash, _ = path.partition("/")
        owners.add(owner.lower())
        if slash:
            repositories.append(path)
        elif len(targets) > 1:
            raise InvalidTarget("an owner target stands alone")
    if len(owners) != 1:
        raise InvalidTarget("all repositories of one installation token share an owner")
    body: dict[str, Any] = {"owner": owners.pop()}
    if repositories:
        body["repositories"] = repositories
    if scope:
        body["permissions"] = _permissions(scope)
    try:
        return installation_request(body, None)
    except InvalidRequest as exc:
        raise (InvalidScope if "permission" in exc.message else InvalidTarget)(
            exc.message
        ) from None


def _permissions(scope: str) -> dict[str, str]:
    permissions: dict[str, str] = {}
    for item in scope.split(" "):
        name, colon, level = item.partition(":")
        if not colon or name in permissions:
            raise InvalidScope("scope lists permissions as name:level, each once")
        permissions[name] = level
    return permissions


def _one(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def granted_scope(permissions: Mapping[str, str]) -> str:
    """The permissions a token carries, as an RFC 6749 scope string."""
    return " ".join(f"{name}:{level}" for name, level in sorted(permissions.items()))


def expires_in(expires_at: str) -> int:
    """Seconds from now to GitHub's `expires_at`, at least 0."""
    return max(0, int(parse_timestamp(expires_at) - time.time()))
