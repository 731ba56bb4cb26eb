"""Up-tracks (one per published track), their layers, and down-tracks (one per subscriber).

An up-track receives every packet of its publisher from the receiver tap and files it under its
**layer**: one layer for a plain stream, one per encoding for simulcast (told apart by RID, by
the SSRC a RID was first seen on, or by an ``a=ssrc-group:SIM`` position).  Each layer unwraps
its own sequence numbers and timestamps, caches its packets once, tracks its upstream loss,
measures its bit rate per temporal layer, and learns its size from keyframes.

A down-track forwards one layer (``current``) and may be moving to another (``target``): it
switches only on a keyframe of the target (asking the publisher for one), continuing sequence
numbers without a gap and timestamps by wall clock.  For VP8 it also drops frames above its
temporal layer (closing the sequence gap), and keeps picture IDs and TL0PICIDX continuous across
switches and drops, so that a browser's decoder sees one unbroken stream.  It answers its
subscriber's NACKs from the layer's cache (as RTX where negotiated), passing misses upstream.
Nothing here decodes or encodes media.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from sfu import fastsend
from sfu.aiortc_hooks import ReceiverTap, SenderTap
from sfu.bandwidth import RateMeter
from sfu.fastsend import SendBatch
from sfu.forwarder import Drop, Forward, Forwarder, ForwardsLayers
from sfu.h264 import sps_dimensions
from sfu.interceptors import NackResponder, RembHold, SenderReports, SubscriberFeedback
from sfu.keyframe import h264_keyframe
from sfu.layer import MAX_TEMPORAL, Layer
from sfu.metrics import SfuMetrics
from sfu.packet_cache import CachedPacket, PacketCache
from sfu.rtp import HEADER, abs_send_time, audio_level, build_packet, extension_block, ntp_now, rtx_payload
from sfu.sdp import SimulcastOffer
from sfu.tasks import TaskSet
from sfu.vp8 import Vp8Descriptor, parse_vp8

log = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL = 0.5  # seconds between PLIs sent upstream for one layer


def _lost_connection(error: BaseException) -> bool:
    """A PLI that failed because the publisher's connection went away: nothing to log."""
    return isinstance(error, ConnectionError)


class MediaTap(Protocol):
    """Something besides subscribers that takes an up-track's packets (the recorder): it says
    which layers it wants (dynacast keeps them on) and gets their packets and sender reports."""

    def wants(self, layer: Layer) -> bool: ...

    def on_packet(self, up: UpTrack, layer: Layer, packet: CachedPacket, now: float) -> None: ...

    def on_sender_report(self, up: UpTrack, layer: Layer, ntp: int, rtp: int, now: float) -> None: ...


