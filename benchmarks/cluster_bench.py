"""Cluster benchmark: what it costs when a meeting spans nodes, and what a second node process
buys on one host.

Nodes are ``videoconf run`` processes of one cluster (a private PostgreSQL, the machine's Redis
under a prefix of their own, the same token secrets, ICE on 127.0.0.1 only and no ICE servers),
started as the cluster tests start them (``tests.faults.node.Node``).  Publishers replay a
pre-encoded 640x360 VP8 loop (30 fps, about 1 Mbit/s, a keyframe a second) and an Opus tone
(``clients.sdk.replay``), so they cost the load side almost nothing.  Subscribers never decode.

1. **Relay cost.**  Node A takes one participant (``VIDEOCONF_NODE_MAX_PARTICIPANTS=1``), node B
   many.  The publisher joins first and fills A; K subscribers then join through the API, which
   sends them to B, and A relays the publisher's tracks to B over a peer connection of its own
   (one stream per layer).  Over a window: CPU seconds of each node (utime + stime from /proc)
   against A's forwarded packets (its copies to B) and the packets B's subscribers received
   (counted after SRTP decryption and dropped, as ``sfu_bench`` counts).  Baseline, in the same
   run and interleaved trial by trial: the same publisher and K subscribers all on B (A is full,
   so the API places that meeting on B).  Both nodes are pinned to core 0, this process to core 1.
2. **Hop delay.**  The same publisher on A, one subscriber on A (it connects to A's signaling
   URL with a room token from the API: a node admits any participant of a room placed on it, the
   limit only steers the API) and one on B.  Both in this process note when each RTP packet
   arrives, after decryption, under a hash of its payload (for video, past the VP8 payload
   descriptor, whose picture ID a node may rewrite); each packet at B is matched with the same
   payload at A, and B minus A is the delay the hop adds (both arrivals pass through this one
   event loop, so its own scheduling is in the spread, not in the difference of the medians).
3. **Capacity of one host, one process against two.**  Meetings of ``CAPACITY_PUBLISHERS``
   publishers and a growing number of viewers (everyone receives every other publisher), on
   (a) one node process and (b) two node processes of a cluster, the meetings placed by the
   cluster (one on each).  Step by step more viewers join every meeting until the delivered
   share of packets (received by the bots over sent by the publishers times the receivers of
   each) falls under ``MIN_DELIVERED``, a node's CPU reaches ``SATURATED`` of a core, or the steps
   or the time run out; the search only climbs (past an overload, connections have failed).
   Viewers here count packets by their RTP header before SRTP decryption (the header is in the
   clear) and drop them there, which spares the load generator decryption and aiortc's receive
   path; it still shares the machine with the nodes.  Nodes are pinned, one per core; this
   process is not pinned and its CPU is reported at every step, with the cores the host had busy.
   The report adds the arithmetic for N cores and M hosts from the measured capacity per process
   and the relay cost, labelled as arithmetic.

    python -m benchmarks.cluster_bench [--quick] [--trials 3] [--window 15]

Writes ``benchmarks/results/cluster.json``.  Every wait has a deadline; every node, the private
PostgreSQL and this run's Redis keys are gone at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import re
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection
from pydantic import SecretStr
from redis.asyncio import Redis

from benchmarks.api_bench import REDIS_URL
from benchmarks.media import machine, marginal_us
from clients.loadtest.polling import until
from clients.loadtest.process import cpu_seconds
from clients.loadtest.runner import LoadTestError, Meeting, Target
from clients.loadtest.scenarios import SINGLE_LAYER, Scenario
from clients.loadtest.stats import (
    RtpCounter,
    count_clear,
    histogram_quantile,
    median,
    payload_kinds,
    percentile,
    tap_counter,
)
from clients.sdk.participant import Participant
from clients.sdk.replay import ReplayTrack, encoded_audio, encoded_video
from control_api.app import token_codecs
from control_api.services.context import utc_now
from sfu.aiortc_client import intercept_incoming
from sfu.aiortc_hooks import configure_ice
from sfu.vp8 import parse_vp8
from tests.faults.node import Node
from tests.services import PrivatePostgres
from videoconf import runtime
from videoconf.config import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WIDTH, HEIGHT, FPS, BITRATE = 640, 360, 30, 1_000_000
SERVER_CORE, LOAD_CORE = 0, 1
LARGE_LIMIT = 100_000  # participants: a node that never fills up here
COUNTERS = {  # short name -> the node's Prometheus counter (summed over labels)
    "forwarded": "videoconf_sfu_packets_forwarded_total",
    "received": "videoconf_sfu_packets_received_total",
    "nacks_received": "videoconf_sfu_nacks_received_total",
    "nacks_sent": "videoconf_sfu_nacks_sent_total",
    "retransmissions": "videoconf_sfu_retransmissions_total",
    "plis_sent": "videoconf_sfu_plis_sent_total",
    "packet_errors": "videoconf_sfu_packet_errors_total",
    "datagrams_dropped": "videoconf_sfu_datagrams_dropped_total",
}
CAPACITY_PUBLISHERS = 4  # per meeting: each viewer receives 4 videos and 4 tones
CAPACITY_MEETINGS = 2
MIN_DELIVERED = 0.95
SATURATED = 0.95  # share of one core
SETTLE = 30.0  # seconds for every receiver of a capacity step to get every stream


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of process ``pid`` (threads it starts later inherit it) to ``cores``;
    nothing on a machine with one core."""
    if (os.cpu_count() or 1) < 2:
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cores)


def publisher_media() -> list[tuple[ReplayTrack, str]]:
    return [(ReplayTrack(encoded_video(WIDTH, HEIGHT, FPS, BITRATE)), "camera"), (ReplayTrack(encoded_audio()), "microphone")]


# The cluster ------------------------------------------------------------------------------------


