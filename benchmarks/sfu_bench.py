"""SFU benchmark: server CPU per forwarded RTP packet, 1 publisher to N subscribers, against
stock aiortc's ``MediaRelay`` (decode once, encode per subscriber) measured in the same run.

The server under test (``videoconf run``, or ``benchmarks.relay_baseline``) is pinned to
core 0; this process (the publisher and every subscriber) to core 1.  The publisher sends a
640x360 VP8 pattern at 30 fps and an Opus tone.  Subscribers do not decode: they count every
RTP packet after SRTP decryption and drop it, so the load side stays light and both systems are
counted the same way.  Per trial: connect, wait until every subscriber receives, warm up, then
measure a window: server CPU seconds (utime + stime from /proc) over packets received by all
subscribers.  Trials of the two systems are interleaved so that machine noise hits both.

Simulcast scenario: a meeting of 10 participants, each publishing three VP8 layers (SSRC-group
simulcast from the SDK) and an Opus tone, each viewing the other nine as a grid of small tiles
(asking for the lowest layer by size).  Against the same meeting with every tile asking for
the top layer, measured in alternation: forwarded and received packets/s and SFU CPU.  With
small tiles the SFU forwards only the low layer and dynacast pauses the others at the
publishers.  The layers are 160x90, 320x180 and 640x360 at 15 fps: ten publishers encoding 720p
would saturate the load core, not the SFU.

    python -m benchmarks.sfu_bench [--quick] [--trials 3] [--window 10] [--scenario all|fanout|simulcast]

Writes ``benchmarks/results/sfu.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.api_bench import PASSWORD, Server
from benchmarks.media import cpu_window, machine, marginal_us
from benchmarks.relay_baseline import RelayBaseline
from clients.loadtest.polling import until
from clients.loadtest.process import cpu_seconds
from clients.loadtest.stats import median
from clients.sdk.media import PatternVideoTrack, SimulcastPattern, ToneAudioTrack
from clients.sdk.participant import Participant
from sfu.aiortc_client import LossStats, drop_incoming_rtp
from sfu.aiortc_hooks import configure_ice

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results"
WIDTH, HEIGHT, FPS = 640, 360, 30
GRID_PEOPLE = 10
GRID_LAYERS = ((160, 90), (320, 180), (640, 360))
GRID_FPS = 15


async def wait_receiving(counters: list[LossStats], timeout: float = 30.0) -> None:
    def receiving() -> str:
        return f"every subscriber to receive: only {sum(c.seen > 0 for c in counters)} of {len(counters)} do"

    await until(lambda: all(c.seen > 0 for c in counters), timeout, receiving, interval=0.2, error=RuntimeError)


async def measure(pid: int, counters: list[LossStats], warmup: float, window: float) -> dict[str, Any]:
    await wait_receiving(counters)
    await asyncio.sleep(warmup)
    result, _ = await cpu_window(pid, lambda: {"packets": sum(c.seen for c in counters)}, window)
    return result


# The SFU ------------------------------------------------------------------------------------


class SfuUnderTest:
    def __init__(self, workdir: Path, accounts: int) -> None:
        self.server = Server("sqlite", workdir)
        self.accounts = accounts
        self.tokens: list[str] = []

    async def start(self) -> None:
        self.server.start()
        async with aiohttp.ClientSession() as http:
            for i in range(self.accounts):
                async with http.post(self.server.base + "/api/auth/register", json={
                    "email": f"sfu{i}@bench.example", "password": PASSWORD, "display_name": f"Bench {i}"}) as response:
                    assert response.status == 201, await response.text()
                    self.tokens.append((await response.json())["access_token"])

    @property
    def pid(self) -> int:
        return self.server.child.pid

    async def joins(self, people: int, settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A new meeting and room tokens for its first ``people`` accounts."""
        base = self.server.base
        async with aiohttp.ClientSession() as http:
            async def call(path: str, token: str, body: dict[str, Any]) -> Any:
                async with http.post(base + path, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                    assert response.status < 300, await response.text()
                    return await response.json()

            body: dict[str, Any] = {"title": "bench", "kind": "instant"}
            if settings:
                body["settings"] = settings
            meeting = await call("/api/meetings", self.tokens[0], body)
            return [await call(f"/api/meetings/{meeting['id']}/join", token, {}) for token in self.tokens[:people]]

    async def trial(self, subscribers: int, warmup: float, window: float) -> dict[str, float]:
        joins = await self.joins(subscribers + 1)
        clients: list[Participant] = []
        counters: list[LossStats] = []
        rng = random.Random(1)
        try:
            publisher = Participant(joins[0]["signaling_url"], joins[0]["token"], ice_servers=[], video_codec="VP8")
            clients.append(publisher)
            await publisher.connect()
            await publisher.publish([(PatternVideoTrack(WIDTH, HEIGHT, fps=FPS), "camera"), (ToneAudioTrack(), "microphone")])
            for joined in joins[1:]:
                client = Participant(joined["signaling_url"], joined["token"], ice_servers=[])
                stats = LossStats()
                client.tap_incoming(lambda pc, s=stats: drop_incoming_rtp(pc, 1.0, rng, s))
                counters.append(stats)
                clients.append(client)
                await client.connect()
            before = await self.forwarded()
            result = await measure(self.pid, counters, warmup, window)
            result["sfu_metric_packets"] = await self.forwarded() - before
            return result
        finally:
            for client in clients:
                await client.close()

    async def forwarded(self, metric: str = "videoconf_sfu_packets_forwarded_total") -> float:
        async with aiohttp.ClientSession() as http, http.get(self.server.base + "/metrics") as response:
            text = await response.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric + "{"))

    async def grid(self, trials: int, warmup: float, window: float) -> dict[str, Any]:
        """The simulcast scenario: GRID_PEOPLE publishers with three layers, each viewing the
        others at small tiles, against the same meeting with every tile at the top layer."""
        joins = await self.joins(GRID_PEOPLE, {"last_n": GRID_PEOPLE})
        clients: list[Participant] = []
        counters: list[LossStats] = []
        rng = random.Random(2)
        tiles = {"small": {"width": GRID_LAYERS[0][0], "height": GRID_LAYERS[0][1]}, "large": {"quality": "high"}}
        raw: dict[str, list[dict[str, Any]]] = {name: [] for name in tiles}
        try:
            for joined in joins:
                client = Participant(joined["signaling_url"], joined["token"], ice_servers=[], video_codec="VP8")
                stats = LossStats()
                client.tap_incoming(lambda pc, s=stats: drop_incoming_rtp(pc, 1.0, rng, s))
                counters.append(stats)
                clients.append(client)
                await client.connect()
                await client.publish([(SimulcastPattern(GRID_LAYERS, fps=GRID_FPS), "camera"), (ToneAudioTrack(), "microphone")])
            await until(lambda: all(sum(r.kind == "video" for r in c.remote.values()) == GRID_PEOPLE - 1 for c in clients),
                        60, "every participant to learn of every video track", interval=0.2, error=RuntimeError)
            for trial in range(trials):
                for name, ask in tiles.items():
                    for client in clients:
                        for remote in list(client.remote.values()):
                            if remote.kind == "video":
                                await client.track_settings(remote.track_id, **ask)
                    # Longer warm-up: layer switches wait for keyframes, dynacast waits 3 s.
                    await wait_receiving(counters)
                    await asyncio.sleep(warmup + 4.0)
                    before = await self.forwarded(), await self.forwarded("videoconf_sfu_packets_received_total")
                    result = await measure(self.pid, counters, 0.0, window)
                    after = await self.forwarded(), await self.forwarded("videoconf_sfu_packets_received_total")
                    wall = result["wall_seconds"]
                    result["forwarded_per_second"] = round((after[0] - before[0]) / wall, 1)
                    result["received_per_second"] = round((after[1] - before[1]) / wall, 1)
                    layers: dict[str, int] = {}
                    for client in clients:
                        for remote in client.remote.values():
                            if remote.kind == "video" and remote.forwarding and remote.forwarding.get("layer") is not None:
                                key = str(remote.forwarding["layer"])
                                layers[key] = layers.get(key, 0) + 1
                    result["tracks_by_layer"] = layers
                    raw[name].append(result)
                    print(f"trial {trial + 1} grid  {name:5}: {result['packets_per_second']} packets/s out, "
                          f"{result['received_per_second']} in, cpu {result['cpu_share']:.1%}, layers {layers}", flush=True)
        finally:
            for client in clients:
                await client.close()
        return {
            "setup": {"people": GRID_PEOPLE, "layers": [f"{w}x{h}" for w, h in GRID_LAYERS], "fps": GRID_FPS, "tiles": tiles},
            **grid_summary(raw),
            "trials": raw,
        }

    async def idle(self, seconds: float) -> float:
        cpu0 = cpu_seconds(self.pid)
        await asyncio.sleep(seconds)
        return round((cpu_seconds(self.pid) - cpu0) / seconds, 4)

    def stop(self) -> None:
        self.server.stop()


