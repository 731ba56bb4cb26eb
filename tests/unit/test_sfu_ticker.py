"""The node's ticker: calm (every CALM_TICK_INTERVAL) while nothing is missing upstream, woken to
tick within TICK_INTERVAL when a packet goes missing, and ticking every TICK_INTERVAL until the
gap is repaired or given up."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from sfu.metrics import SfuMetrics
from sfu.room import CALM_TICK_INTERVAL, TICK_INTERVAL, NodeSettings, SfuNode


class CountingTrack:
    """Stands in for an up-track in the ticker's loop: counts its ticks."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.missing = False
        self.track_id = "t"

    async def tick(self) -> None:
        self.ticks.append(asyncio.get_running_loop().time())

    def losses_pending(self) -> bool:
        return self.missing


async def test_the_ticker_is_calm_until_a_gap_and_quick_while_packets_are_missing(monkeypatch) -> None:
    node = SfuNode(SfuMetrics(CollectorRegistry()), NodeSettings(ice_servers=[]))
    track = CountingTrack()
    participant = type("P", (), {"uptracks": {"t": track}})()
    async def reallocate_all(self: object) -> None:
        return None

    room = type("R", (), {"participants": {"p": participant}, "reallocate_all": reallocate_all})()
    node.rooms["r"] = room  # type: ignore[assignment]
    async def no_periodic(*args: object) -> None:
        return None

    async def guarded(step: object, what: str) -> None:
        await step  # type: ignore[misc]

    monkeypatch.setattr(node, "_periodic", no_periodic)
    monkeypatch.setattr(node, "_guarded", guarded)
    await node.start()
    loop = asyncio.get_running_loop()

    async def next_tick() -> float:
        """Seconds until the track's next tick (bounded: a stuck ticker fails the test)."""
        start, count = loop.time(), len(track.ticks)
        while len(track.ticks) == count:
            assert loop.time() - start < 2.0, "the ticker stopped"
            await asyncio.sleep(0.002)
        return track.ticks[-1] - start

    def gaps(count: int) -> list[float]:
        times = track.ticks[-count - 1:]
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    try:
        for _ in range(4):
            await next_tick()
        assert min(gaps(3)) > (TICK_INTERVAL + CALM_TICK_INTERVAL) / 2  # calm while nothing is missing
        await next_tick()  # just ticked: the calm timer is a whole CALM_TICK_INTERVAL away
        track.missing = True
        node.wake()  # a gap: the next tick comes within TICK_INTERVAL, not CALM_TICK_INTERVAL
        assert await next_tick() < (TICK_INTERVAL + CALM_TICK_INTERVAL) / 2
        for _ in range(5):
            await next_tick()
        assert sorted(gaps(5))[2] < (TICK_INTERVAL + CALM_TICK_INTERVAL) / 2  # quick while missing
        track.missing = False
        for _ in range(5):
            await next_tick()
        assert sorted(gaps(3))[1] > (TICK_INTERVAL + CALM_TICK_INTERVAL) / 2  # calm again
    finally:
        node.rooms.clear()
        await node.stop()
