"""A stand-in for the Actions runtime's ID-token service, which `core.getIDToken` calls.

On a runner, a job with `permissions: id-token: write` gets two variables:
`ACTIONS_ID_TOKEN_REQUEST_URL` (a URL that already carries a query string,
`…/idtoken?api-version=2.0`) and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` (a bearer
token for that URL). `@actions/core` appends `&audience=<url-encoded aud>`,
sends `GET` with `Authorization: Bearer <request token>` and reads `value`
from the JSON answer. This service does the same over real TLS: it checks the
bearer request token, and answers `{"value": <jwt>}` minted by the fake issuer
with the requested audience (GitHub's default, `https://github.com/<owner>`,
when none is asked for). Every request is recorded.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA, serve_tls

#: The path of the token endpoint; the real one is longer, under `/_apis/…`.
TOKEN_PATH = "/idtoken"


@dataclass(frozen=True)
class TokenRequest:
    """One request as the service saw it (the request token itself is not kept)."""

    authorized: bool
    audience: str | None  # None: the caller asked for no audience
    api_version: str | None
    user_agent: str
    accept: str
    issued: str | None  # the ID token it answered with (None: it refused)


@dataclass
class ActionsRuntime:
    """The service's state; tests read `requests` and may set `claims` while it serves."""

    issuer: FakeIssuer
    request_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: Claim overrides for every minted token (see `FakeIssuer.mint`).
    claims: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""  # set by run_actions_runtime
    _requests: list[TokenRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def request_url(self) -> str:
        """ACTIONS_ID_TOKEN_REQUEST_URL: with its query string, as the runner hands it out."""
        return f"{self.base_url}{TOKEN_PATH}?api-version=2.0"

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self.claims = {}

    def env(self) -> dict[str, str]:
        """The variables a job with `id-token: write` has."""
        return {
            "ACTIONS_ID_TOKEN_REQUEST_URL": self.request_url,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.request_token,
        }

    def app(self) -> Starlette:
        return Starlette(routes=[Route(TOKEN_PATH, self._token, methods=["GET"])])

    async def _token(self, request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        # The toolkit sends `Bearer`, GitHub's curl example `bearer`: the scheme is case-blind.
        authorized = scheme.lower() == "bearer" and secrets.compare_digest(
            value.encode(), self.request_token.encode()
        )
        audience = request.query_params.get("audience")
        api_version = request.query_params.get("api-version")
        with self._lock:
            claims = dict(self.claims)
        issued: str | None = None
        response: Response
        if not authorized:
            response = JSONResponse({"message": "Unauthorized"}, status_code=401)
        elif api_version is None:
            response = JSONResponse({"message": "api-version is required"}, status_code=400)
        else:
            owner = claims.get("repository_owner", self.issuer.claims()["repository_owner"])
            aud = f"https://github.com/{owner}" if audience is None else audience
            issued = self.issuer.mint(aud=aud, **claims)
            response = JSONResponse({"value": issued})
        record = TokenRequest(
            authorized=authorized,
            audience=audience,
            api_version=api_version,
            user_agent=request.headers.get("user-agent", ""),
            accept=request.headers.get("accept", ""),
            issued=issued,
        )
        with self._lock:
            self._requests.append(record)
        return response


@contextmanager
def run_actions_runtime(ca: TestCA, issuer: FakeIssuer) -> Iterator[ActionsRuntime]:
    """Serve the token service over HTTPS on loopback until the block exits."""
    runtime = ActionsRuntime(issuer=issuer)
    with serve_tls(runtime.app(), ca) as server:
        runtime.base_url = server.url
        yield runtime
