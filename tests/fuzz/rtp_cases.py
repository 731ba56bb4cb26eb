"""Decrypted RTP and RTCP as a publisher (or a subscriber) could send them: headers with any CSRC
count, one- and two-byte header extensions carrying the negotiated MID, RID, repaired RID,
abs-send-time and audio level (or junk under those ids), padding right and wrong; payloads from
aiortc's own VP8, H.264 and Opus encoders (mutated or not), built VP8 descriptors, RTX wrappers and
random bytes; RTCP compound packets of every type with right and wrong lengths and counts.

Specs refer to what negotiation settled (SSRCs, payload types, extension ids) by index into a
``Profile`` the harness reads from the real SDP, so that the same strategy hits the real routes."""

from __future__ import annotations

import fractions
import struct
from dataclasses import dataclass, field
from functools import cache

from hypothesis import strategies as st

from tests.fuzz.turn_cases import either


@dataclass
class Profile:
    """What the negotiation settled, read from the SDP."""

    ssrcs: list[int] = field(default_factory=list)  # the publisher's declared SSRCs
    payload_types: list[int] = field(default_factory=list)  # negotiated on the publisher connection
    extensions: dict[str, int] = field(default_factory=dict)  # name -> id
    mids: list[str] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    feedback_ssrcs: list[int] = field(default_factory=list)  # the SFU's SSRCs towards the subscriber
    streams: dict[int, tuple[int, int]] = field(default_factory=dict)  # SSRC -> next (sequence, timestamp)

    def next_in(self, ssrc: int) -> tuple[int, int]:
        """The next sequence number and timestamp of a well-behaved stream on ``ssrc``."""
        sequence, timestamp = self.streams.get(ssrc, (ssrc & 0xFFFF, ssrc >> 1))
        self.streams[ssrc] = ((sequence + 1) & 0xFFFF, (timestamp + 3000) & 0xFFFFFFFF)
        return sequence, timestamp


@dataclass(frozen=True)
class Ref:
    """The n-th known value (modulo how many there are), or ``fallback`` if there are none."""

    index: int
    fallback: int = 0

    def pick(self, values: list[int]) -> int:
        return values[self.index % len(values)] if values else self.fallback


@dataclass(frozen=True)
class Ext:
    kind: str  # mid, rid, rrid, abs, level, other
    value: bytes
    other_id: int = 0


@dataclass(frozen=True)
class RtpSpec:
    ssrc: Ref | int
    payload_type: Ref | int
    sequence: int | None  # None: the stream's next (and its timestamp too)
    timestamp: int
    marker: bool
    csrcs: tuple[int, ...]
    extensions: tuple[Ext, ...] | None
    two_byte: bool
    payload: bytes
    padding: int | None  # padding bytes (the last one says how many, possibly wrongly)
    padding_claim: int
    rtx: bool  # wrap the payload as RTX: the original sequence number first
    truncate: int | None

    def encode(self, profile: Profile) -> bytes:
        ssrc = self.ssrc.pick(profile.ssrcs) if isinstance(self.ssrc, Ref) else self.ssrc
        pt = self.payload_type.pick(profile.payload_types) if isinstance(self.payload_type, Ref) else self.payload_type
        payload = struct.pack("!H", self.timestamp & 0xFFFF) + self.payload if self.rtx else self.payload
        ext_block = _extension_block(self.extensions, self.two_byte, profile) if self.extensions is not None else b""
        first = 0x80 | (0x20 if self.padding is not None else 0) | (0x10 if self.extensions is not None else 0) | len(self.csrcs)
        sequence, timestamp = profile.next_in(ssrc) if self.sequence is None else (self.sequence, self.timestamp)
        header = struct.pack("!BBHII", first, (self.marker << 7) | (pt & 0x7F), sequence, timestamp, ssrc)
        data = header + b"".join(struct.pack("!I", c) for c in self.csrcs) + ext_block + payload
        if self.padding is not None:
            data += bytes(self.padding) + bytes([self.padding_claim & 0xFF])
        return data[: self.truncate] if self.truncate is not None else data


def _element_value(ext: Ext, profile: Profile) -> tuple[int, bytes]:
    ids = profile.extensions
    if ext.kind == "other":
        return ext.other_id, ext.value
    ident = ids.get(ext.kind, ext.other_id)
    if ext.kind == "mid" and ext.value == b"$" and profile.mids:
        return ident, profile.mids[ext.other_id % len(profile.mids)].encode()
    if ext.kind in ("rid", "rrid") and ext.value == b"$" and profile.rids:
        return ident, profile.rids[ext.other_id % len(profile.rids)].encode()
    return ident, ext.value