class UpTrack:
    def __init__(
        self,
        track_id: str,
        owner: str,
        kind: str,
        source: str,
        metrics: SfuMetrics,
        clock: Callable[[], float] = time.monotonic,
        simulcast: SimulcastOffer | None = None,
    ) -> None:
        self.track_id = track_id
        self.owner = owner
        self.kind = kind
        self.source = source
        self.metrics = metrics
        self.clock = clock
        self.codec: RTCRtpCodecParameters | None = None
        self.muted = False  # as the publisher says
        self.blocked = False  # muted by a host: nothing is forwarded
        self.on_gap: Callable[[], None] | None = None  # a packet went missing upstream (the node's wake)
        self.downtracks: list[DownTrack] = []
        self.simulcast = simulcast
        if simulcast is not None and simulcast.layers > 1:
            count = simulcast.layers
            rids = simulcast.rids or [None] * count
            self.layers = [Layer(i, rids[i], kind) for i in range(count)]
        else:
            self.layers = [Layer(0, None, kind)]
        self._by_rid = {layer.rid: layer for layer in self.layers if layer.rid}
        self._by_ssrc: dict[int, Layer] = {}
        if simulcast is not None and simulcast.ssrcs and len(self.layers) > 1:
            for layer, ssrc in zip(self.layers, simulcast.ssrcs, strict=False):
                layer.ssrc = ssrc
                self._by_ssrc[ssrc] = layer
            for rtx, media in simulcast.rtx.items():
                if media in self._by_ssrc:
                    self._by_ssrc[rtx] = self._by_ssrc[media]
        self.order: list[Layer] = list(self.layers)  # lowest first
        self.audio_level: tuple[bool, int] | None = None
        self.tap: ReceiverTap | None = None
        self.packets = 0
        self._plis = TaskSet(log, "PLI for %s failed", track_id, expected=_lost_connection)
        self.remb_hold = RembHold(self.layers, clock)
        self.on_layers_changed: Callable[[UpTrack], None] | None = None
        self.taps: list[MediaTap] = []
        self._failures: dict[int, int] = {}  # failures in the packet path, by id() of who failed
        self.remote = False  # published on another node, relayed here (never relayed again)
        self.relay_link: Any = None  # the link its layers now arrive on (sfu.relay.RelayLink)
        self.relay_layers: set[str] = set()
        self._batch = SendBatch()  # the copies of the packet being fanned out (sfu.fastsend)

    @property
    def is_simulcast(self) -> bool:
        return len(self.layers) > 1

    @property
    def media_ssrc(self) -> int | None:
        return self.layers[0].ssrc

    @property
    def cache(self) -> PacketCache:
        return self.layers[0].cache

    def attach(self, receiver: RTCRtpReceiver) -> None:
        interceptors = [self.remb_hold, SenderReports(self._on_sender_report)]
        self.tap = ReceiverTap(receiver, self._on_packet, interceptors, self._receive_failed, self.receive_now)

    def bind_layer(self, layer: Layer, tap: ReceiverTap, ssrc: int | None, rtx: int | None) -> None:
        """A relayed track: ``layer`` arrives on a receiver of its own (``tap``) as ``ssrc``, repaired
        as ``rtx``; keyframe requests and NACKs go back through the first such receiver."""
        if self.tap is None:
            self.tap = tap
        if ssrc is not None:
            layer.ssrc = ssrc
            self._by_ssrc[ssrc] = layer
        if rtx is not None:
            self._by_ssrc[rtx] = layer

    def _on_sender_report(self, ssrc: int, ntp: int, rtp: int) -> None:
        if not self.taps:
            return
        layer = self._by_ssrc.get(ssrc)
        if layer is None and len(self.layers) == 1 and self.layers[0].ssrc == ssrc:
            layer = self.layers[0]
        if layer is not None:
            now = self.clock()
            for tap in self.taps:
                if tap.wants(layer):
                    tap.on_sender_report(self, layer, ntp, rtp, now)

    # Dynacast: the uplink estimate holds across a pause (see ``RembHold``) ------------------

    def pause_layers(self, layers: list[Layer]) -> None:
        for layer in layers:
            layer.pause()
        if layers:
            self.remb_hold.paused()

    def resume_layers(self, layers: list[Layer], now: float) -> None:
        for layer in layers:
            layer.resume(now)
        if layers:
            self.remb_hold.resumed(now)

    def layer_info(self) -> list[dict[str, Any]]:
        return [
            {"rid": layer.rid, "index": index, "width": layer.width, "height": layer.height, "active": layer.active}
            for index, layer in enumerate(self.order)
        ]

    def info(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "participant": self.owner,
            "kind": self.kind,
            "source": self.source,
            "muted": self.muted or self.blocked,
            "codec": self.codec.mimeType if self.codec else None,
            "simulcast": self.is_simulcast,
        }

    def _reorder(self) -> None:
        """Lowest first by measured height once every layer's size is known, else as declared."""
        if all(layer.height is not None for layer in self.layers):
            order = sorted(self.layers, key=lambda layer: (layer.height or 0, layer.position))
        else:
            order = list(self.layers)
        if order != self.order:
            self.order = order
        if self.on_layers_changed is not None:
            self.on_layers_changed(self)

    def _layer_for(self, packet: RtpPacket, repaired: bool) -> Layer | None:
        if len(self.layers) == 1:
            layer = self.layers[0]
            if not repaired and layer.ssrc != packet.ssrc:
                layer.ssrc = packet.ssrc
            return layer
        layer = self._by_ssrc.get(packet.ssrc)
        if layer is not None:
            return layer
        extensions = packet.extensions
        rid = extensions.repaired_rtp_stream_id if repaired else extensions.rtp_stream_id
        if rid is None and repaired and self.tap is not None:
            media = self.tap.rtx_media_ssrc(packet.ssrc)
            layer = self._by_ssrc.get(media) if media is not None else None
        elif rid is not None:
            layer = self._by_rid.get(rid)
        if layer is None:
            return None  # an SSRC not seen with its RID yet: nothing says which layer it is
        self._by_ssrc[packet.ssrc] = layer
        if not repaired:
            layer.ssrc = packet.ssrc
        return layer

    async def _on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrival_ms: int, repaired: bool = False) -> None:
        self.receive_now(packet, codec, arrival_ms, repaired)

    def receive_now(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrival_ms: int, repaired: bool = False) -> None:
        """One packet of the publisher, handled and fanned out synchronously."""
        started = time.perf_counter()
        now = self.clock()
        layer = self._layer_for(packet, repaired)
        if layer is None:
            return
        self.codec = codec
        sequence = layer.seq.unwrap(packet.sequence_number)
        if layer.cache.get(sequence) is not None:
            return  # a retransmission of a packet that arrived after all
        timestamp = layer.ts.unwrap(packet.timestamp)
        payload = packet.payload
        if self.kind == "video":
            facts = self._video(layer, codec, payload, sequence, now)
            if facts is None:
                return
            keyframe, vp8, tid, picture_id, tl0 = facts
        else:
            keyframe, vp8, tid, picture_id, tl0 = True, None, None, None, None
            self.audio_level = packet.extensions.audio_level
        if not layer.sending(now) and not layer.active:
            layer.inactive_since = None
        layer.arrived(timestamp, now, repaired)
        cached = CachedPacket(
            sequence, timestamp, packet.marker, payload, keyframe, now, packet.extensions.audio_level,
            layer.position, tid, vp8, picture_id, tl0,
        )
        layer.cache.add(cached)
        layer.packets += 1
        self.packets += 1
        self.metrics.record_receive(self.kind)
        if not self.blocked:
            self._fan_out(layer, cached, now, started)

    def _video(
        self, layer: Layer, codec: RTCRtpCodecParameters, payload: bytes, sequence: int, now: float
    ) -> tuple[bool, Vp8Descriptor | None, int | None, int | None, int | None] | None:
        """(keyframe, VP8 descriptor, temporal layer, picture ID, TL0PICIDX) of a video packet,
        the latter two unwrapped; the layer learns its loss, size and rates.  None: malformed."""
        if layer.losses.on_packet(sequence, now) and self.on_gap is not None:
            self.on_gap()
        vp8 = tid = picture_id = tl0 = None
        name = codec.name.lower()
        if name == "vp8":
            vp8 = parse_vp8(payload)
            if vp8 is None:
                return None
            keyframe, tid = vp8.keyframe, vp8.tid
            if vp8.picture_id is not None:
                picture_id = layer.picture_ids.unwrap(vp8.picture_id & 0x7FFF) if vp8.picture_id_bits == 15 else vp8.picture_id
            if vp8.tl0picidx is not None:
                tl0 = layer.tl0.unwrap(vp8.tl0picidx)
            if keyframe and vp8.width:
                self._sized(layer, vp8.width, vp8.height)
        elif name == "h264":
            keyframe = h264_keyframe(payload)
            size = sps_dimensions(payload) if keyframe else None
            if size is not None:
                self._sized(layer, *size)
        else:
            keyframe = True
        if tid is not None and tid < MAX_TEMPORAL:
            if tid >= layer.temporal_layers:
                layer.temporal_layers = tid + 1
            layer.meters[tid].add(len(payload), now)
        else:
            layer.meters[0].add(len(payload), now)
        return keyframe, vp8, tid, picture_id, tl0

    def _sized(self, layer: Layer, width: int, height: int | None) -> None:
        if width != layer.width or height != layer.height:
            layer.width, layer.height = width, height
            self._reorder()

    def _fan_out(self, layer: Layer, cached: CachedPacket, now: float, started: float) -> None:
        """The packet to the taps that want its layer and to the subscribers it is forwarded to.
        One subscriber's (or tap's) failure stays its own: the others still get the packet, and
        nothing reaches the publisher's receive loop."""
        for tap in self.taps:
            if tap.wants(layer):
                try:
                    tap.on_packet(self, layer, cached, now)
                except Exception as exc:
                    self._failed("tap", tap, exc)
        if not self.downtracks:
            return
        ntp = ntp_now(time.time())
        abs_time = ((ntp >> 14) & 0x00FFFFFF).to_bytes(3, "big")
        sent = 0
        copy_delay, clock = self.metrics.counts.copy_delay, time.perf_counter
        batch = self._batch if fastsend.NATIVE is not None else None
        lane_sent = 0
        if layer.lanes and batch is not None:
            try:
                lane_sent = fan_out_lanes(self, layer, cached, ntp, abs_time, now, started)
            except Exception as exc:  # the helper refused its input: Python forwards every copy
                self._failed("forward", layer, exc)
                for lane in list(layer.lanes):
                    lane.owner.take_back()
        for downtrack in self.downtracks:
            if downtrack.lane_layer is layer:
                continue  # its lane sent the copy
            wants = downtrack.forwarder
            if wants.current is layer or wants.target is layer:
                try:
                    if downtrack.forward(cached, layer, ntp, abs_time, now, batch):
                        sent += 1
                        if batch is None:
                            copy_delay.observe(clock() - started)
                except Exception as exc:
                    self._failed("forward", downtrack, exc)
        if batch is not None:
            if batch.items:
                batched = len(batch.items)
                try:
                    lost = batch.flush()
                except Exception as exc:  # the helper refused its input: nothing of it left
                    self._failed("forward", batch, exc)
                    lost = batched
                if lost:
                    self.metrics.packet_errors.labels("protect").inc(lost)
                sent -= lost
            # (the lanes' copies were observed as each run of them left)
            copy_delay.observe_many(clock() - started, sent)
            sent += lane_sent
        if sent:
            octets = sent * len(cached.payload)
            self.metrics.record_forward(self.kind, sent, octets, clock() - started)

    def _failed(self, where: str, consumer: Any, exc: Exception) -> None:
        """Count a failure in the packet path; log the 1st, 2nd, 4th, 8th... of each consumer."""
        self.metrics.packet_errors.labels(where).inc()
        count = self._failures[id(consumer)] = self._failures.get(id(consumer), 0) + 1
        if count & (count - 1) == 0:
            name = getattr(consumer, "subscriber", type(consumer).__name__)
            log.error("%s of %s failed for %s (%d times)", where, self.track_id, name, count, exc_info=exc)

    def _receive_failed(self, exc: Exception) -> None:
        self._failed("receive", self, exc)

    def losses_pending(self) -> bool:
        return any(layer.losses.pending for layer in self.layers)

    async def tick(self) -> None:
        """Periodic work: NACK what is still missing upstream, per layer."""
        if self.tap is None:
            return
        rtt = min((d.tap.rtt for d in self.downtracks if d.tap.rtt), default=None)
        now = self.clock()
        if fastsend.NATIVE is not None:
            for downtrack in list(self.downtracks):
                try:
                    downtrack.lane_tick(now)
                except Exception as exc:
                    self._failed("lane", downtrack, exc)
        for layer in self.layers:
            if layer.ssrc is None:
                continue
            due = layer.losses.due(now, rtt)
            if due:
                self.metrics.nacks_sent.inc(len(due))
                await self.tap.send_nack(layer.ssrc, due)

    async def nack_upstream(self, layer: Layer, sequences: list[int]) -> None:
        """Subscribers asked for packets the cache does not hold: ask the publisher now."""
        if self.tap is not None and layer.ssrc is not None and sequences:
            self.metrics.nacks_sent.inc(len(sequences))
            await self.tap.send_nack(layer.ssrc, sequences)

    def _keyframe_due(self, layer: Layer) -> bool:
        now = self.clock()
        if self.kind != "video" or self.tap is None or layer.ssrc is None:
            return False
        if now - layer.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return False
        layer.last_keyframe_request = now
        self.metrics.plis_sent.inc()
        return True

    async def request_keyframe(self, layer: Layer | None = None) -> None:
        """PLI upstream for a layer, at most once per ``KEYFRAME_REQUEST_INTERVAL`` each."""
        layer = layer or self.layers[0]
        if self._keyframe_due(layer) and self.tap is not None and layer.ssrc is not None:
            await self.tap.send_pli(layer.ssrc)

    def request_keyframe_soon(self, layer: Layer) -> None:
        """The same from the synchronous packet path: the PLI goes out in a task of its own."""
        if self._keyframe_due(layer) and self.tap is not None and layer.ssrc is not None:
            self._plis.spawn(self.tap.send_pli(layer.ssrc))

    def add(self, downtrack: DownTrack) -> None:
        self.downtracks.append(downtrack)

    def remove(self, downtrack: DownTrack) -> None:
        downtrack.take_back()
        if downtrack in self.downtracks:
            self.downtracks.remove(downtrack)
        self._failures.pop(id(downtrack), None)


