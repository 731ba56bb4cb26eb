"""Waiting for a condition: poll it, with a deadline.  The load tester, the benchmarks and the
tests synchronise this way, never by sleeping for a time that is usually enough."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def until(
    holds: Callable[[], T | Awaitable[T]], timeout: float = 20.0, what: str | Callable[[], str] | None = None, *,
    interval: float = 0.1, error: type[Exception] = AssertionError,
) -> T:
    """The first true value of ``holds()`` (a function or a coroutine function), checked every
    ``interval`` seconds; after ``timeout`` seconds, ``error`` naming ``what`` was awaited (a
    text, or a function that describes the state of things then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await _value(holds())):
        if loop.time() > deadline:
            awaited = what() if callable(what) else what or getattr(holds, "__name__", holds)
            raise error(f"timed out after {timeout:g} s waiting for {awaited}")
        await asyncio.sleep(interval)
    return value


async def _value(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result
