"""Token verification: from a bearer string to a verified `Identity`.

Look, then verify: `iss` is read unverified only to pick an issuer from the
exact allow-list; the header is checked (configured algorithms only; no `jwk`,
`jku`, `x5u`, `x5c`, `crit`); the signature is verified with that issuer's key
for the token's `kid`; then every claim rule is applied explicitly. Any
exception the parsing or the JOSE library raises is an `InvalidToken`: a
malformed token is a 401, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError

from exchanger.config import IssuerConfig
from exchanger.errors import InvalidToken
from exchanger.identity import Identity
from exchanger.jwks import IssuerKeys

MAX_TOKEN_BYTES = 16 * 1024
MAX_KID_LENGTH = 256
#: Header members that would let a token choose its own key; never honoured.
FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit"})
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


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
        header = _decode_segment(segments[0])
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
        _check_signature(token, key.key, alg)
        _check_claims(claims, config, self._clock())
        return Identity(issuer=config.issuer, claims=MappingProxyType(claims))


def _decode_segment(segment: str) -> dict[str, Any]:
    """A base64url (unpadded) JSON object; duplicate names and NaN are refused."""
    raw = segment.encode("ascii", "replace")
    if not set(raw) <= _B64URL:
        raise InvalidToken("malformed token")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (binascii.Error, ValueError, RecursionError, UnicodeDecodeError):
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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


def _check_signature(token: str, key: Any, alg: str) -> None:
    try:
        jws.deserialize_compact(token, key, algorithms=[alg])
    except JoseError:
        raise InvalidToken("bad token signature") from None
    except Exception:
        raise InvalidToken("bad token signature") from None


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
