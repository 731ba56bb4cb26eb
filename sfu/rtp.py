"""RTP at the byte level: sequence and timestamp unwrapping, header-extension blocks and
outgoing packets, RTX payloads.  Pure functions and small classes, no I/O."""

from __future__ import annotations

import struct
from collections.abc import Iterable

HEADER = struct.Struct("!BBHII")
ONE_BYTE_PROFILE = 0xBEDE
RTX_OSN = struct.Struct("!H")


def seq_delta(a: int, b: int) -> int:
    """Signed distance from 16-bit sequence number b to a, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


class Unwrapper:
    """Extends wrapping counters (16-bit sequence numbers, 32-bit timestamps) to unbounded
    integers, so that comparisons and arithmetic never see the wrap-around.  The first value
    is returned as is; later values land nearest the previous one."""

    __slots__ = ("_bits", "_half", "_mask", "_last")

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._mask = (1 << bits) - 1
        self._half = 1 << (bits - 1)
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        last = self._last
        if last is None:
            self._last = value
            return value
        delta = ((value - last + self._half) & self._mask) - self._half
        result = last + delta
        if delta > 0:
            self._last = result
        return result

    @property
    def highest(self) -> int | None:
        return self._last


def extension_block(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """An RFC 8285 one-byte-header extension block (ids 1..14, 1..16 bytes each), padded to
    a multiple of four bytes; empty when there are no elements."""
    body = bytearray()
    for ext_id, data in elements:
        if not 1 <= ext_id <= 14 or not 1 <= len(data) <= 16:
            raise ValueError(f"extension {ext_id} with {len(data)} bytes needs the two-byte form")
        body.append((ext_id << 4) | (len(data) - 1))
        body += data
    if not body:
        return b""
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", ONE_BYTE_PROFILE, len(body) // 4) + bytes(body)


def build_packet(
    marker: int, payload_type: int, sequence: int, timestamp: int, ssrc: int, extensions: bytes, payload: bytes
) -> bytes:
    """A complete RTP packet (no CSRCs, no padding)."""
    first = 0x90 if extensions else 0x80
    return (
        HEADER.pack(first, (marker << 7) | payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
        + extensions
        + payload
    )


def rtx_payload(original_sequence: int, payload: bytes) -> bytes:
    """RFC 4588: the original sequence number, then the original payload."""
    return RTX_OSN.pack(original_sequence & 0xFFFF) + payload


NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def ntp_now(unix_time: float) -> int:
    """The 64-bit NTP time of a Unix time: what aiortc's ``current_ntp_time`` gives for now,
    without its two datetimes per call (once per forwarded packet)."""
    seconds = int(unix_time)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | int((unix_time - seconds) * 4294967296.0)


def abs_send_time(ntp_time: int) -> bytes:
    """The 24-bit abs-send-time value (6.18 fixed point seconds) as three bytes."""
    return ((ntp_time >> 14) & 0x00FFFFFF).to_bytes(3, "big")


def audio_level(vad: bool, level: int) -> bytes:
    """RFC 6464 client-to-mixer audio level: voice activity bit and -dBov (0..127)."""
    return bytes([(0x80 if vad else 0) | (min(127, max(0, level)) & 0x7F)])
