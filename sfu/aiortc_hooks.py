"""Every use of aiortc's and aioice's private API, in one place.

aiortc has no public API for forwarding RTP, so the SFU taps it here:

* ``ReceiverTap`` replaces a publisher-side receiver's ``_handle_rtp_packet``: every decrypted
  packet comes to the SFU before depacketizing, jitter buffering or decoding (none of which then
  happens).  It keeps aiortc's own receiver statistics and bitrate estimator fed, so aiortc's
  RTCP loop still sends correct receiver reports, and REMB goes upstream from the SFU's own
  estimate of the publisher's uplink.
* ``SenderTap`` writes rewritten packets with a subscriber-side sender's DTLS transport,
  updates the counters its sender reports carry (``ReportSchedule`` sends them from one timer
  per event loop instead of aiortc's task per sender), and takes that sender's
  incoming RTCP (NACK, PLI/FIR, REMB) for the SFU, passing reports on to aiortc.
* ``ParkedTrack`` keeps a sender's own send loop waiting forever, so its SSRC, RTX SSRC and SDP
  stay valid while the SFU writes the packets.
* ``configure_ice`` limits the addresses and UDP ports aioice gathers host candidates on.
* ``guard_datagrams`` drops, before aiortc sees them, datagrams that are empty, of no known
  kind, too long, or from a source address ICE has not checked.
* ``widen_srtp_buffers`` and ``accept_rsa_peers`` fix what an independent stack (GStreamer's
  webrtcbin) found: pylibsrtp's buffer is too small for full-MTU packets, and aiortc as DTLS
  client offers no cipher suite for a peer with an RSA certificate.  pylibsrtp's private API is
  used here too, and only here.

The clients' needs (the SDK's simulcast senders, the recorder worker's jitter buffer, taps on a
client's incoming media) are in the sibling ``sfu/aiortc_client.py``; the two are the only
modules that touch aiortc's private API.  aiortc is pinned to ``AIORTC_VERSION``;
``verify_hooks()`` raises ``HookMissing`` naming every hook either module relies on that is
gone, and runs when the SFU starts and in the test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import socket
import struct
import time
import types
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import aioice.ice
import ifaddr
import pylibsrtp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpSdesPacket,
    RtcpSourceInfo,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)

from sfu import fastsend
from sfu.fastsend import PROTECT_RTCP, TRAILERS, SendBatch, pack_address, session_pointer, socket_of
from sfu.rtp import NTP_UNIX_OFFSET
from sfu.udp_mux import MuxTable

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"

_DTLS_CONNECTED = DtlsState.CONNECTED
_R = "_RTCRtpReceiver__"
_S = "_RTCRtpSender__"
_H = "_HeaderExtensionsMap__"

# (what, attribute, how it is checked): "class" attributes are looked up on the class, "instance"
# attributes on a fresh instance built by verify_hooks.
REQUIRED_HOOKS: list[tuple[str, str]] = [
    ("RTCRtpReceiver", "_handle_rtp_packet"),
    ("RTCRtpReceiver", "_handle_rtcp_packet"),
    ("RTCRtpReceiver", "_send_rtcp"),
    ("RTCRtpReceiver", "_send_rtcp_nack"),
    ("RTCRtpReceiver", "_send_rtcp_pli"),
    ("RTCRtpReceiver", f"{_R}stop_decoder"),
    ("receiver", f"{_R}codecs"),
    ("receiver", f"{_R}rtx_ssrc"),
    ("receiver", f"{_R}remote_streams"),
    ("receiver", f"{_R}remote_bitrate_estimator"),
    ("receiver", f"{_R}rtcp_ssrc"),
    ("receiver", f"{_R}decoder_thread"),
    ("RTCRtpSender", "_handle_rtcp_packet"),
    ("RTCRtpSender", "_send_rtcp"),
    ("RTCRtpSender", "_run_rtcp"),
    ("sender", f"{_S}rtcp_started"),
    ("sender", f"{_S}rtcp_exited"),
    ("sender", f"{_S}cname"),
    ("sender", f"{_S}lsr"),
    ("sender", f"{_S}lsr_time"),
    ("sender", "_ssrc"),
    ("sender", "_rtx_ssrc"),
    ("sender", f"{_S}mid"),
    ("sender", f"{_S}started"),
    ("sender", f"{_S}rtx_payload_type"),
    ("sender", f"{_S}rtp_header_extensions_map"),
    ("sender", f"{_S}ntp_timestamp"),
    ("sender", f"{_S}rtp_timestamp"),
    ("sender", f"{_S}packet_count"),
    ("sender", f"{_S}octet_count"),
    ("sender", f"{_S}rtt"),
    ("sender", f"{_S}encoder"),
    ("RTCDtlsTransport", "_send_rtp"),
    ("dtls", "_state"),
    ("dtls", "_tx_srtp"),
    ("dtls", "_RTCDtlsTransport__tx_bytes"),
    ("dtls", "_RTCDtlsTransport__tx_packets"),
    ("dtls", "transport"),
    ("RTCIceTransport", "_connection"),
    ("ice_connection", "_nominated"),
    ("aiortc.rtcdtlstransport", "State"),
    ("RTCDtlsTransport", "_handle_rtp_data"),
    ("RTCDtlsTransport", "_handle_rtcp_data"),
    ("HeaderExtensionsMap", f"{_H}ids"),
    ("aioice.ice", "get_host_addresses"),
    ("aioice.ice", "asyncio"),
    ("aiortc.rtcrtpreceiver", "get_decoder"),
    ("aiortc.rtcrtpsender", "get_encoder"),
    ("transceiver", "_codecs"),
    ("transceiver", "_headerExtensions"),
    ("RTCPeerConnection", "_RTCPeerConnection__cname"),
    ("RtpRouter", "route_rtp"),
    ("RtpRouter", "mid_table"),
    ("RtpRouter", "ssrc_table"),
    ("aiortc.codecs", "HEADER_EXTENSIONS"),
    ("HeaderExtensionIds", "rtp_stream_id"),
    ("HeaderExtensionIds", "repaired_rtp_stream_id"),
    ("RTCCertificate", "_create_ssl_context"),
    ("RTCDtlsTransport", "_setup_srtp"),
    ("dtls", "_rx_srtp"),
    ("srtp_session", "_cdata"),
    ("srtp_session", "_buffer"),
    ("aioice.ice", "StunProtocol"),
    ("aioice.ice", "CandidatePair"),
    ("StunProtocol", "datagram_received"),
    ("StunProtocol", "receiver"),
    ("ice_connection", "data_received"),
    ("ice_connection", "_queue"),
    ("ice_connection", "_check_list"),
    ("CandidatePair", "remote_addr"),
    ("ice_connection", "local_username"),
    ("aioice.ice", "get_host_addresses"),
]


class HookMissing(RuntimeError):
    """aiortc changed: the SFU relies on private attributes that are gone."""


def _probe_transceiver() -> Any:
    """A transceiver that never touches the network, to look at its attributes."""
    from aiortc.rtcrtptransceiver import RTCRtpTransceiver

    def build() -> Any:
        transport = types.SimpleNamespace(state="new")
        return RTCRtpTransceiver(
            "video",
            receiver=RTCRtpReceiver("video", transport),  # type: ignore[arg-type]
            sender=RTCRtpSender("video", transport),  # type: ignore[arg-type]
        )

    return _built(build)


def _probe_transports() -> tuple[Any, Any]:
    """A DTLS transport over an ICE transport, never started, to look at their attributes."""
    from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport

    ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    return RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()]), ice


def _probe_peer_connection() -> Any:
    return _built(lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))


def _built(factory: Callable[[], Any]) -> Any:
    """``factory()``, inside an event loop made for the purpose when none is running (aiortc's
    and aioice's constructors make futures and events of the running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        try:
            async def build() -> Any:
                return factory()

            return loop.run_until_complete(build())
        finally:
            loop.close()
    return factory()


def verify_hooks() -> None:
    import aiortc.codecs
    import aiortc.rtcrtpreceiver
    import aiortc.rtcrtpsender
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport, RtpRouter
    from aiortc.rtp import HeaderExtensionsMap

    problems = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc {aiortc.__version__} is installed; the hooks were written for {AIORTC_VERSION}")
    transceiver: Any = None
    try:
        transceiver = _probe_transceiver()
    except Exception as exc:  # pragma: no cover - only when aiortc's constructors change
        problems.append(f"cannot build a transceiver: {exc}")
    receiver = getattr(transceiver, "receiver", None)
    sender = getattr(transceiver, "sender", None)
    dtls = ice = None
    try:
        dtls, ice = _probe_transports()
    except Exception as exc:  # pragma: no cover - only when aiortc's constructors change
        problems.append(f"cannot build a DTLS transport: {exc}")
    targets: dict[str, Any] = {
        "RTCRtpReceiver": RTCRtpReceiver,
        "RTCRtpSender": RTCRtpSender,
        "RTCDtlsTransport": RTCDtlsTransport,
        "HeaderExtensionsMap": HeaderExtensionsMap(),
        "RtpRouter": RtpRouter(),
        "HeaderExtensionIds": getattr(HeaderExtensionsMap(), f"{_H}ids", None),
        "aiortc.codecs": aiortc.codecs,
        "receiver": receiver,
        "sender": sender,
        "aioice.ice": aioice.ice,
        "aiortc.rtcrtpreceiver": aiortc.rtcrtpreceiver,
        "aiortc.rtcrtpsender": aiortc.rtcrtpsender,
        "transceiver": transceiver,
        "RTCPeerConnection": _probe_peer_connection(),
        "dtls": dtls,
        "RTCIceTransport": ice,
        "ice_connection": getattr(ice, "_connection", None),
        "aiortc.rtcdtlstransport": aiortc.rtcdtlstransport,
        "RTCCertificate": RTCCertificate,
        "srtp_session": pylibsrtp.Session(),
        "StunProtocol": _built(lambda: aioice.ice.StunProtocol(getattr(ice, "_connection", None))),  # type: ignore[arg-type]
        "CandidatePair": aioice.ice.CandidatePair,
    }
    import inspect

    import aiortc.jitterbuffer

    if "._data" not in inspect.getsource(aiortc.jitterbuffer):  # sfu.aiortc_client.jitter_packet
        problems.append("aiortc.jitterbuffer reads packets' _data")
    for what, attribute in REQUIRED_HOOKS:
        target = targets.get(what)
        if target is None or not hasattr(target, attribute):
            problems.append(f"{what}.{attribute}")
    if problems:
        raise HookMissing("aiortc hooks missing: " + ", ".join(problems))


def negotiated_codecs(transceiver: Any) -> list[RTCRtpCodecParameters]:
    """The codecs a transceiver settled on in the last negotiation (RTX included)."""
    return list(transceiver._codecs)


# Simulcast: header extensions and routing ----------------------------------------------------

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
_simulcast_installed = False


def enable_simulcast() -> None:
    """Let aiortc negotiate what simulcast needs; idempotent, process-wide.

    - the RID and repaired-RID header extensions join aiortc's video extensions (its answers
      otherwise drop them, and a browser then sends only its first encoding);
    - RTP whose SSRC is not known yet is routed by its MID header extension before aiortc's
      payload-type fallback, which cannot tell two video m-sections (camera and screen) apart
      and never sees SSRCs for RID simulcast, which offers none."""
    global _simulcast_installed
    if _simulcast_installed:
        return
    import aiortc.codecs
    from aiortc.rtcdtlstransport import RtpRouter
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

    video = aiortc.codecs.HEADER_EXTENSIONS["video"]
    known = {ext.uri for ext in video}
    for ext_id, uri in ((10, RID_URI), (11, REPAIRED_RID_URI)):
        if uri not in known:
            video.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))

    original = RtpRouter.route_rtp

    def route_rtp(self: Any, packet: RtpPacket) -> Any:
        if packet.ssrc not in self.ssrc_table:
            mid = packet.extensions.mid
            receiver = self.mid_table.get(mid) if mid is not None else None
            if receiver is not None:
                self.ssrc_table[packet.ssrc] = receiver
                return receiver
        return original(self, packet)

    RtpRouter.route_rtp = route_rtp  # type: ignore[method-assign]
    _simulcast_installed = True


