"""Prometheus metrics of one SFU node, registered on the application's registry."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

DELAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
LOSS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class NodeState(Protocol):
    """What the gauges read: they are computed from the node at each scrape, never counted up
    and down, so that they cannot drift from what the node holds."""

    def room_count(self) -> int: ...

    def participant_count(self) -> int: ...

    def track_count(self, kind: str) -> int: ...

    def peer_connection_count(self) -> int: ...

    def forwarded_stream_count(self, kind: str) -> int: ...

    def dropped_datagrams(self) -> dict[str, int]: ...


class DroppedDatagrams:
    """``videoconf_sfu_datagrams_dropped_total{reason}``, read from the node at each scrape."""

    def __init__(self, node: NodeState) -> None:
        self.node = node

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "videoconf_sfu_datagrams_dropped",
            "Datagrams on media ports dropped before aiortc saw them (empty, unknown kind, too long, "
            "from a source ICE has not checked, queue full)",
            labels=("reason",),
        )
        for reason, count in sorted(self.node.dropped_datagrams().items()):
            family.add_metric((reason,), count)
        yield family


class PacketHistogram:
    """A histogram for the packet path: a list of counts and a sum, read at each scrape.
    prometheus-client's takes a lock on every observation; this is a bisect and two additions
    (one event loop writes it, and a scrape runs on that loop too)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, value: float, count: int) -> None:
        """``count`` observations of ``value`` (copies that left together)."""
        if count > 0:
            self.counts[bisect_left(self.bounds, value)] += count
            self.total += value * count

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


class PacketCounts:
    """The packet path's counters and delay histograms as plain numbers, exported at each scrape."""

    def __init__(self) -> None:
        self.forwarded = {"audio": 0, "video": 0}
        self.octets = {"audio": 0, "video": 0}
        self.received = {"audio": 0, "video": 0}
        self.delay = PacketHistogram(DELAY_BUCKETS)  # arrival to the last copy of a packet
        self.copy_delay = PacketHistogram(DELAY_BUCKETS)  # arrival to each copy

    def collect(self) -> Iterator[Metric]:
        for name, help_text, values in (
            ("videoconf_sfu_packets_forwarded", "RTP packets written to subscribers", self.forwarded),
            ("videoconf_sfu_packets_received", "RTP packets received from publishers (RTX included)", self.received),
            ("videoconf_sfu_bytes_forwarded", "RTP payload bytes written to subscribers", self.octets),
        ):
            family = CounterMetricFamily(name, help_text, labels=["kind"])
            for kind, value in values.items():
                family.add_metric([kind], value)
            yield family
        yield self.delay.family(
            "videoconf_sfu_forward_delay_seconds",
            "From a packet reaching the SFU to its last copy being written (grows with the fan-out)",
        )
        yield self.copy_delay.family(
            "videoconf_sfu_forward_copy_delay_seconds",
            "From a packet reaching the SFU to each of its copies being written (one observation per copy)",
        )


class SfuMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rooms = Gauge("videoconf_sfu_rooms", "Rooms open on this node", registry=registry)
        self.participants = Gauge("videoconf_sfu_participants", "Participants connected", registry=registry)
        self.tracks = Gauge("videoconf_sfu_tracks", "Published tracks", ("kind",), registry=registry)
        self.forwarded_streams = Gauge(
            "videoconf_sfu_forwarded_streams",
            "Streams this node forwards to its subscribers now (a video stream paused, off or outside last-N is not counted)",
            ("kind",), registry=registry,
        )
        self.peer_connections = Gauge(
            "videoconf_sfu_peer_connections", "Peer connections of this node not closed", registry=registry
        )
        self.counts = PacketCounts()
        registry.register(self.counts)
        self.nacks_received = Counter("videoconf_sfu_nacks_received", "Sequence numbers NACKed by subscribers", registry=registry)
        self.nacks_sent = Counter("videoconf_sfu_nacks_sent", "Sequence numbers NACKed to publishers", registry=registry)
        self.retransmissions = Counter("videoconf_sfu_retransmissions", "Packets resent to subscribers from the cache", registry=registry)
        self.plis_received = Counter("videoconf_sfu_plis_received", "PLI/FIR from subscribers", registry=registry)
        self.plis_sent = Counter("videoconf_sfu_plis_sent", "PLIs sent to publishers", registry=registry)
        self.codec_instances = Counter(
            "videoconf_sfu_codec_instances", "Decoders and encoders created in this process (0 when only forwarding)",
            ("kind",), registry=registry,
        )
        self.packet_errors = Counter(
            "videoconf_sfu_packet_errors",
            "Failures in the packet path, contained where they happened (forward: one subscriber's copy, "
            "tap: a recorder's, receive: a publisher's packet)",
            ("where",), registry=registry,
        )
        self.layer_switches = Counter(
            "videoconf_sfu_layer_switches", "Switches of the layer a subscriber's video stream is forwarded from",
            registry=registry,
        )
        self.receiver_loss = Histogram(
            "videoconf_sfu_receiver_loss_ratio",
            "Fraction lost in each receiver report from subscribers (mean loss: rate of _sum over rate of _count)",
            buckets=LOSS_BUCKETS,
            registry=registry,
        )
        for kind in ("decoder", "encoder"):
            self.codec_instances.labels(kind)  # exported as 0 from the start

    def observe(self, node: NodeState) -> None:
        """Read the gauges from ``node`` at every scrape."""
        self.rooms.set_function(node.room_count)
        self.participants.set_function(node.participant_count)
        for kind in ("audio", "video"):
            self.tracks.labels(kind).set_function(lambda kind=kind: node.track_count(kind))
            self.forwarded_streams.labels(kind).set_function(lambda kind=kind: node.forwarded_stream_count(kind))
        self.peer_connections.set_function(node.peer_connection_count)
        self.registry.register(DroppedDatagrams(node))

    def forwarded_total(self) -> float:
        """RTP packets written to subscribers since the start, both kinds."""
        return float(sum(self.counts.forwarded.values()))

    def record_receive(self, kind: str) -> None:
        self.counts.received[kind] += 1

    def record_forward(self, kind: str, packets: int, octets: int, delay: float) -> None:
        counts = self.counts
        counts.forwarded[kind] += packets
        counts.octets[kind] += octets
        counts.delay.observe(delay)
