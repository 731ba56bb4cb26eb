"""A per-track ring of recent packets, by unwrapped sequence number, for answering NACKs.

The packet is stored once; every subscriber's retransmission reads it from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class CachedPacket:
    sequence: int  # unwrapped (64-bit) sequence number
    timestamp: int  # unwrapped RTP timestamp
    marker: int
    payload: bytes
    keyframe: bool
    arrival: float  # seconds, monotonic
    audio_level: tuple[bool, int] | None = None
    layer: int = 0  # position of its layer in the up-track
    tid: int | None = None  # VP8 temporal layer
    vp8: Any = None  # the parsed VP8 payload descriptor (sfu.vp8.Vp8Descriptor)
    picture_id: int | None = None  # VP8 picture ID, unwrapped
    tl0: int | None = None  # VP8 TL0PICIDX, unwrapped


class PacketCache:
    def __init__(self, capacity: int = 512) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._slots: list[CachedPacket | None] = [None] * capacity

    def add(self, packet: CachedPacket) -> None:
        self._slots[packet.sequence % self.capacity] = packet

    def get(self, sequence: int) -> CachedPacket | None:
        packet = self._slots[sequence % self.capacity]
        if packet is None or packet.sequence != sequence:
            return None
        return packet
