"""What fuzzing the SFU's packet and description paths found, each pinned with its minimal input
(tests/fuzz/ keeps fuzzing the same paths)."""

from __future__ import annotations

import random
import struct

import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

from sfu.aiortc_hooks import GUARD, guard_datagrams, nack_runs
from sfu.munger import MAX_LATE, Munger
from sfu.sdp import check_description


def test_nacks_across_the_16_bit_wrap_go_out_as_runs_that_do_not_cross_it() -> None:
    assert nack_runs([65537, 65534, 65535, 65536, 65535]) == [[65534, 65535], [0, 1]]
    assert nack_runs([5, 3]) == [[3, 5]]
    assert nack_runs([]) == []


def test_a_packet_later_than_the_srtp_replay_window_is_not_forwarded_or_resent() -> None:
    """Rewritten numbers more than SRTP's send window (1,024) behind the newest were refused by
    pylibsrtp ("index too old") and logged for every packet."""
    munger = Munger(random.Random(1))
    munger.start(10_000, 0)
    first = munger.map(10_000, 0)
    for sequence in range(10_001, 12_000):
        newest = munger.map(sequence, sequence * 10)
    assert first is not None and newest is not None
    assert munger.map(12_000 - MAX_LATE - 2, 5) is None  # arrived that late: dropped
    assert munger.map(12_000 - 10, 5) is not None  # a little late: forwarded
    assert munger.unmap(first[0]) is None  # too late to resend under its number
    assert munger.unmap(newest[0]) == (0, 11_999)


def test_two_media_sections_with_one_mid_are_refused_before_aiortc_sees_them() -> None:
    """aiortc refused such an offer only after half applying it, and its peer connection could
    then not close (AttributeError), which stopped a participant's removal half-way."""
    offer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 0\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
        + "".join("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n" for _ in range(2))
    )
    with pytest.raises(ValueError, match="same mid"):
        check_description(offer)


async def test_rtp_with_a_header_extension_of_the_wrong_size_is_dropped_not_fatal() -> None:
    """aiortc's parser raises struct.error (which its receive loop does not catch) for an
    abs-send-time element one byte long: the publisher's transport closed."""
    guard_datagrams()
    dtls = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()])
    uri = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    dtls._rtp_header_extensions_map.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=3, uri=uri)]))
    element = bytes([(3 << 4) | 0, 0x01]) + b"\x00\x00"  # id 3, one byte where three belong; padded
    packet = struct.pack("!BBHII", 0x90, 111, 1, 960, 0x1234) + b"\xbe\xde\x00\x01" + element + b"\xfc" * 20
    before = GUARD.dropped.get("malformed_rtp", 0)
    await dtls._handle_rtp_data(packet, 0)
    assert GUARD.dropped.get("malformed_rtp", 0) == before + 1