LANE_SYNC = 0.25  # seconds between reads of a lane's counters (sender reports, the meter)


def _slots(pieces: tuple[bytes, ...], has_abs: bool, has_level: bool) -> tuple[bytes, int, int]:
    """A header template's extension block with zeros in its slots, and where they are."""
    if has_abs and has_level:
        block = pieces[0] + bytes(3) + pieces[1] + bytes(1) + pieces[2]
        return block, len(pieces[0]), len(pieces[0]) + 3 + len(pieces[1])
    if has_abs:
        return pieces[0] + bytes(3) + pieces[1], len(pieces[0]), -1
    if has_level:
        return pieces[0] + bytes(1) + pieces[1], -1, len(pieces[0])
    return pieces[0], -1, -1


def lane_ready(forwarder: Forwarder) -> bool:
    """Whether a lane can forward for ``forwarder`` now: its current layer is its target, no
    higher temporal cap is pending, nothing was dropped since it started, VP8 numbers pass
    unchanged."""
    munger, vp8, layer = forwarder.munger, forwarder.vp8, forwarder.current
    return bool(
        layer is not None and forwarder.target is layer and forwarder.temporal_wanted is None and munger.started
        and not munger._dropped and not vp8.picture_offset and not vp8.tl0_offset
    )


def lend(lane: Any, forwarder: Forwarder, take_back: Callable[[], None]) -> None:
    """Copy ``forwarder``'s state into ``lane`` and arm it; ``take_back`` runs before anything
    reads or changes the state again (``Munger.lent``, ``Forwarder.set_target``)."""
    munger, vp8 = forwarder.munger, forwarder.vp8
    lane.max_tid = forwarder.temporal if forwarder.temporal is not None else 255
    first_in, offset = munger._segments[-1]
    lane.start_seq, lane.seg_first, lane.seg_offset, lane.ts_offset = munger._start_seq, first_in, offset, munger._ts_offset
    lane.has_last_out = munger._last_out_seq is not None
    lane.last_out_seq = munger._last_out_seq if munger._last_out_seq is not None else 0
    lane.last_out_ts, lane.highest_in = munger._last_out_ts, munger._highest_in
    lane.frame_open = forwarder.frame_open
    lane.last_sent_at = forwarder.last_sent_at if forwarder.last_sent_at is not None else -1.0
    lane.has_picture = vp8.last_picture is not None
    lane.last_picture = vp8.last_picture if vp8.last_picture is not None else 0
    lane.has_tl0 = vp8.last_tl0 is not None
    lane.last_tl0 = vp8.last_tl0 if vp8.last_tl0 is not None else 0
    lane.take()
    lane.armed = 1
    munger.lent = take_back


