"""VP8 descriptors, H.264 picture sizes and active speakers, without sockets."""

from __future__ import annotations

import fractions
import random

import av
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sfu.h264 import sps_dimensions
from sfu.keyframe import vp8_keyframe_start
from sfu.speaker import ActiveSpeakerDetector
from sfu.vp8 import parse_vp8, rewrite_vp8

H264 = ("video/H264", {"packetization-mode": "1", "profile-level-id": "42e01f"})


def encode(mime: str, params: dict, width: int, height: int, frames: int = 3) -> list[list[bytes]]:
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96, parameters=params))
    out = []
    for i in range(frames):
        frame = av.VideoFrame(width=width, height=height, format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 40 + 7) % 256]) * plane.buffer_size)
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame)
        out.append(payloads)
    return out


@pytest.mark.parametrize("size", [(320, 180), (640, 360), (1280, 720)])
def test_vp8_descriptor_of_real_encoder_output(size: tuple[int, int]) -> None:
    frames = encode("video/VP8", {}, *size)
    first = parse_vp8(frames[0][0])
    assert first is not None and first.keyframe and first.start
    assert (first.width, first.height) == size
    assert first.picture_id_bits == 15
    pictures = [parse_vp8(payloads[0]).picture_id for payloads in frames]
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(pictures, pictures[1:], strict=False))
    later = parse_vp8(frames[2][0])
    assert later is not None and not later.keyframe and later.width is None
    for payloads in frames:
        for payload in payloads:
            assert parse_vp8(payload).keyframe == vp8_keyframe_start(payload)


def test_vp8_rewrite_changes_only_picture_id_and_tl0() -> None:
    # X=1, S=1; I, L, T present; 15-bit picture ID 0x7FFF, TL0PICIDX 255, TID 2 with Y
    payload = bytes([0x90, 0xE0, 0xFF, 0xFF, 0xFF, 0xA0, 0x00, 0x01, 0x02])
    descriptor = parse_vp8(payload)
    assert descriptor is not None
    assert (descriptor.picture_id, descriptor.tl0picidx, descriptor.tid, descriptor.layer_sync) == (0x7FFF, 255, 2, True)
    out = rewrite_vp8(payload, descriptor, 0x7FFF + 1, 256)
    again = parse_vp8(out)
    assert again.picture_id == 0 and again.tl0picidx == 0 and again.tid == 2  # both wrap
    assert out[descriptor.size:] == payload[descriptor.size:] and out[:2] == payload[:2] and out[5] == payload[5]
    seven = bytes([0x90, 0x80, 0x7F, 0x00])  # 7-bit picture ID
    d7 = parse_vp8(seven)
    assert d7.picture_id_bits == 7 and parse_vp8(rewrite_vp8(seven, d7, 128, None)).picture_id == 0
    assert rewrite_vp8(payload, descriptor, None, None) == payload


def test_vp8_and_h264_parsers_never_raise_on_garbage() -> None:
    rng = random.Random(7)
    good = encode("video/VP8", {}, 320, 180, 1)[0][0]
    for length in range(len(good[:40])):
        parse_vp8(good[:length])
    for _ in range(5000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        parse_vp8(data)
        sps_dimensions(data)
        sps_dimensions(bytes([0x67]) + data)
        sps_dimensions(bytes([0x7C, 0x87]) + data)


@pytest.mark.parametrize("size", [(320, 180), (640, 360), (1280, 720), (1278, 718)])
def test_h264_size_from_the_sps_of_real_encoder_output(size: tuple[int, int]) -> None:
    frames = encode(*H264, *size)
    found = {sps_dimensions(payload) for payload in frames[0]} - {None}
    assert found == {size}
    assert all(sps_dimensions(payload) is None for payload in frames[2])


def feed(detector: ActiveSpeakerDetector, levels: dict[str, int], start: float, seconds: float) -> float:
    now = start
    for _ in range(int(seconds * 50)):
        for identity, level in levels.items():
            detector.add_level(identity, level, now)
        now += 0.02
    return now


def test_active_speaker_alternation_cough_and_rate_limit() -> None:
    detector = ActiveSpeakerDetector()
    changes = []
    now = 0.0
    for levels in ({"ann": 20, "bob": 127}, {"ann": 127, "bob": 25}):
        for _ in range(12):
            now = feed(detector, levels, now, 0.25)
            change = detector.update(now)
            if change is not None:
                changes.append((now, change.dominant))
    assert [who for _, who in changes if who] [:1] == ["ann"] and changes[-1][1] == "bob"
    assert all(b[0] - a[0] >= 1.0 for a, b in zip(changes, changes[1:], strict=False))
    assert detector.recent(2) == ["bob", "ann"]
    # A single loud packet from someone silent does not take the floor.
    detector.add_level("cat", 0, now)
    now = feed(detector, {"bob": 25, "cat": 127}, now, 1.5)
    detector.update(now)
    assert detector.dominant == "bob"
    # Silence: nobody speaks, the last speaker stays the most recent.
    now = feed(detector, {"bob": 127, "cat": 127}, now, 3.0)
    change = detector.update(now)
    assert detector.speakers(now) == [] and detector.dominant == "bob"
    assert change is None or change.speakers == []
    detector.remove("bob")
    assert detector.dominant == "ann" and "bob" not in detector.recent(5)


def test_active_speaker_buffers_stay_bounded() -> None:
    detector = ActiveSpeakerDetector()
    now = 0.0
    for _ in range(10):
        now = feed(detector, {f"p{i}": 30 + i for i in range(5)}, now, 60.0)
        detector.update(now)
    assert max(len(samples) for samples in detector._levels.values()) <= 51
