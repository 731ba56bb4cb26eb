"""Drive a running VideoConf node with SDK bots and measure what it carries.

A run signs in to the control API as a host (or registers a throw-away host), creates a meeting
and starts it, then mints room tokens for its bots with the deployment's room-token key (as
the control API would on join), so one account can bring hundreds of participants.  Publishers
replay pre-encoded media (:mod:`clients.sdk.replay`); receivers count what arrives at the RTP
level (:mod:`clients.loadtest.stats`).  A measured window is bracketed by two scrapes of the
node's ``/metrics`` (forwarded and received packets, bytes, process CPU, the forwarding-delay
histogram) and two snapshots of every receiver's books.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from clients.loadtest.scenarios import Scenario
from clients.loadtest.spread import WorkerClient, api_base, assign_nodes, registry_nodes
from clients.loadtest.stats import (
    RtpCounter,
    Scrape,
    counting,
    histogram_quantile,
    parse_metrics,
    percentile,
)
from clients.sdk.participant import Participant
from clients.sdk.replay import ReplaySimulcast, ReplayTrack, encoded_audio, encoded_video
from control_api.security import TokenCodec

Progress = Callable[[str], None]

FORWARDED = "videoconf_sfu_packets_forwarded_total"
RECEIVED = "videoconf_sfu_packets_received_total"
BYTES_OUT = "videoconf_sfu_bytes_forwarded_total"
CPU = "process_cpu_seconds_total"
DELAY = "videoconf_sfu_forward_delay_seconds"  # arrival to the last copy of each packet
COPY_DELAY = "videoconf_sfu_forward_copy_delay_seconds"  # arrival to each copy


class LoadTestError(Exception):
    pass


@dataclass
class Target:
    """The node under load: its control API and the room-token codec of its deployment."""

    api: str
    room_tokens: TokenCodec
    email: str | None = None
    password: str | None = None
    token_ttl: int = 3600
    host_token: str | None = None  # signed in (or registered) once per run
    signaling_url: str | None = None  # instead of the one the join answer names
    metrics_token: str | None = None  # the node's metrics_token, for a /metrics it guards
    processes: int = 1  # processes holding the viewers (this one and workers)
    ice_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])


def process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Bot:
    index: int
    role: str  # "publisher" or "viewer"
    participant: Participant
    counter: RtpCounter | None = None
    tracks: list[ReplayTrack] = field(default_factory=list)
    decode: bool = False  # also decodes and verifies what it receives
    started_at: float = 0.0
    joined_at: float | None = None
    failed: str | None = None

    @property
    def join_seconds(self) -> float | None:
        return None if self.joined_at is None else self.joined_at - self.started_at

    @property
    def media_seconds(self) -> float | None:
        first = self.counter.first_packet_at if self.counter else None
        return None if first is None else first - self.started_at


@dataclass
class RemoteBot:
    """A viewer held by a worker process."""

    index: int
    worker: WorkerClient
    join_seconds: float | None = None
    failed: str | None = None


class Meeting:
    """One meeting on the target with its bots: publishers here, viewers here and in workers,
    on the meeting's node or (a cluster) spread over nodes as the control API would place them."""

    def __init__(self, target: Target, scenario: Scenario, progress: Progress | None = None) -> None:
        self.target = target
        self.scenario = scenario
        self.progress = progress or (lambda text: None)
        self.meeting_id: str | None = None
        self.signaling_url: str | None = None
        self.bots: list[Bot] = []
        self.remote_bots: list[RemoteBot] = []
        self.workers: list[WorkerClient] = []
        self.origin: str | None = None  # the meeting's node, in a cluster
        self.node_apis: list[str] = [target.api.rstrip("/")]  # the nodes scraped
        self._count = 0
        self._http: aiohttp.ClientSession | None = None
        self._rng = random.Random(7)

    # Control API -------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self._http.request(method, self.target.api.rstrip("/") + path, json=body, headers=headers) as response:
            try:
                data = await response.json(content_type=None)
            except ValueError:  # not JSON: not a VideoConf control API
                raise LoadTestError(f"{method} {path}: {response.status}, not a JSON answer: is {self.target.api} a VideoConf node?") from None
            if response.status >= 300:
                error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                raise LoadTestError(f"{method} {path}: {response.status} {error.get('code')}: {error.get('message')}")
            return data

    async def _host_token(self) -> str:
        target = self.target
        if target.host_token is None:
            if target.email and target.password:
                answer = await self._call("POST", "/api/auth/login", body={"email": target.email, "password": target.password})
            else:
                email = f"loadtest-{secrets.token_hex(6)}@loadtest.example"
                answer = await self._call("POST", "/api/auth/register", body={
                    "email": email, "password": secrets.token_urlsafe(18), "display_name": "Load test host"})
            target.host_token = str(answer["access_token"])
        return target.host_token

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        token = await self._host_token()
        settings = {"last_n": max(1, min(100, self.scenario.publishers)),
                    "max_participants": 1000,  # the most a meeting allows: a capacity search grows its meeting
                    **self.scenario.settings}
        meeting = await self._call("POST", "/api/meetings", token, {"title": f"load test: {self.scenario.name}", "kind": "instant", "settings": settings})
        joined = await self._call("POST", f"/api/meetings/{meeting['id']}/join", token, {})
        self.meeting_id = str(meeting["id"])
        self.signaling_url = self.target.signaling_url or str(joined["signaling_url"])
        if joined.get("node") and self.target.signaling_url is None:
            self.origin = str(joined["node"])
            nodes = registry_nodes(await self._call("GET", "/api/nodes", self.target.metrics_token))
            self.node_apis = sorted({api_base(n.signaling_url) for n in nodes} | set(self.node_apis))
        for index in range(1, max(1, self.target.processes)):
            worker = WorkerClient(index, self.target.ice_addresses)
            self.workers.append(worker)
            await worker.start()

    async def routes(self, count: int) -> list[str]:
        """The signaling URL each of ``count`` new participants joins at."""
        assert self.signaling_url is not None
        if self.origin is None:
            return [self.signaling_url] * count
        nodes = registry_nodes(await self._call("GET", "/api/nodes", self.target.metrics_token))
        if not nodes:
            return [self.signaling_url] * count
        return [node.signaling_url for node in assign_nodes(nodes, self.origin, count)]

    def mint(self, name: str) -> str:
        """A room token for a new identity, as the control API's join would make it."""
        assert self.meeting_id is not None
        token, _ = self.target.room_tokens.encode({
            "sub": str(uuid.uuid4()), "name": name, "room": self.meeting_id, "role": "participant",
            "grants": {"can_publish": True, "can_subscribe": True, "can_publish_data": True,
                       "room_admin": False, "hidden": False, "recorder": False},
            "waiting": False, "jti": uuid.uuid4().hex,
        }, self.target.token_ttl)
        return token

    # Bots --------------------------------------------------------------------------------------

    def _media(self) -> list[tuple[Any, str]]:
        scenario = self.scenario
        tracks: list[tuple[Any, str]] = []
        layers = [encoded_video(w, h, scenario.fps, b) for w, h, b in scenario.video_layers]
        if len(layers) > 1:
            tracks.append((ReplaySimulcast(layers), "camera"))
        elif layers:
            tracks.append((ReplayTrack(layers[0]), "camera"))
        if scenario.audio:
            tracks.append((ReplayTrack(encoded_audio()), "microphone"))
        return tracks

    def _next_index(self) -> int:
        self._count += 1
        return self._count - 1

    async def join(self, role: str, url: str | None = None) -> Bot:
        url = url or self.signaling_url
        assert url is not None
        index = self._next_index()
        participant = Participant(url, self.mint(f"{role}-{index}"), ice_servers=[], video_codec="VP8")
        bot = Bot(index, role, participant)
        self.bots.append(bot)
        receiver = role == "viewer" or self.scenario.publishers > 1
        decode = bot.decode = receiver and sum(1 for b in self.bots if b.decode) < self.scenario.decode
        counter = bot.counter = RtpCounter()
        count = counting(self.scenario.clear_count and role == "viewer", decode)
        participant.tap_incoming(lambda pc: count(pc, counter))
        bot.started_at = time.monotonic()
        try:
            await participant.connect(timeout=30)
            bot.joined_at = time.monotonic()
            if role == "publisher":
                media = self._media()
                await participant.publish(media, timeout=30)
                for track, _ in media:
                    bot.tracks.extend(getattr(track, "tracks", None) or [track])
        except Exception as exc:  # a bot that cannot join is counted, not fatal
            bot.failed = f"{type(exc).__name__}: {exc}"
        return bot

    async def add_publishers(self) -> None:
        scenario = self.scenario
        for i in range(scenario.publishers):
            self.progress(f"publishers {i}/{scenario.publishers}")
            bot = await self.join("publisher")
            if bot.failed:
                raise LoadTestError(f"publisher {i} failed: {bot.failed}")

    async def add_viewers(self, count: int) -> list[Bot]:
        """``count`` more receive-only bots, shared among this process and the workers, joined
        node by node (the meeting's node first); the ones here join spread over the join window
        (a storm), or a few at a time."""
        routes = await self.routes(count)
        groups: dict[str, int] = {}
        for url in routes:
            groups[url] = groups.get(url, 0) + 1
        joined: list[Bot] = []
        processes = 1 + len(self.workers)
        for url, size in groups.items():
            shares = [size // processes + (1 if i < size % processes else 0) for i in range(processes)]
            remote = [self._join_remote(worker, share, url) for worker, share in zip(self.workers, shares[1:], strict=True) if share]
            results = await asyncio.gather(self._add_local_viewers(shares[0], url), *remote)
            joined.extend(results[0])
        return joined

    async def _join_remote(self, worker: WorkerClient, count: int, url: str) -> None:
        specs = []
        for _ in range(count):
            index = self._next_index()
            specs.append({"index": index, "token": self.mint(f"viewer-{index}"), "url": url, "clear": self.scenario.clear_count})
        answer = await worker.request({"cmd": "join", "bots": specs, "concurrency": self.scenario.join_concurrency}, timeout=60 + 2 * count)
        for entry in answer["joined"]:
            self.remote_bots.append(RemoteBot(int(entry["index"]), worker, entry.get("join_seconds"), entry.get("failed")))

    async def _add_local_viewers(self, count: int, url: str) -> list[Bot]:
        scenario = self.scenario
        done = 0

        async def one(delay: float) -> Bot:
            nonlocal done
            await asyncio.sleep(delay)
            bot = await self.join("viewer", url)
            done += 1
            self.progress(f"joining {done}/{count}")
            return bot

        if scenario.join_window:
            delays = sorted(self._rng.uniform(0, scenario.join_window) for _ in range(count))
            return list(await asyncio.gather(*(one(d) for d in delays)))
        gate = asyncio.Semaphore(scenario.join_concurrency)

        async def gated() -> Bot:
            async with gate:
                return await one(0.0)

        return list(await asyncio.gather(*(gated() for _ in range(count))))

    async def remove_viewers(self, count: int) -> None:
        viewers = [b for b in self.bots if b.role == "viewer"][-count:]
        await asyncio.gather(*(b.participant.close() for b in viewers))
        self.bots = [b for b in self.bots if b not in viewers]
        left = count - len(viewers)
        while left > 0 and self.remote_bots:
            last = self.remote_bots.pop()
            await last.worker.request({"cmd": "remove", "count": 1})
            left -= 1

    def viewer_count(self) -> int:
        return sum(1 for b in self.bots if b.role == "viewer") + len(self.remote_bots)

    def receivers(self) -> list[Bot]:
        """Bots that should receive media: viewers, and publishers when there are others."""
        return [b for b in self.bots if not b.failed and (b.role == "viewer" or self.scenario.publishers > 1)]

    async def settle(self, timeout: float = 60.0) -> None:
        """Wait until every receiver gets every stream it should, then ask for the tile size."""
        deadline = time.monotonic() + timeout

        def missing(bot: Bot) -> bool:
            assert bot.counter is not None
            video, audio = self.scenario.expected_streams(publisher=bot.role == "publisher")
            return len(bot.counter.media("video")) < video or len(bot.counter.media("audio")) < audio

        while True:
            waiting = [b for b in self.receivers() if missing(b)]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise LoadTestError(f"{len(waiting)} of {len(self.receivers())} receivers did not get every stream within {timeout:.0f} s")
            self.progress(f"waiting for media: {len(self.receivers()) - len(waiting)}/{len(self.receivers())} receive everything")
            await asyncio.sleep(0.5)
        video, audio = self.scenario.expected_streams(publisher=False)
        await asyncio.gather(*(
            worker.request({"cmd": "settle", "video": video, "audio": audio, "tile": self.scenario.tile,
                            "timeout": max(1.0, deadline - time.monotonic())}, timeout=timeout + 30)
            for worker in self.workers
        ))
        if self.scenario.tile:
            width, height = self.scenario.tile
            for bot in self.receivers():
                for remote in list(bot.participant.remote.values()):
                    if remote.kind == "video":
                        await bot.participant.track_settings(remote.track_id, width=width, height=height)

    async def scrape(self) -> Scrape:
        """Every node's metrics, summed (one node outside a cluster)."""
        scrapes = await asyncio.gather(*(self._scrape(api) for api in self.node_apis))
        total = Scrape(time.monotonic())
        for scrape in scrapes:
            for key, value in scrape.samples.items():
                total.samples[key] = total.samples.get(key, 0.0) + value
        return total

    async def _scrape(self, api: str) -> Scrape:
        assert self._http is not None
        token = self.target.metrics_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self._http.get(api + "/metrics", headers=headers) as response:
            if response.status != 200:
                raise LoadTestError(f"GET {api}/metrics: {response.status}")
            try:
                return parse_metrics(await response.text(), time.monotonic())
            except ValueError as exc:  # prometheus-client's parser rejects what is not its text format
                raise LoadTestError(f"GET /metrics: not Prometheus text ({exc})") from None

    async def close(self) -> None:
        await asyncio.gather(*(b.participant.close() for b in self.bots), return_exceptions=True)
        self.bots = []
        await asyncio.gather(*(worker.close() for worker in self.workers), return_exceptions=True)
        self.workers, self.remote_bots = [], []
        if self._http is not None:
            await self._http.close()


# Measuring --------------------------------------------------------------------------------------


def _books(meeting: Meeting) -> dict[int, dict[str, Any]]:
    """Every receiver's totals, plus per-stream frame counts (for the frame rate)."""
    books: dict[int, dict[str, Any]] = {}
    for bot in meeting.receivers():
        assert bot.counter is not None
        totals = bot.counter.totals()
        totals["video_frames_by_ssrc"] = {ssrc: s.frames for ssrc, s in bot.counter.streams.items() if s.kind == "video" and not s.rtx}
        books[bot.index] = totals
    return books


async def _all_books(meeting: Meeting) -> tuple[dict[str, dict[str, Any]], dict[str, float], list[float]]:
    """Every receiver's books, here and in the workers (keyed by process and bot), when media
    first reached the workers' bots, and the CPU seconds of each load process (this one first)."""
    books: dict[str, dict[str, Any]] = {f"p:{index}": book for index, book in _books(meeting).items()}
    cpus = [process_cpu_seconds()]
    first_media: dict[str, float] = {}
    answers = await asyncio.gather(*(worker.request({"cmd": "books"}) for worker in meeting.workers))
    for worker, answer in zip(meeting.workers, answers, strict=True):
        for index, book in answer["books"].items():
            books[f"w{worker.index}:{index}"] = book
        first_media.update({f"w{worker.index}:{k}": v for k, v in answer["first_media"].items()})
        cpus.append(float(answer["cpu"]))
    return books, first_media, cpus


def _publisher_bytes(meeting: Meeting) -> int:
    return sum(t.bytes_sent for b in meeting.bots for t in b.tracks)


async def measure(meeting: Meeting, window: float) -> dict[str, Any]:
    """One measured window of ``window`` seconds."""
    scenario = meeting.scenario
    scrape0, (books0, _, cpu0), sent0 = await meeting.scrape(), await _all_books(meeting), _publisher_bytes(meeting)
    local0 = sum(b["packets"] for b in _books(meeting).values())
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < window:
        out = sum(b["packets"] for b in _books(meeting).values()) - local0
        meeting.progress(f"measuring {elapsed:4.1f}/{window:.0f} s, {out / max(elapsed, 1e-3):,.0f} packets/s received here")
        await asyncio.sleep(min(1.0, window - elapsed))
    scrape1, (books1, remote_media, cpu1), sent1 = await meeting.scrape(), await _all_books(meeting), _publisher_bytes(meeting)
    wall = scrape1.at - scrape0.at
    load_shares = [(after - before) / wall for before, after in zip(cpu0, cpu1, strict=True)]

    def delta(name: str, **labels: str) -> float:
        return scrape1.total(name, **labels) - scrape0.total(name, **labels)

    received = {k: sum(b1[k] - books0.get(i, {}).get(k, 0) for i, b1 in books1.items()) for k in ("packets", "expected", "lost", "freezes", "retransmissions", "bytes")}
    fps: list[float] = []
    for index, book in books1.items():
        frames0 = books0.get(index, {}).get("video_frames_by_ssrc", {})
        fps.extend((frames - frames0.get(ssrc, 0)) / wall for ssrc, frames in book["video_frames_by_ssrc"].items())
    before = scrape0.buckets(DELAY)
    after = scrape1.buckets(DELAY)
    p50, p99 = histogram_quantile(0.5, before, after), histogram_quantile(0.99, before, after)
    copies0, copies1 = scrape0.buckets(COPY_DELAY), scrape1.buckets(COPY_DELAY)
    copy_p50, copy_p99 = histogram_quantile(0.5, copies0, copies1), histogram_quantile(0.99, copies0, copies1)
    sfu_cpu = delta(CPU) / wall
    forwarded = delta(FORWARDED)
    fps_median = percentile(fps, 0.5) if fps else None
    joins = [b.join_seconds for b in meeting.bots if b.join_seconds is not None]
    joins += [r.join_seconds for r in meeting.remote_bots if r.join_seconds is not None]
    media = [b.media_seconds for b in meeting.receivers() if b.media_seconds is not None] + list(remote_media.values())
    result: dict[str, Any] = {
        "publishers": sum(1 for b in meeting.bots if b.role == "publisher" and not b.failed),
        "subscribers": len(meeting.receivers()) + sum(1 for r in meeting.remote_bots if not r.failed),
        "failed_joins": sum(1 for b in meeting.bots if b.failed) + sum(1 for r in meeting.remote_bots if r.failed),
        "nodes": len(meeting.node_apis),
        "window_seconds": round(wall, 2),
        "packets_in_per_second": round(delta(RECEIVED) / wall, 1),
        "packets_out_per_second": round(forwarded / wall, 1),
        "mbit_in": round((sent1 - sent0) * 8 / wall / 1e6, 3),
        "mbit_out": round(delta(BYTES_OUT) * 8 / wall / 1e6, 3),
        "sfu_cpu": round(sfu_cpu, 4),
        "sfu_us_per_forwarded_packet": round(delta(CPU) * 1e6 / forwarded, 2) if forwarded else None,
        "forward_delay_ms": {"p50": _ms(p50), "p99": _ms(p99)},  # to the last copy of each packet
        "copy_delay_ms": {"p50": _ms(copy_p50), "p99": _ms(copy_p99)},  # to each copy
        "received_packets": int(received["packets"]),
        "received_per_second": round(received["packets"] / wall, 1),
        "packet_loss": round(received["lost"] / received["expected"], 5) if received["expected"] else None,
        "retransmissions": int(received["retransmissions"]),
        "frame_rate": {
            "sent": scenario.sent_fps,
            "median": round(fps_median, 2) if fps_median is not None else None,
            "p10": round(percentile(fps, 0.1) or 0.0, 2) if fps else None,
        },
        "freezes": int(received["freezes"]),
        "join_ms": {"p50": _ms(percentile(joins, 0.5)), "p99": _ms(percentile(joins, 0.99))},
        "first_media_ms": {"p50": _ms(percentile(media, 0.5)), "p99": _ms(percentile(media, 0.99))},
        "load_cpu": round(max(load_shares), 4),  # the busiest load process's share of its core
        "load_cpu_total": round(sum(load_shares), 4),
        "load_processes": len(load_shares),
    }
    decoded = [_decoded(b) for b in meeting.receivers() if b.decode]
    if decoded:
        result["decoded"] = {
            "receivers": len(decoded),
            "frames": sum(d["frames"] for d in decoded),
            "corrupt": sum(d["corrupt"] for d in decoded),
        }
    return result


def _decoded(bot: Bot) -> dict[str, int]:
    frames = corrupt = 0
    for remote in bot.participant.remote.values():
        if remote.verifier is not None:
            frames += remote.verifier.frames_received
            corrupt += remote.verifier.frames_corrupt
    return {"frames": frames, "corrupt": corrupt}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def run_scenario(target: Target, scenario: Scenario, progress: Progress | None = None) -> dict[str, Any]:
    """Set up the scenario's meeting, measure one window, tear everything down."""
    meeting = Meeting(target, scenario, progress)
    try:
        await meeting.open()
        await meeting.add_publishers()
        await meeting.add_viewers(scenario.viewers)
        failed = [b for b in meeting.bots if b.failed]
        if len(failed) > scenario.viewers // 10:
            raise LoadTestError(f"{len(failed)} bots failed to join; first: {failed[0].failed}")
        await meeting.settle()
        await _warm(meeting, scenario.warmup)
        result = await measure(meeting, scenario.duration)
        result["scenario"] = scenario.describe()
        return result
    finally:
        await meeting.close()


async def _warm(meeting: Meeting, seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        meeting.progress(f"warming up {left:3.0f} s")
        await asyncio.sleep(min(1.0, left))


# Capacity search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityBar:
    """What "held" means: receivers get at least ``min_fps_ratio`` of the frames sent and lose
    at most ``max_loss`` of packets, with no more than ``max_freezes_per_receiver``."""

    min_fps_ratio: float = 0.9
    max_loss: float = 0.01
    max_freezes_per_receiver: float = 0.2
    max_load_cpu: float = 0.9  # above this the load generator, not the node, is the limit

    def verdict(self, result: dict[str, Any]) -> str | None:
        """None if the bar held, else why not."""
        sent = result["frame_rate"]["sent"]
        median = result["frame_rate"]["median"]
        if sent and (median is None or median < self.min_fps_ratio * sent):
            return f"frame rate {median} below {self.min_fps_ratio:.0%} of {sent}"
        loss = result["packet_loss"]
        if loss is None or loss > self.max_loss:
            return f"packet loss {loss} above {self.max_loss:.1%}"
        if result["freezes"] > self.max_freezes_per_receiver * max(1, result["subscribers"]):
            return f"{result['freezes']} freezes"
        if result["failed_joins"]:
            return f"{result['failed_joins']} joins failed"
        return None


async def capacity_search(
    target: Target,
    scenario: Scenario,
    bar: QualityBar,
    start: int = 10,
    growth: float = 1.5,
    limit: int = 500,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Raise the number of viewers of one meeting (the bots stay; more join) until the quality
    bar breaks, the load generator saturates, or ``limit``; returns every step and the largest
    count that held, as subscribers per core of the node's CPU."""
    scenario = replace(scenario, viewers=0)
    meeting = Meeting(target, scenario, progress)
    steps: list[dict[str, Any]] = []
    held: dict[str, Any] | None = None
    stop_reason = f"reached the limit of {limit} subscribers"
    try:
        await meeting.open()
        await meeting.add_publishers()
        count = start
        while True:
            have = meeting.viewer_count()
            await meeting.add_viewers(count - have)
            try:
                await meeting.settle()
            except LoadTestError as exc:  # a step whose viewers do not all receive has not held
                stop_reason = f"{count} subscribers did not settle: {exc}"
                break
            await _warm(meeting, scenario.warmup)
            result = await measure(meeting, scenario.duration)
            verdict = bar.verdict(result)
            result["verdict"] = verdict or "held"
            steps.append(result)
            if verdict is None:
                held = result
            if result["load_cpu"] > bar.max_load_cpu:
                stop_reason = f"the load generator used {result['load_cpu']:.0%} of its core: more subscribers would measure it, not the node"
                break
            if verdict is not None:
                stop_reason = verdict
                break
            if count >= limit:
                break
            count = min(limit, max(count + 1, round(count * growth)))
    finally:
        await meeting.close()
    per_core = None
    if held is not None and held["sfu_cpu"] > 0:
        per_core = round(held["subscribers"] / held["sfu_cpu"], 1)
    return {
        "scenario": scenario.describe(),
        "quality_bar": {"min_fps_ratio": bar.min_fps_ratio, "max_loss": bar.max_loss,
                        "max_freezes_per_receiver": bar.max_freezes_per_receiver},
        "largest_held": held["subscribers"] if held else 0,
        "sfu_cpu_at_largest": held["sfu_cpu"] if held else None,
        "subscribers_per_core": per_core,
        "stopped_because": stop_reason,
        "steps": steps,
    }
