"""The recorder process: ``python -m recorder.worker --output FILE ...``.

It reads the SFU's messages (see ``recorder.wire``) on stdin, decodes each track (aiortc's
jitter buffer, depayloaders and decoders, which are PyAV underneath), places everything on one
timeline (``recorder.timeline``), mixes the audio into AAC (``recorder.mixer``), draws the video
(``recorder.layout``, ``recorder.compositor``) at a fixed frame rate into H.264, and writes a
fragmented MP4 flushed fragment by fragment, so that the file is playable up to its last
fragment whatever happens to this process.

Output time ``t`` is rendered once the monotonic clock passes ``start + t + delay``: ``delay``
is how late a packet may arrive and still be used.  On its stdout the process writes JSON lines:
``{"event": "keyframe", "track": N, "layer": L}`` when it needs a keyframe, and a final
``{"event": "done", ...}`` with what it wrote.  SIGTERM, or the end of stdin, finishes the file
at the current time.
"""

from __future__ import annotations

import argparse
import fractions
import json
import logging
import math
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

import av
import numpy as np
from aiortc.codecs import depayload
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from recorder import wire
from recorder.compositor import Canvas, TileDamage, TileState
from recorder.config import WorkerSettings, add_arguments, from_arguments
from recorder.layout import LAYOUTS, Rect, arrange
from recorder.mixer import BLOCK, AudioMixer
from recorder.timeline import ParticipantSync, StreamClock
from sfu.aiortc_client import jitter_packet

log = logging.getLogger("recorder.worker")

SAMPLE_RATE = 48000
FRAGMENT_OPTIONS = {"movflags": "frag_keyframe+delay_moov+default_base_moof", "flush_packets": "1"}
CAMERA_STALE = 2.0  # seconds without a new frame before a camera counts as off
KEYFRAME_ASK_INTERVAL = 0.5
MAX_FRAMES_QUEUED = 90


DECODERS = {"video/vp8": "vp8", "video/h264": "h264", "audio/opus": "libopus"}


def vp8_keyframe(data: bytes) -> bool:
    """Whether a VP8 frame (depayloaded) is a keyframe: bit 0 of its frame tag is clear."""
    return len(data) >= 3 and not data[0] & 1


_SAMPLE_TYPES = {"s16": np.int16, "flt": np.float32}


def _samples(frame: av.AudioFrame) -> np.ndarray:
    """A mono frame's samples as a flat array: a view of its plane where the format is packed
    (no copy, no stacking), else through ``to_ndarray``."""
    dtype = _SAMPLE_TYPES.get(frame.format.name)
    if dtype is None or len(frame.planes) != 1 or frame.layout.nb_channels != 1:
        return frame.to_ndarray().reshape(-1)
    return np.frombuffer(frame.planes[0], dtype)[: frame.samples]


def make_decoder(mime_type: str) -> av.CodecContext:
    """A single-threaded decoder (threads only add overhead at these sizes); Opus decodes
    straight to 48 kHz mono float, which is what the mixer takes."""
    name = DECODERS.get(mime_type.lower())
    if name is None:
        raise ValueError(f"the recorder cannot decode {mime_type}")
    context = av.CodecContext.create(name, "r")
    context.thread_count = 1
    if name == "libopus":
        context.sample_rate = SAMPLE_RATE
        context.layout = "mono"
        context.format = "flt"
    return context


class Options(WorkerSettings):
    """The recording's settings, its file and the monotonic time its output starts at."""

    output: str
    start: float = 0.0
    # Benchmarks only: every composed frame is also written here, raw yuv420p, so that the
    # encoder alone can be measured on exactly the frames the recorder encodes.
    dump_raw: str | None = None


@dataclass
class Track:
    number: int
    participant: str
    kind: str
    source: str
    codec: RTCRtpCodecParameters
    muted: bool = False
    layer: int | None = None
    clocks: dict[int, StreamClock] = field(default_factory=dict)
    jitter: JitterBuffer | None = None
    decoder: Any = None
    frames: deque[tuple[float, int, av.VideoFrame]] = field(default_factory=deque)
    shown: tuple[float, int, av.VideoFrame] | None = None
    last_frame_at: float = float("-inf")
    last_keyframe_ask: float = float("-inf")
    decoded: int = 0
    skipping: bool = False  # frames dropped undecoded (off the layout): the decoder needs a keyframe