# SRTP and DTLS: what other WebRTC stacks send -------------------------------------------------

# pylibsrtp protects into a buffer of 1,500 bytes less room for the longest trailer (144 bytes),
# so nothing over 1,356 bytes: a 1,400-byte packet from GStreamer's payloaders (their default
# MTU), rewritten with the SFU's header extensions, did not fit, and the ValueError ended the
# publisher's receive loop.  2,048 bytes take any packet of a 1,500-byte path MTU, after the
# SFU's extensions and RTX's two bytes, with the longest trailer.
SRTP_BUFFER_BYTES = 2048
_srtp_widened = False


def widen_srtp_session(session: pylibsrtp.Session | None) -> None:
    """Give one pylibsrtp session a ``SRTP_BUFFER_BYTES`` buffer (it protects and unprotects in
    place into ``_cdata``, through the ``_buffer`` view of it)."""
    from pylibsrtp._binding import ffi

    if session is None or len(session._cdata) >= SRTP_BUFFER_BYTES:
        return
    session._cdata = ffi.new("char[]", SRTP_BUFFER_BYTES)
    session._buffer = ffi.buffer(session._cdata)


def widen_srtp_buffers() -> None:
    """Every DTLS transport's SRTP sessions get the wider buffer once keyed; idempotent."""
    global _srtp_widened
    if _srtp_widened:
        return
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    original = RTCDtlsTransport._setup_srtp

    def _setup_srtp(self: Any) -> None:
        original(self)
        widen_srtp_session(self._rx_srtp)
        widen_srtp_session(self._tx_srtp)

    RTCDtlsTransport._setup_srtp = _setup_srtp  # type: ignore[method-assign]
    _srtp_widened = True


