"""AWS KMS: the App key imported as an asymmetric SIGN_VERIFY key; only signatures leave it."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from exchanger.config.model import KmsKey
from exchanger.exchange.github.signers import unavailable


class KmsSigner:
    kind = "kms"

    def __init__(self, key: KmsKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"KmsSigner(key_id={self._key.key_id!r})"

    async def sign(self, message: bytes) -> bytes:
        raise unavailable(self.kind)

    async def public_key(self) -> rsa.RSAPublicKey:
        raise unavailable(self.kind)

    async def close(self) -> None:
        return None
