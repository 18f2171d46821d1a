"""Abuse resistance on the exchange path: per-caller rate limits, single-use tokens.

Every request with a verified token takes one unit from its caller's bucket
(the configured `key` claim, or `sub` when that claim is absent) before the
policy decision; a policy's own `rate_limit` is a separate bucket per
(policy, caller) for the requests it decides. A single-use policy consumes
the token's (iss, jti) once, until the token expires; a replay is a 401.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from exchanger.errors import InvalidToken, RateLimited
from exchanger.identity.claims import Identity
from exchanger.limits.store import Store, retry_after_seconds
from exchanger.policy.model import Policy, RateLimit
from exchanger.policy.patterns import claim_text

REPLAY_MARGIN = 5


class Limits:
    def __init__(
        self,
        store: Store,
        global_limit: RateLimit | None,
        leeway: Callable[[str], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._global = global_limit
        self._leeway = leeway
        self._clock = clock

    async def admit(self, identity: Identity) -> None:
        """Take the caller's unit from the global bucket (before the decision)."""
        if self._global is not None:
            await self._take(f"{_caller(identity, self._global.key)}", self._global)

    async def settle(self, identity: Identity, policy: Policy) -> Settlement:
        """The deciding allow policy's own bucket, then its single-use claim.

        What was taken is returned, so a request that still ends in a 4xx (GitHub
        refusing a name, say) can give it back: a refused request consumes nothing.
        """
        settlement = Settlement(self.store)
        if policy.rate_limit is not None:
            caller = _caller(identity, policy.rate_limit.key)
            key = f"policy={policy.name}|{caller}"
            await self._take(key, policy.rate_limit)
            settlement.bucket = (key, policy.rate_limit.burst)
        if policy.single_use:
            try:
                settlement.claim = await self._consume(identity)
            except InvalidToken:
                await settlement.undo()
                raise
        return settlement

    async def _take(self, key: str, limit: RateLimit) -> None:
        verdict = await self.store.take(key, limit.per_second, limit.burst)
        if not verdict.allowed:
            raise RateLimited(
                "too many requests for this caller",
                retry_after=retry_after_seconds(verdict.retry_after),
            )

    async def _consume(self, identity: Identity) -> str:
        jti = claim_text(identity.claims.get("jti"))
        exp: float = identity.claims["exp"]  # verified: a number
        assert jti, "single-use policies match only tokens with a jti"
        ttl = int(exp - self._clock()) + self._leeway(identity.issuer) + REPLAY_MARGIN
        key = f"{identity.issuer}|{jti}"
        if not await self.store.claim_once(key, max(1, ttl)):
            raise InvalidToken("token already used")
        return key


@dataclass
class Settlement:
    """What settling an allowed request took: a policy bucket's unit, a token's claim."""

    store: Store
    bucket: tuple[str, int] | None = None  # (key, burst)
    claim: str | None = None

    async def undo(self) -> None:
        if self.bucket is not None:
            await self.store.give_back(*self.bucket)
        if self.claim is not None:
            await self.store.release(self.claim)
        self.bucket = self.claim = None


def _caller(identity: Identity, key: str) -> str:
    """Who a bucket belongs to: the key claim's value, else `sub`, per issuer."""
    value = claim_text(identity.claims.get(key))
    if value is None:
        key, value = "sub", identity.text("sub") or ""
    return f"{identity.issuer}|{key}={value}"
