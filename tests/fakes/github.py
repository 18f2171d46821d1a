"""A fake GitHub REST API that behaves like GitHub for the endpoints the gateway calls.

It is a Starlette app served over real TLS (see `tls.serve_tls`), so the gateway's
HTTP client, certificate checks, timeouts and error handling run exactly as in
production. What it does, in request order:

1. records the request (`FakeGitHub.requests`), with the Authorization value
   replaced by the kind of credential it carried (`token <pat>`, `Bearer <app-jwt>`…);
2. checks the headers GitHub asks for (User-Agent: 403 without; an unknown
   `X-GitHub-Api-Version`: 400; a missing version or `Accept` is served, as GitHub
   does, but listed in `FakeGitHub.violations`);
3. applies injected faults (`fail`, `delay`, `reset_connection`, `rate_limit`,
   `secondary_rate_limit`);
4. authenticates and authorises like GitHub (App JWT, PAT, installation tokens it
   minted itself, each only where GitHub accepts it);
5. validates the request against GitHub's own OpenAPI description
   (`tests/data/github-openapi.json`), answering 422 and adding a violation when it
   does not conform;
6. answers, and validates its own answer against the same description (a mismatch
   is a violation: the fake must not drift from GitHub). Injected faults are sent
   as given and not validated. `skew_tokens` and `misplace_runners` make it answer
   other than asked (a broader token, a runner in another group…), still within the
   description, and mint exactly what that answer says.

Every response carries GitHub's rate-limit headers and `x-github-request-id`; error
bodies are `{"message", "documentation_url", "status"}`.

The fake never logs, and never puts a credential into a violation or an exception
message: the gateway's tests grep their logs for `FakeGitHub.minted_secrets()`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.tls import RunningServer, TestCA, serve_tls

__all__ = [
    "API_VERSION",
    "DEFAULT_INSTALLATION_PERMISSIONS",
    "SPEC_PATH",
    "AppCredentials",
    "FakeGitHub",
    "RecordedRequest",
    "TokenFormat",
    "decode_stateless_token",
    "openapi_spec",
    "run_fake_github",
]

SPEC_PATH = Path(__file__).resolve().parent.parent / "data" / "github-openapi.json"
API_VERSION = "2022-11-28"
#: Versions GitHub knows; anything else is a 400. Only API_VERSION is what we expect.
KNOWN_API_VERSIONS = frozenset({"2022-11-28", "2026-03-10"})
MEDIA_TYPE = "application/vnd.github+json"
JSON_TYPE = "application/json; charset=utf-8"
DOCS = "https://docs.github.com/rest"

TokenFormat = Literal["classic", "stateless"]
ExpiryStyle = Literal["alternate", "offset", "utc"]

#: What an installation may grant when the test does not say otherwise.
DEFAULT_INSTALLATION_PERMISSIONS: Mapping[str, str] = {
    "actions": "write",
    "administration": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "organization_self_hosted_runners": "write",
    "packages": "write",
    "pull_requests": "write",
    "workflows": "write",
}
_LEVELS = {"read": 1, "write": 2, "admin": 3}

_JWT_UNDECODABLE = "A JSON web token could not be decoded"
_JWT_EXP_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
_JWT_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
    "which the assertion expires"
)
_JWT_IAT = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion "
    "was issued"
)
_NOT_ACCESSIBLE = "Resource not accessible by integration"
_MISSING_UA = (
    "Request forbidden by administrative rules. Please make sure your request has a User-Agent "
    "header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-"
    "required). Check https://developer.github.com for other possible causes.\n"
)
_SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)
# App JWT timing rules (GitHub docs: iat 60 s in the past, exp at most 10 minutes ahead).
_JWT_DRIFT = 60
_JWT_MAX_AHEAD = 600
_JWT_MAX_LIFETIME = 660
_TOKEN_LIFETIME = 3600
_PACIFIC = timezone(timedelta(hours=-8))


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class _Spec:
    raw: dict[str, Any]
    openapi: OpenAPI
    operations: dict[str, tuple[str, str]]  # operationId -> (method, path template)

    def operation(self, operation_id: str) -> dict[str, Any]:
        method, path = self.operations[operation_id]
        op: dict[str, Any] = self.raw["paths"][path][method]
        return op

    def schema(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = self.raw["components"]["schemas"][name]
        return schema


_spec_lock = threading.Lock()
_spec_cache: list[_Spec] = []


def openapi_spec() -> _Spec:
    """GitHub's OpenAPI subset, loaded and checked once per process (about 0.1 s)."""
    with _spec_lock:
        if not _spec_cache:
            raw = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
            operations = {
                op["operationId"]: (method, path)
                for path, item in raw["paths"].items()
                for method, op in item.items()
                if isinstance(op, dict) and "operationId" in op
            }
            _spec_cache.append(_Spec(raw, OpenAPI.from_dict(raw), operations))
        return _spec_cache[0]


@dataclass
class _OARequest:
    """openapi-core's request protocol; the path is relative to the API root."""

    method: str
    path: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters
    host_url: str = "https://api.github.com"


@dataclass
class _OAResponse:
    status_code: int
    data: bytes | None
    content_type: str
    headers: Mapping[str, str]


def _schema_messages(exc: BaseException) -> list[str]:
    """The individual schema errors under an openapi-core exception (never whole values)."""
    found: list[str] = []
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        for error in getattr(node, "schema_errors", None) or ():
            where = "/".join(str(p) for p in error.absolute_path)
            found.append(f"{where or '(body)'}: {error.message}")
        node = node.__cause__ or node.__context__
    return found


def _describe_openapi_error(exc: BaseException) -> str:
    details = _schema_messages(exc)
    if details:
        return "; ".join(details)
    parts = [f"{type(exc).__name__}: {exc}"]
    if exc.__cause__ is not None:
        parts.append(f"{type(exc.__cause__).__name__}: {exc.__cause__}")
    return " <- ".join(parts)


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class AppCredentials:
    """A GitHub App's identity: its id, client id and RSA-2048 private key.

    An App built `from_public_key` has no private key here (it lives in a KMS or an HSM):
    the fake checks its JWTs against `verifying_key`, and signing or a PEM is an error.
    """

    app_id: int
    private_key: rsa.RSAPrivateKey | None = field(repr=False)
    client_id: str = "Iv23liFakeGitHubApp0"
    slug: str = "exchanger-test-app"
    verifying_key: rsa.RSAPublicKey | None = field(default=None, repr=False)

    @classmethod
    def generate(cls, app_id: int = 12345, *, slug: str = "exchanger-test-app") -> AppCredentials:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(app_id=app_id, private_key=key, client_id=_client_id(), slug=slug)

    @classmethod
    def from_public_key(
        cls, app_id: int, public_key: rsa.RSAPublicKey, *, slug: str = "exchanger-test-app"
    ) -> AppCredentials:
        """An App whose private key is kept elsewhere; GitHub knows its public half."""
        return cls(
            app_id=app_id,
            private_key=None,
            client_id=_client_id(),
            slug=slug,
            verifying_key=public_key,
        )

    @property
    def signing_key(self) -> rsa.RSAPrivateKey:
        if self.private_key is None:
            raise ValueError(f"App {self.app_id}'s private key is not in this process")
        return self.private_key

    @property
    def pem_pkcs1(self) -> str:
        """The key as GitHub hands it out (`-----BEGIN RSA PRIVATE KEY-----`)."""
        return self.signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()

    @property
    def pem_pkcs8(self) -> str:
        return self.signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        if self.verifying_key is not None:
            return self.verifying_key
        return self.signing_key.public_key()

    def jwt(
        self,
        *,
        now: float | None = None,
        iat: int | None = None,
        exp: int | None = None,
        iss: int | str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An App JWT as GitHub's docs describe it: iat = now - 60, exp = now + 540."""
        moment = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iat": moment - 60 if iat is None else iat,
            "exp": moment + 540 if exp is None else exp,
            "iss": str(self.app_id) if iss is None else iss,
            **(extra_claims or {}),
        }
        signing = RSAKey.import_key(
            (key or self.signing_key)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
        return jwt.encode({"alg": "RS256", "typ": "JWT"}, claims, signing, algorithms=["RS256"])


def _client_id() -> str:
    return "Iv23li" + "".join(secrets.choice(_ALNUM) for _ in range(14))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it.

    `path` is as received (with any prefix); `headers` keys are lower-case and the
    Authorization value is replaced by its kind: `token <pat>`, `Bearer <app-jwt>`,
    `Bearer <installation-token>`, `<invalid-jwt>`, `<invalid-installation-token>` or
    `<invalid>` after the scheme the caller used. `json` is the parsed body (None if none).
    `operation` is GitHub's operationId (None for a path GitHub does not have).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    operation: str | None = None


@dataclass
class _Grant:
    """What an installation token the fake minted grants."""

    installation_id: int
    account: str
    repositories: tuple[str, ...] | None
    permissions: dict[str, str]
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True)
class _Caller:
    kind: Literal["none", "app", "pat", "installation", "bad-jwt", "bad"]
    label: str  # what goes into the recorded Authorization header
    message: str = "Bad credentials"
    grant: _Grant | None = None


