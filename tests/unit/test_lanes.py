"""Native lanes (sfu/_fastsend.c ``Lane`` and ``fan_out``; sfu/forwarding.py ``lend`` and
``reclaim``) with real SRTP sessions and loopback sockets: a lane writes what Python would,
maps numbers as the munger does, refuses every packet that is not the plain case (Python then
forwards it), and gives its state back so that Python continues without a seam.  The whole of
tests/unit/test_forwarder.py also runs through lanes (tests/unit/lanes.py)."""

from __future__ import annotations

import random
import types
from collections.abc import Iterator

import pytest

from sfu import fastsend
from sfu.forwarder import Forward, Forwarder
from sfu.forwarding import DownTrack, _slots
from sfu.layer import Layer
from sfu.packet_cache import CachedPacket
from sfu.rtp import abs_send_time, audio_level, build_packet, extension_block
from tests.unit.lanes import LaneForwarder, Route, fan_out, fan_out_timed

NATIVE = fastsend._fastsend


@pytest.fixture(autouse=True)
def built() -> None:
    assert NATIVE is not None, "sfu/_fastsend.c did not build (pip install needs gcc and the Python headers)"


@pytest.fixture
def route() -> Iterator[Route]:
    made = Route()
    yield made
    made.close()


def packet(sequence: int, timestamp: int, *, marker: int = 1, tid: int | None = None, level: tuple[bool, int] | None = None) -> CachedPacket:
    return CachedPacket(sequence, timestamp, marker, b"\x10payload-%d" % sequence, True, 0.0, level, 0, tid, None, None, None)


def armed(route: Route, *, start: int = 100, offset: int = 5000, ts_offset: int = 77, last: int | None = None, max_tid: int = 255) -> object:
    lane = NATIVE.Lane()
    route.arm(lane)
    lane.payload_type, lane.ssrc = 111, 0xCAFEBABE
    for levelled in (0, 1):
        lane.template(levelled, 0x80, b"", -1, -1)
    lane.start_seq, lane.seg_first, lane.seg_offset, lane.ts_offset = start, start, offset, ts_offset
    lane.has_last_out, lane.last_out_seq = last is not None, last or 0
    lane.highest_in, lane.max_tid, lane.armed = start - 1, max_tid, 1
    return lane


@pytest.mark.parametrize("mid, abs_id, level_id", [(None, None, None), ((1, b"0"), 3, None), ((1, b"12"), 3, 5), (None, None, 5), ((4, b"x"), None, 2)])
def test_a_copy_is_the_packet_pythons_header_template_builds(route: Route, mid: tuple | None, abs_id: int | None, level_id: int | None) -> None:
    track = types.SimpleNamespace(_mid_element=mid, _abs_id=abs_id, _level_id=level_id, payload_type=111, _ssrc=0xCAFEBABE)
    track._plain = DownTrack._template(track, with_level=False)
    track._levelled = DownTrack._template(track, with_level=True)
    lane = armed(route)
    for levelled, (first, pieces, has_abs, has_level) in enumerate((track._plain, track._levelled)):
        lane.template(levelled, first, *_slots(pieces, has_abs, has_level))
    ntp = 0x1234_5678_9ABC_DEF0
    for sequence, level in ((100, None), (101, (True, 42)), (102, (False, 127))):
        sent = packet(sequence, 9000 + sequence, marker=sequence % 2, level=level)
        assert fan_out(lane, sent, abs_time=abs_send_time(ntp), level=audio_level(*level)[0] if level else -1) == (1, None, None)
        expected = DownTrack._header(track, sent.marker, sequence + 5000, 9000 + sequence + 77, level, abs_send_time(ntp), sent.payload)
        assert route.receive() == expected
    elements = [e for e in (mid, (abs_id, abs_send_time(ntp)) if abs_id else None) if e]
    assert expected == build_packet(0, 111, 102 + 5000, 9102 + 77, 0xCAFEBABE,
                                    extension_block(elements + ([(level_id, audio_level(False, 127))] if level_id else [])), sent.payload)


def test_numbers_follow_the_newest_segment_and_the_lane_counts_what_it_sent(route: Route) -> None:
    lane = armed(route, offset=-90, ts_offset=2**32 - 10)  # numbers wrap on the way out
    for sequence in (100, 101, 104, 103):  # a gap upstream stays a gap; a late packet still goes
        assert fan_out(lane, packet(sequence, 20 * sequence), now=5.0, ntp=77)[0] == 1
    headers = [route.receive()[:12] for _ in range(4)]
    assert [int.from_bytes(h[2:4], "big") for h in headers] == [10, 11, 14, 13]
    assert [int.from_bytes(h[4:8], "big") for h in headers] == [(20 * s + 2**32 - 10) & 0xFFFFFFFF for s in (100, 101, 104, 103)]
    assert (lane.last_out_seq, lane.highest_in, lane.last_sent_at, lane.last_ntp) == (14, 104, 5.0, 77)
    assert lane.pending_packets == 4  # what a down-track's packet count adds before the tick reads it
    packets, octets, plain, protected = lane.take()
    assert lane.pending_packets == 0
    assert packets == 4 and octets == sum(len(packet(s, 0).payload) for s in (100, 101, 104, 103))
    assert plain == octets + 4 * 12 and protected == plain + 4 * 10  # AES-CM-80's tag
    assert lane.take() == (0, 0, 0, 0)


