"""Recorder benchmark: CPU seconds per second of output of one recording, for N participants.

Each participant publishes simulcast-like layers of one camera (the same scene encoded as
320x180 VP8 at 250 kbit/s and 640x360 at 1 Mbit/s, 30 fps) and a microphone (Opus).  The layer
each participant's video is replayed from is the one the SFU's recorder tap would take for the
participant's tile in the layout (``recorder.manager.pick_layer``, the function the manager
calls); the clips are encoded once and replayed in real time into a recorder worker process
(``python -m recorder.worker``, 1280x720 at 30 fps, H.264 and AAC, the server's default
settings), exactly as the SFU's taps would feed it.  The worker is pinned to core 0, this
process to core 1.  Per trial the worker's CPU (utime + stime from /proc) is read one second
after the recording starts (imports and set-up done) and again at the stop; CPU over the output
seconds in between is the figure.

Baseline, measured in the same run: the H.264 encoder alone (libx264 with the recorder's
settings, single-threaded, in this process) on **the very frames the recorder encodes**: for
each participant count and rule, one extra run of the worker (not measured) writes every composed
frame raw (``--dump-raw``), and each trial then times libx264's ``encode`` calls alone on them.
The ratio says what decoding, mixing and compositing add to the encoder's cost.  The worker
also reports libx264's own CPU inside it (its ``encode`` calls, timed with the thread's CPU clock):
the same encoder between decoding and drawing costs more than alone, and the report gives the
ratio to that too (``ratio_to_encoder_in_worker``).  Until
2026-12-08 the baseline re-encoded the recording's decoded output instead: those frames passed
through H.264 once already, lost their grain and noise, and are cheaper to encode (about 20% at
9 participants), which overstated the ratio; that figure is still reported
(``encoder_on_output``) for comparison with older runs.

Quality: the first participant's tile in the recording against that participant's source
pictures (the camera scene before any encoding, at 640x360) brought to the tile by the
compositor itself (``Canvas.video``: cropped or scaled exactly as the recorder draws), on the Y
plane above the name label: PSNR and SSIM (8x8 blocks) per output frame, frames aligned by
index (the best of a few offsets), median over the frames after the first two seconds.

``--rules nearest fill`` (the default) measures both layer rules side by side: ``nearest`` (the
layer scaled least, up to ``MAX_UPSCALE``) and ``fill`` (the rule before 2026-12: a layer at least
90% of the tile's height).  A participant count for which both pick the same layers is run once.

Content: "camera" (a still room, a moving, talking head, faint noise: what meetings look like)
and, with ``--content pattern``, the SDK's numbered pattern, which changes every block of every
frame: a worst case (no quality figure: its source pictures are not regenerated here).

    python -m benchmarks.recorder_bench [--quick] [--participants 4 9] [--trials 3] [--seconds 20]

Writes ``benchmarks/results/recorder.json``.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from benchmarks.media import cpu_model
from clients.loadtest.process import cpu_seconds
from clients.loadtest.stats import median
from clients.sdk.media import draw_pattern
from recorder import wire
from recorder.compositor import Canvas
from recorder.layout import Rect, arrange, fit
from recorder.manager import FILL_UPSCALE, MAX_UPSCALE, pick_layer
from recorder.synthetic import Clip, Replay, camera_frame, encode_clip
from sfu.layer import Layer

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 1280, 720, 30
# (width, height, bit rate) of each simulcast layer, lowest first
LAYERS = ((320, 180, 250_000), (640, 360, 1_000_000))
SOURCE = (640, 360)  # the camera's own size: the quality measure's reference
RULES = {"nearest": MAX_UPSCALE, "fill": FILL_UPSCALE}
LABEL_MARGIN = 40  # rows at the bottom of a tile that the name label may cover
QUALITY_SKIP = 2.0  # seconds at the start left out of the quality measure


def identities(participants: int) -> list[str]:
    return [f"p{i}" for i in range(participants)]


def tiles(participants: int) -> dict[str, Rect]:
    """Each participant's tile, as the manager computes it for a grid recording."""
    return dict(arrange(identities(participants), None, None, "grid", WIDTH, HEIGHT))


def chosen_layers(participants: int, max_upscale: float) -> list[int]:
    """The layer position the recorder's tap takes for each participant, by the manager's rule."""
    now = 100.0
    layers = []
    for position, (width, height, _) in enumerate(LAYERS):
        layer = Layer(position, None, "video")
        layer.width, layer.height, layer.last_packet = width, height, now
        layers.append(layer)
    chosen = []
    for identity, tile in tiles(participants).items():
        layer = pick_layer(layers, tile, now, max_upscale)
        assert layer is not None, identity
        chosen.append(layer.position)
    return chosen


