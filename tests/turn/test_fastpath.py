"""Routed ChannelData (turn.fastpath): the C module and its Python fallback pass the same tests,
on real loopback sockets with the clock passed in."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turn import fastpath

NOW = 1000.0
IMPLEMENTATIONS = ["native", "python"]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request) -> fastpath.Implementation:
    if request.param == "native":
        if fastpath.NATIVE is None:
            pytest.fail("turn/_relay.c was not built: `pip install -e .` builds it (gcc and the Python headers)")
        return fastpath.NATIVE
    return fastpath.PYTHON


def udp(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


class Rig:
    """A listener with its path, one allocation's relay socket with its route, a client and a peer."""

    def __init__(self, impl: fastpath.Implementation, host: str = "127.0.0.1", rate: float = 0.0, burst: float = 65536.0) -> None:
        self.listener, self.relay, self.client, self.peer = udp(host), udp(host), udp(host), udp(host)
        self.path = impl.Path(self.listener)
        self.route = impl.Route(self.relay, rate, burst, NOW)

    @property
    def client_addr(self) -> tuple:
        return self.client.getsockname()[:2]

    @property
    def peer_addr(self) -> tuple:
        return self.peer.getsockname()[:2]

    def from_client(self, data: bytes, now: float = NOW) -> list:
        self.client.sendto(data, self.listener.getsockname())
        return self.drain(self.path, now)

    def from_peer(self, data: bytes, now: float = NOW) -> list:
        self.peer.sendto(data, self.relay.getsockname())
        return self.drain(self.route, now)

    @staticmethod
    def drain(reader, now: float) -> list:
        """Everything the reader hands back, read until its socket is empty (loopback delivers
        before sendto returns)."""
        rest = []
        for _ in range(10):
            rest += reader.drain(now)
        return rest

    def close(self) -> None:
        self.route.detach()
        for sock in (self.listener, self.relay, self.client, self.peer):
            sock.close()


@pytest.fixture
def rig(impl) -> Iterator[Rig]:
    rig = Rig(impl)
    rig.route.attach(rig.path, rig.client_addr)
    assert rig.route.channel(0x4001, rig.peer_addr, NOW + 10) is True
    try:
        yield rig
    finally:
        rig.close()


def received(sock: socket.socket) -> list[tuple[bytes, tuple]]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            data, addr = sock.recvfrom(65536)
            out.append((data, addr[:2]))
    return out


def test_routed_channel_data_reaches_the_peer_from_the_relay_and_comes_back_framed(rig):
    assert rig.from_client(b"\x40\x01\x00\x05hello") == []
    assert received(rig.peer) == [(b"hello", rig.relay.getsockname())]
    assert rig.from_peer(b"world!") == []
    assert received(rig.client) == [(b"\x40\x01\x00\x06world!", rig.listener.getsockname())]
    counters = rig.path.counters()
    assert (counters["to_peer_packets"], counters["to_peer_bytes"], counters["to_client_packets"], counters["to_client_bytes"]) == (1, 5, 1, 6)
    assert counters["routes"] == 1


def test_padding_after_the_declared_length_is_not_relayed(rig):
    assert rig.from_client(b"\x40\x01\x00\x03abc\x00") == []
    assert received(rig.peer) == [(b"abc", rig.relay.getsockname())]


@pytest.mark.parametrize("data", [
    b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # STUN
    b"\x40\x02\x00\x01x",  # a channel without a route
    b"\x40\x01\x00\x09abc",  # longer than the datagram
    b"\x40\x01",  # shorter than a header
    b"\xc0\x01\x00\x01x",  # neither STUN nor ChannelData
    b"",
])
def test_what_is_not_routed_is_handed_back_unchanged(rig, data):
    assert rig.from_client(data) == [(data, rig.client_addr)]
    assert received(rig.peer) == []
    assert rig.path.counters()["to_peer_packets"] == 0


