"""The in-memory store on its own clock: claims live until their token expires, and
what a refused request took can be given back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exchanger.errors import UpstreamUnavailable
from exchanger.limits import store as store_module
from exchanger.limits.store import MemoryStore, RedisStore, Store
from tests.fakes.redis import run_redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_regression_claim_outlives_a_day_when_its_token_does() -> None:
    """A 7-day token claimed once stays claimed for 7 days, not 24 hours."""
    clock = Clock()
    memory = MemoryStore(clock)
    week = 7 * 86400

    async def scenario() -> list[bool]:
        first = await memory.claim_once("iss|jti", week)
        clock.now += 2 * 86400
        during = await memory.claim_once("iss|jti", week)
        clock.now += week
        after = await memory.claim_once("iss|jti", week)
        return [first, during, after]

    assert asyncio.run(scenario()) == [True, False, True]


def test_regression_full_claim_store_answers_503_and_forgets_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "MAX_CLAIMS", 3)
    clock = Clock()
    memory = MemoryStore(clock)

    async def scenario() -> None:
        for n in range(3):
            assert await memory.claim_once(f"k{n}", 60 + n)
        with pytest.raises(UpstreamUnavailable) as refused:
            await memory.claim_once("k3", 60)
        assert refused.value.retry_after == 60
        for n in range(3):
            assert not await memory.claim_once(f"k{n}", 60), "a held claim was forgotten"
        clock.now += 60
        assert await memory.claim_once("k3", 60)  # k0 expired: room again
        assert not await memory.claim_once("k1", 60)

    asyncio.run(scenario())


async def _undo_a_settlement(store: Store) -> None:
    """What a refused request took comes back: the claim, and one unit up to the burst."""
    assert await store.claim_once("k", 60)
    assert not await store.claim_once("k", 60)
    await store.release("k")
    assert await store.claim_once("k", 60)
    assert (await store.take("b", 1 / 60, 1)).allowed
    assert not (await store.take("b", 1 / 60, 1)).allowed
    await store.give_back("b", 1)
    await store.give_back("b", 1)  # never above the burst
    assert (await store.take("b", 1 / 60, 1)).allowed
    assert not (await store.take("b", 1 / 60, 1)).allowed


def test_memory_release_and_give_back_undo_a_settlement() -> None:
    asyncio.run(_undo_a_settlement(MemoryStore(Clock())))


def test_redis_release_and_give_back_undo_a_settlement(tmp_path: Path) -> None:
    async def scenario(url: str) -> None:
        shared = RedisStore(url)
        try:
            await _undo_a_settlement(shared)
        finally:
            await shared.close()

    with run_redis(tmp_path) as server:
        asyncio.run(scenario(server.url))
