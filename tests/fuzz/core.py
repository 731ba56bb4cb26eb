"""What every fuzz target shares: the rule for a defined outcome, a watch on error logs, a time
bound per case, and the ``Target`` record.

A target's runner takes one generated input and returns a short label of what happened to it
(``"answer"``, ``"refused:invalid_sdp"``, ``"dropped:malformed"``...).  Anything else is an
undefined outcome and raises: an exception nobody documents, a failure a catch-all swallowed and
logged, a 500, or a case that outlived its time bound (``Undefined``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import strategies as st

from videoconf import runtime

T = TypeVar("T")
Runner = Callable[[Any], str]


class Undefined(AssertionError):
    """An input got no defined outcome."""


class Hang(Undefined):
    """A case ran past its time bound."""


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    strategy: st.SearchStrategy[Any]
    open: Callable[[], AbstractContextManager[Runner]]
    suite_examples: int  # examples in the test suite (the whole fuzz suite stays under a minute)


class ErrorLog(logging.Handler):
    """Records at ``level`` or above from the named loggers: a failure that a catch-all turned
    into a log line (an ``internal_error``, a 500, a contained packet-path error) is not a
    defined outcome, so a case that leaves one fails."""

    def __init__(self, *names: str, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.names = names
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorLog:
        for name in self.names:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            logging.getLogger(name).removeHandler(self)

    def take(self) -> list[logging.LogRecord]:
        records, self.records = self.records, []
        return records

    def check(self) -> None:
        """Raise ``Undefined`` for the first error logged since the last check."""
        records = [r for r in self.take() if r.levelno >= logging.ERROR]
        if records:
            raise Undefined(describe(records[0]))


def attempt(run: Runner, value: Any) -> str:
    """``run(value)``, with any exception other than ``Undefined`` turned into one."""
    try:
        return run(value)
    except Undefined:
        raise
    except Exception as exc:
        raise Undefined(f"{type(exc).__name__}: {exc}") from exc


def describe(record: logging.LogRecord) -> str:
    text = f"{record.name}: {record.getMessage()}"
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text += f" ({type(exc).__name__}: {exc})"
    return text


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Interrupt a synchronous case that runs longer than ``seconds`` (main thread only)."""

    def expired(signum: int, frame: Any) -> None:
        raise Hang(f"the case ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    began = time.monotonic()
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # an outer timer (pytest-timeout's) runs on with what it had left
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - began), 0.001), interval)


def bounded(run: Callable[[Any], str], seconds: float) -> Runner:
    def runner(value: Any) -> str:
        with time_bound(seconds):
            return run(value)

    return runner


def await_chain(task: asyncio.Task[Any]) -> str:
    """Where a pending task waits: each coroutine it awaits, outermost first."""
    places = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            places.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(places)


class LoopRunner:
    """An event loop of the kind production runs (uvloop) driven from synchronous code: async
    harnesses are set up on it once, then each case runs to completion on it."""

    def __init__(self) -> None:
        self.loop = runtime.loop_factory()()
        self.background: list[str] = []  # errors the loop's exception handler saw
        self.loop.set_exception_handler(self._exception)

    def _exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.background.append(f"{context.get('message')}: {type(exc).__name__ if exc else ''} {exc or ''}".strip())

    def run(self, awaitable: Awaitable[T], seconds: float | None = None) -> T:
        async def bounded_case() -> T:
            # Not wait_for: it waits for the cancelled case to finish, which a stuck case may never do.
            task = asyncio.ensure_future(awaitable)
            done, _ = await asyncio.wait([task], timeout=seconds)
            if not done:
                where = await_chain(task)
                task.cancel()
                raise Hang(f"the case ran longer than {seconds} s, stuck in: {where}")
            return task.result()

        return self.loop.run_until_complete(bounded_case())

    def close(self) -> None:
        loop = self.loop
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
