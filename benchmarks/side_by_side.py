"""Side by side: the same publisher and the same subscriber counts through this SFU, through
Janus's VideoRoom plugin (Debian's ``janus``) and through aiortc's ``MediaRelay``, measuring each
server process's CPU per forwarded packet; then a capacity search of this SFU.

    python -m benchmarks.side_by_side [--quick] [--trials 3] [--counts 1,5,10,20,50]

The whole benchmark runs in a network namespace it makes (``benchmarks.netns``): nothing in
it can reach beyond this machine, and Janus, which skips loopback interfaces when it gathers
candidates, gets 127.0.0.2 on a veth of its own.  Each server is pinned to core 0, this process
(the publisher and every subscriber) to core 1.

The publisher replays a pre-encoded 640x360 VP8 loop at 30 fps and about 1 Mbit/s with a
keyframe every second, plus an Opus tone, so it costs the load core almost nothing and every
system gets the same bytes.  Subscribers are aiortc peer connections that count every RTP packet
after SRTP decryption (sequence gaps give the loss, marker bits the frame rate) and drop it
undecoded.  Per trial: connect, wait until every subscriber receives audio and video, warm up,
then measure a window: the server's CPU seconds (utime + stime from /proc) over the packets all
subscribers received.  Trials of the three systems are interleaved so machine noise hits all.

The capacity search (``clients.loadtest``) raises the viewers of a livestream (the same single
layer) until frame rate falls below 90% of the sent rate or loss exceeds 1%, or until the load
core saturates; it reports the largest count that held, subscribers and packets per core of SFU
CPU, and the forwarding delay from the SFU's histogram at each step.  The machine's floor
(``benchmarks.floor``: SRTP protect and ``sendmmsg`` of each packet's copies, nothing else) is
measured in the same run, at 1 copy per packet, at the largest count compared and at ``--floor``.

Writes ``benchmarks/results/side_by_side.json``, ``side_by_side.md`` and two PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from benchmarks.floor import copy_floor
from benchmarks.janus import Janus
from benchmarks.media import cpu_window, machine, marginal_us, peer, vp8_only
from benchmarks.netns import JANUS_ADDRESS, confine
from benchmarks.relay_baseline import RelayBaseline
from clients.loadtest.local import LocalNode
from clients.loadtest.polling import until
from clients.loadtest.process import free_port
from clients.loadtest.runner import LoadTestError, Meeting, QualityBar, Target, capacity_search
from clients.loadtest.scenarios import SINGLE_LAYER, scenario
from clients.loadtest.stats import RtpCounter, histogram_quantile, median, tap_counter
from clients.sdk.replay import ReplayTrack, encoded_audio, encoded_video
from control_api.app import token_codecs
from control_api.services.context import utc_now
from sfu.aiortc_hooks import configure_ice
from videoconf.config import load_settings

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results"
WIDTH, HEIGHT, FPS, BITRATE = 640, 360, 30, 1_000_000
SYSTEMS = ("sfu", "janus", "relay")
LABELS = {"sfu": "VideoConf SFU", "janus": "Janus VideoRoom", "relay": "aiortc MediaRelay"}
SHORT = {"sfu": "VideoConf", "janus": "Janus", "relay": "MediaRelay"}


def publisher_tracks() -> tuple[ReplayTrack, ReplayTrack]:
    return ReplayTrack(encoded_video(WIDTH, HEIGHT, FPS, BITRATE)), ReplayTrack(encoded_audio())


async def wait_receiving(counters: list[RtpCounter], timeout: float = 60.0) -> None:
    """Every subscriber gets both audio and video."""

    def receiving() -> bool:
        return all(c.media("video") and c.media("audio") for c in counters)

    def who() -> str:
        ready = sum(bool(c.media("video") and c.media("audio")) for c in counters)
        return f"every subscriber to receive audio and video: only {ready} of {len(counters)} do"

    await until(receiving, timeout, who, interval=0.2, error=RuntimeError)


async def window(pid: int, counters: list[RtpCounter], warmup: float, seconds: float) -> dict[str, Any]:
    await wait_receiving(counters)
    await asyncio.sleep(warmup)

    def books() -> dict[str, int]:
        totals = [c.totals() for c in counters]
        return {key: sum(t[key] for t in totals) for key in ("packets", "expected", "video_frames")}

    result, grown = await cpu_window(pid, books, seconds)
    expected, wall = grown["expected"], grown["seconds"]
    return {
        "subscribers": len(counters),
        **result,
        "loss": round(max(0, expected - grown["packets"]) / expected, 5) if expected else None,
        "fps_per_subscriber": round(grown["video_frames"] / wall / len(counters), 2),
    }


# The three systems ----------------------------------------------------------------------------


async def sfu_trial(node: LocalNode, target: Target, subscribers: int, warmup: float, seconds: float) -> dict[str, Any]:
    plan = scenario("livestream", viewers=subscribers, video_layers=SINGLE_LAYER, tile=None, fps=FPS, join_concurrency=4)
    meeting = Meeting(target, plan)
    try:
        await meeting.open()
        await meeting.add_publishers()
        await meeting.add_viewers(subscribers)
        failed = [b.failed for b in meeting.bots if b.failed]
        if failed:
            raise RuntimeError(f"{len(failed)} SFU bots failed: {failed[0]}")
        counters = [b.counter for b in meeting.receivers() if b.counter is not None]
        scrape0 = await meeting.scrape()
        result = await window(node.pid, counters, warmup, seconds)
        scrape1 = await meeting.scrape()
        before, after = scrape0.buckets("videoconf_sfu_forward_delay_seconds"), scrape1.buckets("videoconf_sfu_forward_delay_seconds")
        p99 = histogram_quantile(0.99, before, after)
        result["forward_delay_p99_ms"] = None if p99 is None else round(p99 * 1000, 3)
        return result
    finally:
        await meeting.close()


async def janus_trial(janus: Janus, subscribers: int, warmup: float, seconds: float) -> dict[str, Any]:
    pcs: list[RTCPeerConnection] = []
    counters: list[RtpCounter] = []
    video, audio = publisher_tracks()
    configure_ice([JANUS_ADDRESS])  # Janus's checks from its veth complete only to this address
    try:
        room = await janus.create_room(publishers=2)
        publisher = peer()
        pcs.append(publisher)
        publisher.addTransceiver(video, direction="sendonly").setCodecPreferences(vp8_only())
        publisher.addTransceiver(audio, direction="sendonly")
        feed = await janus.publish(publisher, room)
        for _ in range(subscribers):
            pc = peer()
            pcs.append(pc)
            await janus.subscribe(pc, room, feed)
            counters.append(tap_counter(pc, RtpCounter()))
        return await window(janus.pid, counters, warmup, seconds)
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
        video.stop()
        audio.stop()
        await janus.destroy_rooms()
        configure_ice(["127.0.0.1"])


async def relay_trial(subscribers: int, warmup: float, seconds: float) -> dict[str, Any]:
    video, audio = publisher_tracks()
    relay = RelayBaseline()
    try:
        counters = await relay.connect(video, audio, subscribers, lambda pc: tap_counter(pc, RtpCounter()))
        return await window(relay.pid, counters, warmup, seconds)
    finally:
        await relay.close()
        video.stop()
        audio.stop()


# Summaries ------------------------------------------------------------------------------------


def summarize(raw: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for system, by_n in raw.items():
        summary[system] = {}
        for n, trials in by_n.items():
            good = [t for t in trials if "error" not in t]
            summary[system][str(n)] = {
                "us_per_packet": median([t["us_per_packet"] for t in good if t["us_per_packet"]]),
                "packets_per_second": median([t["packets_per_second"] for t in good], 1),
                "cpu_share": median([t["cpu_share"] for t in good], 4),
                "loss": median([t["loss"] for t in good if t["loss"] is not None], 5),
                "fps_per_subscriber": median([t["fps_per_subscriber"] for t in good]),
                "errors": [t["error"] for t in trials if "error" in t],
            }
    return summary


def measured(report: dict[str, Any]) -> list[str]:
    """The systems a report has results for, in the usual order."""
    return [s for s in SYSTEMS if s in report["median"]]


def markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"Side by side on {report['machine']['cpu']} ({report['machine']['cores']} cores), {report['date'][:10]}: "
        f"1 publisher ({setup['video']}, {setup['audio']}) to N subscribers; "
        "server CPU (share of one core) per forwarded packet, medians of "
        f"{setup['trials']} trials of {setup['window_seconds']:.0f} s.",
        "",
        *comparison_table(report),
    ]
    marg = report["marginal_us_per_packet"]
    margins = [f"{LABELS[s]} {marg[s]} µs" for s in SYSTEMS if marg.get(s) is not None]
    if margins:
        lines += ["", "Marginal CPU per extra forwarded packet (slope across N): " + ", ".join(margins) + "."]
    if report.get("capacity"):
        lines += ["", *capacity_lines(report["capacity"])]
    if report.get("floor"):
        lines += ["", *floor_lines(report)]
    aims = report["aims"]
    if aims:
        lines += ["", "Aims: " + "; ".join(f"{k.replace('_', ' ')}: {'met' if v['met'] else 'missed'} ({v['value']})" for k, v in aims.items()) + "."]
    return "\n".join(lines) + "\n"


def comparison_table(report: dict[str, Any]) -> list[str]:
    """One row per subscriber count, one column per measured system (and VideoConf / Janus when
    both were measured)."""
    summary, systems = report["median"], measured(report)
    both = "sfu" in systems and "janus" in systems
    header = ["N", "packets/s out", *(f"{SHORT[s]} µs/pkt (CPU)" for s in systems), *(["VideoConf / Janus"] if both else [])]
    rows = [header]
    for n in report["setup"]["counts"]:
        ratio = report["sfu_over_janus"].get(str(n))
        rows.append([str(n), packets_out(summary, systems, n), *(cell(summary, s, n) for s in systems),
                     *([("-" if ratio is None else f"{ratio:.2f}")] if both else [])])
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    return [lines[0], "|" + "---|" * len(header), *lines[1:]]


def packets_out(summary: dict[str, Any], systems: list[str], n: int) -> str:
    """Forwarded packets/s at ``n`` subscribers, from the first system measured there."""
    rates = [summary[s].get(str(n), {}).get("packets_per_second") for s in systems]
    rate = next((r for r in rates if r), None)
    return "-" if rate is None else f"{rate:,}"


def cell(summary: dict[str, Any], system: str, n: int) -> str:
    entry = summary.get(system, {}).get(str(n))
    if not entry or entry["us_per_packet"] is None:
        return "failed" if entry and entry["errors"] else "-"
    fps = entry["fps_per_subscriber"]
    return f"{entry['us_per_packet']:.1f} ({entry['cpu_share']:.1%}{'' if fps is None or fps >= 27 else f', {fps:.0f} fps'})"


def capacity_lines(cap: dict[str, Any]) -> list[str]:
    per_core = ""
    if cap.get("packets_per_core"):
        per_core = (f", {cap['subscribers_per_core']} subscribers and {cap['packets_per_core']:,.0f} forwarded packets/s "
                    "per core of SFU CPU")
    lines = [
        f"Capacity of this SFU (livestream, 1 publisher at {WIDTH}x{HEIGHT}): {cap['largest_held']} subscribers held the bar "
        f"(frame rate ≥ 90% of sent, loss ≤ 1%){per_core}; stopped because {cap['stopped_because']}.",
    ]
    half = cap.get("half_capacity_step")
    if half:
        lines.append(f"Forwarding delay p99 at the step nearest half a core ({half['sfu_cpu']:.0%} CPU, "
                     f"{half['subscribers']} subscribers): {half.get('copy_delay_ms', {}).get('p99')} ms from a packet's arrival "
                     f"to each copy, {half['forward_delay_ms']['p99']} ms to its last copy.")
    return lines


def plots(report: dict[str, Any], directory: Path) -> list[str]:
    """Draw the plots the report has data for; return the names of the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, draw in (("side_by_side_cpu.png", cpu_plot), ("side_by_side_capacity.png", capacity_plot)):
        fig = draw(report, plt)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(directory / name, dpi=110)
            plt.close(fig)
            written.append(name)
    return written