# aiortc's list, each ECDSA suite followed by its RSA twin.  The suite's signature is the DTLS
# server's: when the SFU answers ``a=setup:active`` it is the client, and a peer whose certificate
# is RSA (webrtcbin's default; browsers accept both) can only pick an ECDHE-RSA suite.
DTLS_CIPHERS = b":".join((
    b"ECDHE-ECDSA-AES128-GCM-SHA256", b"ECDHE-RSA-AES128-GCM-SHA256",
    b"ECDHE-ECDSA-CHACHA20-POLY1305", b"ECDHE-RSA-CHACHA20-POLY1305",
    b"ECDHE-ECDSA-AES128-SHA", b"ECDHE-RSA-AES128-SHA",
    b"ECDHE-ECDSA-AES256-SHA", b"ECDHE-RSA-AES256-SHA",
))
_rsa_accepted = False


def accept_rsa_peers() -> None:
    """Offer the ECDHE-RSA cipher suites beside aiortc's ECDHE-ECDSA ones; idempotent."""
    global _rsa_accepted
    if _rsa_accepted:
        return
    from aiortc.rtcdtlstransport import RTCCertificate

    original = RTCCertificate._create_ssl_context

    def _create_ssl_context(self: Any, srtp_profiles: Any) -> Any:
        context = original(self, srtp_profiles)
        context.set_cipher_list(DTLS_CIPHERS)
        return context

    RTCCertificate._create_ssl_context = _create_ssl_context  # type: ignore[method-assign]
    _rsa_accepted = True


# Datagrams from the internet: only what ICE vouched for reaches aiortc ---------------------------

# What the first byte of a datagram says it is (RFC 7983): STUN 0-3, DTLS 20-63, RTP/RTCP 128-191.
# aioice hands every datagram that is not STUN to aiortc, from any source address, and aiortc's
# DTLS receive loop dies on what it cannot read (``data[0]`` of an empty datagram, a packet
# longer than the SRTP buffer): one datagram from anyone ended a publisher's transport.
MAX_DATAGRAM = 65535
DATA_QUEUE_LIMIT = 1024  # datagrams aioice queues for aiortc per connection before dropping


class DatagramGuard:
    """Counts, by reason, the datagrams dropped before aiortc saw them."""

    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


GUARD = DatagramGuard()
_guard_installed = False


def datagram_verdict(data: bytes, addr: tuple[Any, ...], connection: Any) -> str | None:
    """None to pass a non-STUN datagram to aiortc, else why it is dropped.  Data is taken only
    from remote addresses ICE has checked: the nominated pair's, or a pair whose check succeeded
    (a STUN exchange authenticated with the session's ICE password)."""
    if not data:
        return "empty"
    first = data[0]
    if 20 <= first <= 63:
        pass
    elif 128 <= first <= 191:
        if len(data) > SRTP_BUFFER_BYTES:
            return "oversized"
    else:
        return "unknown_kind"
    for pair in connection._nominated.values():
        if pair.remote_addr == addr:
            return None
    succeeded = aioice.ice.CandidatePair.State.SUCCEEDED
    for pair in connection._check_list:
        if pair.state is succeeded and pair.remote_addr == addr:
            return None
    return "unchecked_source"


def guard_datagrams() -> None:
    """Drop empty, malformed and unvouched-for datagrams before aiortc sees them, and bound the
    queue aioice keeps for aiortc; process-wide, idempotent."""
    global _guard_installed
    if _guard_installed:
        return
    protocol_class = aioice.ice.StunProtocol
    stun_received = protocol_class.datagram_received

    def datagram_received(self: Any, data: Any, addr: tuple[Any, ...]) -> None:
        if data and data[0] < 4:  # STUN: aioice checks it (message integrity included)
            stun_received(self, data, addr)
            return
        verdict = datagram_verdict(data, (addr[0], addr[1]), self.receiver)
        if verdict is not None:
            GUARD.drop(verdict)
            return
        self.receiver.data_received(data, self.local_candidate.component)

    def data_received(self: Any, data: bytes, component: int) -> None:
        rtp = len(data) > 1 and 127 < data[0] < 192 and not is_rtcp(data)
        if rtp:
            dtls = self.__dict__.get("_vc_dtls")
            if dtls is not None and not self.__dict__.get("_vc_rtp_queued") and receive_now(dtls, data):
                return
        if self._queue.qsize() >= DATA_QUEUE_LIMIT:
            GUARD.drop("queue_full")
            return
        self._queue.put_nowait((data, component))
        if rtp:  # later RTP waits behind it (order is kept); RTCP and DTLS need not
            self._vc_rtp_queued = self.__dict__.get("_vc_rtp_queued", 0) + 1

    recvfrom = aioice.ice.Connection.recvfrom

    async def recvfrom_counted(self: Any) -> tuple[bytes, int]:
        result = await recvfrom(self)
        data = result[0]
        if self.__dict__.get("_vc_rtp_queued") and len(data) > 1 and 127 < data[0] < 192 and not is_rtcp(data):
            self._vc_rtp_queued -= 1
        return result

    protocol_class.datagram_received = datagram_received  # type: ignore[method-assign]
    aioice.ice.Connection.data_received = data_received  # type: ignore[method-assign]
    aioice.ice.Connection.recvfrom = recvfrom_counted  # type: ignore[method-assign]
    _guard_parsing()
    _track_receive_now()
    _guard_installed = True


# Receiving SRTP without a task -----------------------------------------------------------------
#
# aiortc hands every datagram through aioice's queue to the DTLS transport's receive task, which
# decrypts it and awaits four coroutines deep before the SFU sees it: per packet, a queue put and
# get, a future and a task step.  For a connection whose receivers are all the SFU's taps, an
# SRTP packet (not RTCP, which the interceptors await) is instead decrypted and handled while its
# datagram is delivered, when no RTP of the connection waits in the queue before it (order is
# kept; RTCP and DTLS in the queue do not hold it up, or a busy node would send a fifth of its
# packets the slow way behind one receiver report).



def enable_receive_now(dtls: Any) -> None:
    """Let ``dtls``'s SRTP packets take ``receive_now`` once it is connected (now, if it is)."""
    dtls._vc_receive_now = True
    if dtls.state == "connected":
        dtls.transport._connection._vc_dtls = dtls


def receive_now(dtls: Any, data: bytes) -> bool:
    """Decrypt and handle one SRTP packet of ``dtls`` now; False leaves it to aiortc's task."""
    srtp = dtls._rx_srtp
    if srtp is None or dtls._state is not _DTLS_CONNECTED or is_rtcp(data):  # (RTCP: for the caller that did not look)
        return False
    dtls._RTCDtlsTransport__rx_bytes += len(data)
    dtls._RTCDtlsTransport__rx_packets += 1
    arrival_ms = int((time.time() + NTP_UNIX_OFFSET) * 1000)
    try:
        plain = fastsend.unprotect(srtp, data)
    except pylibsrtp.Error:
        GUARD.drop("srtp_unprotect")
        return True
    try:
        packet = RtpPacket.parse(plain, dtls._rtp_header_extensions_map)
        receiver = dtls._rtp_router.route_rtp(packet)
    except Exception:  # network input, decrypted: nothing it holds may raise out of delivery
        GUARD.drop("malformed_rtp")
        return True
    if receiver is None:
        return True
    tap = receiver.__dict__.get("_vc_tap")
    if tap is not None:
        tap.handle_now(packet, arrival_ms)
    else:  # not the SFU's (yet): aiortc's own handling, in order for that receiver
        asyncio.get_running_loop().create_task(receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_ms))
    return True


