"""Throw-away RSA keys for tests, and a search for private key material in live objects."""

from __future__ import annotations

import gc
import sys
import types

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


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


#: Not instance state: following these reaches module globals, i.e. the whole process
#: (the test fakes' own private keys included).
_NOT_STATE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
    types.CoroutineType,
    types.GeneratorType,
    types.AsyncGeneratorType,
)
_PRIVATE_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)


def reachable(root: object) -> list[object]:
    """Every object reachable from `root` through instance state: attributes, containers,
    closures' cells, bound methods' instances; not through modules, classes or code."""
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
    seen = {id(root)}
    found = [root]
    stack = [root]
    while stack:
        for ref in gc.get_referents(stack.pop()):
            if id(ref) in seen or isinstance(ref, _NOT_STATE) or id(ref) in module_dicts:
                continue
            seen.add(id(ref))
            found.append(ref)
            stack.append(ref)
    return found


def private_material(objects: list[object]) -> list[str]:
    """Private keys and PEM private-key text among `objects`, by type."""
    found = [type(o).__name__ for o in objects if isinstance(o, _PRIVATE_KEYS)]
    for o in objects:
        if (isinstance(o, str) and "PRIVATE KEY-----" in o) or (
            isinstance(o, bytes) and b"PRIVATE KEY-----" in o
        ):
            found.append(f"{type(o).__name__} holding a PEM private key")
    return found