def cpu_plot(report: dict[str, Any], plt: Any) -> Any:
    """CPU per packet and CPU over packets/s, one line per measured system (None: no data)."""
    lines = {}
    for system in measured(report):
        entries = [report["median"][system].get(str(n)) for n in report["setup"]["counts"]]
        points = [(n, e["us_per_packet"], e["packets_per_second"], e["cpu_share"])
                  for n, e in zip(report["setup"]["counts"], entries, strict=True) if e and e["us_per_packet"]]
        if points:
            lines[system] = points
    if not lines:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, points in lines.items():
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=LABELS[system])
        right.plot([p[2] for p in points], [p[3] * 100 for p in points], marker="o", label=LABELS[system])
    left.set(xscale="log", yscale="log", xlabel="subscribers", ylabel="server CPU µs per forwarded packet",
             title="CPU per forwarded packet")
    right.set(xscale="log", xlabel="forwarded packets/s", ylabel="server CPU, % of one core", title="Server CPU")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    fig.suptitle(f"1 publisher {WIDTH}x{HEIGHT} VP8 {FPS} fps + Opus, {report['date'][:10]}, {report['machine']['cpu']}")
    return fig


def capacity_plot(report: dict[str, Any], plt: Any) -> Any:
    """SFU and load CPU and the p99 forwarding delay at each step of the capacity search."""
    cap = report.get("capacity")
    if not cap or not cap["steps"]:
        return None
    steps = cap["steps"]
    fig, left = plt.subplots(figsize=(7, 4.2))
    subs = [s["subscribers"] for s in steps]
    left.plot(subs, [s["sfu_cpu"] * 100 for s in steps], marker="o", color="tab:blue", label="SFU CPU %")
    left.plot(subs, [s["load_cpu"] * 100 for s in steps], marker="s", color="tab:gray", label="load generator CPU %")
    left.set(xlabel="subscribers", ylabel="% of one core")
    right_axis = left.twinx()
    right_axis.plot(subs, [s["forward_delay_ms"]["p99"] or 0 for s in steps], marker="^", color="tab:red", label="forwarding delay p99 (ms)")
    right_axis.set_ylabel("ms")
    handles = left.get_legend_handles_labels()[0] + right_axis.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="upper left")
    left.grid(True, alpha=0.3)
    left.set_title("Capacity search: livestream, one publisher")
    return fig


