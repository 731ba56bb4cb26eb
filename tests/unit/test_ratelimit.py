"""GCRA rate limiting: the pure decision, and the same behaviour in memory and in Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from control_api.ratelimit import MemoryRateLimiter, RedisRateLimiter, gcra
from videoconf.config import RateLimitRule

RULE = RateLimitRule(limit=3, period=30)  # a burst of 3, then one every 10 s


def test_gcra_allows_a_burst_then_one_per_interval() -> None:
    tat = None
    for _ in range(3):
        decision, tat = gcra(tat, 1000.0, RULE)
        assert decision.allowed
    decision, unchanged = gcra(tat, 1000.0, RULE)
    assert not decision.allowed and unchanged is None
    assert decision.retry_after == pytest.approx(10.0) and decision.retry_after_header == "10"
    decision, _ = gcra(tat, 1009.9, RULE)
    assert not decision.allowed and decision.retry_after_header == "1"
    decision, tat = gcra(tat, 1010.0, RULE)
    assert decision.allowed
    # After a long pause the full burst is available again, not more.
    results = []
    for _ in range(4):
        decision, new = gcra(tat, 5000.0, RULE)
        results.append(decision.allowed)
        tat = new if new is not None else tat
    assert results == [True, True, True, False]


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        return MemoryRateLimiter()
    return RedisRateLimiter(request.getfixturevalue("redis_client"), prefix=f"vctest:rl:{uuid.uuid4().hex}:")


async def test_limiters_agree_with_the_pure_algorithm(limiter) -> None:
    now = 1_700_000_000.0
    outcomes = [(await limiter.hit("k", RULE, now)).allowed for _ in range(4)]
    assert outcomes == [True, True, True, False]
    denied = await limiter.hit("k", RULE, now + 5)
    assert not denied.allowed and denied.retry_after == pytest.approx(5.0, abs=0.01)
    assert (await limiter.hit("other", RULE, now + 5)).allowed  # keys are independent
    assert (await limiter.hit("k", RULE, now + 10)).allowed
    await limiter.reset("k")
    assert all([(await limiter.hit("k", RULE, now + 10)).allowed for _ in range(3)])


async def test_memory_limiter_stays_bounded() -> None:
    limiter = MemoryRateLimiter(max_keys=100)
    for i in range(1000):
        await limiter.hit(f"k{i}", RULE, 1000.0 + i)
    assert len(limiter._tats) <= 100


async def test_the_redis_limiter_counts_in_process_while_redis_is_away() -> None:
    """Requests never fail for a missing Redis: the limiter counts in this process meanwhile
    (still limiting), and uses Redis again once it answers (Redis comes back empty)."""
    from redis.asyncio import Redis

    from tests.services import PrivateRedis

    rule = RateLimitRule(limit=2, period=60)
    with PrivateRedis() as server:
        client = Redis.from_url(server.url, socket_connect_timeout=2, socket_timeout=5)
        limiter = RedisRateLimiter(client, prefix="rl:")
        assert (await limiter.hit("k", rule, 1000.0)).allowed
        await asyncio.to_thread(server.stop)
        assert (await limiter.hit("k", rule, 1000.0)).allowed and limiter.degraded
        assert (await limiter.hit("k", rule, 1000.0)).allowed
        assert not (await limiter.hit("k", rule, 1000.0)).allowed  # still limited, in memory
        await asyncio.to_thread(server.start)
        assert (await limiter.hit("k", rule, 1000.0)).allowed  # a fresh budget in the empty Redis
        assert not limiter.degraded and await client.exists("rl:k")
        await client.aclose()
