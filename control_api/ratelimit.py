"""Rate limiting with GCRA (the generic cell rate algorithm), in memory or in Redis.

One number per key: the theoretical arrival time (TAT) of the next event.  A rule of ``limit``
events per ``period`` seconds lets ``limit`` events through at once and then one every
``period / limit`` seconds.  The in-memory limiter serves the embedded single-process mode; the
Redis limiter runs the same arithmetic in a Lua script, so several API nodes share the budget.

Rate-limit state is not precious: when Redis cannot be reached the Redis limiter counts in this
process instead (each node then enforces the limits on its own), and goes back to Redis as soon
as it answers again.  Redis kept without persistence comes back empty, so budgets start afresh
after a restart.  Requests never fail because Redis is away.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from control_api.config import RateLimitRule

log = logging.getLogger(__name__)
# Times are epoch seconds (about 1.7e9), whose float steps are about 2e-7 s: summing intervals
# would otherwise refuse the last event of a burst now and then (5 of a burst of 6).
SLACK = 1e-6
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds until the next event would be allowed; 0 when allowed

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


def gcra(tat: float | None, now: float, rule: RateLimitRule, cost: int = 1) -> tuple[Decision, float | None]:
    """Decide ``cost`` events at once.  Returns the decision and the new TAT to store (None: keep
    the old)."""
    interval = rule.period / rule.limit
    tat = now if tat is None or tat < now else tat
    new_tat = tat + interval * cost
    allow_at = new_tat - interval * rule.limit
    if allow_at - now > SLACK:
        return Decision(False, allow_at - now), None
    return Decision(True, 0.0), new_tat


def refunded(tat: float | None, now: float, rule: RateLimitRule) -> float | None:
    """The TAT once one allowed event is given back (None: nothing left to remember)."""
    if tat is None:
        return None
    earlier = tat - rule.period / rule.limit
    return earlier if earlier > now else None


class RateLimiter(Protocol):
    async def hit(self, key: str, rule: RateLimitRule, now: float, cost: int = 1) -> Decision: ...

    async def refund(self, key: str, rule: RateLimitRule, now: float) -> None:
        """Give back one event that was allowed (a try that turned out right)."""

    async def claim(self, key: str, until: float, now: float) -> bool:
        """True the first time ``key`` is claimed before ``until``; False while it is remembered."""

    async def reset(self, key: str) -> None: ...


class MemoryRateLimiter:
    def __init__(self, max_keys: int = 100_000) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, rule: RateLimitRule, now: float, cost: int = 1) -> Decision:
        decision, new_tat = gcra(self._tats.get(key), now, rule, cost)
        if new_tat is not None:
            self._store(key, new_tat, now)
        return decision

    async def refund(self, key: str, rule: RateLimitRule, now: float) -> None:
        tat = refunded(self._tats.get(key), now, rule)
        if tat is None:
            self._tats.pop(key, None)
        else:
            self._tats[key] = tat

    async def claim(self, key: str, until: float, now: float) -> bool:
        held = self._tats.get(key)
        if held is not None and held > now:
            return False
        self._store(key, until, now)  # a claim is a TAT that only time clears
        return True

    def _store(self, key: str, tat: float, now: float) -> None:
        if len(self._tats) >= self._max_keys:
            self._evict(now)
        self._tats[key] = tat

    async def reset(self, key: str) -> None:
        self._tats.pop(key, None)

    def _evict(self, now: float) -> None:
        expired = [k for k, tat in self._tats.items() if tat <= now]
        for k in expired:
            del self._tats[k]
        if len(self._tats) >= self._max_keys:  # still full: drop the oldest half
            for k in sorted(self._tats, key=self._tats.__getitem__)[: self._max_keys // 2]:
                del self._tats[k]


_GCRA_LUA = """
local tat = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - interval * limit
if allow_at - now > 0.000001 then
  return {0, tostring(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1)
return {1, '0'}
"""


_REFUND_LUA = """
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil then return 0 end
local now = tonumber(ARGV[1])
local earlier = tat - tonumber(ARGV[2])
if earlier > now then
  redis.call('SET', KEYS[1], string.format('%.17g', earlier), 'PX', math.ceil((earlier - now) * 1000) + 1)
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, prefix: str = "videoconf:rl:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_LUA)  # reloaded by redis-py after a restart
        self._refund = redis.register_script(_REFUND_LUA)
        self._fallback = MemoryRateLimiter()
        self.degraded = False  # counting in this process because Redis is unreachable

    async def hit(self, key: str, rule: RateLimitRule, now: float, cost: int = 1) -> Decision:
        try:
            allowed, retry = await self._script(
                keys=[self._prefix + key], args=[repr(now), repr(rule.period / rule.limit), rule.limit, cost]
            )
        except REDIS_ERRORS as exc:
            if not self.degraded:
                log.warning("Redis is unreachable (%s: %s): rate limits are counted in this process until it is back", type(exc).__name__, exc)
                self.degraded = True
            return await self._fallback.hit(key, rule, now, cost)
        if self.degraded:
            log.warning("Redis answers again: rate limits are counted in Redis")
            self.degraded = False
        return Decision(bool(int(allowed)), float(retry))

    async def refund(self, key: str, rule: RateLimitRule, now: float) -> None:
        await self._fallback.refund(key, rule, now)
        try:
            await self._refund(keys=[self._prefix + key], args=[repr(now), repr(rule.period / rule.limit)])
        except REDIS_ERRORS as exc:
            log.warning("could not give back rate limit %s in Redis (%s: %s)", key, type(exc).__name__, exc)

    async def claim(self, key: str, until: float, now: float) -> bool:
        milliseconds = max(1, math.ceil((until - now) * 1000))
        try:
            return bool(await self._redis.set(self._prefix + key, b"1", nx=True, px=milliseconds))
        except REDIS_ERRORS as exc:
            log.warning("could not claim %s in Redis (%s: %s); remembered in this process", key, type(exc).__name__, exc)
            return await self._fallback.claim(key, until, now)

    async def reset(self, key: str) -> None:
        await self._fallback.reset(key)
        try:
            await self._redis.delete(self._prefix + key)
        except REDIS_ERRORS as exc:
            log.warning("could not reset rate limit %s in Redis (%s: %s)", key, type(exc).__name__, exc)
