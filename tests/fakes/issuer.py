"""A fake GitHub Actions OIDC issuer: discovery + JWKS over real TLS, real RS256 tokens.

`mint(**claims)` makes a GitHub-shaped token (string ids, `nbf = iat - 300`,
5-minute lifetime, `x5t` in the header) signed by the published key `k1`.
The `forge_*` helpers and `sign_raw` build the evil twins: `alg: none`, HMAC
signed with the public key (`public_key_encodings()`), header-embedded keys,
foreign keys, tampered payloads, malformed JSON. `sign_raw` signs exactly the
header and payload it is given (dicts, or raw JSON text), bypassing every
library check, so a test can put anything in a token.

Every discovery and JWKS request is counted, and the issuer can be taken
down, slowed, or made to serve garbage, an empty key set, an over-sized
(but valid) document, or a redirect. `junk_jwk(name)` gives keys that must
never verify an RS256 token (`oct`, EC, `use: enc`, `alg: RS512`, private
members) for tests to add to `published`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from tests.fakes.tls import RunningServer, TestCA, serve_tls

AUDIENCE = "https://exchanger.test"
K1_KID = "38826b17-6a30-5f9b-b169-8beb8202f723"  # GitHub's UUID-style kid
K2_KID = "4F3E9AD8C9A6F5EB3173006F4FA630E28F43DCE9"  # GitHub's hex-thumbprint style
EC_KID = "ec-p256"
#: The gateway's response-size cap (exchanger.http.MAX_RESPONSE_BYTES); "huge" modes exceed it.
HUGE_BYTES = (1 << 20) + 1


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
    ec: ECKey = field(default_factory=lambda: _ec(EC_KID))
    published: list[Any] = field(default_factory=list)  # keys, JWK dicts, or junk
    discovery_issuer: str | None = None  # None: the real URL
    jwks_uri_override: str | None = None
    #: ok | down (503) | garbage (non-JSON 200) | empty ({"keys": []}) | huge (valid JSON over
    #: the size cap, with Content-Length) | huge-stream (the same, chunked, no length) |
    #: redirect (302 to the same URL plus `?followed=1`, which would then serve normally) |
    #: trickle (a 200 whose body arrives one byte every 50 ms, for about a minute)
    mode: str = "ok"
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

    def sign_raw(
        self,
        header: dict[str, Any] | str,
        payload: dict[str, Any] | str,
        key: RSAKey | ECKey | bytes | None,
        alg: str | None = None,
    ) -> str:
        """Exactly this header and payload (dicts, or raw JSON text), signed with no checks.

        `alg` picks the signature algorithm (default: the header's `alg`), so a token
        can carry one label and another algorithm's signature. `key` is an RSA or EC
        key, an HMAC secret (bytes), or None for an empty signature.
        """
        head = header if isinstance(header, str) else _json(header)
        body = payload if isinstance(payload, str) else _json(payload)
        signing_input = f"{b64url(head.encode())}.{b64url(body.encode())}"
        if key is None:
            return f"{signing_input}."
        if alg is None:
            if not isinstance(header, dict):
                raise TypeError("pass alg= when the header is raw text")
            alg = str(header["alg"])
        return f"{signing_input}.{b64url(raw_signature(signing_input.encode(), key, alg))}"

    def forge_hmac(self, alg: str = "HS256", secret: bytes | None = None, **claims: Any) -> str:
        """HMAC-signed with the public key as secret: the classic key-confusion forgery."""
        secret = secret if secret is not None else self.public_pem()
        header = {"alg": alg, "typ": "JWT", "kid": self.k1.kid}
        return self.sign_raw(header, self.claims(**claims), secret)

    def forge_unsigned(self, alg: str = "none", signature: str = "", **claims: Any) -> str:
        header = {"alg": alg, "typ": "JWT", "kid": self.k1.kid}
        return f"{b64json(header)}.{b64json(self.claims(**claims))}.{signature}"

    def public_pem(self) -> bytes:
        return self.k1.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_key_encodings(self) -> dict[str, bytes]:
        """k1's public key in every encoding an HMAC key-confusion attack might try."""
        public = self.k1.public_key
        enc, fmt = serialization.Encoding, serialization.PublicFormat
        jwk = dict(self.k1.as_dict(private=False))
        spki_pem = public.public_bytes(enc.PEM, fmt.SubjectPublicKeyInfo)
        return {
            "spki-pem": spki_pem,
            "spki-pem-no-newline": spki_pem.rstrip(b"\n"),
            "pkcs1-pem": public.public_bytes(enc.PEM, fmt.PKCS1),
            "spki-der": public.public_bytes(enc.DER, fmt.SubjectPublicKeyInfo),
            "pkcs1-der": public.public_bytes(enc.DER, fmt.PKCS1),
            "jwk-json": json.dumps(jwk).encode(),
            "jwk-json-compact": _json(jwk).encode(),
            "jwks-json": _json({"keys": [jwk]}).encode(),
            "openssh": public.public_bytes(enc.OpenSSH, fmt.OpenSSH),
        }

    def self_signed_cert(self, key: RSAKey) -> bytes:
        """A DER certificate for `key` that nobody trusts (for `x5c` attacks)."""
        private = key.private_key
        assert isinstance(private, rsa.RSAPrivateKey)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token.actions.evil.test")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(private, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def junk_jwk(self, name: str) -> tuple[dict[str, Any], RSAKey | ECKey | bytes, str]:
        """(published JWK, signing key, alg) for a key that must never verify RS256 tokens.

        name: `oct` (symmetric), `ec` (P-256, `alg: ES256`), `ec-no-alg` (P-256, no `alg`),
        `enc` (RSA, `use: enc`), `rs512` (RSA, `alg: RS512`), `private` (RSA with its
        private members published).
        """
        if name == "oct":
            secret = b"an-hmac-secret-anyone-can-read"
            return (
                {"kty": "oct", "kid": "k-oct", "k": b64url(secret), "use": "sig"},
                secret,
                "HS256",
            )
        if name in ("ec", "ec-no-alg"):
            public = dict(self.ec.as_dict(private=False))
            if name == "ec-no-alg":
                public.pop("alg", None)
            return public, self.ec, "ES256"
        key = _junk_rsa(name)
        if name == "private":
            return dict(key.as_dict(private=True)), key, "RS256"
        public = dict(key.as_dict(private=False))
        public.update({"enc": {"use": "enc"}, "rs512": {"alg": "RS512"}}[name])
        return public, key, "RS256"

    # --- the served app ---------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/.well-known/jwks", self._jwks),
            ]
        )

    async def _answer(self, request: Request, build: Any) -> Response:
        with self.lock:
            mode, slow = self.mode, self.slow_seconds
        if slow:
            await asyncio.sleep(slow)
        if mode == "down":
            return PlainTextResponse("unavailable", status_code=503)
        if mode == "garbage":
            return PlainTextResponse("<html>not json", status_code=200)
        if mode == "redirect" and "followed" not in request.query_params:
            target = request.url.include_query_params(followed="1")
            return RedirectResponse(str(target), status_code=302)
        if mode == "trickle":
            return StreamingResponse(_trickle(), media_type="application/json")
        if mode in ("huge", "huge-stream"):
            document = {**build(), "padding": "x" * HUGE_BYTES}
            if mode == "huge":
                return JSONResponse(document)
            return StreamingResponse(
                _chunks(_json(document).encode()), media_type="application/json"
            )
        return JSONResponse(build())

    async def _discovery(self, request: Request) -> Response:
        with self.lock:
            self.discovery_requests += 1

        def build() -> dict[str, Any]:
            return {
                "issuer": self.url if self.discovery_issuer is None else self.discovery_issuer,
                "jwks_uri": (
                    f"{self.url}/.well-known/jwks"
                    if self.jwks_uri_override is None
                    else self.jwks_uri_override
                ),
                "subject_types_supported": ["public", "pairwise"],
                "response_types_supported": ["id_token"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid"],
                "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf"],
            }

        return await self._answer(request, build)

    async def _jwks(self, request: Request) -> Response:
        with self.lock:
            self.jwks_requests += 1
            mode = self.mode
            published = list(self.published)

        def build() -> dict[str, Any]:
            if mode == "empty":
                return {"keys": []}
            return {"keys": [_public_jwk(k) for k in published]}

        return await self._answer(request, build)


