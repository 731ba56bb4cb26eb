"""The synchronous receive path for a publisher's SRTP: what it leaves to aiortc's task, what it
drops (counted, never raised), and that a packet reaches the tap's synchronous handler."""

from __future__ import annotations

import types
from typing import Any

import pylibsrtp
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu.aiortc_hooks import _DTLS_CONNECTED, GUARD, receive_now


class FakeSrtp:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def unprotect(self, data: bytes) -> bytes:
        if self.fail:
            raise pylibsrtp.Error("authentication failed")
        return data


class FakeTap:
    def __init__(self) -> None:
        self.packets: list[tuple[int, int]] = []

    def handle_now(self, packet: RtpPacket, arrival_ms: int) -> None:
        self.packets.append((packet.sequence_number, arrival_ms))


def dtls(srtp: Any, receiver: Any, state: Any = _DTLS_CONNECTED) -> Any:
    return types.SimpleNamespace(
        _rx_srtp=srtp, _state=state, _RTCDtlsTransport__rx_bytes=0, _RTCDtlsTransport__rx_packets=0,
        _rtp_header_extensions_map=HeaderExtensionsMap(),
        _rtp_router=types.SimpleNamespace(route_rtp=lambda packet: receiver),
    )


def rtp(sequence: int) -> bytes:
    return RtpPacket(payload_type=96, sequence_number=sequence, timestamp=1, ssrc=0x1234, payload=b"\x90" * 10).serialize()


def receiver_with(tap: FakeTap) -> Any:
    receiver = types.SimpleNamespace()
    receiver._vc_tap = tap
    return receiver


def test_a_packet_reaches_the_tap_at_once_with_an_ntp_arrival_in_milliseconds() -> None:
    tap = FakeTap()
    transport = dtls(FakeSrtp(), receiver_with(tap))
    assert receive_now(transport, rtp(7)) is True
    ((sequence, arrival),) = tap.packets
    assert sequence == 7
    assert 3_900_000_000_000 < arrival < 5_000_000_000_000  # ms since 1900, as aiortc's clock
    assert transport._RTCDtlsTransport__rx_packets == 1 and transport._RTCDtlsTransport__rx_bytes == len(rtp(7))


def test_rtcp_and_an_unconnected_or_unkeyed_transport_are_left_to_aiortcs_task() -> None:
    tap = FakeTap()
    sender_report = bytes([0x80, 200, 0, 6]) + b"\x00" * 24
    assert receive_now(dtls(FakeSrtp(), receiver_with(tap)), sender_report) is False
    assert receive_now(dtls(None, receiver_with(tap)), rtp(1)) is False
    assert receive_now(dtls(FakeSrtp(), receiver_with(tap), state=object()), rtp(1)) is False
    assert tap.packets == []


def test_what_cannot_be_decrypted_or_parsed_is_dropped_and_counted_never_raised() -> None:
    tap = FakeTap()
    before = dict(GUARD.dropped)
    assert receive_now(dtls(FakeSrtp(fail=True), receiver_with(tap)), rtp(1)) is True
    assert receive_now(dtls(FakeSrtp(), receiver_with(tap)), b"\x80\x60\x00") is True  # a truncated header
    assert receive_now(dtls(FakeSrtp(), None), rtp(2)) is True  # no receiver for it: dropped, as aiortc does
    assert tap.packets == []
    assert GUARD.dropped.get("srtp_unprotect", 0) == before.get("srtp_unprotect", 0) + 1
    assert GUARD.dropped.get("malformed_rtp", 0) == before.get("malformed_rtp", 0) + 1


async def test_rtp_waits_only_behind_rtp_in_aioices_queue() -> None:
    """A datagram queued for aiortc's task holds later RTP back (order is kept) only when it is
    RTP itself: a receiver report or a DTLS record in the queue does not send everything behind
    it the slow way.  Once the task has taken the queued RTP, packets go straight to the tap."""
    import aioice.ice

    from sfu.aiortc_hooks import guard_datagrams

    guard_datagrams()
    tap = FakeTap()
    connection = aioice.ice.Connection(ice_controlling=True)
    connection._nominated[1] = object()  # recvfrom refuses an unconnected connection
    sender_report = bytes([0x80, 200, 0, 6]) + b"\x00" * 24
    dtls_record = bytes([22, 0xFE, 0xFD]) + b"\x00" * 20

    connection.data_received(sender_report, 1)
    connection.data_received(dtls_record, 1)
    connection._vc_dtls = dtls(FakeSrtp(), receiver_with(tap))
    connection.data_received(rtp(1), 1)
    assert [s for s, _ in tap.packets] == [1]  # past the report and the record in the queue

    connection._vc_dtls = dtls(None, receiver_with(tap))  # not keyed yet: RTP is queued
    connection.data_received(rtp(2), 1)
    connection._vc_dtls = dtls(FakeSrtp(), receiver_with(tap))
    connection.data_received(rtp(3), 1)  # behind 2, in order
    assert [s for s, _ in tap.packets] == [1]
    queued = [(await connection.recvfrom())[0] for _ in range(4)]
    assert queued == [sender_report, dtls_record, rtp(2), rtp(3)]
    connection.data_received(rtp(4), 1)  # nothing of RTP is waiting any more
    assert [s for s, _ in tap.packets] == [1, 4]
