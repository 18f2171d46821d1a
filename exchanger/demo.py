"""`exchanger demo`: a self-contained tour on loopback. INSECURE BY DESIGN.

It starts a throw-away OIDC issuer whose signing key and TLS certificate are
generated on the spot, points the example config's policies at it, mints a
token, and performs a real exchange against a real gateway. Nothing here can
be switched on from a config file; it warns every time it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from exchanger.config.load import load_config
from exchanger.config.model import Config, IssuerConfig

AUDIENCE = "https://exchanger.demo.invalid"
#: Claims that satisfy the example policy `registry-from-main`.
DEMO_CLAIMS = {
    "repository": "acme/app",
    "repository_id": "5678",
    "repository_owner": "acme",
    "repository_owner_id": "1234",
    "ref": "refs/heads/main",
    "ref_type": "branch",
    "event_name": "push",
    "workflow_ref": "acme/app/.github/workflows/release.yml@refs/heads/main",
    "actor": "octocat",
    "run_id": "1",
    "sub": "repo:acme/app:ref:refs/heads/main",
}
WARNING = "exchanger demo: INSECURE throw-away issuer on loopback; never use it in production"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exchanger demo")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "demo-cert.pem", directory / "demo-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class DemoIssuer:
    """Discovery + JWKS for one generated RSA key; mints tokens for the tour."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "demo", "use": "sig"})
        self.url = ""

    def app(self) -> Starlette:
        async def discovery(request: Request) -> JSONResponse:
            return JSONResponse({"issuer": self.url, "jwks_uri": f"{self.url}/jwks"})

        async def jwks(request: Request) -> JSONResponse:
            return JSONResponse({"keys": [self.key.as_dict(private=False)]})

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/jwks", jwks),
            ]
        )

    def mint(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            **DEMO_CLAIMS,
            **claims,
        }
        return jwt.encode({"alg": "RS256", "kid": "demo", "typ": "JWT"}, payload, self.key)


def run_demo(config_path: Path) -> int:
    from exchanger.app import configure_logging

    print(WARNING, file=sys.stderr)
    base = load_config(config_path)
    configure_logging()
    with tempfile.TemporaryDirectory(prefix="exchanger-demo-") as tmp:
        cert, key = _self_signed(Path(tmp))
        os.environ["SSL_CERT_FILE"] = str(cert)  # this process trusts the demo CA only
        return asyncio.run(_run(base, cert, key))


async def _run(base: Config, cert: Path, key: Path) -> int:
    """Issuer, gateway and the tour in one event loop: no threads to coordinate."""
    from exchanger.app import create_app

    issuer = DemoIssuer()
    tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    async with _serving(issuer.app(), lifespan="off", **tls) as issuer_addr:
        issuer.url = f"https://{issuer_addr}"
        demo_issuer = IssuerConfig(issuer=issuer.url, audiences=frozenset({AUDIENCE}))
        config = dataclasses.replace(base, issuers=(demo_issuer,))
        async with _serving(create_app(config), lifespan="on") as gateway_addr:
            return await _tour(f"http://{gateway_addr}", issuer)


@contextlib.asynccontextmanager
async def _serving(app: ASGIApp, **options: Any) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port in this loop until the block exits."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise RuntimeError("a demo server did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _tour(gateway: str, issuer: DemoIssuer) -> int:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        await _wait_ready(client)
        print(f"1. issuer {issuer.url} and gateway {gateway} are up")
        token = issuer.mint()
        print(f"2. minted a token for {DEMO_CLAIMS['repository']} on {DEMO_CLAIMS['ref']}")
        headers = {"Authorization": f"Bearer {token}"}
        user = await client.get("/secrets/registry/username", headers=headers)
        password = await client.get("/secrets/registry/password", headers=headers)
        print(
            f"3. GET /secrets/registry/username -> {user.status_code} {user.text!r}; "
            f"/password -> {password.status_code} ({len(password.text)} characters, not shown)"
        )
        pr = issuer.mint(event_name="pull_request")
        denied = await client.get("/secrets/registry", headers={"Authorization": f"Bearer {pr}"})
        print(f"4. the same repository from a pull_request -> {denied.status_code} {denied.text}")
        missing = await client.get("/secrets/registry")
        print(f"5. no token at all -> {missing.status_code} {missing.text}")
        ok = user.status_code == 200 and password.status_code == 200 and denied.status_code == 403
    print("demo: exchange succeeded" if ok else "demo: FAILED", file=sys.stderr)
    return 0 if ok else 1


async def _wait_ready(client: httpx.AsyncClient) -> None:
    """Poll /readyz: the gateway fetches the demo issuer's keys in the background."""
    deadline = time.monotonic() + 15
    while (await client.get("/readyz")).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not become ready")
        await asyncio.sleep(0.05)
