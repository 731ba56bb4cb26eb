"""Keyframe detection on RTP payloads, per codec (RFC 7741 for VP8, RFC 6184 for H.264).

Each function answers for one packet: does it start (or, for H.264, carry) a keyframe, so that
a new subscriber can begin there.  Malformed payloads answer False, never raise."""

from __future__ import annotations

H264_IDR = 5
H264_SPS = 7
H264_STAP_A = 24
H264_FU_A = 28


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
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (H264_IDR, H264_SPS):
        return True
    if nal_type == H264_STAP_A:
        offset = 1
        while offset + 2 < len(payload):
            size = int.from_bytes(payload[offset : offset + 2], "big")
            offset += 2
            if size == 0 or offset + size > len(payload):
                return False
            if payload[offset] & 0x1F in (H264_IDR, H264_SPS):
                return True
            offset += size
        return False
    if nal_type == H264_FU_A:
        if len(payload) < 2:
            return False
        header = payload[1]
        return bool(header & 0x80) and header & 0x1F in (H264_IDR, H264_SPS)
    return False


def is_keyframe(codec: str, payload: bytes) -> bool:
    """Dispatch by codec name (case-insensitive); audio codecs have no keyframes to wait for."""
    name = codec.lower()
    if name == "vp8":
        return vp8_keyframe_start(payload)
    if name == "h264":
        return h264_keyframe(payload)
    return True
