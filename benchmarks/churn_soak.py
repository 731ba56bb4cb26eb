"""Churn soak: participants join, publish simulcast, switch layers and leave, over and over, for
``--minutes`` (30 by default), against a node run as production runs it (``videoconf run`` in its
own process, SQLite).  Whatever the node allocates for a participant must go when the participant
goes: its resident memory, open file descriptors, asyncio tasks and live peer connections are
read when the node is idle after a warm-up (the start) and when it is idle again after the soak
(the end), and each must come back to where it started.

Per participant slot (``--participants``, 4 by default), in a loop: mint a room token through the
API, join, publish a three-layer simulcast pattern (SSRC-group simulcast from the SDK) and a tone,
receive everyone else and, every ``--switch-every`` seconds, ask for another layer of each remote
video (``track_settings``: a tile size or a quality, so the SFU switches layers and dynacast
pauses and resumes them at the publishers), stay a random 4 to 12 s, leave, pause, join again.

Figures: RSS and file descriptors from /proc/<pid> of the node; tasks and peer connections from
its /metrics (``process_asyncio_tasks``, ``videoconf_sfu_peer_connections``).  A sample every
``--sample-every`` seconds goes into the JSON too, so a slow climb shows.  Tolerance: file
descriptors, tasks and peer connections must come back exactly (at most their start); RSS may end
at most ``--rss-tolerance-mib`` (default 16 MiB) above its start, since CPython's allocator keeps
freed arenas.

    python -m benchmarks.churn_soak [--minutes 30] [--participants 4] [--output benchmarks/results/churn_soak.json]

Exit status 0 when every figure came back, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from clients.loadtest.process import ChildProcess, free_port, listening
from clients.sdk.media import SimulcastPattern, ToneAudioTrack
from clients.sdk.participant import Participant

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results"
PASSWORD = "correct horse battery"
LAYERS = ((160, 90), (320, 180), (640, 360))
FPS = 10
# What a subscriber asks for, in turn: each layer by tile size, and by quality.
ASKS: tuple[dict[str, Any], ...] = (
    {"width": 160, "height": 90}, {"width": 320, "height": 180}, {"width": 640, "height": 360},
    {"quality": "low"}, {"quality": "medium"}, {"quality": "high"},
)
CYCLE_SLACK = 60.0  # seconds a cycle may take beyond its stay (joining, publishing, leaving)
log = logging.getLogger("churn_soak")


# The node ---------------------------------------------------------------------------------------


class Node:
    """``videoconf run`` in its own process, SQLite in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "node.log"
        self.env = {
            **os.environ,
            "VIDEOCONF_ENV": "development",
            "VIDEOCONF_DATA_DIR": str(workdir / "data"),
            "VIDEOCONF_PORT": str(self.port),
            "VIDEOCONF_ACCESS_LOG": "false",
            "VIDEOCONF_LOG_LEVEL": "WARNING",
            "VIDEOCONF_ACCESS_TOKEN_TTL": "86400",
            "VIDEOCONF_ICE_ADDRESSES": '["127.0.0.1"]',
            "VIDEOCONF_ICE_SERVERS": "[]",
            "VIDEOCONF_SFU_ICE_SERVERS": "[]",
            "VIDEOCONF_PASSWORD_HASHING__TIME_COST": "1",
            "VIDEOCONF_PASSWORD_HASHING__MEMORY_KIB": "1024",
            "VIDEOCONF_PASSWORD_HASHING__PARALLELISM": "1",
        }
        self.env.pop("VIDEOCONF_CONFIG", None)
        for rule in ("login_per_ip", "login_per_account", "register_per_ip", "code_lookup_per_ip", "passcode_per_user"):
            self.env[f"VIDEOCONF_RATE_LIMITS__{rule.upper()}__LIMIT"] = "1000000"
            self.env[f"VIDEOCONF_RATE_LIMITS__{rule.upper()}__PERIOD"] = "1"
        self.process: ChildProcess | None = None

    def start(self) -> None:
        cli = [sys.executable, "-m", "videoconf.cli"]
        subprocess.run([*cli, "migrate"], env=self.env, check=True, capture_output=True, timeout=60, cwd=ROOT)
        self.process = ChildProcess([*cli, "run"], env=self.env, cwd=ROOT, output=self.log_path)
        self.process.start(lambda: listening(self.port), 30, "the node")

    def stop(self) -> int:
        if self.process is None:
            return 0
        return self.process.stop(signal.SIGINT, 30) or 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        directory = Path(f"/proc/{self.pid}/fd")
        for entry in directory.iterdir():
            try:
                target = os.readlink(entry)
            except OSError:
                continue  # closed while listing
            kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def sockets(self) -> list[str]:
        """The node's sockets, as "proto local -> remote state" where /proc/net knows them."""
        inodes = set()
        for entry in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(entry)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN", "07": "CLOSE"}
        found = []
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/net/{proto}").read_text().splitlines()[1:]:
                    fields = line.split()
                    if fields[9] in inodes:
                        inodes.discard(fields[9])
                        local, remote = (int(fields[i].split(":")[1], 16) for i in (1, 2))
                        state = states.get(fields[3], fields[3]) if proto.startswith("tcp") else ""
                        found.append(f"{proto} :{local} -> :{remote} {state}".strip())
        return sorted(found) + [f"other socket {inode}" for inode in sorted(inodes)]

    async def gauges(self, http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(self.base + "/metrics") as response:
            text = await response.text()
        wanted = {
            "process_asyncio_tasks": "tasks", "videoconf_sfu_peer_connections": "peer_connections",
            "videoconf_sfu_participants": "participants", "videoconf_sfu_rooms": "rooms",
            "videoconf_sfu_packets_forwarded_total": "packets_forwarded",
        }
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    key = wanted[sample.name]
                    values[key] = values.get(key, 0.0) + sample.value
        return values

    async def figures(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        gauges = await self.gauges(http)
        fds = self.fds()
        return {
            "rss_bytes": self.rss_bytes(),
            "rss_mib": round(self.rss_bytes() / 2**20, 1),
            "fds": sum(fds.values()),
            "fd_kinds": fds,
            "sockets": self.sockets(),
            "tasks": int(gauges.get("tasks", -1)),
            "peer_connections": int(gauges.get("peer_connections", -1)),
            "participants": int(gauges.get("participants", -1)),
            "rooms": int(gauges.get("rooms", -1)),
            "packets_forwarded": int(gauges.get("packets_forwarded", 0)),
        }


# The load ---------------------------------------------------------------------------------------


@dataclass
class Counts:
    cycles: int = 0
    joins: int = 0
    publishes: int = 0
    leaves: int = 0
    layer_requests: int = 0
    layer_changes: int = 0  # track-forwarding messages that named another layer
    cycles_with_video: int = 0
    frames_decoded: int = 0
    frames_corrupt: int = 0
    decoded_by_size: dict[str, int] = field(default_factory=dict)
    corrupt_by_size: dict[str, int] = field(default_factory=dict)  # frames whose pattern did not read back
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(what)


class Load:
    def __init__(self, node: Node, slots: int, switch_every: float, seed: int = 1) -> None:
        self.node = node
        self.slots = slots
        self.switch_every = switch_every
        self.rng = random.Random(seed)
        self.counts = Counts()
        self.accounts: list[str] = []
        self.meeting: dict[str, Any] | None = None
        self.http: aiohttp.ClientSession | None = None

    async def call(self, path: str, token: str | None, body: Any) -> Any:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(self.node.base + path, json=body, headers=headers) as response:
            if response.status >= 300:
                raise RuntimeError(f"{path}: {response.status} {await response.text()}")
            return await response.json()

    async def prepare(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        for i in range(self.slots):
            body = await self.call("/api/auth/register", None, {
                "email": f"churn{i}@bench.example", "password": PASSWORD, "display_name": f"Churn {i}"})
            self.accounts.append(body["access_token"])
        self.meeting = await self.call("/api/meetings", self.accounts[0], {"title": "Churn soak", "kind": "instant"})

    async def run(self, seconds: float) -> None:
        """Every slot churns until ``seconds`` have passed; then everyone has left."""
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds
        await asyncio.gather(*(self._slot(i, stop_at) for i in range(self.slots)))

    async def _slot(self, index: int, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(index * 0.7)  # staggered
        while loop.time() < stop_at:
            stay = self.rng.uniform(4.0, 12.0)
            phase = ["starting"]
            try:
                # Every cycle is bounded: a step that hangs is an error naming the step.
                await asyncio.wait_for(self._cycle(index, min(stop_at, loop.time() + stay), phase), stay + CYCLE_SLACK)
            except asyncio.TimeoutError:
                self.counts.error(f"slot {index}: the cycle hung in {phase[0]}")
                log.warning("slot %d: the cycle hung in %s", index, phase[0])
            except Exception as exc:  # counted, and the slot goes on
                self.counts.error(f"slot {index} in {phase[0]}: {type(exc).__name__}: {exc}")
                log.warning("slot %d in %s: %s: %s", index, phase[0], type(exc).__name__, exc)
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))

    async def _cycle(self, index: int, leave_at: float, phase: list[str]) -> None:
        assert self.meeting is not None
        loop = asyncio.get_running_loop()
        phase[0] = "the join request"
        joined = await self.call(f"/api/meetings/{self.meeting['id']}/join", self.accounts[index], {})
        client = Participant(joined["signaling_url"], joined["token"], ice_servers=[], video_codec="VP8")
        try:
            phase[0] = "connect"
            await client.connect()
            self.counts.joins += 1
            phase[0] = "publish"
            await client.publish([(SimulcastPattern(LAYERS, fps=FPS), "camera"), (ToneAudioTrack(frequency=300 + 60 * index), "microphone")])
            self.counts.publishes += 1
            asks = 0
            phase[0] = "layer switching"
            while loop.time() < leave_at:
                await asyncio.sleep(min(self.switch_every, max(0.0, leave_at - loop.time())))
                for remote in list(client.remote.values()):
                    if remote.kind == "video" and not remote.ended:
                        await client.track_settings(remote.track_id, **ASKS[(asks + index) % len(ASKS)])
                        self.counts.layer_requests += 1
                asks += 1
            phase[0] = "report"
            report = await client.report()
            videos = [t for t in report["tracks"] if t["kind"] == "video"]
            if any(t.get("frames_received", 0) > 0 for t in videos):
                self.counts.cycles_with_video += 1
            self.counts.frames_decoded += sum(t.get("frames_received", 0) for t in videos)
            self.counts.frames_corrupt += sum(t.get("frames_corrupt", 0) for t in videos)
            for video in videos:
                for size, frames in video.get("sizes", {}).items():
                    self.counts.decoded_by_size[size] = self.counts.decoded_by_size.get(size, 0) + frames
                for size, frames in video.get("corrupt_sizes", {}).items():
                    self.counts.corrupt_by_size[size] = self.counts.corrupt_by_size.get(size, 0) + frames
            layers: dict[str, Any] = {}
            for message in client.history:
                if message.get("type") == "track-forwarding" and message.get("forwarding"):
                    previous = layers.get(message["track_id"])
                    if previous is not None and previous != message.get("layer"):
                        self.counts.layer_changes += 1
                    layers[message["track_id"]] = message.get("layer")
            self.counts.cycles += 1
        finally:
            phase[0] = "close"
            try:
                await asyncio.wait_for(client.close(), 30)
            except asyncio.TimeoutError:
                self.counts.error(f"slot {index}: leaving hung")
            self.counts.leaves += 1


# Measuring --------------------------------------------------------------------------------------


async def settle(node: Node, http: aiohttp.ClientSession, baseline: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    """Wait until the node is idle: nobody in, no peer connection, and tasks and descriptors at or
    under the baseline (or, without one, steady across two readings a second apart)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    previous: dict[str, Any] | None = None
    while True:
        now = await node.figures(http)
        idle = now["participants"] == 0 and now["peer_connections"] == 0
        if baseline is not None:
            done = idle and now["tasks"] <= baseline["tasks"] and now["fds"] <= baseline["fds"]
        else:
            done = idle and previous is not None and now["tasks"] == previous["tasks"] and now["fds"] == previous["fds"]
        if done or loop.time() > deadline:
            now["settled"] = done
            return now
        previous = now
        await asyncio.sleep(1.0)


async def sample_every(node: Node, http: aiohttp.ClientSession, interval: float, started: float, into: list[dict[str, Any]]) -> None:
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            figures = await node.figures(http)
            into.append({"t": round(time.monotonic() - started, 1), **{k: figures[k] for k in (
                "rss_mib", "fds", "tasks", "peer_connections", "participants")}})


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="videoconf-churn-"))
    node = Node(workdir)
    node.start()
    samples: list[dict[str, Any]] = []
    try:
        # One connection per request, so that no idle keep-alive connection of this harness (a
        # socket and a handler task on the node) is counted as the node's own.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=connector) as http:
            load = Load(node, args.participants, args.switch_every)
            await load.prepare(http)
            # Warm-up at the soak's concurrency: imports, codec tables, the database pool and the
            # allocator's arenas reach their working size before the start is read.
            await load.run(args.warmup)
            start = await settle(node, http, None, args.settle)
            warmup_counts = load.counts
            load.counts = Counts()
            started = time.monotonic()
            sampler = asyncio.create_task(sample_every(node, http, args.sample_every, started, samples))
            try:
                await load.run(args.minutes * 60)
                peak = max(samples, key=lambda s: s["peer_connections"], default=None)
            finally:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            soak_seconds = time.monotonic() - started
            end = await settle(node, http, start, args.settle)
    finally:
        code = node.stop()
    tolerance = args.rss_tolerance_mib * 2**20
    returned = {
        "rss": end["rss_bytes"] <= start["rss_bytes"] + tolerance,
        "fds": end["fds"] <= start["fds"],
        "tasks": end["tasks"] <= start["tasks"],
        "peer_connections": end["peer_connections"] <= start["peer_connections"] and end["peer_connections"] == 0,
    }
    return {
        "benchmark": "churn_soak",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "minutes": args.minutes, "participants": args.participants, "warmup_seconds": args.warmup,
            "switch_every_seconds": args.switch_every, "layers": [f"{w}x{h}" for w, h in LAYERS], "fps": FPS,
            "node": "videoconf run (SQLite), its own process",
        },
        "soak_seconds": round(soak_seconds, 1),
        "start": start,
        "end": end,
        "delta": {k: end[k] - start[k] for k in ("rss_bytes", "fds", "tasks", "peer_connections")}
        | {"rss_mib": round((end["rss_bytes"] - start["rss_bytes"]) / 2**20, 1)},
        "tolerance": {"rss_mib": args.rss_tolerance_mib, "fds": 0, "tasks": 0, "peer_connections": 0},
        "returned": returned,
        "all_returned": all(returned.values()),
        "peak": peak,
        "counts": vars(load.counts),
        "warmup_counts": {k: v for k, v in vars(warmup_counts).items() if k != "error_samples"},
        "node_exit_code": code,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak after the warm-up")
    parser.add_argument("--participants", type=int, default=4, help="participant slots churning at once")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of churn before the start is read")
    parser.add_argument("--switch-every", type=float, default=2.0, help="seconds between layer requests")
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--settle", type=float, default=45.0, help="seconds to wait for an idle node")
    parser.add_argument("--rss-tolerance-mib", type=float, default=16.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "churn_soak.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    s, e = result["start"], result["end"]
    print(f"churn soak: {result['soak_seconds']:.0f} s, {result['counts']['cycles']} cycles, "
          f"{result['counts']['layer_requests']} layer requests, {result['counts']['errors']} errors")
    for key, unit in (("rss_mib", "MiB"), ("fds", ""), ("tasks", ""), ("peer_connections", "")):
        name = key.replace("_mib", "")
        print(f"  {name:17} start {s[key]:>8} end {e[key]:>8} {unit:3} {'ok' if result['returned'][name] else 'NOT BACK'}")
    print(f"written to {args.output}")
    sys.exit(0 if result["all_returned"] else 1)


if __name__ == "__main__":
    main()
