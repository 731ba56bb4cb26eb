"""The forwarding decision, packet by packet, with no sockets: layer switches on keyframes only,
temporal-layer drops, contiguous numbers across both, wrap-around, VP8 picture-ID and TL0PICIDX
continuity, a switch to a paused layer, and mute then unmute."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import pytest

from sfu.forwarder import Drop, Forward, Forwarder, Selection
from sfu.layer import Layer
from sfu.packet_cache import CachedPacket
from sfu.vp8 import parse_vp8
from tests.unit.lanes import LaneForwarder

FRAME_TICKS = 3000  # 30 fps at 90 kHz


@pytest.fixture(params=["python", "lane"], autouse=True)
def forwarding_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on the Python forwarder and on one whose steady packets go through
    a native lane (sfu/_fastsend.c) and a real socket, as the SFU's down-tracks' do."""
    if request.param == "lane":
        from sfu import fastsend

        assert fastsend._fastsend is not None, "sfu/_fastsend.c did not build (pip install needs gcc and the Python headers)"
        monkeypatch.setattr(sys.modules[__name__], "Forwarder", LaneForwarder)
    return request.param


def vp8_payload(picture: int, tl0: int, tid: int, sync: bool = False, keyframe: bool = False) -> bytes:
    """A VP8 payload descriptor (15-bit picture ID, TL0PICIDX, TID) and a payload header."""
    descriptor = bytes([
        0x90,  # X, S, partition 0
        0xE0,  # I, L, T
        0x80 | (picture >> 8) & 0x7F, picture & 0xFF,
        tl0 & 0xFF,
        (tid << 6) | (0x20 if sync else 0),
    ])
    header = b"\x00\x00\x00\x9d\x01\x2a\x40\x01\xb4\x00" if keyframe else b"\x01\x00\x00"
    return descriptor + header + b"\x00" * 20


@dataclass
class Frame:
    """One single-packet frame of a layer, as the up-track caches it."""

    layer: Layer
    sequence: int
    frame: int  # frame number: timestamp, picture ID and (for TL0 frames) TL0PICIDX follow it
    tid: int = 0
    keyframe: bool = False
    sync: bool = False

    def packet(self, vp8: bool = True) -> CachedPacket:
        picture = self.frame + 1000
        tl0 = self.frame // 4 + 7
        payload = vp8_payload(picture & 0x7FFF, tl0, self.tid, self.sync, self.keyframe) if vp8 else b"\x00" * 40
        return CachedPacket(
            self.sequence, self.frame * FRAME_TICKS + 12345, 1, payload, self.keyframe, 0.0, None, self.layer.position,
            self.tid if vp8 else None, parse_vp8(payload) if vp8 else None, picture if vp8 else None, tl0 if vp8 else None,
        )


def layers() -> tuple[Layer, Layer, Layer]:
    return Layer(0, "q", "video"), Layer(1, "h", "video"), Layer(2, "f", "video")


def run(forwarder: Forwarder, frames: list[Frame], start: float = 0.0) -> list[Forward | Drop]:
    """Feed frames 1/30 s apart; report each verdict, telling the forwarder what was sent."""
    verdicts = []
    for index, frame in enumerate(frames):
        now = start + index / 30
        packet = frame.packet()
        verdict = forwarder.decide(packet, frame.layer, now)
        if isinstance(verdict, Forward):
            forwarder.sent(packet, now)
        verdicts.append(verdict)
    return verdicts


def sent(verdicts: list[Forward | Drop]) -> list[Forward]:
    return [v for v in verdicts if isinstance(v, Forward)]


def contiguous(numbers: list[int], bits: int) -> bool:
    return all((b - a) % (1 << bits) == 1 for a, b in zip(numbers, numbers[1:], strict=False))


def descriptors(verdicts: list[Forward | Drop]) -> list[tuple[int, int]]:
    """(picture ID, TL0PICIDX) of every packet sent, read back from the rewritten payloads."""
    found = []
    for verdict in sent(verdicts):
        parsed = parse_vp8(verdict.payload)
        assert parsed is not None
        found.append((parsed.picture_id, parsed.tl0picidx))
    return found


# Layer switches -------------------------------------------------------------------------------

