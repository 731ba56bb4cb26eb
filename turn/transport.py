"""Sockets for the TURN server: UDP, TCP and TLS listeners and UDP relay sockets.

UDP sockets (listeners and relays) are read with ``loop.add_reader`` and drained by the routed
path (``turn.fastpath``: in C with ``recvmmsg`` and ``sendmmsg`` where it was built), which relays
routed ChannelData itself and hands everything else to the server; datagrams are written with
non-blocking system calls, and one that cannot be sent at once is dropped, as UDP would.  This
avoids asyncio's per-datagram transport machinery, which is most of the cost of relaying in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from turn import fastpath
from turn.auth import Credentials
from turn.config import TurnSettings
from turn.fastpath import Implementation, bucket_size
from turn.peers import PeerPolicy, networks
from turn.server import FAMILY_IPV4, FAMILY_IPV6, Client, NoRelay, Stats, TurnServer

log = logging.getLogger(__name__)

# Socket buffers asked for (the kernel caps them at net.core.rmem_max and wmem_max unless the
# process may force them; the TURN server's log says what it got).
SOCKET_BUFFER = 4 * 1024 * 1024
MAX_STREAM_BUFFER = 4 * 65536
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # Linux: set DF on every datagram


SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32  # Linux: beyond rmem_max and wmem_max, with CAP_NET_ADMIN


def _udp_socket(host: str, port: int, buffer: int = SOCKET_BUFFER) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, buffer)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, plain, buffer)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpRelay:
    """One allocation's relay socket: its route (``turn.fastpath``) relays datagrams of routed
    peers to a UDP client and hands the rest to ``on_data`` (the server's slow path)."""

    __slots__ = ("loop", "sock", "address", "on_data", "stats", "route", "clock", "_send")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[str, int],
                 on_data: Callable[[bytes, tuple], None], stats: Stats, route: Any, clock: Callable[[], float]) -> None:
        self.loop = loop
        self.sock = sock
        self.address = address
        self.on_data = on_data
        self.stats = stats
        self.route = route
        self.clock = clock
        self._send = sock.sendto
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            rest = self.route.drain(self.clock())
            for data, addr in rest:
                self.on_data(data, addr)
        except Exception:
            log.exception("TURN relay %s: failed to relay a datagram", self.address)

    def routes(self, client: Client, channels: list[tuple[int, tuple[str, int], float]]) -> None:
        """What the server decided this allocation's route may relay by itself (UDP clients only)."""
        route = self.route
        route.clear()
        if client.path is None:
            route.detach()
            return
        if not route.attached:
            route.attach(client.path, client.addr)
        for number, peer, until in channels:
            route.channel(number, peer, until)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._send(data, addr)
        except OSError:
            self.stats.drop("send_failed")

    def close(self) -> None:
        self.route.detach()
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class RelayPool:
    """Opens a relay socket per allocation on the configured addresses and port range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: TurnSettings, stats: Stats,
                 implementation: Implementation = fastpath.PYTHON, clock: Callable[[], float] | None = None) -> None:
        self.loop = loop
        self.stats = stats
        self.implementation = implementation
        self.clock = clock or loop.time
        self.bucket = bucket_size(settings.max_bps)
        self.buffer = settings.socket_buffer
        self.hosts: dict[int, str] = {}
        relay_ip = settings.relay_ip or settings.listen
        if ":" not in relay_ip:
            self.hosts[FAMILY_IPV4] = relay_ip
        if settings.relay_ipv6:
            self.hosts[FAMILY_IPV6] = settings.relay_ipv6
        self.external = settings.external_ip
        self.ports = settings.relay_ports

    def _candidate_ports(self, even: bool) -> Iterator[int]:
        """Ports to try, drawn one at a time (the first is nearly always free)."""
        if self.ports is None:
            yield from [0] * 20
            return
        low, high = self.ports
        for _ in range(min(50, high - low + 1)):
            port = random.randint(low, high)
            yield port & ~1 if even and port & ~1 >= low else port

    def __call__(self, family: int, even_port: bool, dont_fragment: bool, on_data: Callable[[bytes, tuple], None]) -> UdpRelay:
        host = self.hosts.get(family)
        if host is None:
            raise NoRelay("address family not configured", code=440)
        for port in self._candidate_ports(even_port):
            try:
                sock = _udp_socket(host, port, self.buffer)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise NoRelay(str(exc), code=508) from exc
            bound = sock.getsockname()[1]
            if even_port and bound & 1:
                sock.close()
                continue
            if dont_fragment and family == FAMILY_IPV4:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            announced = self.external if self.external and family == FAMILY_IPV4 else host
            route = self.implementation.Route(sock, *self.bucket, self.clock())
            return UdpRelay(self.loop, sock, (announced, bound), on_data, self.stats, route, self.clock)
        raise NoRelay("no free relay port", code=508)


class UdpListener:
    """The UDP port clients talk to: its path relays routed ChannelData, the server gets the rest."""

    def __init__(self, server: TurnServer, loop: asyncio.AbstractEventLoop, host: str, port: int,
                 implementation: Implementation = fastpath.PYTHON, buffer: int = SOCKET_BUFFER) -> None:
        self.server = server
        self.loop = loop
        self.sock = _udp_socket(host, port, buffer)
        self.address = self.sock.getsockname()[:2]
        self._sendto = self.sock.sendto
        self.path = implementation.Path(self.sock)
        if server is not None:
            server.stats.paths.append(self.path)
        loop.add_reader(self.sock.fileno(), self._readable)

    def buffers(self) -> tuple[int, int]:
        """The receive and send buffer sizes the kernel granted (bytes)."""
        return (self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))

    def _send(self, data: bytes, addr: tuple) -> None:
        try:
            self._sendto(data, addr)
        except OSError:
            self.server.stats.drop("send_failed")

    def _readable(self) -> None:
        server = self.server
        try:
            for data, addr in self.path.drain(server.clock()):
                if len(data) < 4:
                    server.stats.drop("malformed")
                    continue
                first = data[0]
                if 0x40 <= first < 0x80:
                    server.channel_data(data, (self, addr))
                elif first < 0x40:
                    server.handle_stun(data, Client((self, addr), addr, lambda d, a=addr: self._send(d, a), False, self.path))
                else:
                    server.stats.drop("malformed")
        except Exception:
            log.exception("TURN UDP listener: failed to handle a datagram")

    def close(self) -> None:
        if self.server is not None and self.path in self.server.stats.paths:
            self.server.stats.paths.remove(self.path)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS client: STUN messages and (padded) ChannelData framed on a byte stream."""

    def __init__(self, server: TurnServer, connections: set[StreamConnection]) -> None:
        self.server = server
        self.connections = connections
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's stream transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.client = Client(self, peer, self._send, True)

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_STREAM_BUFFER:
            self.server.stats.drop("send_buffer_full")
            return
        transport.write(data)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        server = self.server
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            first = buffer[offset]
            length = (buffer[offset + 2] << 8) | buffer[offset + 3]
            if first < 0x40:
                total = 20 + length
            elif first < 0x80:
                total = 4 + length + (-length & 3)
            else:
                server.stats.drop("malformed")
                self._abort()
                return
            if size - offset < total:
                break
            frame = bytes(buffer[offset: offset + total])
            offset += total
            if first < 0x40:
                server.handle_stun(frame, self.client)  # type: ignore[arg-type]
            else:
                server.channel_data(frame, self)
            if self.transport is None:
                return
        if offset:
            del buffer[:offset]

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.connections.discard(self)
        self.server.client_gone(self)


