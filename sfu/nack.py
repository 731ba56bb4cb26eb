"""NACK bookkeeping, pure and clock-driven.

``LossTracker`` watches a publisher's sequence numbers and says which missing packets to ask
for again, and when; ``RetransmitFilter`` keeps a subscriber's repeated NACKs from making the
SFU resend the same packet over and over."""

from __future__ import annotations

from dataclasses import dataclass

MIN_RETRY_INTERVAL = 0.02


@dataclass(slots=True)
class _Missing:
    first_seen: float
    next_request: float
    requests: int


class LossTracker:
    """Missing upstream packets, by unwrapped sequence number."""

    def __init__(self, max_age: float = 1.0, max_requests: int = 10, max_missing: int = 256) -> None:
        self.max_age = max_age
        self.max_requests = max_requests
        self.max_missing = max_missing
        self._highest: int | None = None
        self._missing: dict[int, _Missing] = {}
        self.recovered = 0
        self.abandoned = 0

    def on_packet(self, sequence: int, now: float) -> bool:
        """Take one arrival; True when it opened a gap (packets are now missing that were not)."""
        highest = self._highest
        if highest is None:
            self._highest = sequence
            return False
        if sequence > highest + 1:
            first_gap = max(highest + 1, sequence - self.max_missing)
            for seq in range(first_gap, sequence):
                self._missing[seq] = _Missing(now, now, 0)
            self._highest = sequence
            if len(self._missing) > self.max_missing:
                for seq in sorted(self._missing)[: len(self._missing) - self.max_missing]:
                    del self._missing[seq]
                    self.abandoned += 1
            return True
        if sequence == highest + 1:
            self._highest = sequence
        elif self._missing.pop(sequence, None) is not None:
            self.recovered += 1
        return False

    @property
    def pending(self) -> bool:
        """Packets are missing: the next NACK is due within a tick."""
        return bool(self._missing)

    def due(self, now: float, rtt: float | None = None) -> list[int]:
        """Sequence numbers to NACK now; each is asked for again after about one round trip,
        and given up after ``max_requests`` requests or ``max_age`` seconds."""
        interval = max(MIN_RETRY_INTERVAL, rtt if rtt else 0.1)
        result: list[int] = []
        expired: list[int] = []
        for seq, entry in self._missing.items():
            if now - entry.first_seen > self.max_age or entry.requests >= self.max_requests:
                expired.append(seq)
            elif entry.next_request <= now:
                entry.requests += 1
                entry.next_request = now + interval
                result.append(seq)
        for seq in expired:
            del self._missing[seq]
            self.abandoned += 1
        return sorted(result)

    @property
    def missing(self) -> list[int]:
        return sorted(self._missing)


class RetransmitFilter:
    """Resend a packet to one subscriber at most once per min(100 ms, 2 x RTT)."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._last: dict[int, float] = {}

    def allow(self, sequence: int, now: float, rtt: float | None = None) -> bool:
        window = min(0.1, 2 * rtt) if rtt else 0.1
        last = self._last.get(sequence)
        if last is not None and now - last < window:
            return False
        self._last[sequence] = now
        if len(self._last) > self.capacity:
            for seq in sorted(self._last)[: len(self._last) - self.capacity]:
                del self._last[seq]
        return True
