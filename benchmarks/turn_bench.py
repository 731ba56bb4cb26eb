"""The TURN relay's CPU cost per relayed packet and the load where it starts to lose packets,
against coturn in the same run.

    python -m benchmarks.turn_bench [--trials 3] [--processes 4] [--clients 50] [--messages 1000] [--interval 1]
                                    [--no-search] [--servers videoconf coturn videoconf-python]

Each trial starts one server pinned to CPU 1: ``videoconf turn`` on uvloop with its routed path in
C (turn/_relay.c), the same with the Python path (``turn.native_relay = false``), or Debian's
coturn with one relay thread.  turnutils_peer and turnutils_uclient (Debian's coturn package),
pinned to CPU 0, send the same bounded load through it: ``--processes`` uclients at once with
``--clients`` allocations each, each allocation sending ``--messages`` ChannelData messages (or Send
indications with ``--mode send``) of 100 bytes every ``--interval`` ms, echoed back by the peer.
Every echoed message is relayed twice (client to peer, peer to client).  The server's CPU time is
read from /proc before and after the load.

Reported per server: the median over trials of CPU microseconds per relayed packet, the packets a
fully busy core would relay per second at that cost (1 / cost), the rate reached, and the loss,
with where packets were dropped: the server's own sockets (``ss``'s per-socket drop counter, read
before the server stops, with the buffer sizes the kernel granted) and the whole machine's UDP
receive and send buffer errors (/proc/net/snmp), so the rest was dropped at the generator's or the
peer's sockets.  The servers alternate, so drift in the shared machine's load hits all.  Each
trial is followed by the same clients sending one message each: the CPU of setting up and tearing
down the allocations, so that the cost per packet once set up is reported too (the load's CPU
minus that, over its packets).

Then a step search (``--no-search`` skips it): the offered load rises step by step (more uclient
processes and allocations, each at 1 ms), each server relays each step, and the first step with
more than 0.1% loss is where that server starts to lose.  Writes ``benchmarks/results/turn.json``.
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
SERVERS = ("videoconf", "coturn", "videoconf-python")
# The step search: (uclient processes, allocations each); every allocation sends every 1 ms.
STEPS = ((1, 10), (2, 20), (4, 25), (4, 50), (6, 50), (8, 50), (8, 100), (8, 150))
LOSS_THRESHOLD = 0.001


def stun_answers(port: int) -> bool:
    """Whether a STUN Binding request to the UDP port gets a success response."""
    request = bytes.fromhex("000100002112a442") + os.urandom(12)
    return udp_answers(port, request, lambda answer: answer[:2] == b"\x01\x01")


def start_ours(port: int, workdir: Path, native: bool = True, metrics_port: int | None = None) -> ChildProcess:
    config = workdir / "turn.toml"
    config.write_text(
        f'data_dir = "{workdir}"\nlog_level = "WARNING"\n[turn]\nlisten = "127.0.0.1"\nudp_port = {port}\n'
        f'tcp_port = {port}\nrelay_ports = [40000, 49999]\nallow_loopback = true\nmax_bps = 0\nuser_quota = 0\n'
        f'total_quota = 0\nunauthorized_burst = 100000\nnative_relay = {"true" if native else "false"}\n'
        + (f"metrics_port = {metrics_port}\n" if metrics_port else "")
        + f'[turn.users]\n{USER} = "{PASSWORD}"\n'
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


def udp_counters() -> dict[str, int]:
    """The machine's UDP counters (/proc/net/snmp): receive and send buffer errors among them."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


def socket_memory(pid: int) -> dict[str, int]:
    """The UDP sockets of a process, from ``ss``: how many, their drops (datagrams the kernel
    dropped because the receive buffer was full), and the largest receive and send buffers granted."""
    output = subprocess.run(["ss", "-uampnH"], capture_output=True, text=True, timeout=30).stdout
    found = {"sockets": 0, "drops": 0, "receive_buffer": 0, "send_buffer": 0}
    owned = False
    for line in output.splitlines():
        if "users:" in line:
            owned = f"pid={pid}," in line
        if owned and "skmem:(" in line:
            fields = dict(re.findall(r"([a-z]+)(\d+)", line.split("skmem:(", 1)[1].split(")", 1)[0]))
            found["sockets"] += 1
            found["drops"] += int(fields.get("d", 0))
            found["receive_buffer"] = max(found["receive_buffer"], int(fields.get("rb", 0)))
            found["send_buffer"] = max(found["send_buffer"], int(fields.get("tb", 0)))
            owned = False
    return found


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


