"""Active speaker detection from RFC 6464 audio levels, pure and clock-driven.

Each participant's levels (0 loud .. 127 silent, -dBov) are kept for ``window`` seconds.  Its
**score** is the mean loudness above the threshold over that window (levels under the
threshold count as zero), so it reflects both how much of the time someone talks and how loud:
a single loud packet (a cough, a click) moves it by 1/50 of a window's worth and cannot take
the floor.  Someone is *speaking* while their score is over ``MIN_SCORE``.

The **dominant** speaker changes only when another speaker's score beats the current one's by
``MARGIN`` times, or the current one has been silent for ``hold`` seconds while someone else
speaks; changes are reported at most once per ``min_switch_interval``.  When everyone is silent
the last dominant speaker stays dominant (still the most recent), but nobody is speaking.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MIN_SCORE = 3.0  # mean dB over the threshold across the window
MARGIN = 1.5


@dataclass(slots=True)
class SpeakerChange:
    dominant: str | None
    speakers: list[str]


class ActiveSpeakerDetector:
    def __init__(
        self, *, threshold_dbov: int = 50, window: float = 1.0, min_switch_interval: float = 1.0, hold: float = 2.0
    ) -> None:
        self.threshold = threshold_dbov
        self.window = window
        self.min_switch_interval = min_switch_interval
        self.hold = hold
        self.dominant: str | None = None
        self._levels: dict[str, deque[tuple[float, float]]] = {}
        self._sums: dict[str, float] = {}
        self._last_loud: dict[str, float] = {}
        self._recent: list[str] = []
        self._last_change = float("-inf")
        self._reported: tuple[str | None, tuple[str, ...]] = (None, ())

    def add_level(self, identity: str, level: int, now: float) -> None:
        loudness = float(max(0, self.threshold - min(max(level, 0), 127)))
        samples = self._levels.setdefault(identity, deque())
        samples.append((now, loudness))
        self._sums[identity] = self._sums.get(identity, 0.0) + loudness
        if loudness > 0:
            self._last_loud[identity] = now
        self._expire(identity, now)

    def _expire(self, identity: str, now: float) -> None:
        samples = self._levels[identity]
        horizon = now - self.window
        while samples and samples[0][0] < horizon:
            _, loudness = samples.popleft()
            self._sums[identity] -= loudness

    def remove(self, identity: str) -> None:
        self._levels.pop(identity, None)
        self._sums.pop(identity, None)
        self._last_loud.pop(identity, None)
        if identity in self._recent:
            self._recent.remove(identity)
        if self.dominant == identity:
            self.dominant = self._recent[0] if self._recent else None

    def score(self, identity: str, now: float) -> float:
        if identity not in self._levels:
            return 0.0
        self._expire(identity, now)
        # Normalised to 50 packets a second so that the score does not depend on packet rate.
        return self._sums[identity] / (50 * self.window)

    def speakers(self, now: float) -> list[str]:
        scored = [(self.score(identity, now), identity) for identity in list(self._levels)]
        return [identity for score, identity in sorted(scored, reverse=True) if score >= MIN_SCORE]

    def recent(self, n: int) -> list[str]:
        return self._recent[:n]

    def update(self, now: float) -> SpeakerChange | None:
        speaking = self.speakers(now)
        if speaking:
            loudest = speaking[0]
            current = self.dominant
            if current is None or current not in self._levels:
                candidate = loudest
            elif loudest != current:
                current_score = self.score(current, now)
                silent_for = now - self._last_loud.get(current, float("-inf"))
                beaten = self.score(loudest, now) > MARGIN * max(current_score, MIN_SCORE)
                candidate = loudest if beaten or silent_for >= self.hold else current
            else:
                candidate = current
        else:
            candidate = self.dominant
        state = (candidate, tuple(speaking))
        if state == self._reported or now - self._last_change < self.min_switch_interval:
            return None
        self._last_change = now
        self._reported = state
        if candidate is not None and candidate != self.dominant or (candidate is not None and not self._recent):
            if candidate in self._recent:
                self._recent.remove(candidate)
            self._recent.insert(0, candidate)
        self.dominant = candidate
        return SpeakerChange(candidate, list(speaking))
