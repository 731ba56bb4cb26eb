"""Web client renderer benchmark: the CPU of Chromium's renderer in a 49-person meeting against a
4-person one.

The web client pages its grid (3 x 3 in a 1280 x 800 laptop window) and asks the SFU to forward
video only for the tiles on screen, so what the page decodes and draws stops growing at one page
of nine videos: 49 people should cost little more than 4 (three videos), the difference being six
more videos on screen and the bookkeeping of 45 more people whose tiles are never drawn.  This
benchmark measures that where it matters, in the renderer process.

Per trial, a fresh meeting and a fresh browser: the node (``videoconf run`` in its own process,
SQLite, ICE on 127.0.0.1 only and no ICE servers, as ``tests.faults.node.Node`` runs it) is the
same for the whole run.  A host starts the meeting through the API; N - 1 SDK bots join
(``tests.media.crowd``: replayed 320x180 VP8 at 10 fps, about 120 kbit/s, no audio, receiving
nothing); then one person registers in headless Chromium (Debian's, ``tests.media.browser``) and
joins by code through the UI with the microphone off and the camera on (Chromium's fake camera,
sent as the client's simulcast, the same in every trial).  Once every shown tile plays
(``videoWidth > 0``, up to nine) and the SFU forwards that many videos, the page settles for
``--settle`` seconds; then, over ``--seconds``:

- CPU seconds (utime + stime from /proc) of Chromium's renderer process(es) (``--type=renderer``;
  the trial's browser has one page), of its GPU process (``--type=gpu-process``: compositing in
  software, since the browser runs with ``--disable-gpu``) and of the whole browser tree, each per
  second of the window (a share of one core); the node's too, and this process's (the bots');
- the videos the SFU forwarded to the page (the node's ``videoconf_sfu_forwarded_streams{kind=
  "video"}`` sampled every second; the bots subscribe to nothing, so every forwarded video is the
  page's), and the frames the page's videos presented per second (the sum of their
  ``getVideoPlaybackQuality().totalVideoFrames`` deltas, and each video's rate).

A trial that fails (a wait past its deadline) is recorded with its error and left out of the
medians; the next one starts once the node is empty again.

The two sizes alternate (4, 49, 4, 49, ...), so that the machine's drift hits both.  On a machine
of two cores or more, Chromium runs on core 1 and the node and this process (the bots) on core 0.

    python -m benchmarks.web_renderer [--quick] [--trials 3] [--seconds 20]

Writes ``benchmarks/results/web_renderer.json``: medians per size, the ratio of the larger size to
the smaller, and every trial.  Every wait has a deadline; the bots, the browser and the node close
whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from benchmarks.cluster_bench import pin
from benchmarks.media import machine
from clients.loadtest.polling import until
from clients.loadtest.process import cpu_seconds
from clients.loadtest.stats import median
from control_api.app import token_codecs
from control_api.services.context import utc_now
from tests.faults.node import Node
from tests.media.browser import CHROMIUM, chromium
from tests.media.crowd import CROWD_VIDEO, gather_crowd
from tests.media.test_large_meeting import enter
from tests.media.test_web_client import person
from videoconf.config import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GRID = 9  # tiles of one page of the grid in a 1280 x 800 window (3 x 3)
NODE_CORE, BROWSER_CORE = 0, 1
FORWARDED_VIDEO = 'videoconf_sfu_forwarded_streams{kind=video}'
PARTICIPANTS = "videoconf_sfu_participants"

# The grid's tiles on screen and how many of their videos play; every remote video's presented
# frames, by track (tiles off the page included: they should present none).
SHOWN_JS = """() => {
    const videos = [...document.querySelectorAll('ul.tiles > li.tile:not([hidden]) video[data-track]')];
    return { tiles: document.querySelectorAll('ul.tiles > li.tile:not([hidden])').length, videos: videos.length,
             playing: videos.filter(v => v.videoWidth > 0).length,
             waiting: videos.filter(v => !(v.videoWidth > 0)).map(v => v.closest('li').getAttribute('aria-label')) };
}"""
FRAMES_JS = """() => Object.fromEntries([...document.querySelectorAll('ul.tiles video[data-track]')]
    .map(v => [v.dataset.track, v.getVideoPlaybackQuality().totalVideoFrames]))"""


# Chromium's processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BrowserProcess:
    pid: int
    kind: str  # Chromium's --type (renderer, gpu-process, utility, zygote, ...), or "browser"


def descendants(ancestor: int) -> list[int]:
    """Every process below ``ancestor``, from the parent ids in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], [ancestor]
    while queue:
        below = children.get(queue.pop(), [])
        found.extend(below)
        queue.extend(below)
    return found


