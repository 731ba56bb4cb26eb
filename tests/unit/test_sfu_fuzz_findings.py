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


class LoopbackRtpTransport:
    """What an ``RTCRtpReceiver`` needs of its DTLS transport: registration, and somewhere its
    RTCP goes (the bytes are packed for real)."""

    state = "connected"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def _register_rtp_receiver(self, receiver: object, parameters: object) -> None:
        pass

    def _unregister_rtp_receiver(self, receiver: object) -> None:
        pass

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


async def test_a_receiver_report_that_cannot_be_packed_does_not_stop_the_receiver_from_ever_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    """RTP timestamps that swing between 0 and 2**32 - 1 push aiortc's interarrival jitter past
    32 bits; packing the receiver report then raised struct.error, which ended aiortc's RTCP task
    without it saying so, and stopping the receiver (so closing the publisher's peer connection,
    so removing the publisher) waited for that task forever."""
    import asyncio
    import types

    import aiortc.rtcrtpreceiver
    from aiortc import RTCRtpReceiver
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
    from aiortc.rtcrtpreceiver import RemoteStreamTrack
    from aiortc.rtp import RtpPacket

    from sfu.aiortc_hooks import ReceiverTap

    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    transport = LoopbackRtpTransport()
    receiver = RTCRtpReceiver("video", transport)  # type: ignore[arg-type]
    receiver._track = RemoteStreamTrack(kind="video")  # as the peer connection sets it
    received: list[int] = []

    async def on_packet(packet: RtpPacket, *args: object) -> None:
        received.append(packet.sequence_number)

    ReceiverTap(receiver, on_packet)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[vp8]))
    receiver._set_rtcp_ssrc(0xABCD)
    arrivals = iter(1_000_000 + index * 0.01 for index in range(10_000))  # one packet every 10 ms
    with monkeypatch.context() as patched:  # the clock aiortc's statistics read arrivals from
        patched.setattr(aiortc.rtcrtpreceiver, "time", types.SimpleNamespace(time=lambda: next(arrivals)))
        for sequence in range(401):
            timestamp = 0 if sequence % 2 == 0 else 0xFFFFFFFF
            await receiver._handle_rtp_packet(
                RtpPacket(payload_type=96, sequence_number=sequence, timestamp=timestamp, ssrc=0x1111, payload=b"\x10" * 20),
                arrival_time_ms=sequence,
            )
    stats = receiver._RTCRtpReceiver__remote_streams[0x1111]
    assert stats.jitter > 0xFFFFFFFF  # the report cannot carry it
    await asyncio.sleep(1.6)  # aiortc's RTCP task has tried to send a report by now
    await asyncio.wait_for(receiver.stop(), 5)
    assert len(received) == 401


def test_a_nack_for_a_number_never_sent_yet_is_not_answered() -> None:
    """A subscriber's NACK for an output number ahead of the newest sent mapped to an input the
    cache held, and the packet went out under that future number: SRTP's highest index jumped
    ahead, and every packet after it was refused as too old ("replay check failed")."""
    munger = Munger(random.Random(1))
    munger.start(10_000, 0)
    sent = [munger.map(sequence, sequence * 10) for sequence in range(10_000, 10_020)]
    newest = sent[-1]
    assert newest is not None
    assert munger.unmap((newest[0] + 5) & 0xFFFF) is None  # not sent yet: nothing to resend
    assert munger.unmap((newest[0] + 20_000) & 0xFFFF) is None
    assert munger.unmap(newest[0]) == (0, 10_019)
    assert munger.unmap((newest[0] - 3) & 0xFFFF) == (0, 10_016)


def test_a_jump_in_a_publishers_numbering_does_not_jump_the_output() -> None:
    """A publisher's sequence numbers may step forward by up to half the 16-bit space per packet,
    and the packets in between need not be forwarded: the output then stepped by more than half,
    which SRTP (it sees 16 bits and guesses the rollover) read as a step back, refusing that
    packet and the ones after it as too old.  Past RFC 3550's MAX_DROPOUT the output goes on
    from its last number instead; an ordinary loss keeps its gap."""
    munger = Munger(random.Random(1))
    munger.start(100, 0)
    outs = [munger.map(sequence, 0) for sequence in range(100, 106)]
    last = outs[-1]
    assert last is not None
    lost = munger.map(106 + 500, 0)  # 500 lost: the gap stays, NACKable
    assert lost is not None and (lost[0] - last[0]) & 0xFFFF == 501
    jumped = [munger.map(106 + 500 + 30_000 * step, 0) for step in (1, 2, 3)]  # each a forward step
    assert all(out is not None for out in jumped)
    steps = [(b[0] - a[0]) & 0xFFFF for a, b in zip([lost, *jumped], jumped, strict=False)]  # type: ignore[index]
    assert steps == [1, 1, 1]
    after = munger.map(106 + 500 + 90_001, 0)
    assert after is not None and (after[0] - jumped[-1][0]) & 0xFFFF == 1  # type: ignore[index]
    assert munger.unmap(jumped[0][0]) == (0, 106 + 500 + 30_000)  # type: ignore[index]
