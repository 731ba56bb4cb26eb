"""aiortc's private API as the clients of this project need it: the SDK's simulcast senders,
the recorder worker's jitter buffer, and the taps the load tester, the bots and the tests put on
a client's incoming media (loss, counting, a client that stops reading) and outgoing media (loss).

With ``sfu/aiortc_hooks.py`` (the SFU's), this is the only module that touches aiortc's private
API; ``verify_hooks()`` checks the attributes both rely on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
        if transport is not None:
            _chain_on(transport, "_handle_rtp_data", _run_incoming, interceptor)


def _run_incoming(chain: list[IncomingInterceptor], original: Any) -> Any:
    async def intercepted(data: bytes, arrival_time_ms: int) -> None:
        for each in chain:
            if not each.incoming_rtp(data, arrival_time_ms):
                return
        await original(data, arrival_time_ms)

    return intercepted


def _chain_on(transport: Any, hook: str, run: Callable[[list[Any], Any], Any], interceptor: object) -> None:
    """Add ``interceptor`` to the chain on ``transport``'s method ``hook`` (once): the first
    interceptor replaces the method with ``run(chain, original)``, which runs the chain."""
    key = f"_videoconf_{hook}"
    chain: list[Any] | None = getattr(transport, key, None)
    if chain is None:
        chain = []
        setattr(transport, key, chain)
        setattr(transport, hook, run(chain, getattr(transport, hook)))
    if interceptor not in chain:
        chain.append(interceptor)


LOST_KEPT = 4096  # dropped packets remembered to drop their retransmissions (LossStats.repairs)


class LossStats:
    """Loss on a client's incoming or outgoing path, as a lossy network would drop packets.  One
    object counts one direction: give each its own."""

    def __init__(self, rate: float = 0.0, rng: Any = None, repairs: bool = True) -> None:
        self.seen = 0
        self.dropped = 0
        self.rate = rate  # change it to change the drop rate of a running tap
        self.rng = rng
        # False: what is dropped stays lost, as on a path whose retransmissions come too late: a
        # retransmission (RTX, or the same SSRC and sequence number again) of it is dropped too.
        self.repairs = repairs
        self.rtx_ssrcs: set[int] = set()
        self.retransmissions_dropped = 0
        self._lost: dict[tuple[int, int], None] = {}  # insertion-ordered, at most LOST_KEPT

    def _passes(self) -> bool:
        self.seen += 1
        if self.rng.random() < self.rate:
            self.dropped += 1
            return False
        return True

    def incoming_rtp(self, data: bytes, arrival_time_ms: int) -> bool:
        return self._passes()

    def outgoing_rtp(self, data: bytes) -> bool:
        if self.repairs:
            return self._passes()
        ssrc = int.from_bytes(data[8:12], "big")
        key = (ssrc, int.from_bytes(data[2:4], "big"))
        if ssrc in self.rtx_ssrcs or key in self._lost:
            self.retransmissions_dropped += 1
            return False
        if self._passes():
            return True
        self._lost[key] = None
        if len(self._lost) > LOST_KEPT:
            del self._lost[next(iter(self._lost))]
        return False


def _loss(rate: float, rng: Any, stats: LossStats | None) -> LossStats:
    if stats is None:
        return LossStats(rate, rng)
    if stats.rng is None:
        stats.rate, stats.rng = rate, rng
    return stats


def drop_incoming_rtp(pc: RTCPeerConnection, rate: float, rng: Any, stats: LossStats | None = None) -> LossStats:
    """Drop a fraction ``rate`` of the RTP packets ``pc`` receives (see ``intercept_incoming``);
    ``stats`` counts them and, given again after a negotiation, stays the one interceptor."""
    stats = _loss(rate, rng, stats)
    intercept_incoming(pc, stats)
    return stats


# Interceptors on a client's outgoing media ---------------------------------------------------------


class OutgoingInterceptor(Protocol):
    def outgoing_rtp(self, data: bytes) -> bool:
        """An RTP packet (media or RTX) before aiortc encrypts it; False drops it there."""
        ...


def _is_rtp(data: bytes) -> bool:
    """RTP, not RTCP (RFC 5761 demultiplexing: RTCP packet types are 192-223)."""
    return len(data) >= 12 and not 192 <= data[1] <= 223


def intercept_outgoing(pc: RTCPeerConnection, interceptor: OutgoingInterceptor) -> None:
    """Run ``interceptor`` on every RTP packet ``pc`` sends, before encryption (aiortc's
    ``RTCDtlsTransport._send_rtp``, through which its senders send media and retransmissions;
    RTCP passes untouched), after the interceptors added before it.  A packet dropped here is
    still in its sender's history, so a NACK gets it retransmitted, as after loss on the
    network.  Idempotent per transport and interceptor; call again after each negotiation to
    cover new transports."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.sender.transport
        if transport is not None:
            _chain_on(transport, "_send_rtp", _run_outgoing, interceptor)


def _run_outgoing(chain: list[OutgoingInterceptor], original: Any) -> Any:
    async def intercepted(data: bytes) -> None:
        if _is_rtp(data):
            for each in chain:
                if not each.outgoing_rtp(data):
                    return
        await original(data)

    return intercepted


def drop_outgoing_rtp(
    pc: RTCPeerConnection, rate: float, rng: Any, stats: LossStats | None = None, repairs: bool = True
) -> LossStats:
    """Drop a fraction ``rate`` of the RTP packets ``pc`` sends (see ``intercept_outgoing``), as
    loss on a publisher's uplink; ``stats`` counts them and, given again after a negotiation,
    stays the one interceptor.  ``repairs=False``: retransmissions of what was dropped are
    dropped too, so that the loss reaches the subscribers (``LossStats.repairs``)."""
    stats = _loss(rate, rng, stats)
    if not repairs:
        stats.repairs = False
        for transceiver in pc.getTransceivers():
            rtx = getattr(transceiver.sender, "_rtx_ssrc", None)  # aiortc's RTX stream, if negotiated
            if isinstance(rtx, int):
                stats.rtx_ssrcs.add(rtx)
    intercept_outgoing(pc, stats)
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
