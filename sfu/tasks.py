"""Background tasks whose failures are logged, never lost.

The event loop keeps only weak references to tasks, so a fire-and-forget ``create_task`` can be
collected mid-flight, and an exception in it surfaces, if ever, as "Task exception was never
retrieved" when it is collected.  A ``TaskSet`` holds each task until it finishes, logs the
exception it ended with (unless the owner expects that one), and cancels or awaits what is left
when its owner closes.  A leaf module: the SFU, signaling, the recorder and the SDK all use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any


def never(error: BaseException) -> bool:
    return False


class TaskSet:
    """The running background tasks of one owner (a room, a participant, a recording)."""

    def __init__(
        self, log: logging.Logger, failure: str, *args: Any, expected: Callable[[BaseException], bool] = never
    ) -> None:
        """``failure`` and ``args``: the log message of a task that failed; ``expected``: whether
        an exception is part of normal operation (then it is not logged)."""
        self._log = log
        self._failure = (failure, *args)
        self._expected = expected
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if not self._expected(error):
            self._log.error(*self._failure, exc_info=error)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Future[Any]]:
        return iter(list(self._tasks))

    def _others(self) -> list[asyncio.Future[Any]]:
        """Every task but the one running this (a task may close its own owner)."""
        current = asyncio.current_task()
        return [task for task in self._tasks if task is not current]

    def cancel(self) -> None:
        for task in self._others():
            task.cancel()

    async def wait(self) -> None:
        """Until every task has finished, whatever it ended with."""
        await asyncio.gather(*self._others(), return_exceptions=True)

    async def cancel_and_wait(self) -> None:
        self.cancel()
        await self.wait()
