"""Which layer of each video track a subscriber gets: pure, clock passed in.

``wanted_layer`` turns what a subscriber asked for (a rendered size or a quality) into the
highest spatial layer it needs.  ``allocate`` fits every wanted track of one subscriber into
its bandwidth budget in three phases, lowest priority first in each: step spatial layers down
(to the lowest the publisher sends), then drop temporal layers (L1T3: 30 -> 15 -> 7.5 fps),
then pause video (when the budget is under ``PAUSE_FRACTION`` of what is left).  Audio is never in here: the caller reserves it out of the budget first.
``priority`` and ``wanted_with_cause`` are the room's rules for how long a track keeps its
layers and whether a subscriber wants it at all.  ``Allocator`` applies allocations with hysteresis: a step down happens at once, a step up only
when the budget covers it with ``UP_MARGIN`` to spare and ``UP_HOLD`` seconds after the last
step down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

UP_MARGIN = 1.15
UP_HOLD = 3.0
PAUSE_FRACTION = 0.5
QUALITIES = ("low", "medium", "high")


def wanted_layer(
    heights: list[int | None], quality: str | None = None, width: int | None = None, height: int | None = None,
    widths: list[int | None] | None = None,
) -> int | None:
    """The highest spatial layer a subscriber needs, or None for ``off``.

    ``heights``/``widths`` are the layers' sizes (lowest first; None while unknown).  A rendered
    size picks the best layer at or under it (the lowest layer when all are larger); a quality
    picks top, middle or bottom; nothing asked means the top layer."""
    count = len(heights)
    if count == 0:
        return None
    if quality == "off" or (width == 0 or height == 0):
        return None
    if quality in QUALITIES:
        return {"low": 0, "medium": (count - 1) // 2 if count > 2 else 0, "high": count - 1}[quality]
    if width is None and height is None:
        return count - 1
    widths = widths or [None] * count
    if any(h is None for h in heights):
        # Sizes not seen yet (no keyframe of that layer): assume each layer halves the next.
        top = max(height or 0, (width or 0) * 9 // 16)
        guess = count - 1
        while guess > 0 and 720 >> (count - 1 - guess) > top * 1.2:
            guess -= 1
        return guess
    best = 0
    for index in range(count):
        fits_h = height is None or (heights[index] or 0) <= height
        fits_w = width is None or (widths[index] or 0) <= width
        if fits_h and fits_w:
            best = index
    return best


@dataclass(slots=True)
class Demand:
    track_id: str
    max_layer: int | None  # None: not wanted (off, or outside last-N)
    rates: list[list[float]]  # rates[s][t]: bits/s of spatial layer s with temporal layers 0..t
    available: list[bool]  # layers the publisher sends (or can resume)
    priority: int = 0  # higher keeps its layers longer


PRIORITY_PINNED, PRIORITY_SCREEN, PRIORITY_DOMINANT, PRIORITY_SPEAKER = 4, 3, 2, 1


def priority(owner: str, source: str, pins: Sequence[str], dominant: str | None, speakers: Sequence[str]) -> int:
    """How long a track keeps its layers when a subscriber's downlink is short: what it pinned,
    then screen shares, then the dominant speaker, then the other current speakers."""
    if owner in pins:
        return PRIORITY_PINNED
    if source == "screen":
        return PRIORITY_SCREEN
    if owner == dominant:
        return PRIORITY_DOMINANT
    if owner in speakers:
        return PRIORITY_SPEAKER
    return 0


def wanted_with_cause(wanted: int | None, muted: bool, visible: bool) -> tuple[int | None, str]:
    """The layer a subscriber wants of a track and why: nothing while the track is muted or
    outside the subscriber's last-N."""
    if muted:
        return None, "muted"
    if not visible:
        return None, "last_n"
    return wanted, "requested"


@dataclass(frozen=True, slots=True)
class Choice:
    layer: int | None  # None: paused
    temporal: int | None = None  # highest temporal layer; None when the codec has none
    reason: str = "requested"

    def rank(self) -> int:
        if self.layer is None:
            return -1
        return self.layer * 4 + (self.temporal if self.temporal is not None else 3)


PAUSED = Choice(None, None, "requested")


