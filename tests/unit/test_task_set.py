"""``sfu.tasks.TaskSet``: background tasks are held until they finish, and their failures are
logged unless their owner expects them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sfu.tasks import TaskSet

log = logging.getLogger("test_task_set")


async def fail(error: BaseException) -> None:
    raise error


async def test_a_failed_task_is_logged_and_an_expected_failure_is_not(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet(log, "task of %s failed", "owner", expected=lambda error: isinstance(error, ConnectionError))
    with caplog.at_level(logging.ERROR, logger=log.name):
        tasks.spawn(fail(ValueError("broken")))
        tasks.spawn(fail(ConnectionError("gone")))
        await tasks.wait()
    assert [(r.getMessage(), type(r.exc_info[1])) for r in caplog.records] == [("task of owner failed", ValueError)]
    assert len(tasks) == 0


async def test_cancel_spares_the_task_that_asks_and_wait_returns_when_all_ended() -> None:
    tasks = TaskSet(log, "failed")
    sleeper = tasks.spawn(asyncio.sleep(60))

    async def closer() -> str:
        tasks.cancel()
        await asyncio.sleep(0)
        return "closed"

    closing = tasks.spawn(closer())
    await tasks.wait()
    assert sleeper.cancelled() and closing.result() == "closed" and not tasks