def process_kind(cmdline: bytes) -> str | None:
    """The kind of a Chromium process from its /proc/<pid>/cmdline; None for any other program.
    Processes forked from Chromium's zygote rewrite their command line as one string, separated by
    spaces; the words looked at here have none.  The renderer of Chromium's own user interface
    (``--top-chrome-webui``) is "renderer-webui", not one of the pages'."""
    argv = cmdline.decode(errors="replace").replace("\0", " ").split()
    if not argv or not Path(argv[0]).name.startswith("chrom"):  # chromium, chrome_crashpad_handler
        return None
    kind = next((a.split("=", 1)[1] for a in argv if a.startswith("--type=")), None)
    if kind == "renderer" and "--top-chrome-webui" in argv:
        return "renderer-webui"
    return kind or ("browser" if Path(argv[0]).name == "chromium" else Path(argv[0]).name)


def browser_processes(ancestor: int | None = None) -> list[BrowserProcess]:
    """The Chromium processes this process started (through Playwright's driver)."""
    found = []
    for pid in descendants(ancestor or os.getpid()):
        with contextlib.suppress(OSError):
            kind = process_kind(Path(f"/proc/{pid}/cmdline").read_bytes())
            if kind is not None:
                found.append(BrowserProcess(pid, kind))
    return found


def cpu_of(processes: Iterable[BrowserProcess]) -> dict[BrowserProcess, float]:
    """CPU seconds of each process still there."""
    cpu = {}
    for process in processes:
        with contextlib.suppress(OSError):
            cpu[process] = cpu_seconds(process.pid)
    return cpu


# One window -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    at: float
    browser: dict[BrowserProcess, float]  # CPU seconds
    node: float  # CPU seconds
    bots: float  # CPU seconds of this process, where the bots run
    frames: dict[str, int]  # track id -> frames its video presented


async def reading(page: Any, node: Node) -> Reading:
    frames = await page.evaluate(FRAMES_JS)
    return Reading(time.monotonic(), cpu_of(browser_processes()), cpu_seconds(node.pid), cpu_seconds(os.getpid()), frames)


def window(first: Reading, last: Reading, forwarded: list[float]) -> dict[str, Any]:
    """The figures of one window, from its two readings and the forwarded-video samples taken in
    between.  A process that started within the window counts from zero; one that ended is left
    out (both are listed)."""
    wall = last.at - first.at

    def used(kind: str | None) -> float:
        return sum(cpu - first.browser.get(p, 0.0) for p, cpu in last.browser.items() if kind is None or p.kind == kind)

    frames = {track: count - first.frames.get(track, 0) for track, count in last.frames.items()}
    playing = [n for n in frames.values() if n > 0]
    return {
        "seconds": round(wall, 3),
        "renderer_cpu_per_second": round(used("renderer") / wall, 4),
        "gpu_cpu_per_second": round(used("gpu-process") / wall, 4),
        "browser_cpu_per_second": round(used(None) / wall, 4),
        "node_cpu_per_second": round((last.node - first.node) / wall, 4),
        "bots_cpu_per_second": round((last.bots - first.bots) / wall, 4),
        "renderers": [
            {"pid": p.pid, "cpu_per_second": round((cpu - first.browser.get(p, 0.0)) / wall, 4)}
            for p, cpu in last.browser.items() if p.kind == "renderer"
        ],
        "processes": {kind: sum(p.kind == kind for p in last.browser) for kind in sorted({p.kind for p in last.browser})},
        "started_in_window": sorted(p.pid for p in set(last.browser) - set(first.browser)),
        "ended_in_window": sorted(p.pid for p in set(first.browser) - set(last.browser)),
        "presented_frames_per_second": round(sum(frames.values()) / wall, 1),
        "videos_with_frames": len(playing),
        "video_fps": sorted(round(n / wall, 1) for n in playing),  # of each video that presented frames
        "forwarded_video": {"min": min(forwarded), "max": max(forwarded), "median": median(forwarded, None)} if forwarded else None,
    }


