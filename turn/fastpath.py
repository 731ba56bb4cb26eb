"""Routed ChannelData: the TURN relay's data plane over UDP, in C where it was built.

``turn.server`` decides; what it decided for a channel over UDP (its number, its peer, and the time
until which the channel, its permission and its allocation all stand) is installed as a route, and
datagrams that match a route are relayed without going through the server's Python:

- ``Path(listener socket)``: ``drain(now)`` reads what is waiting on the listener, sends each routed
  ChannelData to its peer from the allocation's relay socket, and returns the other datagrams as
  ``[(data, addr)]`` for the server (STUN, Send indications, unknown channels, expired routes).
- ``Route(relay socket, rate, burst, now)``: one allocation.  ``drain(now)`` reads the relay socket,
  frames each datagram of a routed peer as ChannelData and writes it to the client through the
  listener, and returns the rest (Data indications, peers without a route).  ``take(size, now)`` is
  the allocation's bandwidth bucket, shared by both directions and by the server's slow path.

``NATIVE`` (``turn._relay``, turn/_relay.c) reads up to 64 datagrams with one ``recvmmsg`` and
writes the datagrams for clients with one ``sendmmsg``; ``Python`` is the fallback where the module
did not build, or where ``turn.native_relay`` is false, and does the same with ``recvfrom`` and
``sendto``.  Both are tested by the same tests (tests/turn/test_fastpath.py), and the server's
tests run on both.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

try:
    from turn import _relay
except ImportError:  # not built (no compiler when installed): the Python path
    _relay = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

BATCH = 64  # datagrams read per wake-up, at most
MAX_DATAGRAM = 65535
MAX_CHANNELS = 16  # routed per allocation; more are relayed by the server's Python
_HEADER = struct.Struct("!HH")
_SOCKADDR_IN = struct.Struct("=H")


def pack_address(addr: tuple) -> bytes:
    """``(host, port)`` as a packed ``struct sockaddr_in`` or ``sockaddr_in6`` (the C module's form)."""
    host, port = addr[0], addr[1]
    if ":" in host:
        return (_SOCKADDR_IN.pack(socket.AF_INET6) + struct.pack("!HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", 0))
    return _SOCKADDR_IN.pack(socket.AF_INET) + struct.pack("!H", port) + socket.inet_pton(socket.AF_INET, host) + bytes(8)


class Bucket:
    """A token bucket of bytes: ``rate`` bytes/s (0: no limit) up to ``burst``."""

    __slots__ = ("rate", "burst", "tokens", "refilled")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.refilled = now

    def take(self, size: float, now: float) -> bool:
        """Whether the bucket lets ``size`` more bytes through now."""
        if not self.rate:
            return True
        tokens = self.tokens + (now - self.refilled) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.refilled = now
        if tokens < size:
            self.tokens = tokens
            return False
        self.tokens = tokens - size
        return True


def bucket_size(max_bps: int) -> tuple[float, float]:
    """The bucket of an allocation relaying ``max_bps`` bits/s: (bytes/s, burst bytes)."""
    rate = max_bps / 8.0
    return rate, max(rate, 65536.0)


def _key(addr: tuple) -> tuple[str, int]:
    return addr if len(addr) == 2 else (addr[0], addr[1])  # IPv6 addresses come with flow info and scope


class _Counters:
    __slots__ = ("to_peer_packets", "to_peer_bytes", "to_client_packets", "to_client_bytes",
                 "bandwidth", "send_failed", "receive_error",
                 "listener_reads", "listener_datagrams", "relay_reads", "relay_datagrams")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)


def _receive(sock: socket.socket, budget: int) -> tuple[list[tuple[bytes, Any]], int, bool]:
    """Up to ``budget`` datagrams waiting on ``sock``; the next budget; whether a read failed.

    The budget adapts: reading until EAGAIN costs a failed system call and an exception per
    wake-up, a third of the work at one datagram per wake-up; so a reader that found its socket
    drained tries fewer next time, and one that read its whole budget twice as many."""
    recvfrom = sock.recvfrom
    datagrams: list[tuple[bytes, Any]] = []
    try:
        for _ in range(budget):
            datagrams.append(recvfrom(MAX_DATAGRAM))
    except (BlockingIOError, InterruptedError):
        return datagrams, max(1, len(datagrams)), False
    except OSError:
        return datagrams, max(1, len(datagrams)), True
    return datagrams, min(BATCH, budget * 2), False


class PyPath:
    """One UDP listener's routed ChannelData, in Python."""

    __slots__ = ("sock", "fd", "clients", "counters_", "budget")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.clients: dict[tuple[str, int], PyRoute] = {}
        self.counters_ = _Counters()
        self.budget = 1

    def drain(self, now: float) -> list[tuple[bytes, tuple]]:
        datagrams, self.budget, failed = _receive(self.sock, self.budget)
        clients = self.clients
        counters = self.counters_
        counters.receive_error += failed
        if datagrams:
            counters.listener_reads += 1
            counters.listener_datagrams += len(datagrams)
        rest: list[tuple[bytes, tuple]] = []
        for data, addr in datagrams:
            route = clients.get(_key(addr)) if len(data) >= 4 and 0x40 <= data[0] < 0x80 else None
            if route is None:
                rest.append((data, addr))
                continue
            number, size = _HEADER.unpack_from(data)
            channel = route.routes.get(number)
            if channel is None or channel[1] < now or size + 4 > len(data):
                rest.append((data, addr))
                continue
            if not route.take(size, now):
                counters.bandwidth += 1
                continue
            try:
                route.sock.sendto(data[4:4 + size], channel[0])
            except OSError:
                counters.send_failed += 1
                continue
            counters.to_peer_packets += 1
            counters.to_peer_bytes += size
        return rest

    def counters(self) -> dict[str, int]:
        counters = self.counters_
        values = {name: getattr(counters, name) for name in _Counters.__slots__}
        values["routes"] = len(self.clients)
        return values