def record(clips: list[Clip], positions: list[int], seconds: float, output: Path, preset: str, dump: Path | None = None) -> dict[str, Any]:
    start = time.monotonic() + 0.5
    command = ["taskset", "-c", "0", sys.executable, "-m", "recorder.worker", "--output", str(output), "--start", repr(start), "--preset", preset]
    if dump is not None:
        command += ["--dump-raw", str(dump)]
    worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    assert worker.stdin is not None and worker.stdout is not None
    replays = [Replay(clips[layer], 2 * i + 1, 2 * i + 2, start, seed=i + 1, layer=layer) for i, layer in enumerate(positions)]
    people = [{"identity": identity, "name": f"Participant {i + 1}"} for i, identity in enumerate(identities(len(positions)))]
    worker.stdin.write(wire.encode_event({"type": "participants", "participants": people}))
    for replay, person in zip(replays, people, strict=True):
        worker.stdin.write(b"".join(replay.announce(person["identity"])))
    worker.stdin.flush()
    measure_from, end = start + 1.0, start + seconds
    cpu_from = None
    while (now := time.monotonic()) < end:
        if cpu_from is None and now >= measure_from:
            cpu_from, measure_from = cpu_seconds(worker.pid), now
        worker.stdin.write(b"".join(m for r in replays for m in r.due(now)))
        worker.stdin.flush()
        time.sleep(0.005)
    cpu_to, measured_to = cpu_seconds(worker.pid), time.monotonic()
    worker.stdin.write(wire.encode_event({"type": "stop", "at": end}))
    worker.stdin.close()
    lines = worker.stdout.read().decode().splitlines()
    worker.wait(timeout=60)
    done = json.loads(lines[-1])
    assert cpu_from is not None
    return {
        "cpu_per_output_second": (cpu_to - cpu_from) / (measured_to - measure_from),
        "frames": done["frames"],
        "late_audio_samples": done["late_audio_samples"],
        "bytes": output.stat().st_size,
        # libx264's own CPU inside the worker (its encode calls), per second of output
        "encoder_in_worker": done["encoder_cpu_seconds"] / done["duration"] if done.get("duration") else None,
    }


def read_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return [f for f in container.decode(video=0)]


def _encoder(preset: str) -> av.CodecContext:
    """libx264 as the recorder's worker opens it."""
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    context.time_base = fractions.Fraction(1, FPS)
    context.options = {"preset": preset, "tune": "zerolatency", "crf": "23", "maxrate": "2000000", "bufsize": "4000000",
                       "g": str(FPS * 2), "keyint_min": str(FPS), "threads": "1"}
    return context


def encoder_only(frames: list[av.VideoFrame], preset: str) -> float:
    """CPU seconds per second of video for libx264 alone on the recording's decoded output (the
    baseline before 2026-12-08)."""
    context = _encoder(preset)
    began = time.process_time()
    for index, frame in enumerate(frames):
        frame.pts = index
        frame.pict_type = av.video.frame.PictureType.NONE
        context.encode(frame)
    context.encode(None)
    return (time.process_time() - began) / (len(frames) / FPS)


