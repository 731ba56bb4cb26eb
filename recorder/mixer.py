"""Mixing every participant's audio into one track.

Decoded audio is written at its place on the output timeline (in samples since the recording
began) into blocks of ``BLOCK`` samples per source; a block is mixed once it is due, summing the
sources that have samples there.  Anything missing is silence: gaps, muted participants, and
packets that arrive after their block was mixed (late, dropped).  A source whose placement moves
by less than ``SNAP`` samples from where its previous chunk ended is kept contiguous, so that
clock corrections never click.

Several loud speakers at once sum past full scale.  Rather than clipping, the mix goes through a
peak limiter (``Limiter``) whose ceiling leaves headroom under full scale for the AAC encoder's
overshoot: quiet and normal mixes pass untouched (gain 1), louder ones are turned down smoothly.

Pure logic: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np

BLOCK = 1024  # samples per mixed block (one AAC frame)
SNAP = 960  # 20 ms at 48 kHz
FUTURE_LIMIT = 10 * 48000  # samples ahead of the mix a chunk may land before it is refused
CEILING = 10 ** (-3 / 20)  # -3 dBFS: the limiter's output stays under this (AAC overshoots by up to ~20%)
KNEE = 10 ** (-5 / 20)  # -5 dBFS: peaks up to this pass untouched
RELEASE = math.log(10) / 48000  # the gain recovers at most 20 dB per second (per sample, in nepers)


def soft_ceiling(level: np.ndarray) -> np.ndarray:
    """The level a peak of ``level`` is brought to: itself up to ``KNEE``, then bending away
    smoothly (slope 1 at the knee) towards ``CEILING``, which it never reaches."""
    width = CEILING - KNEE
    return CEILING - width * width / (level - KNEE + width)


class Limiter:
    """A peak limiter without look-ahead, its gain carried from block to block.

    Attack: the gain falls as fast as the signal rises past the knee, just enough to bring each
    sample to ``soft_ceiling``, so nothing passes the ceiling and nothing is clipped.  Release:
    the gain then rises by at most ``release`` (natural-log units) per sample back to 1, so a
    sustained loud signal is turned down by a nearly constant gain instead of having its peaks
    flattened.  In the log domain the gain at sample n is ``min(0, log(gain) + r*n, min over
    k <= n of (needed[k] + r*(n - k)))``: a running minimum, so no Python loop per sample."""

    def __init__(self, release: float = RELEASE) -> None:
        self.release = release
        self.gain = 1.0  # at the end of the last block

    def process(self, block: np.ndarray) -> np.ndarray:
        """``block`` with the gain applied (a new float32 array)."""
        if self.gain == 1.0 and float(np.abs(block).max(initial=0.0)) <= KNEE:
            return block.astype(np.float32)  # the usual case: nothing to limit
        level = np.maximum(np.abs(block.astype(np.float64)), KNEE)
        needed = np.log(soft_ceiling(level) / level)
        ramp = self.release * np.arange(1, len(block) + 1)
        floor = np.minimum.accumulate(np.minimum(needed - ramp, math.log(self.gain)))
        log_gain = np.minimum(floor + ramp, 0.0)
        self.gain = float(math.exp(log_gain[-1]))
        return (block * np.exp(log_gain)).astype(np.float32)


class AudioMixer:
    def __init__(self) -> None:
        self.next_block = 0  # the first block not mixed yet
        self._blocks: dict[Hashable, dict[int, np.ndarray]] = {}
        self._ends: dict[Hashable, int] = {}
        self.late_samples = 0
        self.refused_samples = 0
        self.limiter = Limiter()

    def add(self, source: Hashable, position: int, samples: np.ndarray) -> None:
        """``samples`` (mono float32) belong at ``position`` on the output timeline."""
        end = self._ends.get(source)
        if end is not None and abs(position - end) <= SNAP:
            position = end
        count = len(samples)
        first = self.next_block * BLOCK
        if position + count <= first:
            self.late_samples += count
            self._ends[source] = position + count
            return
        if position - first > FUTURE_LIMIT:
            self.refused_samples += count
            return
        if position < first:
            self.late_samples += first - position
            samples = samples[first - position :]
            position = first
        self._ends[source] = position + len(samples)
        blocks = self._blocks.setdefault(source, {})
        offset = 0
        while offset < len(samples):
            index, start = divmod(position + offset, BLOCK)
            take = min(BLOCK - start, len(samples) - offset)
            block = blocks.get(index)
            if block is None:
                block = blocks[index] = np.zeros(BLOCK, np.float32)
            block[start : start + take] = samples[offset : offset + take]
            offset += take

    def mix(self) -> np.ndarray:
        """The next block: the sources summed, then limited under full scale."""
        index = self.next_block
        out = np.zeros(BLOCK, np.float32)
        for blocks in self._blocks.values():
            block = blocks.pop(index, None)
            if block is not None:
                out += block
        self.next_block = index + 1
        return self.limiter.process(out)

    def forget(self, source: Hashable) -> None:
        """A source left; what it already placed is still mixed."""
        self._ends.pop(source, None)
