"""Pre-encoded media for load tests: encode a short loop once, then replay its packets from any
number of publishers without encoding again.

A live :class:`~clients.sdk.media.PatternVideoTrack` costs its publisher a VP8 encode per frame
(several milliseconds at 640x360), which limits one load machine to a handful of publishers.
:func:`encoded_video` encodes ``seconds`` of the verifiable pattern once per (size, frame rate,
bitrate), with a keyframe every ``keyframe_interval`` seconds, and caches the packets;
:class:`ReplayVideoTrack` then yields those ``av.Packet`` objects in a loop, paced in real time,
and aiortc's sender only packetizes them.  The loop length is a whole number of keyframe
intervals, so the stream stays decodable across the wrap.  A replayed publisher does not answer
keyframe requests (PLI) at once: subscribers that join wait for the next periodic keyframe.

Frame indices drawn in the pattern repeat every loop; a decoding subscriber sees the index go
back to the loop's first frame at each wrap (count frames and corrupt frames, not "missing").

:class:`ReplaySimulcast` replays one loop per layer on a shared timeline and pauses a layer the
way :class:`~clients.sdk.media.SimulcastPattern` does (dynacast).  :func:`encoded_audio` and
:class:`ReplayAudioTrack` do the same for an Opus tone.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

from clients.sdk.media import (
    AUDIO_SAMPLE_RATE,
    AUDIO_SAMPLES_PER_FRAME,
    VIDEO_CLOCK_RATE,
    Clock,
    PausableTrack,
    draw_pattern,
)

AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_SAMPLE_RATE)


@dataclass(frozen=True)
class EncodedLoop:
    """Encoded frames of one stream, in order, each ``duration`` ticks of ``clock_rate`` long."""

    kind: str
    frames: tuple[bytes, ...]
    keyframes: frozenset[int]  # indices of keyframes in ``frames``
    clock_rate: int
    duration: int  # ticks per frame
    width: int = 0
    height: int = 0

    @property
    def seconds(self) -> float:
        return len(self.frames) * self.duration / self.clock_rate

    @property
    def bitrate(self) -> float:
        """Mean bits per second of the loop."""
        return sum(len(f) for f in self.frames) * 8 / self.seconds


_CACHE: dict[tuple[object, ...], EncodedLoop] = {}
_CACHE_LOCK = threading.Lock()


def encoded_video(
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    bitrate: int = 1_000_000,
    seconds: float = 4.0,
    keyframe_interval: float = 1.0,
) -> EncodedLoop:
    """``seconds`` of the pattern encoded with libvpx (VP8), cached per argument set."""
    key = ("vp8", width, height, fps, bitrate, seconds, keyframe_interval)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    if fps <= 0 or bitrate <= 0 or seconds <= 0 or keyframe_interval <= 0:
        raise ValueError("fps, bitrate, seconds and keyframe_interval must be positive")
    gop = max(1, round(keyframe_interval * fps))
    count = max(1, round(seconds * fps / gop)) * gop
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = bitrate
    codec.framerate = fractions.Fraction(fps, 1)
    codec.time_base = fractions.Fraction(1, fps)
    codec.gop_size = gop
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1"}
    frames: list[bytes] = []
    keyframes: set[int] = set()

    def collect(packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.is_keyframe:
                keyframes.add(len(frames))
            frames.append(bytes(packet))

    for index in range(count):
        frame = draw_pattern(index, width, height)
        frame.pts = index
        frame.time_base = codec.time_base
        frame.pict_type = av.video.frame.PictureType.I if index % gop == 0 else av.video.frame.PictureType.NONE
        collect(codec.encode(frame))
    collect(codec.encode(None))
    if not frames or 0 not in keyframes:
        raise RuntimeError("the VP8 encoder did not start the loop with a keyframe")
    loop = EncodedLoop("video", tuple(frames), frozenset(keyframes), VIDEO_CLOCK_RATE, VIDEO_CLOCK_RATE // fps, width, height)
    with _CACHE_LOCK:
        _CACHE[key] = loop
    return loop


def encoded_audio(frequency: float = 440.0, seconds: float = 1.0, bitrate: int = 32_000) -> EncodedLoop:
    """``seconds`` of a sine tone encoded with Opus in 20 ms frames (stereo, 48 kHz), cached.
    Choose ``frequency * seconds`` whole so that the tone has no click at the wrap."""
    key = ("opus", frequency, seconds, bitrate)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_SAMPLE_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = bitrate
    codec.time_base = AUDIO_TIME_BASE
    count = max(1, round(seconds * AUDIO_SAMPLE_RATE / AUDIO_SAMPLES_PER_FRAME))
    frames: list[bytes] = []
    step = 2 * math.pi * frequency / AUDIO_SAMPLE_RATE
    for index in range(count):
        phases = step * (index * AUDIO_SAMPLES_PER_FRAME + np.arange(AUDIO_SAMPLES_PER_FRAME))
        samples = np.repeat(np.round(0.5 * 32767 * np.sin(phases)).astype(np.int16), 2)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = index * AUDIO_SAMPLES_PER_FRAME
        frame.time_base = AUDIO_TIME_BASE
        frames.extend(bytes(p) for p in codec.encode(frame))
    frames.extend(bytes(p) for p in codec.encode(None))
    frames = frames[:count]
    loop = EncodedLoop("audio", tuple(frames), frozenset(range(len(frames))), AUDIO_SAMPLE_RATE, AUDIO_SAMPLES_PER_FRAME)
    with _CACHE_LOCK:
        _CACHE[key] = loop
    return loop


class _Timeline:
    """Real-time pacing shared by the tracks of one publisher: frame ``n`` of a stream whose
    frames last ``period`` seconds is due ``n * period`` after the first call to ``start``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._start: float | None = None

    def start(self) -> float:
        if self._start is None:
            self._start = self.clock()
        return self._start