async def forwarded_video(node: Node) -> float:
    return (await node.metrics()).get(FORWARDED_VIDEO, 0.0)


async def measure(page: Any, node: Node, seconds: float) -> dict[str, Any]:
    first = await reading(page, node)
    samples = []
    while (left := first.at + seconds - time.monotonic()) > 0:
        samples.append(await forwarded_video(node))
        await asyncio.sleep(min(1.0, left))
    return window(first, await reading(page, node), samples)


# One trial --------------------------------------------------------------------------------------


def room_tokens(room_secret: str, access_secret: str) -> Any:
    """The node's room-token codec, built from the secrets it was started with, for the bots."""
    settings = Settings(room_token_secret=SecretStr(room_secret), access_token_secret=SecretStr(access_secret))
    return token_codecs(settings, utc_now)[1]


def pin_browser(cores: set[int] | None) -> None:
    if cores is not None:
        for process in browser_processes():
            with contextlib.suppress(OSError):
                pin(process.pid, cores)


async def shown(page: Any) -> dict[str, int]:
    return await page.evaluate(SHOWN_JS)


async def idle(node: Node) -> bool:
    metrics = await node.metrics()
    return metrics.get(PARTICIPANTS, 1.0) == 0 and metrics.get(FORWARDED_VIDEO, 1.0) == 0


async def trial(node: Node, codec: Any, people: int, index: int, seconds: float, settle: float,
                browser_cores: set[int] | None) -> dict[str, Any]:
    """A meeting of ``people``: a host through the API, ``people - 1`` bots, and the measured page."""
    host = await node.register("Hedy Host")
    meeting = await node.meeting(host)
    await node.room_token(host, meeting)  # the host's join starts the meeting
    expected = min(people - 1, GRID)
    crowd = await gather_crowd(node.signaling_url, codec, meeting["id"], people - 1, voices=0)
    began = time.monotonic()
    try:
        async with chromium() as browser:
            pin_browser(browser_cores)
            page = await person(browser, node.base, f"Uma{index:02d} User")  # 1280 x 800, not a phone
            await enter(page, meeting["code"])

            seen: dict[str, Any] = {}

            async def ready() -> bool:
                seen.update(await shown(page), forwarded=await forwarded_video(node))
                return seen["tiles"] == seen["videos"] == seen["playing"] == seen["forwarded"] == expected

            def describe() -> str:
                return f"{expected} playing tiles, as many videos forwarded: {seen}, page errors {page.errors[:3]}"

            await until(ready, 90, describe, interval=0.3, error=RuntimeError)
            ready = time.monotonic() - began
            await asyncio.sleep(settle)
            pin_browser(browser_cores)  # whatever Chromium started since
            result = await measure(page, node, seconds)
            after = await shown(page)
            result |= {
                "people": people, "shown_tiles": after["tiles"], "playing_after": after["playing"],
                "ready_seconds": round(ready, 1), "page_errors": list(page.errors)[:10],
            }
            await page.get_by_role("button", name="Leave", exact=True).click()  # leave at once, not after the resume window
            await page.get_by_role("heading", name="Dashboard").wait_for(timeout=15000)
    finally:
        await crowd.close()
    await until(lambda: idle(node), 45, "the node to be empty again", interval=0.5, error=RuntimeError)
    return result


# A run ------------------------------------------------------------------------------------------


def summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the trials that measured, and every trial (a failed one with its error)."""
    done = [t for t in trials if "error" not in t]
    keys = ("renderer_cpu_per_second", "gpu_cpu_per_second", "browser_cpu_per_second", "node_cpu_per_second",
            "bots_cpu_per_second", "presented_frames_per_second")
    return {
        **{key: median([t[key] for t in done], 4) for key in keys},
        "forwarded_video": median([t["forwarded_video"]["median"] for t in done if t["forwarded_video"]], None),
        "shown_tiles": median([t["shown_tiles"] for t in done], None),
        "failed_trials": len(trials) - len(done),
        "trials": trials,
    }


def ratios(small: dict[str, Any], large: dict[str, Any]) -> dict[str, float | None]:
    keys = ("renderer_cpu_per_second", "gpu_cpu_per_second", "browser_cpu_per_second", "presented_frames_per_second")
    return {key: round(large[key] / small[key], 3) if small[key] and large[key] is not None else None for key in keys}


def progress(index: int, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"trial {index + 1}: {result['people']} people: failed: {result['error']}"
    forwarded = result["forwarded_video"]["median"] if result["forwarded_video"] else "?"
    return (f"trial {index + 1}: {result['people']} people: renderer {result['renderer_cpu_per_second']:.3f} CPU-s/s, "
            f"GPU {result['gpu_cpu_per_second']:.3f}, browser {result['browser_cpu_per_second']:.3f}, "
            f"{forwarded} videos forwarded, {result['presented_frames_per_second']} frames/s")


async def run(sizes: list[int], trials: int, seconds: float, settle: float, workdir: Path, pinned: bool = True) -> dict[str, Any]:
    """Every trial (sizes alternating) against one node; the report without the machine."""
    secret = {"VIDEOCONF_ROOM_TOKEN_SECRET": secrets.token_urlsafe(32), "VIDEOCONF_ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32)}
    codec = room_tokens(secret["VIDEOCONF_ROOM_TOKEN_SECRET"], secret["VIDEOCONF_ACCESS_TOKEN_SECRET"])
    split = pinned and (os.cpu_count() or 1) >= 2
    affinity = os.sched_getaffinity(0)
    node = Node(workdir, **secret)
    started = time.monotonic()
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    try:
        await node.start()
        if split:
            pin(node.pid, {NODE_CORE})
            os.sched_setaffinity(0, {NODE_CORE})
        for index in range(trials):
            for position, people in enumerate(sizes):
                try:
                    result = await trial(node, codec, people, index * len(sizes) + position, seconds, settle,
                                         {BROWSER_CORE} if split else None)
                except Exception as error:  # recorded; the next trial starts once the node is empty
                    result = {"people": people, "error": f"{type(error).__name__}: {error}"[:2000]}
                    await until(lambda: idle(node), 45, "the node to be empty after a failed trial", interval=0.5, error=RuntimeError)
                runs[people].append(result)
                print(progress(index, result), flush=True)
    finally:
        os.sched_setaffinity(0, affinity)
        await node.close()
    results = {str(n): summary(runs[n]) for n in sizes}
    small, large = str(min(sizes)), str(max(sizes))
    return {
        "benchmark": "web_renderer",
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            "sizes": sizes, "trials": trials, "seconds": seconds, "settle": settle,
            "window": "1280x800 (a 3 x 3 grid)",
            "bots": "{}x{} VP8 at {} fps, {} kbit/s, replayed; no audio; subscribe to nothing".format(
                *CROWD_VIDEO[:3], CROWD_VIDEO[3] // 1000),
            "page": "registers and joins by code through the UI; microphone off, camera on (Chromium's fake device)",
            "cores": {"browser": sorted({BROWSER_CORE}), "node_and_bots": sorted({NODE_CORE})} if split else None,
        },
        "results": results,
        "ratio": {"of": f"{large}/{small}", **ratios(results[small], results[large])},
        "run_seconds": round(time.monotonic() - started),
    }


def chromium_version() -> str:
    done = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 49], help="meeting sizes, people (2 or more each)")
    parser.add_argument("--trials", type=int, default=3, help="trials of each size")
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between every tile playing and the window")
    parser.add_argument("--quick", action="store_true", help="one trial of each size, 8 s")
    parser.add_argument("--output", type=Path, default=RESULTS / "web_renderer.json")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seconds = 1, 8.0
    if len(set(args.sizes)) < 2 or min(args.sizes) < 2:
        parser.error("--sizes: two different sizes or more, each of 2 people or more")
    with tempfile.TemporaryDirectory(prefix="web-renderer-") as scratch:
        report = asyncio.run(run(sorted(set(args.sizes)), args.trials, args.seconds, args.settle, Path(scratch)))
    report["machine"] = machine(chromium=chromium_version(), playwright=importlib.metadata.version("playwright"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({n: {k: v for k, v in r.items() if k != "trials"} for n, r in report["results"].items()}, indent=2))
    print(json.dumps(report["ratio"]))


if __name__ == "__main__":
    main()