def start(name: str, port: int, workdir: Path, metrics_port: int | None = None) -> ChildProcess:
    if name == "coturn":
        return start_coturn(port, workdir)
    return start_ours(port, workdir, native=name == "videoconf", metrics_port=metrics_port)


def read_batches(metrics_port: int) -> dict[str, float | None]:
    """Datagrams per read of our server's routed path, by socket (from its /metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values: dict[tuple[str, str], float] = {}
    for name, kind, value in re.findall(r'^videoconf_turn_socket_(reads|read_datagrams)_total\{socket="(\w+)"\} (\S+)$', text, re.M):
        values[(name, kind)] = float(value)
    return {
        kind: round(values[("read_datagrams", kind)] / values[("reads", kind)], 2) if values.get(("reads", kind)) else None
        for kind in ("listener", "relay")
    }


def trial(name: str, args: argparse.Namespace, peer_port: int) -> dict[str, Any]:
    port = free_port(socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory(prefix=f"turnbench-{name}-") as tmp:
        workdir = Path(tmp)
        metrics_port = None if name == "coturn" else free_port()
        server = start(name, port, workdir, metrics_port)
        batches = None
        try:
            server.start(lambda: stun_answers(port), 15, f"the {name} TURN server")
            time.sleep(0.5)
            udp_before = udp_counters()
            before, started = cpu_seconds(server.pid), time.monotonic()
            load = run_load(port, peer_port, args)
            after, elapsed = cpu_seconds(server.pid), time.monotonic() - started
            udp_after = udp_counters()
            sockets = socket_memory(server.pid)
            if metrics_port is not None:
                batches = read_batches(metrics_port)
        finally:
            server.stop(timeout=10)
    relayed = load["sent"] + load["received"]
    cpu = after - before
    machine = {name: udp_after[name] - udp_before[name] for name in ("RcvbufErrors", "SndbufErrors", "InErrors")}
    return {
        **load,
        "loss_ratio": round(load["lost"] / load["sent"], 5) if load["sent"] else None,
        "relayed_packets": relayed,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(elapsed, 3),
        "cpu_us_per_packet": round(cpu / relayed * 1e6, 3) if relayed else None,
        "packets_per_cpu_second": round(relayed / cpu) if cpu else None,
        "packets_per_second": round(relayed / elapsed),
        # datagrams per read of the routed path (ours only): how much each wake-up batches
        "datagrams_per_read": batches,
        "drops": {
            # the kernel's per-socket drop counter over the server's sockets still open at the end
            # (relay sockets of allocations already freed are not counted here)
            "server_sockets": sockets["drops"],
            "server_buffers": {"receive": sockets["receive_buffer"], "send": sockets["send_buffer"], "sockets": sockets["sockets"]},
            "machine_receive_buffer_errors": machine["RcvbufErrors"],
            "machine_send_buffer_errors": machine["SndbufErrors"],
            # what the machine dropped for full receive buffers beyond the server's sockets: the
            # generator's and the peer's (turnutils), or relay sockets already closed
            "elsewhere": max(0, machine["RcvbufErrors"] - sockets["drops"]),
        },
    }


def search(servers: list[str], peer_port: int, mode: str) -> dict[str, Any]:
    """The offered load rises step by step through each server (alternating within a step); a
    server's knee is the first step with more than LOSS_THRESHOLD of its messages lost."""
    steps: list[dict[str, Any]] = []
    knee: dict[str, Any] = {name: None for name in servers}
    for index, (processes, clients) in enumerate(STEPS):
        load = argparse.Namespace(processes=processes, clients=clients, messages=500, interval=1, mode=mode)
        step: dict[str, Any] = {"processes": processes, "clients": processes * clients,
                                "offered_messages_per_second": processes * clients * 1000, "servers": {}}
        for name in servers if index % 2 == 0 else list(reversed(servers)):
            result = trial(name, load, peer_port)
            step["servers"][name] = {key: result[key] for key in ("sent", "lost", "loss_ratio", "packets_per_second", "cpu_us_per_packet", "drops")}
            print(f"step {index + 1} ({processes} x {clients}) {name}: sent {result['sent']} lost {result['lost']} "
                  f"at {result['packets_per_second']} pkt/s, drops {result['drops']}", flush=True)
            if knee[name] is None and (result["loss_ratio"] or 0) > LOSS_THRESHOLD:
                knee[name] = {"step": index + 1, "relayed_packets_per_second": result["packets_per_second"],
                              "offered_messages_per_second": step["offered_messages_per_second"]}
        steps.append(step)
    reached = {name: max(step["servers"][name]["packets_per_second"] for step in steps) for name in servers}
    return {"steps": steps, "loss_threshold": LOSS_THRESHOLD, "starts_losing": knee, "highest_rate_reached": reached}


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
            "sent": sum(r.get("sent") or 0 for r in trials),
            "server_socket_drops": sum(r["drops"]["server_sockets"] for r in trials if "drops" in r),
            "setup_cpu_seconds": median_of(trials, "setup_cpu_seconds"),
            "cpu_us_per_packet_once_set_up": once_set_up(trials),
        }
        for name, trials in runs.items()
    }


