"""H.264 picture size from a sequence parameter set carried in RTP (RFC 6184: a single NAL
unit, a STAP-A aggregate, or the first fragment of an FU-A).  The SFU learns each simulcast
layer's size this way without decoding.  Garbage gives None, never an exception."""

from __future__ import annotations

from collections.abc import Iterator

IDR = 5
SPS = 7
STAP_A = 24
FU_A = 28
HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


class _Bits:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise ValueError("truncated")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-golomb")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _parse_sps(rbsp: bytes) -> tuple[int, int] | None:
    reader = _Bits(rbsp)
    profile = reader.bits(8)
    reader.bits(16)  # constraint flags, level
    reader.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in HIGH_PROFILES:
        chroma_format = reader.ue()
        if chroma_format > 3:
            return None
        if chroma_format == 3:
            reader.bit()  # separate_colour_plane
        reader.ue()  # bit depth luma
        reader.ue()  # bit depth chroma
        reader.bit()  # qpprime_y_zero_transform_bypass
        if reader.bit():  # seq_scaling_matrix_present
            for index in range(8 if chroma_format != 3 else 12):
                if reader.bit():
                    size = 16 if index < 6 else 64
                    last = next_scale = 8
                    for _ in range(size):
                        if next_scale:
                            next_scale = (last + reader.se() + 256) % 256
                        last = next_scale or last
    reader.ue()  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()
    elif poc_type == 1:
        reader.bit()
        reader.se()
        reader.se()
        cycle = reader.ue()
        if cycle > 255:
            return None
        for _ in range(cycle):
            reader.se()
    elif poc_type != 2:
        return None
    reader.ue()  # max_num_ref_frames
    reader.bit()  # gaps_in_frame_num_allowed
    width_mbs = reader.ue() + 1
    height_units = reader.ue() + 1
    frame_mbs_only = reader.bit()
    if not frame_mbs_only:
        reader.bit()  # mb_adaptive_frame_field
    reader.bit()  # direct_8x8_inference
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_units * 16
    if reader.bit():  # frame_cropping
        left, right, top, bottom = reader.ue(), reader.ue(), reader.ue(), reader.ue()
        crop_x = 1 if chroma_format in (0, 3) else 2
        crop_y = (1 if chroma_format in (0, 3) else (2 if chroma_format == 1 else 1)) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    if not (0 < width <= 16384 and 0 < height <= 16384):
        return None
    return width, height


def nal_units(payload: bytes) -> Iterator[bytes]:
    """The NAL units whose start an RTP payload carries (RFC 6184): the payload itself (a single
    NAL unit), each unit of a STAP-A aggregate up to a malformed one, or the first fragment of an
    FU-A with the unit's own header put back; nothing for a later fragment or an empty payload."""
    if not payload:
        return
    kind = payload[0] & 0x1F
    if kind == STAP_A:
        offset = 1
        while offset + 2 < len(payload):
            size = int.from_bytes(payload[offset : offset + 2], "big")
            offset += 2
            if size == 0 or offset + size > len(payload):
                return
            yield payload[offset : offset + size]
            offset += size
    elif kind == FU_A:
        if len(payload) >= 2 and payload[1] & 0x80:  # S: the start of the fragmented unit
            yield bytes([(payload[0] & 0xE0) | (payload[1] & 0x1F)]) + payload[2:]
    else:
        yield payload


def _sps_nal(payload: bytes) -> bytes | None:
    return next((unit for unit in nal_units(payload) if unit[0] & 0x1F == SPS), None)


def sps_dimensions(payload: bytes) -> tuple[int, int] | None:
    nal = _sps_nal(payload)
    if nal is None or len(nal) < 4:
        return None
    try:
        return _parse_sps(_unescape(nal[1:]))
    except ValueError:
        return None
