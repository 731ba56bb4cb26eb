"""One encoding of a published track (a simulcast layer, or the only one): what arrives of it
and what the SFU knows about it.  Pure: the clock is passed in.

Each layer unwraps its own sequence numbers and timestamps, caches its packets once, tracks its
upstream loss, measures its bit rate per temporal layer, learns its frame rate (so that a layer
the publisher stops is seen gone quickly) and its size from keyframes, and remembers what dynacast
last asked the publisher to do with it.
"""

from __future__ import annotations

from typing import Any

from sfu.bandwidth import RateMeter
from sfu.nack import LossTracker
from sfu.packet_cache import PacketCache
from sfu.rtp import Unwrapper

LAYER_TIMEOUT = 1.5  # a layer with no packet for this long is not being sent (at the most)
LAYER_TIMEOUT_MIN = 0.5  # ... and at the least: six frame intervals in between
RESUME_WAIT = 5.0  # seconds a layer resumed by dynacast counts as coming before it must be sent
MAX_TEMPORAL = 4


class Layer:
    """One encoding of an up-track."""

    def __init__(self, position: int, rid: str | None, kind: str) -> None:
        self.position = position  # as the publisher declared it (lowest first by convention)
        self.rid = rid
        self.ssrc: int | None = None
        self.seq = Unwrapper(16)
        self.ts = Unwrapper(32)
        self.picture_ids = Unwrapper(15)
        self.tl0 = Unwrapper(8)
        self.cache = PacketCache(512 if kind == "video" else 64)
        self.losses = LossTracker()
        self.width: int | None = None
        self.height: int | None = None
        self.meters = [RateMeter() for _ in range(MAX_TEMPORAL)]
        self.temporal_layers = 1
        self.last_packet = float("-inf")
        self.last_frame: tuple[int, float] | None = None  # (RTP timestamp, arrival) of the newest frame
        self.frame_interval = 0.1  # smoothed seconds between frames
        self.timeout = LAYER_TIMEOUT
        self.last_keyframe_request = float("-inf")
        self.active = True  # what the SFU last asked the publisher (dynacast)
        self.inactive_since: float | None = None
        self.resumed_at = float("-inf")
        self.last_rate: list[float] = []
        self.packets = 0
        self.lanes: list[Any] = []  # native lanes armed on this layer (sfu.forwarding.DownTrack.arm_lane)

    def sending(self, now: float) -> bool:
        return now - self.last_packet < self.timeout

    def arrived(self, timestamp: int, now: float, repaired: bool = False) -> None:
        """A packet of the frame with RTP ``timestamp`` arrived: learn the frame rate, so that a
        layer the publisher stops (Chromium drops one when its bandwidth estimate falls) is seen
        gone after about six missing frames rather than a fixed, long timeout."""
        self.last_packet = now
        last = self.last_frame
        if not repaired and (last is None or timestamp > last[0]):
            if last is not None and 0 < now - last[1] < 2.0:
                self.frame_interval += (now - last[1] - self.frame_interval) * 0.1
                self.timeout = min(LAYER_TIMEOUT, max(LAYER_TIMEOUT_MIN, 6 * self.frame_interval))
            self.last_frame = (timestamp, now)

    def available(self, now: float) -> bool:
        """Sent now, or to be had: paused by dynacast (resumed on demand) or resumed a moment
        ago and not arrived yet."""
        return self.sending(now) or not self.active or now - self.resumed_at < RESUME_WAIT

    def pause(self) -> None:
        self.active = False

    def resume(self, now: float) -> None:
        self.active = True
        self.resumed_at = now
        self.inactive_since = None

    def rates(self, now: float) -> list[float]:
        """Cumulative bits/s with temporal layers 0..t; the last measured while it is paused."""
        if not self.sending(now) and self.last_rate:
            return self.last_rate
        total = 0.0
        rates = []
        for meter in self.meters[: self.temporal_layers]:
            total += meter.rate(now)
            rates.append(total)
        if rates and rates[-1] > 0:
            self.last_rate = rates
        return rates