def _track_receive_now() -> None:
    """A DTLS transport marked by ``enable_receive_now`` offers its connection the fast path
    when it connects, and withdraws it when it closes or fails."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    set_state = RTCDtlsTransport._set_state

    def _set_state(self: Any, state: Any) -> None:
        set_state(self, state)
        if not getattr(self, "_vc_receive_now", False):
            return
        connection = self.transport._connection
        if state is _DTLS_CONNECTED:
            connection._vc_dtls = self
        elif connection.__dict__.get("_vc_dtls") is self:
            del connection._vc_dtls

    RTCDtlsTransport._set_state = _set_state  # type: ignore[method-assign]


def _guard_parsing() -> None:
    """aiortc parses decrypted RTP and RTCP catching only ValueError, but its parsers also raise
    struct.error (a header extension element of the wrong size), which ended the transport:
    such a packet is dropped and counted instead."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    rtp, rtcp = RTCDtlsTransport._handle_rtp_data, RTCDtlsTransport._handle_rtcp_data

    async def _handle_rtp_data(self: Any, data: bytes, arrival_time_ms: int) -> None:
        try:
            await rtp(self, data, arrival_time_ms)
        except struct.error:
            GUARD.drop("malformed_rtp")

    async def _handle_rtcp_data(self: Any, data: bytes) -> None:
        try:
            await rtcp(self, data)
        except struct.error:
            GUARD.drop("malformed_rtcp")

    RTCDtlsTransport._handle_rtp_data = _handle_rtp_data  # type: ignore[method-assign]
    RTCDtlsTransport._handle_rtcp_data = _handle_rtcp_data  # type: ignore[method-assign]


# Codec use counters: the proof that the forwarding path never decodes or encodes -------------


class CodecCounter:
    """Counts decoders and encoders aiortc creates in this process."""

    def __init__(self) -> None:
        self.decoders = 0
        self.encoders = 0
        self.listeners: list[Callable[[str, str], None]] = []

    def _record(self, kind: str, codec: RTCRtpCodecParameters) -> None:
        if kind == "decoder":
            self.decoders += 1
        else:
            self.encoders += 1
        for listener in self.listeners:
            listener(kind, codec.mimeType)


CODECS = CodecCounter()
_codec_counting_installed = False


def count_codec_instances() -> CodecCounter:
    """Wrap aiortc's decoder and encoder factories (the only places it creates codecs) so that
    every instance is counted; idempotent."""
    global _codec_counting_installed
    import aiortc.rtcrtpreceiver
    import aiortc.rtcrtpsender

    if not _codec_counting_installed:
        original_decoder = aiortc.rtcrtpreceiver.get_decoder
        original_encoder = aiortc.rtcrtpsender.get_encoder

        def get_decoder(codec: RTCRtpCodecParameters) -> Any:
            CODECS._record("decoder", codec)
            return original_decoder(codec)

        def get_encoder(codec: RTCRtpCodecParameters) -> Any:
            CODECS._record("encoder", codec)
            return original_encoder(codec)

        aiortc.rtcrtpreceiver.get_decoder = get_decoder
        aiortc.rtcrtpsender.get_encoder = get_encoder
        _codec_counting_installed = True
    return CODECS


# Publisher side ------------------------------------------------------------------------------

PacketHandler = Callable[[RtpPacket, RTCRtpCodecParameters, int, bool], Awaitable[None]]
PacketHandlerNow = Callable[[RtpPacket, RTCRtpCodecParameters, int, bool], None]
ErrorHandler = Callable[[Exception], None]


class Interceptor:
    """One feature on a tap's streams, as pion's interceptors are: the feature keeps its own
    state, and the tap only runs its list of them in order.  Each method may change or consume
    what passes; these defaults pass everything on unchanged."""

    async def incoming_rtcp(self, packet: Any) -> bool:
        """An RTCP packet from the peer; True when consumed (later interceptors and aiortc do not
        see it)."""
        return False

    def outgoing_remb(self, bitrate: float) -> float:
        """The REMB estimate about to go to the peer, in bits/s."""
        return bitrate