def _extension_block(extensions: tuple[Ext, ...], two_byte: bool, profile: Profile) -> bytes:
    body = bytearray()
    for ext in extensions:
        ident, value = _element_value(ext, profile)
        if two_byte:
            body += bytes([ident & 0xFF, len(value) & 0xFF]) + value
        else:
            body += bytes([((ident & 0x0F) << 4) | ((max(len(value), 1) - 1) & 0x0F)]) + value
    body += bytes(-len(body) & 3)
    profile_id = 0x1000 if two_byte else 0xBEDE
    return struct.pack("!HH", profile_id, len(body) // 4) + bytes(body)


# Payloads ---------------------------------------------------------------------------------------


@cache
def corpus() -> dict[str, list[bytes]]:
    """Packets from aiortc's own encoders: VP8 (a keyframe and deltas), H.264 (SPS/PPS in a
    STAP-A, FU-A fragments) and Opus."""
    from aiortc.codecs.h264 import H264Encoder

    from recorder.synthetic import camera_frame, encode_clip

    clip = encode_clip(seconds=0.3, width=320, height=180, fps=10)
    encoder = H264Encoder()
    h264 = []
    for index in range(3):
        frame = camera_frame(index, 320, 180, 10)
        frame.pts = index * 9000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=index == 0)
        h264 += payloads[:6]
    vp8 = [payload for _, payloads, _ in clip.video for payload in payloads[:6]]
    return {"vp8": vp8, "h264": h264, "opus": clip.audio[:8]}