def reclaim(lane: Any, forwarder: Forwarder) -> None:
    """Copy what ``lane`` forwarded back into ``forwarder``'s state (the lane is disarmed)."""
    munger, vp8 = forwarder.munger, forwarder.vp8
    lane.armed = 0
    munger.lent = None
    if lane.has_last_out:
        munger._last_out_seq, munger._last_out_ts = lane.last_out_seq, lane.last_out_ts
    munger._highest_in = lane.highest_in
    if lane.last_sent_at >= 0:
        forwarder.last_sent_at = lane.last_sent_at
    forwarder.frame_open = bool(lane.frame_open)
    if lane.has_picture:
        vp8.last_picture = lane.last_picture
        if vp8.known(lane.last_picture) is None:  # the frame in progress stays forwarded
            vp8.decide(lane.last_picture, True)
    if lane.has_tl0:
        vp8.last_tl0 = lane.last_tl0


def fan_out_lanes(
    up: UpTrack, layer: Layer, cached: CachedPacket, ntp: int, abs_time: bytes, now: float, started: float
) -> int:
    """The copies of ``cached`` for the lanes armed on ``layer``; the number written.  A lane
    the helper refused is taken back (Python forwards its copy next), and copies a socket would
    not take are queued on their transport (the lane then sees the queue and stands down).
    Each run of copies that left in one ``sendmmsg`` is observed in the copy-delay histogram
    with its own delay since ``started`` (the packet's arrival, ``time.perf_counter``)."""
    level = cached.audio_level
    clock = time.perf_counter
    before = clock()
    sent, refused, unsent, flushes = fastsend.NATIVE.fan_out(
        fastsend.PROTECT, layer.lanes, cached.sequence, cached.timestamp, cached.marker, cached.payload, abs_time,
        audio_level(*level)[0] if level is not None else -1, cached.tid if cached.tid is not None else -1,
        cached.picture_id if cached.picture_id is not None else -1, cached.tl0 if cached.tl0 is not None else -1,
        now, ntp,
    )
    copy_delay = up.metrics.counts.copy_delay
    if flushes:
        waited = before - started
        for written, elapsed in flushes:
            copy_delay.observe_many(waited + elapsed, written)
    if refused:
        for lane in refused:
            lane.owner.take_back()
    if unsent:
        for lane, data in unsent:
            tap = lane.owner.tap
            tap.queue_protected(data)
        sent += len(unsent)
        copy_delay.observe_many(clock() - started, len(unsent))
    return sent


