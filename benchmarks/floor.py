"""The least CPU one forwarded copy can cost on this machine: what is left of forwarding when a
server does nothing but protect each copy with SRTP and write the copies of a packet together.

A sender process, pinned to the server's core, wakes ``rate`` times a second (as an SFU wakes for
each incoming packet), protects ``copies`` copies of a 1,200-byte RTP packet with libsrtp's
AES-128-GCM (what aiortc negotiates), each with a session of its own, and writes them with the
native helper's one ``sendmmsg`` (sfu/_fastsend.c; without it, Python's ``sendto`` per copy).
The copies go to as many UDP sockets of the caller's process, which reads them as subscribers
would.  The sender's CPU seconds over the copies it wrote is the floor of a server whose loop is
Python (as this SFU's is): it cannot forward a copy for less, nor carry more than
``10**6 / floor`` copies a second on one core.  The sender's own loop is part of it: a wake-up
costs a Python loop about twice what it costs one in C, which matters at one copy per packet
and hardly at hundreds.

    python -m benchmarks.floor [--copies 50] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from typing import Any

SIZE = 1200


def send(ports: list[int], seconds: float, rate: int, core: int | None) -> dict[str, Any]:
    """The sender (its own process): ``rate`` packets a second for ``seconds``, a copy of each to
    every one of 127.0.0.1's ``ports``; its CPU per copy written."""
    from pylibsrtp import Policy, Session

    from sfu import fastsend
    from sfu.fastsend import PROTECT, pack_address, session_pointer

    if core is not None and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})
    key = os.urandom(28)
    sessions = [
        Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM))
        for _ in ports
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    copies = len(ports)
    addresses = [("127.0.0.1", port) for port in ports]
    packed = [pack_address(socket.AF_INET, *a) for a in addresses]
    pointers = [session_pointer(s) for s in sessions]
    body = os.urandom(SIZE - 12)
    native = fastsend.NATIVE
    packets = int(seconds * rate)
    written = 0
    cpu0, start = time.process_time(), time.monotonic()
    for index in range(packets):
        packet = b"\x80\x60" + (index & 0xFFFF).to_bytes(2, "big") + (index * 3000).to_bytes(4, "big") + b"\x00\x00\x00\x01" + body
        if native is not None:
            result = native.send(PROTECT, [(sock.fileno(), p, a, packet) for p, a in zip(pointers, packed, strict=True)])
            written += result if result.__class__ is int else sum(1 for r in result if r is None)
        else:
            for session, address in zip(sessions, addresses, strict=True):
                try:
                    sock.sendto(session.protect(packet), address)
                    written += 1
                except BlockingIOError:
                    pass
        delay = start + (index + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    cpu = time.process_time() - cpu0
    return {
        "copies_per_packet": copies, "packets": packets, "packets_per_second": rate, "copies_written": written, "cpu_seconds": round(cpu, 4),
        "us_per_copy": round(cpu * 1e6 / written, 2) if written else None,
        "copies_per_core_second": round(written / cpu) if cpu else None,
        "path": "native sendmmsg" if native is not None else "python sendto",
    }


class _Count(asyncio.DatagramProtocol):
    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.counts[0] += 1
        self.counts[1] = min(self.counts[1], len(data))


async def copy_floor(copies: int, seconds: float = 4.0, rate: int = 160, core: int | None = 0) -> dict[str, Any]:
    """The floor at ``copies`` copies per packet: the sender in a process on ``core``, the
    receiving sockets in this process (its event loop reads them meanwhile)."""
    loop = asyncio.get_running_loop()
    counts = [0, 1 << 16]  # datagrams received, the smallest one's size
    transports = []
    try:
        for _ in range(copies):
            transport, _ = await loop.create_datagram_endpoint(lambda: _Count(counts), local_addr=("127.0.0.1", 0))
            transports.append(transport)
        ports = ",".join(str(t.get_extra_info("sockname")[1]) for t in transports)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.floor", "--send", "--copies", str(copies), "--seconds", str(seconds),
            "--rate", str(rate), "--ports", ports, *(["--core", str(core)] if core is not None else []),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), seconds + 60)
        finally:
            if process.returncode is None:  # timed out or cancelled: the sender stops here too
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"the floor's sender failed with status {process.returncode}")
        result = json.loads(out)
        await asyncio.sleep(0.2)
        result["copies_received"], result["smallest_received"] = counts[0], counts[1] if counts[0] else None
        return result
    finally:
        for t in transports:
            t.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rate", type=int, default=160, help="packets a second (each is copied --copies times)")
    parser.add_argument("--core", type=int, default=None)
    parser.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.copies <= 2000 or not 0 < args.seconds <= 60 or not 1 <= args.rate <= 2000:
        parser.error("--copies 1..2000, --seconds up to 60, --rate 1..2000")
    if args.send:
        ports = [int(p) for p in args.ports.split(",") if p.strip().isdigit()]
        if not ports or len(ports) > 2000:
            parser.error("--send needs --ports")
        print(json.dumps(send(ports, args.seconds, args.rate, args.core)))
        return
    print(json.dumps(asyncio.run(copy_floor(args.copies, args.seconds, args.rate, args.core)), indent=2))


if __name__ == "__main__":
    main()