SWITCHES = [
    # (what arrives: (layer index, keyframe)), expected verdicts
    ("starts on a keyframe only", [(2, False), (2, True), (2, False)], [Drop.AWAIT_KEYFRAME, Forward, Forward]),
    ("other layers are not wanted", [(0, True), (1, True), (2, True), (0, True)], [Drop.NOT_WANTED, Drop.NOT_WANTED, Forward, Drop.NOT_WANTED]),
]


@pytest.mark.parametrize("arrivals, expected", [(a, e) for _, a, e in SWITCHES], ids=[name for name, _, _ in SWITCHES])
def test_a_layer_is_forwarded_from_a_keyframe_of_it_on(arrivals: list[tuple[int, bool]], expected: list) -> None:
    all_layers = layers()
    forwarder = Forwarder(all_layers[2], random.Random(1))
    frames = [Frame(all_layers[index], 100 + n, n, keyframe=key) for n, (index, key) in enumerate(arrivals)]
    verdicts = run(forwarder, frames)
    assert [v if isinstance(v, Drop) else Forward for v in verdicts] == expected


@pytest.mark.parametrize("source, target", [(2, 0), (0, 2), (1, 2)], ids=["down", "up", "up one"])
def test_a_switch_waits_for_a_keyframe_of_the_target_and_keeps_numbers_contiguous(source: int, target: int) -> None:
    all_layers = layers()
    forwarder = Forwarder(all_layers[source], random.Random(2))
    old, new = all_layers[source], all_layers[target]
    verdicts = run(forwarder, [Frame(old, 500 + n, n, keyframe=n == 0) for n in range(5)])
    forwarder.set_target(new)
    # Both layers arrive; the target's first keyframe is its third frame.
    both = []
    for n in range(5, 10):
        both += [Frame(old, 500 + n, n), Frame(new, 9000 + n, n, keyframe=n == 7)]
    verdicts += run(forwarder, both, start=5 / 30)
    kinds = [(frame.layer.position, isinstance(v, Forward)) for frame, v in zip([Frame(old, 0, 0)] * 5 + both, verdicts, strict=True)]
    assert kinds[5:] == [
        (source, True), (target, False),  # frame 5: still the old layer; the target waits
        (source, True), (target, False),  # frame 6
        (source, True), (target, True),  # frame 7: the keyframe switches
        (source, False), (target, True),
        (source, False), (target, True),
    ]
    assert forwarder.current is new and forwarder.switches == 1
    assert verdicts[6] is Drop.AWAIT_KEYFRAME  # the target's first frame, no keyframe
    sequences = [v.sequence for v in sent(verdicts)]
    assert contiguous(sequences, 16), sequences


def test_a_switch_cut_short_mid_frame_leaves_one_number_out() -> None:
    """The old layer's last frame did not end (no marker): the receiver must see it as lost."""
    low, _, top = layers()
    forwarder = Forwarder(low, random.Random(3))
    first = Frame(low, 10, 0, keyframe=True).packet()
    forwarder.sent(first, 0.0) if isinstance(forwarder.decide(first, low, 0.0), Forward) else None
    middle = Frame(low, 11, 1).packet()
    middle.marker = 0
    assert isinstance(verdict := forwarder.decide(middle, low, 0.03), Forward)
    forwarder.sent(middle, 0.03)
    forwarder.set_target(top)
    switched = forwarder.decide(Frame(top, 50, 2, keyframe=True).packet(), top, 0.06)
    assert isinstance(switched, Forward)
    assert (switched.sequence - verdict.sequence) % 65536 == 2


def test_the_timestamp_advances_by_wall_clock_across_a_switch() -> None:
    low, _, top = layers()
    forwarder = Forwarder(low, random.Random(4))
    before = sent(run(forwarder, [Frame(low, 1, 0, keyframe=True)]))[-1]
    forwarder.set_target(top)
    packet = Frame(top, 77, 999_999, keyframe=True).packet()  # a far-off timestamp of its own
    after = forwarder.decide(packet, top, 0.5)
    assert isinstance(after, Forward)
    assert (after.timestamp - before.timestamp) % (1 << 32) == 45000  # 0.5 s at 90 kHz


# Temporal layers ------------------------------------------------------------------------------