# The MediaRelay baseline ----------------------------------------------------------------------


async def relay_trial(subscribers: int, warmup: float, window: float) -> dict[str, Any]:
    relay = RelayBaseline()
    rng = random.Random(1)
    try:
        counters = await relay.connect(PatternVideoTrack(WIDTH, HEIGHT, fps=FPS), ToneAudioTrack(), subscribers,
                                       lambda pc: drop_incoming_rtp(pc, 1.0, rng, LossStats()))
        return await measure(relay.pid, counters, warmup, window)
    finally:
        await relay.close()


# Driver ---------------------------------------------------------------------------------------


def grid_summary(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians of the simulcast grid's trials per tile size, and small tiles over large ones."""
    keys = ("packets_per_second", "received_per_second", "forwarded_per_second", "cpu_share", "us_per_packet")
    summary = {
        name: {key: median([t[key] for t in trials if t.get(key) is not None], 4 if key == "cpu_share" else 2) for key in keys}
        for name, trials in raw.items()
    }
    small, large = summary.get("small", {}), summary.get("large", {})
    return {
        "median": summary,
        "small_over_large": {
            key: round(small[key] / large[key], 3) if small.get(key) and large.get(key) else None
            for key in ("cpu_share", "packets_per_second")
        },
    }


def summarize(raw: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians per system and subscriber count, for the counts that were measured."""
    return {
        system: {
            str(n): {
                "us_per_packet": median([t["us_per_packet"] for t in trials if t["us_per_packet"]]),
                "packets_per_second": median([t["packets_per_second"] for t in trials]),
                "cpu_share": median([t["cpu_share"] for t in trials], 4),
            }
            for n, trials in by_n.items() if trials
        }
        for system, by_n in raw.items()
    }


def relay_ratios(summary: dict[str, Any]) -> dict[str, float]:
    """MediaRelay's CPU per packet over the SFU's, at each count where both were measured."""
    sfu, relay = summary.get("sfu", {}), summary.get("relay", {})
    pairs = {n: (sfu[n]["us_per_packet"], relay[n]["us_per_packet"]) for n in sfu.keys() & relay.keys()}
    return {n: round(r / s, 1) for n, (s, r) in sorted(pairs.items(), key=lambda item: int(item[0])) if s and r}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    configure_ice(["127.0.0.1"])
    sfu_counts = [int(n) for n in args.sfu.split(",")]
    relay_counts = [int(n) for n in args.relay.split(",")]
    raw: dict[str, dict[int, list[dict[str, float]]]] = {"sfu": {n: [] for n in sfu_counts}, "relay": {n: [] for n in relay_counts}}
    with tempfile.TemporaryDirectory() as workdir:
        sfu = SfuUnderTest(Path(workdir), max(max(sfu_counts) + 1, GRID_PEOPLE))
        await sfu.start()
        try:
            idle = await sfu.idle(3.0)
            grid = await sfu.grid(args.trials, args.warmup, args.window) if args.scenario in ("all", "simulcast") else None
            for trial in range(args.trials if args.scenario in ("all", "fanout") else 0):
                for n in sorted(set(sfu_counts) | set(relay_counts)):
                    if n in raw["sfu"]:
                        result = await sfu.trial(n, args.warmup, args.window)
                        raw["sfu"][n].append(result)
                        print(f"trial {trial + 1} sfu   N={n:2}: {result['us_per_packet']} us/packet, {result['packets_per_second']} packets/s, cpu {result['cpu_share']:.1%}", flush=True)
                    if n in raw["relay"]:
                        result = await relay_trial(n, args.warmup, args.window)
                        raw["relay"][n].append(result)
                        print(f"trial {trial + 1} relay N={n:2}: {result['us_per_packet']} us/packet, {result['packets_per_second']} packets/s, cpu {result['cpu_share']:.1%}", flush=True)
        finally:
            sfu.stop()
    summary = summarize(raw)
    marginals = {system: marginal_us([t for trials in by_n.values() for t in trials]) for system, by_n in raw.items()}
    ratios = relay_ratios(summary)
    return {
        "benchmark": "sfu",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "setup": {
            "video": f"{WIDTH}x{HEIGHT} VP8 {FPS} fps pattern", "audio": "Opus tone", "trials": args.trials,
            "warmup_seconds": args.warmup, "window_seconds": args.window,
            "server_core": 0, "load_core": 1,
        },
        "sfu_idle_cpu_share": idle,
        "median": summary,
        "relay_over_sfu_cpu_per_packet": ratios,
        "marginal_us_per_packet": marginals,
        "simulcast_grid": grid,
        "trials": {system: {str(n): trials for n, trials in by_n.items()} for system, by_n in raw.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--sfu", default="1,4,8,16,32", help="subscriber counts for the SFU")
    parser.add_argument("--relay", default="1,4,8", help="subscriber counts for the MediaRelay baseline")
    parser.add_argument("--scenario", choices=("all", "fanout", "simulcast"), default="all")
    parser.add_argument("--quick", action="store_true", help="one trial of 5 s, N = 1, 8")
    parser.add_argument("--output", type=Path, default=RESULTS / "sfu.json")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.window, args.sfu, args.relay = 1, 5.0, "1,8", "1,8"
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    report = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({
        "median": report["median"], "ratios": report["relay_over_sfu_cpu_per_packet"],
        "marginal_us_per_packet": report["marginal_us_per_packet"],
        "simulcast_grid": (report["simulcast_grid"] or {}).get("median"),
    }, indent=2))


if __name__ == "__main__":
    main()