class ReplayTrack(PausableTrack):
    """Replays an :class:`EncodedLoop` as ``av.Packet`` objects in real time, forever.  Paused
    (dynacast), it yields nothing; resumed, it continues at the current position of the shared
    timeline, from the next keyframe so that the decoder can start again."""

    def __init__(self, loop: EncodedLoop, timeline: _Timeline | None = None, clock: Clock | None = None) -> None:
        super().__init__()
        self.kind = loop.kind
        self.loop = loop
        self.width, self.height = loop.width, loop.height
        self.timeline = timeline or _Timeline(clock or time.monotonic)
        self.frames_sent = 0
        self.bytes_sent = 0
        self._next = 0
        self._need_keyframe = False

    def resume(self) -> None:
        if self.paused:
            self._need_keyframe = True
        super().resume()

    def position(self, now: float) -> int:
        """The index (on the unwrapped timeline) of the frame due at ``now``."""
        period = self.loop.duration / self.loop.clock_rate
        return int((now - self.timeline.start()) / period + 1e-6)  # 2.1 / 0.1 is 20.999...

    async def recv(self) -> av.Packet:
        await self._produce()
        loop = self.loop
        start = self.timeline.start()
        period = loop.duration / loop.clock_rate
        index = max(self._next, self.position(self.timeline.clock()))
        if self._need_keyframe:
            while (index % len(loop.frames)) not in loop.keyframes:
                index += 1
            self._need_keyframe = False
        await asyncio.sleep(max(0.0, start + index * period - self.timeline.clock()))
        data = loop.frames[index % len(loop.frames)]
        packet = av.Packet(data)
        packet.pts = index * loop.duration
        packet.time_base = fractions.Fraction(1, loop.clock_rate)
        self._next = index + 1
        self.frames_sent += 1
        self.bytes_sent += len(data)
        return packet


class ReplaySimulcast:
    """Several pre-encoded layers of one camera (lowest first) on one timeline, published as
    simulcast by :meth:`clients.sdk.participant.Participant.publish`."""

    kind = "video"

    def __init__(self, loops: Sequence[EncodedLoop], clock: Clock | None = None) -> None:
        if len(loops) < 2:
            raise ValueError("simulcast needs at least two layers")
        timeline = _Timeline(clock or time.monotonic)
        ordered = sorted(loops, key=lambda loop: loop.width * loop.height)
        self.tracks = [ReplayTrack(loop, timeline) for loop in ordered]

    def stop(self) -> None:
        for track in self.tracks:
            track.stop()


def replay_video(
    width: int = 640, height: int = 360, fps: int = 30, bitrate: int = 1_000_000, clock: Clock | None = None
) -> ReplayTrack:
    return ReplayTrack(encoded_video(width, height, fps, bitrate), clock=clock)


def replay_simulcast(
    layers: Sequence[tuple[int, int, int]] = ((320, 180, 150_000), (640, 360, 500_000), (1280, 720, 1_500_000)),
    fps: int = 30,
    clock: Clock | None = None,
) -> ReplaySimulcast:
    """Simulcast from (width, height, bitrate) layers, as Chromium sends from a 720p camera."""
    return ReplaySimulcast([encoded_video(w, h, fps, b) for w, h, b in layers], clock=clock)


def replay_audio(frequency: float = 440.0, clock: Clock | None = None) -> ReplayTrack:
    return ReplayTrack(encoded_audio(frequency), clock=clock)