@pytest.mark.parametrize("why, change, arrives", [
    ("before the start point", lambda r, lane: None, packet(99, 0)),
    ("before the newest segment", lambda r, lane: setattr(lane, "seg_first", 150), packet(120, 0)),
    ("too late for SRTP's window", lambda r, lane: (setattr(lane, "has_last_out", 1), setattr(lane, "last_out_seq", 9000)), packet(100, 0)),
    ("a jump: a new numbering", lambda r, lane: (setattr(lane, "has_last_out", 1), setattr(lane, "last_out_seq", 5100)), packet(8200, 0)),
    ("above the temporal cap", lambda r, lane: setattr(lane, "max_tid", 1), packet(100, 0, tid=2)),
    ("the DTLS transport left connected", lambda r, lane: setattr(r.dtls, "_state", object()), packet(100, 0)),
    ("another nominated pair", lambda r, lane: r.connection._nominated.update({1: object()}), packet(100, 0)),
    ("the socket's transport closing", lambda r, lane: setattr(r.transport, "closing", True), packet(100, 0)),
    ("bytes queued on the transport", lambda r, lane: setattr(r.transport, "queued", 1200), packet(100, 0)),
])
def test_anything_but_the_plain_case_is_refused_and_left_to_python(route: Route, why: str, change, arrives: CachedPacket) -> None:
    lane = armed(route)
    change(route, lane)
    sent, refused, unsent = fan_out(lane, arrives)
    assert (sent, refused, unsent) == (0, [lane], None), why
    assert lane.armed == 0 and lane.take() == (0, 0, 0, 0)
    assert fan_out(lane, packet(101, 0)) == (0, None, None)  # a disarmed lane sends nothing


def test_each_sendmmsg_run_reports_its_copies_and_when_it_left(route: Route) -> None:
    """The copy-delay histogram observes every run of copies with its own time (not the last
    lane's): the helper reports each run's copies and seconds since the call began."""
    lane = armed(route)
    sent, refused, unsent, flushes = fan_out_timed(lane, packet(100, 0))
    assert (sent, refused, unsent) == (1, None, None)
    ((copies, elapsed),) = flushes
    assert copies == 1 and 0 <= elapsed < 1.0
    lane.armed = 0
    assert fan_out_timed(lane, packet(101, 0)) == (0, None, None, None)  # nothing left: no run


def test_a_shared_sockets_connection_view_that_closed_is_refused(route: Route) -> None:
    route.muxed = types.SimpleNamespace(_closing=False)
    lane = armed(route)
    assert fan_out(lane, packet(100, 0))[0] == 1
    route.muxed._closing = True
    assert fan_out(lane, packet(101, 0))[1] == [lane]


def test_python_continues_where_the_lane_stopped_without_a_seam() -> None:
    """The same packets through a forwarder that lends its state to a lane and takes it back at
    a NACK, a cap change and a switch, and through one that never does: the same output."""
    low, high = Layer(0, "q", "video"), Layer(1, "h", "video")

    def feed(forwarder: Forwarder) -> list[tuple[int, int]]:
        out, rng = [], random.Random(5)
        forwarder.set_target(low)
        sequence = {low: 1000, high: 50_000}
        for step in range(400):
            layer = high if step >= 300 else low
            if step == 290:
                forwarder.set_target(high)
            if step == 150:
                forwarder.set_target(low, 0)  # a cap: lanes refuse TID 1
            sequence[layer] += 1 + (rng.random() < 0.05)  # upstream losses
            cached = CachedPacket(sequence[layer], 3000 * step, 1, b"x", step in (0, 300), step / 30, None, layer.position,
                                  step % 2, None, None, None)
            verdict = forwarder.decide(cached, layer, step / 30)
            if isinstance(verdict, Forward):
                forwarder.sent(cached, step / 30)
                out.append((verdict.sequence, verdict.timestamp))
            if step in (100, 200):
                assert forwarder.resend(out[-3][0]) is not None  # a NACK reads the state
        return out

    python, lane = Forwarder(low, random.Random(3)), LaneForwarder(low, random.Random(3))
    assert feed(lane) == feed(python)
    assert lane.lane_packets > 200  # most packets went through the lane


def test_a_lane_and_its_down_track_are_collected_together(route: Route) -> None:
    """A lane refers to its down-track (and the down-track to it), and to the subscriber's DTLS
    transport, connection and session: the cycle collector frees them all once the down-track
    is gone (a lane outside the collector's view kept every subscriber who ever left)."""
    import gc
    import weakref

    class Owner:
        pass

    owner = Owner()
    owner.lane = armed(route)
    owner.lane.owner = owner
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None
