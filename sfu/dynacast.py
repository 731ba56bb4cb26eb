"""Dynacast: which encodings of a simulcast track the publisher should stop sending, and which
it should send again.  Pure: the clock is passed in, the room applies the decision and tells
the publisher.

An encoding no subscriber (and no tap, such as the recorder) takes for ``PAUSE_AFTER`` seconds is
paused, so the publisher spends neither CPU nor uplink on it; it is resumed as soon as one is
wanted again.  Nothing is paused on a track that nobody receives at all: a first subscriber
then finds every encoding running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PAUSE_AFTER = 3.0  # seconds an encoding is unwanted before the publisher is told to stop it


@dataclass(frozen=True, slots=True)
class LayerView:
    """What the decision reads of one encoding."""

    active: bool  # what the publisher was last told
    inactive_since: float | None  # since when nobody wants it (None: wanted)
    wanted: bool  # a subscriber or a tap forwards it now, or is switching to it


@dataclass(frozen=True, slots=True)
class DynacastDecision:
    resume: tuple[int, ...]  # encodings (by index) to send again
    pause: tuple[int, ...]  # encodings to stop
    inactive_since: tuple[float | None, ...]  # each encoding's new "unwanted since"

    @property
    def changed(self) -> bool:
        return bool(self.resume or self.pause)


def decide(layers: Sequence[LayerView], consumers: bool, now: float) -> DynacastDecision:
    """The step for one track; ``consumers``: anyone at all receives it."""
    resume, pause, since = [], [], []
    for index, layer in enumerate(layers):
        if layer.wanted:
            since.append(None)
            if not layer.active:
                resume.append(index)
        elif not layer.active:
            since.append(layer.inactive_since)
        elif layer.inactive_since is None:
            since.append(now)
        else:
            since.append(layer.inactive_since)
            if now - layer.inactive_since >= PAUSE_AFTER and consumers:
                pause.append(index)
    return DynacastDecision(tuple(resume), tuple(pause), tuple(since))