class ReceiverTap:
    """The SFU's view of a publisher-side ``RTCRtpReceiver``."""

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        on_packet: PacketHandler,
        interceptors: Sequence[Interceptor] = (),
        on_error: ErrorHandler | None = None,
        on_packet_now: PacketHandlerNow | None = None,
    ) -> None:
        """``on_packet_now``: the same handler, synchronous.  With it, the publisher's SRTP
        packets skip aiortc's queue and receive task: they are decrypted and handled as their
        datagram arrives (see ``receive_now``)."""
        self.receiver = receiver
        self._on_packet = on_packet
        self._on_packet_now = on_packet_now
        self._rtcp_sends: set[asyncio.Task[None]] = set()
        self.handled_now = 0  # packets that took ``handle_now`` (the rest took aiortc's task)
        self.interceptors = list(interceptors)
        self._on_error = on_error
        self.errors = 0
        self._decoder_stopped = False
        receiver._handle_rtp_packet = self._handle  # type: ignore[method-assign]
        self._handle_rtcp_stock = receiver._handle_rtcp_packet
        receiver._handle_rtcp_packet = self._handle_rtcp  # type: ignore[method-assign]
        self._send_rtcp_stock = receiver._send_rtcp
        receiver._send_rtcp = self._send_rtcp  # type: ignore[method-assign]
        self.unsendable_rtcp = 0
        if on_packet_now is not None:
            receiver._vc_tap = self  # type: ignore[attr-defined]
            enable_receive_now(receiver.transport)

    async def _send_rtcp(self, packet: Any) -> None:
        """aiortc's RTCP task ends, silently, on any error but a cancellation, and stopping the
        receiver then waits for it forever.  A report that cannot be packed (its jitter comes
        from the publisher's own timestamps and can pass 32 bits) is dropped and counted."""
        try:
            await self._send_rtcp_stock(packet)
        except Exception as exc:  # struct.error for that jitter; whatever else, the same hang
            self.unsendable_rtcp += 1
            if self.unsendable_rtcp == 1:
                log.warning("an RTCP packet for a publisher could not be packed: %s", exc)

    async def _handle_rtcp(self, packet: Any) -> None:
        """The publisher's RTCP: aiortc keeps its statistics, then the interceptors see it."""
        await self._handle_rtcp_stock(packet)
        for interceptor in self.interceptors:
            if await interceptor.incoming_rtcp(packet):
                return

    @property
    def codecs(self) -> dict[int, RTCRtpCodecParameters]:
        return getattr(self.receiver, f"{_R}codecs")

    def stop_decoder(self) -> None:
        """The receiver starts a decoder thread that the SFU never feeds: stop it."""
        if getattr(self.receiver, f"{_R}decoder_thread") is not None:
            getattr(self.receiver, f"{_R}stop_decoder")()

    async def _handle(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc's DTLS receive loop awaits this for every packet of the publisher: whatever
        fails in the SFU's handling stays here, counted and told to ``on_error``.  Raised, it
        would end that loop, the publisher's transport with it, and the publisher."""
        try:
            await self._receive(packet, arrival_time_ms)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self._on_error is not None:
            self._on_error(exc)
        elif self.errors == 1:
            log.error("handling a publisher's packet failed", exc_info=exc)

    async def _receive(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        prepared = self._prepare(packet, arrival_time_ms)
        if prepared is None:
            return
        packet, codec, repaired, remb = prepared
        if remb is not None:
            await self.receiver._send_rtcp(remb)
        await self._on_packet(packet, codec, arrival_time_ms, repaired)

    def handle_now(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """``_handle`` without a coroutine: the packet handled now, a REMB sent by a task."""
        self.handled_now += 1
        try:
            prepared = self._prepare(packet, arrival_time_ms)
            if prepared is None:
                return
            packet, codec, repaired, remb = prepared
            if remb is not None:
                task = asyncio.get_running_loop().create_task(self.receiver._send_rtcp(remb))
                self._rtcp_sends.add(task)
                task.add_done_callback(self._rtcp_sends.discard)
            assert self._on_packet_now is not None
            self._on_packet_now(packet, codec, arrival_time_ms, repaired)
        except Exception as exc:
            self._failed(exc)

    def _prepare(
        self, packet: RtpPacket, arrival_time_ms: int
    ) -> tuple[RtpPacket, RTCRtpCodecParameters, bool, RtcpPsfbPacket | None] | None:
        """What aiortc's receiver keeps of a packet (its statistics and bitrate estimate), and
        the packet as the SFU takes it (RTX unwrapped): None when it is of no known codec."""
        receiver = self.receiver
        if not self._decoder_stopped:
            self._decoder_stopped = True
            self.stop_decoder()
        codecs = getattr(receiver, f"{_R}codecs")
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return None
        streams: dict[int, StreamStatistics] = getattr(receiver, f"{_R}remote_streams")
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        estimator: RemoteBitrateEstimator | None = getattr(receiver, f"{_R}remote_bitrate_estimator")
        remb_packet = None
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            rtcp_ssrc = getattr(receiver, f"{_R}rtcp_ssrc")
            if remb is not None and rtcp_ssrc is not None:
                estimate, ssrcs = remb
                bitrate = float(estimate)
                for interceptor in self.interceptors:
                    bitrate = interceptor.outgoing_remb(bitrate)
                remb_packet = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(int(bitrate), ssrcs)
                )
        repaired = False
        if is_rtx(codec):
            apt = codec.parameters.get("apt")
            if not isinstance(apt, int) or apt not in codecs or len(packet.payload) < 2:
                return None
            # The up-track maps the RTX SSRC to its layer (FID group, repaired RID, or the one
            # media SSRC of a plain stream); the SSRC stays the RTX one here.
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=packet.ssrc)
            codec = codecs[apt]
            repaired = True
        return packet, codec, repaired, remb_packet

    def rtx_media_ssrc(self, rtx_ssrc: int) -> int | None:
        """The media SSRC an RTX SSRC repairs, as the SDP's FID group said."""
        return getattr(self.receiver, f"{_R}rtx_ssrc").get(rtx_ssrc)

    async def send_nack(self, media_ssrc: int, lost: list[int]) -> None:
        """NACK unwrapped sequence numbers: one packet per run that does not cross the 16-bit
        wrap (aiortc packs a NACK from its first number up, and [65535, 0] would go backwards)."""
        for run in nack_runs(lost):
            await self.receiver._send_rtcp_nack(media_ssrc, run)

    async def send_pli(self, media_ssrc: int) -> None:
        await self.receiver._send_rtcp_pli(media_ssrc)


# Subscriber side -----------------------------------------------------------------------------

# A datagram socket whose kernel buffer is full queues in user space (uvloop: in libuv) without a
# bound; past this many bytes queued for one subscriber, its packets are dropped instead.
SEND_QUEUE_BYTES = 256 * 1024


class Congested(ConnectionError):
    """The subscriber's socket has more queued than ``SEND_QUEUE_BYTES``: the packet is dropped."""


def _queue_size_of(transport: Any) -> Callable[[], int]:
    """How to read what ``transport`` holds in user space (a TURN-relayed pair's transport does
    not say: it counts as nothing queued)."""
    try:
        transport.get_write_buffer_size()
    except (NotImplementedError, AttributeError):
        return lambda: 0
    return transport.get_write_buffer_size


def _route_of(pair: Any) -> tuple[int, bytes, Callable[[], bool], Any, tuple[str, int], Any] | None:
    """Where ``SenderTap.send_soon`` writes for ``pair``: the descriptor of the socket under its
    transport (the shared one of ``udp_port``), the remote address packed, ``blocked`` (the
    transport is closing, so its descriptor may soon be another socket's, or it holds a queue
    in user space that must drain first, in order), the transport, the address and the mux
    table; None for a transport without a socket of this process (TURN) or without the helper."""
    if fastsend.NATIVE is None:
        return None
    transport = pair.protocol.transport
    under, table = transport, None
    if isinstance(transport, _MuxedTransport):
        if transport.shared.transport is None:
            return None
        under, table = transport.shared.transport, transport.shared.table
    found = socket_of(under)
    if found is None:
        return None
    fd, family = found
    address = pair.remote_addr
    try:
        sockaddr = pack_address(family, address[0], address[1])
    except (OSError, ValueError):  # an address of the other family
        return None
    queued, closing, under_closing = _queue_size_of(under), transport.is_closing, under.is_closing

    def blocked() -> bool:
        return closing() or under_closing() or queued() > 0

    return fd, sockaddr, blocked, transport, (address[0], address[1]), table


class SenderTap:
    """The SFU's view of a subscriber-side ``RTCRtpSender`` whose track is parked."""

    def __init__(self, sender: RTCRtpSender, interceptors: Sequence[Interceptor] = ()) -> None:
        self.sender = sender
        self.interceptors = list(interceptors)
        self._transport: Any = None
        self._queued: Callable[[], int] = lambda: 0
        # send_soon's route for the nominated pair (see _route_of)
        self._pair: Any = None
        self._route: tuple[int, bytes, Callable[[], bool], Any, tuple[str, int], Any] | None = None
        self._srtp: Any = None
        self._session = 0
        self._trailer = 16
        self._original_rtcp = sender._handle_rtcp_packet
        sender._handle_rtcp_packet = self._rtcp  # type: ignore[method-assign]
        sender._send_rtcp = self._send_rtcp  # type: ignore[method-assign]
        sender._vc_tap = self  # type: ignore[attr-defined]  # ReportSchedule writes through it

    @property
    def ready(self) -> bool:
        """The sender has been started by negotiation (mid, extensions and RTX known)."""
        return bool(getattr(self.sender, f"{_S}started"))

    @property
    def ssrc(self) -> int:
        return self.sender._ssrc

    @property
    def rtx_ssrc(self) -> int:
        return self.sender._rtx_ssrc

    @property
    def mid(self) -> str | None:
        return getattr(self.sender, f"{_S}mid")

    @property
    def rtx_payload_type(self) -> int | None:
        return getattr(self.sender, f"{_S}rtx_payload_type")

    @property
    def rtt(self) -> float | None:
        return getattr(self.sender, f"{_S}rtt")

    @property
    def has_encoder(self) -> bool:
        return getattr(self.sender, f"{_S}encoder") is not None

    def extension_ids(self) -> dict[str, int]:
        """Negotiated header extension ids by name (mid, abs_send_time, audio_level, ...)."""
        ids = getattr(getattr(self.sender, f"{_S}rtp_header_extensions_map"), f"{_H}ids")
        names = ("mid", "abs_send_time", "audio_level", "rtp_stream_id", "repaired_rtp_stream_id")
        return {name: getattr(ids, name) for name in names if getattr(ids, name, None)}

    async def send(self, data: bytes) -> None:
        await self.sender.transport._send_rtp(data)

    def _connected(self) -> tuple[Any, Any]:
        """The subscriber's DTLS transport and its nominated ICE pair; ConnectionError when it
        is not connected."""
        dtls = self.sender.transport
        if dtls._state is not _DTLS_CONNECTED:
            raise ConnectionError("the subscriber's DTLS transport is not connected")
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("the subscriber's ICE connection has no nominated pair")
        return dtls, pair

    def _session_of(self, dtls: Any) -> int:
        """The native pointer of the transport's SRTP sending session (kept while it is the same)."""
        srtp = dtls._tx_srtp
        if srtp is not self._srtp:
            self._srtp, self._session = srtp, session_pointer(srtp)
            self._trailer = TRAILERS.get(dtls._ssl.get_selected_srtp_profile(), 16)
        return self._session

    async def _send_rtcp(self, packets: list[Any]) -> None:
        """aiortc's sender report loop, once a second per sender, wrote through four awaits (the
        DTLS transport, aioice's connection): written now instead, as forwarded packets are."""
        try:
            self.send_now(b"".join(bytes(packet) for packet in packets), rtcp=True)
        except ConnectionError:
            pass

    def send_now(self, data: bytes, rtcp: bool = False) -> None:
        """Protect and write one RTP packet without a coroutine: what ``_send_rtp`` and aioice's
        ``Connection.send`` do, four awaits deep, all synchronous underneath (a TURN-relayed
        pair's transport queues the write itself).  ConnectionError when not connected."""
        dtls, pair = self._connected()
        transport = pair.protocol.transport
        if transport is not self._transport:
            self._transport, self._queued = transport, _queue_size_of(transport)
        if self._queued() > SEND_QUEUE_BYTES:
            raise Congested("the subscriber's socket has a full send queue")
        data = dtls._tx_srtp.protect_rtcp(data) if rtcp else dtls._tx_srtp.protect(data)
        transport.sendto(data, pair.remote_addr)
        dtls._RTCDtlsTransport__tx_bytes += len(data)
        dtls._RTCDtlsTransport__tx_packets += 1

    def send_soon(self, data: bytes, batch: SendBatch, rtcp: bool = False) -> None:
        """``send_now``, with the protect and the write left to ``batch`` (the native helper)
        when the nominated pair's transport is a UDP socket of this process with nothing queued
        in user space; otherwise (a TURN-relayed pair, a queue) ``send_now`` itself.  ``rtcp``:
        ``data`` is RTCP (and ``batch`` one that protects RTCP)."""
        dtls, pair = self._connected()
        if pair is not self._pair:
            self._pair, self._route = pair, _route_of(pair)
        route = self._route
        if route is None or route[2]():
            self.send_now(data, rtcp)
            return
        session = self._session_of(dtls)
        fd, sockaddr, _, transport, address, table = route
        if table is not None and table.owners.get(address) is not transport:
            table.sent(transport, address, data)
        batch.items.append((fd, session, sockaddr, data, transport, address))
        dtls._RTCDtlsTransport__tx_bytes += len(data) + self._trailer + (4 if rtcp else 0)  # SRTCP's index
        dtls._RTCDtlsTransport__tx_packets += 1

    def route_lane(self, lane: Any) -> bool:
        """Point a native lane (``sfu._fastsend.Lane``) at this subscriber: its SRTP session, the
        socket under the nominated pair (``udp_port``'s shared one, or the connection's own) and
        the remote address.  For every packet the lane checks that the DTLS transport is
        connected, the nominated pair the same, and the socket's transport neither closing (its
        descriptor could become another socket's) nor holding a queue.  False when there is no
        such route now (a TURN relay, a queue, not connected)."""
        dtls = self.sender.transport
        if fastsend.NATIVE is None or dtls._state is not _DTLS_CONNECTED or dtls._tx_srtp is None:
            return False
        connection = dtls.transport._connection
        pair = connection._nominated.get(1)
        if pair is None:
            return False
        route = _route_of(pair)
        if route is None or route[2]():
            return False
        fd, sockaddr, _, transport, address, table = route
        if table is not None and table.owners.get(address) is not transport:
            return False
        session = self._session_of(dtls)
        under = transport.shared.transport if table is not None else transport
        lane.route(fd, dtls._tx_srtp, session, sockaddr, dtls, _DTLS_CONNECTED, under,
                   transport if table is not None else None, connection, pair)
        return True

    def queue_protected(self, data: bytes) -> None:
        """A copy a lane protected but the socket would not take: queued on the transport."""
        try:
            _, pair = self._connected()
            pair.protocol.transport.sendto(data, pair.remote_addr)
        except Exception:  # not connected, or closing meanwhile: lost, as a datagram may be
            return

    def record_lane(self, packets: int, octets: int, protected: int, ntp_time: int, rtp_timestamp: int) -> None:
        """What a native lane sent since it was last read: the counts of the sender's reports and
        of the DTLS transport's statistics, as ``record_sent`` and ``send_now`` keep them."""
        sender = self.sender
        sender._RTCRtpSender__ntp_timestamp = ntp_time
        sender._RTCRtpSender__rtp_timestamp = rtp_timestamp
        sender._RTCRtpSender__packet_count += packets
        sender._RTCRtpSender__octet_count += octets
        dtls = sender.transport
        dtls._RTCDtlsTransport__tx_bytes += protected
        dtls._RTCDtlsTransport__tx_packets += packets

    def record_sent(self, ntp_time: int, rtp_timestamp: int, octets: int) -> None:
        """What the sender's next report carries."""
        sender = self.sender
        sender._RTCRtpSender__ntp_timestamp = ntp_time
        sender._RTCRtpSender__rtp_timestamp = rtp_timestamp
        sender._RTCRtpSender__packet_count += 1
        sender._RTCRtpSender__octet_count += octets

    async def _rtcp(self, packet: Any) -> None:
        """The subscriber's RTCP: the interceptors first (NACK, PLI/FIR and REMB are the SFU's),
        then aiortc (which keeps RTT and statistics from reports)."""
        for interceptor in self.interceptors:
            if await interceptor.incoming_rtcp(packet):
                return
        await self._original_rtcp(packet)


# Sender reports from one timer ------------------------------------------------------------------
#
# aiortc runs a task per sender that sleeps 0.5-1.5 s, then sends a sender report (SR and SDES):
# at 50 subscribers of audio and video, a hundred timer wake-ups and task steps a second, each
# with its own protect and write.  The SFU's senders (``scheduled_reports``) get them from one
# timer per event loop instead, at the same random intervals, protected and written together.

REPORT_TICK = 0.2  # how often the timer looks for reports due (they are due 0.5-1.5 s apart)
_SR = struct.Struct("!BBHLQLLL")


def sender_report(sender: RTCRtpSender) -> bytes:
    """The SR (no reception blocks) and SDES (the CNAME) aiortc's loop would send now; records
    the report's time for the round-trip time, as aiortc's loop does."""
    ntp = getattr(sender, f"{_S}ntp_timestamp")
    setattr(sender, f"{_S}lsr", (ntp >> 16) & 0xFFFFFFFF)
    setattr(sender, f"{_S}lsr_time", time.time())
    report = _SR.pack(
        0x80, 200, 6, sender._ssrc, ntp & 0xFFFFFFFFFFFFFFFF, getattr(sender, f"{_S}rtp_timestamp") & 0xFFFFFFFF,
        getattr(sender, f"{_S}packet_count") & 0xFFFFFFFF, getattr(sender, f"{_S}octet_count") & 0xFFFFFFFF,
    )
    sdes = sender.__dict__.get("_vc_sdes")
    if sdes is None:
        cname = getattr(sender, f"{_S}cname")
        sdes = b"" if cname is None else bytes(
            RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode("utf8"))])])
        )
        sender._vc_sdes = sdes  # type: ignore[attr-defined]
    return report + sdes