class Recording:
    """Everything the worker knows and writes; driven by ``handle`` and ``render_due``."""

    def __init__(self, options: Options, emit: Callable[[dict[str, Any]], None]) -> None:
        if options.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        self.options = options
        self.emit = emit
        self.start = options.start
        self.tracks: dict[int, Track] = {}
        self.people: list[tuple[str, str]] = []  # (identity, name) in join order
        self.seen_names: dict[str, str] = {}
        self.syncs: dict[str, ParticipantSync] = {}
        self.dominant: str | None = None
        self.mixer = AudioMixer()
        self.canvas = Canvas(options.width, options.height)
        self.damage = TileDamage()
        self.drawn_people: set[str] | None = None  # whose cameras the last frame drew (None: none drawn yet)
        self.video_index = 0
        self.encoder_cpu = 0.0  # CPU seconds libx264 took (its encode calls, single-threaded, in this thread)
        self.stop_at: float | None = None
        self.finished = False
        self.bad_messages = 0
        self._serial = 0
        self.container = av.open(options.output, "w", format="mp4", options=FRAGMENT_OPTIONS)
        self.raw = open(options.dump_raw, "wb") if options.dump_raw else None  # noqa: SIM115 (closed in close())
        self.video = self.container.add_stream(
            "libx264", rate=options.fps,
            options={
                "preset": options.preset, "tune": "zerolatency", "crf": "23",
                "maxrate": str(options.video_bitrate), "bufsize": str(options.video_bitrate * 2),
                "g": str(options.fps * 2), "keyint_min": str(options.fps), "threads": "1",
            },
        )
        self.video.width, self.video.height, self.video.pix_fmt = options.width, options.height, "yuv420p"
        self.video_time_base = fractions.Fraction(1, options.fps)
        self.audio = self.container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        self.audio.bit_rate = options.audio_bitrate
        self.audio_time_base = fractions.Fraction(1, SAMPLE_RATE)

    # Messages ----------------------------------------------------------------------------------

    def handle(self, kind: int, body: bytes) -> None:
        message = wire.decode(kind, body)
        if message is None:
            self.bad_messages += 1
        elif isinstance(message, wire.Packet):
            self.on_packet(message)
        elif isinstance(message, wire.SenderReport):
            self.on_report(message)
        else:
            self.on_event(message)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        try:
            if kind == "track":
                number = int(event["track"])
                codec = RTCRtpCodecParameters(mimeType=str(event["codec"]), clockRate=int(event["clock_rate"]), payloadType=96)
                make_decoder(codec.mimeType)  # refuses codecs it cannot decode
                if codec.clockRate <= 0 or codec.mimeType.split("/")[0].lower() != event["kind"]:
                    raise ValueError("the clock rate is not positive, or the codec is not of the track's kind")
                participant = str(event["participant"])
                self.syncs.setdefault(participant, ParticipantSync())
                self.tracks[number] = Track(
                    number, participant, str(event["kind"]), str(event.get("source") or ""), codec, bool(event.get("muted"))
                )
            elif kind == "untrack":
                track = self.tracks.pop(int(event["track"]), None)
                if track is not None and track.kind == "audio":
                    self.mixer.forget(track.number)
            elif kind == "participants":
                self.people = [(str(p["identity"]), str(p["name"])) for p in event["participants"]]
                for identity, name in self.people:
                    self.seen_names.setdefault(identity, name)
            elif kind == "speakers":
                dominant = event.get("dominant")
                self.dominant = str(dominant) if dominant else None
            elif kind == "muted":
                track = self.tracks.get(int(event["track"]))
                if track is not None:
                    track.muted = bool(event["muted"])
            elif kind == "stop":
                at = float(event["at"])
                if not math.isfinite(at):
                    raise ValueError("the stop time is not a finite number")
                self.stop_at = at
            else:
                self.bad_messages += 1
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int() of an infinite number
            self.bad_messages += 1

    def _clock(self, track: Track, layer: int) -> StreamClock:
        clock = track.clocks.get(layer)
        if clock is None:
            clock = track.clocks[layer] = StreamClock(track.codec.clockRate, self.syncs[track.participant])
        return clock

    def on_report(self, report: wire.SenderReport) -> None:
        track = self.tracks.get(report.track)
        if track is not None:
            self._clock(track, report.layer).on_report(report.ntp, report.rtp)

    def on_packet(self, packet: wire.Packet) -> None:
        track = self.tracks.get(packet.track)
        if track is None:
            self.bad_messages += 1
            return
        clock = self._clock(track, packet.layer)
        value = clock.on_packet(packet.timestamp, packet.arrival)
        try:
            data = depayload(track.codec, packet.payload)
        except (ValueError, IndexError, AssertionError):
            self.bad_messages += 1
            return
        if track.kind == "audio":
            self._audio(track, clock, value, data)
            return
        if packet.layer != track.layer or track.jitter is None:
            track.layer = packet.layer
            track.jitter = JitterBuffer(capacity=128, is_video=True)
        lost, frame = track.jitter.add(jitter_packet(packet.marker, packet.sequence, packet.timestamp, data))
        if lost:
            self._ask_keyframe(track, packet.arrival)
        if frame is not None:
            self._video(track, clock, frame, packet.arrival)

    def _decode(self, track: Track, data: bytes) -> list[Any]:
        if track.decoder is None:
            track.decoder = make_decoder(track.codec.mimeType)
        try:
            return list(track.decoder.decode(av.Packet(data)))
        except (av.FFmpegError, ValueError):
            return []

    def _audio(self, track: Track, clock: StreamClock, value: int, data: bytes) -> None:
        if track.muted:
            return
        at = clock.local_time(value)
        for frame in self._decode(track, data):
            if at is not None and frame.sample_rate == SAMPLE_RATE:
                samples = _samples(frame)
                self.mixer.add(track.number, round((at - self.start) * SAMPLE_RATE), samples)
                at += frame.samples / SAMPLE_RATE

    def _video(self, track: Track, clock: StreamClock, frame: JitterFrame, arrival: float) -> None:
        if track.codec.mimeType.lower() == "video/vp8" and not self._decode_video(track, frame.data, arrival):
            return
        value = clock.unwrap(frame.timestamp)
        decoded = self._decode(track, frame.data)
        if not decoded:
            self._ask_keyframe(track, arrival)
            return
        at = clock.local_time(value)
        if at is None:
            return
        for picture in decoded:
            self._serial += 1
            track.frames.append((at, self._serial, picture))
            track.decoded += 1
        while len(track.frames) > MAX_FRAMES_QUEUED:
            track.frames.popleft()
        track.last_frame_at = arrival

    def _decode_video(self, track: Track, data: bytes, arrival: float) -> bool:
        """Whether to decode this VP8 frame: not while the camera is off the layout (its frames
        would never be drawn), and after that not before a keyframe (its decoder missed the
        frames in between; a keyframe is asked for).  Every frame of a drawn track is decoded:
        VP8's inter frames depend on all the frames before."""
        if track.source != "screen" and self.drawn_people is not None and track.participant not in self.drawn_people:
            if not track.skipping:
                track.skipping = True
                track.frames.clear()
            return False
        if track.skipping:
            if not vp8_keyframe(data):
                self._ask_keyframe(track, arrival)
                return False
            track.skipping = False
        return True

    def _ask_keyframe(self, track: Track, now: float) -> None:
        if now - track.last_keyframe_ask >= KEYFRAME_ASK_INTERVAL and track.layer is not None:
            track.last_keyframe_ask = now
            self.emit({"event": "keyframe", "track": track.number, "layer": track.layer})

    # Rendering ---------------------------------------------------------------------------------

    def video_time(self, index: int) -> float:
        return self.start + index / self.options.fps

    def audio_time(self, block: int) -> float:
        return self.start + block * BLOCK / SAMPLE_RATE

    def next_due(self) -> float:
        """The monotonic time at which the next output step can be rendered."""
        return min(self.video_time(self.video_index), self.audio_time(self.mixer.next_block + 1)) + self.options.delay

    def render_due(self, now: float, final: bool = False) -> None:
        """Render all output up to ``now - delay`` (or everything up to the stop, when final)."""
        horizon = now - self.options.delay
        end = self.stop_at if self.stop_at is not None else float("inf")
        if final:
            horizon = end
        while self.audio_time(self.mixer.next_block) < end and (final or self.audio_time(self.mixer.next_block + 1) <= horizon):
            block = self.mixer.next_block
            self._write_audio(self.mixer.mix(), block)
        while self.video_time(self.video_index) <= horizon and self.video_time(self.video_index) < end:
            self._write_video(self.video_time(self.video_index))
        if self.stop_at is not None and now - self.options.delay >= self.stop_at and not final:
            self.render_due(now, final=True)

    def _write_audio(self, samples: np.ndarray, block: int) -> None:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = block * BLOCK
        frame.time_base = self.audio_time_base
        for packet in self.audio.encode(frame):
            self.container.mux(packet)

    def _camera(self, identity: str) -> Track | None:
        for track in self.tracks.values():
            if track.participant == identity and track.kind == "video" and track.source != "screen":
                return track
        return None

    def _frame_at(self, track: Track, at: float) -> tuple[float, int, av.VideoFrame] | None:
        frames = track.frames
        while frames and frames[0][0] <= at:
            track.shown = frames.popleft()
        if track.shown is not None and at - track.shown[0] > CAMERA_STALE:
            return None
        return track.shown

    def _write_video(self, at: float) -> None:
        names = dict(self.people)
        screen = next(
            (t for t in reversed(self.tracks.values()) if t.source == "screen" and t.kind == "video" and not t.muted and self._frame_at(t, at)),
            None,
        )
        tiles = arrange(
            [identity for identity, _ in self.people], f"screen:{screen.number}" if screen else None,
            self.dominant, self.options.layout, self.options.width, self.options.height,
        )
        entries: list[tuple[Rect, TileState, av.VideoFrame | None]] = []
        drawn_people: set[str] = set()
        for key, rect in tiles:
            if screen is not None and key == f"screen:{screen.number}":
                picture = self._frame_at(screen, at)
                name = f"{names.get(screen.participant, self.seen_names.get(screen.participant, ''))} (screen)"
            else:
                drawn_people.add(key)
                camera = self._camera(key)
                picture = self._frame_at(camera, at) if camera is not None and not camera.muted else None
                name = names.get(key, key)
            outlined = key == self.dominant and len(tiles) > 1 and self.options.layout == "grid" and screen is None
            state = TileState(key, None if picture is None else picture[1], name, outlined)
            entries.append((rect, state, None if picture is None else picture[2]))
        self.drawn_people = drawn_people
        canvas = self.canvas
        clear, todo = self.damage.plan([(rect, state) for rect, state, _ in entries])
        if clear:
            canvas.clear()
        for index in todo:  # tiles whose picture did not change keep their pixels
            rect, state, video = entries[index]
            if video is None:
                canvas.placeholder(rect, state.name)
            else:
                canvas.video(video, rect)
            canvas.label(rect, state.name)
            if state.outlined:
                canvas.outline(rect)
        frame = canvas.frame()
        frame.pts = self.video_index
        frame.time_base = self.video_time_base
        began = time.thread_time()
        packets = self.video.encode(frame)
        self.encoder_cpu += time.thread_time() - began
        for packet in packets:
            self.container.mux(packet)
        if self.raw is not None:
            self.raw.write(frame.to_ndarray().tobytes())
        self.video_index += 1

    def close(self) -> dict[str, Any]:
        for stream in (self.video, self.audio):
            for packet in stream.encode(None):
                self.container.mux(packet)
        self.container.close()
        if self.raw is not None:
            self.raw.close()
        self.finished = True
        return {
            "event": "done",
            "duration": self.video_index / self.options.fps,
            "frames": self.video_index,
            "participants": sorted(set(self.seen_names.values())),
            "late_audio_samples": self.mixer.late_samples,
            "encoder_cpu_seconds": round(self.encoder_cpu, 4),
            "bad_messages": self.bad_messages,
        }