class Bench:
    """The nodes of one cluster on this machine, the accounts of a run, and what the nodes logged.
    Nodes are started one by one (``add``) so that a run decides which node a meeting lands on."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg = PrivatePostgres()
        self.prefix = f"vcbench:cluster:{uuid.uuid4().hex[:8]}:"
        self.secrets = {"VIDEOCONF_ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32), "VIDEOCONF_ROOM_TOKEN_SECRET": secrets.token_urlsafe(32)}
        self.nodes: dict[str, Node] = {}  # running, by node id
        self.every: list[tuple[str, Node]] = []  # every node started, for its log
        self.migrated = False
        self.accounts: list[dict[str, Any]] = []
        self.marks: list[tuple[str, dict[int, int]]] = [("start", {})]  # phase, where each node's log stood

    def mark(self, phase: str) -> None:
        """What the nodes log from now on belongs to ``phase``."""
        self.marks.append((phase, {id(node): len(node.log()) for _, node in self.every}))

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.start)

    async def add(self, node_id: str, limit: int, cores: set[int]) -> Node:
        folder = self.workdir / f"{node_id}-{len(self.every)}"
        folder.mkdir()
        node = Node(
            folder, database_url=self.pg.url, redis_url=REDIS_URL, VIDEOCONF_CLUSTER="true", VIDEOCONF_REDIS_PREFIX=self.prefix,
            VIDEOCONF_NODE_ID=node_id, VIDEOCONF_NODE_MAX_PARTICIPANTS=str(limit), **self.secrets,
        )
        self.every.append((node_id, node))
        await node.start(migrate=not self.migrated)
        self.migrated = True
        pin(node.pid, cores)
        self.nodes[node_id] = node
        return node

    async def remove(self, node_id: str) -> None:
        node = self.nodes.pop(node_id)
        await node.close()

    def api(self) -> Node:
        return next(iter(self.nodes.values()))

    async def account(self, index: int) -> dict[str, Any]:
        """Account ``index`` of this run (registered the first time it is asked for)."""
        while len(self.accounts) <= index:
            self.accounts.append(await self.api().register(f"Bench{len(self.accounts)} Person"))
        return self.accounts[index]

    async def ticket(self, account: dict[str, Any], meeting: dict[str, Any]) -> dict[str, Any]:
        """The API's answer to a join: ``signaling_url``, ``token`` and ``node``."""
        _, entry, _ = await self.api().call("POST", f"/api/meetings/{meeting['id']}/join", account["token"], {}, expect=200)
        return entry

    def room_tokens(self) -> Any:
        """The cluster's room-token codec, for load-test bots that do not each need an account."""
        settings = Settings(room_token_secret=SecretStr(self.secrets["VIDEOCONF_ROOM_TOKEN_SECRET"]),
                            access_token_secret=SecretStr(self.secrets["VIDEOCONF_ACCESS_TOKEN_SECRET"]))
        return token_codecs(settings, utc_now)[1]

    def log_problems(self) -> dict[str, Any]:
        """WARNING, ERROR and CRITICAL records of every node's log (JSON lines), and lines that
        are not JSON but name an error or warning (a traceback on standard error): counts by
        phase (``mark``), node and level, and the distinct messages with numbers and ids masked
        (at most 20, with the phases they came in)."""
        counts: dict[str, dict[str, dict[str, int]]] = {}
        distinct: dict[str, dict[str, int]] = {}
        for node_id, node in self.every:
            text = node.log()
            starts = [(phase, offsets.get(id(node), 0)) for phase, offsets in self.marks]
            for i, (phase, begin) in enumerate(starts):
                end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
                for line in text[begin:max(begin, end)].splitlines():
                    found = problem(line)
                    if found is None:
                        continue
                    level, message = found
                    per = counts.setdefault(phase, {}).setdefault(node_id, {})
                    per[level] = per.get(level, 0) + 1
                    key = mask(message)
                    distinct.setdefault(key, {})[phase] = distinct.setdefault(key, {}).get(phase, 0) + 1
        shown = sorted(distinct.items(), key=lambda item: -sum(item[1].values()))[:20]
        return {"by_phase": counts, "messages": [{"message": text, "by_phase": phases} for text, phases in shown]}

    async def close(self) -> None:
        await asyncio.gather(*(node.close() for node in self.nodes.values()), return_exceptions=True)
        self.nodes.clear()
        redis = Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in redis.scan_iter(match=self.prefix + "*")]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()
        await asyncio.to_thread(self.pg.close)  # stopped, and its directory removed


def problem(line: str) -> tuple[str, str] | None:
    """(level, message) of a node's log line that reports a problem, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        level = str(record.get("level", ""))
        if level not in ("WARNING", "ERROR", "CRITICAL"):
            return None
        return level, f"{level} {record.get('logger')}: {record.get('message')}"
    if re.search(r"Traceback|Error|Warning", line):
        return "OTHER", line
    return None


def mask(message: str) -> str:
    """A message with ids and numbers masked, so that one kind of problem is counted once."""
    message = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", message)
    return re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", message)[:240]


# Measuring a window -----------------------------------------------------------------------------


async def node_counters(node: Node) -> dict[str, float]:
    metrics = await node.metrics()
    totals = {short: 0.0 for short in COUNTERS}
    for key, value in metrics.items():
        name = key.split("{", 1)[0]
        for short, counter in COUNTERS.items():
            if name == counter:
                totals[short] += value
    return totals


def udp_drops() -> int:
    """Datagrams the kernel dropped on this machine for want of room in a socket's receive
    buffer (``RcvbufErrors`` of /proc/net/snmp): the sign of a reader that falls behind."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")]) if len(rows) >= 2 and "RcvbufErrors" in rows[0] else 0


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]  # node id -> CPU seconds
    counters: dict[str, dict[str, float]]  # node id -> COUNTERS
    load_cpu: float
    udp_drops: int
    books: dict[str, float]


Books = Callable[[], Awaitable[dict[str, float]]]


async def snapshot(nodes: dict[str, Node], books: Books) -> Snapshot:
    counters = {name: await node_counters(node) for name, node in nodes.items()}
    return Snapshot(time.monotonic(), {name: cpu_seconds(node.pid) for name, node in nodes.items()}, counters,
                    cpu_seconds(os.getpid()), udp_drops(), await books())