class ReportSchedule:
    """The scheduled senders of one event loop and when each one's next report is due."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[RTCRtpSender, float] = {}
        self.sent = 0
        self.failed = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, sender: RTCRtpSender, now: float) -> None:
        self.due[sender] = now + 0.5 + random.random()
        if self._timer is None:
            self._timer = self.loop.call_later(REPORT_TICK, self._run)

    def discard(self, sender: RTCRtpSender) -> None:
        self.due.pop(sender, None)
        if not self.due and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _run(self) -> None:
        self._timer = None
        try:
            self.tick(time.monotonic())
        except Exception:  # a report is not worth the node: the next tick tries again
            log.exception("sender reports failed")
        if self.due and self._timer is None:
            self._timer = self.loop.call_later(REPORT_TICK, self._run)

    def tick(self, now: float) -> None:
        """Every report due: written through the sender's tap (the native helper protects and
        writes them together where it can), or by aiortc for a sender without one yet."""
        batch = SendBatch(PROTECT_RTCP) if fastsend.NATIVE is not None else None
        for sender, due in list(self.due.items()):
            if due > now:
                continue
            self.due[sender] = now + 0.5 + random.random()
            tap: SenderTap | None = sender.__dict__.get("_vc_tap")
            try:
                data = sender_report(sender)
                if tap is None:
                    task = self.loop.create_task(_send_plain(sender, data))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif batch is None:
                    tap.send_now(data, rtcp=True)
                else:
                    tap.send_soon(data, batch, rtcp=True)
            except ConnectionError:  # not connected (yet, or any more): no report, as aiortc's loop
                continue
            except Exception:  # one sender's report is not worth the others'
                self.failed += 1
                if self.failed & (self.failed - 1) == 0:
                    log.exception("a sender report failed (%d so far)", self.failed)
                continue
            self.sent += 1
        if batch is not None:
            batch.flush()


async def _send_plain(sender: RTCRtpSender, data: bytes) -> None:
    """A report through aiortc's transport (a sender the SFU has no tap on yet)."""
    try:
        await sender.transport._send_rtp(data)
    except ConnectionError:
        pass
    except Exception:  # the transport is not one that sends (yet): the next report tries again
        log.debug("a sender report could not be sent", exc_info=True)


_REPORTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReportSchedule] = weakref.WeakKeyDictionary()


def reports_of(loop: asyncio.AbstractEventLoop) -> ReportSchedule:
    reports = _REPORTS.get(loop)
    if reports is None:
        reports = _REPORTS[loop] = ReportSchedule(loop)
    return reports


def scheduled_reports(sender: RTCRtpSender) -> None:
    """``sender`` (of the SFU, not yet started) gets its reports from the event loop's
    ``ReportSchedule`` instead of a task of its own (see ``schedule_sender_reports``)."""
    sender._vc_scheduled = True  # type: ignore[attr-defined]


def schedule_sender_reports() -> None:
    """aiortc's ``RTCRtpSender._run_rtcp``, for the senders marked by ``scheduled_reports``:
    no loop of its own, but a place in the event loop's schedule until ``stop()`` cancels it;
    then the RTCP BYE, as aiortc's loop ends.  Other senders (a client's) keep aiortc's loop."""
    if getattr(RTCRtpSender._run_rtcp, "_vc_scheduled", False):
        return
    stock = RTCRtpSender._run_rtcp

    async def _run_rtcp(self: Any) -> None:
        if not self.__dict__.get("_vc_scheduled"):
            await stock(self)
            return
        getattr(self, f"{_S}rtcp_started").set()
        loop = asyncio.get_running_loop()
        reports = reports_of(loop)
        reports.add(self, time.monotonic())
        try:
            await loop.create_future()  # until stop() cancels
        except asyncio.CancelledError:
            pass
        finally:
            reports.discard(self)
        await self._send_rtcp([RtcpByePacket(sources=[self._ssrc])])
        getattr(self, f"{_S}rtcp_exited").set()

    _run_rtcp._vc_scheduled = True  # type: ignore[attr-defined]
    RTCRtpSender._run_rtcp = _run_rtcp  # type: ignore[method-assign]


def nack_runs(lost: Iterable[int]) -> list[list[int]]:
    """Unwrapped sequence numbers as 16-bit runs, ascending, none crossing the wrap."""
    runs: dict[int, list[int]] = {}
    for sequence in sorted(set(lost)):
        runs.setdefault(sequence >> 16, []).append(sequence & 0xFFFF)
    return list(runs.values())


def remb_of(packet: RtcpPsfbPacket) -> tuple[int, tuple[int, ...]] | None:
    """A REMB's bit rate and the SSRCs it speaks for (None: not a REMB aiortc can read)."""
    try:
        bitrate, ssrcs = unpack_remb_fci(packet.fci)
    except ValueError:
        return None
    return bitrate, tuple(sorted(ssrcs))


