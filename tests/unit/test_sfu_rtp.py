"""Pure media-path logic: unwrapping, packets, keyframes, cache, NACK bookkeeping, munging."""

from __future__ import annotations

import random

import pytest
from aiortc.rtp import RtpPacket

from sfu.keyframe import h264_keyframe, is_keyframe, vp8_keyframe_start
from sfu.munger import Munger
from sfu.nack import LossTracker, RetransmitFilter
from sfu.packet_cache import CachedPacket, PacketCache
from sfu.rtp import Unwrapper, build_packet, extension_block, rtx_payload, seq_delta


def test_unwrapper_crosses_16_and_32_bit_boundaries() -> None:
    seq = Unwrapper(16)
    values = [65533, 65534, 65535, 0, 1, 65535, 2, 3]
    assert [seq.unwrap(v) for v in values] == [65533, 65534, 65535, 65536, 65537, 65535, 65538, 65539]
    ts = Unwrapper(32)
    assert [ts.unwrap(v) for v in (0xFFFFFF00, 0x00000100, 0xFFFFFFF0)] == [0xFFFFFF00, 0x100000100, 0xFFFFFFF0]
    assert seq_delta(1, 65535) == 2 and seq_delta(65535, 1) == -2


def test_built_packets_parse_back_with_aiortc() -> None:
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap

    ext_map = HeaderExtensionsMap()
    params = RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    ])
    ext_map.configure(params)
    block = extension_block([(1, b"7"), (3, b"\x01\x02\x03")])
    data = build_packet(1, 96, 70000, 2**32 + 5, 0xDEADBEEF, block, b"payload")
    packet = RtpPacket.parse(data, ext_map)
    assert (packet.marker, packet.payload_type, packet.sequence_number, packet.timestamp, packet.ssrc) == (1, 96, 70000 & 0xFFFF, 5, 0xDEADBEEF)
    assert packet.extensions.mid == "7" and packet.extensions.abs_send_time == 0x010203
    assert packet.payload == b"payload"
    plain = RtpPacket.parse(build_packet(0, 111, 1, 2, 3, b"", b"x"))
    assert plain.payload == b"x" and plain.marker == 0
    assert rtx_payload(0x1_0005, b"abc") == b"\x00\x05abc"
    with pytest.raises(ValueError):
        extension_block([(15, b"x")])