async def window(nodes: dict[str, Node], books: Books, seconds: float) -> dict[str, Any]:
    """Over ``seconds``: each node's CPU (seconds and share of a core) and counters, this
    process's CPU share, and how much each of ``books()`` grew.  Both ends read the same things
    in the same order, so every figure covers the same span, give or take a scrape."""
    first = await snapshot(nodes, books)
    await asyncio.sleep(seconds)
    last = await snapshot(nodes, books)
    wall = last.at - first.at
    return {
        "seconds": round(wall, 3),
        "nodes": {
            name: {
                "cpu_seconds": round(last.cpu[name] - first.cpu[name], 3),
                "cpu_share": round((last.cpu[name] - first.cpu[name]) / wall, 4),
                **{short: last.counters[name][short] - first.counters[name][short] for short in COUNTERS},
            }
            for name in nodes
        },
        "load_cpu_share": round((last.load_cpu - first.load_cpu) / wall, 4),
        "udp_receive_buffer_drops": last.udp_drops - first.udp_drops,  # the whole machine's
        **{key: last.books[key] - first.books[key] for key in last.books},
    }


def counted(counters: list[RtpCounter]) -> Books:
    async def books() -> dict[str, float]:
        totals = [c.totals() for c in counters]
        return {"packets": sum(t["packets"] for t in totals), "expected": sum(t["expected"] for t in totals)}

    return books


async def wait_receiving(counters: list[RtpCounter], timeout: float = 30.0) -> None:
    """Every counter has audio and video."""

    def missing() -> str:
        ready = sum(bool(c.media("video") and c.media("audio")) for c in counters)
        return f"every subscriber to receive audio and video: {ready} of {len(counters)} do"

    await until(lambda: all(c.media("video") and c.media("audio") for c in counters), timeout, missing, interval=0.2, error=RuntimeError)


def us(cpu_seconds_used: float, packets: float) -> float | None:
    return round(cpu_seconds_used * 1e6 / packets, 2) if packets else None


# 1. Relay cost ----------------------------------------------------------------------------------