def _rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def _ec(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"})


@functools.cache
def _junk_rsa(name: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": f"k-{name}"})


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_HMAC_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def raw_signature(signing_input: bytes, key: RSAKey | ECKey | bytes, alg: str) -> bytes:
    """The JWS signature of `signing_input` under `alg`, computed with no policy checks."""
    if isinstance(key, bytes):
        return hmac.new(key, signing_input, _HMAC_DIGESTS[alg]).digest()
    private = key.private_key
    digest = _HASHES[alg[2:]]()
    if alg.startswith("RS") and isinstance(private, rsa.RSAPrivateKey):
        return private.sign(signing_input, padding.PKCS1v15(), digest)
    if alg.startswith("PS") and isinstance(private, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return private.sign(signing_input, pss, digest)
    if alg.startswith("ES") and isinstance(private, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(digest)))
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise ValueError(f"cannot sign {alg} with {type(private).__name__}")


def _public_jwk(key: Any) -> Any:
    """A key object as its public JWK; anything else (a test's junk entry) as it is."""
    return dict(key.as_dict(private=False)) if isinstance(key, RSAKey | ECKey) else key


@contextmanager
def run_issuer(ca: TestCA) -> Iterator[tuple[FakeIssuer, RunningServer]]:
    issuer = FakeIssuer()
    with serve_tls(issuer.app(), ca) as server:
        issuer.url = server.url
        yield issuer, server


async def _trickle() -> AsyncIterator[bytes]:
    """A body that never finishes in time: each byte resets a per-read timeout."""
    for _ in range(1200):
        yield b" "
        await asyncio.sleep(0.05)