def test_a_vp8_keyframe_starts_at_partition_0_with_a_clear_p_bit_and_garbage_is_none() -> None:
    # descriptor with X, I (15-bit picture id), then the VP8 payload header (P bit = 0 => key)
    key = bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A])
    delta = bytes([0x90, 0x80, 0x81, 0x24, 0x11, 0x02, 0x00])
    continuation = bytes([0x80, 0x80, 0x81, 0x23, 0x10])
    assert vp8_keyframe_start(key) and not vp8_keyframe_start(delta) and not vp8_keyframe_start(continuation)
    assert vp8_keyframe_start(bytes([0x10, 0x00])) and not vp8_keyframe_start(bytes([0x10, 0x01]))
    for broken in (b"", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\x90\xff\x81\x23\x00"):
        assert vp8_keyframe_start(broken) is False


def test_an_h264_idr_or_sps_alone_aggregated_or_in_a_first_fragment_is_a_keyframe() -> None:
    idr = bytes([0x65, 0x88])
    non_idr = bytes([0x41, 0x9A])
    stap_a = bytes([0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE])
    fu_start_idr = bytes([0x7C, 0x85, 0x00])
    fu_middle_idr = bytes([0x7C, 0x05, 0x00])
    assert h264_keyframe(idr) and h264_keyframe(stap_a) and h264_keyframe(fu_start_idr)
    assert not h264_keyframe(non_idr) and not h264_keyframe(fu_middle_idr)
    for broken in (b"", b"\x18", b"\x18\x00\x09\x67", b"\x7c"):
        assert h264_keyframe(broken) is False
    assert is_keyframe("opus", b"") and is_keyframe("H264", idr) and not is_keyframe("VP8", b"\x00")


def test_real_encoder_output_is_classified(tmp_path) -> None:
    """Packets from aiortc's own VP8 and H.264 encoders: the first packet of the first frame is
    a keyframe start, later frames are not."""
    import fractions

    import av
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    for name, mime, params in (("vp8", "video/VP8", {}), ("h264", "video/H264", {"packetization-mode": "1", "profile-level-id": "42e01f"})):
        encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96, parameters=params))
        frames = []
        for i in range(3):
            frame = av.VideoFrame(width=320, height=240, format="yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 40 % 256]) * plane.buffer_size)
            frame.pts = i * 3000
            frame.time_base = fractions.Fraction(1, 90000)
            payloads, _ = encoder.encode(frame)
            frames.append(payloads)
        assert is_keyframe(name, frames[0][0])
        assert not any(is_keyframe(name, p) for p in frames[2])


def test_packet_cache_keeps_the_latest_capacity_packets() -> None:
    cache = PacketCache(capacity=4)
    for seq in range(10):
        cache.add(CachedPacket(seq, seq * 10, 0, bytes([seq]), False, 0.0))
    assert cache.get(9).payload == b"\x09" and cache.get(6).timestamp == 60
    assert cache.get(5) is None and cache.get(10) is None


def test_loss_tracker_requests_gaps_retries_and_gives_up() -> None:
    tracker = LossTracker(max_age=1.0, max_requests=3)
    for seq in (100, 101, 104, 105):
        tracker.on_packet(seq, now=0.0)
    assert tracker.missing == [102, 103]
    assert tracker.due(now=0.0, rtt=0.05) == [102, 103]
    assert tracker.due(now=0.01, rtt=0.05) == []  # not again within a round trip
    tracker.on_packet(103, now=0.03)  # the retransmission arrived
    assert tracker.due(now=0.06, rtt=0.05) == [102]
    assert tracker.due(now=0.12, rtt=0.05) == [102]
    assert tracker.due(now=0.18, rtt=0.05) == []  # three requests: abandoned
    assert tracker.missing == [] and tracker.recovered == 1 and tracker.abandoned == 1
    tracker.on_packet(106 + 1000, now=1.0)  # a huge jump keeps only the newest max_missing
    assert len(tracker.missing) == tracker.max_missing


def test_retransmit_filter_suppresses_repeats_within_the_window() -> None:
    gate = RetransmitFilter()
    assert gate.allow(7, now=0.0, rtt=0.02)
    assert not gate.allow(7, now=0.03, rtt=0.02)
    assert gate.allow(7, now=0.041, rtt=0.02)
    assert gate.allow(8, now=0.041, rtt=None)
    assert not gate.allow(8, now=0.14, rtt=None) and gate.allow(8, now=0.142, rtt=None)


def test_munger_offsets_wraps_and_maps_nacks_back() -> None:
    munger = Munger(random.Random(1))
    assert munger.map(10, 1000) is None
    munger.start(65530, 2**32 - 100)
    outs = [munger.map(s, 2**32 - 100 + 3000 * (s - 65530)) for s in range(65530, 65540)]
    seqs = [o[0] for o in outs]
    assert all(((b - a) & 0xFFFF) == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert all(((outs[i + 1][1] - outs[i][1]) & 0xFFFFFFFF) == 3000 for i in range(len(outs) - 1))
    assert munger.map(65529, 0) is None  # from before the start point
    for s, (out_seq, _) in zip(range(65530, 65540), outs, strict=True):
        assert munger.unmap(out_seq) == (0, s)
    # A restart (layer switch) continues the output without a gap.
    last_seq, last_ts = outs[-1]
    munger.start(500_000, 7_000_000, ts_gap=3000)
    seq, ts = munger.map(500_000, 7_000_000)
    assert seq == (last_seq + 1) & 0xFFFF and ts == (last_ts + 3000) & 0xFFFFFFFF
    assert munger.unmap(seq) == (0, 500_000)
    assert munger.unmap(last_seq) == (0, 65539)  # sent before the restart: still maps back
    assert munger.unmap((seq + 2) & 0xFFFF) is None  # not sent yet: no receiver can have lost it


async def test_keyframe_requests_upstream_are_throttled() -> None:
    from prometheus_client import CollectorRegistry

    from sfu.forwarding import KEYFRAME_REQUEST_INTERVAL, UpTrack
    from sfu.metrics import SfuMetrics

    now = [100.0]
    up = UpTrack("t1", "alice", "video", "camera", SfuMetrics(CollectorRegistry()), clock=lambda: now[0])
    sent: list[int] = []

    class Tap:
        async def send_pli(self, ssrc: int) -> None:
            sent.append(ssrc)

    up.tap = Tap()  # type: ignore[assignment]
    up.layers[0].ssrc = 1234
    for step in (0.0, 0.1, 0.2, KEYFRAME_REQUEST_INTERVAL - 0.25, 0.3, 0.0):
        now[0] += step
        await up.request_keyframe()
    # Requests at 100.0, 100.1, 100.3, 100.55, 100.85, 100.85: only 100.0 and 100.55 go upstream.
    assert sent == [1234, 1234]
    assert up.metrics.plis_sent._value.get() == 2


@pytest.mark.parametrize("mid, abs_id, level_id", [((1, b"0"), 3, 5), ((4, b"12"), None, 2), (None, 3, None), (None, None, None)])
def test_down_track_header_template_matches_a_packet_built_field_by_field(mid, abs_id, level_id) -> None:
    import types

    from sfu.forwarding import DownTrack
    from sfu.rtp import abs_send_time, audio_level

    track = types.SimpleNamespace(_mid_element=mid, _abs_id=abs_id, _level_id=level_id, payload_type=111, _ssrc=0xDEADBEEF)
    track._plain = DownTrack._template(track, with_level=False)
    track._levelled = DownTrack._template(track, with_level=True)
    ntp = 0x1234_5678_9ABC_DEF0
    for level in (None, (True, 42), (False, 200)):
        packet = DownTrack._header(track, 1, 70000, 2**33 + 5, level, abs_send_time(ntp), b"payload")
        elements = [e for e in (mid, (abs_id, abs_send_time(ntp)) if abs_id else None) if e]
        if level_id and level is not None:
            elements.append((level_id, audio_level(*level)))
        expected = build_packet(1, 111, 70000, 2**33 + 5, 0xDEADBEEF, extension_block(elements), b"payload")
        assert packet == expected
        assert RtpPacket.parse(expected).sequence_number == 70000 & 0xFFFF


def test_loss_tracker_says_when_a_gap_opens_and_while_packets_are_missing() -> None:
    tracker = LossTracker()
    assert [tracker.on_packet(seq, now=0.0) for seq in (10, 11, 12)] == [False, False, False]
    assert not tracker.pending
    assert tracker.on_packet(15, now=0.0) is True and tracker.pending  # 13 and 14 are missing
    assert tracker.on_packet(16, now=0.0) is False  # no new gap
    assert tracker.on_packet(13, now=0.01) is False and tracker.pending
    assert tracker.on_packet(14, now=0.01) is False and not tracker.pending  # both came after all
    assert tracker.on_packet(12, now=0.02) is False and not tracker.pending  # a late duplicate


def test_ntp_now_is_aiortcs_ntp_time_for_the_same_instant() -> None:
    import datetime

    from aiortc.clock import datetime_to_ntp

    from sfu.rtp import ntp_now

    for unix in (0.0, 1_700_000_000.25, 1_796_000_000.999999, 2_000_000_000.5):
        expected = datetime_to_ntp(datetime.datetime.fromtimestamp(unix, datetime.timezone.utc))
        assert abs(ntp_now(unix) - expected) < 2**32 // 100_000  # within 10 µs (float rounding)
        assert ntp_now(unix) >> 32 == expected >> 32