class RelaySetup:
    """Node A (full with one participant: the publisher) and node B (everyone else), and the
    meetings of part 1 and 2: ``relayed`` (its publisher on A for the whole run) and ``single``
    (placed on B, a publisher of its own per trial)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.a: Node | None = None
        self.b: Node | None = None
        self.publisher: Participant | None = None
        self.relayed: dict[str, Any] = {}
        self.single: dict[str, Any] = {}
        self.idle: dict[str, float] = {}

    async def start(self) -> None:
        bench = self.bench
        # A alone first: the publisher's meeting can only be placed there.  Then B.
        self.a = await bench.add("node-a", 1, {SERVER_CORE})
        host = await bench.account(0)
        self.relayed = await self.a.meeting(host)
        self.single = await self.a.meeting(await bench.account(1))
        self.publisher = await self.join(host, self.relayed, "node-a")
        await self.publisher.publish(publisher_media())
        self.b = await bench.add("node-b", LARGE_LIMIT, {SERVER_CORE})
        # A's heartbeat says it is full (it told the registry when the publisher joined).
        await until(self._routes_to_b, 15, "the API to send the next join to node-b", interval=0.2, error=RuntimeError)
        self.idle = await idle_shares({"a": self.a, "b": self.b}, 3.0)

    async def _routes_to_b(self) -> bool:
        return (await self.bench.ticket(await self.bench.account(2), self.relayed))["node"] == "node-b"

    async def join(self, account: dict[str, Any], meeting: dict[str, Any], expect: str, url: str | None = None) -> Participant:
        """A participant joined through the API, which must send it to node ``expect`` (or
        connected to ``url`` with the API's token)."""
        ticket = await self.bench.ticket(account, meeting)
        if url is None and ticket["node"] != expect:
            raise RuntimeError(f"the API sent a participant to {ticket['node']}, not {expect}")
        person = Participant(url or ticket["signaling_url"], ticket["token"], ice_servers=[], video_codec="VP8")
        await person.connect()
        return person

    async def subscribers(self, meeting: dict[str, Any], k: int, people: list[Participant]) -> list[RtpCounter]:
        """K subscribers on B (added to ``people`` as they join, for the caller to close), each
        counting after decryption."""
        counters = []
        for i in range(k):
            person = await self.join(await self.bench.account(3 + i), meeting, "node-b")
            people.append(person)
            counter = RtpCounter()
            person.tap_incoming(lambda pc, c=counter: tap_counter(pc, c))
            counters.append(counter)
        return counters

    async def quiet(self) -> None:
        """Wait until B has no room and A only its publisher's connection: the last trial's
        subscribers (and the relay link) are gone."""
        a_node, b_node = self.a, self.b
        assert a_node is not None and b_node is not None

        async def done() -> bool:
            a, b = await a_node.metrics(), await b_node.metrics()
            return b.get("videoconf_sfu_rooms", 1) == 0 and a.get("videoconf_sfu_peer_connections", 9) <= 1

        await until(done, 20, "the last trial's participants and relay link to be gone", interval=0.2, error=RuntimeError)

    async def measured(self, join: Callable[[list[Participant]], Awaitable[list[RtpCounter]]], warmup: float, seconds: float) -> dict[str, Any]:
        """``join`` the trial's participants (into the list it is given), wait until every
        subscriber receives, warm up and measure a window on both nodes; then everyone leaves and
        the nodes go quiet before the next trial."""
        assert self.a is not None and self.b is not None
        people: list[Participant] = []
        try:
            counters = await join(people)
            await wait_receiving(counters)
            await asyncio.sleep(warmup)
            raw = await window({"a": self.a, "b": self.b}, counted(counters), seconds)
        finally:
            await asyncio.gather(*(p.close() for p in people), return_exceptions=True)
        await self.quiet()
        return raw

    async def relay_trial(self, k: int, warmup: float, seconds: float) -> dict[str, Any]:
        """K subscribers on B of the publisher on A."""
        raw = await self.measured(lambda people: self.subscribers(self.relayed, k, people), warmup, seconds)
        a, b = raw["nodes"]["a"], raw["nodes"]["b"]
        delivered = raw["packets"]
        return {
            "subscribers": k,
            "a_cpu_share": a["cpu_share"], "b_cpu_share": b["cpu_share"],
            "a_received_per_second": round(a["received"] / raw["seconds"], 1),
            "a_relayed_per_second": round(a["forwarded"] / raw["seconds"], 1),
            "b_relay_in_per_second": round(b["received"] / raw["seconds"], 1),
            "delivered_per_second": round(delivered / raw["seconds"], 1),
            "a_us_per_relayed_packet": us(a["cpu_seconds"], a["forwarded"]),
            "b_us_per_delivered_packet": us(b["cpu_seconds"], delivered),
            "both_us_per_delivered_packet": us(a["cpu_seconds"] + b["cpu_seconds"], delivered),
            "relay_lost": int(a["forwarded"] - b["received"]),
            "subscriber_loss": round(1 - delivered / raw["expected"], 5) if raw["expected"] else None,
            "raw": raw,
        }

    async def single_trial(self, k: int, warmup: float, seconds: float) -> dict[str, Any]:
        """The same publisher media and K subscribers, all on B."""

        async def join(people: list[Participant]) -> list[RtpCounter]:
            publisher = await self.join(await self.bench.account(1), self.single, "node-b")
            people.append(publisher)
            await publisher.publish(publisher_media())
            return await self.subscribers(self.single, k, people)

        raw = await self.measured(join, warmup, seconds)
        b = raw["nodes"]["b"]
        delivered = raw["packets"]
        return {
            "subscribers": k,
            "cpu_share": b["cpu_share"],
            "a_cpu_share": raw["nodes"]["a"]["cpu_share"],  # A meanwhile: the other meeting's publisher, no relay
            "delivered_per_second": round(delivered / raw["seconds"], 1),
            "us_per_delivered_packet": us(b["cpu_seconds"], delivered),
            "subscriber_loss": round(1 - delivered / raw["expected"], 5) if raw["expected"] else None,
            "raw": raw,
        }

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()


async def idle_shares(nodes: dict[str, Node], seconds: float) -> dict[str, float]:
    before = {name: cpu_seconds(node.pid) for name, node in nodes.items()}
    await asyncio.sleep(seconds)
    return {name: round((cpu_seconds(node.pid) - before[name]) / seconds, 4) for name, node in nodes.items()}


def relay_summary(trials: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians per K, ratios of the medians (relay over single node), the marginal CPU of a
    delivered packet (slope over K), and the link's cost per relayed packet (``link_cost``, the
    median over every interleaved pair of trials, with its range: it is a fraction of a percent
    of a core, near the 10 ms resolution of /proc's CPU times over a window)."""
    summary: dict[str, Any] = {}
    for k in sorted(trials["relay"]):
        relay, single = trials["relay"][k], trials["single"].get(k, [])
        entry: dict[str, Any] = {
            "relay": {key: median([t[key] for t in relay if t[key] is not None], 4 if "share" in key else 2) for key in (
                "a_us_per_relayed_packet", "b_us_per_delivered_packet", "both_us_per_delivered_packet",
                "a_cpu_share", "b_cpu_share", "a_received_per_second", "a_relayed_per_second", "delivered_per_second")},
            "single": {key: median([t[key] for t in single if t[key] is not None], 4 if "share" in key else 2) for key in (
                "us_per_delivered_packet", "cpu_share", "a_cpu_share", "delivered_per_second")},
            "relay_lost_packets": sum(t["relay_lost"] for t in relay),
            "subscriber_loss": median([t["subscriber_loss"] for t in relay if t["subscriber_loss"] is not None], 5),
        }
        r, one = entry["relay"], entry["single"]
        base = one["us_per_delivered_packet"]
        entry["ratios"] = {
            "b_over_single": _ratio(r["b_us_per_delivered_packet"], base),
            "a_plus_b_over_single": _ratio(r["both_us_per_delivered_packet"], base),
        }
        summary[str(k)] = entry
    pairs = [link_cost(relay, single) for k in sorted(trials["relay"])
             for relay, single in zip(trials["relay"][k], trials["single"].get(k, []), strict=False)]
    pairs = [p for p in pairs if p is not None]
    if pairs:
        summary["link_us_per_relayed_packet"] = {
            key: median([p[key] for p in pairs]) for key in ("a_sending", "b_receiving_over_publisher", "total")
        } | {"pairs": len(pairs), "total_range": [min(p["total"] for p in pairs), max(p["total"] for p in pairs)]}
    if "1" in summary:
        summary["1"]["ratios"]["a_per_relayed_over_single_k1"] = _ratio(
            summary["1"]["relay"]["a_us_per_relayed_packet"], summary["1"]["single"]["us_per_delivered_packet"])
    ks = sorted(trials["single"])
    if len(ks) >= 2:
        summary["marginal_us_per_delivered_packet"] = {
            system: slope([(t["delivered_per_second"], t["b_cpu_share" if system == "relay" else "cpu_share"])
                           for k in ks for t in trials[system].get(k, [])])
            for system in ("single", "relay")
        }
    return summary


def link_cost(relay: dict[str, Any], single: dict[str, Any]) -> dict[str, float] | None:
    """What the link cost per relayed packet in one pair of interleaved trials (same K): A's CPU
    with the link less A's CPU holding the same publisher without one, and B's CPU fed by the
    link less B's CPU fed by a publisher of its own (same K subscribers)."""
    rate = relay["a_relayed_per_second"]
    if not rate:
        return None
    out = (relay["a_cpu_share"] - single["a_cpu_share"]) * 1e6 / rate
    into = (relay["b_cpu_share"] - single["cpu_share"]) * 1e6 / rate
    return {"a_sending": round(out, 2), "b_receiving_over_publisher": round(into, 2), "total": round(out + into, 2)}


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of CPU share over packets/s, in µs per packet: what one more
    delivered packet costs, without the node's fixed costs (as ``benchmarks.media.marginal_us``)."""
    return marginal_us([{"packets_per_second": x, "cpu_share": y} for x, y in points])


def _ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x and y else None


# 2. Hop delay -----------------------------------------------------------------------------------


class ArrivalLog:
    """When each RTP packet reaches one subscriber (after decryption), under a key of its
    payload; the packet is dropped there, undecoded.  For video the key skips the VP8 payload
    descriptor (a node may rewrite its picture ID); retransmissions and padding are left out."""

    def __init__(self) -> None:
        self.kinds: dict[int, tuple[str, bool]] = {}
        self.arrivals: dict[str, dict[int, list[float]]] = {"audio": {}, "video": {}}
        self.recording = False

    def tap(self, pc: RTCPeerConnection) -> None:
        self.kinds.update(payload_kinds(pc))
        intercept_incoming(pc, self)

    def incoming_rtp(self, data: bytes, arrival_time_ms: int) -> bool:
        now = time.perf_counter()
        if self.recording:
            kind, rtx = self.kinds.get(data[1] & 0x7F, ("other", True)) if len(data) > 12 else ("other", True)
            payload = None if rtx or kind == "other" else rtp_payload(data)
            if payload:
                if kind == "video":
                    descriptor = parse_vp8(payload)
                    payload = payload[descriptor.size:] if descriptor is not None else payload
                self.arrivals[kind].setdefault(hash(payload), []).append(now)
        return False

    def count(self, kind: str) -> int:
        return sum(len(times) for times in self.arrivals[kind].values())


def rtp_payload(data: bytes) -> bytes | None:
    """The payload of an RTP packet (past CSRCs and header extensions, before padding)."""
    first = data[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    end = len(data) - (data[-1] if first & 0x20 else 0)
    return data[offset:end] if end > offset else None


def match_delays(near: dict[int, list[float]], far: dict[int, list[float]], tolerance: float = 0.3) -> tuple[list[float], int]:
    """For each arrival at ``far``, the same payload's nearest arrival at ``near`` (within
    ``tolerance`` seconds: a replayed loop repeats its payloads every second or more): far minus
    near, in seconds; and how many found no match."""
    delays, unmatched = [], 0
    for key, times in far.items():
        ref = near.get(key, [])
        for t in times:
            i = bisect.bisect_left(ref, t)
            best = min((ref[j] for j in (i - 1, i) if 0 <= j < len(ref)), key=lambda r: abs(t - r), default=None)
            if best is None or abs(t - best) > tolerance:
                unmatched += 1
            else:
                delays.append(t - best)
    return delays, unmatched


def delay_stats(delays: list[float]) -> dict[str, Any]:
    ms = [d * 1000 for d in delays]
    if not ms:
        return {"packets": 0}
    return {
        "packets": len(ms),
        "p50_ms": round(percentile(ms, 0.5) or 0.0, 3),
        "p90_ms": round(percentile(ms, 0.9) or 0.0, 3),
        "p99_ms": round(percentile(ms, 0.99) or 0.0, 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


async def hop_delay(setup: RelaySetup, seconds: float, warmup: float = 2.0) -> dict[str, Any]:
    """One subscriber of the publisher on A and one on B, both in this process: how much later
    each packet reaches the one on B (p50/p99 of B minus A)."""
    assert setup.a is not None and setup.b is not None
    people: list[Participant] = []
    logs: list[ArrivalLog] = []
    try:
        for index, url in ((3, setup.a.signaling_url), (4, None)):
            person = await setup.join(await setup.bench.account(index), setup.relayed, "node-b", url=url)
            log_ = ArrivalLog()
            person.tap_incoming(log_.tap)
            people.append(person)
            logs.append(log_)
        await until(lambda: all(log_.kinds and person.subscriber for log_, person in zip(logs, people, strict=True)), 20,
                    "both subscribers to negotiate", error=RuntimeError)
        at_a, at_b = logs
        for log_ in logs:
            log_.recording = True
        await until(lambda: all(log_.count("video") and log_.count("audio") for log_ in logs), 30,
                    "audio and video at both subscribers", interval=0.2, error=RuntimeError)
        await asyncio.sleep(warmup)
        for log_ in logs:
            log_.arrivals = {"audio": {}, "video": {}}
        scrape0 = {name: await node.metrics() for name, node in (("a", setup.a), ("b", setup.b))}
        await asyncio.sleep(seconds)
        for log_ in logs:
            log_.recording = False
        scrape1 = {name: await node.metrics() for name, node in (("a", setup.a), ("b", setup.b))}
    finally:
        await asyncio.gather(*(p.close() for p in people), return_exceptions=True)
    await setup.quiet()
    result: dict[str, Any] = {"seconds": seconds}
    everything: list[float] = []
    for kind in ("video", "audio"):
        delays, unmatched = match_delays(at_a.arrivals[kind], at_b.arrivals[kind])
        everything += delays
        result[kind] = {**delay_stats(delays), "unmatched_at_b": unmatched,
                        "received_at_a": at_a.count(kind), "received_at_b": at_b.count(kind)}
    result["all"] = delay_stats(everything)
    result["node_forward_delay_ms"] = {name: forward_delay(scrape0[name], scrape1[name]) for name in ("a", "b")}
    return result


def forward_delay(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """p50/p99 of a node's own forwarding delay histogram (a packet in to its last copy out)
    between two scrapes."""

    def buckets(metrics: dict[str, float]) -> list[tuple[float, float]]:
        found = []
        for key, value in metrics.items():
            if key.startswith("videoconf_sfu_forward_delay_seconds_bucket{"):
                bound = key.split("le=", 1)[1].split("}", 1)[0].split(",", 1)[0]
                found.append((float(bound), value))
        return sorted(found)

    out: dict[str, float | None] = {}
    for q in (0.5, 0.99):
        value = histogram_quantile(q, buckets(before), buckets(after))
        out[f"p{round(q * 100)}"] = None if value is None else round(value * 1000, 3)
    return out


# 3. Capacity: one process against two -------------------------------------------------------------


def capacity_scenario(warmup: float, seconds: float) -> Scenario:
    return Scenario(
        "cluster-capacity", f"{CAPACITY_PUBLISHERS} publishers (640x360 VP8 ~1 Mbit/s + Opus) and N viewers; everyone receives every other publisher",
        publishers=CAPACITY_PUBLISHERS, viewers=0, video_layers=SINGLE_LAYER, fps=FPS, join_concurrency=8,
        duration=seconds, warmup=warmup,
    )


async def light_viewers(meeting: Meeting, count: int) -> None:
    """``count`` more viewers in ``meeting`` that count before decryption (``Meeting`` joins them
    with decrypting counters; their taps are replaced at once, before any window)."""
    bots = await meeting.add_viewers(count)
    for bot in bots:
        if bot.counter is not None:
            bot.participant.tap_incoming(lambda pc, c=bot.counter: count_clear(pc, c))


async def publishers_sent(meetings: list[Meeting]) -> dict[int, int]:
    """Packets each publisher has sent (aiortc's outbound-rtp statistics), by id of its bot."""
    sent: dict[int, int] = {}
    for meeting in meetings:
        for bot in meeting.bots:
            pc = bot.participant.publisher
            if bot.role == "publisher" and pc is not None:
                report = await pc.getStats()
                sent[id(bot)] = sum(s.packetsSent for s in report.values() if getattr(s, "type", None) == "outbound-rtp")
    return sent


async def capacity_search(
    bench: Bench, nodes: dict[str, Node], viewer_steps: list[int], warmup: float, seconds: float, budget: float,
    label: str = "capacity",
) -> dict[str, Any]:
    """Meetings (``CAPACITY_MEETINGS``, placed by the cluster on ``nodes``) of
    ``CAPACITY_PUBLISHERS`` publishers; each step brings every meeting to the next count of
    ``viewer_steps`` and measures a window, until a step fails (delivers less than
    ``MIN_DELIVERED``, or its receivers do not all get every stream within ``SETTLE`` seconds,
    or a join fails), a node reaches ``SATURATED`` of a core, or ``budget`` seconds are spent.

    The search only climbs: past an overload, connections have failed and closed (an overloaded
    node loses ICE consent and DTLS handshakes), so a step back down would measure the damage,
    not the capacity.  Its resolution is the spacing of ``viewer_steps``."""
    started = time.monotonic()
    bench.mark(label)
    scenario = capacity_scenario(warmup, seconds)
    target = Target(next(iter(nodes.values())).base, bench.room_tokens())
    meetings: list[Meeting] = []
    steps: list[dict[str, Any]] = []
    stop = "every step held"
    placed: dict[str, int] = {}
    failed: int | None = None
    try:
        for _ in range(CAPACITY_MEETINGS):
            meeting = Meeting(target, scenario)
            meetings.append(meeting)
            await meeting.open()
            await meeting.add_publishers()
            for bot in meeting.bots:
                assert bot.counter is not None
                bot.participant.tap_incoming(lambda pc, c=bot.counter: count_clear(pc, c))
            node = next((name for name, n in nodes.items() if n.signaling_url == meeting.signaling_url), "?")
            placed[node] = placed.get(node, 0) + 1
        for viewers in viewer_steps:
            if time.monotonic() - started > budget:
                stop = f"the time budget of {budget:.0f} s ran out"
                break
            await asyncio.gather(*(light_viewers(m, viewers - sum(1 for b in m.bots if b.role == "viewer")) for m in meetings))
            try:
                await asyncio.gather(*(m.settle(timeout=SETTLE) for m in meetings))
                unsettled = None
            except LoadTestError as exc:
                unsettled = str(exc)
            await asyncio.sleep(warmup)
            step = await capacity_window(nodes, meetings, seconds)
            step["verdict"] = verdict(step) if unsettled is None else unsettled
            steps.append(step)
            print(f"  {len(nodes)} process(es), {step['viewers']} viewers in {len(meetings)} meetings: delivered {step['delivered_share']:.1%}, "
                  f"{step['delivered_per_second']:,.0f} packets/s, node CPU {step['node_cpu_share']}, "
                  f"load CPU {step['load_cpu_share']:.0%}: {step['verdict']}", flush=True)
            if step["verdict"] != "held":
                failed, stop = viewers, step["verdict"]
                break
            busiest = max(step["node_cpu_share"].values())
            if busiest >= SATURATED:
                stop = f"a node used {busiest:.0%} of its core"
                break
    finally:
        bench.mark(f"{label} teardown")
        await asyncio.gather(*(m.close() for m in meetings), return_exceptions=True)
    good = [s for s in steps if s["verdict"] == "held"]
    best = max(good, key=lambda s: s["delivered_per_second"], default=None)
    return {
        "processes": len(nodes),
        "meetings_by_node": placed,
        "stopped_because": stop,
        "first_failed_viewers_per_meeting": failed,
        "largest_held": None if best is None else {
            key: best[key] for key in ("viewers", "meetings", "receivers", "delivered_per_second", "delivered_share", "node_cpu_share",
                                       "node_us_per_forwarded_packet", "load_cpu_share", "load_us_per_delivered_packet",
                                       "host_cores_busy")
        },
        "seconds": round(time.monotonic() - started, 1),
        "steps": steps,
    }


def verdict(step: dict[str, Any]) -> str:
    if step["failed_joins"]:
        return f"{step['failed_joins']} joins failed"
    if step["delivered_share"] < MIN_DELIVERED:
        return f"delivered {step['delivered_share']:.1%} (< {MIN_DELIVERED:.0%})"
    return "held"


async def capacity_window(nodes: dict[str, Node], meetings: list[Meeting], seconds: float) -> dict[str, Any]:
    """One window of the capacity search: what the bots received against what the publishers
    sent times the receivers of each packet (the viewers and the meeting's other publishers)."""
    receivers = [b for m in meetings for b in m.receivers()]
    counters = counted([b.counter for b in receivers if b.counter is not None])
    fanout = {id(bot): len(m.receivers()) - 1 for m in meetings for bot in m.bots if bot.role == "publisher"}

    async def books() -> dict[str, float]:
        sent = await publishers_sent(meetings)  # every receiver but the publisher itself gets each packet
        return {**await counters(), "offered": sum(n * fanout.get(bot, 0) for bot, n in sent.items())}

    before = {id(b): b.counter.totals()["packets"] for b in receivers if b.counter is not None}
    raw = await window(nodes, books, seconds)
    expected = raw["offered"]
    wall = raw["seconds"]
    got = sorted(b.counter.totals()["packets"] - before.get(id(b), 0) for b in receivers if b.counter is not None)
    typical = got[len(got) // 2] if got else 0
    return {
        "viewers": sum(1 for m in meetings for b in m.bots if b.role == "viewer" and not b.failed),  # in all meetings
        "meetings": len(meetings),
        "receivers": len(receivers),
        "failed_joins": sum(1 for m in meetings for b in m.bots if b.failed),
        "delivered_per_second": round(raw["packets"] / wall, 1),
        "offered_per_second": round(expected / wall, 1),
        "delivered_share": round(raw["packets"] / expected, 4) if expected else 0.0,
        "sequence_loss": round(1 - raw["packets"] / raw["expected"], 5) if raw["expected"] else None,
        # Receivers that got under half the median receiver's packets (none at all, mostly), and
        # receivers whose connections are not up: whole streams lost, not packets here and there.
        "receivers_starved": sum(1 for n in got if n < typical / 2),
        "receivers_not_connected": sum(
            1 for b in receivers
            if b.participant.state != "connected" or b.participant.subscriber is None
            or b.participant.subscriber.connectionState != "connected"
        ),
        "node_cpu_share": {name: n["cpu_share"] for name, n in raw["nodes"].items()},
        "node_forwarded_per_second": {name: round(n["forwarded"] / wall, 1) for name, n in raw["nodes"].items()},
        "node_us_per_forwarded_packet": {name: us(n["cpu_seconds"], n["forwarded"]) for name, n in raw["nodes"].items()},
        "node_datagrams_dropped": {name: n["datagrams_dropped"] for name, n in raw["nodes"].items()},
        "udp_receive_buffer_drops": raw["udp_receive_buffer_drops"],
        "load_cpu_share": raw["load_cpu_share"],
        "load_us_per_delivered_packet": us(raw["load_cpu_share"] * wall, raw["packets"]),
        "host_cores_busy": round(sum(n["cpu_share"] for n in raw["nodes"].values()) + raw["load_cpu_share"], 3),
        "seconds": wall,
    }


# Arithmetic ---------------------------------------------------------------------------------------


def arithmetic(relay: dict[str, Any] | None, capacity: dict[str, Any] | None) -> dict[str, Any]:
    """What N cores and M hosts would carry, worked out from this run's figures: arithmetic,
    not measurement.  It assumes one node process per core (``videoconf run --processes N``), the
    clients on other machines, meetings that fit in one process, and nothing else limiting
    (kernel, NIC, memory bandwidth, Redis)."""
    notes: dict[str, Any] = {"label": "ARITHMETIC from this run's measurements, not a measurement"}
    one = ((capacity or {}).get("one_process") or {}).get("largest_held")
    if one:
        cpu = max(one["node_cpu_share"].values())
        per_core = one["delivered_per_second"] / cpu if cpu else None
        notes["one_process"] = {
            "delivered_per_second": one["delivered_per_second"], "node_cpu_share": round(cpu, 4),
            "packets_per_second_per_core": None if per_core is None else round(per_core),
            "us_per_delivered_packet": None if not per_core else round(1e6 / per_core, 2),
        }
        if per_core:
            notes["n_cores_one_host"] = {str(n): round(n * per_core) for n in (1, 2, 4, 8, 16, 32)}
            notes["m_hosts_of_16_cores"] = {str(m): round(m * 16 * per_core) for m in (1, 2, 4, 10)}
    two = ((capacity or {}).get("two_processes") or {}).get("largest_held")
    if two and two.get("load_us_per_delivered_packet"):
        # Why two processes do not double on this host: the load generator shares its cores.
        nodes_us = sum(two["node_cpu_share"].values()) * 1e6 / two["delivered_per_second"]
        load_us = two["load_us_per_delivered_packet"]
        cores = os.cpu_count() or 1
        notes["this_host_check"] = {
            "nodes_us_per_delivered_packet": round(nodes_us, 2), "load_us_per_delivered_packet": load_us,
            "bound_packets_per_second": round(cores * 1e6 / (nodes_us + load_us)),
            "measured_packets_per_second": two["delivered_per_second"],
            "why": f"every delivered packet costs node CPU and load-generator CPU, and both share the {cores} cores",
        }
    link = (relay or {}).get("link_us_per_relayed_packet")
    marginal = ((relay or {}).get("marginal_us_per_delivered_packet") or {}).get("single")
    if link and marginal:
        total = link["total"]
        notes["spanning"] = {
            "link_us_per_relayed_packet": total,
            "marginal_us_per_delivered_packet": marginal,
            "extra_subscribers_per_stream_per_extra_node": round(total / marginal, 2),
            "formula": "a meeting over s nodes costs, beyond one node, (s - 1) x streams x packets/s x link µs "
                       "= as many CPU seconds as (s - 1) x link/marginal more subscribers of each stream",
        }
        if one and notes["one_process"].get("us_per_delivered_packet"):
            # Example: a 4-publisher meeting (~160 packets/s per publisher: video + audio) of 100 receivers over 2 nodes.
            streams_pps = CAPACITY_PUBLISHERS * 160
            delivered = streams_pps * 100
            extra = streams_pps * total
            notes["spanning"]["example"] = {
                "meeting": f"{CAPACITY_PUBLISHERS} publishers (~160 packets/s each), 100 receivers, over 2 nodes",
                "delivered_per_second": delivered,
                "extra_cpu_share_of_a_core": round(extra / 1e6, 4),
                "extra_over_one_node": round(extra / (delivered * notes["one_process"]["us_per_delivered_packet"]), 4),
            }
    return notes


# Driver -------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    configure_ice(["127.0.0.1"])
    parts = set(args.parts.split(","))
    counts = [int(k) for k in args.k.split(",")]
    trials: dict[str, dict[int, list[dict[str, Any]]]] = {"relay": {k: [] for k in counts}, "single": {k: [] for k in counts}}
    report: dict[str, Any] = {"benchmark": "cluster", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    delay = capacity = relay = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as workdir:
        bench = Bench(Path(workdir))
        await bench.start()
        setup = RelaySetup(bench)
        try:
            if parts & {"relay", "delay"}:
                await setup.start()
                report["idle_cpu_share"] = setup.idle
                bench.mark("relay cost")
                for trial in range(args.trials if "relay" in parts else 0):
                    for k in counts:
                        # Alternate which goes first, so that a drift in the machine hits both.
                        for system in (("relay", "single") if trial % 2 == 0 else ("single", "relay")):
                            run_trial = setup.relay_trial if system == "relay" else setup.single_trial
                            result = await run_trial(k, args.warmup, args.window)
                            trials[system][k].append(result)
                            print(f"trial {trial + 1} {system:6} K={k:2}: " + ", ".join(
                                f"{key} {value}" for key, value in result.items() if key not in ("raw", "subscribers")), flush=True)
                relay = relay_summary(trials) if "relay" in parts else None
                if "delay" in parts:
                    bench.mark("hop delay")
                    delay = await hop_delay(setup, args.delay_window)
                    print(f"hop delay: {delay['all']}", flush=True)
                bench.mark("node-a leaves")
                await setup.close()
                await bench.remove("node-a")
            if "capacity" in parts:
                capacity = await capacities(bench, args)
        finally:
            bench.mark("the end")
            await setup.close()
            await bench.close()
            report["node_log_problems"] = bench.log_problems()
    report["setup"] = {
        "publisher": f"{WIDTH}x{HEIGHT} VP8 {FPS} fps ~{BITRATE // 1000} kbit/s pre-encoded loop (keyframe each second) + Opus tone",
        "relay": "node A limit 1 participant (the publisher), node B limit large; K subscribers sent to B by the API",
        "single_node_baseline": "the same publisher media and K subscribers all on node B, trials interleaved with the relay's",
        "subscribers": "parts 1-2: count RTP after SRTP decryption and drop it, undecoded; part 3: count RTP by its clear header before decryption",
        "pinning": "parts 1-2: both nodes on core 0, this process on core 1; part 3: one node per core, this process unpinned",
        "trials": args.trials, "k": counts, "warmup_seconds": args.warmup, "window_seconds": args.window,
        "delay_window_seconds": args.delay_window, "capacity_window_seconds": args.capacity_window,
        "capacity_meetings": CAPACITY_MEETINGS, "capacity_publishers_per_meeting": CAPACITY_PUBLISHERS,
        "capacity_held_when": f"delivered share >= {MIN_DELIVERED:.0%}", "capacity_saturated_at": f"a node at {SATURATED:.0%} of a core",
        "event_loop": "uvloop (videoconf.runtime) in the nodes and in this process",
    }
    report["relay"] = relay
    report["relay_trials"] = {system: {str(k): ts for k, ts in by_k.items() if ts} for system, by_k in trials.items()}
    report["hop_delay"] = delay
    report["capacity"] = capacity
    report["arithmetic"] = arithmetic(relay, capacity)
    report["run_seconds"] = round(time.monotonic() - started, 1)
    return report


async def capacities(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """(a) one node process, (b) two, each pinned to a core of its own; this process unpinned."""
    pin(os.getpid(), set(range(os.cpu_count() or 1)))
    steps = [int(n) for n in args.capacity_steps.split(",")]
    b = bench.nodes.get("node-b") or await bench.add("node-b", LARGE_LIMIT, {SERVER_CORE})
    print("capacity, one process:", flush=True)
    one = await capacity_search(bench, {"b": b}, steps, args.capacity_warmup, args.capacity_window, args.capacity_budget,
                                "capacity, one process")
    await until(lambda: node_empty(b), 30, "node-b to be empty", interval=0.2, error=RuntimeError)
    c = await bench.add("node-c", LARGE_LIMIT, {LOAD_CORE})
    print("capacity, two processes:", flush=True)
    two = await capacity_search(bench, {"b": b, "c": c}, steps, args.capacity_warmup, args.capacity_window, args.capacity_budget,
                                "capacity, two processes")
    result: dict[str, Any] = {"one_process": one, "two_processes": two}
    if one["largest_held"] and two["largest_held"]:
        result["two_over_one_delivered"] = _ratio(two["largest_held"]["delivered_per_second"], one["largest_held"]["delivered_per_second"])
    return result


async def node_empty(node: Node) -> bool:
    metrics = await node.metrics()
    return metrics.get("videoconf_sfu_rooms", 1) == 0 and metrics.get("videoconf_sfu_peer_connections", 1) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials of part 1")
    parser.add_argument("--window", type=float, default=15.0, help="measured seconds per trial of part 1 (the link's cost is "
                        "a fraction of a percent of a core: long windows, against /proc's 10 ms CPU ticks)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--k", default="1,10", help="subscriber counts of part 1")
    parser.add_argument("--delay-window", type=float, default=15.0, help="seconds of packets matched in part 2")
    parser.add_argument("--capacity-steps", default="10,20,30,40,50,60,70,80,90,100,110,120,135,150,165,180,200,225,250,280,320",
                        help="viewers per meeting at each step of part 3")
    parser.add_argument("--capacity-window", type=float, default=6.0)
    parser.add_argument("--capacity-warmup", type=float, default=2.0)
    parser.add_argument("--capacity-budget", type=float, default=240.0, help="seconds at most per capacity search")
    parser.add_argument("--parts", default="relay,delay,capacity", help="which of relay,delay,capacity")
    parser.add_argument("--quick", action="store_true", help="one trial of 3 s, a 4 s delay window, a coarse capacity search")
    parser.add_argument("--output", type=Path, default=RESULTS / "cluster.json")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.window, args.warmup, args.delay_window = 1, 3.0, 1.5, 4.0
        args.capacity_steps, args.capacity_window, args.capacity_warmup, args.capacity_budget = "20,60,100,140,180,240,320", 3.0, 1.5, 50.0
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOAD_CORE})
    runtime.install()
    report = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: report[key] for key in ("relay", "arithmetic", "node_log_problems")}, indent=2))
    if report["hop_delay"]:
        print("hop delay:", json.dumps(report["hop_delay"]["all"]))
    for name, search in (report["capacity"] or {}).items():
        if isinstance(search, dict):
            print(f"capacity {name}: {json.dumps(search.get('largest_held'))}; stopped because {search.get('stopped_because')}")
    print(f"written to {args.output} in {report['run_seconds']} s")


if __name__ == "__main__":
    main()
