"""Placing RTP media on the recording's common timeline.

Each stream (a track's layer) maps its RTP timestamps to its sender's wall clock with the RTCP
sender reports it gets (NTP time and RTP timestamp of one instant), extending 32-bit timestamps
across the wrap-around.  The sender's clock is then mapped onto the recorder's (monotonic)
clock with one offset per participant, the smallest ``arrival - sent`` seen on any of its
streams, so that its audio and video move together.  Before a stream's first sender report it
falls back to its arrival times: the first packet's arrival plus RTP time since.

Pure logic: times come in as arguments.
"""

from __future__ import annotations

NTP_EPOCH_FRACTION = float(1 << 32)
HALF = 1 << 31
WRAP = 1 << 32


def ntp_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / NTP_EPOCH_FRACTION


class StreamClock:
    """RTP timestamps of one stream to seconds on the sender's clock or the local one."""

    def __init__(self, clock_rate: int, sync: ParticipantSync) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.rate = clock_rate
        self.sync = sync
        self.latest: int | None = None  # newest unwrapped timestamp seen
        self.first: tuple[int, float] | None = None  # (unwrapped timestamp, arrival)
        self.report: tuple[int, float] | None = None  # (unwrapped timestamp, sender seconds)

    def unwrap(self, timestamp: int) -> int:
        """A 32-bit timestamp extended nearest the newest one seen."""
        timestamp &= 0xFFFFFFFF
        latest = self.latest
        if latest is None:
            self.latest = timestamp
            return timestamp
        delta = (timestamp - latest) & 0xFFFFFFFF
        if delta >= HALF:
            delta -= WRAP
        value = latest + delta
        if delta > 0:
            self.latest = value
        return value

    def on_packet(self, timestamp: int, arrival: float) -> int:
        """A packet arrived: learn from it; returns its unwrapped timestamp."""
        value = self.unwrap(timestamp)
        if self.first is None:
            self.first = (value, arrival)
        if self.report is not None:
            self.sync.observe(arrival - self.sender_time(value))
        return value

    def on_report(self, ntp: int, rtp: int) -> None:
        self.report = (self.unwrap(rtp), ntp_seconds(ntp))

    def sender_time(self, value: int) -> float:
        assert self.report is not None
        base, seconds = self.report
        return seconds + (value - base) / self.rate

    def local_time(self, value: int) -> float | None:
        """Where unwrapped timestamp ``value`` belongs on the local clock, or None before any
        packet of this stream arrived."""
        if self.report is not None and self.sync.offset is not None:
            return self.sender_time(value) + self.sync.offset
        if self.first is None:
            return None
        base, arrival = self.first
        return arrival + (value - base) / self.rate


class ParticipantSync:
    """The offset from one participant's sender clock to the local clock, shared by all of its
    streams: the smallest delay seen (the least-delayed packet is the best estimate)."""

    def __init__(self) -> None:
        self.offset: float | None = None

    def observe(self, delay: float) -> None:
        if self.offset is None or delay < self.offset:
            self.offset = delay
