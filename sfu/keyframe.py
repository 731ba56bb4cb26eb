"""Keyframe detection on RTP payloads, per codec (RFC 7741 for VP8, RFC 6184 for H.264).

Each function answers for one packet: does it start (or, for H.264, carry) a keyframe, so that
a new subscriber can begin there.  Malformed payloads answer False, never raise."""

from __future__ import annotations

from sfu.h264 import IDR, SPS, nal_units


def vp8_keyframe_start(payload: bytes) -> bool:
    """True for the first packet of a VP8 keyframe: S=1, partition 0, and P=0 in the VP8
    payload header that follows the payload descriptor."""
    size = len(payload)
    if size < 1:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x0F:  # S bit, PartID
        return False
    offset = 1
    if first & 0x80:  # X: extension byte follows
        if size < 2:
            return False
        ext = payload[1]
        offset = 2
        if ext & 0x80:  # I: picture ID, 7 or 15 bits
            if size <= offset:
                return False
            offset += 2 if payload[offset] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            offset += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX byte
            offset += 1
    if size <= offset:
        return False
    return not payload[offset] & 0x01  # P bit clear: keyframe


def h264_keyframe(payload: bytes) -> bool:
    """True when the packet carries an IDR slice start or an SPS: single NAL units, STAP-A
    aggregates and the first fragment of an FU-A."""
    return any(unit[0] & 0x1F in (IDR, SPS) for unit in nal_units(payload))


def is_keyframe(codec: str, payload: bytes) -> bool:
    """Dispatch by codec name (case-insensitive); audio codecs have no keyframes to wait for."""
    name = codec.lower()
    if name == "vp8":
        return vp8_keyframe_start(payload)
    if name == "h264":
        return h264_keyframe(payload)
    return True
