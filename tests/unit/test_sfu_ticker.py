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
    try:
        await asyncio.sleep(CALM_TICK_INTERVAL * 3.5)
        calm = len(track.ticks)
        assert 2 <= calm <= 4  # calm: about one tick per CALM_TICK_INTERVAL
        track.missing = True
        woken = asyncio.get_running_loop().time()
        node.wake()  # a gap: the next tick comes within TICK_INTERVAL, not CALM_TICK_INTERVAL
        await asyncio.sleep(TICK_INTERVAL * 1.8)
        assert len(track.ticks) == calm + 1 and track.ticks[-1] - woken < CALM_TICK_INTERVAL / 2
        await asyncio.sleep(TICK_INTERVAL * 5)
        assert len(track.ticks) >= calm + 4  # quick while missing
        track.missing = False
        await asyncio.sleep(TICK_INTERVAL * 2)
        settled = len(track.ticks)
        await asyncio.sleep(CALM_TICK_INTERVAL * 0.8)
        assert len(track.ticks) <= settled + 1  # calm again
    finally:
        node.rooms.clear()
        await node.stop()