def buffer_shortfall(granted: tuple[int, int], asked: int) -> str | None:
    """What to tell the operator when the kernel granted the UDP sockets less buffer than asked
    (Linux reports twice what it reserves for the payload; a process without CAP_NET_ADMIN is
    capped at net.core.rmem_max and wmem_max), else None."""
    receive, send = granted
    if receive >= asked and send >= asked:
        return None
    return (f"the kernel granted UDP buffers of {receive} (receive) and {send} (send) bytes, less than turn.socket_buffer "
            f"({asked}): bursts may be dropped; raise them with `sysctl -w net.core.rmem_max={asked} net.core.wmem_max={asked}` "
            "on the host, or run the TURN server with CAP_NET_ADMIN")


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def peer_policy(settings: TurnSettings, sfu_addresses: list[str] | None = None) -> PeerPolicy:
    only = settings.only_peers
    if settings.sfu_only:
        only = [*(only or []), *(sfu_addresses or [])]
    return PeerPolicy(
        allow=networks(settings.allow_peers),
        deny=networks(settings.deny_peers),
        only=networks(only) if only is not None else None,
        allow_loopback=settings.allow_loopback,
    )


class TurnService:
    """The TURN server on the running event loop: listeners, relays and the expiry sweep."""

    def __init__(self, settings: TurnSettings, *, sfu_addresses: list[str] | None = None,
                 clock: Callable[[], float] | None = None, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: the context of the TLS listener, when the caller keeps it (and reloads its
        certificate); by default one is made from ``tls_cert`` and ``tls_key``."""
        self.settings = settings
        self.tls_context = tls
        self.sfu_addresses = sfu_addresses
        self.clock = clock
        self.server: TurnServer | None = None
        self.udp: UdpListener | None = None
        self.tcp: asyncio.Server | None = None
        self.tls: asyncio.Server | None = None
        self._sweep: asyncio.Task[None] | None = None
        self.connections: set[StreamConnection] = set()

    @property
    def udp_address(self) -> tuple[str, int] | None:
        return self.udp.address if self.udp else None

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self.tcp.sockets[0].getsockname()[:2] if self.tcp else None

    @property
    def tls_address(self) -> tuple[str, int] | None:
        return self.tls.sockets[0].getsockname()[:2] if self.tls else None

    async def start(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        credentials = Credentials(
            settings.realm,
            users={name: value.get_secret_value() for name, value in settings.users.items()},
            auth_secrets=[value.get_secret_value() for value in settings.secrets],
        )
        if not settings.users and not settings.secrets:
            log.warning("TURN: no users and no auth secrets are configured; every allocation will be refused")
        stats = Stats()
        clock = self.clock or loop.time
        implementation = fastpath.choose(settings.native_relay)
        server = TurnServer(settings, credentials, RelayPool(loop, settings, stats, implementation, clock),
                            policy=peer_policy(settings, self.sfu_addresses), clock=clock, stats=stats)
        self.server = server
        try:
            if settings.udp_port is not None:
                self.udp = UdpListener(server, loop, settings.listen, settings.udp_port, implementation, settings.socket_buffer)
                granted = self.udp.buffers()
                log.info("TURN UDP relay path: %s; listener buffers (receive, send): %s bytes", implementation.name, granted)
                shortfall = buffer_shortfall(granted, settings.socket_buffer)
                if shortfall:
                    log.warning("TURN: %s", shortfall)
            if settings.tcp_port is not None:
                self.tcp = await loop.create_server(lambda: StreamConnection(server, self.connections), settings.listen, settings.tcp_port)
            if settings.tls_cert is not None and settings.tls_key is not None and settings.tls_port is not None:
                context = self.tls_context or tls_context(settings.tls_cert, settings.tls_key)
                self.tls = await loop.create_server(lambda: StreamConnection(server, self.connections), settings.listen, settings.tls_port, ssl=context)
        except BaseException:
            await self.stop()
            raise
        self._sweep = loop.create_task(self._expire())
        log.info("TURN server listening: udp %s, tcp %s, tls %s", self.udp_address, self.tcp_address, self.tls_address)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.server.expire()  # type: ignore[union-attr]
            except Exception:
                log.exception("TURN: expiry sweep failed")

    async def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
            self._sweep = None
        for server in (self.tcp, self.tls):
            if server is not None:
                server.close()
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        for connection in list(self.connections):
            connection._abort()
        if self.server is not None:
            self.server.close()
        for server in (self.tcp, self.tls):
            if server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)
        self.tcp = self.tls = None

    def describe(self) -> dict[str, Any]:
        return {"udp": self.udp_address, "tcp": self.tcp_address, "tls": self.tls_address}


__all__ = ["TurnService", "RelayPool", "UdpListener", "StreamConnection", "peer_policy"]
