"""The recorder's pure parts, without processes or sockets: the wire format, the timeline, the
audio mixer, the layouts, the SFU-side layer choice, and the worker fed in memory."""

from __future__ import annotations

import argparse
import io
import random
import time
from itertools import combinations
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder import wire
from recorder.compositor import Canvas, TileDamage, TileState, initials
from recorder.config import WorkerSettings, add_arguments, from_arguments, to_arguments
from recorder.layout import Rect, arrange, fit, grid
from recorder.manager import FILL_UPSCALE, pick_layer
from recorder.mixer import BLOCK, CEILING, KNEE, AudioMixer, Limiter, soft_ceiling
from recorder.synthetic import Replay, encode_clip
from recorder.timeline import ParticipantSync, StreamClock, ntp_seconds
from recorder.worker import Options, Recording, run, vp8_keyframe
from sfu.layer import Layer

# Wire ------------------------------------------------------------------------------------------


def test_packets_reports_and_events_read_back_from_the_wire_fed_in_pieces() -> None:
    reader = wire.Reader()
    data = (
        wire.encode_packet(3, 1, True, False, 2**40 + 5, 2**32 + 7, 12.5, b"payload")
        + wire.encode_report(3, 1, 0xDEADBEEF_12345678, 99, 13.0)
        + wire.encode_event({"type": "stop", "at": 14.0})
    )
    messages = []
    for i in range(0, len(data), 5):  # fed in small pieces
        messages += [wire.decode(kind, body) for kind, body in reader.feed(data[i : i + 5])]
    packet, report, event = messages
    assert packet == wire.Packet(3, 1, True, False, 2**40 + 5, 7, 12.5, b"payload")
    assert report == wire.SenderReport(3, 1, 0xDEADBEEF_12345678, 99, 13.0)
    assert event == {"type": "stop", "at": 14.0}


def test_wire_rejects_malformed_messages_without_raising() -> None:
    assert wire.decode(ord("R"), b"short") is None
    assert wire.decode(ord("N"), b"x" * 5) is None
    assert wire.decode(ord("J"), b"{not json") is None
    assert wire.decode(ord("J"), b"[1, 2]") is None
    assert wire.decode(ord("J"), b'{"no": "type"}') is None
    assert wire.decode(ord("Z"), b"anything") is None
    with pytest.raises(wire.WireError):
        list(wire.Reader().feed(wire.LENGTH.pack(wire.MAX_MESSAGE + 1) + b"R"))
    with pytest.raises(wire.WireError):
        list(wire.Reader().feed(wire.LENGTH.pack(0)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_wire_survives_random_bytes(data: bytes) -> None:
    reader = wire.Reader()
    try:
        for kind, body in reader.feed(data):
            wire.decode(kind, body)
    except wire.WireError:
        pass


# Timeline --------------------------------------------------------------------------------------


def test_stream_clock_unwraps_packets_and_reports_across_the_32_bit_wrap() -> None:
    sync = ParticipantSync()
    clock = StreamClock(90000, sync)
    near_wrap = 2**32 - 9000
    assert clock.on_packet(near_wrap, arrival=100.0) == near_wrap
    assert clock.on_packet(near_wrap + 4500, arrival=100.05) == near_wrap + 4500
    after = clock.on_packet(4500, arrival=100.15)  # wrapped
    assert after == 2**32 + 4500
    assert clock.on_packet(2**32 - 100, arrival=100.2) == 2**32 - 100  # late, from before the wrap
    # A report after the wrap, with a timestamp from before it, lands before it too.
    clock.on_report(ntp=(5000 << 32), rtp=near_wrap)
    assert clock.report == (near_wrap, 5000.0)
    assert clock.sender_time(2**32 + 4500) == pytest.approx(5000.0 + 13500 / 90000)


def test_before_a_report_a_stream_follows_arrival_times() -> None:
    clock = StreamClock(48000, ParticipantSync())
    assert clock.local_time(0) is None
    clock.on_packet(1000, arrival=10.0)
    clock.on_packet(1960, arrival=10.5)  # delayed in the network: ignored, the RTP clock rules
    assert clock.local_time(1000 + 48000) == pytest.approx(11.0)


def test_audio_and_video_of_one_participant_share_one_offset() -> None:
    sync = ParticipantSync()
    audio, video = StreamClock(48000, sync), StreamClock(90000, sync)
    # The sender's wall clock is 1000 s ahead of ours; audio arrives 5 ms late, video 40 ms late
    # (a frame's packets come after encoding); the least delay is the best estimate of both.
    audio.on_report(ntp=int(1010.0 * 2**32), rtp=480000)
    video.on_report(ntp=int(1010.0 * 2**32), rtp=900000)
    audio.on_packet(480000 + 4800, arrival=10.1 + 0.005)
    video.on_packet(900000 + 9000, arrival=10.1 + 0.040)
    assert sync.offset == pytest.approx(-1000.0 + 0.005)
    # The same sender instant lands at the same local time on both tracks.
    assert audio.local_time(480000 + 48000) == pytest.approx(video.local_time(900000 + 90000))
    assert ntp_seconds(3 << 32 | 1 << 31) == 3.5


# Mixer -----------------------------------------------------------------------------------------


def test_mixer_sums_sources_and_fills_gaps_with_silence() -> None:
    mixer = AudioMixer()
    mixer.add("a", 0, np.full(960, 0.2, np.float32))
    mixer.add("b", 100, np.full(960, 0.3, np.float32))
    block = mixer.mix()
    assert block[:100] == pytest.approx(0.2)
    assert block[100:960] == pytest.approx(0.5)
    assert block[960:] == pytest.approx(0.3)
    assert mixer.mix()[:36] == pytest.approx(0.3)  # b's last 36 samples spill into block 1
    assert float(np.abs(mixer.mix()).max()) == 0.0  # nothing there: silence


def test_mixer_drops_late_audio_clips_and_keeps_small_drifts_contiguous() -> None:
    mixer = AudioMixer()
    mixer.mix()
    mixer.add("a", 0, np.ones(960, np.float32))  # block 0 is already mixed: late
    assert mixer.late_samples == 960
    mixer.add("a", BLOCK, np.full(960, 0.8, np.float32))
    mixer.add("a", BLOCK + 960 + 7, np.full(960, 0.8, np.float32))  # 7 samples off: snapped
    mixer.add("b", BLOCK, np.full(960, 0.8, np.float32))
    block = mixer.mix()
    assert 0.95 * CEILING < block.max() < CEILING and block.min() > 0.3  # limited, no hole at 960
    assert mixer.refused_samples == 0
    mixer.add("a", 10**9, np.ones(10, np.float32))  # nonsense timing far ahead
    assert mixer.refused_samples == 10


def tone(frequency: float, amplitude: float, start: int, count: int) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(start, start + count) / 48000)).astype(np.float32)


