"""Throw-away RSA keys for tests, as PEM text."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def private_pem(bits: int = 2048, *, pkcs1: bool = False) -> str:
    """A fresh RSA private key: PKCS#8 PEM, or PKCS#1 (`BEGIN RSA PRIVATE KEY`) with `pkcs1`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    encoding = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if pkcs1
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(
        serialization.Encoding.PEM, encoding, serialization.NoEncryption()
    ).decode()
