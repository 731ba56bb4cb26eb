"""What the guessing budgets and one-use room tokens need from the limiter, in memory and in
Redis alike: events that cost more than one, a try given back, a key claimed once."""

from __future__ import annotations

import uuid

import pytest

from control_api.ratelimit import MemoryRateLimiter, RedisRateLimiter, gcra, refunded
from videoconf.config import RateLimitRule

RULE = RateLimitRule(limit=4, period=40)  # a burst of 4, then one every 10 s
NOW = 1_700_000_000.0


def test_a_cost_counts_as_that_many_events() -> None:
    decision, tat = gcra(None, NOW, RULE, cost=3)
    assert decision.allowed and tat == NOW + 30
    decision, unchanged = gcra(tat, NOW, RULE, cost=2)
    assert not decision.allowed and unchanged is None
    assert gcra(tat, NOW, RULE, cost=1)[0].allowed


def test_a_refund_takes_one_interval_back_and_forgets_what_is_past() -> None:
    assert refunded(NOW + 30, NOW, RULE) == NOW + 20
    assert refunded(NOW + 10, NOW, RULE) is None
    assert refunded(None, NOW, RULE) is None


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        return MemoryRateLimiter()
    return RedisRateLimiter(request.getfixturevalue("redis_client"), prefix=f"vctest:rl:{uuid.uuid4().hex}:")


async def test_limiters_charge_costs_and_give_tries_back(limiter) -> None:
    assert (await limiter.hit("k", RULE, NOW, cost=4)).allowed
    assert not (await limiter.hit("k", RULE, NOW)).allowed
    await limiter.refund("k", RULE, NOW)
    assert (await limiter.hit("k", RULE, NOW)).allowed
    assert not (await limiter.hit("k", RULE, NOW)).allowed
    for _ in range(6):  # more refunds than events: the budget is full, not more
        await limiter.refund("k", RULE, NOW)
    outcomes = [(await limiter.hit("k", RULE, NOW)).allowed for _ in range(5)]
    assert outcomes == [True] * 4 + [False]


async def test_a_key_is_claimed_once_until_it_lapses(limiter) -> None:
    assert await limiter.claim("jti:a", NOW + 60, NOW)
    assert not await limiter.claim("jti:a", NOW + 60, NOW + 1)
    assert await limiter.claim("jti:b", NOW + 60, NOW + 1)
    if isinstance(limiter, MemoryRateLimiter):  # Redis lets the key lapse by its own clock
        assert await limiter.claim("jti:a", NOW + 200, NOW + 61)


@pytest.mark.parametrize("limit", [3, 6, 7, 10, 30])
async def test_a_whole_burst_passes_at_epoch_times(limiter, limit: int) -> None:
    """Summing period/limit onto epoch seconds, and Redis keeping 14 digits of it, used to refuse
    the last event of some bursts (5 of 6)."""
    rule = RateLimitRule(limit=limit, period=10)
    outcomes = [(await limiter.hit(f"burst:{limit}", rule, NOW + 0.123)).allowed for _ in range(limit + 1)]
    assert outcomes == [True] * limit + [False]