def test_an_expired_route_is_handed_back_both_ways(rig):
    later = NOW + 10.5
    assert rig.from_client(b"\x40\x01\x00\x01x", now=later) == [(b"\x40\x01\x00\x01x", rig.client_addr)]
    assert rig.from_peer(b"y", now=later) == [(b"y", rig.peer_addr)]
    assert received(rig.peer) == received(rig.client) == []
    rig.route.channel(0x4001, rig.peer_addr, NOW + 20)  # the server refreshed it
    assert rig.from_client(b"\x40\x01\x00\x01x", now=later) == []
    assert len(received(rig.peer)) == 1


def test_other_clients_and_peers_are_handed_back(rig, impl):
    stranger = udp()
    try:
        stranger.sendto(b"\x40\x01\x00\x01x", rig.listener.getsockname())
        assert rig.drain(rig.path, NOW) == [(b"\x40\x01\x00\x01x", stranger.getsockname())]
        stranger.sendto(b"z", rig.relay.getsockname())
        assert rig.drain(rig.route, NOW) == [(b"z", stranger.getsockname())]
    finally:
        stranger.close()
    assert received(rig.peer) == received(rig.client) == []


def test_unchannel_clear_and_detach_stop_routing(rig):
    assert rig.route.unchannel(0x4001) is True and rig.route.unchannel(0x4001) is False
    assert rig.from_client(b"\x40\x01\x00\x01x") != []
    rig.route.channel(0x4001, rig.peer_addr, NOW + 10)
    rig.route.clear()
    assert rig.route.channels == 0 and rig.from_peer(b"y") != []
    rig.route.channel(0x4001, rig.peer_addr, NOW + 10)
    rig.route.detach()
    assert not rig.route.attached and rig.path.counters()["routes"] == 0
    assert rig.from_client(b"\x40\x01\x00\x01x") != [] and rig.from_peer(b"y") != []
    assert received(rig.peer) == received(rig.client) == []


def test_the_bucket_is_shared_by_both_directions_and_the_slow_path(impl):
    rig = Rig(impl, rate=1000.0, burst=1000.0)
    try:
        rig.route.attach(rig.path, rig.client_addr)
        rig.route.channel(0x4001, rig.peer_addr, NOW + 10)
        assert rig.from_client(b"\x40\x01\x01\x90" + bytes(400)) == []  # 400 of 1000
        assert rig.from_peer(bytes(400)) == []  # 800
        assert rig.route.take(150, NOW) is True  # 950: the server's slow path draws on it too
        assert rig.from_client(b"\x40\x01\x00\x64" + bytes(100)) == []  # dropped: 50 left
        assert rig.from_peer(bytes(100)) == []  # dropped
        assert rig.path.counters()["bandwidth"] == 2
        assert len(received(rig.peer)) == 1 and len(received(rig.client)) == 1
        assert rig.from_peer(bytes(100), now=NOW + 0.1) == []  # 100 bytes refilled in 0.1 s
        assert len(received(rig.client)) == 1
    finally:
        rig.close()


def test_a_burst_is_relayed_in_order(rig):
    for index in range(150):  # more than one batch
        rig.client.sendto(b"\x40\x01\x00\x02" + struct.pack("!H", index), rig.listener.getsockname())
        rig.peer.sendto(struct.pack("!H", index), rig.relay.getsockname())
    assert rig.drain(rig.path, NOW) == [] and rig.drain(rig.route, NOW) == []
    counters = rig.path.counters()
    # the reads that returned datagrams, and how many: at most 64 a read
    assert counters["listener_datagrams"] == counters["relay_datagrams"] == 150
    assert 3 <= counters["listener_reads"] <= 150 and 3 <= counters["relay_reads"] <= 150
    assert [data for data, _ in received(rig.peer)] == [struct.pack("!H", i) for i in range(150)]
    assert [data for data, _ in received(rig.client)] == [b"\x40\x01\x00\x02" + struct.pack("!H", i) for i in range(150)]


