"""The load tester's pure parts: receive-side books, metric arithmetic, the quality bar, the
scenario table, and the replayed media (with the clock passed in)."""

from __future__ import annotations

import asyncio
import math
import struct

import pytest

from clients.loadtest.cli import table
from clients.loadtest.runner import QualityBar
from clients.loadtest.scenarios import SCENARIOS, SIMULCAST_LAYERS, scenario
from clients.loadtest.stats import RtpCounter, histogram_quantile, parse_metrics, percentile
from clients.sdk.replay import ReplaySimulcast, ReplayTrack, encoded_audio, encoded_video
from tests.clock import FakeClock

VIDEO_PT, RTX_PT, AUDIO_PT = 97, 98, 111


def rtp(seq: int, pt: int = VIDEO_PT, ssrc: int = 1000, marker: bool = False, payload: bytes = b"x" * 20) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, 0, ssrc) + payload


def counter() -> RtpCounter:
    books = RtpCounter(clock=lambda: 0.0)
    books.kinds = {VIDEO_PT: ("video", False), RTX_PT: ("video", True), AUDIO_PT: ("audio", False)}
    return books


def test_counter_counts_loss_across_the_sequence_wrap() -> None:
    books = counter()
    for seq in [65530, 65531, 65533, 65535, 0, 1, 4]:  # 65532, 65534, 2, 3 missing
        books.add(rtp(seq), now=0.0)
    totals = books.totals()
    assert totals["packets"] == 7
    assert totals["expected"] == 11
    assert totals["lost"] == 4


def test_counter_late_and_duplicate_packets_do_not_count_as_loss() -> None:
    books = counter()
    for seq in [10, 12, 11, 12, 9]:  # 11 late, 12 twice, 9 from before the first
        books.add(rtp(seq), now=0.0)
    totals = books.totals()
    assert totals["expected"] == 4  # 9..12
    assert totals["lost"] == 0


def test_counter_frames_freezes_and_frame_rate_from_marker_bits() -> None:
    books = counter()
    times = [0.0, 0.1, 0.2, 0.3, 1.0, 1.1]  # one wait of 0.7 s
    for seq, at in enumerate(times):
        books.add(rtp(2 * seq), now=at)
        books.add(rtp(2 * seq + 1, marker=True), now=at)
    (video,) = books.media("video")
    assert video.frames == 6
    assert video.freezes == 1
    assert video.longest_gap == pytest.approx(0.7)
    assert video.fps == pytest.approx(5 / 1.1)
    assert books.totals()["longest_gap_ms"] == 700.0


def test_counter_keeps_retransmissions_and_audio_apart_and_rejects_junk() -> None:
    books = counter()
    books.add(rtp(1, marker=True), now=0.0)
    books.add(rtp(7, pt=RTX_PT, ssrc=2000, marker=True), now=0.0)
    books.add(rtp(5, pt=AUDIO_PT, ssrc=3000), now=0.0)
    books.add(rtp(6, pt=AUDIO_PT, ssrc=3000), now=0.02)
    books.add(b"\x80\x60", now=0.0)  # too short
    books.add(b"\x00" * 20, now=0.0)  # not RTP version 2
    totals = books.totals()
    assert totals["packets"] == 3  # the retransmission is not a media packet
    assert totals["retransmissions"] == 1
    assert (totals["video_streams"], totals["audio_streams"]) == (1, 1)
    assert totals["video_frames"] == 1
    assert totals["malformed"] == 2
    assert books.first_packet_at == 0.0


def test_histogram_quantile_interpolates_within_the_bucket_between_scrapes() -> None:
    before = [(0.001, 10.0), (0.005, 10.0), (0.01, 10.0), (math.inf, 10.0)]
    after = [(0.001, 10.0), (0.005, 60.0), (0.01, 110.0), (math.inf, 110.0)]  # 50 in each of two buckets
    assert histogram_quantile(0.5, before, after) == pytest.approx(0.005)
    assert histogram_quantile(0.25, before, after) == pytest.approx(0.003)
    assert histogram_quantile(0.99, before, after) == pytest.approx(0.005 + 0.005 * 0.98)
    assert histogram_quantile(0.5, after, after) is None  # nothing observed in between
    overflow = [(0.001, 0.0), (math.inf, 5.0)]
    assert histogram_quantile(0.5, [], overflow) == 0.001  # past the last bound: that bound


def test_parse_metrics_sums_labelled_samples_and_histogram_buckets() -> None:
    text = "\n".join([
        "# TYPE videoconf_sfu_packets_forwarded counter",
        'videoconf_sfu_packets_forwarded_total{kind="audio"} 10.0',
        'videoconf_sfu_packets_forwarded_total{kind="video"} 32.0',
        "# TYPE videoconf_sfu_forward_delay_seconds histogram",
        'videoconf_sfu_forward_delay_seconds_bucket{le="0.001"} 3.0',
        'videoconf_sfu_forward_delay_seconds_bucket{le="+Inf"} 4.0',
        "videoconf_sfu_forward_delay_seconds_count 4.0",
        "videoconf_sfu_forward_delay_seconds_sum 0.01",
        "# TYPE process_cpu_seconds counter",
        "process_cpu_seconds_total 1.5",
        "",
    ])
    scrape = parse_metrics(text, at=1.0)
    assert scrape.total("videoconf_sfu_packets_forwarded_total") == 42
    assert scrape.total("videoconf_sfu_packets_forwarded_total", kind="video") == 32
    assert scrape.total("process_cpu_seconds_total") == 1.5
    assert scrape.buckets("videoconf_sfu_forward_delay_seconds") == [(0.001, 3.0), (math.inf, 4.0)]


