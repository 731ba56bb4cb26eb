"""Pre-encoded participants for the recorder's benchmark and tests: encode a clip once (VP8
video of a webcam-like scene, or of whatever the caller draws, such as the SDK's numbered pattern;
Opus audio of a tone), then replay it as the SFU's messages at any time, for as many participants
as wanted, so that only the recorder works."""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder

from recorder import wire

VIDEO_RATE = 90000
AUDIO_RATE = 48000
AUDIO_FRAME = 960
NTP_OFFSET = 3_900_000_000.0  # the synthetic senders' wall clock, seconds ahead of monotonic


@dataclass
class Clip:
    fps: int
    seconds: float
    video: list[tuple[int, list[bytes], bool]] = field(default_factory=list)  # (frame index, payloads, keyframe)
    audio: list[bytes] = field(default_factory=list)  # one Opus payload per 20 ms


def camera_frame(index: int, width: int, height: int, fps: int, seed: int = 0) -> av.VideoFrame:
    """A frame like a webcam's in a meeting: a still, textured room and a head that moves and
    talks a little, with faint sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    room = 90 + 60 * np.sin(x / width * 3 + seed) * np.cos(y / height * 2) + rng.normal(0, 6, (height, width))
    t = index / fps
    cx = width / 2 + width * 0.05 * math.sin(t * 0.9 + seed)
    cy = height * 0.55 + height * 0.02 * math.sin(t * 1.7)
    head = ((x - cx) / (width * 0.13)) ** 2 + ((y - cy) / (height * 0.3)) ** 2 <= 1
    mouth = ((x - cx) / (width * 0.04)) ** 2 + ((y - cy - height * 0.12) / (height * (0.01 + 0.02 * abs(math.sin(t * 7))))) ** 2 <= 1
    luma = np.where(head, 170.0, room)
    luma = np.where(mouth, 60.0, luma)
    noise = np.random.default_rng(seed * 100003 + index).normal(0, 1.5, (height, width))
    planes = np.clip(luma + noise, 16, 235).astype(np.uint8)
    chroma = np.full((height // 2, width), 128, np.uint8)
    chroma[:, : width // 2] = 120 + seed % 16
    return av.VideoFrame.from_ndarray(np.vstack([planes, chroma]), format="yuv420p")


Drawing = Callable[[int, int, int], av.VideoFrame]  # (frame index, width, height) -> a yuv420p frame


def encode_clip(
    seconds: float = 4.0, width: int = 640, height: int = 360, fps: int = 30, tone: float = 440.0,
    bitrate: int = 1_000_000, draw: Drawing | None = None, seed: int = 0,
) -> Clip:
    """The video is ``camera_frame``'s scene, or what ``draw`` draws (the SDK's ``draw_pattern``
    changes every block of every frame: a worst case for encoders)."""
    clip = Clip(fps, seconds)
    encoder = Vp8Encoder()
    encoder.target_bitrate = bitrate
    for index in range(round(seconds * fps)):
        frame = camera_frame(index, width, height, fps, seed) if draw is None else draw(index, width, height)
        frame.pts = index * VIDEO_RATE // fps
        frame.time_base = fractions.Fraction(1, VIDEO_RATE)
        keyframe = index % (2 * fps) == 0
        payloads, _ = encoder.encode(frame, force_keyframe=keyframe)
        clip.video.append((index, payloads, keyframe))
    audio = OpusEncoder()
    for n in range(round(seconds * AUDIO_RATE / AUDIO_FRAME)):
        t = (n * AUDIO_FRAME + np.arange(AUDIO_FRAME)) / AUDIO_RATE
        samples = np.round(8000 * np.sin(2 * math.pi * tone * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(samples, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = n * AUDIO_FRAME
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        payloads, _ = audio.encode(frame)
        clip.audio.extend(payloads)
    return clip


class Replay:
    """One participant replaying a clip from monotonic time ``start`` on, as wire messages."""

    def __init__(self, clip: Clip, video_track: int, audio_track: int, start: float, seed: int = 0, layer: int = 0) -> None:
        self.clip = clip
        self.layer = layer  # the simulcast layer position the video goes out as
        self.video_track = video_track
        self.audio_track = audio_track
        self.start = start
        self.video_base = (seed * 7919 * 3000) & 0xFFFFFFFF
        self.audio_base = (seed * 104729) & 0xFFFFFFFF
        self.video_seq = seed * 1000
        self.audio_seq = seed * 1000
        self.frame = 0
        self.audio_frame = 0
        self.next_report = start

    def video_at(self, index: int) -> float:
        return self.start + index / self.clip.fps

    def audio_at(self, index: int) -> float:
        return self.start + index * AUDIO_FRAME / AUDIO_RATE

    def due(self, now: float) -> Iterator[bytes]:
        """Every message due by ``now``."""
        clip = self.clip
        while self.video_at(self.frame) <= now:
            _, payloads, keyframe = clip.video[self.frame % len(clip.video)]
            timestamp = self.video_base + self.frame * VIDEO_RATE // clip.fps
            for i, payload in enumerate(payloads):
                yield wire.encode_packet(
                    self.video_track, self.layer, i == len(payloads) - 1, keyframe and i == 0, self.video_seq, timestamp,
                    self.video_at(self.frame), payload,
                )
                self.video_seq += 1
            self.frame += 1
        while self.audio_at(self.audio_frame) <= now:
            payload = clip.audio[self.audio_frame % len(clip.audio)]
            timestamp = self.audio_base + self.audio_frame * AUDIO_FRAME
            yield wire.encode_packet(self.audio_track, 0, False, True, self.audio_seq, timestamp, self.audio_at(self.audio_frame), payload)
            self.audio_seq += 1
            self.audio_frame += 1
        if now >= self.next_report:
            self.next_report = now + 1.0
            ntp = round((now + NTP_OFFSET) * (1 << 32))
            yield wire.encode_report(self.video_track, self.layer, ntp, self.video_base + round((now - self.start) * VIDEO_RATE), now)
            yield wire.encode_report(self.audio_track, 0, ntp, self.audio_base + round((now - self.start) * AUDIO_RATE), now)

    def announce(self, identity: str) -> list[bytes]:
        return [
            wire.encode_event({"type": "track", "track": self.video_track, "participant": identity, "kind": "video", "source": "camera", "codec": "video/VP8", "clock_rate": VIDEO_RATE}),
            wire.encode_event({"type": "track", "track": self.audio_track, "participant": identity, "kind": "audio", "source": "microphone", "codec": "audio/opus", "clock_rate": AUDIO_RATE}),
        ]