TEMPORAL = [
    # (cap, TIDs of consecutive frames), which are forwarded
    (None, [0, 2, 1, 2, 0], [True, True, True, True, True]),
    (1, [0, 2, 1, 2, 0], [True, False, True, False, True]),
    (0, [0, 2, 1, 2, 0], [True, False, False, False, True]),
]


@pytest.mark.parametrize("cap, tids, forwarded", TEMPORAL, ids=["all", "up to 1", "base only"])
def test_frames_above_the_temporal_cap_are_dropped_and_their_gaps_closed(cap: int | None, tids: list[int], forwarded: list[bool]) -> None:
    low = layers()[0]
    forwarder = Forwarder(low, random.Random(5))
    forwarder.set_target(low, cap)
    frames = [Frame(low, 200 + n, n, tid=tid, keyframe=n == 0) for n, tid in enumerate(tids)]
    verdicts = run(forwarder, frames)
    assert [isinstance(v, Forward) for v in verdicts] == forwarded
    assert all(v is Drop.TEMPORAL for v in verdicts if not isinstance(v, Forward))
    assert contiguous([v.sequence for v in sent(verdicts)], 16)
    pictures = [picture for picture, _ in descriptors(verdicts)]
    assert contiguous(pictures, 15), pictures


def test_a_raised_temporal_cap_waits_for_a_frame_that_can_start_the_layer() -> None:
    low = layers()[0]
    forwarder = Forwarder(low, random.Random(6))
    forwarder.set_target(low, 0)
    run(forwarder, [Frame(low, 1, 0, keyframe=True)])
    forwarder.set_target(low, 2)
    verdicts = run(forwarder, [Frame(low, 2, 1, tid=2), Frame(low, 3, 2, tid=1), Frame(low, 4, 3, tid=2, sync=True), Frame(low, 5, 4, tid=2)])
    assert [isinstance(v, Forward) for v in verdicts] == [False, False, True, True]
    assert forwarder.temporal == 2


def test_a_lowered_temporal_cap_takes_effect_at_the_next_frame() -> None:
    low = layers()[0]
    forwarder = Forwarder(low, random.Random(7))
    run(forwarder, [Frame(low, 1, 0, keyframe=True)])
    forwarder.set_target(low, 0)
    assert not isinstance(run(forwarder, [Frame(low, 2, 1, tid=1)])[0], Forward)


# Wrap-around ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_sequence_numbers_and_timestamps_wrap_at_16_and_32_bits(seed: int) -> None:
    """Unwrapped inputs past 2**16 and timestamps past 2**32 come out cut to 16 and 32 bits,
    still contiguous, whatever random start the subscriber got."""
    low = layers()[0]
    forwarder = Forwarder(low, random.Random(seed))
    frames = [Frame(low, 65530 + n, 1_431_655 + n, keyframe=n == 0) for n in range(12)]  # 1_431_655 frames: ~2**32 ticks
    verdicts = sent(run(forwarder, frames))
    assert len(verdicts) == 12
    assert contiguous([v.sequence for v in verdicts], 16)
    assert all(0 <= v.sequence < 1 << 16 and 0 <= v.timestamp < 1 << 32 for v in verdicts)
    assert all((b.timestamp - a.timestamp) % (1 << 32) == FRAME_TICKS for a, b in zip(verdicts, verdicts[1:], strict=False))


def test_output_numbers_wrap_from_a_start_near_the_top() -> None:
    low = layers()[0]
    rng = random.Random(0)
    forwarder = Forwarder(low, rng)
    forwarder.munger._next_seq = 65533  # noqa: SLF001 - a start near the top, as a random one can be
    verdicts = sent(run(forwarder, [Frame(low, 10 + n, n, keyframe=n == 0) for n in range(6)]))
    assert [v.sequence for v in verdicts] == [65533, 65534, 65535, 0, 1, 2]


# VP8 picture IDs and TL0PICIDX ------------------------------------------------------------------


