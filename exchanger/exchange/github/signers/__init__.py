"""Who signs the App JWT: a PEM key in memory, or a key that never leaves a KMS or an HSM.

The gateway only ever needs signatures — RSASSA-PKCS1-v1_5 with SHA-256 over
a JWT's signing input, one every few minutes — so the App's private key can
stay where it cannot be exported. Each back-end is a `Signer`; `signer_for`
builds the one the config names (the KMS and PKCS#11 clients are imported
only when configured). Every back-end's failure to sign is an
`UpstreamUnavailable` (503 with `Retry-After`), timed and counted in
`/metrics` by `timed`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa

from exchanger import metrics
from exchanger.config.model import MIN_KEY_BITS, AppKey, KmsKey, PemKey, Pkcs11Key
from exchanger.errors import ConfigError, UpstreamUnavailable

#: `Retry-After` when a signer cannot sign.
SIGNER_RETRY_AFTER = 5

_T = TypeVar("_T")


class Signer(Protocol):
    """Signs App JWTs with a key it may never show."""

    #: The back-end's name, for `/metrics` and logs (`pem`, `kms`, `pkcs11`).
    kind: str

    async def sign(self, message: bytes) -> bytes:
        """The RSASSA-PKCS1-v1_5 SHA-256 signature of `message` (RS256)."""
        ...

    async def public_key(self) -> rsa.RSAPublicKey:
        """The public half, to check the key before it is used."""
        ...

    async def close(self) -> None: ...


def signer_for(key: AppKey) -> Signer:
    """The signer the config names."""
    if isinstance(key, PemKey):
        from exchanger.exchange.github.signers.pem import PemSigner

        return PemSigner(key)
    if isinstance(key, KmsKey):
        from exchanger.exchange.github.signers.kms import KmsSigner

        return KmsSigner(key)
    assert isinstance(key, Pkcs11Key)
    from exchanger.exchange.github.signers.pkcs11 import Pkcs11Signer

    return Pkcs11Signer(key)


async def check_public_key(signer: Signer) -> None:
    """Refuse a key that is not RSA of at least `MIN_KEY_BITS` (ConfigError)."""
    key = await timed(signer, "public_key", signer.public_key)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError([f"github.app: the {signer.kind} key is not an RSA key"])
    if key.key_size < MIN_KEY_BITS:
        raise ConfigError(
            [f"github.app: the {signer.kind} key has {key.key_size} bits; at least {MIN_KEY_BITS}"]
        )


async def timed(signer: Signer, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
    """Run one signer call with its latency and outcome in `/metrics`."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        return await call()
    except UpstreamUnavailable:
        outcome = "unavailable"
        raise
    except ConfigError:
        outcome = "refused"
        raise
    finally:
        metrics.SIGNER_SECONDS.labels(signer.kind, operation, outcome).observe(
            time.perf_counter() - started
        )


def unavailable(kind: str) -> UpstreamUnavailable:
    """The one answer to a signer that cannot sign: 503, try again shortly."""
    return UpstreamUnavailable(
        f"the GitHub App's key ({kind}) cannot sign right now", retry_after=SIGNER_RETRY_AFTER
    )