class ParkedTrack(MediaStreamTrack):
    """A track whose ``recv()`` never returns: the sender's own loop waits on it for ever."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Event().wait()


# ICE: which addresses and ports host candidates use --------------------------------------------


class _IceSettings:
    def __init__(self) -> None:
        self.addresses: list[str] | None = None
        self.port_range: tuple[int, int] | None = None
        self.udp_port: int | None = None
        self._ports: Iterator[int] | None = None

    def next_ports(self) -> Iterable[int]:
        assert self.port_range is not None and self._ports is not None
        low, high = self.port_range
        return [next(self._ports) for _ in range(high - low + 1)]


_ICE = _IceSettings()
_original_get_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    found = _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    if _ICE.addresses is None:
        return found
    allowed = set()
    for entry in _ICE.addresses:
        try:
            allowed.add(str(ipaddress.ip_address(entry)))
        except ValueError:  # an interface name
            for adapter in ifaddr.get_adapters():
                if adapter.nice_name == entry or adapter.name == entry:
                    allowed.update(str(ip.ip) if isinstance(ip.ip, str) else ip.ip[0] for ip in adapter.ips)
    candidates = [address for address in found if address in allowed]
    # Loopback is not in aioice's own list (it skips it); add it when explicitly allowed.
    for address in sorted(allowed):
        if address not in candidates and ipaddress.ip_address(address).is_loopback:
            if (use_ipv4 and ":" not in address) or (use_ipv6 and ":" in address):
                candidates.append(address)
    return candidates


class _PortRangeLoop:
    """The running loop, except that UDP endpoints bound to port 0 take a port from the range."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        if _ICE.udp_port is not None and local_addr is not None and local_addr[1] == 0 and not kwargs:
            shared = await _shared_socket(self._loop, local_addr[0])
            return shared.endpoint(factory)
        if _ICE.port_range is None or local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(factory, local_addr=local_addr, **kwargs)
        for port in _ICE.next_ports():
            try:
                return await self._loop.create_datagram_endpoint(factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError:
                continue
        raise OSError(f"no free UDP port in {_ICE.port_range[0]}-{_ICE.port_range[1]} on {local_addr[0]}")


# ICE on one UDP port (``udp_port``): one socket per local address, shared by every connection --

SHARED_SOCKET_BUFFER = 4 * 1024 * 1024  # bytes asked of the kernel each way (it caps them)


class _SharedSocket(asyncio.DatagramProtocol):
    """The UDP socket on (address, ``udp_port``) that every ICE connection of the process uses
    for its host candidate on that address; ``MuxTable`` says which connection a datagram is
    for (a STUN request's USERNAME, then the source address)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.table = MuxTable()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, SHARED_SOCKET_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        address = (addr[0], addr[1])
        endpoint = self.table.route(data, address)
        if endpoint is None:
            GUARD.drop("no_connection")
            return
        endpoint.protocol.datagram_received(data, address)  # type: ignore[attr-defined]

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for one remote address: the connections' own checks notice

    def endpoint(self, factory: Callable[[], Any]) -> tuple[_MuxedTransport, Any]:
        """What ``create_datagram_endpoint`` returns to aioice: its protocol on this socket."""
        protocol = factory()
        transport = _MuxedTransport(self, protocol)
        self.table.add(transport, protocol.receiver.local_username)
        protocol.connection_made(transport)
        return transport, protocol


class _MuxedTransport(asyncio.DatagramTransport):
    """One ICE connection's view of the shared socket."""

    def __init__(self, shared: _SharedSocket, protocol: Any) -> None:
        super().__init__()
        self.shared = shared
        self.protocol = protocol
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing or self.shared.transport is None:
            return
        self.shared.table.sent(self, addr if len(addr) == 2 else (addr[0], addr[1]), data)
        self.shared.transport.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname" and self.shared.transport is not None:
            return self.shared.transport.get_extra_info("sockname")
        return default  # no "socket": its options are the shared socket's, set once

    def get_write_buffer_size(self) -> int:
        return self.shared.transport.get_write_buffer_size() if self.shared.transport is not None else 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self.shared.table.remove(self)
            self.shared.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


_SHARED: dict[str, _SharedSocket] = {}


async def _shared_socket(loop: asyncio.AbstractEventLoop, address: str) -> _SharedSocket:
    shared = _SHARED.get(address)
    if shared is None or shared.loop is not loop or shared.transport is None or shared.transport.is_closing():
        assert _ICE.udp_port is not None
        shared = _SharedSocket(loop)
        await loop.create_datagram_endpoint(lambda: shared, local_addr=(address, _ICE.udp_port))
        _SHARED[address] = shared
    return shared


async def bind_udp_port() -> list[tuple[str, int]]:
    """Open the shared sockets of ``udp_port`` on every address host candidates use, now, so
    that a port already taken stops the node at start rather than failing every connection;
    the (address, port) pairs bound.  Nothing without ``udp_port``."""
    if _ICE.udp_port is None:
        return []
    loop = asyncio.get_running_loop()
    bound = []
    for address in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True):
        await _shared_socket(loop, address)
        bound.append((address, _ICE.udp_port))
    return bound


def single_udp_port() -> bool:
    """Whether host candidates share one UDP port (``configure_ice(udp_port=...)``)."""
    return _ICE.udp_port is not None


class _AsyncioForAioice(types.ModuleType):
    """``asyncio`` as aioice.ice sees it: the same, but for the port range."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> Any:
        return _PortRangeLoop(asyncio.get_running_loop())


def configure_ice(
    addresses: list[str] | None = None, port_range: tuple[int, int] | None = None, udp_port: int | None = None
) -> None:
    """Limit host candidates to ``addresses`` (IPs or interface names; None: every interface
    aioice finds) and their UDP ports to ``port_range`` (inclusive; None: any port), or put them
    all on the one ``udp_port`` (one socket per address, shared).  Applies to every peer
    connection of this process."""
    if port_range is not None and udp_port is not None:
        raise ValueError("choose a UDP port range or one UDP port, not both")
    if udp_port is not None and not 1024 <= udp_port <= 65535:
        raise ValueError("the UDP port must lie within 1024-65535")
    if port_range is not None:
        low, high = port_range
        if not 1024 <= low <= high <= 65535:
            raise ValueError("the UDP port range must lie within 1024-65535")
        _ICE._ports = itertools.cycle(range(low, high + 1))
    _ICE.addresses = list(addresses) if addresses is not None else None
    _ICE.port_range = port_range
    if udp_port != _ICE.udp_port:
        for shared in _SHARED.values():
            if shared.transport is not None:
                shared.transport.close()
        _SHARED.clear()
    _ICE.udp_port = udp_port
    aioice.ice.get_host_addresses = _host_addresses
    if not isinstance(aioice.ice.asyncio, _AsyncioForAioice):
        aioice.ice.asyncio = _AsyncioForAioice("asyncio")
