"""Cheap receive-side bookkeeping for load-test subscribers, and the numbers of a report.

:class:`RtpCounter` keeps the books on the RTP packets one subscriber connection receives,
without depacketizing or decoding: per SSRC, packets, bytes, loss from sequence-number gaps
(RFC 3550's expected minus received), video frames (the marker bit closes a frame), the longest
wait between two frames and freezes.  :func:`tap_counter` feeds it from a peer connection,
after SRTP decryption, and drops the packets unless they should be decoded as well.

:func:`histogram_quantile` and :func:`parse_metrics` read the SFU's Prometheus text: quantiles
of the forwarding-delay histogram between two scrapes, counters and the process CPU.
"""

from __future__ import annotations

import math
import statistics
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sfu.aiortc_client import intercept_incoming, take_clear_rtp
from sfu.aiortc_hooks import negotiated_codecs

Clock = Callable[[], float]

FREEZE_SECONDS = 0.5  # a wait between two video frames longer than this is a freeze
_HEADER = struct.Struct("!BBHII")


@dataclass
class StreamStats:
    """One received SSRC."""

    kind: str
    rtx: bool = False
    packets: int = 0
    bytes: int = 0
    frames: int = 0
    first_seq: int | None = None  # extended (unwrapped) sequence numbers
    highest_seq: int = 0
    first_at: float | None = None
    last_frame_at: float | None = None
    first_frame_at: float | None = None
    longest_gap: float = 0.0
    freezes: int = 0

    @property
    def expected(self) -> int:
        return 0 if self.first_seq is None else self.highest_seq - self.first_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets)

    @property
    def fps(self) -> float:
        if self.first_frame_at is None or self.last_frame_at is None or self.frames < 2:
            return 0.0
        span = self.last_frame_at - self.first_frame_at
        return (self.frames - 1) / span if span > 0 else 0.0


class RtpCounter:
    """Books of the RTP packets one peer connection receives.  ``kinds`` maps payload types to
    (kind, is_rtx); packets of unknown payload types are counted as ``other``."""

    def __init__(self, clock: Clock = time.monotonic, freeze_seconds: float = FREEZE_SECONDS) -> None:
        self.clock = clock
        self.freeze_seconds = freeze_seconds
        self.kinds: dict[int, tuple[str, bool]] = {}
        self.streams: dict[int, StreamStats] = {}
        self.malformed = 0
        self.first_packet_at: float | None = None
        self.decode = False  # as an interceptor: let aiortc have each packet after counting it

    def incoming_rtp(self, data: bytes, arrival_time_ms: int) -> bool:
        self.add(data)
        return self.decode

    def add(self, data: bytes, now: float | None = None) -> None:
        if len(data) < _HEADER.size or data[0] >> 6 != 2:
            self.malformed += 1
            return
        now = self.clock() if now is None else now
        _, second, seq, _, ssrc = _HEADER.unpack_from(data)
        stream = self.streams.get(ssrc)
        if stream is None:
            kind, rtx = self.kinds.get(second & 0x7F, ("other", False))
            stream = self.streams[ssrc] = StreamStats(kind, rtx)
        if self.first_packet_at is None:
            self.first_packet_at = now
        stream.packets += 1
        stream.bytes += len(data)
        if stream.first_seq is None:
            stream.first_seq = stream.highest_seq = seq
            stream.first_at = now
        else:
            # Unwrap against the highest so far: within half the space ahead is newer.
            delta = (seq - stream.highest_seq) & 0xFFFF
            if delta and delta < 0x8000:
                stream.highest_seq += delta
            elif delta:
                extended = stream.highest_seq - (0x10000 - delta)
                stream.first_seq = min(stream.first_seq, extended)  # late packet from before the first
        if stream.kind == "video" and not stream.rtx and second & 0x80:
            stream.frames += 1
            if stream.last_frame_at is None:
                stream.first_frame_at = now
            else:
                gap = now - stream.last_frame_at
                stream.longest_gap = max(stream.longest_gap, gap)
                if gap > self.freeze_seconds:
                    stream.freezes += 1
            stream.last_frame_at = now
        elif stream.kind == "audio":
            stream.frames += 1

    def media(self, kind: str) -> list[StreamStats]:
        return [s for s in self.streams.values() if s.kind == kind and not s.rtx]

    def totals(self) -> dict[str, Any]:
        """Sums over the streams of this connection (retransmissions counted apart)."""
        media = [s for s in self.streams.values() if not s.rtx]
        video = self.media("video")
        return {
            "packets": sum(s.packets for s in media),
            "bytes": sum(s.bytes for s in self.streams.values()),
            "expected": sum(s.expected for s in media),
            "lost": sum(s.lost for s in media),
            "retransmissions": sum(s.packets for s in self.streams.values() if s.rtx),
            "video_streams": len(video),
            "audio_streams": len(self.media("audio")),
            "video_frames": sum(s.frames for s in video),
            "freezes": sum(s.freezes for s in video),
            "longest_gap_ms": round(max((s.longest_gap for s in video), default=0.0) * 1000, 1),
            "malformed": self.malformed,
        }


