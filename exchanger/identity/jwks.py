"""Each trusted issuer's signing keys: discovery, JWKS, refresh, outage rules.

- Keys come only from the configured issuer's JWKS (its discovery document's
  `issuer` must equal the configured one; https only; no redirects).
- An unknown `kid` refetches the JWKS unless the last attempt was less than
  60 s ago; concurrent requests share one fetch (single flight).
- A failed or empty fetch keeps the last good keys; an empty set is never
  cached. While an issuer has no keys at all, attempts back off 1 s → 60 s.
- A background task refreshes every few minutes so a withdrawn key stops
  verifying without waiting for an unknown kid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc.jwk import ECKey, RSAKey

from exchanger import metrics
from exchanger.config.model import IssuerConfig
from exchanger.errors import InvalidToken, UpstreamUnavailable
from exchanger.http import FetchError, get_json

log = logging.getLogger("exchanger.jwks")

#: Longest `kid` looked up or kept: a token's header or a JWKS entry beyond it is junk.
MAX_KID_LENGTH = 256

KID_MISS_COOLDOWN = 60.0
REFRESH_INTERVAL = 300.0
# httpx's timeouts are per read: a peer that trickles bytes must not hold the
# shared fetch (and every request waiting on it) open indefinitely.
FETCH_DEADLINE = 15.0
BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0
MAX_KEYS = 100

_FAMILY = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A published key with the key type and algorithm it may verify."""

    kid: str
    kty: str
    alg: str | None
    key: RSAKey | ECKey

    def allows(self, alg: str) -> bool:
        return _FAMILY.get(alg[:2]) == self.kty and self.alg in (None, alg)


class IssuerKeys:
    """The key cache of one issuer."""

    def __init__(
        self,
        issuer: IssuerConfig,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
        fetch_deadline: float = FETCH_DEADLINE,
    ) -> None:
        self.issuer = issuer
        self._client = client
        self._clock = clock
        self._deadline = fetch_deadline
        self.keys: Mapping[str, VerificationKey] = {}
        self.fetches = 0
        self._last_attempt: float | None = None
        self._failures = 0
        self._inflight: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return bool(self.keys)

    def _backoff(self) -> float:
        return float(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, self._failures - 1)))

    def _next_attempt_in(self) -> float:
        """Seconds until the background refresher tries again (it keeps old keys meanwhile)."""
        return REFRESH_INTERVAL if self.keys else self._backoff()

    def _may_attempt(self) -> bool:
        if self._last_attempt is None:
            return True
        wait = KID_MISS_COOLDOWN if self.keys else self._backoff()
        return self._clock() - self._last_attempt >= wait

    async def key_for(self, kid: str) -> VerificationKey:
        """The key named `kid`; may refetch once per cooldown; 401 or 503 otherwise."""
        key = self.keys.get(kid)
        if key is not None:
            return key
        if self._inflight is not None or self._may_attempt():
            await self.refresh()
        if not self.keys:
            raise UpstreamUnavailable(
                "the issuer's signing keys are unavailable", retry_after=self._retry_after()
            )
        key = self.keys.get(kid)
        if key is None:
            raise InvalidToken("token signed with an unknown key")
        return key

    def _retry_after(self) -> int:
        if self._last_attempt is None:
            return 1
        left = self._last_attempt + self._backoff() - self._clock()
        return max(1, int(left + 0.999))

    async def refresh(self) -> None:
        """Fetch the JWKS, sharing one in-flight fetch among all callers."""
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(self._clear_inflight)
        await asyncio.shield(self._inflight)

    def _clear_inflight(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            async with asyncio.timeout(self._deadline):
                keys = await self._download()
        except (FetchError, TimeoutError) as exc:
            self._failures += 1
            metrics.JWKS_REFRESHES.labels(self.issuer.issuer, "error").inc()
            reason = str(exc) or f"no answer within {self._deadline:g} s"
            log.warning(
                "jwks refresh failed for %s: %s; next attempt in %.0f s",
                self.issuer.issuer,
                reason,
                self._next_attempt_in(),
            )
            return
        self.keys = keys
        self._failures = 0
        metrics.JWKS_REFRESHES.labels(self.issuer.issuer, "ok").inc()
        log.info("jwks refreshed for %s: %d key(s)", self.issuer.issuer, len(keys))

    async def _download(self) -> dict[str, VerificationKey]:
        jwks_uri = self.issuer.jwks_uri or await self._discover()
        document = await get_json(self._client, jwks_uri, timeout=self.issuer.timeout_seconds)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise FetchError("JWKS has no keys list")
        keys: dict[str, VerificationKey] = {}
        for entry in entries[:MAX_KEYS]:
            key = self._usable(entry)
            if key is not None:
                keys.setdefault(key.kid, key)
        if not keys:
            raise FetchError("JWKS holds no usable signing key")
        return keys

    async def _discover(self) -> str:
        url = self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await get_json(self._client, url, timeout=self.issuer.timeout_seconds)
        if not isinstance(document, dict) or document.get("issuer") != self.issuer.issuer:
            raise FetchError("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
            raise FetchError("discovery document has no https jwks_uri")
        return jwks_uri

    def _usable(self, entry: Any) -> VerificationKey | None:
        """A public signing key for one of the configured algorithms, else None."""
        if not isinstance(entry, dict):
            return None
        kid, kty, alg = entry.get("kid"), entry.get("kty"), entry.get("alg")
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
            return None
        if entry.get("use", "sig") != "sig" or kty not in ("RSA", "EC"):
            return None
        if _PRIVATE_MEMBERS & entry.keys():
            # A published private key is compromised: anyone who read the JWKS can sign.
            log.warning(
                "jwks for %s: skipping a key that exposes private members", self.issuer.issuer
            )
            return None
        if alg is not None and alg not in self.issuer.algorithms:
            return None
        if not any(_FAMILY.get(a[:2]) == kty for a in self.issuer.algorithms):
            return None
        public = {k: v for k, v in entry.items() if k in _PUBLIC_MEMBERS[kty]}
        try:
            key = RSAKey.import_key(public) if kty == "RSA" else ECKey.import_key(public)
        except Exception:
            log.warning("jwks for %s: skipping malformed key", self.issuer.issuer)
            return None
        return VerificationKey(kid=kid, kty=kty, alg=alg, key=key)

    async def run(self) -> None:
        """Background refresh: at start, then every REFRESH_INTERVAL, with backoff."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._next_attempt_in())


# Only public members are imported; a key whose private members are published is refused.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = {
    "RSA": frozenset({"kty", "n", "e"}),
    "EC": frozenset({"kty", "crv", "x", "y"}),
}
