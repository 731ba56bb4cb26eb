"""Recorder benchmark: CPU seconds per second of output of one recording, for N participants.

Each participant's camera (640x360 VP8 at 30 fps, 1 Mbit/s) and microphone (Opus) are encoded
once and replayed in real time into a recorder worker process (``python -m recorder.worker``,
1280x720 at 30 fps, H.264 and AAC, the server's default settings), exactly as the SFU's taps
would feed it.  The worker is pinned to core 0, this process to core 1.  Per trial the worker's
CPU (utime + stime from /proc) is read one second after the recording starts (imports and
set-up done) and again at the stop; CPU over the output seconds in between is the figure.

Baseline, measured in the same run: the H.264 encoder alone (libx264 with the recorder's
settings, single-threaded) encoding the frames of the recording just made, in this process.
The ratio says what decoding, mixing and compositing add to the encoder's cost.

Content: "camera" (a still room, a moving, talking head, faint noise: what meetings look like)
and, with ``--content pattern``, the SDK's numbered pattern, which changes every block of every
frame: a worst case.

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

from benchmarks.media import cpu_model
from clients.loadtest.process import cpu_seconds
from clients.loadtest.stats import median
from clients.sdk.media import draw_pattern
from recorder import wire
from recorder.synthetic import Clip, Replay, encode_clip

ROOT = Path(__file__).resolve().parent.parent


def record(clip: Clip, participants: int, seconds: float, output: Path, preset: str) -> dict[str, Any]:
    start = time.monotonic() + 0.5
    worker = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "recorder.worker", "--output", str(output), "--start", repr(start), "--preset", preset],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )
    assert worker.stdin is not None and worker.stdout is not None
    replays = [Replay(clip, 2 * i + 1, 2 * i + 2, start, seed=i + 1) for i in range(participants)]
    people = [{"identity": f"p{i}", "name": f"Participant {i + 1}"} for i in range(participants)]
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
    }


def encoder_only(path: Path, preset: str) -> float:
    """CPU seconds per second of video for libx264 alone on the recording's own frames."""
    with av.open(str(path)) as container:
        frames = [f for f in container.decode(video=0)]
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    context.time_base = fractions.Fraction(1, 30)
    context.options = {"preset": preset, "tune": "zerolatency", "crf": "23", "maxrate": "2000000", "bufsize": "4000000", "g": "60", "threads": "1"}
    began = time.process_time()
    for index, frame in enumerate(frames):
        frame.pts = index
        frame.pict_type = av.video.frame.PictureType.NONE
        context.encode(frame)
    context.encode(None)
    return (time.process_time() - began) / (len(frames) / 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[4, 9])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--content", choices=["camera", "pattern"], default="camera")
    parser.add_argument("--preset", default="superfast")
    parser.add_argument("--quick", action="store_true", help="one trial of 8 s")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "recorder.json")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seconds = 1, 8.0
    os.sched_setaffinity(0, {1})
    clip = encode_clip(seconds=4.0, width=640, height=360, fps=30, draw=draw_pattern if args.content == "pattern" else None)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.participants}
        baselines: dict[int, list[float]] = {n: [] for n in args.participants}
        for trial in range(args.trials):  # interleaved, so that machine noise hits every count
            for n in args.participants:
                path = Path(scratch) / f"r{n}-{trial}.mp4"
                run = record(clip, n, args.seconds, path, args.preset)
                runs[n].append(run)
                baselines[n].append(encoder_only(path, args.preset))
                print(f"trial {trial + 1}: {n} participants: {run['cpu_per_output_second']:.3f} CPU-s/s (encoder alone {baselines[n][-1]:.3f})", flush=True)
        for n in args.participants:
            cpu = median([r["cpu_per_output_second"] for r in runs[n]], None)
            base = median(baselines[n], None)
            results[str(n)] = {
                "cpu_per_output_second": round(cpu, 3),
                "trials": [round(r["cpu_per_output_second"], 3) for r in runs[n]],
                "encoder_alone": round(base, 3),
                "ratio_to_encoder_alone": round(cpu / base, 2),
                "output_kbit_per_s": round(median([r["bytes"] for r in runs[n]], None) * 8 / args.seconds / 1000),
                "late_audio_samples": max(r["late_audio_samples"] for r in runs[n]),
            }
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
            "output": "1280x720 30 fps H.264 (libx264 " + args.preset + ", zerolatency, crf 23, max 2 Mbit/s) + AAC 64 kbit/s mono",
            "input": f"per participant 640x360 30 fps VP8 1 Mbit/s ({args.content}) + Opus",
            "trials": args.trials, "seconds": args.seconds,
        },
        "aims": {"4": 0.35, "9": 0.5},
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