def mix_blocks(mixer: AudioMixer, voices: list[tuple[float, float]], blocks: int) -> np.ndarray:
    """``blocks`` blocks of the mix of one tone (frequency, amplitude) per source."""
    out = []
    for _ in range(blocks):
        start = mixer.next_block * BLOCK
        for number, (frequency, amplitude) in enumerate(voices):
            mixer.add(number, start, tone(frequency, amplitude, start, BLOCK))
        out.append(mixer.mix())
    return np.concatenate(out)


def test_one_speaker_at_a_normal_level_passes_unchanged() -> None:
    mixer = AudioMixer()
    mixed = mix_blocks(mixer, [(440, 0.5)], 50)
    assert np.array_equal(mixed, tone(440, 0.5, 0, 50 * BLOCK))
    assert mixer.limiter.gain == 1.0


def test_loud_speakers_are_limited_under_full_scale_without_clipping() -> None:
    voices = [(220, 0.8), (330, 0.7), (550, 0.9)]
    mixer = AudioMixer()
    mixed = mix_blocks(mixer, voices, 50)
    summed = sum(tone(f, a, 0, 50 * BLOCK) for f, a in voices)
    assert np.abs(summed).max() > 1.5  # summed and clipped, a third of the samples would be at 1.0
    assert np.abs(mixed).max() < CEILING
    # Once the limiter has settled, the mix is the sum turned down by a steady gain: the
    # waveform keeps its shape (no flattened peaks), and the gain holds it near the ceiling.
    settled = slice(10 * BLOCK, None)
    gain = mixed[settled] / np.where(np.abs(summed[settled]) > 0.1, summed[settled], np.nan)
    assert np.nanmax(gain) - np.nanmin(gain) < 0.02
    assert np.abs(mixed[settled]).max() > 0.95 * CEILING
    # Peaks stay round: within 0.1% of the loudest for a few samples, where clipping holds 41.
    assert longest_run(np.abs(mixed) >= 0.999 * np.abs(mixed).max()) <= 8
    assert longest_run(np.abs(np.clip(summed, -1, 1)) >= 0.999) > 20


