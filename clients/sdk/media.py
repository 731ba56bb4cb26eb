"""Synthetic, verifiable media for tests, bots and load tests.

Video: :class:`PatternVideoTrack` draws frames that carry their own frame index, and
:func:`read_frame_index` reads it back from a decoded (compressed, possibly scaled) frame.

Pattern layout, in units of the frame size so it reads the same at any scale::

    width  = 10 units:  1 margin | 8 data columns | 1 margin
    height = 15 units:  1 margin | 6 data rows of 2 units each | 2 margin

At 320x240 a unit is 32 px across and 16 px down, so every data cell is a 32x32 luma block
whose edges fall on the 16x16 macroblock grid (likewise at 640x480, 1280x720, ...).  Each of
the 48 cells is flat black (luma 16, bit 0) or flat white (luma 235, bit 1) with neutral
chroma.  Cells are numbered row by row, top left first, and hold two big-endian 24-bit words:
cells 0-23 (rows 0-2) the frame index, cells 24-47 (rows 3-5) its CRC-24 (RFC 4880), so a
single flipped block, a smear across rows, or half of one frame and half of another fails the
check.  The margins, visible all round the grid, show a colour gradient that moves with the
index, so an encoder has real motion to code.

A reader samples the central half (in each direction) of every cell, far from the block edges
where compression rings and scaling blurs, and requires each mean to be clearly dark or clearly
light.  At a quarter of 320x240 a cell is still 8x8 pixels.

Audio: :class:`ToneAudioTrack` plays a sine tone and :func:`tone_strength` measures how much of
a received signal's energy sits at that tone.  :class:`FrameVerifier` keeps the books on a
received video stream: verified, corrupt, duplicated, reordered and missing frames, freezes and
frame rate.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

Clock = Callable[[], float]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_SAMPLE_RATE = 48000
AUDIO_SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz

INDEX_BITS = 24
INDEX_MODULO = 1 << INDEX_BITS
GRID_COLUMNS = 8
GRID_ROWS = 6
UNITS_ACROSS = 10  # 1 + GRID_COLUMNS + 1
UNITS_DOWN = 15  # 1 + 2 * GRID_ROWS + 2
DARK = 16
LIGHT = 235
# A sampled cell mean must be below DARK_MAX or above LIGHT_MIN; anything between is ambiguous.
DARK_MAX = 80.0
LIGHT_MIN = 170.0
MIN_SIZE = 32  # smallest width or height a pattern is drawn at

CRC24_INIT = 0xB704CE
CRC24_POLY = 0x1864CFB


def crc24(data: bytes) -> int:
    """CRC-24 of RFC 4880 (OpenPGP): poly 0x864CFB, init 0xB704CE, no reflection, no final XOR."""
    crc = CRC24_INIT
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= CRC24_POLY
    return crc & 0xFFFFFF


def _pattern_bits(index: int) -> list[int]:
    """The 48 cell values, cell 0 first: the index then its CRC-24, each most significant bit first."""
    word = (index << INDEX_BITS) | crc24(index.to_bytes(3, "big"))
    return [(word >> (2 * INDEX_BITS - 1 - i)) & 1 for i in range(2 * INDEX_BITS)]


def _cell_box(column: int, row: int, width: int, height: int) -> tuple[float, float, float, float]:
    """A cell's edges (x0, y0, x1, y1) in pixels, before rounding."""
    unit_x = width / UNITS_ACROSS
    unit_y = height / UNITS_DOWN
    x0 = (1 + column) * unit_x
    y0 = (1 + 2 * row) * unit_y
    return x0, y0, x0 + unit_x, y0 + 2 * unit_y


def _even(value: float) -> int:
    """Round a coordinate to the nearest even pixel, so a block covers whole 4:2:0 chroma samples."""
    return 2 * round(value / 2)


