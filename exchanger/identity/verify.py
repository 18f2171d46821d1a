"""Token verification: from a bearer string to a verified `Identity`.

Look, then verify: `iss` is read unverified only to pick an issuer from the
exact allow-list; the header is checked (configured algorithms only; no `jwk`,
`jku`, `x5u`, `x5c`, `crit`); the signature is verified with that issuer's key
for the token's `kid`; then every claim rule is applied explicitly. Any
exception the parsing or the signature check raises is an `InvalidToken`: a
malformed token is a 401, never a 500.

The compact JWS is parsed once. The signature over `header.payload` is checked
with `cryptography` directly, through the key object joserfc imported from the
JWKS, with exactly the checks joserfc's `jws.deserialize_compact` applies to a
compact token (canonical unpadded base64url, its header size and member
rules, RSASSA-PKCS1-v1_5 / RSASSA-PSS with the hash's length as salt / ECDSA
on the algorithm's own curve with a fixed-length `r || s`). An algorithm
outside that table (only possible with a hand-built `IssuerConfig`) still goes
through joserfc.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from exchanger.config.model import IssuerConfig
from exchanger.errors import InvalidToken
from exchanger.identity.claims import Identity
from exchanger.identity.jwks import MAX_KID_LENGTH, IssuerKeys

MAX_TOKEN_BYTES = 16 * 1024
#: Header members that would let a token choose its own key; never honoured.
FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit"})
#: joserfc's limits for a compact JWS (`JWSRegistry.max_header_length`, …), kept as they were.
MAX_HEADER_SEGMENT = 512
MAX_SIGNATURE_SEGMENT = 1024
#: The header members joserfc's JWS registry knows, and the type each must have. Any
#: other member is ignored, as RFC 7515 §4 requires (a new member in GitHub's header
#: must not reject every token); the forbidden ones never get here.
_HEADER_TYPES: dict[str, type] = {
    "alg": str,
    "kid": str,
    "typ": str,
    "cty": str,
    "x5t": str,
    "x5t#S256": str,
    "b64": bool,
}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
#: Decoded headers by their exact text (read-only). Not an LRU: once full, new headers
#: are decoded every time, so junk headers can slow nothing but themselves.
MAX_CACHED_HEADERS = 64
_HEADERS: dict[str, Mapping[str, Any]] = {}
#: The last character of canonical unpadded base64url, by length mod 4 (unused bits zero).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


class _Rejected(Exception):
    """A signature that does not verify, for whatever reason."""


def _duplicates_refused(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(object_pairs_hook=_duplicates_refused, parse_constant=_no_constant)


class Verifier:
    """Verifies tokens for a fixed set of issuers, each with its own key cache."""

    def __init__(
        self,
        keys: Mapping[str, IssuerKeys],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._clock = clock

    async def verify(self, token: str) -> Identity:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("token too large")
        segments = token.split(".")
        if len(segments) != 3 or not all(segments):
            raise InvalidToken("malformed token")
        header = _header(segments[0])
        claims = _decode_segment(segments[1])
        issuer = claims.get("iss")
        keys = self._keys.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise InvalidToken("untrusted issuer")
        config = keys.issuer
        alg, kid = _check_header(header, config)
        key = await keys.key_for(kid)
        if not key.allows(alg):
            raise InvalidToken("token algorithm does not fit its key")
        _check_signature(token, segments, header, key.key, alg)
        _check_claims(claims, config, self._clock())
        return Identity(issuer=config.issuer, claims=MappingProxyType(claims))


def _canonical(segment: str) -> bool:
    """Whether base64url text is canonical and unpadded: the length and unused bits fit."""
    tail = len(segment) % 4
    return tail != 1 and (not tail or segment[-1] in _CANONICAL_LAST[tail])


def _b64decode(segment: str) -> bytes:
    """Canonical unpadded base64url only (what joserfc accepts); ValueError otherwise."""
    if _B64URL.fullmatch(segment) is None or not _canonical(segment):
        raise ValueError("not canonical base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _header(segment: str) -> Mapping[str, Any]:
    """The decoded header; an issuer's headers repeat (alg, kid, typ), so a few are kept."""
    header = _HEADERS.get(segment)
    if header is None:
        header = MappingProxyType(_decode_segment(segment))
        if len(_HEADERS) < MAX_CACHED_HEADERS:
            _HEADERS[segment] = header
    return header


