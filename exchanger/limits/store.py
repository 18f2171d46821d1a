"""Shared state for abuse resistance: token buckets and single-use token ids.

Two stores behind one small interface: in process memory (the default), or
Redis (`state: {redis_url: …}`) so that replicas enforce limits together.
Redis is used atomically — a Lua token bucket that reads Redis's own clock,
and `SET NX EX` for token ids. When Redis cannot be reached, rate limits fall
back to this process's buckets and single-use claims fail closed (503); the
store remembers the outage for a second so each request does not wait on a
dead connection, and tries again after that.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

from exchanger.errors import UpstreamUnavailable

log = logging.getLogger("exchanger.state")

MAX_BUCKETS = 100_000
#: Unexpired single-use claims one process holds (about 200 bytes each).
MAX_CLAIMS = 250_000
OUTAGE_BACKOFF = 1.0
REDIS_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class Verdict:
    """A bucket's answer: allowed, or how many seconds until a unit is free."""

    allowed: bool
    retry_after: float = 0.0


class Store(Protocol):
    async def take(self, key: str, per_second: float, burst: int) -> Verdict: ...

    async def give_back(self, key: str, burst: int) -> None:
        """Return a unit `take` took, for a request that then ended in a 4xx."""

    async def claim_once(self, key: str, ttl_seconds: int) -> bool: ...

    async def release(self, key: str) -> None:
        """Forget a claim, for a request that then ended in a 4xx."""

    @property
    def degraded(self) -> list[str]: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Per-process buckets and claims, bounded.

    A bucket may be forgotten once idle (a full bucket needs no record). A claim
    never is before its token expires — forgetting one would let the token be
    used again — so when `MAX_CLAIMS` unexpired claims are held, new claims are
    refused with 503 until the oldest expire.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[float, TTLCache[str, tuple[float, float]]] = {}
        self._claims: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap: (expiry, key)

    @property
    def degraded(self) -> list[str]:
        return []

    async def take(self, key: str, per_second: float, burst: int) -> Verdict:
        return self.take_now(key, per_second, burst)

    def take_now(self, key: str, per_second: float, burst: int) -> Verdict:
        """Refill by elapsed time, then take one unit if there is one."""
        idle = burst / per_second + 60.0  # a full bucket needs no record
        buckets = self._buckets.get(idle)
        if buckets is None:
            buckets = self._buckets[idle] = TTLCache(MAX_BUCKETS, idle, timer=self._clock)
        now = self._clock()
        tokens, last = buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * per_second)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return Verdict(True)
        buckets[key] = (tokens, now)
        return Verdict(False, (1.0 - tokens) / per_second)

    async def give_back(self, key: str, burst: int) -> None:
        for buckets in self._buckets.values():
            state = buckets.get(key)
            if state is not None:
                buckets[key] = (min(float(burst), state[0] + 1.0), state[1])

    async def claim_once(self, key: str, ttl_seconds: int) -> bool:
        now = self._clock()
        self._expire(now)
        expires = self._claims.get(key)
        if expires is not None and expires > now:
            return False
        if len(self._claims) >= MAX_CLAIMS:
            wait = self._expiries[0][0] - now
            log.error(
                "single-use store full (%d unexpired tokens): refusing new claims", MAX_CLAIMS
            )
            raise UpstreamUnavailable(
                "single-use state is full", retry_after=retry_after_seconds(wait)
            )
        self._claims[key] = now + ttl_seconds
        heapq.heappush(self._expiries, (now + ttl_seconds, key))
        return True

    async def release(self, key: str) -> None:
        self._claims.pop(key, None)  # its heap entry expires harmlessly

    def _expire(self, now: float) -> None:
        expiries, claims = self._expiries, self._claims
        while expiries and expiries[0][0] <= now:
            expires, key = heapq.heappop(expiries)
            if claims.get(key) == expires:
                del claims[key]

    async def close(self) -> None:
        return None


_BUCKET = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or t
tokens = math.min(burst, tokens + math.max(0, t - last) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + 60) * 1000))
return {allowed, tostring(wait)}
"""

_GIVE_BACK = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then
  redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), tokens + 1)))
end
return 1
"""


class RedisStore:
    """Buckets and claims in Redis, shared by every replica."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        import redis.asyncio

        self._redis: Any = redis.asyncio.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry_on_timeout=False,
        )
        self._bucket = self._redis.register_script(_BUCKET)
        self._give_back = self._redis.register_script(_GIVE_BACK)
        self._fallback = MemoryStore(clock)
        self._clock = clock
        self._down_until = 0.0
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def __repr__(self) -> str:
        return "RedisStore(<redacted url>)"

    @property
    def degraded(self) -> list[str]:
        return ["redis"] if self._down_until > self._clock() else []

    def _available(self) -> bool:
        return self._down_until <= self._clock()

    def _mark_down(self, exc: BaseException) -> None:
        if self._available():
            log.warning(
                "redis unavailable (%s): buckets are per process, single-use fails closed",
                exc.__class__.__name__,
            )
        self._down_until = self._clock() + OUTAGE_BACKOFF

    async def take(self, key: str, per_second: float, burst: int) -> Verdict:
        if self._available():
            try:
                allowed, wait = await self._bucket(
                    keys=[f"exchanger:rl:{key}"], args=[per_second, burst]
                )
            except self._errors as exc:
                self._mark_down(exc)
            else:
                return Verdict(bool(int(allowed)), float(wait))
        return self._fallback.take_now(key, per_second, burst)

    async def give_back(self, key: str, burst: int) -> None:
        if not self._available():
            await self._fallback.give_back(key, burst)
            return
        try:
            await self._give_back(keys=[f"exchanger:rl:{key}"], args=[burst])
        except self._errors as exc:
            self._mark_down(exc)

    async def release(self, key: str) -> None:
        try:
            await self._redis.delete(f"exchanger:jti:{key}")
        except self._errors as exc:
            self._mark_down(exc)
            log.warning("could not release a single-use claim after a refused exchange")

    async def claim_once(self, key: str, ttl_seconds: int) -> bool:
        if not self._available():
            raise UpstreamUnavailable("single-use state is unavailable", retry_after=1)
        try:
            stored = await self._redis.set(
                f"exchanger:jti:{key}", b"1", nx=True, ex=max(1, ttl_seconds)
            )
        except self._errors as exc:
            self._mark_down(exc)
            raise UpstreamUnavailable("single-use state is unavailable", retry_after=1) from None
        return bool(stored)

    async def close(self) -> None:
        await self._redis.aclose()


def retry_after_seconds(wait: float) -> int:
    """`Retry-After` is a whole number of seconds, at least 1."""
    return max(1, math.ceil(wait))
