"""Synthetic media of the SDK: the frame-index pattern survives real VP8/H.264 compression and
scaling, damage is detected, the tone is measurable, and the verifier keeps correct books."""

from __future__ import annotations

import fractions
import time

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from clients.sdk.media import (
    FrameVerifier,
    PatternVideoTrack,
    ToneAudioTrack,
    crc24,
    draw_pattern,
    read_frame_index,
    tone_strength,
)
from tests.clock import FakeClock

WIDTH, HEIGHT = 320, 240
BITRATE = 300_000
FPS = 15


class RacingClock(FakeClock):
    """Every reading is a second later, so a paced track never has to wait."""

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def pattern_frames(count: int, width: int = WIDTH, height: int = HEIGHT) -> list[av.VideoFrame]:
    track = PatternVideoTrack(width, height, fps=FPS, clock=RacingClock())
    return [await track.recv() for _ in range(count)]


def block(cell: int) -> tuple[slice, slice]:
    """Rows and columns of a data cell at 320x240: 8 columns of 32 px from x=32, 6 rows from y=16."""
    row, column = divmod(cell, 8)
    return slice(16 + 32 * row, 48 + 32 * row), slice(32 + 32 * column, 64 + 32 * column)


def painted(frame: av.VideoFrame, rows: slice, columns: slice, luma: np.ndarray | int) -> av.VideoFrame:
    """A copy of ``frame`` with part of its luma plane overwritten."""
    planes = frame.to_ndarray()
    planes[: frame.height][rows, columns] = luma
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def uniform(luma: int) -> av.VideoFrame:
    planes = np.full((HEIGHT * 3 // 2, WIDTH), 128, np.uint8)
    planes[:HEIGHT] = luma
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


# Video pattern -------------------------------------------------------------------------------


async def test_pattern_track_produces_timed_yuv_frames_in_index_order() -> None:
    track = PatternVideoTrack(WIDTH, HEIGHT, fps=FPS, clock=RacingClock())
    assert track.kind == "video"
    frames = [await track.recv() for _ in range(5)]
    assert [(f.width, f.height, f.format.name) for f in frames] == [(WIDTH, HEIGHT, "yuv420p")] * 5
    assert all(f.time_base == fractions.Fraction(1, 90000) for f in frames)
    assert [f.pts for f in frames] == [0, 6000, 12000, 18000, 24000]
    assert [read_frame_index(f) for f in frames] == [0, 1, 2, 3, 4]
    assert track.frames_sent == 5
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def seconds_to_receive(track: MediaStreamTrack, frames: int) -> float:
    """How long ``frames`` frames take to come out of ``track``."""
    start = time.monotonic()
    for _ in range(frames):
        await track.recv()
    return time.monotonic() - start


async def test_pattern_track_paces_itself_in_real_time() -> None:
    elapsed = await seconds_to_receive(PatternVideoTrack(WIDTH, HEIGHT, fps=50), 6)
    assert 0.095 <= elapsed < 0.5, elapsed  # five intervals of 20 ms


async def test_background_moves_between_frames_but_blocks_stay_flat() -> None:
    first, second = (f.to_ndarray()[:HEIGHT].astype(int) for f in await pattern_frames(2))
    margin = (slice(0, HEIGHT), slice(0, 32))
    assert np.abs(first[margin] - second[margin]).mean() > 3
    rows, columns = block(0)
    assert np.ptp(first[rows, columns]) == 0 and np.ptp(second[rows, columns]) == 0


@pytest.mark.parametrize("index", [0, 1, 2, 255, 256, 65535, 1_000_003, 2**24 - 1])
@pytest.mark.parametrize("size", [(320, 240), (640, 480), (1280, 720), (176, 144)])
def test_any_index_reads_back_at_any_size(index: int, size: tuple[int, int]) -> None:
    assert read_frame_index(draw_pattern(index, *size)) == index


def test_out_of_range_indices_and_odd_sizes_are_refused() -> None:
    for index in (-1, 2**24):
        with pytest.raises(ValueError):
            draw_pattern(index)
    with pytest.raises(ValueError):
        draw_pattern(0, 321, 240)
    with pytest.raises(ValueError):
        PatternVideoTrack(16, 16)


def test_crc24_is_the_openpgp_crc() -> None:
    assert crc24(b"123456789") == 0x21CF02


def encode_decode(frames: list[av.VideoFrame], codec: str) -> tuple[list[av.VideoFrame], int]:
    """Encode at 300 kbit/s the way aiortc configures the codec, decode; returns frames and bytes."""
    encoder = av.CodecContext.create("libvpx" if codec == "VP8" else "libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.bit_rate = BITRATE
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.framerate = fractions.Fraction(FPS, 1)
    if codec == "VP8":
        encoder.options = {
            "deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0", "bufsize": str(BITRATE),
            "minrate": str(BITRATE), "maxrate": str(BITRATE), "static-thresh": "1",
        }
    else:
        encoder.options = {"tune": "zerolatency", "level": "31"}
        encoder.profile = "Baseline"
    packets = []
    for number, frame in enumerate(frames):
        frame.pts, frame.time_base = number, fractions.Fraction(1, FPS)
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("vp8" if codec == "VP8" else "h264", "r")
    decoded = [frame for packet in packets for frame in decoder.decode(packet)]
    decoded += decoder.decode(None)
    return decoded, sum(packet.size for packet in packets)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_every_frame_reads_back_after_compression_and_scaling(codec: str) -> None:
    count = 45  # three seconds: past the key frame, into steady rate control
    decoded, size = encode_decode(await pattern_frames(count), codec)
    assert size * 8 * FPS / count < 1.3 * BITRATE, "the encoder did not run at a low bit rate"
    assert len(decoded) == count
    for scale in (1, 2, 4):
        scaled = [f.reformat(width=WIDTH // scale, height=HEIGHT // scale) for f in decoded]
        assert {(f.width, f.height) for f in scaled} == {(WIDTH // scale, HEIGHT // scale)}
        assert [read_frame_index(f) for f in scaled] == list(range(count)), f"scale 1/{scale}"


def test_damaged_blocks_fail_the_check() -> None:
    frame = draw_pattern(123456)
    assert read_frame_index(frame) == 123456
    luma = frame.to_ndarray()[:HEIGHT]
    for cell in (0, 23, 24, 47):  # first and last bit of the index and of the CRC
        rows, columns = block(cell)
        assert read_frame_index(painted(frame, rows, columns, 251 - luma[rows, columns])) is None  # black <-> white
        assert read_frame_index(painted(frame, rows, columns, 128)) is None  # grey: neither bit
    # Only the centre of a block is read: ringing or blur along its edges does no harm, even a
    # 7 px wide ring of the opposite colour (two thirds of the block).
    rows, columns = block(5)
    inner = slice(rows.start + 7, rows.stop - 7), slice(columns.start + 7, columns.stop - 7)
    ringed = painted(painted(frame, rows, columns, 251 - luma[rows, columns]), *inner, luma[inner])
    assert read_frame_index(ringed) == 123456
    # The top half of one frame over the bottom half of the next: index and CRC disagree.
    half = slice(HEIGHT // 2, None)
    other = draw_pattern(123457).to_ndarray()[:HEIGHT]
    assert read_frame_index(painted(frame, half, slice(None), other[half])) is None


def test_frames_without_the_pattern_read_as_none() -> None:
    for luma in (0, 16, 128, 235, 255):
        assert read_frame_index(uniform(luma)) is None
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
    assert read_frame_index(av.VideoFrame.from_ndarray(noise, format="yuv420p")) is None
    assert read_frame_index(uniform(16).reformat(width=8, height=8)) is None


def test_other_pixel_formats_are_converted() -> None:
    frame = draw_pattern(4242).reformat(format="rgb24")
    assert read_frame_index(frame) == 4242


# Audio tone ----------------------------------------------------------------------------------


async def tone_frames(count: int, **options: object) -> list[av.AudioFrame]:
    track = ToneAudioTrack(clock=RacingClock(), **options)  # type: ignore[arg-type]
    return [await track.recv() for _ in range(count)]


def silence(count: int) -> list[av.AudioFrame]:
    frames = []
    for _ in range(count):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
        frame.sample_rate = 48000
        frames.append(frame)
    return frames


async def test_tone_track_produces_48khz_20ms_s16_frames() -> None:
    track = ToneAudioTrack(clock=RacingClock())
    assert track.kind == "audio"
    frames = [await track.recv() for _ in range(3)]
    assert [(f.sample_rate, f.samples, f.format.name, f.layout.name) for f in frames] == [(48000, 960, "s16", "mono")] * 3
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert all(f.time_base == fractions.Fraction(1, 48000) for f in frames)
    peak = max(int(np.abs(f.to_ndarray()).max()) for f in frames)
    assert 0.45 * 32767 < peak <= 0.5 * 32767 + 1
    (stereo,) = await tone_frames(1, layout="stereo")
    assert (stereo.layout.name, stereo.samples, stereo.to_ndarray().shape) == ("stereo", 960, (1, 1920))
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_tone_track_paces_itself_in_real_time() -> None:
    elapsed = await seconds_to_receive(ToneAudioTrack(), 4)
    assert 0.055 <= elapsed < 0.5, elapsed  # three intervals of 20 ms


async def test_tone_strength_finds_the_tone_and_nothing_else() -> None:
    tone = await tone_frames(50)
    assert tone_strength(tone, 440) > 0.9
    assert tone_strength(tone, 1000) < 0.1
    assert tone_strength(tone, 470) < 0.1
    assert tone_strength(tone[:1], 440) > 0.9  # a single 20 ms frame is enough
    assert tone_strength(silence(50), 440) == 0.0
    assert tone_strength([], 440) == 0.0
    rng = np.random.default_rng(2)
    noise = []
    for _ in range(50):
        frame = av.AudioFrame.from_ndarray(rng.integers(-8000, 8000, (1, 960), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 48000
        noise.append(frame)
    assert tone_strength(noise, 440) < 0.1
    # Half tone, half silence: still all the energy is in the tone.
    assert tone_strength(tone[:25] + silence(25), 440) > 0.9
    stereo = await tone_frames(50, layout="stereo", frequency=1000)
    assert tone_strength(stereo, 1000) > 0.9 and tone_strength(stereo, 440) < 0.1


async def test_tone_survives_opus_as_aiortc_sends_and_receives_it() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    received: list[av.AudioFrame] = []
    for frame in await tone_frames(50):
        payloads, timestamp = encoder.encode(frame)
        for payload in payloads:
            received += decoder.decode(JitterFrame(data=payload, timestamp=timestamp))
    assert received and {(f.format.name, f.layout.name, f.sample_rate) for f in received} == {("s16", "stereo", 48000)}
    assert tone_strength(received, 440) > 0.9
    assert tone_strength(received, 880) < 0.1


def test_tone_strength_reads_planar_float_audio() -> None:
    t = np.arange(4800) / 48000
    frame = av.AudioFrame.from_ndarray(np.stack([np.sin(2 * np.pi * 300 * t)] * 2).astype(np.float32), format="fltp", layout="stereo")
    frame.sample_rate = 48000
    assert tone_strength([frame], 300) > 0.9 and tone_strength([frame], 600) < 0.1


# Frame verifier ------------------------------------------------------------------------------


def feed(verifier: FrameVerifier, clock: FakeClock, indices: list[int | None], step: float = 1 / FPS) -> None:
    """Deliver pattern frames (None: a corrupt frame) one ``step`` apart."""
    for index in indices:
        clock.advance(step)
        verifier.add(uniform(128) if index is None else draw_pattern(index))


def test_a_clean_stream_verifies_every_frame_with_nothing_missing() -> None:
    clock = FakeClock()
    verifier = FrameVerifier(clock=clock)
    assert verifier.report()["frames_received"] == 0 and verifier.report()["fps"] == 0.0
    feed(verifier, clock, list(range(10, 40)))
    report = verifier.report()
    assert report == {
        "frames_received": 30, "frames_verified": 30, "frames_corrupt": 0, "out_of_order": 0,
        "duplicates": 0, "missing": 0, "freezes": 0, "longest_gap_ms": pytest.approx(66.7, abs=0.1),
        "fps": pytest.approx(15.0), "first_index": 10, "last_index": 39,
    }


def test_verifier_counts_gaps_duplicates_reordering_and_corruption() -> None:
    clock = FakeClock()
    verifier = FrameVerifier(clock=clock)
    assert verifier.add(draw_pattern(0)) == 0
    assert verifier.add(uniform(0)) is None
    feed(verifier, clock, [1, 2, 5, 6, 6, 3, None, 2, 10])
    report = verifier.report()
    assert report["frames_received"] == 11
    assert report["frames_corrupt"] == 2
    assert report["frames_verified"] == 9
    assert report["duplicates"] == 2  # the second 6 and the second 2
    assert report["out_of_order"] == 1  # 3 arrived after 5 and 6
    assert report["missing"] == 4  # 4, 7, 8, 9 never came; 3 came late
    assert (report["first_index"], report["last_index"]) == (0, 10)
    assert report["freezes"] == 0
    # A frame older than the first one received widens the range it is missing from.
    late = FrameVerifier(clock=clock)
    feed(late, clock, [5, 6, 3])
    assert (late.out_of_order, late.missing, late.report()["first_index"]) == (1, 1, 5)


def test_verifier_counts_freezes_with_the_clock() -> None:
    clock = FakeClock()
    verifier = FrameVerifier(clock=clock)
    feed(verifier, clock, [0, 1, 2])
    clock.advance(0.45)  # 0.45 + 1/15 s > 0.5 s: a freeze
    feed(verifier, clock, [3, 4])
    feed(verifier, clock, [4, 4, 4, None, None], step=0.2)  # repeats and garbage do not end it
    feed(verifier, clock, [5])
    feed(verifier, clock, [6], step=0.49)  # just under the threshold: not a freeze
    report = verifier.report()
    assert report["freezes"] == 2
    assert report["longest_gap_ms"] == pytest.approx(1000 + 1000 / 15, abs=0.1)
    assert report["missing"] == 0 and report["duplicates"] == 3 and report["frames_corrupt"] == 2
    assert verifier.fps == pytest.approx(6 / (clock.now - 1000 - 1 / 15))  # seven fresh frames
    assert report["fps"] == pytest.approx(verifier.fps, abs=0.01)


def test_verifier_forgets_old_indices_but_keeps_counting() -> None:
    clock = FakeClock()
    verifier = FrameVerifier(clock=clock, window=8)
    feed(verifier, clock, list(range(40)) + [39, 2])
    assert len(verifier._seen) <= 16
    report = verifier.report()
    assert (report["duplicates"], report["out_of_order"], report["missing"]) == (1, 1, 0)


async def test_a_receiver_counts_the_frames_whose_pattern_did_not_read_back_per_size() -> None:
    """So that a report tells a blurred small layer from a broken stream."""
    import av
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from clients.sdk.media import FrameVerifier, draw_pattern
    from clients.sdk.participant import Participant, RemoteTrack

    grey = av.VideoFrame.from_ndarray(np.full((135, 160), 128, np.uint8), format="yuv420p")  # no pattern in it
    frames = [draw_pattern(1, 320, 180), grey, draw_pattern(2, 320, 180)]

    class Frames(MediaStreamTrack):
        kind = "video"

        async def recv(self) -> av.VideoFrame:
            if not frames:
                raise MediaStreamError
            return frames.pop(0)

    remote = RemoteTrack("TR_1", "p", "video", "camera", verifier=FrameVerifier())
    await Participant("ws://127.0.0.1:9/signaling", "token")._consume(remote, Frames())
    assert remote.sizes == {(320, 180): 2, (160, 90): 1}
    assert remote.refused_sizes == {(160, 90): 1}
    assert remote.verifier is not None and remote.verifier.frames_corrupt == 1 and remote.ended


async def test_the_sdk_keeps_the_newest_reactions_and_sends_track_settings_128_to_a_message() -> None:
    import json

    from clients.sdk.participant import REACTIONS_KEEP, Participant
    from signaling.protocol import MAX_TRACK_SETTINGS, REACTIONS, parse_client_message

    client = Participant("ws://127.0.0.1:9/signaling", "token")
    for i in range(REACTIONS_KEEP + 10):
        await client._dispatch({"type": "reaction", "participant": f"p{i}", "emoji": REACTIONS[i % 6], "seq": i + 1})
    assert len(client.reactions) == REACTIONS_KEEP
    assert client.reactions[0] == {"participant": "p10", "emoji": REACTIONS[4]}
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    client.send = send  # type: ignore[method-assign]
    await client.track_settings_many([{"track_id": f"TR_{i}", "quality": "off", "width": None} for i in range(300)])
    assert [len(m["tracks"]) for m in sent] == [MAX_TRACK_SETTINGS, MAX_TRACK_SETTINGS, 300 - 2 * MAX_TRACK_SETTINGS]
    assert sent[0]["tracks"][0] == {"track_id": "TR_0", "quality": "off"}  # no nulls on the wire
    assert [e.track_id for m in sent for e in parse_client_message(json.dumps(m)).entries()] == [f"TR_{i}" for i in range(300)]
    await client.react(REACTIONS[1])
    assert sent[-1] == {"type": "reaction", "emoji": REACTIONS[1]}
