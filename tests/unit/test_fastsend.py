"""The native send helper (sfu/_fastsend.c) with real SRTP sessions and real loopback sockets:
what it writes decrypts to what it was given, in order, and what it cannot write or protect
comes back said, never lost silently; and ``SendBatch`` queues what the socket would not take."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from pylibsrtp import Policy, Session

from sfu import fastsend
from sfu.fastsend import PROTECT, SendBatch, pack_address, session_pointer, socket_of

NATIVE = fastsend._fastsend


@pytest.fixture(autouse=True)
def built() -> None:
    assert NATIVE is not None, "sfu/_fastsend.c did not build (pip install needs gcc and the Python headers)"


def rtp(sequence: int, ssrc: int = 0x1234, size: int = 100) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, sequence, 90 * sequence, ssrc) + bytes([sequence & 0xFF]) * size


def sessions(profile: int = Policy.SRTP_PROFILE_AES128_CM_SHA1_80) -> tuple[Session, Session]:
    key = os.urandom(30 if profile == Policy.SRTP_PROFILE_AES128_CM_SHA1_80 else 28)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    return tx, rx


@pytest.fixture
def receivers() -> Iterator[list[socket.socket]]:
    made = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        made.append(sock)
    yield made
    for sock in made:
        sock.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    yield sock
    sock.close()


def address_of(sock: socket.socket) -> bytes:
    host, port = sock.getsockname()[:2]
    return pack_address(sock.family, host, port)


@pytest.mark.parametrize("profile", [Policy.SRTP_PROFILE_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AEAD_AES_128_GCM])
def test_copies_for_two_subscribers_decrypt_to_what_was_given_in_order(
    receivers: list[socket.socket], sender: socket.socket, profile: int
) -> None:
    (tx_a, rx_a), (tx_b, rx_b) = sessions(profile), sessions(profile)
    items = []
    for sequence in range(1, 151):  # more than one sendmmsg batch of 64
        items.append((sender.fileno(), session_pointer(tx_a), address_of(receivers[0]), rtp(sequence, 0xA), None, None))
        items.append((sender.fileno(), session_pointer(tx_b), address_of(receivers[1]), rtp(sequence, 0xB), None, None))
    assert NATIVE.send(PROTECT, items) == 300
    got_a = [rx_a.unprotect(receivers[0].recv(2048)) for _ in range(150)]
    got_b = [rx_b.unprotect(receivers[1].recv(2048)) for _ in range(150)]
    assert got_a == [rtp(s, 0xA) for s in range(1, 151)]
    assert got_b == [rtp(s, 0xB) for s in range(1, 151)]
    # The sessions are the same ones Python protects with: it continues where the helper left off.
    assert rx_a.unprotect(tx_a.protect(rtp(151, 0xA))) == rtp(151, 0xA)


def test_a_malformed_or_unprotectable_copy_is_reported_and_the_others_still_leave(
    receivers: list[socket.socket], sender: socket.socket
) -> None:
    tx, rx = sessions()
    specific = Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_SPECIFIC, ssrc_value=0x9999))
    fd, to = sender.fileno(), address_of(receivers[0])
    items: list[Any] = [
        (fd, session_pointer(tx), to, rtp(1)),
        "not a tuple",
        (fd, session_pointer(tx), to, b"\x80short"),  # shorter than an RTP header
        (fd, session_pointer(tx), to, rtp(2, size=1900)),  # no room for the tag in the SRTP buffer
        (fd, session_pointer(tx), b"\x02\x00", rtp(3)),  # no socket address
        (fd, 0, to, rtp(4)),  # no session
        (fd, session_pointer(specific), to, rtp(5)),  # libsrtp has no stream for this SSRC
        (fd, session_pointer(tx), to, rtp(6)),
    ]
    result = NATIVE.send(PROTECT, items)
    assert result[0] is None and result[7] is None
    assert result[1:6] == [-1, -1, -1, -1, -1]
    assert isinstance(result[6], int) and result[6] > 0  # srtp_err_status_t, not ok
    assert [rx.unprotect(receivers[0].recv(2048)) for _ in range(2)] == [rtp(1), rtp(6)]


def test_what_the_socket_refuses_comes_back_protected_and_batch_queues_it_on_the_transport(
    receivers: list[socket.socket],
) -> None:
    tx, rx = sessions()
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead_fd = closed.fileno()
    closed.close()  # writing on it fails (EBADF), as a full or broken socket would

    class Transport:
        def __init__(self) -> None:
            self.sent: list[tuple[bytes, tuple[str, int]]] = []

        def sendto(self, data: bytes, address: tuple[str, int]) -> None:
            self.sent.append((data, address))

    transport = Transport()
    to = receivers[0].getsockname()
    batch = SendBatch()
    for sequence in (1, 2, 3):
        batch.add(dead_fd, session_pointer(tx), pack_address(socket.AF_INET, *to), rtp(sequence), transport, to)
    assert batch.flush() == 0  # nothing lost: queued on the transport instead
    assert batch.sent == 0 and batch.queued == 3 and batch.items == []
    assert [address for _, address in transport.sent] == [to] * 3
    assert [rx.unprotect(data) for data, _ in transport.sent] == [rtp(1), rtp(2), rtp(3)]


def test_a_batch_counts_what_it_sent_and_what_it_lost(receivers: list[socket.socket], sender: socket.socket) -> None:
    tx, rx = sessions()
    specific = Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_SPECIFIC, ssrc_value=0x9999))
    batch = SendBatch()
    to = receivers[0].getsockname()
    batch.add(sender.fileno(), session_pointer(tx), address_of(receivers[0]), rtp(1), None, to)
    batch.add(sender.fileno(), session_pointer(specific), address_of(receivers[0]), rtp(2), None, to)
    assert batch.flush() == 1
    assert (batch.sent, batch.failed) == (1, 1)
    assert rx.unprotect(receivers[0].recv(2048)) == rtp(1)
    assert batch.flush() == 0  # empty


def test_ipv6_addresses_pack_as_the_kernel_takes_them(sender: socket.socket) -> None:
    try:
        receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        receiver.bind(("::1", 0))
    except OSError:
        pytest.fail("this machine has no IPv6 loopback")
    out = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    out.setblocking(False)
    receiver.settimeout(2)
    tx, rx = sessions()
    try:
        assert NATIVE.send(PROTECT, [(out.fileno(), session_pointer(tx), address_of(receiver), rtp(9))]) == 1
        assert rx.unprotect(receiver.recv(2048)) == rtp(9)
    finally:
        receiver.close()
        out.close()
    with pytest.raises(ValueError):
        pack_address(socket.AF_UNIX, "x", 1)


def test_only_a_udp_socket_of_this_process_is_written_directly(sender: socket.socket) -> None:
    class Transport:
        def __init__(self, sock: Any) -> None:
            self.sock = sock

        def get_extra_info(self, name: str) -> Any:
            return self.sock if name == "socket" else None

    assert socket_of(Transport(sender)) == (sender.fileno(), socket.AF_INET)
    assert socket_of(Transport(None)) is None  # a TURN relay's transport shows no socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
        assert socket_of(Transport(stream)) is None


def test_the_helper_refuses_what_is_not_its_input() -> None:
    with pytest.raises(TypeError):
        NATIVE.send(PROTECT, ("not", "a list"))
    with pytest.raises((ValueError, TypeError)):
        NATIVE.send(0, [])


def test_the_helpers_buffer_is_the_sfus_widened_srtp_buffer(receivers: list[socket.socket], sender: socket.socket) -> None:
    """The SFU widens pylibsrtp's buffer (packets up to the path MTU plus its own extensions):
    the helper takes the same sizes, or large packets would be lost on the native path only."""
    from sfu.aiortc_hooks import SRTP_BUFFER_BYTES, widen_srtp_session

    assert NATIVE.BUFFER == SRTP_BUFFER_BYTES
    tx, rx = sessions()
    widen_srtp_session(rx)
    largest = rtp(1, size=SRTP_BUFFER_BYTES - NATIVE.MAX_TRAILER - 12)
    assert NATIVE.send(PROTECT, [(sender.fileno(), session_pointer(tx), address_of(receivers[0]), largest)]) == 1
    assert rx.unprotect(receivers[0].recv(4096)) == largest


def test_unprotect_gives_the_plain_packet_and_refuses_tampered_replayed_or_malformed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from pylibsrtp import Error

    tx, rx = sessions(Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
    protected = [tx.protect(rtp(sequence)) for sequence in range(1, 4)]
    assert fastsend.unprotect(rx, protected[0]) == rtp(1)
    tampered = bytearray(protected[1])
    tampered[-1] ^= 1
    for bad in (bytes(tampered), protected[0], b"\x80" * 8):  # a flipped tag bit, a replay, too short
        with pytest.raises(Error):
            fastsend.unprotect(rx, bad)
    assert fastsend.unprotect(rx, protected[1]) == rtp(2)  # the session is unharmed
    monkeypatch.setattr(fastsend, "NATIVE", None)  # the Python path gives the same
    assert fastsend.unprotect(rx, protected[2]) == rtp(3)


async def test_a_route_is_blocked_while_its_transport_queues_or_closes(receivers: list[socket.socket]) -> None:
    """A closing transport's descriptor may soon belong to another socket (a client's HTTP
    connection, say): the helper never writes on it; nor past bytes queued in user space."""
    import asyncio
    import types

    from sfu.aiortc_hooks import _route_of

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    to = receivers[0].getsockname()
    pair = types.SimpleNamespace(protocol=types.SimpleNamespace(transport=transport), remote_addr=to)
    route = _route_of(pair)
    assert route is not None
    fd, sockaddr, blocked, _, address, table = route
    assert fd == transport.get_extra_info("socket").fileno() and address == to and table is None
    assert sockaddr == pack_address(socket.AF_INET, *to)
    assert not blocked()
    transport.close()
    assert blocked()

    turn = types.SimpleNamespace(protocol=types.SimpleNamespace(transport=types.SimpleNamespace(get_extra_info=lambda name: None)), remote_addr=to)
    assert _route_of(turn) is None  # a relayed pair keeps the Python path
