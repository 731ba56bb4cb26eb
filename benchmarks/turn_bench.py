"""The TURN relay's CPU cost per relayed packet, against coturn in the same run.

    python -m benchmarks.turn_bench [--trials 3] [--processes 4] [--clients 50] [--messages 1000] [--interval 1]

Each trial starts one server (``videoconf turn`` with uvloop, or Debian's coturn with one relay
thread) pinned to CPU 1, with turnutils_peer and turnutils_uclient (Debian's coturn package)
pinned to CPU 0 sending the same bounded load through it: ``--processes`` uclients at once with
``--clients`` allocations each, each allocation sending
``--messages`` ChannelData messages (or Send indications with ``--mode send``) of 100 bytes every
``--interval`` ms, echoed back by the peer.  Every echoed message is relayed twice (client to peer,
peer to client).  The server's CPU time is read from /proc before and after the load.

Reported per server: the median over trials of CPU microseconds per relayed packet, the packets a
fully busy core would relay per second at that cost (1 / cost), the rate reached, and the loss.
The two servers alternate, so drift in the shared machine's load hits both.  Writes
``benchmarks/results/turn.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clients.loadtest.process import ChildProcess, cpu_seconds, free_port, udp_answers
from clients.loadtest.stats import median

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD, REALM = "bench", "bench-password", "videoconf"


def stun_answers(port: int) -> bool:
    """Whether a STUN Binding request to the UDP port gets a success response."""
    request = bytes.fromhex("000100002112a442") + os.urandom(12)
    return udp_answers(port, request, lambda answer: answer[:2] == b"\x01\x01")


def start_ours(port: int, workdir: Path) -> ChildProcess:
    config = workdir / "turn.toml"
    config.write_text(
        f'data_dir = "{workdir}"\nlog_level = "WARNING"\n[turn]\nlisten = "127.0.0.1"\nudp_port = {port}\n'
        f'tcp_port = {port}\nrelay_ports = [40000, 49999]\nallow_loopback = true\nmax_bps = 0\nuser_quota = 0\n'
        f'total_quota = 0\nunauthorized_burst = 100000\n[turn.users]\n{USER} = "{PASSWORD}"\n'
    )
    videoconf = Path(sys.executable).with_name("videoconf")
    command = ["taskset", "-c", "1", str(videoconf), "--config", str(config), "turn"]
    return ChildProcess(command, cwd=workdir, output=subprocess.DEVNULL)


def start_coturn(port: int, workdir: Path) -> ChildProcess:
    return ChildProcess(
        ["taskset", "-c", "1", "turnserver", "-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
         "-p", str(port), "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli", "-a",
         "-u", f"{USER}:{PASSWORD}", "-r", REALM, "-m", "1", "--min-port", "40000", "--max-port", "49999",
         "--log-file", str(workdir / "coturn.log"), "--no-stdout-log", "--pidfile", str(workdir / "coturn.pid")],
        cwd=workdir, output=subprocess.DEVNULL, log=workdir / "coturn.log",
    )


def run_load(port: int, peer_port: int, args: argparse.Namespace) -> dict[str, Any]:
    command = ["taskset", "-c", "0", "turnutils_uclient", "-u", USER, "-w", PASSWORD, "-e", "127.0.0.1",
               "-r", str(peer_port), "-p", str(port), "-m", str(args.clients), "-n", str(args.messages),
               "-z", str(args.interval), "-l", "100", "-c"]
    if args.mode == "send":
        command.append("-s")
    processes = [subprocess.Popen([*command, "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(args.processes)]
    result = {"sent": 0, "received": 0, "lost": 0}
    for process in processes:
        output = process.communicate(timeout=600)[0]
        totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", output)
        lost = re.findall(r"Total lost packets (\d+)", output)
        if not totals:
            raise RuntimeError(f"turnutils_uclient failed:\n{output[-2000:]}")
        sent, received = map(int, totals[-1])
        result["sent"] += sent
        result["received"] += received
        result["lost"] += int(lost[-1]) if lost else 0
    return result


def trial(name: str, args: argparse.Namespace, peer_port: int) -> dict[str, Any]:
    port = free_port(socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory(prefix=f"turnbench-{name}-") as tmp:
        workdir = Path(tmp)
        server = (start_ours if name == "videoconf" else start_coturn)(port, workdir)
        try:
            server.start(lambda: stun_answers(port), 15, f"the {name} TURN server")
            time.sleep(0.5)
            before, started = cpu_seconds(server.pid), time.monotonic()
            load = run_load(port, peer_port, args)
            after, elapsed = cpu_seconds(server.pid), time.monotonic() - started
        finally:
            server.stop(timeout=10)
    relayed = load["sent"] + load["received"]
    cpu = after - before
    return {
        **load,
        "relayed_packets": relayed,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(elapsed, 3),
        "cpu_us_per_packet": round(cpu / relayed * 1e6, 3) if relayed else None,
        "packets_per_cpu_second": round(relayed / cpu) if cpu else None,
        "packets_per_second": round(relayed / elapsed),
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median of ``key`` over the runs that measured it (None when none did: a server that
    relayed nothing in every trial)."""
    return median([r[key] for r in runs if r.get(key) is not None], None)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "cpu_us_per_packet": median_of(trials, "cpu_us_per_packet"),
            "packets_per_cpu_second": median_of(trials, "packets_per_cpu_second"),
            "packets_per_second": median_of(trials, "packets_per_second"),
            "lost": sum(r.get("lost") or 0 for r in trials),
        }
        for name, trials in runs.items()
    }


def cost_ratio(summary: dict[str, dict[str, Any]]) -> float | None:
    """This server's CPU per relayed packet over coturn's, when both were measured."""
    ours, theirs = (summary.get(name, {}).get("cpu_us_per_packet") for name in ("videoconf", "coturn"))
    return round(ours / theirs, 2) if ours and theirs else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=1, help="ms between messages of one client")
    parser.add_argument("--processes", type=int, default=4, help="turnutils_uclient processes at once")
    parser.add_argument("--mode", choices=["channel", "send"], default="channel")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "turn.json")
    args = parser.parse_args()
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is missing (apt-get install coturn util-linux)")

    peer_port = free_port(socket.SOCK_DGRAM)
    peer = ChildProcess(["taskset", "-c", "0", "turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)], output=subprocess.DEVNULL)
    runs: dict[str, list[dict[str, Any]]] = {"videoconf": [], "coturn": []}
    try:
        peer.start(lambda: udp_answers(peer_port, b"ping", b"ping".__eq__), 10, "turnutils_peer")
        for index in range(args.trials):
            for name in ("videoconf", "coturn") if index % 2 == 0 else ("coturn", "videoconf"):
                result = trial(name, args, peer_port)
                runs[name].append(result)
                print(f"trial {index + 1} {name}: {result}", flush=True)
    finally:
        peer.kill()

    summary = summarize(runs)
    ratio = cost_ratio(summary)
    report = {
        "benchmark": "turn",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load": {"mode": args.mode, "processes": args.processes, "clients": args.clients, "messages": args.messages, "interval_ms": args.interval,
                 "payload_bytes": 100, "trials": args.trials},
        "summary": summary,
        "cpu_per_packet_ratio_vs_coturn": ratio,
        "aims": {"ratio_at_most": 2.0, "packets_per_cpu_second_at_least": 100_000},
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"summary": summary, "ratio": report["cpu_per_packet_ratio_vs_coturn"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