def _background(index: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U and V planes of a smooth colour gradient that drifts with the frame index."""
    phase = 2 * math.pi * index / 60
    x = np.arange(width, dtype=np.float32)[None, :] / width
    y = np.arange(height, dtype=np.float32)[:, None] / height
    luma = 128 + 80 * np.sin(2 * math.pi * (1.5 * x + 0.5 * y) - phase)
    cx = np.arange(width // 2, dtype=np.float32)[None, :] / (width // 2)
    cy = np.arange(height // 2, dtype=np.float32)[:, None] / (height // 2)
    u = 128 + 48 * np.sin(2 * math.pi * (cx - cy) + phase)
    v = 128 + 48 * np.cos(2 * math.pi * (cx + 0.7 * cy) - 2 * phase)
    return (luma.astype(np.uint8), u.astype(np.uint8), v.astype(np.uint8))


def draw_pattern(index: int, width: int = 320, height: int = 240) -> av.VideoFrame:
    """A yuv420p frame carrying ``index`` (0 <= index < 2**24); no pts or time base set."""
    if not 0 <= index < INDEX_MODULO:
        raise ValueError(f"frame index must be in [0, {INDEX_MODULO}), not {index}")
    if width % 2 or height % 2 or width < MIN_SIZE or height < MIN_SIZE:
        raise ValueError(f"frame size must be even and at least {MIN_SIZE}x{MIN_SIZE}, not {width}x{height}")
    luma, u, v = _background(index, width, height)
    for cell, bit in enumerate(_pattern_bits(index)):
        x0, y0, x1, y1 = _cell_box(cell % GRID_COLUMNS, cell // GRID_COLUMNS, width, height)
        left, top, right, bottom = _even(x0), _even(y0), _even(x1), _even(y1)
        luma[top:bottom, left:right] = LIGHT if bit else DARK
        u[top // 2 : bottom // 2, left // 2 : right // 2] = 128
        v[top // 2 : bottom // 2, left // 2 : right // 2] = 128
    planes = np.concatenate([luma.ravel(), u.ravel(), v.ravel()]).reshape(-1, width)
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma plane as a (height, width) uint8 array."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    return frame.to_ndarray()[: frame.height]


def read_frame_index(frame: av.VideoFrame) -> int | None:
    """The index a :class:`PatternVideoTrack` drew into ``frame``, or None if the pattern is not
    there or fails its check.  Works on the frame as drawn and on copies scaled to any size."""
    luma = _luma(frame)
    height, width = luma.shape
    if width < GRID_COLUMNS * 4 or height < GRID_ROWS * 4:
        return None
    word = 0
    for cell in range(2 * INDEX_BITS):
        x0, y0, x1, y1 = _cell_box(cell % GRID_COLUMNS, cell // GRID_COLUMNS, width, height)
        qx, qy = (x1 - x0) / 4, (y1 - y0) / 4
        left, top = round(x0 + qx), round(y0 + qy)
        right, bottom = max(left + 1, round(x1 - qx)), max(top + 1, round(y1 - qy))
        mean = float(luma[top:bottom, left:right].mean())
        if mean < DARK_MAX:
            bit = 0
        elif mean > LIGHT_MIN:
            bit = 1
        else:
            return None
        word = (word << 1) | bit
    index, check = word >> INDEX_BITS, word & (INDEX_MODULO - 1)
    if crc24(index.to_bytes(3, "big")) != check:
        return None
    return index


class PatternVideoTrack(MediaStreamTrack):
    """Video frames 0, 1, 2, ... each carrying its index (see the module docstring), paced in
    real time at ``fps``.  Indices wrap after 2**24 frames (13 days at 15 fps)."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: float = 15, clock: Clock | None = None) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError("fps must be positive")
        draw_pattern(0, width, height)  # validates the size
        self.width = width
        self.height = height
        self.fps = fps
        self.clock: Clock = clock or time.monotonic
        self.frames_sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        """The next frame, no earlier than ``index / fps`` seconds after the first one."""
        if self.readyState != "live":
            raise MediaStreamError
        index = self.frames_sent
        if self._start is None:
            self._start = self.clock()
        else:
            await asyncio.sleep(max(0.0, self._start + index / self.fps - self.clock()))
        frame = self.draw(index)
        frame.pts = round(index * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent = index + 1
        return frame

    def draw(self, index: int) -> av.VideoFrame:
        return draw_pattern(index % INDEX_MODULO, self.width, self.height)


class ToneAudioTrack(MediaStreamTrack):
    """A continuous sine tone: 48 kHz signed 16-bit frames of 20 ms (960 samples), paced in real
    time.  ``layout`` is "mono" or "stereo" (packed, the same tone in both channels)."""

    kind = "audio"

    def __init__(
        self,
        frequency: float = 440.0,
        amplitude: float = 0.5,
        layout: str = "mono",
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        if layout not in ("mono", "stereo"):
            raise ValueError("layout must be 'mono' or 'stereo'")
        if not 0 < frequency < AUDIO_SAMPLE_RATE / 2:
            raise ValueError("frequency must be between 0 and 24 kHz")
        if not 0 <= amplitude <= 1:
            raise ValueError("amplitude must be between 0 and 1")
        self.frequency = frequency
        self.amplitude = amplitude
        self.layout = layout
        self.clock: Clock = clock or time.monotonic
        self.samples_sent = 0
        self._phase = 0.0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of tone, no earlier than its place on the timeline."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self.clock()
        else:
            await asyncio.sleep(max(0.0, self._start + self.samples_sent / AUDIO_SAMPLE_RATE - self.clock()))
        step = 2 * math.pi * self.frequency / AUDIO_SAMPLE_RATE
        phases = self._phase + step * np.arange(AUDIO_SAMPLES_PER_FRAME)
        self._phase = (self._phase + step * AUDIO_SAMPLES_PER_FRAME) % (2 * math.pi)
        samples = np.round(self.amplitude * 32767 * np.sin(phases)).astype(np.int16)
        if self.layout == "stereo":
            samples = np.repeat(samples, 2)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=self.layout)
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = self.samples_sent
        frame.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
        self.samples_sent += AUDIO_SAMPLES_PER_FRAME
        return frame


def _mono_float(frame: av.AudioFrame) -> np.ndarray:
    """One frame's samples as mono float64 in [-1, 1], whatever its sample format and layout."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        data = data[:, : frame.samples]
    else:
        data = data.reshape(-1)[: frame.samples * channels].reshape(-1, channels).T
    if np.issubdtype(data.dtype, np.floating):
        values = data.astype(np.float64)
    elif data.dtype == np.uint8:
        values = (data.astype(np.float64) - 128) / 128
    else:
        values = data.astype(np.float64) / (np.iinfo(data.dtype).max + 1)
    return values.mean(axis=0)


def tone_strength(frames: Sequence[av.AudioFrame], frequency: float, bandwidth: float = 20.0) -> float:
    """The fraction (0..1) of the signal's energy within ``bandwidth`` Hz of ``frequency``.

    The frames are converted to mono float, concatenated, stripped of any DC offset and
    Hann-windowed before an FFT.  Silence and empty input give 0.  All frames must share one
    sample rate.
    """
    if not frames:
        return 0.0
    rates = {frame.sample_rate for frame in frames}
    if len(rates) != 1:
        raise ValueError(f"frames have different sample rates: {sorted(rates)}")
    (rate,) = rates
    signal = np.concatenate([_mono_float(frame) for frame in frames])
    signal = signal - signal.mean()
    power = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) ** 2
    total = float(power.sum())
    if total <= 1e-12 * len(signal):
        return 0.0
    bins = np.fft.rfftfreq(len(signal), 1 / rate)
    # Never narrower than the Hann window's main lobe (two bins each side).
    half_width = max(bandwidth, 2.5 * rate / len(signal))
    return float(power[np.abs(bins - frequency) <= half_width].sum()) / total


class FrameVerifier:
    """Bookkeeping for one received :class:`PatternVideoTrack` stream.

    Every frame passed to :meth:`add` is *received*; it is *verified* if its pattern reads back
    and *corrupt* otherwise.  Among verified frames, an index seen before is a *duplicate*, an
    index lower than the highest seen so far is *out of order*, and indices between the lowest and
    highest seen that never arrived are *missing* (a late frame stops being missing).  A *freeze*
    is a wait of more than ``freeze_threshold`` seconds between two fresh frames (verified, with
    an index higher than any before); corrupt, duplicate and late frames do not end a freeze.
    The frame rate is that of fresh frames.  Indices further than ``window`` below the highest
    are only counted as out of order (they are too old to tell whether they are duplicates).
    """

    def __init__(self, clock: Clock = time.monotonic, freeze_threshold: float = 0.5, window: int = 4096) -> None:
        self.clock = clock
        self.freeze_threshold = freeze_threshold
        self.window = window
        self.frames_received = 0
        self.frames_verified = 0
        self.frames_corrupt = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.freezes = 0
        self.longest_gap = 0.0
        self.first_index: int | None = None
        self.lowest_index: int | None = None
        self.highest_index: int | None = None
        self.fresh_frames = 0
        self._unique = 0
        self._seen: set[int] = set()
        self._first_fresh_at: float | None = None
        self._last_fresh_at: float | None = None

    @property
    def missing(self) -> int:
        """Indices between the lowest and highest received that have not (yet) arrived."""
        if self.lowest_index is None or self.highest_index is None:
            return 0
        return self.highest_index - self.lowest_index + 1 - self._unique

    @property
    def fps(self) -> float:
        """Fresh frames per second between the first and the last fresh frame."""
        if self._first_fresh_at is None or self._last_fresh_at is None:
            return 0.0
        span = self._last_fresh_at - self._first_fresh_at
        return (self.fresh_frames - 1) / span if span > 0 else 0.0

    def add(self, frame: av.VideoFrame) -> int | None:
        """Account for one decoded frame; returns its index, or None if it is corrupt."""
        now = self.clock()
        self.frames_received += 1
        index = read_frame_index(frame)
        if index is None:
            self.frames_corrupt += 1
            return None
        self.frames_verified += 1
        if self.highest_index is None or self.lowest_index is None:
            self.first_index = self.lowest_index = self.highest_index = index
            self._record_new(index)
            self._fresh(now)
        elif index in self._seen:
            self.duplicates += 1
        elif index > self.highest_index:
            self.highest_index = index
            self._record_new(index)
            self._fresh(now)
        else:
            self.out_of_order += 1
            if index >= self.highest_index - self.window:
                self.lowest_index = min(self.lowest_index, index)
                self._record_new(index)
        return index

    def _record_new(self, index: int) -> None:
        self._unique += 1
        self._seen.add(index)
        if len(self._seen) > 2 * self.window and self.highest_index is not None:
            floor = self.highest_index - self.window
            self._seen = {seen for seen in self._seen if seen >= floor}

    def _fresh(self, now: float) -> None:
        if self._last_fresh_at is not None:
            gap = now - self._last_fresh_at
            self.longest_gap = max(self.longest_gap, gap)
            if gap > self.freeze_threshold:
                self.freezes += 1
        else:
            self._first_fresh_at = now
        self._last_fresh_at = now
        self.fresh_frames += 1

    def report(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict."""
        return {
            "frames_received": self.frames_received,
            "frames_verified": self.frames_verified,
            "frames_corrupt": self.frames_corrupt,
            "out_of_order": self.out_of_order,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "freezes": self.freezes,
            "longest_gap_ms": round(self.longest_gap * 1000, 1),
            "fps": round(self.fps, 2),
            "first_index": self.first_index,
            "last_index": self.highest_index,
        }


class PausableTrack(MediaStreamTrack):
    """A simulcast layer that dynacast may pause: paused, it produces nothing until resumed."""

    def __init__(self) -> None:
        super().__init__()
        self._running = asyncio.Event()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def _produce(self) -> None:
        """Before each frame: end when the track has ended, wait while it is paused."""
        if self.readyState != "live":
            raise MediaStreamError
        await self._running.wait()


class PatternLayerTrack(PausableTrack):
    """One encoding of a :class:`SimulcastPattern`: the same frame indices as its siblings at
    the same moments, at its own size.  A paused layer (dynacast) produces nothing until
    resumed, then continues at the current index."""

    kind = "video"

    def __init__(self, source: SimulcastPattern, width: int, height: int) -> None:
        super().__init__()
        draw_pattern(0, width, height)
        self.source = source
        self.width = width
        self.height = height
        self.frames_sent = 0
        self._next = 0

    async def recv(self) -> av.VideoFrame:
        await self._produce()
        source = self.source
        start = source.start()
        now = source.clock()
        # Never behind the shared timeline: after a pause, jump to the current index.
        index = max(self._next, int((now - start) * source.fps))
        await asyncio.sleep(max(0.0, start + index / source.fps - now))
        frame = draw_pattern(index % INDEX_MODULO, self.width, self.height)
        frame.pts = round(index * VIDEO_CLOCK_RATE / source.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._next = index + 1
        self.frames_sent += 1
        return frame


class SimulcastPattern:
    """A verifiable pattern published as several encodings (lowest first), as a browser does
    with simulcast: every layer carries the same frame index at the same moment, so a
    subscriber moved between layers keeps seeing one increasing sequence of indices."""

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]] = ((320, 180), (640, 360), (1280, 720)),
        fps: float = 15,
        clock: Clock | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        if len(sizes) < 2:
            raise ValueError("simulcast needs at least two layers")
        self.fps = fps
        self.clock: Clock = clock or time.monotonic
        self._start: float | None = None
        self.tracks = [PatternLayerTrack(self, w, h) for w, h in sorted(sizes, key=lambda s: s[0] * s[1])]

    kind = "video"

    def start(self) -> float:
        if self._start is None:
            self._start = self.clock()
        return self._start

    def stop(self) -> None:
        for track in self.tracks:
            track.stop()


# Recording checks: solid colours and a flash with a beep -------------------------------------


def solid_frame(color: tuple[int, int, int], width: int, height: int) -> av.VideoFrame:
    """A frame of one colour, given as (Y, U, V)."""
    data = np.empty((height * 3 // 2, width), np.uint8)
    data[:height] = color[0]
    flat = data.reshape(-1)
    quarter = width * height // 4
    flat[width * height : width * height + quarter] = color[1]
    flat[width * height + quarter :] = color[2]
    return av.VideoFrame.from_ndarray(data, format="yuv420p")


class SolidVideoTrack(PatternVideoTrack):
    """Frames of one colour (Y, U, V), paced like the pattern: a participant a recording's tiles
    can be told apart by."""

    def __init__(self, color: tuple[int, int, int], width: int = 320, height: int = 180, fps: float = 15, clock: Clock | None = None) -> None:
        super().__init__(width, height, fps, clock)
        self.color = color

    def draw(self, index: int) -> av.VideoFrame:
        return solid_frame(self.color, self.width, self.height)


class FlashBeep:
    """A video track that flashes white and an audio track that beeps at the same instants:
    every ``period`` seconds from ``epoch`` (on ``clock``) for ``length`` seconds.  Both pace
    themselves by the same clock, so a recording that keeps audio and video in sync shows each
    flash with its beep."""

    def __init__(
        self, period: float = 1.0, length: float = 0.2, fps: float = 30, width: int = 320, height: int = 180,
        frequency: float = 1000.0, clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or time.monotonic
        self.epoch = self.clock()
        self.period, self.length = period, length
        self.video = _FlashTrack(self, fps, width, height)
        self.audio = _BeepTrack(self, frequency)

    def on(self, at: float) -> bool:
        return (at - self.epoch) % self.period < self.length


class _FlashTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, source: FlashBeep, fps: float, width: int, height: int) -> None:
        super().__init__()
        self.source, self.fps, self.width, self.height = source, fps, width, height
        self.frames_sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        clock = self.source.clock
        if self._start is None:
            # start on a frame boundary of the flash period, so that flashes begin on a frame
            self._start = self.source.epoch + math.ceil((clock() - self.source.epoch) * self.fps) / self.fps
        at = self._start + self.frames_sent / self.fps
        await asyncio.sleep(max(0.0, at - clock()))
        frame = solid_frame((235, 128, 128) if self.source.on(at) else (16, 128, 128), self.width, self.height)
        frame.pts = round(self.frames_sent * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame


class _BeepTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, source: FlashBeep, frequency: float) -> None:
        super().__init__()
        self.source, self.frequency = source, frequency
        self.samples_sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        clock = self.source.clock
        if self._start is None:
            self._start = self.source.epoch + math.ceil((clock() - self.source.epoch) * 50) / 50
        at = self._start + self.samples_sent / AUDIO_SAMPLE_RATE
        await asyncio.sleep(max(0.0, at - clock()))
        times = at + np.arange(AUDIO_SAMPLES_PER_FRAME) / AUDIO_SAMPLE_RATE
        gate = ((times - self.source.epoch) % self.source.period) < self.source.length
        samples = np.round(gate * 0.5 * 32767 * np.sin(2 * math.pi * self.frequency * times)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = self.samples_sent
        frame.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
        self.samples_sent += AUDIO_SAMPLES_PER_FRAME
        return frame
