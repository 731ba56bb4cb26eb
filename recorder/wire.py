"""The pipe between the SFU and a recorder worker process.

The SFU writes length-prefixed messages to the worker's stdin; the worker answers with JSON
lines on its stdout.  Every message is ``!I`` (length of what follows) then one type byte:

- ``R`` an RTP packet of a recorded track: ``!HBBQId`` (track number, layer position, flags,
  unwrapped sequence number, 32-bit RTP timestamp, arrival in seconds on the monotonic clock),
  then the RTP payload.  Flags: bit 0 marker, bit 1 keyframe.
- ``N`` an RTCP sender report of a recorded stream: ``!HBQId`` (track number, layer position,
  64-bit NTP time, 32-bit RTP timestamp, arrival).
- ``J`` a JSON event: the meeting's state changing (``track``, ``untrack``, ``participants``,
  ``speakers``, ``muted``, ``stop``).

Decoding never raises on bad bytes: a message that does not fit is reported and skipped, and a
length over ``MAX_MESSAGE`` means the stream cannot be trusted any more.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LENGTH = struct.Struct("!I")
PACKET = struct.Struct("!HBBQId")
REPORT = struct.Struct("!HBQId")
MAX_MESSAGE = 1 << 20
FLAG_MARKER = 1
FLAG_KEYFRAME = 2


class WireError(Exception):
    """The byte stream is broken (a length over ``MAX_MESSAGE``): stop reading it."""


@dataclass(slots=True)
class Packet:
    track: int
    layer: int
    marker: bool
    keyframe: bool
    sequence: int
    timestamp: int
    arrival: float
    payload: bytes


@dataclass(slots=True)
class SenderReport:
    track: int
    layer: int
    ntp: int
    rtp: int
    arrival: float


def _framed(kind: bytes, body: bytes) -> bytes:
    return LENGTH.pack(len(body) + 1) + kind + body


def encode_packet(track: int, layer: int, marker: bool, keyframe: bool, sequence: int, timestamp: int, arrival: float, payload: bytes) -> bytes:
    flags = (FLAG_MARKER if marker else 0) | (FLAG_KEYFRAME if keyframe else 0)
    head = PACKET.pack(track, layer, flags, sequence & 0xFFFFFFFFFFFFFFFF, timestamp & 0xFFFFFFFF, arrival)
    return LENGTH.pack(len(head) + len(payload) + 1) + b"R" + head + payload


def encode_report(track: int, layer: int, ntp: int, rtp: int, arrival: float) -> bytes:
    return _framed(b"N", REPORT.pack(track, layer, ntp & 0xFFFFFFFFFFFFFFFF, rtp & 0xFFFFFFFF, arrival))


def encode_event(event: dict[str, Any]) -> bytes:
    return _framed(b"J", json.dumps(event, separators=(",", ":")).encode())


def decode(kind: int, body: bytes) -> Packet | SenderReport | dict[str, Any] | None:
    """One message's body to its object; None for anything malformed."""
    try:
        if kind == 0x52:  # R
            track, layer, flags, sequence, timestamp, arrival = PACKET.unpack_from(body)
            return Packet(track, layer, bool(flags & FLAG_MARKER), bool(flags & FLAG_KEYFRAME), sequence, timestamp, arrival, body[PACKET.size:])
        if kind == 0x4E:  # N
            if len(body) != REPORT.size:
                return None
            return SenderReport(*REPORT.unpack(body))
        if kind == 0x4A:  # J
            event = json.loads(body)
            return event if isinstance(event, dict) and isinstance(event.get("type"), str) else None
    except (struct.error, ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested too deep
        return None
    return None


class Reader:
    """Splits a byte stream into messages; feed it chunks as they come."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """The whole messages in what came so far; feed as much as there is at once (the worker
        feeds everything queued per wake-up), as the split is one pass over it."""
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
        size = len(data)
        offset = 0
        unpack = LENGTH.unpack_from
        try:
            while size - offset >= 4:
                (length,) = unpack(data, offset)
                if length == 0 or length > MAX_MESSAGE:
                    raise WireError(f"message length {length} out of range")
                end = offset + 4 + length
                if end > size:
                    break
                yield data[offset + 4], data[offset + 5 : end]
                offset = end
        finally:
            self._buffer = bytearray(data[offset:])
