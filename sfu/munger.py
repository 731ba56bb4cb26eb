"""Per-subscriber rewriting of sequence numbers and timestamps.

A down-track starts at a random sequence number and timestamp and continues from there without
gaps of its own: input packets are mapped by a fixed offset from the point where forwarding
(re)started, so upstream gaps stay gaps that the subscriber can NACK, and NACKed output numbers
map back to input numbers.  Inputs and offsets are unwrapped integers; outputs are cut to 16 and
32 bits only when they leave."""

from __future__ import annotations

import random

HISTORY = 1024


class Munger:
    def __init__(self, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self._next_seq = rng.randrange(0, 1 << 15)
        self._next_ts = rng.randrange(0, 1 << 31)
        self._seq_offset = 0
        self._ts_offset = 0
        self._start_seq: int | None = None
        self._last_out_seq: int | None = None
        self._last_out_ts = 0
        # output -> input for recent packets, so NACKs map back across restarts (layer switches)
        self._history: list[tuple[int, int] | None] = [None] * HISTORY

    @property
    def started(self) -> bool:
        return self._start_seq is not None

    def start(self, sequence: int, timestamp: int, ts_gap: int = 0) -> None:
        """Begin (or resume, e.g. after a layer switch) at this input packet: it becomes the
        next output number, its timestamp ``ts_gap`` ticks after the last one sent."""
        if self._last_out_seq is not None:
            self._next_seq = self._last_out_seq + 1
            self._next_ts = self._last_out_ts + max(ts_gap, 1)
        self._seq_offset = self._next_seq - sequence
        self._ts_offset = self._next_ts - timestamp
        self._start_seq = sequence

    def map(self, sequence: int, timestamp: int) -> tuple[int, int] | None:
        """Output (sequence16, timestamp32) for an input packet, or None for packets from before
        the start point."""
        if self._start_seq is None or sequence < self._start_seq:
            return None
        out_seq = sequence + self._seq_offset
        out_ts = timestamp + self._ts_offset
        if self._last_out_seq is None or out_seq > self._last_out_seq:
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
        self._history[out_seq % HISTORY] = (out_seq, sequence)
        return out_seq & 0xFFFF, out_ts & 0xFFFFFFFF

    def unmap(self, out_sequence16: int) -> int | None:
        """The input sequence number behind an output number a subscriber NACKed."""
        if self._last_out_seq is None:
            return None
        delta = ((out_sequence16 - self._last_out_seq + 0x8000) & 0xFFFF) - 0x8000
        out_seq = self._last_out_seq + delta
        entry = self._history[out_seq % HISTORY]
        if entry is not None and entry[0] == out_seq:
            return entry[1]
        # Never sent (lost upstream before it reached us): it maps by the current offset.
        sequence = out_seq - self._seq_offset
        if self._start_seq is None or sequence < self._start_seq:
            return None
        return sequence
