"""What publishing and subscribing with another WebRTC stack (GStreamer's webrtcbin) found, as
units without sockets: full-MTU packets through SRTP, DTLS with a peer's RSA certificate, failures
in the packet path contained where they happen, and H.264 parameters read as RFC 6184 says.
The same stack end to end is in tests/media/test_webrtcbin.py."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCRtpReceiver
from aiortc.rtcdtlstransport import RTCDtlsParameters, generate_certificate
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry

from clients.loadtest.polling import until
from sfu.aiortc_hooks import ReceiverTap, accept_rsa_peers, widen_srtp_buffers
from sfu.forwarder import Forwarder
from sfu.forwarding import UpTrack
from sfu.metrics import SfuMetrics
from sfu.rtp import build_packet, extension_block

MTU = 1500
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


class MemoryIce:
    """One end of an in-memory ICE transport pair: all a DTLS transport reads and writes."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer: MemoryIce | None = None

    async def _recv(self) -> bytes:
        return await self.inbox.get()

    async def _send(self, data: bytes) -> None:
        assert self.peer is not None
        self.peer.inbox.put_nowait(data)


def rsa_certificate() -> RTCCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return RTCCertificate(key=key, cert=generate_certificate(key))  # type: ignore[arg-type]


async def dtls_pair(client_certificate: RTCCertificate, server_certificate: RTCCertificate) -> tuple[Any, Any]:
    """Two aiortc DTLS transports over memory, handshaken (or failed) within five seconds."""
    client_ice, server_ice = MemoryIce("controlled"), MemoryIce("controlling")
    client_ice.peer, server_ice.peer = server_ice, client_ice
    client = RTCDtlsTransport(client_ice, [client_certificate])  # type: ignore[arg-type]
    server = RTCDtlsTransport(server_ice, [server_certificate])  # type: ignore[arg-type]

    def parameters(of: Any) -> RTCDtlsParameters:
        return RTCDtlsParameters(fingerprints=of.getLocalParameters().fingerprints)

    await asyncio.wait_for(asyncio.gather(client.start(parameters(server)), server.start(parameters(client))), 5)
    return client, server


async def test_the_sfu_as_dtls_client_connects_to_a_peer_with_an_rsa_certificate() -> None:
    """The SFU answers ``a=setup:active``: the peer is the DTLS server, and the suite must suit
    its RSA certificate (webrtcbin's default)."""
    accept_rsa_peers()
    client, server = await dtls_pair(RTCCertificate.generateCertificate(), rsa_certificate())
    try:
        assert (client.state, server.state) == ("connected", "connected")
        assert "RSA" in client._ssl.get_cipher_name()
    finally:
        await client.stop()
        await server.stop()


async def test_packets_up_to_the_path_mtu_are_protected_after_the_sfus_extensions() -> None:
    """A packet as large as a 1,500-byte path allows, less the publisher's SRTP tag, rewritten
    with the SFU's MID, abs-send-time and audio-level extensions, and the same as RTX."""
    widen_srtp_buffers()
    client, server = await dtls_pair(RTCCertificate.generateCertificate(), RTCCertificate.generateCertificate())
    received: list[bytes] = []

    async def capture(data: bytes, arrival_time_ms: int) -> None:
        received.append(data)

    server._handle_rtp_data = capture
    try:
        extensions = extension_block([(1, b"0123456789abcdef"), (3, b"\x01\x02\x03"), (5, b"\x80")])
        payload = bytes(MTU - 16 - 12)  # the largest payload a publisher's packet can carry
        packets = [
            build_packet(1, 102, 1, 1000, 0x1234, extensions, payload),
            build_packet(1, 103, 2, 1000, 0x5678, extensions, b"\x00\x01" + payload),
        ]
        assert len(packets[1]) > MTU
        for packet in packets:
            await client._send_rtp(packet)
        await until(lambda: len(received) >= len(packets), 5, "every packet", interval=0.01)
        assert received == packets
    finally:
        await client.stop()
        await server.stop()


# Failures in the packet path stay where they happen ------------------------------------------


class FailingDown:
    """A subscriber's down-track whose send fails as pylibsrtp's did."""

    subscriber = "broken"
    lane_layer = None

    def __init__(self, up: UpTrack) -> None:
        self.forwarder = Forwarder(up.layers[0])

    def forward(self, *args: Any) -> bool:
        raise ValueError("packet is too long")


class CountingDown:
    subscriber = "fine"
    lane_layer = None

    def __init__(self, up: UpTrack) -> None:
        self.forwarder = Forwarder(up.layers[0])
        self.sent = 0

    def forward(self, *args: Any) -> bool:
        self.sent += 1
        return True


def audio_packet(sequence: int) -> RtpPacket:
    return RtpPacket(payload_type=111, sequence_number=sequence, timestamp=960 * sequence, ssrc=0x1111, payload=b"\xfc" * 40)


async def test_a_failed_send_to_one_subscriber_reaches_neither_the_publisher_nor_the_others() -> None:
    metrics = SfuMetrics(CollectorRegistry())
    up = UpTrack("t", "alice", "audio", "microphone", metrics)
    broken, fine = FailingDown(up), CountingDown(up)
    up.downtracks = [broken, fine, CountingDown(up)]  # type: ignore[list-item]
    for sequence in range(1, 6):
        await up._on_packet(audio_packet(sequence), OPUS, 0)
    assert fine.sent == 5 and up.downtracks[2].sent == 5  # type: ignore[attr-defined]
    assert metrics.packet_errors.labels("forward")._value.get() == 5


