"""``videoconf loadtest``: run named scenarios (and optionally a capacity search) against a node,
show progress, print a table and write a JSON report.

    videoconf loadtest --local                                   # a throw-away node on this machine
    videoconf loadtest --api http://127.0.0.1:8080 --scenario livestream --viewers 50
    videoconf loadtest --local --capacity --scenario livestream  # subscribers per core
    videoconf loadtest --api http://node-1:8080 --processes 4 --scenario livestream --viewers 400

With ``--processes N`` the viewers are shared among this process and N-1 worker processes
(``clients.loadtest.worker``), so that the load generator can outgrow one core.  Against a
cluster (the join answer names a node) the bots are placed over the nodes as the control API
places participants (the meeting's node up to its limit, then the least-loaded others) and
every node's ``/metrics`` is scraped and summed; the registry (``GET /api/nodes``) is read with
the deployment's metrics token.

Bots need the deployment's room-token key: it is read from the configuration (``--config`` or
the ``VIDEOCONF_*`` environment, as for ``videoconf run``).  Bots use loopback ICE candidates
unless ``--ice-address`` says otherwise, and no STUN server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp

from clients.loadtest.scenarios import SCENARIOS, scenario

if TYPE_CHECKING:
    from clients.loadtest.local import NodeSettings, SettingsLoader

DEFAULT_OUTPUT = Path("loadtest-results.json")


class ProgressLine:
    """One status line: rewritten in place on a terminal, else printed every few seconds."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False, every: float = 5.0) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.every = every
        self.prefix = ""
        self._last = 0.0
        self._width = 0

    def __call__(self, text: str) -> None:
        if self.quiet:
            return
        line = f"[{self.prefix}] {text}" if self.prefix else text
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            print(line, file=self.stream, flush=True)

    def done(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        print(text, file=self.stream, flush=True)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


COLUMNS = (
    ("scenario", lambda r: r["scenario"]["name"]),
    ("pub", lambda r: _fmt(r["publishers"])),
    ("sub", lambda r: _fmt(r["subscribers"])),
    ("pkt/s in", lambda r: _fmt(r["packets_in_per_second"], 0)),
    ("pkt/s out", lambda r: _fmt(r["packets_out_per_second"], 0)),
    ("Mbit/s out", lambda r: _fmt(r["mbit_out"])),
    ("SFU CPU", lambda r: f"{r['sfu_cpu']:.0%}"),
    ("delay p50/p99 ms", lambda r: f"{_fmt(r['forward_delay_ms']['p50'], 2)}/{_fmt(r['forward_delay_ms']['p99'], 2)}"),
    ("per-copy delay p50/p99 ms", lambda r: "/".join(_fmt((r.get("copy_delay_ms") or {}).get(q), 2) for q in ("p50", "p99"))),
    ("fps (sent)", lambda r: f"{_fmt(r['frame_rate']['median'])} ({r['frame_rate']['sent']})" if r["frame_rate"]["sent"] else "-"),
    ("freezes", lambda r: _fmt(r["freezes"])),
    ("loss", lambda r: "-" if r["packet_loss"] is None else f"{r['packet_loss']:.2%}"),
    ("join p50/p99 ms", lambda r: f"{_fmt(r['join_ms']['p50'], 0)}/{_fmt(r['join_ms']['p99'], 0)}"),
    ("load CPU", lambda r: f"{r['load_cpu']:.0%}"),
)


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of scenario results (readable as plain text too)."""
    rows = [[name for name, _ in COLUMNS]] + [[cell(r) for _, cell in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="the node's control API base URL")
    parser.add_argument("--local", action="store_true", help="start a throw-away node on this machine instead (SQLite, pinned to core 0)")
    parser.add_argument("--email", help="host account (default: register a throw-away one)")
    parser.add_argument("--password")
    parser.add_argument("--scenario", default="all", help=f"comma-separated: {', '.join(SCENARIOS)}, or all")
    parser.add_argument("--publishers", type=int, help="override the scenario's publishers")
    parser.add_argument("--viewers", type=int, help="override the scenario's receive-only bots")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, help="seconds between settling and measuring")
    parser.add_argument("--decode", type=int, help="receivers that also decode and verify the video")
    parser.add_argument("--clear-count", action="store_true", default=None,
                        help="viewers count RTP by its clear header without decrypting it (several times the viewers per load core; they send no reports or NACKs)")
    parser.add_argument("--capacity", action="store_true", help="search the largest subscriber count that keeps the quality bar")
    parser.add_argument("--capacity-start", type=int, default=10)
    parser.add_argument("--capacity-limit", type=int, default=300)
    parser.add_argument("--min-fps-ratio", type=float, default=0.9, help="quality bar: received over sent frame rate")
    parser.add_argument("--max-loss", type=float, default=0.01, help="quality bar: packet loss")
    parser.add_argument("--processes", type=int, default=1,
                        help="load processes holding the viewers (this one and N-1 workers), so the load is not one core's")
    parser.add_argument("--ice-address", action="append", help="local address for the bots' ICE candidates (default 127.0.0.1)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON report")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


async def run(args: argparse.Namespace, settings: NodeSettings, api: str) -> dict[str, Any]:
    from clients.loadtest.runner import QualityBar, Target, capacity_search, run_scenario
    from control_api.app import token_codecs
    from control_api.services.context import utc_now
    from sfu.aiortc_hooks import configure_ice

    configure_ice(args.ice_address or ["127.0.0.1"])
    _, room_tokens = token_codecs(settings, utc_now)
    target = Target(api, room_tokens, args.email, args.password, processes=max(1, args.processes),
                    ice_addresses=list(args.ice_address or ["127.0.0.1"]))
    if settings.metrics_token is not None:  # the deployment's, read from its configuration
        target.metrics_token = settings.metrics_token.get_secret_value()
    names = list(SCENARIOS) if args.scenario == "all" else [n.strip() for n in args.scenario.split(",") if n.strip()]
    progress = ProgressLine(quiet=args.quiet)
    overrides = {"publishers": args.publishers, "viewers": args.viewers, "duration": args.duration,
                 "warmup": args.warmup, "decode": args.decode, "clear_count": args.clear_count}
    report: dict[str, Any] = {"tool": "videoconf loadtest", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "target": api, "scenarios": [], "capacity": None}
    for name in names:
        chosen = scenario(name, **overrides)
        progress.prefix = name
        result = await run_scenario(target, chosen, progress)
        report["scenarios"].append(result)
        progress.done(f"{name}: {result['subscribers']} subscribers, {result['packets_out_per_second']:,.0f} packets/s out, "
                      f"SFU CPU {result['sfu_cpu']:.0%}, loss {result['packet_loss'] or 0:.2%}")
    if args.capacity:
        name = names[0] if len(names) == 1 else "livestream"
        progress.prefix = f"capacity {name}"
        bar = QualityBar(min_fps_ratio=args.min_fps_ratio, max_loss=args.max_loss)
        chosen = scenario(name, **{**overrides, "viewers": None})
        report["capacity"] = await capacity_search(target, chosen, bar, start=args.capacity_start, limit=args.capacity_limit, progress=progress)
        progress.done(f"capacity: {report['capacity']['largest_held']} subscribers held; stopped: {report['capacity']['stopped_because']}")
    return report


def cmd_loadtest(args: argparse.Namespace, load_settings: SettingsLoader) -> int:
    """The command, run on the production event loop (the caller installs it); ``load_settings``
    reads a node's configuration (``videoconf.config.load_settings``)."""
    from clients.loadtest.local import LocalNode
    from clients.loadtest.runner import LoadTestError

    for name in ([] if args.scenario == "all" else args.scenario.split(",")):
        if name.strip() not in SCENARIOS:
            print(f"videoconf loadtest: unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
            return 2
    node: LocalNode | None = None
    with tempfile.TemporaryDirectory(prefix="videoconf-loadtest-") as workdir:
        try:
            if args.local:
                node = LocalNode(Path(workdir), core=0, load_settings=load_settings)
                settings, api = node.settings(), node.base
                node.start()
                if (os.cpu_count() or 1) > 1:
                    os.sched_setaffinity(0, {1})
            else:
                settings, api = load_settings(args.config), args.api
            report = asyncio.run(run(args, settings, api))
        except (LoadTestError, OSError, RuntimeError, TimeoutError, subprocess.SubprocessError, aiohttp.ClientError) as exc:
            print(f"videoconf loadtest: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            if node is not None:
                node.stop()
    report["table"] = table(report["scenarios"]) if report["scenarios"] else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    if report["table"]:
        print(report["table"])
    capacity = report["capacity"]
    if capacity:
        print(f"\ncapacity ({capacity['scenario']['name']}): {capacity['largest_held']} subscribers held the bar, "
              f"{capacity['subscribers_per_core']} per core of SFU CPU; stopped because {capacity['stopped_because']}")
    print(f"\nreport written to {args.output}")
    return 0
