"""Per-subscriber rewriting of sequence numbers and timestamps.

A down-track starts at a random sequence number and timestamp and continues from there without
gaps of its own: input packets are mapped by an offset from the point where forwarding
(re)started, so upstream gaps stay gaps that the subscriber can NACK, and NACKed output numbers
map back to (layer, input number).  Packets the SFU chooses not to forward (a temporal layer
above the subscriber's) are ``drop``ped: later packets move down to close the gap, so the
subscriber sees a contiguous stream.  A restart (a simulcast layer switch) continues the output
where it stopped.  Inputs and offsets are unwrapped integers; outputs are cut to 16 and 32 bits
only when they leave."""

from __future__ import annotations

import random
from collections.abc import Callable

HISTORY = 1024
SEGMENTS = 64
DROPPED = 256
# The sender's SRTP refuses a sequence number more than its replay window (1,024 packets, as
# aiortc sets it) behind the highest it protected: later than this, a packet is not forwarded.
MAX_LATE = 1000
# RFC 3550's MAX_DROPOUT: an input step forward larger than this is a new numbering (an encoder
# restart, or a peer that lies), not a loss.  The output goes on from its last number instead:
# SRTP sees only 16 bits and guesses the rollover, so an output step of half the space or more
# would read as a step back and everything after it as too old.
MAX_DROPOUT = 3000


class Munger:
    def __init__(self, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self._next_seq = rng.randrange(0, 1 << 15)
        self._next_ts = rng.randrange(0, 1 << 31)
        self._ts_offset = 0
        self._layer = 0
        self._start_seq: int | None = None
        self._highest_in: int | None = None
        # (first input sequence, offset) since the start point, newest last; a drop adds one
        self._segments: list[tuple[int, int]] = []
        self._dropped: set[int] = set()
        self._dropped_order: list[int] = []
        self._last_out_seq: int | None = None
        self._last_out_ts = 0
        # Set while a native lane (sfu.fastsend) forwards with this state: called before anything
        # here reads or changes it, to take the state back (sfu.forwarding.DownTrack.take_back).
        self.lent: Callable[[], None] | None = None
        # output -> (layer, input) for recent packets, so NACKs map back across restarts
        self._history: list[tuple[int, int, int] | None] = [None] * HISTORY

    @property
    def started(self) -> bool:
        return self._start_seq is not None

    def start(self, sequence: int, timestamp: int, ts_gap: int = 0, layer: int = 0, skip: int = 0) -> None:
        """Begin (or resume, e.g. after a layer switch) at this input packet of ``layer``: it
        becomes the next output number (after ``skip`` numbers left out, so that a receiver sees
        a frame cut short as lost rather than complete), its timestamp ``ts_gap`` ticks after
        the last one sent."""
        if self.lent is not None:
            self.lent()
        if self._last_out_seq is not None:
            self._next_seq = self._last_out_seq + 1 + skip
            self._next_ts = self._last_out_ts + max(ts_gap, 1)
        self._segments = [(sequence, self._next_seq - sequence)]
        self._ts_offset = self._next_ts - timestamp
        self._start_seq = sequence
        self._highest_in = sequence - 1
        self._layer = layer
        self._dropped.clear()
        self._dropped_order.clear()

    def stop(self) -> None:
        """Forwarding paused: the next ``start`` continues the output after the last packet."""
        if self.lent is not None:
            self.lent()
        self._start_seq = None

    def _offset(self, sequence: int) -> int:
        segments = self._segments
        for index in range(len(segments) - 1, -1, -1):
            first, offset = segments[index]
            if sequence >= first:
                return offset
        return segments[0][1]

    def map(self, sequence: int, timestamp: int) -> tuple[int, int] | None:
        """Output (sequence16, timestamp32) for an input packet, or None for packets from before
        the start point, packets dropped earlier, and packets later than ``MAX_LATE``."""
        if self.lent is not None:
            self.lent()
        if self._start_seq is None or sequence < self._start_seq or sequence in self._dropped:
            return None
        first, offset = self._segments[-1]  # nearly always: the newest segment
        out_seq = sequence + (offset if sequence >= first else self._offset(sequence))
        last = self._last_out_seq
        if last is not None and out_seq < last - MAX_LATE:
            return None
        if last is not None and out_seq > last + MAX_DROPOUT:
            self._add_segment(sequence, last + 1 - sequence)
            out_seq = last + 1
        out_ts = timestamp + self._ts_offset
        if self._highest_in is None or sequence > self._highest_in:
            self._highest_in = sequence
        if self._last_out_seq is None or out_seq > self._last_out_seq:
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
        self._history[out_seq % HISTORY] = (out_seq, self._layer, sequence)
        return out_seq & 0xFFFF, out_ts & 0xFFFFFFFF

    def drop(self, sequence: int) -> None:
        """Do not forward this input packet.  In order, later packets close its gap; a packet
        older than what was already forwarded leaves its gap (the subscriber's NACK for it is
        ignored)."""
        if self.lent is not None:
            self.lent()
        if self._start_seq is None or sequence < self._start_seq or sequence in self._dropped:
            return
        self._dropped.add(sequence)
        self._dropped_order.append(sequence)
        if len(self._dropped_order) > DROPPED:
            self._dropped.discard(self._dropped_order.pop(0))
        if self._highest_in is not None and sequence > self._highest_in:
            # Inputs between the highest forwarded and this one are upstream losses: their
            # output slots stay for them.
            self._add_segment(sequence + 1, self._offset(sequence) - 1)
            self._highest_in = sequence

    def _add_segment(self, first: int, offset: int) -> None:
        """Inputs from ``first`` on map with ``offset``."""
        self._segments.append((first, offset))
        if len(self._segments) > SEGMENTS:
            del self._segments[0]

    def timestamp_for(self, timestamp: int) -> int:
        """The output timestamp of an input timestamp of the current layer."""
        return (timestamp + self._ts_offset) & 0xFFFFFFFF

    def unmap(self, out_sequence16: int) -> tuple[int, int] | None:
        """(layer, input sequence) behind an output number a subscriber NACKed."""
        if self.lent is not None:
            self.lent()
        if self._last_out_seq is None:
            return None
        delta = ((out_sequence16 - self._last_out_seq + 0x8000) & 0xFFFF) - 0x8000
        if delta < -MAX_LATE:
            return None  # too late to send again under the same numbers
        if delta > 0:
            return None  # never sent: sending it would move SRTP's index past what comes next
        out_seq = self._last_out_seq + delta
        entry = self._history[out_seq % HISTORY]
        if entry is not None and entry[0] == out_seq:
            return entry[1], entry[2]
        if self._start_seq is None:
            return None
        # Never sent (lost upstream before it reached us): find the input it stands for.
        for first, offset in reversed(self._segments):
            sequence = out_seq - offset
            if sequence >= first:
                if sequence in self._dropped:
                    return None
                return self._layer, sequence
        return None