def test_channels_per_route_are_bounded_and_numbers_checked(impl):
    rig = Rig(impl)
    try:
        for index in range(fastpath.MAX_CHANNELS):
            assert rig.route.channel(0x4000 + index, ("127.0.0.1", 1000 + index), NOW + 1) is True
        assert rig.route.channel(0x5000, ("127.0.0.1", 999), NOW + 1) is False  # the server relays it itself
        assert rig.route.channel(0x4000, ("127.0.0.1", 998), NOW + 1) is True  # a known number is replaced
        assert rig.route.channels == fastpath.MAX_CHANNELS
        for bad in (0x3FFF, 0x8000):
            with pytest.raises(ValueError):
                rig.route.channel(bad, ("127.0.0.1", 1), NOW)
    finally:
        rig.close()


def test_one_client_address_has_one_route_per_path(impl):
    first, second = Rig(impl), Rig(impl)
    try:
        first.route.attach(first.path, first.client_addr)
        second.route.attach(first.path, ("127.0.0.1", first.client_addr[1] + 1))
        with pytest.raises(ValueError):
            second.route.attach(first.path, first.client_addr)
        first.route.attach(first.path, first.client_addr)  # again: no change
        assert first.path.counters()["routes"] == 2
    finally:
        first.close()
        second.close()


def test_ipv6(impl):
    try:
        rig = Rig(impl, host="::1")
    except OSError:
        pytest.fail("IPv6 loopback is not available on this machine")
    try:
        rig.route.attach(rig.path, rig.client_addr)
        rig.route.channel(0x4abc, rig.peer_addr, NOW + 1)
        assert rig.from_client(b"\x4a\xbc\x00\x02v6") == []
        assert received(rig.peer) == [(b"v6", rig.relay.getsockname()[:2])]
        assert rig.from_peer(b"six") == []
        assert received(rig.client) == [(b"\x4a\xbc\x00\x03six", rig.listener.getsockname()[:2])]
        rest = rig.from_client(b"\x00\x01\x00\x00")  # handed back with the address Python's recvfrom gives
        assert rest[0][0] == b"\x00\x01\x00\x00" and rest[0][1][:2] == rig.client_addr and len(rest[0][1]) == 4
    finally:
        rig.close()


def test_a_closed_socket_neither_raises_nor_relays(impl):
    rig = Rig(impl)
    rig.route.attach(rig.path, rig.client_addr)
    rig.route.channel(0x4001, rig.peer_addr, NOW + 1)
    rig.peer.sendto(b"late", rig.relay.getsockname())
    rig.listener.close()  # the client's side is gone: the write fails and is counted
    assert rig.drain(rig.route, NOW) == []
    assert rig.path.counters()["send_failed"] == 1
    rig.close()


def test_pack_address_is_the_kernels_sockaddr():
    sock = udp()
    try:
        packed = fastpath.pack_address(sock.getsockname())
        assert len(packed) == 16 and struct.unpack_from("=H", packed)[0] == socket.AF_INET
        assert struct.unpack_from("!H", packed, 2)[0] == sock.getsockname()[1] and packed[4:8] == b"\x7f\x00\x00\x01"
        assert len(fastpath.pack_address(("::1", 5))) == 28
    finally:
        sock.close()


# The C module against the Python path: the same datagrams, the same routes, the same outcome ---------

ROUTED_NUMBERS = (0x4001, 0x4002, 0x7FFF)

well_formed = st.builds(lambda number, payload: struct.pack("!HH", number, len(payload)) + payload,
                        st.sampled_from(ROUTED_NUMBERS), st.binary(max_size=120))
datagram = st.one_of(
    well_formed,
    well_formed,
    st.binary(max_size=120),
    st.builds(  # ChannelData with any declared length, on routed numbers and others
        lambda number, declared, payload: struct.pack("!HH", number, declared) + payload,
        st.sampled_from([*ROUTED_NUMBERS, 0x4003, 0x3FFF, 0x8000, 0xFFFF]),
        st.integers(0, 0xFFFF) | st.integers(0, 40),
        st.binary(max_size=40),
    ),
)
step = st.tuples(
    st.sampled_from(["client", "client", "stranger", "peer", "peer", "other_peer"]),  # who sends
    datagram,
    st.sampled_from([0.0, 0.0, 0.0, 0.01, 0.05, 0.5, 2.5]),  # how far the clock moves first
)