def longest_run(flags: np.ndarray) -> int:
    """The most consecutive true values in ``flags``."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max(initial=0))


def test_the_limiter_turns_down_at_once_and_recovers_smoothly() -> None:
    limiter = Limiter()
    loud = limiter.process(np.full(BLOCK, 2.0, np.float32))
    assert loud == pytest.approx(soft_ceiling(np.array(2.0))) and limiter.gain == pytest.approx(loud[-1] / 2)
    assert KNEE < loud.max() < CEILING
    recovered = [limiter.gain]
    for _ in range(60):  # 1.3 s of a normal-level signal after the loud one
        limiter.process(np.full(BLOCK, 0.3, np.float32))
        recovered.append(limiter.gain)
    steps = np.diff(20 * np.log10(recovered))
    assert np.all(steps >= 0) and steps.max() < 0.5  # up by at most 0.43 dB per block: no jumps
    assert recovered[10] < 0.9 and recovered[-1] == 1.0
    assert np.array_equal(limiter.process(np.full(BLOCK, 0.3, np.float32)), np.full(BLOCK, 0.3, np.float32))


# Layout ----------------------------------------------------------------------------------------


def overlaps(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


@pytest.mark.parametrize("count", range(1, 26))
@pytest.mark.parametrize("size", [(1280, 720), (640, 360), (1920, 1080)])
def test_grid_cells_fit_the_frame_without_overlapping(count: int, size: tuple[int, int]) -> None:
    width, height = size
    cells = grid(count, Rect(0, 0, width, height))
    assert len(cells) == count
    for cell in cells:
        assert cell.x >= 0 and cell.y >= 0 and cell.x + cell.w <= width and cell.y + cell.h <= height
        assert cell.x % 2 == cell.y % 2 == cell.w % 2 == cell.h % 2 == 0
    assert not any(overlaps(a, b) for a, b in combinations(cells, 2))
    assert len({(c.w, c.h) for c in cells}) == 1


def test_grid_prefers_tiles_near_16_9() -> None:
    assert len({c.y for c in grid(2, Rect(0, 0, 1280, 720))}) == 1  # side by side
    assert len({c.y for c in grid(4, Rect(0, 0, 1280, 720))}) == 2
    three = grid(3, Rect(0, 0, 1280, 720))
    assert three[2].x > three[0].x  # the last row is centred


def test_speaker_layout_and_screen_share_take_the_large_tile() -> None:
    people = ["a", "b", "c"]
    tiles = arrange(people, None, "b", "speaker", 1280, 720)
    assert tiles[0][0] == "b" and tiles[0][1].w > 1000
    assert [k for k, _ in tiles[1:]] == ["a", "c"]
    shared = arrange(people, "screen:9", "b", "grid", 1280, 720)
    assert shared[0][0] == "screen:9" and [k for k, _ in shared[1:]] == people
    assert not any(overlaps(a, b) for (_, a), (_, b) in combinations(shared, 2))
    assert arrange([], None, None, "speaker", 1280, 720) == []
    many = arrange([str(i) for i in range(30)], None, "0", "speaker", 1280, 720)
    assert 1 < len(many) < 30  # the strip shows whom it can


def test_fit_keeps_the_aspect_and_centres() -> None:
    box = Rect(100, 50, 640, 640)
    r = fit(1280, 720, box)
    assert (r.w, r.h) == (640, 360) and r.x == 100 and r.y == 50 + 140
    assert fit(0, 0, box) == box


def test_canvas_draws_tiles_labels_and_placeholders_inside_the_frame() -> None:
    canvas = Canvas(640, 360)
    canvas.clear()
    tiles = arrange(["a", "b"], None, "a", "grid", 640, 360)
    source = av.VideoFrame.from_ndarray(np.full((180 * 3 // 2, 320), 200, np.uint8), format="yuv420p")
    canvas.video(source, tiles[0][1])
    canvas.placeholder(tiles[1][1], "Grace Hopper")
    canvas.label(tiles[1][1], "Grace Hopper")
    canvas.outline(tiles[0][1])
    frame = canvas.frame()
    assert (frame.width, frame.height) == (640, 360)
    luma = frame.to_ndarray()[:360]
    first, second = tiles[0][1], tiles[1][1]
    assert luma[first.y + first.h // 2, first.x + first.w // 2] == 200
    label_area = luma[second.y + second.h - 40 : second.y + second.h, second.x : second.x + 200]
    assert label_area.max() > 200  # white text
    assert initials("grace  hopper") == "GH" and initials("") == "?"
    with pytest.raises(ValueError):
        Canvas(641, 360)


# Layer choice ------------------------------------------------------------------------------------


def layers(*heights: int | None) -> list[Layer]:
    out = []
    for i, h in enumerate(heights):
        layer = Layer(i, None, "video")
        layer.height = h
        layer.width = None if h is None else h * 16 // 9
        layer.last_packet = 100.0
        out.append(layer)
    return out


def test_recorder_takes_the_layer_scaled_least_for_its_tile() -> None:
    low, mid, high = layers(180, 360, 720)
    assert pick_layer([low, mid, high], Rect(8, 8, 628, 348), now=100.5) is mid  # 2x2 of 1280x720: cropped a little
    assert pick_layer([low, mid, high], Rect(8, 8, 300, 170), now=100.5) is low
    assert pick_layer([low, mid, high], Rect(0, 0, 1920, 1080), now=100.5) is high
    assert pick_layer([low, mid, high], None, now=100.5) is high  # a screen share: the best
    high.last_packet = 0.0  # the publisher stopped sending it
    assert pick_layer([low, mid, high], Rect(0, 0, 1920, 1080), now=100.5) is mid
    assert pick_layer(layers(None, None), Rect(0, 0, 400, 300), now=100.5).position == 1  # sizes unknown yet


def test_recorder_scales_a_layer_up_a_little_rather_than_a_larger_one_down() -> None:
    low, mid = layers(180, 360)
    assert pick_layer([low, mid], Rect(8, 10, 416, 228), now=100.5) is low  # 3x3 of 1280x720: 320x180 drawn at 405x228
    assert pick_layer([low, mid], Rect(0, 0, 426, 240), now=100.5) is low  # 1.33x up
    assert pick_layer([low, mid], Rect(0, 0, 416, 348), now=100.5) is low  # a 3x2 cell: the picture is 416x234
    assert pick_layer([low, mid], Rect(0, 0, 480, 270), now=100.5) is mid  # 1.5x up is too much: 360 down to 270
    assert pick_layer([low, mid], Rect(0, 0, 640, 300), now=100.5) is mid  # nearer 360 than 180
    # the rule before: a layer at least 90% of the tile's height
    assert pick_layer([low, mid], Rect(8, 10, 416, 228), now=100.5, max_upscale=FILL_UPSCALE) is mid
    assert pick_layer([low, mid], Rect(0, 0, 356, 200), now=100.5, max_upscale=FILL_UPSCALE) is low


# Drawing only what changed -----------------------------------------------------------------------


def test_only_tiles_whose_picture_name_or_outline_changed_are_drawn_again() -> None:
    damage = TileDamage()
    a, b = Rect(0, 0, 100, 50), Rect(100, 0, 100, 50)
    first = [(a, TileState("p", 1, "Pat", False)), (b, TileState("q", None, "Quinn", True))]
    assert damage.plan(first) == (True, [0, 1])  # a new layout: everything
    assert damage.plan(first) == (False, [])  # nothing new: the canvas keeps its pixels
    assert damage.plan([(a, TileState("p", 2, "Pat", False)), first[1]]) == (False, [0])  # a new picture
    assert damage.plan([(a, TileState("p", 2, "Pat", False)), (b, TileState("q", None, "Quinn", False))]) == (False, [1])
    assert damage.plan([(a, TileState("p", 2, "Pat", False))]) == (True, [0])  # someone left: the grid changed
    damage.forget()
    assert damage.plan([(a, TileState("p", 2, "Pat", False))]) == (True, [0])


def test_a_vp8_keyframe_is_told_by_its_frame_tag() -> None:
    assert vp8_keyframe(b"\x10\x02\x00\x9d\x01\x2a")  # P bit clear: a keyframe
    assert not vp8_keyframe(b"\x11\x02\x00")
    assert not vp8_keyframe(b"")


# The worker, fed in memory ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip():
    return encode_clip(seconds=1.0, width=320, height=180, fps=15)


def feed(recording: Recording, data: bytes) -> None:
    for kind, body in wire.Reader().feed(data):
        recording.handle(kind, body)


def test_worker_writes_every_frame_and_block_of_the_recorded_time(clip, tmp_path: Path) -> None:
    out = tmp_path / "r.mp4"
    recording = Recording(Options(output=str(out), width=320, height=180, fps=15, start=0.0, delay=0.2), lambda m: None)
    replay = Replay(clip, 1, 2, start=0.0, seed=1)
    feed(recording, wire.encode_event({"type": "participants", "participants": [{"identity": "p", "name": "Pat"}]}))
    feed(recording, b"".join(replay.announce("p")))
    now = 0.0
    while now < 3.0:
        now += 0.02
        feed(recording, b"".join(replay.due(now)))
        recording.render_due(now)
    feed(recording, b"\x00\x00\x00\x05Zjunk" + wire.encode_event({"type": "bogus"}) + wire.encode_event({"type": "track", "track": "x"}))
    feed(recording, wire.encode_event({"type": "stop", "at": 3.0}))
    recording.render_due(3.3)
    result = recording.close()
    assert result["frames"] == 45 and result["duration"] == 3.0 and result["participants"] == ["Pat"]
    assert result["bad_messages"] == 3
    with av.open(str(out)) as container:
        video = [f for f in container.decode(video=0)]
    with av.open(str(out)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert len(video) == 45
    assert abs(len(audio) / 48000 - 3.0) < 0.05
    assert float(np.sqrt(np.mean(audio[48000:96000] ** 2))) > 0.1  # the tone, not silence


def test_video_of_someone_off_the_layout_is_not_decoded_until_they_are_drawn_again(clip, tmp_path: Path) -> None:
    asked: list[dict] = []
    recording = Recording(Options(output=str(tmp_path / "s.mp4"), width=160, height=120, fps=15, start=0.0, delay=0.2, layout="speaker"), asked.append)
    people = [{"identity": f"p{i}", "name": f"P{i}"} for i in range(8)]  # the strip holds six: p7 is left out
    feed(recording, wire.encode_event({"type": "participants", "participants": people}))
    shown, hidden = Replay(clip, 1, 2, start=0.0, seed=1), Replay(clip, 3, 4, start=0.0, seed=2)
    feed(recording, b"".join(shown.announce("p0") + hidden.announce("p7")))
    now = 0.0
    while now < 2.0:
        now += 0.02
        feed(recording, b"".join([*shown.due(now), *hidden.due(now)]))
        recording.render_due(now)
    assert recording.tracks[1].decoded > 20 and recording.tracks[3].decoded <= 4  # only before the first frame was drawn
    before = recording.tracks[3].decoded
    feed(recording, wire.encode_event({"type": "participants", "participants": [people[0], people[7]]}))
    while now < 4.0:
        now += 0.02
        feed(recording, b"".join([*shown.due(now), *hidden.due(now)]))
        recording.render_due(now)
    assert {"event": "keyframe", "track": 3, "layer": 0} in asked  # it came back mid-stream
    assert recording.tracks[3].decoded > before + 10  # from the next keyframe on
    recording.close()


def test_worker_process_loop_finishes_at_the_end_of_its_input(clip, tmp_path: Path) -> None:
    out = tmp_path / "eof.mp4"
    stream = io.BytesIO(wire.encode_event({"type": "participants", "participants": [{"identity": "p", "name": "P"}]}) + bytes(random.Random(1).randbytes(64)))
    lines = io.StringIO()
    ticks = iter(np.arange(0.0, 100.0, 0.05))
    result = run(Options(output=str(out), width=160, height=120, fps=10, start=0.0, delay=0.1), stream, lines, clock=lambda: float(next(ticks)))
    assert result["event"] == "done" and out.stat().st_size > 0
    assert '"event": "done"' in lines.getvalue()
    # libx264's own CPU, for the benchmark: some, and no more than this thread spent in all
    assert result["frames"] > 0 and 0 < result["encoder_cpu_seconds"] <= time.thread_time()


# Settings --------------------------------------------------------------------------------------


def test_the_worker_reads_back_every_setting_the_manager_hands_it() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    given = WorkerSettings(width=640, height=360, fps=15, video_bitrate=500_000, audio_bitrate=32_000,
                           layout="speaker", preset="fast", delay=0.25)
    assert WorkerSettings(**from_arguments(parser.parse_args(to_arguments(given)))) == given
    assert WorkerSettings(**from_arguments(parser.parse_args([]))) == WorkerSettings()
