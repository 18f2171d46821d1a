"""PKCS#11: the App key on a token (an HSM); only signatures leave it."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from exchanger.config.model import Pkcs11Key
from exchanger.exchange.github.signers import unavailable


class Pkcs11Signer:
    kind = "pkcs11"

    def __init__(self, key: Pkcs11Key) -> None:
        self._key = key

    def __repr__(self) -> str:
        key = self._key
        return f"Pkcs11Signer(token_label={key.token_label!r}, key_label={key.key_label!r})"

    async def sign(self, message: bytes) -> bytes:
        raise unavailable(self.kind)

    async def public_key(self) -> rsa.RSAPublicKey:
        raise unavailable(self.kind)

    async def close(self) -> None:
        return None