# Driver ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    configure_ice(["127.0.0.1"])
    counts = [int(n) for n in args.counts.split(",")]
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    raw: dict[str, dict[int, list[dict[str, Any]]]] = {s: {n: [] for n in counts} for s in systems}
    capacity: dict[str, Any] | None = None
    floor: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as workdir:
        # As deployed (deploy/compose.yaml): every connection's ICE on one UDP port, so that
        # the copies of a packet leave in one sendmmsg.
        node = LocalNode(Path(workdir) / "sfu", core=0, load_settings=load_settings,
                         env={"VIDEOCONF_UDP_PORT": str(free_port(socket.SOCK_DGRAM))})
        node.workdir.mkdir()
        _, room_tokens = token_codecs(node.settings(), utc_now)
        target = Target(node.base, room_tokens)
        janus = Janus(Path(workdir) / "janus", core=0) if "janus" in systems else None
        node.start()
        try:
            if janus is not None:
                janus.workdir.mkdir()
                janus.start()
                await janus.open()
            for trial in range(args.trials):
                for n in counts:
                    for system in systems:
                        try:
                            if system == "sfu":
                                result = await sfu_trial(node, target, n, args.warmup, args.window)
                            elif system == "janus":
                                assert janus is not None
                                result = await janus_trial(janus, n, args.warmup, args.window)
                            else:
                                result = await relay_trial(n, args.warmup, args.window)
                        except (RuntimeError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
                            result = {"error": f"{type(exc).__name__}: {exc}"}
                        raw[system][n].append(result)
                        shown = (f"{result['us_per_packet']} us/packet, {result['packets_per_second']} packets/s, "
                                 f"cpu {result['cpu_share']:.1%}, loss {result['loss']}") if "error" not in result else result["error"]
                        print(f"trial {trial + 1} {system:5} N={n:2}: {shown}", flush=True)
            if args.floor:
                # What protecting and writing a copy costs on this machine with nothing else
                # (benchmarks/floor.py): at one copy per packet, at the largest count compared
                # and near the capacity's.
                for copies in sorted({1, max(counts), args.floor}):
                    try:
                        floor[str(copies)] = await copy_floor(copies, core=0 if (os.cpu_count() or 1) > 1 else None)
                    except (RuntimeError, OSError, asyncio.TimeoutError, ValueError) as exc:
                        floor[str(copies)] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"floor at {copies} copies per packet: {floor[str(copies)]}", flush=True)
            if args.capacity_limit > 0:
                # Viewers count by the clear RTP header (no decryption), so that the load core
                # holds several times the viewers and the search finds the node's limit.
                plan = scenario("livestream", video_layers=SINGLE_LAYER, tile=None, duration=args.window, warmup=args.warmup,
                                join_concurrency=4, clear_count=True)

                def show(text: str) -> None:
                    pass

                try:
                    capacity = await capacity_search(target, plan, QualityBar(), start=args.capacity_start,
                                                     growth=1.5, limit=args.capacity_limit, progress=show)
                except (LoadTestError, RuntimeError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
                    print(f"capacity search failed: {type(exc).__name__}: {exc}", flush=True)  # the comparison is kept
                    capacity = None
                for step in capacity["steps"] if capacity else []:
                    print(f"capacity {step['subscribers']:3} subscribers: SFU CPU {step['sfu_cpu']:.0%}, load CPU {step['load_cpu']:.0%}, "
                          f"{step['packets_out_per_second']:,.0f} packets/s out, loss {step['packet_loss']}, "
                          f"fps {step['frame_rate']['median']}, p99 {step['copy_delay_ms']['p99']} ms to each copy, "
                          f"{step['forward_delay_ms']['p99']} ms to the last: {step['verdict']}", flush=True)
        finally:
            if janus is not None:
                await janus.close()
                janus.stop()
            node.stop()
    return assemble(raw, capacity, setup_of(args, counts), machine_of(systems), floor)


def machine_of(systems: list[str]) -> dict[str, Any]:
    return machine(janus=Janus.version() if "janus" in systems else None)


def setup_of(args: argparse.Namespace, counts: list[int]) -> dict[str, Any]:
    return {
        "video": f"{WIDTH}x{HEIGHT} VP8 {FPS} fps ~{BITRATE // 1000} kbit/s, pre-encoded", "audio": "Opus tone",
        "counts": counts, "trials": args.trials, "warmup_seconds": args.warmup, "window_seconds": args.window,
        "server_core": 0, "load_core": 1, "network": "a private network namespace (lo + a veth carrying 127.0.0.2 for Janus)",
    }


def assemble(raw: dict[str, dict[int, list[dict[str, Any]]]], capacity: dict[str, Any] | None,
             setup: dict[str, Any], machine: dict[str, Any], floor: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report of a run from its raw trials (``raw[system][n]``, any subset of the systems),
    its capacity search (or None) and the machine's floor (benchmarks/floor.py, by copies per
    packet; empty when not measured)."""
    summary = summarize(raw)
    counts = setup["counts"]

    def ratio(a: str, b: str, n: int) -> float | None:
        x = summary.get(a, {}).get(str(n), {}).get("us_per_packet")
        y = summary.get(b, {}).get(str(n), {}).get("us_per_packet")
        return round(x / y, 3) if x and y else None

    report: dict[str, Any] = {
        "benchmark": "side_by_side",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "setup": setup,
        "median": summary,
        "sfu_over_janus": {str(n): ratio("sfu", "janus", n) for n in counts},
        "relay_over_sfu": {str(n): ratio("relay", "sfu", n) for n in counts},
        "marginal_us_per_packet": {s: marginal_us([t for ts in by_n.values() for t in ts if "error" not in t]) for s, by_n in raw.items()},
        "trials": {s: {str(n): t for n, t in by_n.items()} for s, by_n in raw.items()},
    }
    if capacity is not None:
        report["capacity"] = capacity_summary(capacity)
    if floor:
        report["floor"] = floor
    report["aims"] = aims(report)
    return report


def capacity_summary(capacity: dict[str, Any]) -> dict[str, Any]:
    """The capacity search with packets per core at the largest count that held, and the step
    nearest half a core."""
    held = [s for s in capacity["steps"] if s["verdict"] == "held"]
    largest = held[-1] if held else None
    capacity["packets_per_core"] = round(largest["packets_out_per_second"] / largest["sfu_cpu"], 0) if largest and largest["sfu_cpu"] else None
    capacity["half_capacity_step"] = min(held, key=lambda s: abs(s["sfu_cpu"] - 0.5)) if held else None
    return capacity


def aims(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The aims of the forwarding-cost work: CPU per forwarded packet against Janus's at 50
    (at most half) and at 1 and 10 subscribers (at most equal), forwarded packets per core of
    SFU CPU in the capacity search (at least 120,000), and the p99 delay to each copy at the
    step nearest half a core (under 5 ms)."""
    result: dict[str, dict[str, Any]] = {}
    ratios = {int(n): r for n, r in report["sfu_over_janus"].items() if r is not None}
    for n, most in ((50, 0.5), (10, 1.0), (1, 1.0)):
        if n in ratios:
            result[f"cpu_per_packet_at_{n}_at_most_{most:g}_of_janus"] = {"met": ratios[n] <= most, "value": f"{ratios[n]:.2f} of Janus's"}
    cap = report.get("capacity")
    if cap and cap.get("packets_per_core"):
        value = f"{cap['packets_per_core']:,.0f}"
        best = floor_ceiling(report)
        if best is not None:
            value += f"; protecting and writing alone allow {best[1]:,} copies/s per core here, at {best[0]} copies per packet"
        result["forwards_120000_packets_per_second_per_core"] = {"met": cap["packets_per_core"] >= 120_000, "value": value}
    if cap and cap.get("half_capacity_step"):
        step = cap["half_capacity_step"]
        p99 = step.get("copy_delay_ms", {}).get("p99")
        last = step["forward_delay_ms"]["p99"]
        result["p99_delay_to_each_copy_under_5_ms_at_half_capacity"] = {
            "met": p99 is not None and p99 < 5 and step["sfu_cpu"] >= 0.4,
            "value": f"{p99} ms at {step['sfu_cpu']:.0%} CPU (to the last copy: {last} ms)",
        }
    return result


def floor_ceiling(report: dict[str, Any]) -> tuple[int, int] | None:
    """The most copies per core second the machine's floor allows, and at how many copies per
    packet it was measured (the largest count measured); None without a floor."""
    measured = [(int(n), f["copies_per_core_second"]) for n, f in report.get("floor", {}).items() if f.get("copies_per_core_second")]
    return max(measured) if measured else None


def floor_lines(report: dict[str, Any]) -> list[str]:
    entries = [(int(n), f) for n, f in report.get("floor", {}).items() if f.get("us_per_copy")]
    if not entries:
        return []
    parts = [f"{f['us_per_copy']} µs at {n} {'copy' if n == 1 else 'copies'} per packet ({f['copies_per_core_second']:,} copies/s per core)"
             for n, f in sorted(entries)]
    return [f"The floor on this machine (benchmarks/floor.py: only SRTP protect and {entries[0][1]['path']} of each packet's copies, "
            f"{entries[0][1].get('packets_per_second', '?')} packets/s): " + ", ".join(parts) + ". A server whose loop is Python, as this SFU's is, cannot forward "
            "a copy for less over this kernel's loopback."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--counts", default="1,5,10,20,50", help="subscriber counts")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="which of sfu,janus,relay")
    parser.add_argument("--capacity-start", type=int, default=20)
    parser.add_argument("--capacity-limit", type=int, default=300, help="0: no capacity search")
    parser.add_argument("--capacity-only", action="store_true", help="keep the comparison in --output, measure the capacity search again")
    parser.add_argument("--floor", type=int, default=300, help="also measure the machine's floor at this many copies per packet (0: not)")
    parser.add_argument("--quick", action="store_true", help="one trial of 5 s, N = 1, 10; capacity up to 60")
    parser.add_argument("--output", type=Path, default=RESULTS / "side_by_side.json")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.window, args.warmup, args.counts, args.capacity_limit = 1, 5.0, 2.0, "1,10", 60
        args.floor = min(args.floor, 60)
    check(parser, args)
    confine()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    if args.capacity_only:
        previous = json.loads(args.output.read_text())
        args.systems, args.counts, args.trials = "sfu", ",".join(str(n) for n in previous["setup"]["counts"]), 0
        fresh = asyncio.run(run(args))
        previous["capacity"], previous["capacity_date"] = fresh["capacity"], fresh["date"]
        if fresh.get("floor"):
            previous["floor"] = fresh["floor"]
        previous.pop("plots", None)
        previous["aims"] = aims(previous)
        report = previous
    else:
        report = asyncio.run(run(args))
    print(write_report(report, args.output))


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before anything is measured, options that would fail at the end."""
    systems = [s for s in args.systems.split(",") if s]
    if not systems or set(systems) - set(SYSTEMS):
        parser.error(f"--systems takes a comma-separated subset of {','.join(SYSTEMS)}")
    if not all(n.strip().isdigit() and int(n) > 0 for n in args.counts.split(",")):
        parser.error("--counts takes positive subscriber counts separated by commas")
    if args.capacity_only and args.capacity_limit <= 0:
        parser.error("--capacity-only measures the capacity search: --capacity-limit must be above 0")
    if args.capacity_only and not args.output.is_file():
        parser.error(f"--capacity-only keeps the comparison of an earlier run, and {args.output} does not exist")


def write_report(report: dict[str, Any], output: Path) -> str:
    """Write ``output`` (JSON), the table next to it (``.md``) and the plots; return the table."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")  # first: the numbers survive a failed plot
    table = markdown(report)
    output.with_suffix(".md").write_text(table)
    report["plots"] = plots(report, output.parent)
    output.write_text(json.dumps(report, indent=2) + "\n")
    return table


if __name__ == "__main__":
    main()