class PyRoute(Bucket):
    """One allocation's relay socket, routed channels and bandwidth bucket, in Python."""

    __slots__ = ("sock", "fd", "path", "client", "routes", "peers", "budget")

    def __init__(self, sock: socket.socket, rate: float, burst: float, now: float) -> None:
        super().__init__(rate, burst, now)
        self.sock = sock
        self.fd = sock.fileno()
        self.path: PyPath | None = None
        self.client: tuple[str, int] | None = None
        self.routes: dict[int, tuple[tuple[str, int], float]] = {}  # number -> (peer, until)
        self.peers: dict[tuple[str, int], int] = {}  # peer -> number
        self.budget = 1

    @property
    def attached(self) -> bool:
        return self.path is not None

    @property
    def channels(self) -> int:
        return len(self.routes)

    def attach(self, path: PyPath, addr: tuple) -> None:
        client = _key(addr)
        other = path.clients.get(client)
        if other is not None and other is not self:
            raise ValueError("another route has this client address on this path")
        self.detach()
        self.path, self.client = path, client
        path.clients[client] = self

    def detach(self) -> None:
        if self.path is not None and self.path.clients.get(self.client) is self:  # type: ignore[arg-type]
            del self.path.clients[self.client]  # type: ignore[arg-type]
        self.path = self.client = None

    def channel(self, number: int, peer: tuple, until: float) -> bool:
        if not 0x4000 <= number <= 0x7FFF:
            raise ValueError("channel numbers are 0x4000-0x7FFF")
        if number not in self.routes and len(self.routes) >= MAX_CHANNELS:
            return False
        old = self.routes.get(number)
        if old is not None:
            self.peers.pop(old[0], None)
        self.routes[number] = (_key(peer), until)
        self.peers[_key(peer)] = number
        return True

    def unchannel(self, number: int) -> bool:
        old = self.routes.pop(number, None)
        if old is None:
            return False
        self.peers.pop(old[0], None)
        return True

    def clear(self) -> None:
        self.routes.clear()
        self.peers.clear()

    def drain(self, now: float) -> list[tuple[bytes, tuple]]:
        datagrams, self.budget, failed = _receive(self.sock, self.budget)
        path = self.path
        if path is None:  # no UDP client: the server handles everything
            return datagrams
        counters = path.counters_
        counters.receive_error += failed
        if datagrams:
            counters.relay_reads += 1
            counters.relay_datagrams += len(datagrams)
        rest: list[tuple[bytes, tuple]] = []
        for data, addr in datagrams:
            number = self.peers.get(_key(addr))
            if number is None or self.routes[number][1] < now:
                rest.append((data, addr))
                continue
            size = len(data)
            if not self.take(size, now):
                counters.bandwidth += 1
                continue
            try:
                path.sock.sendto(_HEADER.pack(number, size) + data, self.client)
            except OSError:
                counters.send_failed += 1
                continue
            counters.to_client_packets += 1
            counters.to_client_bytes += size
        return rest

if _relay is not None:

    class NativePath(_relay.Path):  # type: ignore[misc,name-defined]
        __slots__ = ("sock",)

        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock.fileno())
            self.sock = sock

    class NativeRoute(_relay.Route):  # type: ignore[misc,name-defined]
        __slots__ = ("sock",)

        def __init__(self, sock: socket.socket, rate: float, burst: float, now: float) -> None:
            super().__init__(sock.fileno(), rate, burst, now)
            self.sock = sock

        def attach(self, path: NativePath, addr: tuple) -> None:  # type: ignore[override]
            super().attach(path, pack_address(addr))

        def channel(self, number: int, peer: tuple, until: float) -> bool:  # type: ignore[override]
            return super().channel(number, pack_address(peer), until)


class Implementation:
    """A pair of Path and Route classes."""

    def __init__(self, name: str, path: Callable[[socket.socket], Any], route: Callable[..., Any]) -> None:
        self.name = name
        self.Path = path
        self.Route = route

    def __repr__(self) -> str:
        return f"<relay path {self.name}>"


PYTHON = Implementation("python", PyPath, PyRoute)
NATIVE: Implementation | None = Implementation("native", NativePath, NativeRoute) if _relay is not None else None


def choose(native: bool) -> Implementation:
    """The ``turn.native_relay`` setting: the C module where it was built, or Python."""
    if native and NATIVE is None:
        log.warning("turn.native_relay is on but turn/_relay.c was not built (gcc and the Python headers at install): relaying from Python")
    return NATIVE if native and NATIVE is not None else PYTHON


__all__ = ["Bucket", "Implementation", "NATIVE", "PYTHON", "PyPath", "PyRoute", "bucket_size", "choose", "pack_address"]