def payload_kinds(pc: Any) -> dict[int, tuple[str, bool]]:
    """Payload type -> (kind, is_rtx) from a negotiated aiortc peer connection."""
    kinds: dict[int, tuple[str, bool]] = {}
    for transceiver in pc.getTransceivers():
        for codec in negotiated_codecs(transceiver):
            kinds[codec.payloadType] = (transceiver.kind, codec.name.lower() == "rtx")
    return kinds


def tap_counter(pc: Any, counter: RtpCounter, decode: bool = False) -> RtpCounter:
    """Count every RTP packet ``pc`` receives, after decryption and before aiortc's routing;
    drop it there unless ``decode``.  Idempotent per transport: call after every negotiation."""
    counter.kinds.update(payload_kinds(pc))
    counter.decode = decode
    intercept_incoming(pc, counter)
    return counter


def count_clear(pc: Any, counter: RtpCounter) -> RtpCounter:
    """Count the RTP packets ``pc`` receives by their header, which SRTP leaves in the clear, as
    they come off its ICE connection, and drop them there: no SRTP decryption, no aiortc routing
    (``sfu.aiortc_client.take_clear_rtp``), so a load process holds several times the viewers.
    Such a viewer sends no receiver reports or NACKs.  Idempotent per connection: call it after
    every negotiation (``Participant.tap_incoming``)."""
    counter.kinds.update(payload_kinds(pc))
    take_clear_rtp(pc, counter.add, counter)
    return counter


def counting(clear: bool, decode: bool = False) -> Callable[[Any, RtpCounter], RtpCounter]:
    """How a bot counts what it receives: by the clear header, or after decryption."""
    if clear and not decode:
        return count_clear
    return lambda pc, counter: tap_counter(pc, counter, decode=decode)


# Reading the SFU's metrics ----------------------------------------------------------------------


@dataclass
class Scrape:
    """Samples of one /metrics scrape: (name, sorted label items) -> value."""

    at: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample called ``name`` whose labels include ``labels``."""
        return sum(
            value for (sample, items), value in self.samples.items()
            if sample == name and all(dict(items).get(k) == v for k, v in labels.items())
        )

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of histogram ``name``, summed over label sets."""
        by_bound: dict[float, float] = {}
        for (sample, items), value in self.samples.items():
            if sample == name + "_bucket":
                bound = float(dict(items)["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + value
        return sorted(by_bound.items())


def parse_metrics(text: str, at: float) -> Scrape:
    scrape = Scrape(at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scrape.samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return scrape


def histogram_quantile(q: float, before: Iterable[tuple[float, float]], after: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of the observations made between two scrapes of a cumulative
    histogram, interpolated linearly within the bucket that holds it (as Prometheus does).
    None if nothing was observed; the highest finite bound if it falls in the +Inf bucket."""
    start = dict(before)
    deltas = [(bound, count - start.get(bound, 0.0)) for bound, count in after]
    if not deltas or deltas[-1][1] <= 0:
        return None
    rank = q * deltas[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in deltas:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, cumulative
    return lower


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) by linear interpolation; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


def median(values: list[float], digits: int | None = 2) -> float | None:
    """The median, rounded to ``digits`` (None: not rounded); None for no values (every trial
    failed, or none measured it)."""
    if not values:
        return None
    middle = statistics.median(values)
    return middle if digits is None else round(middle, digits)
