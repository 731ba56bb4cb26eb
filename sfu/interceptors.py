"""The features on the SFU's taps, each an interceptor with its own state (pion/interceptor):

* ``RembHold`` on a publisher's receiver: the uplink estimate across dynacast pauses;
* ``SenderReports`` on a publisher's receiver: the RTP-to-NTP mapping of each stream, for the
  recorder's sync;
* ``NackResponder`` on a subscriber's sender: NACKs answered from the layer's cache;
* ``SubscriberFeedback`` on a subscriber's sender: PLI/FIR, REMB and report blocks.

Each sees RTCP as aiortc parsed it and decides; the I/O (a retransmission, a PLI upstream) goes
through the track it serves.  The clock is passed in or read from that track.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)

from sfu.aiortc_hooks import Interceptor, remb_of
from sfu.bandwidth import REMB_FALLING
from sfu.nack import RetransmitFilter

if TYPE_CHECKING:
    from sfu.forwarding import DownTrack
    from sfu.layer import Layer

UPLINK_HOLD = 10.0  # seconds after a resume that the uplink estimate from before a pause holds


class RembHold(Interceptor):
    """The REMB sent upstream is a delay-based estimate that can only grow a little over what
    arrives.  Pausing layers with dynacast makes less arrive, not the path narrower: without a
    hold the estimate would sink to the remaining layers' rate, and a publisher (Chromium) would
    not find the bandwidth to turn its top layer back on when it is wanted again.  So the
    estimate from before a pause holds while layers are paused and for ``UPLINK_HOLD`` seconds
    after a resume, until the receiver's own estimate catches up with it or falls (over-use)."""

    def __init__(self, layers: Sequence[Layer], clock: Callable[[], float]) -> None:
        self.layers = layers
        self.clock = clock
        self._in: float | None = None  # the last uplink estimate the receiver made
        self._out = 0.0  # the last one sent to the publisher
        self._held: float | None = None
        self._hold_until = float("-inf")

    def paused(self) -> None:
        self._held = max(self._held or 0.0, self._out)

    def resumed(self, now: float) -> None:
        self._hold_until = now + UPLINK_HOLD

    def outgoing_remb(self, bitrate: float) -> float:
        """What to tell the publisher, given the receiver's own estimate ``bitrate``."""
        now = self.clock()
        previous, self._in = self._in, bitrate
        held = self._held
        if held is not None:
            paused = any(not layer.active for layer in self.layers)
            falling = previous is not None and bitrate < previous * REMB_FALLING
            if bitrate >= held or (not paused and (falling or now > self._hold_until)):
                held = self._held = None
        self._out = max(bitrate, held or 0.0)
        return self._out


class SenderReports(Interceptor):
    """A publisher's sender reports: (SSRC, 64-bit NTP time, RTP timestamp) to ``on_report``."""

    def __init__(self, on_report: Callable[[int, int, int], None]) -> None:
        self.on_report = on_report

    async def incoming_rtcp(self, packet: Any) -> bool:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self.on_report(packet.ssrc, info.ntp_timestamp, info.rtp_timestamp)
        return False


class NackResponder(Interceptor):
    """A subscriber's NACKs: each output number maps back (through the forwarder) to a packet of
    the layer now forwarded, which is resent from its cache at most once per RTT; what the cache
    does not hold is NACKed upstream at once."""

    def __init__(self, down: DownTrack) -> None:
        self.down = down
        self.filter = RetransmitFilter()

    async def incoming_rtcp(self, packet: Any) -> bool:
        if not (isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK):
            return False
        await self.respond(packet.lost)
        return True

    async def respond(self, lost: list[int]) -> None:
        down = self.down
        down.metrics.nacks_received.inc(len(lost))
        now = down.up.clock()
        rtt = down.tap.rtt
        current = down.current
        missing = []
        for out_sequence in lost:
            sequence = down.forwarder.resend(out_sequence)
            if sequence is None or current is None:
                continue  # dropped on purpose, or from a layer no longer forwarded
            cached = current.cache.get(sequence)
            if cached is None:
                missing.append(sequence)
            elif self.filter.allow(sequence, now, rtt):
                await down.retransmit(cached, out_sequence)
        if current is not None:
            await down.up.nack_upstream(current, missing)


FeedbackListener = Callable[..., None]  # (kind, value[, REMB's SSRCs])


class SubscriberFeedback(Interceptor):
    """A subscriber's PLI/FIR (a keyframe asked upstream), REMB and the report blocks about this
    stream (both to ``listener``, the subscriber's bandwidth estimate)."""

    def __init__(self, down: DownTrack, request_keyframe: Callable[[], Awaitable[None]]) -> None:
        self.down = down
        self.request_keyframe = request_keyframe
        self.listener: FeedbackListener | None = None
        self.remb: int | None = None

    async def incoming_rtcp(self, packet: Any) -> bool:
        if isinstance(packet, RtcpPsfbPacket):
            if packet.fmt == RTCP_PSFB_APP:
                found = remb_of(packet)
                self.remb = None if found is None else found[0]
                # Only what a video receiver estimates counts: aiortc's audio receiver sends a
                # REMB of its own, from near zero, which is no estimate of the downlink.
                if found is not None and self.listener is not None and self.down.up.kind == "video":
                    self.listener("remb", float(found[0]), found[1])
                return True
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self.down.metrics.plis_received.inc()
                await self.request_keyframe()
                return True
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):  # aiortc still keeps RTT from it
            down = self.down
            for report in packet.reports:
                if report.ssrc != down.tap.ssrc:
                    continue
                down.metrics.receiver_loss.observe(report.fraction_lost / 256)
                if self.listener is not None and down.up.kind == "video" and down.current is not None:
                    self.listener("loss", report.fraction_lost / 256)
        return False