def _read(stream: BinaryIO, chunks: queue.SimpleQueue[bytes | None]) -> None:
    try:
        while True:
            data = stream.read1(1 << 18) if hasattr(stream, "read1") else stream.read(1 << 18)
            if not data:
                break
            chunks.put(data)
    finally:
        chunks.put(None)


def run(options: Options, stdin: BinaryIO, stdout: TextIO, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    def emit(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    recording = Recording(options, emit)
    chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    threading.Thread(target=_read, args=(stdin, chunks), daemon=True, name="recorder-stdin").start()
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    reader = wire.Reader()
    ended = False
    while True:
        timeout = max(0.0, min(recording.next_due() - clock(), 0.1))
        # One wake-up takes everything queued and parses it in one pass.
        batch: list[bytes] = []
        try:
            chunk = chunks.get(timeout=timeout)
            while chunk is not None:
                batch.append(chunk)
                chunk = chunks.get_nowait()
            ended = True
        except queue.Empty:
            pass
        if batch:
            try:
                for kind, body in reader.feed(b"".join(batch) if len(batch) > 1 else batch[0]):
                    recording.handle(kind, body)
            except wire.WireError as exc:
                log.error("the SFU's stream is broken: %s", exc)
                ended = True
        now = clock()
        if ended or stopping.is_set():
            # the final render goes up to the stop, never past now (a stop time ahead would never end)
            recording.stop_at = now if recording.stop_at is None else min(recording.stop_at, now)
            recording.render_due(now, final=True)
            break
        recording.render_due(now)
        if recording.stop_at is not None and now - options.delay >= recording.stop_at:
            break
    result = recording.close()
    emit(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recorder.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--start", type=float, help="monotonic time of the recording's start (default: now)")
    parser.add_argument("--dump-raw", help="benchmarks only: also write every composed frame, raw yuv420p, to this file")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    start = args.start if args.start is not None else time.monotonic()
    options = Options(output=args.output, start=start, dump_raw=args.dump_raw, **from_arguments(args))
    run(options, sys.stdin.buffer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