@dataclass
class _Fault:
    kind: Literal["fail", "delay", "reset"]
    operation: str | None
    pattern: re.Pattern[str] | None
    remaining: int | None
    status: int = 500
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def matches(self, operation: str | None, path: str) -> bool:
        if self.operation is not None:
            return self.operation == operation
        return self.pattern is not None and self.pattern.search(path) is not None


@dataclass
class _Skew:
    """An answer other than asked for the next `remaining` requests (None: all, until reset)."""

    remaining: int | None
    permissions: dict[str, str | None] = field(default_factory=dict)
    repositories: tuple[str, ...] = ()
    selection_all: bool = False
    group_id: int | None = None
    labels: tuple[str, ...] | None = None


class _DroppedConnection(Exception):
    """Raised mid-response so that uvicorn closes the connection."""


class _QuietDrops(logging.Filter):
    """Keep uvicorn from printing a traceback for connections dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DroppedConnection)


_uvicorn_error_log = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _QuietDrops) for f in _uvicorn_error_log.filters):
    _uvicorn_error_log.addFilter(_QuietDrops())


class _DroppingResponse(Response):
    """Starts a 200 response, sends part of the body, then drops the connection."""

    def __init__(self) -> None:
        super().__init__(b"", status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", JSON_TYPE.encode()), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"token": "', "more_body": True})
        raise _DroppedConnection


# --------------------------------------------------------------------------- helpers

_ALNUM = string.ascii_letters + string.digits
_PLAIN_REPO_URLS = (
    "contributors",
    "deployments",
    "downloads",
    "events",
    "forks",
    "hooks",
    "languages",
    "merges",
    "stargazers",
    "subscribers",
    "subscription",
    "tags",
    "teams",
)
_UPPER = string.ascii_uppercase + string.digits


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _stable_id(*parts: str) -> int:
    """A deterministic positive id for a name (repositories, accounts)."""
    return zlib.crc32("/".join(parts).lower().encode()) % 900_000_000 + 1_000_000


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_millis(moment: float, tz: timezone) -> str:
    stamp = datetime.fromtimestamp(moment, tz)
    text = stamp.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def decode_stateless_token(token: str) -> dict[str, Any] | None:
    """The claims inside a stateless installation token (`ghs_<app id>_<JWT>`), unverified."""
    match = re.fullmatch(r"ghs_(\d+)_([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)", token)
    if match is None:
        return None
    try:
        claims = json.loads(_b64url_decode(match.group(3)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _error_body(status: int, message: str, documentation_url: str = DOCS) -> dict[str, Any]:
    return {"message": message, "documentation_url": documentation_url, "status": str(status)}


def _reason(status: int) -> str:
    reasons = {
        400: "Bad Request",
        401: "Bad credentials",
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        422: "Validation Failed",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Server Error",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
    return reasons.get(status, "Error")


# --------------------------------------------------------------------------- the fake

# Which credentials an operation accepts.
_Auth = Literal["app", "repo-runner", "org-runner", "org-runner-read", "enterprise", "self"]
_Handler = Callable[[Request, "_Op", dict[str, str], Any, _Caller], Awaitable[Response]]


@dataclass(frozen=True)
class _Op:
    operation_id: str
    auth: _Auth
    resource: str  # x-ratelimit-resource
    handler: str  # name of the FakeGitHub method
    accepted_permissions: str = ""


_RUNNER_SCOPES: tuple[tuple[str, str, _Auth], ...] = (
    ("repo", "/repos/{owner}/{repo}", "repo-runner"),
    ("org", "/orgs/{org}", "org-runner"),
    ("enterprise", "/enterprises/{enterprise}", "enterprise"),
)
_RUNNER_OPERATION_IDS = {
    ("repo", "registration-token"): "actions/create-registration-token-for-repo",
    ("repo", "remove-token"): "actions/create-remove-token-for-repo",
    ("repo", "generate-jitconfig"): "actions/generate-runner-jitconfig-for-repo",
    ("org", "registration-token"): "actions/create-registration-token-for-org",
    ("org", "remove-token"): "actions/create-remove-token-for-org",
    ("org", "generate-jitconfig"): "actions/generate-runner-jitconfig-for-org",
    (
        "enterprise",
        "registration-token",
    ): "enterprise-admin/create-registration-token-for-enterprise",
    ("enterprise", "remove-token"): "enterprise-admin/create-remove-token-for-enterprise",
    ("enterprise", "generate-jitconfig"): "actions/generate-runner-jitconfig-for-enterprise",
}

_DELETE_RUNNER_OPERATION_IDS = {
    "repo": "actions/delete-self-hosted-runner-from-repo",
    "org": "actions/delete-self-hosted-runner-from-org",
    "enterprise": "enterprise-admin/delete-self-hosted-runner-from-enterprise",
}


def _routes_table() -> list[tuple[str, str, _Op]]:
    """(method, path template, operation) for every endpoint the fake serves."""
    table: list[tuple[str, str, _Op]] = []
    for scope, base, auth in _RUNNER_SCOPES:
        perms = {
            "repo": "administration=write",
            "org": "organization_self_hosted_runners=write",
        }.get(scope, "")
        for action in ("registration-token", "remove-token", "generate-jitconfig"):
            handler = "_jitconfig" if action == "generate-jitconfig" else "_runner_token"
            op = _Op(
                _RUNNER_OPERATION_IDS[scope, action],
                auth,
                "actions_runner_registration",
                handler,
                perms,
            )
            table.append(("POST", f"{base}/actions/runners/{action}", op))
        delete = _Op(_DELETE_RUNNER_OPERATION_IDS[scope], auth, "core", "_delete_runner", perms)
        table.append(("DELETE", f"{base}/actions/runners/{{runner_id}}", delete))
    table += [
        (
            "GET",
            "/orgs/{org}/actions/runner-groups",
            _Op(
                "actions/list-self-hosted-runner-groups-for-org",
                "org-runner-read",
                "core",
                "_runner_groups",
                "organization_self_hosted_runners=read",
            ),
        ),
        (
            "GET",
            "/repos/{owner}/{repo}/installation",
            _Op("apps/get-repo-installation", "app", "core", "_installation"),
        ),
        (
            "GET",
            "/orgs/{org}/installation",
            _Op("apps/get-org-installation", "app", "core", "_installation"),
        ),
        (
            "GET",
            "/users/{username}/installation",
            _Op("apps/get-user-installation", "app", "core", "_installation"),
        ),
        (
            "GET",
            "/app/installations/{installation_id}",
            _Op("apps/get-installation", "app", "core", "_get_installation"),
        ),
        (
            "POST",
            "/app/installations/{installation_id}/access_tokens",
            _Op("apps/create-installation-access-token", "app", "core", "_access_token"),
        ),
        ("GET", "/app", _Op("apps/get-authenticated", "app", "core", "_get_app")),
        (
            "DELETE",
            "/installation/token",
            _Op("apps/revoke-installation-access-token", "self", "core", "_revoke"),
        ),
    ]
    return table


class FakeGitHub:
    """GitHub's REST API for runner tokens, JIT configs, runner groups and App installations.

    Arguments:
        app: the GitHub App whose JWTs are accepted (None: no App JWT is valid).
        pat: the one personal access token that is valid (None: none is).
        installations: account login -> installation id of `app`, one per account. Looked up
            in any case; the installation's `account.login` keeps the case given here.
        installation_repositories: installation id -> the repository names it was granted;
            an installation not listed has `repository_selection: all` (any name is reachable).
        installation_permissions: installation id -> permissions the App holds there
            (default DEFAULT_INSTALLATION_PERMISSIONS).
        user_accounts: logins (of `installations`) that are users, not organisations.
        runner_groups: organisation -> [(id, name)]; (1, "Default") is always added.
        enterprise_runner_groups: the same for enterprises.
        token_format: the installation-token format GitHub's rollout gives ("classic"
            opaque `ghs_` + 36 alphanumerics, or "stateless" `ghs_<app id>_<JWT>`).
            Mutable at runtime; `X-GitHub-Stateless-S2S-Token` overrides it per request.
        expiry_style: how runner-token `expires_at` looks: "offset" (`…123-08:00`, as in
            GitHub's spec example), "utc" (`…123Z`), or "alternate" between the two.
        prefix: a GHES-style path prefix such as "/api/v3" ("" for api.github.com).
    """

    def __init__(
        self,
        *,
        app: AppCredentials | None = None,
        pat: str | None = None,
        installations: Mapping[str, int] | None = None,
        installation_repositories: Mapping[int, Sequence[str]] | None = None,
        installation_permissions: Mapping[int, Mapping[str, str]] | None = None,
        user_accounts: Iterable[str] = (),
        runner_groups: Mapping[str, Sequence[tuple[int, str]]] | None = None,
        enterprise_runner_groups: Mapping[str, Sequence[tuple[int, str]]] | None = None,
        token_format: TokenFormat = "classic",
        expiry_style: ExpiryStyle = "alternate",
        prefix: str = "",
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError("prefix must look like '/api/v3'")
        self.app_credentials = app
        self.pat = pat
        self.installations = {k.lower(): v for k, v in (installations or {}).items()}
        self.account_logins = {k.lower(): k for k in (installations or {})}
        self.installation_repositories = {
            k: list(v) for k, v in (installation_repositories or {}).items()
        }
        self.installation_permissions = {
            k: dict(v) for k, v in (installation_permissions or {}).items()
        }
        self.user_accounts = {u.lower() for u in user_accounts}
        self.runner_groups = _with_default_group(runner_groups)
        self.enterprise_runner_groups = _with_default_group(enterprise_runner_groups)
        self.token_format: TokenFormat = token_format
        self.expiry_style: ExpiryStyle = expiry_style
        self.prefix = prefix
        self.api_url: str | None = None  # set by run_fake_github

        self._spec = openapi_spec()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._violations: list[str] = []
        self._faults: list[_Fault] = []
        self._grants: dict[str, _Grant] = {}
        self._minted: list[str] = []
        self._runner_names: dict[str, set[str]] = {}
        self._runners: list[dict[str, Any]] = []
        self._next_runner_id = 23
        self._token_skews: list[_Skew] = []
        self._runner_skews: list[_Skew] = []
        self._revocations: list[str] = []
        self._expiry_flip = False
        self._used: dict[str, int] = {}
        self._window_start = time.time()
        self._clock_offset = 0.0
        self._wake_generation = 0
        self._stateless_key = secrets.token_bytes(32)
        self._stateless_kid = secrets.token_hex(8)

        self._ops: dict[str, _Op] = {}
        routes = []
        for method, path, op in _routes_table():
            if op.operation_id not in self._spec.operations:
                raise RuntimeError(f"{op.operation_id} is missing from {SPEC_PATH.name}")
            self._ops[op.operation_id] = op
            routes.append(Route(prefix + path, self._endpoint(op), methods=[method]))
        self.app = Starlette(
            routes=routes,
            exception_handlers={404: self._not_found, 405: self._not_found},
        )

    # ----------------------------------------------------------------- test controls

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def violations(self) -> list[str]:
        """Ways in which requests (or the fake's own answers) broke GitHub's contract."""
        with self._lock:
            return list(self._violations)

    @property
    def runners(self) -> list[dict[str, Any]]:
        """JIT runners created so far: {"scope", "runner", "work_folder"}."""
        with self._lock:
            return [dict(r) for r in self._runners]

    @property
    def installation_tokens(self) -> list[str]:
        """Every installation token minted so far, oldest first."""
        with self._lock:
            return list(self._grants)

    @property
    def revocations(self) -> list[str]:
        """The tokens revoked through `DELETE /installation/token`, oldest first."""
        with self._lock:
            return list(self._revocations)

    def reset(self) -> None:
        """Forget requests, violations, faults and answer switches (`skew_tokens`,
        `misplace_runners`), undo `advance_clock`, wake delayed requests.

        Minted tokens, JIT runner names and the configuration stay as they are.
        """
        with self._lock:
            self._clock_offset = 0.0
            self._requests.clear()
            self._violations.clear()
            self._faults.clear()
            self._token_skews.clear()
            self._runner_skews.clear()
            self._revocations.clear()
            self._wake_generation += 1

    def now(self) -> float:
        """The fake's clock (wall clock plus `advance_clock`)."""
        with self._lock:
            return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock, e.g. past an installation token's expiry."""
        with self._lock:
            self._clock_offset += seconds

    def fail(
        self,
        target: str,
        status: int,
        body: Mapping[str, Any] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` matching requests (None: all) with `status`.

        `target` is an operationId (e.g. "apps/create-installation-access-token") or a
        regular expression searched in the request path (without the prefix). The default
        body is a GitHub basic-error; a str/bytes body is sent as text/plain.
        """
        if body is None:
            raw = json.dumps(_error_body(status, _reason(status))).encode()
            content_type = JSON_TYPE
        elif isinstance(body, Mapping):
            raw, content_type = json.dumps(dict(body)).encode(), JSON_TYPE
        else:
            raw = body.encode() if isinstance(body, str) else body
            content_type = "text/plain; charset=utf-8"
        self._add_fault(
            _Fault(
                "fail",
                *self._target(target),
                times,
                status=status,
                body=raw,
                content_type=content_type,
                headers={k.lower(): v for k, v in (headers or {}).items()},
            )
        )

    def rate_limit(
        self, target: str, *, status: int = 403, reset_in: int = 60, times: int | None = 1
    ) -> None:
        """A primary rate limit: 403/429, `x-ratelimit-remaining: 0`, reset `reset_in` s ahead."""
        reset = int(self.now()) + reset_in
        self.fail(
            target,
            status,
            _error_body(status, "API rate limit exceeded for installation ID 1.", DOCS),
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
            times,
        )

    def secondary_rate_limit(
        self,
        target: str,
        *,
        status: int = 403,
        retry_after: int | None = 60,
        times: int | None = 1,
    ) -> None:
        """A secondary rate limit: 403/429 with the usual message and maybe `retry-after`."""
        headers = {} if retry_after is None else {"retry-after": str(retry_after)}
        message = _SECONDARY_LIMIT.format(request_id="C0DE:FA4E:1234567:89ABCDE:00000000")
        self.fail(target, status, _error_body(status, message), headers, times)

    def delay(self, target: str, seconds: float, times: int | None = None) -> None:
        """Hold the next `times` matching requests (None: all, until reset()) for `seconds`.

        reset() (and leaving run_fake_github) releases requests that are still held.
        """
        self._add_fault(_Fault("delay", *self._target(target), times, seconds=seconds))

    def reset_connection(self, target: str, times: int | None = None) -> None:
        """Drop the connection mid-answer for the next `times` matching requests (None: all).

        The fake starts a 200 answer, sends part of the body and closes the connection, so
        the client sees a protocol error. reset() removes the fault.
        """
        self._add_fault(_Fault("reset", *self._target(target), times))

    def skew_tokens(
        self,
        *,
        permissions: Mapping[str, str | None] | None = None,
        repositories: Sequence[str] = (),
        selection_all: bool = False,
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` token requests (None: all) other than asked, and mint so.

        A misbehaving GitHub: `permissions` are set on top of what was asked (a level of None
        drops that permission: a narrower answer), `repositories` (bare names of the
        installation's account, or `owner/name` of any) are added to the listed ones, and
        `selection_all` answers `repository_selection: all` with no list. The token really
        grants what the answer says. reset() removes the switch.
        """
        skew = _Skew(
            times,
            permissions=dict(permissions or {}),
            repositories=tuple(repositories),
            selection_all=selection_all,
        )
        self._add_skew(self._token_skews, skew)

    def misplace_runners(
        self,
        *,
        group_id: int | None = None,
        labels: Sequence[str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Create the next `times` JIT runners (None: all) elsewhere than asked.

        The runner lands in runner group `group_id` and/or carries the custom `labels` instead
        of the requested ones (`self-hosted` stays, read-only), and the answer says so.
        reset() removes the switch.
        """
        skew = _Skew(times, group_id=group_id, labels=None if labels is None else tuple(labels))
        self._add_skew(self._runner_skews, skew)

    def describe_token(self, token: str) -> dict[str, Any] | None:
        """What an installation token minted by this fake grants (None: not one of ours)."""
        with self._lock:
            grant = self._grants.get(token)
            if grant is None:
                return None
            return {
                "installation_id": grant.installation_id,
                "repositories": None if grant.repositories is None else list(grant.repositories),
                "permissions": dict(grant.permissions),
            }

    def token_is_active(self, token: str) -> bool:
        """True for a minted installation token that is neither expired nor revoked."""
        now = self.now()
        with self._lock:
            grant = self._grants.get(token)
            return grant is not None and not grant.revoked and grant.expires_at > now

    def minted_secrets(self) -> list[str]:
        """Every credential the fake knows or handed out: PAT, App key PEMs, tokens, JIT blobs."""
        known = [self.pat] if self.pat else []
        if self.app_credentials is not None and self.app_credentials.private_key is not None:
            known += [self.app_credentials.pem_pkcs1, self.app_credentials.pem_pkcs8]
        with self._lock:
            return known + list(self._minted)

    # ----------------------------------------------------------------- internals: faults

    def _target(self, target: str) -> tuple[str | None, re.Pattern[str] | None]:
        if target in self._spec.operations:
            return target, None
        return None, re.compile(target)

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("times must be at least 1 (or None for always)")
        with self._lock:
            self._faults.append(fault)

    def _add_skew(self, switches: list[_Skew], skew: _Skew) -> None:
        if skew.remaining is not None and skew.remaining < 1:
            raise ValueError("times must be at least 1 (or None for always)")
        with self._lock:
            switches.append(skew)

    def _take_skew(self, switches: list[_Skew]) -> _Skew | None:
        """The oldest answer switch of this kind, used once."""
        with self._lock:
            if not switches:
                return None
            skew = switches[0]
            if skew.remaining is not None:
                skew.remaining -= 1
                if skew.remaining == 0:
                    switches.pop(0)
            return skew

    def _take_faults(self, operation: str | None, path: str) -> tuple[_Fault | None, _Fault | None]:
        """The first matching delay, and the first matching fail/reset; each used once."""
        delay: _Fault | None = None
        answer: _Fault | None = None
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(operation, path):
                    continue
                if fault.kind == "delay":
                    if delay is not None:
                        continue
                    delay = fault
                elif answer is None:
                    answer = fault
                else:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
        return delay, answer

    async def _sleep(self, seconds: float) -> None:
        with self._lock:
            generation = self._wake_generation
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if self._wake_generation != generation:
                    return
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _release_delays(self) -> None:
        with self._lock:
            self._wake_generation += 1

    # ----------------------------------------------------------------- internals: plumbing

    def _violation(self, text: str) -> None:
        with self._lock:
            secrets_now = [s for s in ([self.pat] if self.pat else []) + self._minted if s]
        for secret in secrets_now:
            text = text.replace(secret, "<redacted>")
        with self._lock:
            self._violations.append(text)

    def _rate_headers(self, resource: str) -> dict[str, str]:
        limit = 10_000 if resource == "actions_runner_registration" else 5_000
        with self._lock:
            used = self._used[resource] = self._used.get(resource, 0) + 1
            reset = int(self._window_start + self._clock_offset + 3600)
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": resource,
        }

    @staticmethod
    def _request_id() -> str:
        parts = (4, 4, 7, 7, 8)
        return ":".join(secrets.token_hex(8)[:n].upper() for n in parts)

    def _base_headers(self, resource: str) -> dict[str, str]:
        return {
            **self._rate_headers(resource),
            "x-github-request-id": self._request_id(),
            "x-github-api-version-selected": API_VERSION,
            "x-github-media-type": "github.v3; format=json",
            "access-control-expose-headers": (
                "ETag, Link, Location, Retry-After, X-GitHub-OTP, X-RateLimit-Limit, "
                "X-RateLimit-Remaining, X-RateLimit-Used, X-RateLimit-Resource, "
                "X-RateLimit-Reset, X-OAuth-Scopes, X-Accepted-OAuth-Scopes, X-Poll-Interval, "
                "X-GitHub-Media-Type, X-GitHub-SSO, X-GitHub-Request-Id, Deprecation, Sunset"
            ),
        }

    def _json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body, separators=(",", ":")).encode(),
            status_code=status,
            headers=dict(headers or {}),
            media_type=JSON_TYPE,
        )

    def _error(self, status: int, message: str, op: _Op | None = None, **extra: Any) -> Response:
        return self._json(status, {**_error_body(status, message, self._docs_url(op)), **extra})

    def _docs_url(self, op: _Op | None) -> str:
        if op is None:
            return DOCS
        url = str(self._spec.operation(op.operation_id).get("externalDocs", {}).get("url", DOCS))
        return url.replace("/enterprise-cloud@latest", "")

    def _classify(self, authorization: str | None) -> _Caller:
        """Who is calling, without yet asking whether this endpoint accepts them."""
        if not authorization or not authorization.strip():
            return _Caller("none", "")
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() not in ("bearer", "token") or not value:
            return _Caller("bad", f"{scheme} <invalid>")
        if value.startswith("ghs_"):
            now = self.now()
            with self._lock:
                grant = self._grants.get(value)
            if grant is None or grant.revoked or grant.expires_at <= now:
                return _Caller("bad", f"{scheme} <invalid-installation-token>")
            return _Caller("installation", f"{scheme} <installation-token>", grant=grant)
        if value.count(".") == 2:
            if scheme.lower() != "bearer":
                return _Caller("bad-jwt", f"{scheme} <invalid-jwt>", _JWT_UNDECODABLE)
            problem = self._check_app_jwt(value)
            if problem is None:
                return _Caller("app", f"{scheme} <app-jwt>")
            return _Caller("bad-jwt", f"{scheme} <invalid-jwt>", problem)
        if self.pat is not None and hmac.compare_digest(value.encode(), self.pat.encode()):
            return _Caller("pat", f"{scheme} <pat>")
        return _Caller("bad", f"{scheme} <invalid>")

    def _check_app_jwt(self, value: str) -> str | None:
        """None if `value` is a valid JWT of our App now, else GitHub's 401 message."""
        app = self.app_credentials
        if app is None:
            return _JWT_UNDECODABLE
        try:
            key = RSAKey.import_key(
                app.public_key.public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                ).decode()
            )
            token = jwt.decode(value, key, algorithms=["RS256"])
        except (JoseError, ValueError, TypeError):
            return _JWT_UNDECODABLE
        claims = token.claims
        if str(claims.get("iss")) not in (str(app.app_id), app.client_id):
            return _JWT_UNDECODABLE
        iat, exp = claims.get("iat"), claims.get("exp")
        now = self.now()
        if not isinstance(iat, int) or isinstance(iat, bool) or iat > now + _JWT_DRIFT:
            return _JWT_IAT
        if not isinstance(exp, int) or isinstance(exp, bool) or exp <= now:
            return _JWT_EXPIRED
        if exp > now + _JWT_MAX_AHEAD + _JWT_DRIFT or exp - iat > _JWT_MAX_LIFETIME:
            return _JWT_EXP_TOO_FAR
        return None

    def _authorize(self, op: _Op, caller: _Caller, params: Mapping[str, str]) -> Response | None:
        """GitHub's answer when `caller` may not use `op` here, else None."""
        if caller.kind == "none":
            return self._error(401, "Requires authentication", op)
        if op.auth == "app":
            if caller.kind == "app":
                return None
            return self._error(
                401, caller.message if caller.kind == "bad-jwt" else _JWT_UNDECODABLE, op
            )
        if caller.kind in ("bad", "bad-jwt"):
            return self._error(401, "Bad credentials", op)
        if op.auth == "self":
            return (
                None if caller.kind == "installation" else self._error(401, "Bad credentials", op)
            )
        if caller.kind == "pat":
            return None
        if caller.kind == "app" or op.auth == "enterprise" or caller.grant is None:
            return self._error(403, _NOT_ACCESSIBLE, op)
        grant = caller.grant
        owner = params.get("owner") or params.get("org") or ""
        if owner.lower() != grant.account.lower():
            return self._error(404, "Not Found", op)
        repo = params.get("repo")
        if (
            op.auth == "repo-runner"
            and repo is not None
            and grant.repositories is not None
            and repo.lower() not in {r.lower() for r in grant.repositories}
        ):
            return self._error(404, "Not Found", op)
        needed = {
            "repo-runner": ("administration", "write"),
            "org-runner": ("organization_self_hosted_runners", "write"),
            "org-runner-read": ("organization_self_hosted_runners", "read"),
        }[op.auth]
        held = grant.permissions.get(needed[0])
        if held is None or _LEVELS.get(held, 0) < _LEVELS[needed[1]]:
            return self._error(403, _NOT_ACCESSIBLE, op)
        return None

    def _record(self, request: Request, body_json: Any, caller: _Caller, op: _Op | None) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = caller.label
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=dict(request.query_params),
                    headers=headers,
                    json=body_json,
                    operation=op.operation_id if op else None,
                )
            )

    def _check_headers(self, request: Request, op: _Op | None) -> Response | None:
        where = f"{request.method} {request.url.path}"
        headers = request.headers
        if not headers.get("user-agent", "").strip():
            self._violation(f"{where}: no User-Agent (GitHub answers 403)")
            return Response(_MISSING_UA, 403, media_type="text/plain; charset=utf-8")
        version = headers.get("x-github-api-version")
        if version is None:
            self._violation(f"{where}: no X-GitHub-Api-Version (expected {API_VERSION})")
        elif version not in KNOWN_API_VERSIONS:
            self._violation(f"{where}: unknown X-GitHub-Api-Version {version!r}")
            return self._error(
                400,
                f"Invalid API version '{version}'. Supported versions: "
                + ", ".join(sorted(KNOWN_API_VERSIONS)),
                op,
            )
        elif version != API_VERSION:
            self._violation(f"{where}: X-GitHub-Api-Version {version!r}, expected {API_VERSION}")
        accept = [
            part.split(";")[0].strip().lower() for part in headers.get("accept", "").split(",")
        ]
        if MEDIA_TYPE not in accept:
            self._violation(f"{where}: Accept does not include {MEDIA_TYPE}")
        return None

    def _openapi_request(self, request: Request, body: bytes) -> _OARequest:
        path = request.url.path.removeprefix(self.prefix) or "/"
        return _OARequest(
            method=request.method.lower(),
            path=path,
            body=body or None,
            content_type=request.headers.get("content-type", "application/octet-stream"),
            parameters=RequestParameters(query=request.query_params, header=request.headers),
        )

    def _validate_response(self, op: _Op, oa_request: _OARequest, response: Response) -> None:
        data = response.body if isinstance(response.body, bytes) else bytes(response.body)
        declared = self._spec.operation(op.operation_id)["responses"]
        where = f"{oa_request.method.upper()} {oa_request.path} -> {response.status_code}"
        if str(response.status_code) in declared or "default" in declared:
            try:
                self._spec.openapi.validate_response(
                    oa_request,
                    _OAResponse(
                        response.status_code,
                        data or None,
                        response.headers.get("content-type", ""),
                        response.headers,
                    ),
                )
            except Exception as exc:  # every failure is a violation
                self._violation(
                    f"{where}: response breaks the spec: {_describe_openapi_error(exc)}"
                )
            return
        if response.status_code < 400:
            self._violation(f"{where}: status not declared for {op.operation_id}")
            return
        # GitHub answers undeclared error statuses with its usual error shapes.
        name = "validation-error" if response.status_code == 422 else "basic-error"
        try:
            instance = json.loads(data)
        except ValueError:
            self._violation(f"{where}: error body is not JSON")
            return
        for error in OAS30Validator(self._spec.schema(name)).iter_errors(instance):
            self._violation(f"{where}: error body breaks {name}: {error.message}")

    def _endpoint(self, op: _Op) -> Callable[[Request], Awaitable[Response]]:
        handler: _Handler = getattr(self, op.handler)

        async def endpoint(request: Request) -> Response:
            response = await self._serve(op, handler, request)
            base = self._base_headers(op.resource)
            if op.accepted_permissions:
                base["x-accepted-github-permissions"] = op.accepted_permissions
            for name, value in base.items():
                if name not in response.headers:
                    response.headers[name] = value
            if response.headers["x-ratelimit-remaining"] == "0":  # an injected primary limit
                response.headers["x-ratelimit-used"] = response.headers["x-ratelimit-limit"]
            return response

        return endpoint

    async def _serve(self, op: _Op, handler: _Handler, request: Request) -> Response:
        body = await request.body()
        body_json: Any = None
        bad_json = False
        if body.strip():
            try:
                body_json = json.loads(body)
            except ValueError:
                bad_json = True
        caller = self._classify(request.headers.get("authorization"))
        self._record(request, body_json, caller, op)
        params = dict(request.path_params)

        refusal = self._check_headers(request, op)
        if refusal is not None:
            return refusal
        relative = request.url.path.removeprefix(self.prefix)
        delay, answer = self._take_faults(op.operation_id, relative)
        if delay is not None:
            await self._sleep(delay.seconds)
        if answer is not None and answer.kind == "reset":
            return _DroppingResponse()
        if answer is not None:
            return Response(
                answer.body, answer.status, headers=answer.headers, media_type=answer.content_type
            )

        refusal = self._authorize(op, caller, params)
        if refusal is not None:
            return refusal
        if bad_json:
            self._violation(f"{request.method} {request.url.path}: body is not JSON")
            return self._error(400, "Problems parsing JSON", op)

        oa_request = self._openapi_request(request, body)
        try:
            self._spec.openapi.validate_request(oa_request)
        except Exception as exc:  # any mismatch is the caller's fault
            detail = _describe_openapi_error(exc)
            self._violation(
                f"{request.method} {request.url.path}: request breaks the spec: {detail}"
            )
            response = self._error(422, f"Invalid request.\n\n{detail}", op)
        else:
            try:
                response = await handler(request, op, params, body_json, caller)
            except Exception as exc:  # a bug in the fake must be loud, not a hang
                self._violation(f"{request.method} {request.url.path}: fake crashed: {exc!r}")
                return self._error(500, "Internal Server Error (fake)", op)
        self._validate_response(op, oa_request, response)
        return response

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        caller = self._classify(request.headers.get("authorization"))
        body = await request.body()
        try:
            body_json = json.loads(body) if body.strip() else None
        except ValueError:
            body_json = None
        self._record(request, body_json, caller, None)
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        self._violation(f"{request.method} {request.url.path}: no such operation ({status})")
        response = self._error(404, "Not Found")
        response.headers.update(self._base_headers("core"))
        return response

    # ----------------------------------------------------------------- internals: data

    def _api_root(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + self.prefix

    def _web_root(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def _account(self, request: Request, login: str) -> dict[str, Any]:
        """A simple-user object for `login` (an organisation unless it is a user account)."""
        api, web = self._api_root(request), self._web_root(request)
        kind = "User" if login.lower() in self.user_accounts else "Organization"
        account_id = _stable_id("account", login)
        users = f"{api}/users/{login}"
        return {
            "login": login,
            "id": account_id,
            "node_id": base64.b64encode(f"04:{kind}{account_id}".encode()).decode(),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{account_id}?v=4",
            "gravatar_id": "",
            "url": f"{api}/{'users' if kind == 'User' else 'orgs'}/{login}",
            "html_url": f"{web}/{login}",
            "followers_url": f"{users}/followers",
            "following_url": f"{users}/following{{/other_user}}",
            "gists_url": f"{users}/gists{{/gist_id}}",
            "starred_url": f"{users}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{users}/subscriptions",
            "organizations_url": f"{users}/orgs",
            "repos_url": f"{users}/repos",
            "events_url": f"{users}/events{{/privacy}}",
            "received_events_url": f"{users}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _repository(self, request: Request, owner: str, name: str) -> dict[str, Any]:
        """A repository object as GitHub lists it in an installation token."""
        api, web = self._api_root(request), self._web_root(request)
        full = f"{owner}/{name}"
        url = f"{api}/repos/{full}"
        repo_id = _stable_id(owner, name)
        templated = {
            "archive_url": "{archive_format}{/ref}",
            "assignees_url": "assignees{/user}",
            "blobs_url": "git/blobs{/sha}",
            "branches_url": "branches{/branch}",
            "collaborators_url": "collaborators{/collaborator}",
            "comments_url": "comments{/number}",
            "commits_url": "commits{/sha}",
            "compare_url": "compare/{base}...{head}",
            "contents_url": "contents/{+path}",
            "git_commits_url": "git/commits{/sha}",
            "git_refs_url": "git/refs{/sha}",
            "git_tags_url": "git/tags{/sha}",
            "issue_comment_url": "issues/comments{/number}",
            "issue_events_url": "issues/events{/number}",
            "issues_url": "issues{/number}",
            "keys_url": "keys{/key_id}",
            "labels_url": "labels{/name}",
            "milestones_url": "milestones{/number}",
            "notifications_url": "notifications{?since,all,participating}",
            "pulls_url": "pulls{/number}",
            "releases_url": "releases{/id}",
            "statuses_url": "statuses/{sha}",
            "trees_url": "git/trees{/sha}",
        }
        stamp = "2020-01-01T00:00:00Z"
        host = web.split("://", 1)[-1]
        return {
            "id": repo_id,
            "node_id": base64.b64encode(f"010:Repository{repo_id}".encode()).decode(),
            "name": name,
            "full_name": full,
            "owner": self._account(request, owner),
            "private": True,
            "html_url": f"{web}/{full}",
            "description": None,
            "fork": False,
            "url": url,
            **{key: f"{url}/{suffix}" for key, suffix in templated.items()},
            **{f"{key}_url": f"{url}/{key}" for key in _PLAIN_REPO_URLS},
            "git_url": f"git://{host}/{full}.git",
            "ssh_url": f"git@{host}:{full}.git",
            "clone_url": f"{web}/{full}.git",
            "svn_url": f"{web}/{full}",
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "forks": 0,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers": 0,
            "watchers_count": 0,
            "size": 0,
            "default_branch": "main",
            "open_issues": 0,
            "open_issues_count": 0,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "archived": False,
            "disabled": False,
            "visibility": "private",
            "license": None,
            "pushed_at": stamp,
            "created_at": stamp,
            "updated_at": stamp,
        }

    def _installation_permissions(self, installation_id: int) -> dict[str, str]:
        return dict(
            self.installation_permissions.get(installation_id, DEFAULT_INSTALLATION_PERMISSIONS)
        )

    def _installation_object(
        self, request: Request, login: str, installation_id: int
    ) -> dict[str, Any]:
        app = self.app_credentials
        assert app is not None  # only reachable with a valid App JWT
        api, web = self._api_root(request), self._web_root(request)
        login = self.account_logins.get(login.lower(), login)  # as the account spells itself
        account = self._account(request, login)
        selected = installation_id in self.installation_repositories
        settings = "settings" if account["type"] == "User" else f"organizations/{login}/settings"
        stamp = "2024-05-01T12:00:00Z"
        return {
            "id": installation_id,
            "client_id": app.client_id,
            "account": account,
            "repository_selection": "selected" if selected else "all",
            "access_tokens_url": f"{api}/app/installations/{installation_id}/access_tokens",
            "repositories_url": f"{api}/installation/repositories",
            "html_url": f"{web}/{settings}/installations/{installation_id}",
            "app_id": app.app_id,
            "app_slug": app.slug,
            "target_id": account["id"],
            "target_type": account["type"],
            "permissions": self._installation_permissions(installation_id),
            "events": [],
            "created_at": stamp,
            "updated_at": stamp,
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    def _runner_expiry(self) -> str:
        moment = self.now() + _TOKEN_LIFETIME
        style = self.expiry_style
        if style == "alternate":
            with self._lock:
                self._expiry_flip = not self._expiry_flip
                style = "offset" if self._expiry_flip else "utc"
        return _iso_millis(moment, _PACIFIC if style == "offset" else UTC)

    def _mint(self, value: str) -> str:
        with self._lock:
            self._minted.append(value)
        return value

    def _stateless_token(self, claims: dict[str, Any]) -> str:
        """`ghs_<app id>_<JWT>`, HS256-signed by the fake, using only [A-Za-z0-9._]."""
        app_id = self.app_credentials.app_id if self.app_credentials else 0
        header = _b64url(
            json.dumps(
                {"alg": "HS256", "typ": "JWT", "kid": self._stateless_kid}, separators=(",", ":")
            ).encode()
        )
        # GitHub's documented pattern is ghs_[A-Za-z0-9._]{36,}: no '-'. Base64url may emit
        # one, so draw fresh token ids until none of the segments does (a few hundred µs).
        for _ in range(100_000):
            claims["jti"] = uuid.uuid4().hex
            payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
            signed = f"{header}.{payload}".encode()
            signature = _b64url(hmac.new(self._stateless_key, signed, hashlib.sha256).digest())
            token = f"ghs_{app_id}_{header}.{payload}.{signature}"
            if "-" not in token:
                return token
        raise RuntimeError("could not draw a stateless token")

    # ----------------------------------------------------------------- handlers

    def _runner_scope(self, params: Mapping[str, str]) -> tuple[str, str]:
        if "enterprise" in params:
            return "enterprise", params["enterprise"].lower()
        if "repo" in params:
            return "repo", f"{params['owner']}/{params['repo']}".lower()
        return "org", params["org"].lower()

    async def _runner_token(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        token = self._mint("".join(secrets.choice(_UPPER) for _ in range(29)))
        return self._json(201, {"token": token, "expires_at": self._runner_expiry()})

    async def _jitconfig(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        kind, scope = self._runner_scope(params)
        name: str = body["name"]
        group_id: int = body["runner_group_id"]
        labels: list[str] = body["labels"]
        if not name.strip():
            return self._error(422, "Validation Failed", op, errors=["name can't be blank"])
        if kind == "repo":
            groups = {1: "Default"}
        elif kind == "org":
            groups = dict(self.runner_groups.get(scope, [(1, "Default")]))
        else:
            groups = dict(self.enterprise_runner_groups.get(scope, [(1, "Default")]))
        if group_id not in groups:
            return self._error(404, "Not Found", op)
        key = f"{kind}:{scope}"
        with self._lock:
            taken = self._runner_names.setdefault(key, set())
            if name.lower() in taken:
                duplicate = True
            else:
                duplicate = False
                taken.add(name.lower())
                runner_id = self._next_runner_id
                self._next_runner_id += 1
        if duplicate:
            return self._error(
                409, f"Already exists - A runner with the name {name} already exists.", op
            )
        skew = self._take_skew(self._runner_skews)
        if skew is not None and skew.labels is not None:
            labels = list(skew.labels)
        runner = {
            "id": runner_id,
            "name": name,
            "os": "unknown",
            "status": "offline",
            "busy": False,
            "labels": _runner_labels(labels),
            "runner_group_id": group_id,
            "ephemeral": True,
        }
        if skew is not None and skew.group_id is not None:
            runner["runner_group_id"] = skew.group_id
        work_folder = body.get("work_folder", "_work")
        config = self._mint(
            self._jit_blob(
                request,
                kind=kind,
                scope=scope,
                runner=runner,
                group=groups[group_id],
                work_folder=work_folder,
            )
        )
        with self._lock:
            self._runners.append({"scope": key, "runner": runner, "work_folder": work_folder})
        return self._json(201, {"runner": runner, "encoded_jit_config": config})

    def _jit_blob(
        self,
        request: Request,
        *,
        kind: str,
        scope: str,
        runner: Mapping[str, Any],
        group: str,
        work_folder: str,
    ) -> str:
        """A synthetic JIT config of the runner's shape: base64 JSON of base64 runner files."""
        web = self._web_root(request)
        target = f"enterprises/{scope}" if kind == "enterprise" else scope

        def file(content: str) -> str:
            return base64.b64encode(content.encode()).decode()

        dot_runner = {
            "AgentId": runner["id"],
            "AgentName": runner["name"],
            "PoolId": runner["runner_group_id"],
            "PoolName": group,
            "ServerUrl": f"{web}/_services/pipelines/{secrets.token_hex(8)}",
            "GitHubUrl": f"{web}/{target}",
            "WorkFolder": work_folder,
            "Ephemeral": True,
            "UseV2Flow": True,
        }
        credentials = {
            "Scheme": "OAuth",
            "Data": {
                "ClientId": str(uuid.uuid4()),
                "AuthorizationUrl": f"{web}/_services/token/oauth2/token",
                "RequireFipsCryptography": "False",
            },
        }
        rsa_params = "".join(
            f"<{part}>{base64.b64encode(secrets.token_bytes(size)).decode()}</{part}>"
            for part, size in (
                ("Modulus", 256),
                ("Exponent", 3),
                ("P", 128),
                ("Q", 128),
                ("D", 256),
            )
        )
        outer = {
            ".runner": file(json.dumps(dot_runner)),
            ".credentials": file(json.dumps(credentials)),
            ".credentials_rsaparams": file(f"<RSAKeyValue>{rsa_params}</RSAKeyValue>"),
        }
        return base64.b64encode(json.dumps(outer).encode()).decode()

    async def _runner_groups(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        org = params["org"]
        groups = self.runner_groups.get(org.lower(), [(1, "Default")])
        query = request.query_params
        per_page = min(100, max(1, int(query.get("per_page", "30"))))
        page = max(1, int(query.get("page", "1")))
        last = max(1, -(-len(groups) // per_page))
        chunk = groups[(page - 1) * per_page : page * per_page]
        api = self._api_root(request)
        body_out = {
            "total_count": len(groups),
            "runner_groups": [
                {
                    "id": group_id,
                    "name": name,
                    "visibility": "all",
                    "default": group_id == 1,
                    "runners_url": f"{api}/orgs/{org}/actions/runner-groups/{group_id}/runners",
                    "inherited": False,
                    "allows_public_repositories": False,
                    "restricted_to_workflows": False,
                    "selected_workflows": [],
                    "workflow_restrictions_read_only": False,
                }
                for group_id, name in chunk
            ],
        }
        headers = {}
        if last > 1:
            path = request.url.path.removeprefix(self.prefix)

            def link(number: int, rel: str) -> str:
                merged = {**dict(query), "per_page": str(per_page), "page": str(number)}
                return f'<{api}{path}?{urlencode(merged)}>; rel="{rel}"'

            rels = []
            if page > 1:
                rels.append(link(min(page - 1, last), "prev"))
            if page < last:
                rels += [link(page + 1, "next"), link(last, "last")]
            if page > 1:
                rels.append(link(1, "first"))
            headers["link"] = ", ".join(rels)
        return self._json(200, body_out, headers)

    async def _installation(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        login = params.get("owner") or params.get("org") or params.get("username") or ""
        installation_id = self.installations.get(login.lower())
        if installation_id is None:
            return self._error(404, "Not Found", op)
        if "org" in params and login.lower() in self.user_accounts:
            return self._error(404, "Not Found", op)
        repo = params.get("repo")
        reachable = self.installation_repositories.get(installation_id)
        if (
            repo is not None
            and reachable is not None
            and repo.lower() not in {r.lower() for r in reachable}
        ):
            return self._error(404, "Not Found", op)
        return self._json(200, self._installation_object(request, login.lower(), installation_id))

    async def _access_token(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        installation_id = int(params["installation_id"])
        login = self._installation_login(installation_id)
        if login is None:
            return self._error(404, "Not Found", op)
        body = body or {}
        granted = self._installation_permissions(installation_id)
        known = set(self._spec.schema("app-permissions")["properties"])
        requested: dict[str, str] = dict(body.get("permissions") or granted)
        for name, level in requested.items():
            have = granted.get(name)
            if name not in known or have is None or _LEVELS[level] > _LEVELS.get(have, 0):
                return self._error(
                    422, "The permissions requested are not granted to this installation.", op
                )
        wanted = list(body.get("repositories") or [])
        wanted_ids = list(body.get("repository_ids") or [])
        if len(wanted) + len(wanted_ids) > 500:
            return self._error(422, "Too many repositories were requested (maximum 500).", op)
        try:
            names = self._token_repositories(login, installation_id, wanted, wanted_ids)
        except LookupError:
            return self._error(
                422,
                "There is at least one repository that does not exist or is not accessible to "
                "the parent installation.",
                op,
            )
        expires = self.now() + _TOKEN_LIFETIME
        fmt = {"enabled": "stateless", "disabled": "classic"}.get(
            request.headers.get("x-github-stateless-s2s-token", ""), self.token_format
        )
        skew = self._take_skew(self._token_skews)
        if skew is not None:
            requested, names = _skewed(skew, requested, names)
        selection = "all" if names is None else "selected"
        if fmt == "stateless":
            token = self._stateless_token(
                {
                    "iss": "https://github.com",
                    "aud": "https://api.github.com",
                    "sub": f"installation:{installation_id}",
                    "app_id": self.app_credentials.app_id if self.app_credentials else 0,
                    "installation_id": installation_id,
                    "account": login,
                    "repository_selection": selection,
                    "repositories": names,
                    "permissions": requested,
                    "iat": int(self.now()),
                    "nbf": int(self.now()),
                    "exp": int(expires),
                }
            )
        else:
            token = "ghs_" + "".join(secrets.choice(_ALNUM) for _ in range(36))
        self._mint(token)
        with self._lock:
            self._grants[token] = _Grant(
                installation_id,
                login,
                None if names is None else tuple(names),
                dict(requested),
                expires,
            )
        out: dict[str, Any] = {
            "token": token,
            "expires_at": _iso(expires),
            "permissions": requested,
            "repository_selection": selection,
        }
        if names is not None:
            out["repositories"] = [
                self._repository(request, *_owner_and_name(login, n)) for n in names
            ]
        return self._json(201, out)

    def _installation_login(self, installation_id: int) -> str | None:
        """The (lower-case) login of the account that holds this installation, if any."""
        return next((k for k, v in self.installations.items() if v == installation_id), None)

    async def _get_installation(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        installation_id = int(params["installation_id"])
        login = self._installation_login(installation_id)
        if login is None:
            return self._error(404, "Not Found", op)
        return self._json(200, self._installation_object(request, login, installation_id))

    def _token_repositories(
        self, login: str, installation_id: int, wanted: list[str], wanted_ids: list[int]
    ) -> list[str] | None:
        """The repositories a new token covers (None: all); LookupError if one is out of reach."""
        reachable = self.installation_repositories.get(installation_id)
        if not wanted and not wanted_ids:
            return None if reachable is None else list(reachable)
        by_name = {r.lower(): r for r in reachable or []}
        by_id = {_stable_id(login, r): r for r in reachable or []}
        names = [name if reachable is None else by_name[name.lower()] for name in wanted]
        names += [by_id[repo_id] for repo_id in wanted_ids]
        return list(dict.fromkeys(names))

    async def _get_app(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        app = self.app_credentials
        assert app is not None  # only reachable with a valid App JWT
        web = self._web_root(request)
        owner = self._account(request, "exchanger-owner")
        stamp = "2024-05-01T12:00:00Z"
        return self._json(
            200,
            {
                "id": app.app_id,
                "slug": app.slug,
                "client_id": app.client_id,
                "node_id": base64.b64encode(f"03:Integration{app.app_id}".encode()).decode(),
                "owner": owner,
                "name": app.slug.replace("-", " ").title(),
                "description": "Test double of a GitHub App",
                "external_url": "https://exchanger.example.com",
                "html_url": f"{web}/apps/{app.slug}",
                "created_at": stamp,
                "updated_at": stamp,
                "permissions": dict(DEFAULT_INSTALLATION_PERMISSIONS),
                "events": [],
                "installations_count": len(self.installations),
            },
        )

    async def _revoke(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        assert caller.grant is not None  # _authorize let only installation tokens through
        token = request.headers["authorization"].strip().partition(" ")[2].strip()
        with self._lock:
            caller.grant.revoked = True
            self._revocations.append(token)
        return Response(status_code=204)

    async def _delete_runner(
        self, request: Request, op: _Op, params: dict[str, str], body: Any, caller: _Caller
    ) -> Response:
        """Remove a runner of this scope: it is gone from `runners` and its name is free."""
        kind, scope = self._runner_scope(params)
        key = f"{kind}:{scope}"
        runner_id = int(params["runner_id"])
        with self._lock:
            found = next(
                (r for r in self._runners if r["scope"] == key and r["runner"]["id"] == runner_id),
                None,
            )
            if found is not None:
                self._runners.remove(found)
                self._runner_names.get(key, set()).discard(found["runner"]["name"].lower())
        if found is None:
            return self._error(404, "Not Found", op)
        return Response(status_code=204)


def _runner_labels(labels: Sequence[str]) -> list[dict[str, Any]]:
    """A new runner's labels: GitHub's read-only `self-hosted`, then the custom ones."""
    objects: list[dict[str, Any]] = [{"id": 1, "name": "self-hosted", "type": "read-only"}]
    objects += [
        {"id": 100 + i, "name": label, "type": "custom"}
        for i, label in enumerate(labels)
        if label.lower() != "self-hosted"
    ]
    return objects


def _skewed(
    skew: _Skew, permissions: dict[str, str], names: list[str] | None
) -> tuple[dict[str, str], list[str] | None]:
    """What a token answer switched by `skew_tokens` grants instead of what was asked."""
    changed = dict(permissions)
    for name, level in skew.permissions.items():
        if level is None:
            changed.pop(name, None)
        else:
            changed[name] = level
    if skew.selection_all:
        return changed, None
    if skew.repositories:
        names = list(dict.fromkeys([*(names or []), *skew.repositories]))
    return changed, names


def _owner_and_name(login: str, name: str) -> tuple[str, str]:
    """`owner/name` as it is, a bare name as one of `login`'s repositories."""
    owner, _, bare = name.rpartition("/")
    return owner or login, bare


def _with_default_group(
    groups: Mapping[str, Sequence[tuple[int, str]]] | None,
) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for owner, entries in (groups or {}).items():
        listed = [(int(i), str(n)) for i, n in entries]
        if all(i != 1 for i, _ in listed):
            listed.insert(0, (1, "Default"))
        out[owner.lower()] = sorted(listed)
    return out


@contextmanager
def run_fake_github(
    ca: TestCA, fake: FakeGitHub | None = None, **kwargs: Any
) -> Iterator[tuple[FakeGitHub, RunningServer]]:
    """Serve a FakeGitHub (given, or built from `kwargs`) over HTTPS on loopback.

    `fake.api_url` is set to the server root plus the prefix (what the gateway calls
    `api_url`).
    """
    if fake is None:
        fake = FakeGitHub(**kwargs)
    elif kwargs:
        raise TypeError("pass either a FakeGitHub or its arguments, not both")
    with serve_tls(fake.app, ca) as server:
        fake.api_url = server.url + fake.prefix
        try:
            yield fake, server
        finally:
            fake._release_delays()