def _cost(demand: Demand, choice: Choice) -> float:
    if choice.layer is None:
        return 0.0
    rates = demand.rates[choice.layer] if choice.layer < len(demand.rates) else []
    if not rates:
        return 0.0
    temporal = len(rates) - 1 if choice.temporal is None else min(choice.temporal, len(rates) - 1)
    return rates[temporal]


def _top_temporal(demand: Demand, layer: int) -> int | None:
    rates = demand.rates[layer] if layer < len(demand.rates) else []
    return len(rates) - 1 if len(rates) > 1 else None


def _start(demand: Demand) -> Choice:
    if demand.max_layer is None:
        return PAUSED
    usable = [i for i, ok in enumerate(demand.available) if ok and i <= demand.max_layer]
    if not usable:
        # Nothing at or under the wanted size is sent: the lowest layer that is.
        usable = [i for i, ok in enumerate(demand.available) if ok][:1]
    if not usable:
        return Choice(None, None, "unavailable")
    layer = usable[-1]
    return Choice(layer, _top_temporal(demand, layer))


def allocate(budget: float, demands: list[Demand]) -> dict[str, Choice]:
    choices = {d.track_id: _start(d) for d in demands}
    by_id = {d.track_id: d for d in demands}
    order = sorted(demands, key=lambda d: d.priority)  # lowest priority first

    def total() -> float:
        return sum(_cost(by_id[tid], choice) for tid, choice in choices.items())

    # Phase 1: spatial layers down.
    while total() > budget:
        for demand in order:
            choice = choices[demand.track_id]
            lower = [i for i, ok in enumerate(demand.available) if ok and choice.layer is not None and i < choice.layer]
            if lower:
                choices[demand.track_id] = Choice(lower[-1], _top_temporal(demand, lower[-1]), "bandwidth")
                break
        else:
            break
    # Phase 2: temporal layers down.
    while total() > budget:
        for demand in order:
            choice = choices[demand.track_id]
            if choice.layer is not None and choice.temporal is not None and choice.temporal > 0:
                choices[demand.track_id] = Choice(choice.layer, choice.temporal - 1, "bandwidth")
                break
        else:
            break
    # Phase 3: pause video, only when even the lowest layers cost well over the budget (the
    # estimate is itself measured against what is sent: one layer slightly over it is better
    # served, with NACK repairing the loss, than frozen).
    while total() * PAUSE_FRACTION > budget:
        for demand in order:
            # A track without simulcast is never paused for bandwidth: there is nothing lower to
            # offer, and NACK repairs what a lossy path drops.
            if choices[demand.track_id].layer is not None and len(demand.available) > 1:
                choices[demand.track_id] = Choice(None, None, "bandwidth")
                break
        else:
            break
    return choices


@dataclass
class Allocator:
    """One subscriber's current choices, moved with hysteresis."""

    current: dict[str, Choice] = field(default_factory=dict)
    last_down: float = float("-inf")

    def update(self, budget: float, demands: list[Demand], now: float) -> dict[str, Choice]:
        """New choices for the tracks whose choice changed."""
        fits = allocate(budget, demands)
        roomy = allocate(budget / UP_MARGIN, demands)
        changes: dict[str, Choice] = {}
        may_rise = now - self.last_down >= UP_HOLD
        for demand in demands:
            tid = demand.track_id
            now_choice = self.current.get(tid)
            fit = fits[tid]
            if now_choice is None:
                new = fit  # a new track starts where the budget allows
            elif fit.rank() < now_choice.rank():
                new = fit
                if fit.reason == "bandwidth":
                    self.last_down = now
            elif roomy[tid].rank() > now_choice.rank() and (may_rise or now_choice.reason != "bandwidth"):
                new = roomy[tid]
            elif now_choice.layer is not None and not (demand.available[now_choice.layer] if now_choice.layer < len(demand.available) else False):
                new = fit  # its layer stopped
            else:
                new = Choice(now_choice.layer, now_choice.temporal, fit.reason if fit == now_choice else now_choice.reason)
            if new != now_choice:
                changes[tid] = new
                self.current[tid] = new
        for tid in list(self.current):
            if tid not in fits:
                del self.current[tid]
        return changes