class DownTrack(ForwardsLayers):
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
        # what is forwarded, decided without I/O: the layer now sent, the one wanted, the numbers
        self.forwarder = Forwarder(
            up.layers[-1] if up.kind == "video" else up.layers[0], rng, on_switch=metrics.layer_switches.inc
        )
        self.nacks = NackResponder(self)
        self.feedback = SubscriberFeedback(self, lambda: up.request_keyframe(self.current or self.target))
        self.tap = SenderTap(sender, [self.nacks, self.feedback])
        self.bound = False
        self.meter = RateMeter()
        self._rtx_seq = (rng or random.Random()).randrange(0, 1 << 16)
        self._mid_element: tuple[int, bytes] | None = None
        self._abs_id: int | None = None
        self._ssrc = 0  # the sender's SSRC, read at _bind
        self._level_id: int | None = None
        # Header templates: the first byte and the extension block cut around the slots of
        # abs-send-time and audio level (see _template); without and with an audio level.
        self._plain: tuple[int, tuple[bytes, ...], bool, bool] = (0x80, (b"",), False, False)
        self._levelled: tuple[int, tuple[bytes, ...], bool, bool] = (0x80, (b"",), False, False)
        self._packets = 0
        self.retransmitted = 0
        # A native lane forwards this down-track's packets of lane_layer while it is steady
        # (see arm_lane); None when Python forwards them.
        self.lane: Any = None
        self.lane_layer: Layer | None = None
        self.lane_packets = 0  # of self.packets, those a lane sent (as last read)
        self._lane_synced = float("-inf")

    @property
    def switches(self) -> int:
        return self.forwarder.switches

    @property
    def packets(self) -> int:
        """Packets sent to this subscriber, a lane's not yet read included."""
        lane = self.lane
        return self._packets + (lane.pending_packets if lane is not None else 0)

    @property
    def paused(self) -> bool:
        return self.forwarder.paused

    def set_target(self, layer: Layer | None, temporal: int | None = None, reason: str = "requested") -> None:
        self.forwarder.set_target(layer, temporal, reason)

    def _bind(self) -> bool:
        """Read what negotiation settled (mid, extension ids) once the sender has started."""
        if not self.tap.ready:
            return False
        ids = self.tap.extension_ids()
        mid = self.tap.mid
        self._mid_element = (ids["mid"], mid.encode()) if "mid" in ids and mid else None
        self._abs_id = ids.get("abs_send_time")
        self._level_id = ids.get("audio_level")
        if self.up.codec is not None:
            self.forwarder.clock_rate = self.up.codec.clockRate
        self._ssrc = self.tap.ssrc
        self._plain = self._template(with_level=False)
        self._levelled = self._template(with_level=True)
        self.bound = True
        return True

    def _template(self, with_level: bool) -> tuple[int, tuple[bytes, ...], bool, bool]:
        """The extension block with MID in place, cut into the pieces that go around the
        per-packet abs-send-time (3 bytes) and audio-level (1 byte) values."""
        elements: list[tuple[int, bytes]] = []
        offset = 4  # after the block's own header
        slots = []
        if self._mid_element is not None:
            elements.append(self._mid_element)
            offset += 1 + len(self._mid_element[1])
        has_abs = self._abs_id is not None
        if has_abs:
            elements.append((self._abs_id, b"\x00\x00\x00"))
            slots.append((offset + 1, 3))
            offset += 4
        has_level = with_level and self._level_id is not None
        if has_level:
            elements.append((self._level_id, b"\x00"))
            slots.append((offset + 1, 1))
        block = extension_block(elements)
        pieces, start = [], 0
        for at, size in slots:
            pieces.append(block[start:at])
            start = at + size
        pieces.append(block[start:])
        return (0x90 if block else 0x80), tuple(pieces), has_abs, has_level

    def _header(self, marker: int, sequence: int, timestamp: int, level: tuple[bool, int] | None, abs_time: bytes, payload: bytes = b"") -> bytes:
        """The packet (header, extensions, then ``payload``) joined from the template once."""
        use_level = level is not None and self._level_id is not None
        first, pieces, has_abs, has_level = self._levelled if use_level else self._plain
        fixed = HEADER.pack(first, (marker << 7) | self.payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, self._ssrc)
        if has_level:
            assert level is not None
            value = audio_level(*level)
            if has_abs:
                return b"".join((fixed, pieces[0], abs_time, pieces[1], value, pieces[2], payload))
            return b"".join((fixed, pieces[0], value, pieces[1], payload))
        if has_abs:
            return b"".join((fixed, pieces[0], abs_time, pieces[1], payload))
        return b"".join((fixed, pieces[0], payload))

    # Native lanes ----------------------------------------------------------------------------
    #
    # While nothing about this down-track changes (its current layer is its target, no higher
    # temporal cap pending, no dropped packets, VP8 numbers unchanged), a lane of the native helper forwards its
    # copies: the munger's newest segment, the header templates, the SRTP session and the shared
    # socket's address are copied into the lane, which maps, writes, protects and sends with no
    # Python per copy.  Anything that would read or change that state first takes it back
    # (Munger.lent, Forwarder.set_target), so Python forwards exactly as before from there on;
    # the node's tick arms lanes again and reads their counters (sender reports, the meter).

    def lane_tick(self, now: float) -> None:
        """Read an armed lane's counters (at most every LANE_SYNC seconds), or arm one."""
        if self.lane_layer is not None:
            if now - self._lane_synced >= LANE_SYNC:
                self._lane_synced = now
                self._lane_counts(now)
            return
        if fastsend.NATIVE is not None and fastsend.LANES:
            self.arm_lane(now)

    def steady(self) -> bool:
        """Whether a lane can forward for this down-track now (see above)."""
        return self.bound and not self.up.blocked and lane_ready(self.forwarder)

    def arm_lane(self, now: float) -> bool:
        if self.lane_layer is not None or not self.steady():
            return False
        lane = self.lane
        if lane is None:
            lane = self.lane = fastsend.NATIVE.Lane()
            lane.owner = self
        if not self.tap.route_lane(lane):
            return False
        lane.payload_type, lane.ssrc = self.payload_type, self._ssrc
        for levelled, (first, pieces, has_abs, has_level) in enumerate((self._plain, self._levelled)):
            lane.template(levelled, first, *_slots(pieces, has_abs, has_level))
        layer = self.forwarder.current
        lend(lane, self.forwarder, self.take_back)
        self.lane_layer = layer
        self._lane_synced = now
        layer.lanes.append(lane)
        return True

    def take_back(self) -> None:
        """Python forwards again, from where the lane left the state."""
        layer, lane = self.lane_layer, self.lane
        if layer is None:
            return
        self.lane_layer = None
        lane.armed = 0
        if lane in layer.lanes:
            layer.lanes.remove(lane)
        self._lane_counts(self.up.clock())
        reclaim(lane, self.forwarder)

    def _lane_counts(self, now: float) -> None:
        packets, octets, plain, protected = self.lane.take()
        if packets:
            self._packets += packets
            self.lane_packets += packets
            self.meter.add(plain, now)
            self.tap.record_lane(packets, octets, protected, self.lane.last_ntp, self.lane.last_rtp_ts)

    def _extensions(self, packet: CachedPacket, ntp: int) -> bytes:
        elements = []
        if self._mid_element is not None:
            elements.append(self._mid_element)
        if self._abs_id is not None:
            elements.append((self._abs_id, abs_send_time(ntp)))
        if self._level_id is not None and packet.audio_level is not None:
            elements.append((self._level_id, audio_level(*packet.audio_level)))
        return extension_block(elements)

    def forward(
        self, packet: CachedPacket, layer: Layer, ntp: int, abs_time: bytes, now: float, batch: SendBatch | None = None
    ) -> bool:
        """Decide, then send one packet, synchronously or into ``batch`` (written when the
        caller flushes it); False when it was not sent."""
        if not self.bound and not self._bind():
            return False
        verdict = self.forwarder.decide(packet, layer, now)
        if verdict.__class__ is not Forward:
            if verdict is Drop.AWAIT_KEYFRAME:
                self.up.request_keyframe_soon(layer)
            return False
        sequence, timestamp, payload = verdict  # type: ignore[misc]
        data = self._header(packet.marker, sequence, timestamp, packet.audio_level, abs_time, payload)
        try:
            if batch is None:
                self.tap.send_now(data)
            else:
                self.tap.send_soon(data, batch)
        except ConnectionError:
            return False
        self.forwarder.sent(packet, now)
        self.meter.add(len(data), now)
        self.tap.record_sent(ntp, timestamp, len(packet.payload))
        self._packets += 1
        return True

    async def retransmit(self, packet: CachedPacket, out_sequence: int) -> None:
        timestamp, payload = self.forwarder.resent_as(packet)
        ntp = ntp_now(time.time())
        rtx_type = self.tap.rtx_payload_type
        if rtx_type is not None:
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            data = build_packet(
                packet.marker, rtx_type, self._rtx_seq, timestamp, self.tap.rtx_ssrc,
                self._extensions(packet, ntp), rtx_payload(out_sequence, payload),
            )
        else:
            data = build_packet(
                packet.marker, self.payload_type, out_sequence, timestamp, self.tap.ssrc,
                self._extensions(packet, ntp), payload,
            )
        try:
            await self.tap.send(data)
        except ConnectionError:
            return
        self.retransmitted += 1
        self.metrics.retransmissions.inc()
