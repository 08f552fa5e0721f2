"""The per-key request limiters, on a fake clock (memory) and on the real Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from agents.calls import TurnRecord
from services.ratelimit import MemoryRateLimiter, RedisRateLimiter, token_quota_left
from store import api_keys
from store.runs import Store
from tests.conftest import solver_turn

REDIS_URL = os.environ.get("THINKTANK_TEST_REDIS", "redis://127.0.0.1:6379/0")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_limiter_allows_the_limit_then_says_when_to_retry() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    decisions = [await limiter.hit("k", 3) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]

    clock.now += 20.2
    over = await limiter.hit("k", 3)
    assert not over.allowed and over.remaining == 0
    assert over.retry_after_s == 40  # the window opened at the first request: 39.8s left

    # another key has its own window
    assert (await limiter.hit("other", 3)).allowed

    clock.now += 39.8  # the window has closed: a fresh one opens
    fresh = await limiter.hit("k", 3)
    assert fresh.allowed and fresh.remaining == 2 and fresh.retry_after_s == 60


async def test_memory_limiter_never_says_retry_in_zero_seconds() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    await limiter.hit("k", 1)
    clock.now += 59.999
    assert (await limiter.hit("k", 1)).retry_after_s == 1


@pytest.fixture
async def redis_limiter() -> AsyncIterator[RedisRateLimiter]:
    # a prefix of this test's own, so runs of the suite side by side never share counts
    limiter = RedisRateLimiter(REDIS_URL, prefix=f"thinktank-test:{uuid.uuid4().hex}:")
    yield limiter
    stale = [key async for key in limiter._redis.scan_iter(match=limiter.prefix + "*")]
    if stale:
        await limiter._redis.delete(*stale)
    await limiter.close()


async def test_redis_limiter_counts_concurrent_requests_exactly(
    redis_limiter: RedisRateLimiter,
) -> None:
    # 50 requests at once from (say) several API processes: exactly the limit get through
    decisions = await asyncio.gather(*(redis_limiter.hit("k", 10) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    refused = [d for d in decisions if not d.allowed]
    assert all(1 <= d.retry_after_s <= 60 for d in refused)
    assert 0 < await redis_limiter._redis.pttl(redis_limiter.prefix + "k") <= 60_000


async def test_redis_limiter_window_closes(redis_limiter: RedisRateLimiter) -> None:
    short = RedisRateLimiter(REDIS_URL, prefix=redis_limiter.prefix, window_s=1)
    try:
        assert (await short.hit("k", 1)).allowed
        assert not (await short.hit("k", 1)).allowed
        await asyncio.sleep(1.1)
        assert (await short.hit("k", 1)).allowed
    finally:
        await short.close()


def spent(run_id: str, key: str, prompt: int, completion: int) -> TurnRecord:
    return solver_turn(run_id, key, prompt_tokens=prompt, completion_tokens=completion)


async def test_token_quota_counts_the_keys_finished_runs_once(any_store: Store) -> None:
    store = any_store
    budgeted, _ = await api_keys.create_key(store, "budgeted", token_quota=100)
    unlimited, _ = await api_keys.create_key(store, "unlimited")
    assert await token_quota_left(store, budgeted) == 100
    assert await token_quota_left(store, unlimited) is None

    mine, _ = await store.create_run("single", "q", {}, api_key_id=budgeted.id)
    theirs, _ = await store.create_run("single", "q", {}, api_key_id=unlimited.id)
    await store.record_turn(spent(mine.id, "a", 30, 10))
    await store.record_turn(spent(theirs.id, "a", 500, 500))
    # a run in flight is counted when it ends
    assert await token_quota_left(store, budgeted) == 100
    await store.finish_run(mine.id, status="failed", error="model went away")
    await store.finish_run(theirs.id, status="succeeded")
    assert await token_quota_left(store, budgeted) == 60

    # resumed, the run makes one more turn and finishes again: counted once, not twice
    assert await store.claim_run(mine.id, "worker-1", lease_s=30)
    await store.record_turn(spent(mine.id, "b", 20, 10))
    await store.finish_run(mine.id, status="succeeded")
    assert await token_quota_left(store, budgeted) == 30
    assert await api_keys.tokens_spent_by_key(store) == {budgeted.id: 70, unlimited.id: 1000}