def test_picture_ids_and_tl0picidx_continue_across_switches_and_drops() -> None:
    low, mid, top = layers()
    forwarder = Forwarder(low, random.Random(8))
    forwarder.set_target(low, 1)
    frames = [Frame(low, 10 + n, n, tid=(0, 2, 1, 2)[n % 4], keyframe=n == 0) for n in range(8)]
    verdicts = run(forwarder, frames)
    forwarder.set_target(top)
    # The top layer's own numbers are far from the low layer's.
    verdicts += run(forwarder, [Frame(top, 900 + n, 5000 + n, tid=(0, 2, 1, 2)[n % 4], keyframe=n == 0) for n in range(8)], start=1.0)
    forwarder.set_target(mid)
    verdicts += run(forwarder, [Frame(mid, 40 + n, 20_000 + n, keyframe=n == 0) for n in range(4)], start=2.0)
    pictures = [picture for picture, _ in descriptors(verdicts)]
    assert contiguous(pictures, 15), pictures
    tl0s = [tl0 for (_, tl0), verdict in zip(descriptors(verdicts), sent(verdicts), strict=True)]
    steps = {(b - a) % 256 for a, b in zip(tl0s, tl0s[1:], strict=False)}
    assert steps <= {0, 1}, tl0s  # TL0PICIDX never jumps
    assert forwarder.switches == 2


# Paused layers, mute and unmute ---------------------------------------------------------------


def test_a_switch_to_a_paused_layer_keeps_forwarding_the_current_one() -> None:
    """The target is paused at the publisher (dynacast) and sends nothing: the current layer
    goes on until the target's first keyframe arrives."""
    low, _, top = layers()
    forwarder = Forwarder(low, random.Random(9))
    run(forwarder, [Frame(low, 1, 0, keyframe=True)])
    forwarder.set_target(top)
    verdicts = run(forwarder, [Frame(low, 2 + n, 1 + n) for n in range(10)])
    assert all(isinstance(v, Forward) for v in verdicts)
    assert forwarder.current is low and forwarder.target is top and forwarder.switches == 0
    resumed = forwarder.decide(Frame(top, 70, 11, keyframe=True).packet(), top, 1.0)
    assert isinstance(resumed, Forward) and forwarder.current is top


def test_mute_then_unmute_continues_the_numbers_after_a_keyframe() -> None:
    low = layers()[0]
    forwarder = Forwarder(low, random.Random(10))
    before = sent(run(forwarder, [Frame(low, 1 + n, n, keyframe=n == 0) for n in range(3)]))
    forwarder.set_target(None, reason="muted")
    assert forwarder.paused and forwarder.current is None
    assert run(forwarder, [Frame(low, 4, 3, keyframe=True)], start=0.1) == [Drop.NOT_WANTED]
    forwarder.set_target(low)
    after = run(forwarder, [Frame(low, 50, 47), Frame(low, 51, 48, keyframe=True), Frame(low, 52, 49)], start=2.0)
    assert after[0] is Drop.AWAIT_KEYFRAME
    resumed = sent(after)
    assert resumed[0].sequence == (before[-1].sequence + 1) % 65536
    assert (resumed[0].timestamp - before[-1].timestamp) % (1 << 32) == int((2.0 + 1 / 30 - 2 / 30) * 90000)
    assert contiguous([v.sequence for v in before + resumed], 16)


# NACKs ----------------------------------------------------------------------------------------


def test_a_nacked_number_maps_back_to_the_current_layer_only() -> None:
    low, _, top = layers()
    forwarder = Forwarder(low, random.Random(11))
    low_sent = sent(run(forwarder, [Frame(low, 300 + n, n, keyframe=n == 0) for n in range(3)]))
    assert forwarder.resend(low_sent[1].sequence) == 301
    forwarder.set_target(top)
    top_sent = sent(run(forwarder, [Frame(top, 800, 3, keyframe=True)], start=0.1))
    assert forwarder.resend(top_sent[0].sequence) == 800
    assert forwarder.resend(low_sent[1].sequence) is None  # that layer is no longer forwarded


def test_the_layer_rule_alone_tells_a_tap_when_it_switched() -> None:
    low, _, top = layers()
    forwarder = Forwarder(top)
    assert forwarder.select(Frame(top, 1, 0).packet(), top, 0.0) is Drop.AWAIT_KEYFRAME
    assert forwarder.select(Frame(top, 2, 1, keyframe=True).packet(), top, 0.03) is Selection.SWITCHED
    assert forwarder.select(Frame(top, 3, 2).packet(), top, 0.06) is Selection.CURRENT
    assert forwarder.select(Frame(low, 4, 2, keyframe=True).packet(), low, 0.06) is Drop.NOT_WANTED
