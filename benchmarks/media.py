"""What the media benchmarks (``sfu_bench``, ``side_by_side``, ``janus``'s self-check) share:
plain aiortc peers with VP8 only, a server's CPU over a window of received packets, the marginal
cost of one more forwarded packet, and the machine they ran on."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiortc
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from clients.loadtest.process import cpu_seconds


def peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def vp8_only() -> list[Any]:
    """Codec preferences for a video transceiver: VP8 (and its RTX)."""
    return [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name in ("VP8", "rtx")]


async def cpu_window(
    pid: int, counts: Callable[[], dict[str, int]], seconds: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Over ``seconds``: the CPU ``pid`` used against the packets received meanwhile
    (``counts()["packets"]``); and how much each of ``counts()`` grew, and the time (``seconds``)."""
    cpu0, before, t0 = cpu_seconds(pid), counts(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, after, t1 = cpu_seconds(pid), counts(), time.monotonic()
    cpu, wall = cpu1 - cpu0, t1 - t0
    grown = {key: after[key] - before[key] for key in after} | {"seconds": wall}
    packets = grown["packets"]
    return {
        "cpu_seconds": round(cpu, 3),
        "packets": packets,
        "wall_seconds": round(wall, 3),
        "packets_per_second": round(packets / wall, 1),
        "cpu_share": round(cpu / wall, 4),
        "us_per_packet": round(cpu * 1e6 / packets, 2) if packets else None,
    }, grown


def marginal_us(trials: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of server CPU over forwarded packets/s across subscriber counts: the
    cost of one more forwarded packet, without what a server spends anyway (ticks, RTCP, ICE)."""
    points = [(t["packets_per_second"], t["cpu_share"]) for t in trials]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return round(slope * 1e6, 2)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())


def machine(**versions: Any) -> dict[str, Any]:
    """The processor, its cores, and the versions of Python, aiortc and ``versions``."""
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "aiortc": aiortc.__version__,
        **versions,
    }
