"""Mixing every participant's audio into one track.

Decoded audio is written at its place on the output timeline (in samples since the recording
began) into blocks of ``BLOCK`` samples per source; a block is mixed once it is due, summing the
sources that have samples there.  Anything missing is silence: gaps, muted participants, and
packets that arrive after their block was mixed (late, dropped).  A source whose placement moves
by less than ``SNAP`` samples from where its previous chunk ended is kept contiguous, so that
clock corrections never click.

Pure logic: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

BLOCK = 1024  # samples per mixed block (one AAC frame)
SNAP = 960  # 20 ms at 48 kHz
FUTURE_LIMIT = 10 * 48000  # samples ahead of the mix a chunk may land before it is refused


class AudioMixer:
    def __init__(self) -> None:
        self.next_block = 0  # the first block not mixed yet
        self._blocks: dict[Hashable, dict[int, np.ndarray]] = {}
        self._ends: dict[Hashable, int] = {}
        self.late_samples = 0
        self.refused_samples = 0

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
        """The next block, mixed and clipped to [-1, 1]."""
        index = self.next_block
        out = np.zeros(BLOCK, np.float32)
        for blocks in self._blocks.values():
            block = blocks.pop(index, None)
            if block is not None:
                out += block
        self.next_block = index + 1
        np.clip(out, -1.0, 1.0, out=out)
        return out

    def forget(self, source: Hashable) -> None:
        """A source left; what it already placed is still mixed."""
        self._ends.pop(source, None)