async def test_a_failure_in_the_sfus_packet_handling_never_ends_the_publishers_receive_loop() -> None:
    """Whatever the SFU's handler raises stays in the receiver tap: aiortc's DTLS receive loop,
    which awaits it, would end with the exception, and the publisher with it."""
    receiver = RTCRtpReceiver("audio", types.SimpleNamespace(state="new"))  # type: ignore[arg-type]
    receiver._RTCRtpReceiver__codecs = {111: OPUS}
    errors: list[Exception] = []

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the SFU")

    tap = ReceiverTap(receiver, broken, on_error=errors.append)
    for sequence in range(1, 4):
        await receiver._handle_rtp_packet(audio_packet(sequence), arrival_time_ms=0)
    assert tap.errors == 3 and [str(e) for e in errors] == ["a bug in the SFU"] * 3


async def test_an_up_track_counts_what_failed_in_its_receive_path() -> None:
    metrics = SfuMetrics(CollectorRegistry())
    up = UpTrack("t", "alice", "audio", "microphone", metrics)
    receiver = RTCRtpReceiver("audio", types.SimpleNamespace(state="new"))  # type: ignore[arg-type]
    receiver._RTCRtpReceiver__codecs = {111: OPUS}
    up.attach(receiver)
    up._layer_for = None  # type: ignore[assignment,method-assign]  # any bug in the packet path
    await receiver._handle_rtp_packet(audio_packet(1), arrival_time_ms=0)
    assert metrics.packet_errors.labels("receive")._value.get() == 1



# H.264 parameters as RFC 6184 reads them ------------------------------------------------------

H264_SECTION = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 99 100 102\r\n"
    "a=rtpmap:96 VP8/90000\r\n"
    "a=rtpmap:99 H264/90000\r\n"
    "a=fmtp:99 packetization-mode=1;level-asymmetry-allowed=1\r\n"
    "a=rtpmap:100 h264/90000\r\n"
    "a=rtpmap:102 H264/90000\r\n"
    "a=fmtp:102 packetization-mode=1; Profile-Level-Id=42e01f\r\n"
)


def test_an_h264_format_without_profile_level_id_is_read_as_baseline() -> None:
    from sfu.sdp import normalize_h264

    out = normalize_h264(H264_SECTION)
    assert "a=fmtp:99 packetization-mode=1;level-asymmetry-allowed=1;profile-level-id=42000a\r\n" in out
    assert "a=rtpmap:100 h264/90000\r\na=fmtp:100 profile-level-id=42000a\r\n" in out  # no fmtp at all
    assert "a=fmtp:102 packetization-mode=1; Profile-Level-Id=42e01f\r\n" in out  # has one: kept
    assert "a=fmtp:96" not in out  # not H.264
    assert normalize_h264(out) == out


def test_an_answer_without_profile_level_id_takes_an_offered_baseline_or_constrained_baseline() -> None:
    """A Baseline decoder (what the RFC's default declares) decodes Constrained Baseline too."""
    from sfu.sdp import normalize_h264

    def offer(profile: str) -> str:
        return H264_SECTION.replace("a=rtpmap:96", "a=mid:0\r\na=rtpmap:96").replace(
            "a=fmtp:99 packetization-mode=1;", f"a=fmtp:99 packetization-mode=1;profile-level-id={profile};"
        )

    answer = H264_SECTION.replace("a=rtpmap:96", "a=mid:0\r\na=rtpmap:96")
    for offered, implied in (("42e01f", "42e00a"), ("42001f", "42000a"), ("640028", "42000a")):
        assert f"level-asymmetry-allowed=1;profile-level-id={implied}\r\n" in normalize_h264(answer, offer(offered))


async def negotiate_without_profile(profile: str, normalize: bool) -> Any:
    """The SFU's offer of exactly one H.264 format (``profile``), as to a subscriber; an answer
    that leaves profile-level-id out.  The negotiated H.264 parameters, or "refused"."""
    from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
    from aiortc.exceptions import OperationError

    from sfu.aiortc_hooks import ParkedTrack, configure_ice, negotiated_codecs
    from sfu.sdp import normalize_h264

    configure_ice(["127.0.0.1"], None)
    codecs = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in codecs if c.parameters.get("profile-level-id") == profile] + [c for c in codecs if c.name == "rtx"][:1]
    sfu, client = RTCPeerConnection(), RTCPeerConnection()
    try:
        transceiver = sfu.addTransceiver(ParkedTrack("video"), direction="sendonly")
        transceiver.setCodecPreferences(chosen)
        await sfu.setLocalDescription(await sfu.createOffer())
        await client.setRemoteDescription(sfu.localDescription)
        await client.setLocalDescription(await client.createAnswer())
        answer = client.localDescription.sdp.replace(f";profile-level-id={profile}", "")
        assert "profile-level-id" not in answer
        if normalize:
            answer = normalize_h264(answer, offer=sfu.localDescription.sdp)
        try:
            await sfu.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        except OperationError:
            return "refused"
        return [c.parameters["profile-level-id"] for c in negotiated_codecs(transceiver) if c.name == "H264"]
    finally:
        await sfu.close()
        await client.close()


@pytest.mark.parametrize("profile", ["42001f", "42e01f"])
async def test_an_answer_without_profile_level_id_takes_the_offered_baseline_h264(profile: str) -> None:
    """The SFU offers a subscriber exactly the publisher's codec.  aiortc reads an answer without
    profile-level-id as Constrained Baseline, and refuses it for a Baseline offer; read as the
    RFC says, either offer is negotiated."""
    if profile == "42001f":
        assert await negotiate_without_profile(profile, normalize=False) == "refused"
    assert await negotiate_without_profile(profile, normalize=True) == [profile]