def _from_corpus(kind: str, at: int, value: int, cut: int | None) -> bytes:
    items = corpus()[kind]
    payload = bytearray(items[at % len(items)])
    if value >= 0 and payload:
        payload[(at // len(items)) % len(payload)] = value
    return bytes(payload[:cut] if cut is not None else payload)


def _vp8(extended: bool, start: bool, part: int, picture: int | None, wide: bool, tl0: int | None, tid: int | None,
         sync: bool, keyidx: int | None, keyframe: bool, size: tuple[int, int] | None, body: bytes) -> bytes:
    """A VP8 payload descriptor (RFC 7741) from its fields, then a payload header."""
    out = bytearray([(0x80 if extended else 0) | (0x10 if start else 0) | (part & 0x0F)])
    if extended:
        out.append((0x80 if picture is not None else 0) | (0x40 if tl0 is not None else 0)
                   | (0x20 if tid is not None else 0) | (0x10 if keyidx is not None else 0))
        if picture is not None:
            out += struct.pack("!H", 0x8000 | (picture & 0x7FFF)) if wide else bytes([picture & 0x7F])
        if tl0 is not None:
            out.append(tl0 & 0xFF)
        if tid is not None or keyidx is not None:
            out.append(((tid or 0) << 6) | (0x20 if sync else 0) | ((keyidx or 0) & 0x1F))
    out.append(0x00 if keyframe else 0x01)
    if size is not None:
        out += b"\x00\x00\x9d\x01\x2a" + struct.pack("<HH", size[0], size[1])
    return bytes(out) + body


vp8_built = st.builds(
    _vp8, st.booleans(), st.booleans(), st.integers(0, 15), st.one_of(st.none(), st.integers(0, 0x7FFF)), st.booleans(),
    st.one_of(st.none(), st.integers(0, 255)), st.one_of(st.none(), st.integers(0, 3)), st.booleans(),
    st.one_of(st.none(), st.integers(0, 31)), st.booleans(),
    st.one_of(st.none(), st.sampled_from([(320, 180), (640, 360), (1280, 720), (0, 0), (16383, 16383)])),
    st.binary(max_size=24),
)
payloads = st.one_of(
    st.builds(_from_corpus, st.sampled_from(["vp8", "h264", "opus"]), st.integers(0, 10_000),
              st.one_of(st.just(-1), st.integers(0, 255)), st.one_of(st.none(), st.integers(0, 40))),
    vp8_built,
    st.binary(max_size=40),
)

extension_values = st.one_of(st.just(b"$"), st.binary(max_size=18))
extensions = st.lists(
    st.builds(Ext, st.sampled_from(["mid", "rid", "rrid", "abs", "level", "other"]), extension_values, st.integers(0, 255)),
    max_size=5,
).map(tuple)


def refs() -> st.SearchStrategy[Ref]:
    return st.builds(Ref, st.integers(0, 63))


wild_rtp = st.builds(
    RtpSpec,
    either(refs(), st.integers(0, 2**32 - 1)),
    either(refs(), st.integers(0, 127)),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    either(extensions, st.none()),
    st.booleans(),
    payloads,
    st.one_of(st.none(), st.integers(0, 12)),
    st.integers(0, 255),
    st.booleans(),
    st.one_of(st.none(), st.none(), st.integers(0, 60)),
)
# What a working publisher sends: known SSRCs and payload types, consecutive numbers, the MID and
# RID the SFU routes by, codec payloads; still with odd extensions, CSRCs, padding or RTX.
_timing = st.sampled_from([Ext("abs", b"\x00\x10\x01"), Ext("level", b"\x7f"), Ext("level", b"\x85")])
_routed = st.builds(lambda mid, rid, more: (Ext("mid", b"$", mid), Ext("rid", b"$", rid), *more),
                    st.integers(0, 2), st.integers(0, 2), st.lists(_timing, max_size=2))
friendly_rtp = st.builds(
    RtpSpec, refs(), refs(), st.none(), st.just(0), st.booleans(), st.lists(st.integers(0, 2**32 - 1), max_size=2).map(tuple),
    either(_routed, extensions), st.sampled_from([False, False, True]), either(payloads, vp8_built),
    st.sampled_from([None, None, None, 0, 3]), st.sampled_from([4, 255]), st.sampled_from([False, False, False, True]), st.none(),
)
rtp_specs = either(friendly_rtp, wild_rtp)


# RTCP -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RtcpPart:
    packet_type: int  # 200 SR ... 207 XR, or anything
    count: int  # report count, or feedback format
    sender: Ref | int
    media: Ref | int  # the SSRC a feedback or report block is about
    body: bytes  # what follows the SSRCs (built per type, or random)
    length: int | None  # the length field; None: right
    padding: bool
    version: int = 2

    def encode(self, profile: Profile, ssrcs: list[int]) -> bytes:
        sender = self.sender.pick(ssrcs) if isinstance(self.sender, Ref) else self.sender
        media = self.media.pick(ssrcs) if isinstance(self.media, Ref) else self.media
        if self.packet_type in (205, 206):
            content = struct.pack("!II", sender, media) + self.body
        elif self.packet_type in (200, 201):
            blocks = self.body if self.packet_type == 201 else self.body[:20] + self._blocks(media)
            content = struct.pack("!I", sender) + blocks
        else:
            content = struct.pack("!I", sender) + self.body
        content += bytes(-len(content) & 3)
        length = len(content) // 4 if self.length is None else self.length
        first = ((self.version & 3) << 6) | (0x20 if self.padding else 0) | (self.count & 0x1F)
        return struct.pack("!BBH", first, self.packet_type & 0xFF, length & 0xFFFF) + content

    def _blocks(self, media: int) -> bytes:
        return b"".join(struct.pack("!IB3sIIII", media, n * 40, b"\x00\x00\x05", 1000 + n, 0, 0, 0) for n in range(self.count & 3))


def _nack(pairs: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("!HH", pid, blp) for pid, blp in pairs)


def _remb(exp: int, mantissa: int, ssrcs: list[int]) -> bytes:
    return b"REMB" + struct.pack("!BBH", len(ssrcs), (exp << 2) | (mantissa >> 16), mantissa & 0xFFFF) + b"".join(struct.pack("!I", s) for s in ssrcs)


def _sr_info(ntp: int, rtp: int) -> bytes:
    return struct.pack("!QIII", ntp, rtp, 10, 1000)


_bodies = {
    200: st.builds(_sr_info, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
    201: st.binary(max_size=48),
    205: st.builds(_nack, st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), max_size=6)),
    206: st.one_of(st.just(b""), st.builds(_remb, st.integers(0, 63), st.integers(0, 0x3FFFF), st.lists(st.integers(0, 2**32 - 1), max_size=3)),
                   st.builds(lambda s, n: struct.pack("!IB3s", s, n, b"\x00\x00\x00"), st.integers(0, 2**32 - 1), st.integers(0, 255))),
}
_formats = {205: st.sampled_from([1, 15, 3]), 206: st.sampled_from([1, 4, 15, 2])}


def _part(packet_type: int) -> st.SearchStrategy[RtcpPart]:
    return st.builds(
        RtcpPart, st.just(packet_type), _formats.get(packet_type, st.integers(0, 31)), either(refs(), st.integers(0, 2**32 - 1)),
        either(refs(), st.integers(0, 2**32 - 1)), either(_bodies.get(packet_type, st.binary(max_size=32)), st.binary(max_size=32)),
        st.one_of(st.none(), st.none(), st.integers(0, 0xFFFF)), st.booleans(), st.sampled_from([2, 2, 2, 1]),
    )


rtcp_parts = st.one_of(*(_part(t) for t in range(200, 208)), st.builds(
    RtcpPart, st.integers(0, 255), st.integers(0, 31), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=24),
    st.none(), st.booleans(),
))


@dataclass(frozen=True)
class RtcpSpec:
    parts: tuple[RtcpPart, ...]
    to_subscriber_side: bool  # feedback from a subscriber, or reports from the publisher
    truncate: int | None

    def encode(self, profile: Profile) -> bytes:
        ssrcs = profile.feedback_ssrcs if self.to_subscriber_side else profile.ssrcs
        data = b"".join(part.encode(profile, ssrcs) for part in self.parts)
        return data[: self.truncate] if self.truncate is not None else data


rtcp_specs = st.builds(RtcpSpec, st.lists(rtcp_parts, min_size=1, max_size=4).map(tuple), st.booleans(),
                       st.one_of(st.none(), st.none(), st.none(), st.integers(0, 80)))

# One case: a few packets in a row (so that keyframes, layer switches and NACKs follow each other).
packet_runs = st.lists(either(rtp_specs, rtcp_specs), min_size=1, max_size=8)
