"""A PEM private key held in the process: the default, and the one to replace in production."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from exchanger.config.model import PemKey


class PemSigner:
    kind = "pem"

    def __init__(self, key: PemKey) -> None:
        self._key = key.key

    def __repr__(self) -> str:
        return "PemSigner(<redacted>)"

    async def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    async def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    async def close(self) -> None:
        return None
