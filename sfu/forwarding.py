"""Up-tracks (one per published track) and down-tracks (one per subscriber of it).

An up-track receives every packet of its publisher from the receiver tap, unwraps its sequence
number and timestamp, caches it once, tracks upstream loss, and hands it to each down-track.  A
down-track waits for a keyframe (asking upstream for one), rewrites SSRC, sequence number,
timestamp, payload type and header extensions for its subscriber, writes the packet with the
subscriber's transport, and answers its subscriber's NACKs from the up-track's cache (as RTX where
negotiated), passing misses upstream.  Nothing here decodes or encodes media.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_APP, RTCP_RTPFB_NACK, RtpPacket

from sfu.aiortc_hooks import ReceiverTap, SenderTap, remb_bitrate
from sfu.keyframe import is_keyframe
from sfu.metrics import SfuMetrics
from sfu.munger import Munger
from sfu.nack import LossTracker, RetransmitFilter
from sfu.packet_cache import CachedPacket, PacketCache
from sfu.rtp import Unwrapper, abs_send_time, audio_level, build_packet, extension_block, rtx_payload

log = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL = 0.5  # seconds between PLIs sent upstream for one track


class UpTrack:
    def __init__(
        self,
        track_id: str,
        owner: str,
        kind: str,
        source: str,
        metrics: SfuMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.track_id = track_id
        self.owner = owner
        self.kind = kind
        self.source = source
        self.metrics = metrics
        self.clock = clock
        self.codec: RTCRtpCodecParameters | None = None
        self.media_ssrc: int | None = None
        self.muted = False  # as the publisher says
        self.blocked = False  # muted by a host: nothing is forwarded
        self.downtracks: list[DownTrack] = []
        self.cache = PacketCache(512 if kind == "video" else 64)
        self.losses = LossTracker()
        self._seq = Unwrapper(16)
        self._ts = Unwrapper(32)
        self._last_keyframe_request = -KEYFRAME_REQUEST_INTERVAL
        self.tap: ReceiverTap | None = None
        self.packets = 0

    def attach(self, receiver: RTCRtpReceiver) -> None:
        self.tap = ReceiverTap(receiver, self._on_packet)

    def info(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "participant": self.owner,
            "kind": self.kind,
            "source": self.source,
            "muted": self.muted or self.blocked,
            "codec": self.codec.mimeType if self.codec else None,
        }

    async def _on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrival_ms: int) -> None:
        started = time.perf_counter()
        now = self.clock()
        self.codec = codec
        self.media_ssrc = packet.ssrc
        sequence = self._seq.unwrap(packet.sequence_number)
        timestamp = self._ts.unwrap(packet.timestamp)
        video = self.kind == "video"
        if video:
            self.losses.on_packet(sequence, now)
        cached = CachedPacket(
            sequence,
            timestamp,
            packet.marker,
            packet.payload,
            is_keyframe(codec.name, packet.payload) if video else True,
            now,
            packet.extensions.audio_level,
        )
        self.cache.add(cached)
        self.packets += 1
        if self.blocked or not self.downtracks:
            return
        ntp = current_ntp_time()
        sent = 0
        octets = 0
        for downtrack in self.downtracks:
            if await downtrack.forward(cached, ntp):
                sent += 1
                octets += len(packet.payload)
        if sent:
            self.metrics.record_forward(self.kind, sent, octets, time.perf_counter() - started)

    async def tick(self) -> None:
        """Periodic work: NACK what is still missing upstream."""
        if self.tap is None or self.media_ssrc is None:
            return
        rtt = min((d.tap.rtt for d in self.downtracks if d.tap.rtt), default=None)
        due = self.losses.due(self.clock(), rtt)
        if due:
            self.metrics.nacks_sent.inc(len(due))
            await self.tap.send_nack(self.media_ssrc, due)

    async def nack_upstream(self, sequences: list[int]) -> None:
        """Subscribers asked for packets the cache does not hold: ask the publisher now."""
        if self.tap is not None and self.media_ssrc is not None and sequences:
            self.metrics.nacks_sent.inc(len(sequences))
            await self.tap.send_nack(self.media_ssrc, sequences)

    async def request_keyframe(self) -> None:
        """PLI upstream, at most once per ``KEYFRAME_REQUEST_INTERVAL``."""
        now = self.clock()
        if self.kind != "video" or self.tap is None or self.media_ssrc is None:
            return
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        self._last_keyframe_request = now
        self.metrics.plis_sent.inc()
        await self.tap.send_pli(self.media_ssrc)

    def add(self, downtrack: DownTrack) -> None:
        self.downtracks.append(downtrack)

    def remove(self, downtrack: DownTrack) -> None:
        if downtrack in self.downtracks:
            self.downtracks.remove(downtrack)


class DownTrack:
    def __init__(
        self,
        up: UpTrack,
        subscriber: str,
        sender: RTCRtpSender,
        payload_type: int,
        metrics: SfuMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.up = up
        self.subscriber = subscriber
        self.payload_type = payload_type
        self.metrics = metrics
        self.tap = SenderTap(sender, self._feedback)
        self.munger = Munger(rng)
        self.retransmits = RetransmitFilter()
        self.paused = False
        self.bound = False
        self.remb: int | None = None
        self._rtx_seq = (rng or random.Random()).randrange(0, 1 << 16)
        self._mid_element: tuple[int, bytes] | None = None
        self._abs_id: int | None = None
        self._level_id: int | None = None
        self.packets = 0
        self.retransmitted = 0

    def _bind(self) -> bool:
        """Read what negotiation settled (mid, extension ids) once the sender has started."""
        if not self.tap.ready:
            return False
        ids = self.tap.extension_ids()
        mid = self.tap.mid
        self._mid_element = (ids["mid"], mid.encode()) if "mid" in ids and mid else None
        self._abs_id = ids.get("abs_send_time")
        self._level_id = ids.get("audio_level")
        self.bound = True
        return True

    def _extensions(self, packet: CachedPacket, ntp: int) -> bytes:
        elements = []
        if self._mid_element is not None:
            elements.append(self._mid_element)
        if self._abs_id is not None:
            elements.append((self._abs_id, abs_send_time(ntp)))
        if self._level_id is not None and packet.audio_level is not None:
            elements.append((self._level_id, audio_level(*packet.audio_level)))
        return extension_block(elements)

    async def forward(self, packet: CachedPacket, ntp: int) -> bool:
        """Rewrite and send one packet; False when it was not sent."""
        if self.paused or (not self.bound and not self._bind()):
            return False
        munger = self.munger
        if not munger.started:
            if not packet.keyframe:
                await self.up.request_keyframe()
                return False
            munger.start(packet.sequence, packet.timestamp)
        mapped = munger.map(packet.sequence, packet.timestamp)
        if mapped is None:
            return False
        sequence, timestamp = mapped
        data = build_packet(
            packet.marker, self.payload_type, sequence, timestamp, self.tap.ssrc, self._extensions(packet, ntp), packet.payload
        )
        try:
            await self.tap.send(data)
        except ConnectionError:
            return False
        self.tap.record_sent(ntp, timestamp, len(packet.payload))
        self.packets += 1
        return True

    async def _feedback(self, packet: Any) -> None:
        if getattr(packet, "fmt", None) == RTCP_RTPFB_NACK and hasattr(packet, "lost"):
            await self._on_nack(packet.lost)
        elif getattr(packet, "fmt", None) == RTCP_PSFB_APP:
            self.remb = remb_bitrate(packet)
        else:  # PLI or FIR
            self.metrics.plis_received.inc()
            await self.up.request_keyframe()

    async def _on_nack(self, lost: list[int]) -> None:
        self.metrics.nacks_received.inc(len(lost))
        now = self.up.clock()
        rtt = self.tap.rtt
        missing = []
        for out_sequence in lost:
            sequence = self.munger.unmap(out_sequence)
            if sequence is None:
                continue
            cached = self.up.cache.get(sequence)
            if cached is None:
                missing.append(sequence)
                continue
            if self.retransmits.allow(sequence, now, rtt):
                await self._retransmit(cached, out_sequence)
        await self.up.nack_upstream(missing)

    async def _retransmit(self, packet: CachedPacket, out_sequence: int) -> None:
        mapped = self.munger.map(packet.sequence, packet.timestamp)
        if mapped is None:
            return
        _, timestamp = mapped
        ntp = current_ntp_time()
        rtx_type = self.tap.rtx_payload_type
        if rtx_type is not None:
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            data = build_packet(
                packet.marker, rtx_type, self._rtx_seq, timestamp, self.tap.rtx_ssrc,
                self._extensions(packet, ntp), rtx_payload(out_sequence, packet.payload),
            )
        else:
            data = build_packet(
                packet.marker, self.payload_type, out_sequence, timestamp, self.tap.ssrc,
                self._extensions(packet, ntp), packet.payload,
            )
        try:
            await self.tap.send(data)
        except ConnectionError:
            return
        self.retransmitted += 1
        self.metrics.retransmissions.inc()
