"""Which ICE connection a datagram on the shared UDP port belongs to (sfu/udp_mux.py)."""

from __future__ import annotations

import struct

import pytest
from aioice import stun

from sfu.sdp import check_description
from sfu.udp_mux import MuxTable, stun_request_ufrag


def binding_request(username: str) -> bytes:
    """A Binding request as aioice itself writes one (USERNAME, then integrity and fingerprint)."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 12345
    message.add_message_integrity(b"0123456789abcdefghijkl")
    message.add_fingerprint()
    return bytes(message)


def binding_response() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
    message.attributes["XOR-MAPPED-ADDRESS"] = ("127.0.0.1", 5000)
    return bytes(message)


def test_the_local_ufrag_is_read_from_a_binding_requests_username() -> None:
    assert stun_request_ufrag(binding_request("sfuA:clientB")) == "sfuA"
    assert stun_request_ufrag(binding_response()) is None  # a response names no one
    assert stun_request_ufrag(b"\x16\xfe\xfd" + bytes(40)) is None  # DTLS
    assert stun_request_ufrag(b"\x80\x60" + bytes(20)) is None  # RTP


def test_malformed_requests_name_nobody() -> None:
    good = binding_request("sfuA:clientB")
    assert stun_request_ufrag(good[:30]) is None  # cut short
    assert stun_request_ufrag(good[:2] + struct.pack("!H", 4000) + good[4:]) is None  # longer than it is
    assert stun_request_ufrag(good[:4] + b"\x00\x00\x00\x00" + good[8:]) is None  # no magic cookie
    no_colon = binding_request("sfuAclientB")
    assert stun_request_ufrag(no_colon) is None
    assert stun_request_ufrag(binding_request(":clientB")) is None
    overlong = good[:20] + struct.pack("!HH", 0x0006, 900) + b"x" * 8  # the attribute runs past the end
    assert stun_request_ufrag(overlong[:2] + struct.pack("!H", len(overlong) - 20) + overlong[4:]) is None
    for size in range(0, len(good)):
        stun_request_ufrag(good[:size])  # never raises


def binding_error() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.ERROR)
    message.attributes["ERROR-CODE"] = (401, "Unauthenticated")
    return bytes(message)


RTP = b"\x80\x60" + bytes(20)
DTLS = b"\x16\xfe\xfd" + bytes(40)


def test_requests_route_by_ufrag_and_a_success_answer_binds_their_address() -> None:
    table = MuxTable()
    table.add("a", "ufA")
    table.add("b", "ufB")
    alice, bob, stranger = ("10.0.0.1", 5000), ("10.0.0.2", 6000), ("10.0.0.9", 9999)
    assert table.route(DTLS, alice) is None  # before any check: nobody's
    assert table.route(binding_request("ufA:x"), alice) == "a"
    assert table.route(DTLS, alice) is None  # a request alone binds nothing: it is not checked yet
    table.sent("a", alice, binding_response())  # aioice answered with success: it passed its check
    assert table.route(binding_request("ufB:y"), bob) == "b"
    table.sent("b", bob, binding_response())
    assert table.route(DTLS, alice) == "a"
    assert table.route(RTP, bob) == "b"
    assert table.route(RTP, stranger) is None
    assert table.route(binding_request("unknown:x"), stranger) is None


def test_a_guessed_ufrag_gets_an_error_and_takes_no_address() -> None:
    """Requests that fail aioice's integrity check get a STUN error: that binds nothing, so a
    flood of them from many sources cannot push the real peer's address out of the table."""
    table = MuxTable(per_connection=4)
    table.add("a", "ufA")
    peer = ("10.0.0.1", 5000)
    table.route(binding_request("ufA:x"), peer)
    table.sent("a", peer, binding_response())
    for port in range(1000, 1100):
        attacker = ("10.6.6.6", port)
        assert table.route(binding_request("ufA:guess"), attacker) == "a"  # aioice decides
        table.sent("a", attacker, binding_error())
        assert table.route(RTP, attacker) is None
    assert table.addresses("a") == [peer]
    assert table.route(RTP, peer) == "a"


def test_responses_come_back_to_the_connection_that_sent_the_check() -> None:
    table = MuxTable()
    table.add("a", "ufA")
    table.add("b", "ufB")
    table.sent("b", ("10.0.0.5", 7000), binding_request("peer:ufB"))
    assert table.route(binding_response(), ("10.0.0.5", 7000)) == "b"
    table.sent("gone", ("10.0.0.6", 7000), binding_request("peer:x"))  # not on the socket: nothing learnt
    assert table.route(binding_response(), ("10.0.0.6", 7000)) is None


def test_a_removed_connection_gets_nothing_and_its_ufrag_is_free() -> None:
    table = MuxTable()
    table.add("a", "ufA")
    table.sent("a", ("10.0.0.1", 5000), binding_response())
    table.remove("a")
    assert len(table) == 0
    assert table.route(RTP, ("10.0.0.1", 5000)) is None
    assert table.route(binding_request("ufA:x"), ("10.0.0.1", 5000)) is None
    table.add("a2", "ufA")
    assert table.route(binding_request("ufA:x"), ("10.0.0.1", 5000)) == "a2"


def test_an_address_moves_to_the_connection_that_last_answered_it() -> None:
    table = MuxTable()
    table.add("a", "ufA")
    table.add("b", "ufB")
    shared = ("10.0.0.1", 5000)
    table.sent("a", shared, binding_response())
    table.sent("b", shared, binding_response())
    assert table.route(RTP, shared) == "b"
    assert table.addresses("a") == [] and table.addresses("b") == [shared]


def test_addresses_are_bounded_per_connection_and_in_all() -> None:
    table = MuxTable(per_connection=3, total=5)
    table.add("a", "ufA")
    table.add("b", "ufB")
    for port in range(10):
        table.sent("a", ("10.0.0.1", port), binding_response())
    assert table.addresses("a") == [("10.0.0.1", port) for port in (7, 8, 9)]  # the newest kept
    assert table.route(RTP, ("10.0.0.1", 0)) is None
    for port in range(3):
        table.sent("b", ("10.0.0.2", port), RTP)
    assert len(table.addresses("a")) + len(table.addresses("b")) == 5  # in all: the oldest forgotten
    assert table.route(RTP, ("10.0.0.2", 2)) == "b"


def test_on_one_udp_port_an_offer_must_bundle_every_active_media_section() -> None:
    session = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n{group}"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    )
    sections = "".join(
        f"m=audio {port} UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
        for mid, port in (("0", 9), ("1", 9), ("2", 0))
    )
    bundled = session.format(group="a=group:BUNDLE 0 1\r\n") + sections  # mid 2 is stopped
    check_description(bundled, bundled=True)
    for group in ("", "a=group:BUNDLE 0\r\n"):
        offer = session.format(group=group) + sections
        check_description(offer)  # fine on a port per connection
        with pytest.raises(ValueError, match="BUNDLE all media sections"):
            check_description(offer, bundled=True)
