"""Budgets counted before the action they limit, all of them or none: guesses (passcodes,
passwords), where a right try is given back afterwards, and chat messages.

Counting first is what makes a budget hold under concurrency: a thousand parallel guesses cannot
all be checked while the counter still reads zero.  Giving right tries back keeps legitimate use
free, so only failures use the budget up.  Once a budget is spent, every try is refused, right or
wrong: a limit that let the right answer through would tell a guesser when it found it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from control_api.config import RateLimitRule
from control_api.errors import ServiceError
from control_api.ratelimit import Decision, RateLimiter


@dataclass(frozen=True)
class Budget:
    key: str
    rule: RateLimitRule


def rate_limited(decision: Decision, what: str) -> ServiceError:
    return ServiceError(
        429,
        "rate_limited",
        f"too many {what}; try again in {decision.retry_after_header} s",
        {"retry_after": decision.retry_after_header},
        headers={"Retry-After": decision.retry_after_header},
    )


async def reserve(limiter: RateLimiter, budgets: Sequence[Budget], now: float, what: str) -> None:
    """Count one try against every budget, or none of them and raise 429."""
    taken: list[Budget] = []
    for budget in budgets:
        decision = await limiter.hit(budget.key, budget.rule, now)
        if not decision.allowed:
            await give_back(limiter, taken, now)
            raise rate_limited(decision, what)
        taken.append(budget)


async def give_back(limiter: RateLimiter, budgets: Sequence[Budget], now: float) -> None:
    for budget in budgets:
        await limiter.refund(budget.key, budget.rule, now)
