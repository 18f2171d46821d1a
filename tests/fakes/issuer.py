"""A fake GitHub Actions OIDC issuer: discovery + JWKS over real TLS, real RS256 tokens.

`mint(**claims)` makes a GitHub-shaped token (string ids, `nbf = iat - 300`,
5-minute lifetime, `x5t` in the header) signed by the published key `k1`.
`forge(...)` builds the evil twins: `alg: none`, HMAC signed with the public
key, header-embedded keys, foreign keys, tampered payloads. Every discovery
and JWKS request is counted, and the issuer can be taken down, slowed, or
made to serve garbage or an empty key set.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.tls import RunningServer, TestCA, serve_tls

AUDIENCE = "https://exchanger.test"
K1_KID = "38826b17-6a30-5f9b-b169-8beb8202f723"  # GitHub's UUID-style kid
K2_KID = "4F3E9AD8C9A6F5EB3173006F4FA630E28F43DCE9"  # GitHub's hex-thumbprint style


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def github_claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    """Claims shaped like a real GitHub Actions token (ids are strings)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now - 300,
        "exp": now + 300,
        "repository": "octo-org/octo-repo",
        "repository_id": "74",
        "repository_owner": "octo-org",
        "repository_owner_id": "65",
        "repository_visibility": "private",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "ref_protected": "true",
        "sha": "a" * 40,
        "event_name": "push",
        "workflow": "Build",
        "workflow_ref": "octo-org/octo-repo/.github/workflows/build.yml@refs/heads/main",
        "job_workflow_ref": "octo-org/octo-repo/.github/workflows/build.yml@refs/heads/main",
        "actor": "octocat",
        "actor_id": "12",
        "run_id": "32291736541",
        "run_number": "7",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "base_ref": "",
        "head_ref": "",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not DROP}


#: Pass as a claim value to leave that claim out of the token.
DROP: Any = object()


@dataclass
class FakeIssuer:
    """The issuer's state; tests mutate it while it serves on another thread."""

    url: str = ""
    k1: RSAKey = field(default_factory=lambda: _rsa(K1_KID))
    k2: RSAKey = field(default_factory=lambda: _rsa(K2_KID))
    attacker: RSAKey = field(default_factory=lambda: _rsa(K1_KID))
    published: list[RSAKey | ECKey | dict[str, Any]] = field(default_factory=list)
    discovery_issuer: str | None = None  # None: the real URL
    jwks_uri_override: str | None = None
    mode: str = "ok"  # ok | down | garbage | empty | slow
    slow_seconds: float = 0.0
    discovery_requests: int = 0
    jwks_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.published = [self.k1, self.k2]
            self.discovery_issuer = None
            self.jwks_uri_override = None
            self.mode = "ok"
            self.slow_seconds = 0.0
            self.discovery_requests = 0
            self.jwks_requests = 0

    # --- tokens -----------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        return github_claims(self.url, **overrides)

    def mint(self, key: RSAKey | ECKey | None = None, alg: str = "RS256", **claims: Any) -> str:
        """A token signed by `key` (default k1), with GitHub's header shape."""
        key = key or self.k1
        header = {"alg": alg, "typ": "JWT", "kid": key.kid, "x5t": b64url(b"thumbprint-hint")}
        return self.sign(header, self.claims(**claims), key)

    def sign(self, header: dict[str, Any], claims: dict[str, Any], key: RSAKey | ECKey) -> str:
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return jws.serialize_compact(header, payload, key, algorithms=[header["alg"]])

    def forge_hmac(self, alg: str = "HS256", secret: bytes | None = None, **claims: Any) -> str:
        """HMAC-signed with the public key as secret: the classic key-confusion forgery."""
        secret = secret if secret is not None else self.public_pem()
        header = {"alg": alg, "typ": "JWT", "kid": self.k1.kid}
        signing_input = f"{b64json(header)}.{b64json(self.claims(**claims))}"
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signature = hmac.new(secret, signing_input.encode(), digest).digest()
        return f"{signing_input}.{b64url(signature)}"

    def forge_unsigned(self, alg: str = "none", signature: str = "", **claims: Any) -> str:
        header = {"alg": alg, "typ": "JWT", "kid": self.k1.kid}
        return f"{b64json(header)}.{b64json(self.claims(**claims))}.{signature}"

    def public_pem(self) -> bytes:
        return self.k1.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # --- the served app ---------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/.well-known/jwks", self._jwks),
            ]
        )

    async def _answer(self, build: Any) -> Response:
        with self.lock:
            mode, slow = self.mode, self.slow_seconds
        if slow:
            await asyncio.sleep(slow)
        if mode == "down":
            return PlainTextResponse("unavailable", status_code=503)
        if mode == "garbage":
            return PlainTextResponse("<html>not json", status_code=200)
        return JSONResponse(build())

    async def _discovery(self, request: Request) -> Response:
        with self.lock:
            self.discovery_requests += 1

        def build() -> dict[str, Any]:
            return {
                "issuer": self.discovery_issuer or self.url,
                "jwks_uri": self.jwks_uri_override or f"{self.url}/.well-known/jwks",
                "subject_types_supported": ["public", "pairwise"],
                "response_types_supported": ["id_token"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid"],
                "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf"],
            }

        return await self._answer(build)

    async def _jwks(self, request: Request) -> Response:
        with self.lock:
            self.jwks_requests += 1
            mode = self.mode
            published = list(self.published)

        def build() -> dict[str, Any]:
            if mode == "empty":
                return {"keys": []}
            return {"keys": [_public_jwk(k) for k in published]}

        return await self._answer(build)


def _rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def _public_jwk(key: RSAKey | ECKey | dict[str, Any]) -> dict[str, Any]:
    return key if isinstance(key, dict) else dict(key.as_dict(private=False))


@contextmanager
def run_issuer(ca: TestCA) -> Iterator[tuple[FakeIssuer, RunningServer]]:
    issuer = FakeIssuer()
    with serve_tls(issuer.app(), ca) as server:
        issuer.url = server.url
        yield issuer, server