def encoder_on_composites(raw: Path, preset: str) -> float:
    """CPU seconds per second of video for libx264 alone on the frames the worker composed and
    encoded (its ``--dump-raw`` file); only the ``encode`` calls are timed."""
    context = _encoder(preset)
    size = WIDTH * HEIGHT * 3 // 2
    spent, count = 0.0, 0
    with raw.open("rb") as source:
        while len(data := source.read(size)) == size:
            frame = av.VideoFrame.from_ndarray(np.frombuffer(data, np.uint8).reshape(HEIGHT * 3 // 2, WIDTH), format="yuv420p")
            frame.pts = count
            began = time.process_time()
            context.encode(frame)
            spent += time.process_time() - began
            count += 1
    began = time.process_time()
    context.encode(None)
    spent += time.process_time() - began
    return spent / (count / FPS)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, block: int = 8) -> float:
    """Mean SSIM over non-overlapping ``block`` x ``block`` windows (8-bit luma)."""
    h, w = a.shape[0] // block * block, a.shape[1] // block * block
    x = a[:h, :w].astype(np.float64).reshape(h // block, block, w // block, block).swapaxes(1, 2).reshape(-1, block * block)
    y = b[:h, :w].astype(np.float64).reshape(h // block, block, w // block, block).swapaxes(1, 2).reshape(-1, block * block)
    mx, my = x.mean(1), y.mean(1)
    vx, vy = x.var(1), y.var(1)
    cov = ((x - mx[:, None]) * (y - my[:, None])).mean(1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(np.mean(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


class Reference:
    """The first participant's source pictures drawn into its tile by the compositor itself."""

    def __init__(self, clip_frames: int, tile: Rect, drawn: tuple[int, int]) -> None:
        self.clip_frames = clip_frames
        self.tile = tile
        self.rect = fit(drawn[0], drawn[1], tile)  # where the recorder's picture lands
        self.canvas = Canvas(WIDTH, HEIGHT)
        self._cache: dict[int, np.ndarray] = {}

    def region(self, y_plane: np.ndarray) -> np.ndarray:
        r = self.rect
        bottom = min(r.y + r.h, self.tile.y + self.tile.h - LABEL_MARGIN)
        return y_plane[r.y : bottom, r.x : r.x + r.w]

    def at(self, index: int) -> np.ndarray:
        index %= self.clip_frames
        cached = self._cache.get(index)
        if cached is None:
            source = camera_frame(index, SOURCE[0], SOURCE[1], FPS)
            self.canvas.video(source, self.tile)
            cached = self._cache[index] = self.region(self.canvas.y).copy()
        return cached


def quality(frames: list[av.VideoFrame], reference: Reference) -> dict[str, float]:
    """Median PSNR and SSIM of the first participant's tile over the recording (see the module's
    docstring), with the offset in frames that aligned it best."""
    recorded = [(index, reference.region(f.to_ndarray()[: f.height])) for index, f in enumerate(frames) if index >= QUALITY_SKIP * FPS]
    sample = recorded[:: max(1, len(recorded) // 30)]
    offset = max(range(-3, 3), key=lambda o: float(np.median([psnr(y, reference.at(i + o)) for i, y in sample])))
    return {
        "psnr_db": round(float(np.median([psnr(y, reference.at(i + offset)) for i, y in recorded])), 2),
        "ssim": round(float(np.median([ssim(y, reference.at(i + offset)) for i, y in recorded])), 4),
        "frame_offset": offset,
    }


def summary(runs: list[dict[str, Any]], seconds: float, positions: list[int]) -> dict[str, Any]:
    cpu = median([r["cpu_per_output_second"] for r in runs], None)
    base = median([r["encoder_alone"] for r in runs], None)
    ratios = [r["cpu_per_output_second"] / r["encoder_alone"] for r in runs]
    ratio = median(ratios, None)
    on_output = median([r["encoder_on_output"] for r in runs], None)
    out: dict[str, Any] = {
        "layers": sorted({f"{LAYERS[p][0]}x{LAYERS[p][1]}" for p in positions}),
        "cpu_per_output_second": round(cpu, 3),
        "trials": [round(r["cpu_per_output_second"], 3) for r in runs],
        "encoder_alone": round(base, 3),
        "encoder_alone_trials": [round(r["encoder_alone"], 3) for r in runs],
        "ratio_to_encoder_alone": round(ratio, 2),
        "ratio_trials": [round(x, 2) for x in ratios],
        "encoder_on_output": round(on_output, 3),
        "ratio_to_encoder_on_output": round(median([r["cpu_per_output_second"] / r["encoder_on_output"] for r in runs], None), 2),
        # the same encoder inside the worker, between decoding and drawing, costs more than alone
        "encoder_in_worker": round(median([r["encoder_in_worker"] for r in runs], None), 3),
        "ratio_to_encoder_in_worker": round(median([r["cpu_per_output_second"] / r["encoder_in_worker"] for r in runs], None), 2),
        "aim_ratio": AIM_RATIO,
        "aim": "met" if ratio <= AIM_RATIO else "missed",
        "output_kbit_per_s": round(median([r["bytes"] for r in runs], None) * 8 / seconds / 1000),
        "late_audio_samples": max(r["late_audio_samples"] for r in runs),
    }
    if all("quality" in r for r in runs):
        out["quality"] = {
            "psnr_db": round(float(np.median([r["quality"]["psnr_db"] for r in runs])), 2),
            "ssim": round(float(np.median([r["quality"]["ssim"] for r in runs])), 4),
            "trials": [r["quality"] for r in runs],
        }
    return out


AIM_RATIO = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[4, 9])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--content", choices=["camera", "pattern"], default="camera")
    parser.add_argument("--preset", default="superfast")
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES), help="layer rules to measure; the first is the headline")
    parser.add_argument("--quick", action="store_true", help="one trial of 8 s")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "recorder.json")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seconds = 1, 8.0
    os.sched_setaffinity(0, {1})
    draw = draw_pattern if args.content == "pattern" else None
    clip_seconds = 4.0
    clips = [encode_clip(seconds=clip_seconds, width=w, height=h, fps=FPS, bitrate=rate, draw=draw) for w, h, rate in LAYERS]
    # (count, rule) -> layer positions; a rule that picks what an earlier one picked is not run again
    plans: dict[tuple[int, str], list[int]] = {}
    same_as: dict[tuple[int, str], tuple[int, str]] = {}
    for n in args.participants:
        for rule in args.rules:
            positions = chosen_layers(n, RULES[rule])
            earlier = next((k for k, v in plans.items() if k[0] == n and v == positions), None)
            if earlier is None:
                plans[(n, rule)] = positions
            else:
                same_as[(n, rule)] = earlier
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {k: [] for k in plans}
    with tempfile.TemporaryDirectory() as scratch:
        composites: dict[tuple[int, str], Path] = {}
        for (n, rule), positions in plans.items():  # the frames the recorder encodes, for the baseline
            composites[(n, rule)] = Path(scratch) / f"composites-{n}-{rule}.yuv"
            dumped = Path(scratch) / f"dump-{n}-{rule}.mp4"
            record(clips, positions, args.seconds, dumped, args.preset, dump=composites[(n, rule)])
            os.unlink(dumped)
        for trial in range(args.trials):  # interleaved, so that machine noise hits every count
            for (n, rule), positions in plans.items():
                path = Path(scratch) / f"r{n}-{rule}-{trial}.mp4"
                run = record(clips, positions, args.seconds, path, args.preset)
                frames = read_frames(path)
                run["encoder_alone"] = encoder_on_composites(composites[(n, rule)], args.preset)
                run["encoder_on_output"] = encoder_only(frames, args.preset)
                if draw is None:
                    first = LAYERS[positions[0]]
                    run["quality"] = quality(frames, Reference(len(clips[0].video), tiles(n)["p0"], (first[0], first[1])))
                os.unlink(path)
                runs[(n, rule)].append(run)
                print(
                    f"trial {trial + 1}: {n} participants, {rule} rule: {run['cpu_per_output_second']:.3f} CPU-s/s "
                    f"(encoder alone {run['encoder_alone']:.3f}, ratio {run['cpu_per_output_second'] / run['encoder_alone']:.2f}; "
                    f"on the output {run['encoder_on_output']:.3f})"
                    + (f", PSNR {run['quality']['psnr_db']} dB, SSIM {run['quality']['ssim']}" if "quality" in run else ""),
                    flush=True,
                )
    results: dict[str, Any] = {}
    headline = args.rules[0]
    for n in args.participants:
        by_rule: dict[str, Any] = {}
        for rule in args.rules:
            key = same_as.get((n, rule), (n, rule))
            by_rule[rule] = summary(runs[key], args.seconds, plans[key])
            if key != (n, rule):
                by_rule[rule]["same_run_as"] = key[1]
        results[str(n)] = {**by_rule[headline], "layer_rule": headline, "other_rules": {r: v for r, v in by_rule.items() if r != headline}}
    report = {
        "benchmark": "recorder",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "av": av.__version__,
        },
        "settings": {
            "output": f"{WIDTH}x{HEIGHT} {FPS} fps H.264 (libx264 " + args.preset + ", zerolatency, crf 23, max 2 Mbit/s) + AAC 64 kbit/s mono",
            "input": f"per participant simulcast VP8 ({args.content}) at 30 fps: "
            + ", ".join(f"{w}x{h} {rate // 1000} kbit/s" for w, h, rate in LAYERS) + "; the layer the recorder's tap picks; + Opus",
            "layer_rules": {rule: {"max_upscale": round(RULES[rule], 3)} for rule in args.rules},
            "quality": "first participant's tile vs its 640x360 source drawn by the compositor, Y plane above the label; PSNR, SSIM (8x8 blocks); median over frames after 2 s",
            "trials": args.trials, "seconds": args.seconds,
        },
        "aims": {"ratio_to_encoder_alone": AIM_RATIO},
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