class Pair:
    """Both implementations side by side, with the same routes and the same senders' roles."""

    def __init__(self) -> None:
        self.rigs = {name: Rig(impl, rate=2000.0, burst=200.0) for name, impl in
                     (("native", fastpath.NATIVE), ("python", fastpath.PYTHON))}
        self.strangers = {name: udp() for name in self.rigs}
        self.other_peers = {name: udp() for name in self.rigs}
        for rig in self.rigs.values():
            rig.route.attach(rig.path, rig.client_addr)
            rig.route.channel(0x4001, rig.peer_addr, NOW + 2)
            rig.route.channel(0x7FFF, ("127.0.0.1", 9), NOW + 5)  # a peer that sends nothing

    def roles(self, name: str) -> dict[str, Any]:
        rig = self.rigs[name]
        return {rig.client_addr: "client", self.strangers[name].getsockname(): "stranger", rig.peer_addr: "peer",
                self.other_peers[name].getsockname(): "other_peer", rig.relay.getsockname(): "relay",
                rig.listener.getsockname(): "listener"}

    def send(self, name: str, who: str, data: bytes, now: float) -> list[tuple[bytes, str]]:
        rig = self.rigs[name]
        sender = {"client": rig.client, "stranger": self.strangers[name], "peer": rig.peer, "other_peer": self.other_peers[name]}[who]
        target = rig.listener if who in ("client", "stranger") else rig.relay
        sender.sendto(data, target.getsockname())
        rest = rig.drain(rig.path if target is rig.listener else rig.route, now)
        roles = self.roles(name)
        return [(data, roles[addr[:2]]) for data, addr in rest]

    def delivered(self, name: str) -> list[tuple[str, bytes, str]]:
        rig = self.rigs[name]
        roles = self.roles(name)
        return [("peer", data, roles[addr]) for data, addr in received(rig.peer)] + \
               [("client", data, roles[addr]) for data, addr in received(rig.client)]

    def close(self) -> None:
        for name, rig in self.rigs.items():
            rig.close()
            self.strangers[name].close()
            self.other_peers[name].close()


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_the_native_path_does_what_the_python_path_does(steps):
    if fastpath.NATIVE is None:
        pytest.fail("turn/_relay.c was not built: `pip install -e .` builds it (gcc and the Python headers)")
    pair = Pair()
    try:
        now = NOW
        for who, data, later in steps:
            now += later
            outcomes = {name: pair.send(name, who, data, now) for name in pair.rigs}
            assert outcomes["native"] == outcomes["python"], (who, data, now)
            assert pair.delivered("native") == pair.delivered("python"), (who, data, now)
        counters = {name: rig.path.counters() for name, rig in pair.rigs.items()}
        for key in ("to_peer_packets", "to_peer_bytes", "to_client_packets", "to_client_bytes", "bandwidth", "send_failed"):
            assert counters["native"][key] == counters["python"][key], key
        assert abs(pair.rigs["native"].route.tokens - pair.rigs["python"].route.tokens) < 1e-6
    finally:
        pair.close()


def test_the_operator_is_told_when_the_kernel_grants_smaller_buffers():
    from turn.transport import buffer_shortfall

    assert buffer_shortfall((8_388_608, 8_388_608), 4_194_304) is None  # forced, or rmem_max raised
    message = buffer_shortfall((425_984, 425_984), 4_194_304)  # a default Debian kernel, no CAP_NET_ADMIN
    assert message is not None and "net.core.rmem_max=4194304" in message and "425984" in message
    assert buffer_shortfall((8_388_608, 425_984), 4_194_304) is not None  # send buffers count too
