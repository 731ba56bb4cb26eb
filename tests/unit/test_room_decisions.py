"""The room's decisions as values: which encodings dynacast pauses and resumes, how a track
ranks when a subscriber's downlink is short, and what a batch of track settings changes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from sfu.dynacast import PAUSE_AFTER, LayerView, decide
from sfu.metrics import SfuMetrics
from sfu.room import Participant, SfuNode, TrackWish
from sfu.selector import (
    PRIORITY_DOMINANT,
    PRIORITY_PINNED,
    PRIORITY_SCREEN,
    PRIORITY_SPEAKER,
    priority,
    wanted_with_cause,
)

NOW = 100.0

DYNACAST = [
    # (active, unwanted since, wanted), anyone receives: resume, pause, new "since"
    ("a wanted layer stays on", [(True, None, True)], True, (), (), (None,)),
    ("an unwanted layer is noted", [(True, None, False)], True, (), (), (NOW,)),
    ("not yet long enough", [(True, NOW - PAUSE_AFTER + 0.1, False)], True, (), (), (NOW - PAUSE_AFTER + 0.1,)),
    ("paused after the wait", [(True, NOW - PAUSE_AFTER, False)], True, (), (0,), (NOW - PAUSE_AFTER,)),
    ("never while nobody receives", [(True, NOW - 60, False)], False, (), (), (NOW - 60,)),
    ("a paused layer wanted again resumes", [(False, NOW - 60, True)], True, (0,), (), (None,)),
    ("a paused layer stays paused", [(False, NOW - 60, False)], True, (), (), (NOW - 60,)),
    ("each layer on its own",
     [(True, None, True), (True, NOW - 5, False), (False, NOW - 9, True)], True, (2,), (1,), (None, NOW - 5, None)),
]


@pytest.mark.parametrize(
    "layers, consumers, resume, pause, since", [row[1:] for row in DYNACAST], ids=[row[0] for row in DYNACAST]
)
def test_dynacast_pauses_what_nobody_takes_and_resumes_what_is_wanted(layers, consumers, resume, pause, since) -> None:
    decision = decide([LayerView(*layer) for layer in layers], consumers, NOW)
    assert (decision.resume, decision.pause, decision.inactive_since) == (resume, pause, since)
    assert decision.changed == bool(resume or pause)


PRIORITIES = [
    # owner, source, pins, dominant, speakers: rank
    ("ann", "camera", ["ann"], "bob", ["bob"], PRIORITY_PINNED),
    ("ann", "screen", [], "ann", ["ann"], PRIORITY_SCREEN),
    ("ann", "camera", [], "ann", ["ann"], PRIORITY_DOMINANT),
    ("ann", "camera", [], "bob", ["bob", "ann"], PRIORITY_SPEAKER),
    ("ann", "camera", ["cy"], "bob", ["bob"], 0),
]


@pytest.mark.parametrize("owner, source, pins, dominant, speakers, rank", PRIORITIES)
def test_pins_outrank_screens_which_outrank_speakers(owner, source, pins, dominant, speakers, rank) -> None:
    assert priority(owner, source, pins, dominant, speakers) == rank


@pytest.mark.parametrize("muted, visible, expected", [
    (False, True, (2, "requested")), (True, True, (None, "muted")), (False, False, (None, "last_n")), (True, False, (None, "muted")),
])
def test_a_muted_or_unseen_track_is_not_wanted(muted: bool, visible: bool, expected: tuple) -> None:
    assert wanted_with_cause(2, muted, visible) == expected


async def test_a_batch_of_track_settings_applies_in_order_leaves_out_unknown_tracks_and_reallocates_once() -> None:
    room = SfuNode(SfuMetrics(CollectorRegistry())).room("r")

    async def quiet(message: dict) -> None:
        pass

    viewer = Participant(room, "v", "Viewer", "participant", {"can_subscribe": True}, quiet)
    viewer._pending.update({"TR_a": (None, None), "TR_b": (None, None)})  # received (the answer pending)
    rounds: list[int] = []

    async def reallocate(sources: object = None) -> None:
        rounds.append(len(viewer.track_settings))

    viewer.reallocate = reallocate  # type: ignore[method-assign]
    unknown = viewer.set_track_settings([
        TrackWish("TR_a", "off"), TrackWish("TR_gone", "off"), TrackWish("TR_b", None, 320, 180), TrackWish("TR_a", "low"),
    ])
    assert unknown == ["TR_gone"]
    assert viewer.track_settings == {"TR_a": ("low", None, None), "TR_b": (None, 320, 180)}  # the last entry wins
    await room._tasks.wait()
    assert rounds == [2]  # one allocation round, after every entry
    assert viewer.set_track_settings([TrackWish("TR_gone", "off")]) == ["TR_gone"]
    await room._tasks.wait()
    assert rounds == [2]  # nothing applied: no round
