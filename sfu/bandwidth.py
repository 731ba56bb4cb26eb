"""Rates and bandwidth estimates, pure and clock-driven.

``RateMeter`` measures a bit rate over a sliding window.  ``BandwidthEstimator`` is the SFU's
estimate of what one subscriber's downlink carries, from the feedback that subscriber sends:

- **loss** (fraction lost in its receiver reports, as GCC's loss-based controller): above 10%
  the estimate falls to ``(1 - loss / 2)`` of what is being sent; under 2% it grows by
  ``GROWTH`` per second once ``HOLD`` seconds have passed since the last decrease; in between it
  holds;
- **REMB**: a receiver-side estimate that *falls* to under what is being sent means the path is
  congested (on over-use a delay-based estimator cuts to a share of what it receives), and the
  estimate drops to it.  A REMB that is rising, or the first one, says only that the receiver's
  estimator is still catching up with a rate that just went up (Chromium's grows about 8% a
  second), not that the path is full.  A REMB above the sending rate says nothing about how
  much more the path takes, so it never raises the estimate.

The estimate starts at ``initial`` so that a new subscriber starts on the layers it asked for,
and stays between ``minimum`` and ``maximum``.
"""

from __future__ import annotations

HIGH_LOSS = 0.10
LOW_LOSS = 0.02
GROWTH = 1.15  # per second while the path is clean
HOLD = 1.0  # seconds after a decrease before growing again
REMB_CONGESTED = 0.85  # a falling REMB under this share of the sending rate means congestion
REMB_FALLING = 0.97  # a REMB under this share of the previous one is falling


class RateMeter:
    """Bits per second over the last ``window`` seconds, in ``buckets`` slots."""

    __slots__ = ("_width", "_buckets", "_slots", "_stamps")

    def __init__(self, window: float = 1.0, buckets: int = 10) -> None:
        self._width = window / buckets
        self._buckets = buckets
        self._slots = [0] * buckets
        self._stamps = [-1] * buckets

    def add(self, octets: int, now: float) -> None:
        tick = int(now / self._width)
        index = tick % self._buckets
        if self._stamps[index] != tick:
            self._stamps[index] = tick
            self._slots[index] = 0
        self._slots[index] += octets

    def rate(self, now: float) -> float:
        tick = int(now / self._width)
        oldest = tick - self._buckets + 1
        total = sum(octets for octets, stamp in zip(self._slots, self._stamps, strict=True) if stamp >= oldest)
        return total * 8 / (self._width * self._buckets)


REMB_FRESH = 2.5  # seconds a REMB counts towards the sum before its sender is taken as gone


class RembSum:
    """The downlink estimate from a subscriber's REMBs about its video.  A REMB speaks for the
    SSRCs it lists: Chromium sends one for everything it receives, aiortc one per receiver.
    Taken each as the whole downlink, one receiver's REMB cut the estimate (aiortc's audio
    receiver's, which starts near zero, to the minimum: video paused that nobody lacked
    bandwidth for; the down-track passes on only REMBs that reach a video sender).  So the
    estimate is the sum of the latest REMB of each SSRC set heard from in ``REMB_FRESH``."""

    def __init__(self) -> None:
        self._latest: dict[tuple[int, ...], tuple[float, float]] = {}

    MAX_SETS = 16  # a subscriber naming ever new SSRC sets keeps this many, the newest

    def add(self, ssrcs: tuple[int, ...], bitrate: float, now: float) -> float:
        self._latest.pop(ssrcs, None)
        self._latest[ssrcs] = (bitrate, now)
        while len(self._latest) > self.MAX_SETS:
            del self._latest[next(iter(self._latest))]
        for key, (_, at) in list(self._latest.items()):
            if now - at > REMB_FRESH:
                del self._latest[key]
        return sum(value for value, _ in self._latest.values())


class BandwidthEstimator:
    def __init__(self, initial: float = 3_000_000, minimum: float = 100_000, maximum: float = 20_000_000) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.value = min(max(initial, minimum), maximum)
        self._last_decrease: float | None = None
        self._last_update: float | None = None
        self._last_report: float | None = None
        self._remb: float | None = None

    def _clamp(self) -> None:
        self.value = min(max(self.value, self.minimum), self.maximum)

    def _decrease(self, target: float, now: float) -> None:
        if target < self.value:
            self.value = target
            self._clamp()
            self._last_decrease = now

    def on_idle(self, now: float) -> None:
        """No loss reports for a second (nothing is being sent, e.g. video paused for
        bandwidth): grow as on a clean path, or a paused subscriber would stay paused."""
        if self._last_report is None or now - self._last_report > 1.0:
            self.grow(now)

    def on_loss(self, fraction_lost: float, sending_rate: float, now: float) -> None:
        """A receiver report: ``fraction_lost`` in 0..1 of what ``sending_rate`` carried."""
        self._last_report = now
        fraction = min(max(fraction_lost, 0.0), 1.0)
        if fraction > HIGH_LOSS:
            base = min(self.value, sending_rate) if sending_rate > 0 else self.value
            self._decrease(base * (1 - fraction / 2), now)
        elif fraction < LOW_LOSS:
            self.grow(now)

    def on_remb(self, bitrate: float, sending_rate: float, now: float) -> None:
        previous, self._remb = self._remb, bitrate
        falling = previous is not None and bitrate < previous * REMB_FALLING
        if falling and sending_rate > 0 and bitrate < sending_rate * REMB_CONGESTED:
            self._decrease(bitrate, now)

    def grow(self, now: float) -> None:
        """Clean feedback: grow by ``GROWTH`` per second elapsed since the last growth."""
        last = self._last_update
        self._last_update = now
        if last is None:
            return
        if self._last_decrease is not None:
            last = max(last, self._last_decrease + HOLD)
        elapsed = min(now - last, 2.0)
        if elapsed > 0:
            self.value *= GROWTH**elapsed
            self._clamp()
