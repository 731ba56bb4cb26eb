"""The VP8 RTP payload descriptor (RFC 7741): parsed once per packet at the up-track, and
rewritten per subscriber when picture IDs or TL0PICIDX must continue across a layer switch or a
dropped temporal layer.  Malformed payloads give None, never an exception."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Vp8Descriptor:
    size: int  # bytes of the payload descriptor
    start: bool  # S=1 and PartID=0: the first packet of a frame
    keyframe: bool  # start, and the VP8 payload header's P bit is 0
    picture_id: int | None
    picture_id_bits: int  # 0 (absent), 7 or 15
    picture_id_at: int  # offset of the picture ID field, -1 when absent
    tl0picidx: int | None
    tl0picidx_at: int
    tid: int | None
    layer_sync: bool
    keyidx: int | None
    width: int | None = None  # from a keyframe's header
    height: int | None = None


def parse_vp8(payload: bytes) -> Vp8Descriptor | None:
    size = len(payload)
    if size < 1:
        return None
    first = payload[0]
    start = bool(first & 0x10) and not first & 0x0F
    offset = 1
    picture_id = tl0 = tid = keyidx = None
    bits = 0
    picture_at = tl0_at = -1
    sync = False
    if first & 0x80:  # X
        if size < 2:
            return None
        ext = payload[1]
        offset = 2
        if ext & 0x80:  # I
            if size <= offset:
                return None
            picture_at = offset
            if payload[offset] & 0x80:  # M: 15 bits
                if size <= offset + 1:
                    return None
                picture_id = ((payload[offset] & 0x7F) << 8) | payload[offset + 1]
                bits = 15
                offset += 2
            else:
                picture_id = payload[offset] & 0x7F
                bits = 7
                offset += 1
        if ext & 0x40:  # L
            if size <= offset:
                return None
            tl0_at = offset
            tl0 = payload[offset]
            offset += 1
        if ext & 0x30:  # T or K
            if size <= offset:
                return None
            byte = payload[offset]
            if ext & 0x20:
                tid = byte >> 6
                sync = bool(byte & 0x20)
            if ext & 0x10:
                keyidx = byte & 0x1F
            offset += 1
    if size <= offset:
        return None
    keyframe = start and not payload[offset] & 0x01
    width = height = None
    if keyframe and size >= offset + 10 and payload[offset + 3 : offset + 6] == b"\x9d\x01\x2a":
        width = int.from_bytes(payload[offset + 6 : offset + 8], "little") & 0x3FFF
        height = int.from_bytes(payload[offset + 8 : offset + 10], "little") & 0x3FFF
    return Vp8Descriptor(offset, start, keyframe, picture_id, bits, picture_at, tl0, tl0_at, tid, sync, keyidx, width, height)


def rewrite_vp8(payload: bytes, descriptor: Vp8Descriptor, picture_id: int | None, tl0picidx: int | None) -> bytes:
    """A copy of ``payload`` with its picture ID (kept at the packet's own width) and TL0PICIDX
    replaced; fields given as None, or absent in the packet, stay as they are."""
    head = bytearray(payload[: descriptor.size])
    at = descriptor.picture_id_at
    if picture_id is not None and at >= 0:
        if descriptor.picture_id_bits == 15:
            value = picture_id & 0x7FFF
            head[at] = 0x80 | (value >> 8)
            head[at + 1] = value & 0xFF
        else:
            head[at] = picture_id & 0x7F
    if tl0picidx is not None and descriptor.tl0picidx_at >= 0:
        head[descriptor.tl0picidx_at] = tl0picidx & 0xFF
    return bytes(head) + payload[descriptor.size :]
