"""A clock in seconds that a test moves by hand, for the parts that take their clock as an
argument (``time.monotonic`` in production).  ``tests.conftest.FakeClock`` is its counterpart in
UTC datetimes, for the control API."""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