def once_set_up(trials: list[dict[str, Any]]) -> float | None:
    """The median over trials of CPU per relayed packet after the allocations' own cost (each
    trial's load minus the setup run that followed it)."""
    costs = [(r["cpu_seconds"] - r["setup_cpu_seconds"]) / r["relayed_packets"] * 1e6
             for r in trials if r.get("setup_cpu_seconds") is not None and r.get("relayed_packets")]
    value = median(costs, None)
    return None if value is None else round(value, 3)


def cost_ratio(summary: dict[str, dict[str, Any]], name: str = "videoconf") -> float | None:
    """A server's CPU per relayed packet over coturn's, when both were measured."""
    ours, theirs = (summary.get(key, {}).get("cpu_us_per_packet") for key in (name, "coturn"))
    return round(ours / theirs, 2) if ours and theirs else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=1, help="ms between messages of one client")
    parser.add_argument("--processes", type=int, default=4, help="turnutils_uclient processes at once")
    parser.add_argument("--mode", choices=["channel", "send"], default="channel")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--no-search", action="store_true", help="skip the step search for the load where loss starts")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "turn.json")
    args = parser.parse_args()
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer", "taskset", "ss"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is missing (apt-get install coturn util-linux iproute2)")

    peer_port = free_port(socket.SOCK_DGRAM)
    peer = ChildProcess(["taskset", "-c", "0", "turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)], output=subprocess.DEVNULL)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.servers}
    searched = None
    try:
        peer.start(lambda: udp_answers(peer_port, b"ping", b"ping".__eq__), 10, "turnutils_peer")
        setup_load = argparse.Namespace(**{**vars(args), "messages": 1})
        for index in range(args.trials):
            order = args.servers if index % 2 == 0 else list(reversed(args.servers))
            for name in order:
                result = trial(name, args, peer_port)
                setup = trial(name, setup_load, peer_port)
                result["setup_cpu_seconds"] = setup["cpu_seconds"]
                runs[name].append(result)
                print(f"trial {index + 1} {name}: {result}", flush=True)
        if not args.no_search:
            searched = search(args.servers, peer_port, args.mode)
    finally:
        peer.kill()

    summary = summarize(runs)
    ratio = cost_ratio(summary)
    theirs_set_up = summary.get("coturn", {}).get("cpu_us_per_packet_once_set_up")
    ours_set_up = summary.get("videoconf", {}).get("cpu_us_per_packet_once_set_up")
    ratio_set_up = round(ours_set_up / theirs_set_up, 2) if ours_set_up and theirs_set_up else None
    ours = summary.get("videoconf", {})
    aims = {"ratio_at_most": 1.0, "packets_per_cpu_second_at_least": 100_000}
    met = {
        "cpu_ratio": ratio is not None and ratio <= aims["ratio_at_most"],
        "packets_per_cpu_second": (ours.get("packets_per_cpu_second") or 0) >= aims["packets_per_cpu_second_at_least"],
    }
    if searched is not None and "coturn" in searched["starts_losing"] and "videoconf" in searched["starts_losing"]:
        theirs_knee, ours_knee = searched["starts_losing"]["coturn"], searched["starts_losing"]["videoconf"]
        # at least coturn's: we lose no earlier than coturn (no loss at all counts as the highest)
        met["loss"] = ours_knee is None or (theirs_knee is not None and ours_knee["step"] >= theirs_knee["step"])
    report = {
        "benchmark": "turn",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load": {"mode": args.mode, "processes": args.processes, "clients": args.clients, "messages": args.messages, "interval_ms": args.interval,
                 "payload_bytes": 100, "trials": args.trials},
        "summary": summary,
        "cpu_per_packet_ratio_vs_coturn": ratio,
        "once_set_up_ratio_vs_coturn": ratio_set_up,
        "python_path_ratio_vs_coturn": cost_ratio(summary, "videoconf-python"),
        "aims": aims,
        "met": met,
        "search": searched,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"summary": summary, "ratio": ratio, "met": met,
                      "starts_losing": searched and searched["starts_losing"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