def test_percentiles_interpolate_between_values_and_need_at_least_one() -> None:
    assert percentile([], 0.5) is None
    assert percentile([4.0], 0.99) == 4.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)


def result(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "frame_rate": {"sent": 30, "median": 29.5}, "packet_loss": 0.001, "freezes": 0,
        "subscribers": 10, "failed_joins": 0,
    }
    base.update(changes)
    return base


def test_the_quality_bar_fails_a_step_for_low_frame_rate_loss_freezes_or_failed_joins() -> None:
    bar = QualityBar(min_fps_ratio=0.9, max_loss=0.01)
    assert bar.verdict(result()) is None
    assert "frame rate" in (bar.verdict(result(frame_rate={"sent": 30, "median": 26.9})) or "")
    assert "frame rate" in (bar.verdict(result(frame_rate={"sent": 30, "median": None})) or "")
    assert bar.verdict(result(frame_rate={"sent": 0, "median": None})) is None  # audio only
    assert "loss" in (bar.verdict(result(packet_loss=0.02)) or "")
    assert "loss" in (bar.verdict(result(packet_loss=None)) or "")
    assert "freezes" in (bar.verdict(result(freezes=3)) or "")
    assert "joins failed" in (bar.verdict(result(failed_joins=1)) or "")


def test_each_scenario_says_who_receives_what_and_overrides_change_only_what_they_name() -> None:
    assert set(SCENARIOS) == {"meeting", "livestream", "audio", "join-storm"}
    meeting = scenario("meeting", publishers=4, duration=None)
    assert meeting.publishers == 4 and meeting.receivers == 4  # everyone receives
    assert meeting.expected_streams(publisher=True) == (3, 3)  # the three others
    assert meeting.expected_streams() == (4, 4)  # a viewer sees all four
    assert meeting.duration == SCENARIOS["meeting"].duration
    assert scenario("audio").expected_streams() == (0, 3)
    assert scenario("livestream", viewers=7).receivers == 7
    assert scenario("livestream").video_layers == SIMULCAST_LAYERS
    with pytest.raises(KeyError):
        scenario("nope")


def test_table_lists_every_scenario() -> None:
    row = {
        "scenario": {"name": "audio"}, "publishers": 3, "subscribers": 30, "packets_in_per_second": 150.0,
        "packets_out_per_second": 4350.0, "mbit_out": 1.2, "sfu_cpu": 0.12,
        "forward_delay_ms": {"p50": 0.2, "p99": 0.9}, "frame_rate": {"sent": 0, "median": None},
        "freezes": 0, "packet_loss": 0.0, "join_ms": {"p50": 5.0, "p99": 80.0}, "load_cpu": 0.3,
    }
    text = table([row, {**row, "scenario": {"name": "meeting"}}])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[1].startswith("|--")
    assert "| audio " in lines[2] and "4,350" in lines[2] and "12%" in lines[2] and "0.20/0.90" in lines[2]


# Replayed media -----------------------------------------------------------------------------------


def test_encoded_video_loops_whole_keyframe_intervals_and_is_cached() -> None:
    loop = encoded_video(320, 180, fps=10, bitrate=200_000, seconds=2.0, keyframe_interval=0.5)
    assert len(loop.frames) == 20
    assert {0, 5, 10, 15} <= loop.keyframes
    assert 100_000 < loop.bitrate < 400_000
    assert encoded_video(320, 180, fps=10, bitrate=200_000, seconds=2.0, keyframe_interval=0.5) is loop
    audio = encoded_audio(440.0, seconds=0.2)
    assert len(audio.frames) == 10 and audio.duration == 960


async def test_replay_track_paces_by_the_clock_and_wraps_the_loop() -> None:
    clock = FakeClock(100.0)
    loop = encoded_video(320, 180, fps=10, bitrate=200_000, seconds=2.0, keyframe_interval=0.5)
    track = ReplayTrack(loop, clock=clock)
    first = await track.recv()
    assert first.pts == 0 and bytes(first) == loop.frames[0]
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.01)
    assert not pending.done()  # frame 1 is due 0.1 s after frame 0 on the passed-in clock
    clock.now += 0.1
    assert (await asyncio.wait_for(pending, 1)).pts == 9000
    clock.now += 2.0  # late: the track jumps to the frame due now
    late = await track.recv()
    assert late.pts == 21 * 9000 and bytes(late) == loop.frames[1]  # index 21 wraps to frame 1
    assert track.frames_sent == 3


async def test_replay_layer_resumes_on_a_keyframe_of_the_shared_timeline() -> None:
    clock = FakeClock(100.0)
    loops = [encoded_video(w, h, fps=10, bitrate=b, seconds=2.0, keyframe_interval=0.5) for w, h, b in ((320, 180, 200_000), (160, 90, 80_000))]
    simulcast = ReplaySimulcast(loops, clock=clock)
    low, high = simulcast.tracks
    assert (low.width, high.width) == (160, 320)  # lowest first
    assert (await low.recv()).pts == 0 and (await high.recv()).pts == 0
    high.pause()
    clock.now += 0.7
    pending = asyncio.ensure_future(high.recv())
    await asyncio.sleep(0.01)
    assert not pending.done()  # paused: nothing
    high.resume()
    await asyncio.sleep(0.01)
    clock.now += 0.3  # the next keyframe after index 7 is index 10, due at 1.0 s
    packet = await asyncio.wait_for(pending, 1)
    assert packet.pts == 10 * 9000 and (10 % len(loops[0].frames)) in loops[0].keyframes
    assert (await low.recv()).pts == 10 * 9000  # the other layer follows the same clock
    simulcast.stop()
