"""aiortc's private API as the clients of this project need it: the SDK's simulcast senders,
the recorder worker's jitter buffer, and the taps the load tester and the tests put on a client's
incoming media (loss, counting, a client that stops reading).

With ``sfu/aiortc_hooks.py`` (the SFU's), this is the only module that touches aiortc's private
API; ``verify_hooks()`` checks the attributes both rely on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.rtp import RtpPacket

# Simulcast from an aiortc client (the SDK) --------------------------------------------------


def layer_sender(primary: RTCRtpSender, track: MediaStreamTrack) -> RTCRtpSender:
    """A sender for one more encoding of ``primary``'s m-section (SSRC-group simulcast): its
    own SSRC and RTX SSRC, started with ``start_layer_sender`` once negotiation is done."""
    return RTCRtpSender(track, primary.transport)


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """A sender's media and RTX SSRCs (for the ``a=ssrc-group`` lines of an offer)."""
    return sender._ssrc, sender._rtx_ssrc


def cname_of(pc: RTCPeerConnection) -> str:
    return pc._RTCPeerConnection__cname  # type: ignore[attr-defined]


async def start_layer_sender(pc: RTCPeerConnection, transceiver: Any, sender: RTCRtpSender) -> None:
    """Start a layer sender with the parameters its m-section negotiated (same codecs,
    extensions and MID as the transceiver's own sender, on the same transport)."""
    from aiortc.rtcrtpparameters import RTCRtcpParameters, RTCRtpSendParameters

    transport = transceiver.sender.transport
    sender.setTransport(transport)
    # aiortc starts its own senders once DTLS is up; a sender started earlier dies on its first
    # packet (ConnectionError ends its RTP loop).
    for _ in range(400):
        if transport.state == "connected":
            break
        if transport.state in ("failed", "closed"):
            raise ConnectionError("the publisher connection failed")
        await asyncio.sleep(0.05)
    parameters = RTCRtpSendParameters(
        codecs=transceiver._codecs,
        headerExtensions=transceiver._headerExtensions,
        muxId=transceiver.mid,
        rtcp=RTCRtcpParameters(cname=cname_of(pc), ssrc=sender._ssrc, mux=True),
    )
    await sender.send(parameters)


# The recorder worker: aiortc's jitter buffer on packets that come from a pipe ---------------------


def jitter_packet(marker: bool, sequence: int, timestamp: int, data: bytes) -> RtpPacket:
    """An RTP packet as aiortc's jitter buffer takes it: the depayloaded ``data`` where aiortc's
    receiver would have put it."""
    packet = RtpPacket(payload_type=96, marker=int(marker), sequence_number=sequence & 0xFFFF, timestamp=timestamp)
    packet._data = data  # type: ignore[attr-defined]
    return packet


# Interceptors on a client's incoming media ---------------------------------------------------------


class IncomingInterceptor(Protocol):
    def incoming_rtp(self, data: bytes, arrival_time_ms: int) -> bool:
        """A decrypted RTP packet before aiortc routes it; False drops it there."""
        ...


def intercept_incoming(pc: RTCPeerConnection, interceptor: IncomingInterceptor) -> None:
    """Run ``interceptor`` on every RTP packet ``pc`` receives, after decryption and before
    routing, after the interceptors added before it.  Idempotent per transport and interceptor;
    call again after each negotiation to cover new transports."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is None:
            continue
        chain: list[IncomingInterceptor] | None = getattr(transport, "_videoconf_interceptors", None)
        if chain is None:
            chain = transport._videoconf_interceptors = []
            original = transport._handle_rtp_data

            async def intercepted(data: bytes, arrival_time_ms: int, _chain: list = chain, _original: Any = original) -> None:
                for each in _chain:
                    if not each.incoming_rtp(data, arrival_time_ms):
                        return
                await _original(data, arrival_time_ms)

            transport._handle_rtp_data = intercepted
        if interceptor not in chain:
            chain.append(interceptor)


class LossStats:
    """Loss on a client's incoming path, as a lossy network would drop packets."""

    def __init__(self, rate: float = 0.0, rng: Any = None) -> None:
        self.seen = 0
        self.dropped = 0
        self.rate = rate  # change it to change the drop rate of a running tap
        self.rng = rng

    def incoming_rtp(self, data: bytes, arrival_time_ms: int) -> bool:
        self.seen += 1
        if self.rng.random() < self.rate:
            self.dropped += 1
            return False
        return True


def drop_incoming_rtp(pc: RTCPeerConnection, rate: float, rng: Any, stats: LossStats | None = None) -> LossStats:
    """Drop a fraction ``rate`` of the RTP packets ``pc`` receives (see ``intercept_incoming``);
    ``stats`` counts them and, given again after a negotiation, stays the one interceptor."""
    if stats is None:
        stats = LossStats(rate, rng)
    elif stats.rng is None:
        stats.rate, stats.rng = rate, rng
    intercept_incoming(pc, stats)
    return stats


def stop_receiving(pc: RTCPeerConnection) -> int:
    """Make a peer connection discard every datagram it gets, as a client that hangs or whose
    path is congested (uvloop's datagram transports cannot pause reading).  Returns how many
    sockets now discard."""
    stopped = 0
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        connection = getattr(getattr(transport, "transport", None), "_connection", None)
        for pair in getattr(connection, "_nominated", {}).values():
            pair.protocol.datagram_received = lambda data, addr: None
            stopped += 1
    return stopped


def take_clear_rtp(pc: RTCPeerConnection, take: Any, key: object) -> None:
    """Hand every RTP datagram ``pc`` receives to ``take(data)`` as it comes off the ICE
    connection (its header is in the clear; SRTP is not undone) and drop it there: no
    decryption, no routing.  STUN, DTLS and RTCP pass on as before.  For a load generator that
    only counts what arrives.  Idempotent per connection and ``key``; call again after each
    negotiation.  Raises RuntimeError if aiortc or aioice no longer have what this relies on."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        if connection is None or not callable(getattr(connection, "data_received", None)):
            raise RuntimeError("aiortc's ICE transport has no aioice connection with data_received")
        if getattr(connection, "_videoconf_clear_rtp", None) is key:
            continue
        original = connection.data_received

        def data_received(data: bytes, component: int, _original: Any = original) -> None:
            # RTP (RFC 5761 demultiplexing): version 2, and not an RTCP packet type (192-223).
            if len(data) >= 12 and 0x80 <= data[0] < 0xC0 and not 192 <= data[1] <= 223:
                take(data)
                return
            _original(data, component)

        connection.data_received = data_received
        connection._videoconf_clear_rtp = key