def _decode_segment(segment: str) -> dict[str, Any]:
    """A base64url (unpadded) JSON object; duplicate names and NaN are refused."""
    if _B64URL.fullmatch(segment) is None:
        raise InvalidToken("malformed token")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = _JSON.decode(data.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError, UnicodeDecodeError):
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _check_header(header: Mapping[str, Any], config: IssuerConfig) -> tuple[str, str]:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in config.algorithms:
        raise InvalidToken("token algorithm not allowed")
    if FORBIDDEN_HEADERS & header.keys():
        raise InvalidToken("token header carries key material or critical extensions")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise InvalidToken("token has no usable key id")
    return alg, kid


def _check_signature(
    token: str, segments: list[str], header: Mapping[str, Any], key: Any, alg: str
) -> None:
    check = _SIGNATURES.get(alg)
    if check is None:  # not an algorithm the config accepts; joserfc decides
        _joserfc_signature(token, key, alg)
        return
    head, payload, signature = segments
    try:
        if len(head) > MAX_HEADER_SEGMENT or len(signature) > MAX_SIGNATURE_SEGMENT:
            raise _Rejected
        for name, value in header.items():
            kind = _HEADER_TYPES.get(name)
            if kind is not None and not isinstance(value, kind):
                raise _Rejected
        if not (_canonical(head) and _canonical(payload)):  # base64url: _decode_segment
            raise _Rejected
        check(key, f"{head}.{payload}".encode("ascii"), _b64decode(signature))
    except Exception:
        raise InvalidToken("bad token signature") from None


def _joserfc_signature(token: str, key: Any, alg: str) -> None:
    try:
        registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
        jws.deserialize_compact(token, key, algorithms=[alg], registry=registry)
    except JoseError:
        raise InvalidToken("bad token signature") from None
    except Exception:
        raise InvalidToken("bad token signature") from None


_Check = Callable[[Any, bytes, bytes], None]


def _rsa(pad: padding.AsymmetricPadding, digest: hashes.HashAlgorithm) -> _Check:
    def check(key: Any, signed: bytes, signature: bytes) -> None:
        if not isinstance(key, RSAKey):
            raise _Rejected
        public = key.public_key
        if not isinstance(public, rsa.RSAPublicKey):
            raise _Rejected
        public.verify(signature, signed, pad, digest)  # InvalidSignature when it does not

    return check


def _ecdsa(curve: str, digest: hashes.HashAlgorithm) -> _Check:
    def check(key: Any, signed: bytes, signature: bytes) -> None:
        if not isinstance(key, ECKey) or key.curve_name != curve:
            raise _Rejected
        public = key.public_key
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise _Rejected
        size = (public.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise InvalidSignature
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        public.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest))

    return check


_HASH: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_SIGNATURES: dict[str, _Check] = {
    **{f"RS{n}": _rsa(padding.PKCS1v15(), h) for n, h in _HASH.items()},
    **{
        f"PS{n}": _rsa(padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
        for n, h in _HASH.items()
    },
    "ES256": _ecdsa("P-256", _HASH["256"]),
    "ES384": _ecdsa("P-384", _HASH["384"]),
    "ES512": _ecdsa("P-521", _HASH["512"]),
}


def _check_claims(claims: Mapping[str, Any], config: IssuerConfig, now: float) -> None:
    if not _audience_ok(claims.get("aud"), config.audiences):
        raise InvalidToken("token audience not accepted")
    exp, iat = _numeric(claims, "exp"), _numeric(claims, "iat")
    if exp is None or iat is None:
        raise InvalidToken("token lacks exp or iat")
    leeway = config.leeway_seconds
    if exp <= now - leeway:
        raise InvalidToken("token expired")
    if iat > now + leeway:
        raise InvalidToken("token issued in the future")
    if "nbf" in claims:
        nbf = _numeric(claims, "nbf")
        if nbf is None or nbf > now + leeway:
            raise InvalidToken("token not yet valid")
    if exp - iat > config.max_lifetime_seconds:
        raise InvalidToken("token lifetime too long")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("token has no subject")


def _audience_ok(aud: Any, accepted: frozenset[str]) -> bool:
    """A configured audience, or a non-empty list made only of configured audiences."""
    if isinstance(aud, str):
        return aud in accepted
    if isinstance(aud, list) and aud:
        return all(isinstance(a, str) and a in accepted for a in aud)
    return False


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if number - number == 0 else None  # rejects inf and nan
