"""Layer choice, bandwidth steps and simulcast SDP, without sockets; the clock is passed in."""

from __future__ import annotations

import random

import pytest

from sfu.bandwidth import GROWTH, HOLD, REMB_FRESH, BandwidthEstimator, RateMeter, RembSum
from sfu.munger import Munger
from sfu.sdp import accept_simulcast, offer_ssrc_simulcast, simulcast_offers
from sfu.selector import UP_HOLD, UP_MARGIN, Allocator, Choice, Demand, allocate, wanted_layer

HEIGHTS = [180, 360, 720]
WIDTHS = [320, 640, 1280]
# bits/s of each spatial layer with temporal layers 0, 0-1, 0-2 (L1T3)
RATES = [[60e3, 100e3, 150e3], [200e3, 350e3, 500e3], [700e3, 1100e3, 1500e3]]


def demand(track_id: str, max_layer: int | None = 2, priority: int = 0, available: list[bool] | None = None) -> Demand:
    return Demand(track_id, max_layer, RATES, available or [True, True, True], priority)


def test_the_wanted_layer_is_the_best_fit_for_the_tile_or_quality_and_none_when_off() -> None:
    assert wanted_layer(HEIGHTS, width=1280, height=720, widths=WIDTHS) == 2
    assert wanted_layer(HEIGHTS, width=700, height=400, widths=WIDTHS) == 1  # best at or under
    assert wanted_layer(HEIGHTS, width=320, height=180, widths=WIDTHS) == 0
    assert wanted_layer(HEIGHTS, width=100, height=60, widths=WIDTHS) == 0  # smaller than all: lowest
    assert wanted_layer(HEIGHTS, height=360) == 1
    assert wanted_layer(HEIGHTS, width=640, widths=WIDTHS) == 1
    assert wanted_layer(HEIGHTS) == 2  # nothing asked: the top
    assert [wanted_layer(HEIGHTS, q) for q in ("high", "medium", "low")] == [2, 1, 0]
    assert wanted_layer(HEIGHTS, "off") is None
    assert wanted_layer(HEIGHTS, width=0, height=0) is None
    assert wanted_layer([None, None, None], height=200) == 0  # sizes unknown: a halving guess
    assert wanted_layer([None, None, None], height=720) == 2
    assert wanted_layer([], "high") is None


def test_allocate_steps_spatial_then_temporal_then_pauses_lowest_priority_first() -> None:
    demands = [demand("a", priority=0), demand("b", priority=1)]
    assert allocate(10e6, demands) == {"a": Choice(2, 2), "b": Choice(2, 2)}
    # 1.7 Mbit/s: "a" (lower priority) steps down spatially first, all the way.
    got = allocate(1.7e6, demands)
    assert got["b"] == Choice(2, 2) and got["a"] == Choice(0, 2, "bandwidth")
    # 0.7 Mbit/s: both at the lowest spatial layer... and "b" steps down before temporal drops.
    got = allocate(0.7e6, demands)
    assert got["a"].layer == 0 and got["b"].layer == 1 and got["b"].temporal == 2
    # 0.2 Mbit/s: both lowest, then temporal layers drop, "a" first.
    got = allocate(0.2e6, demands)
    assert got["a"] == Choice(0, 0, "bandwidth") and got["b"] == Choice(0, 1, "bandwidth")
    # 0.1 Mbit/s: both at (0, 0) cost 0.12, under twice the budget: video goes on.
    assert allocate(0.1e6, demands) == {"a": Choice(0, 0, "bandwidth"), "b": Choice(0, 0, "bandwidth")}
    # 0.05 Mbit/s: video of the lower priority track pauses.
    got = allocate(0.05e6, demands)
    assert got["a"] == Choice(None, None, "bandwidth") and got["b"] == Choice(0, 0, "bandwidth")
    assert allocate(0, demands) == {"a": Choice(None, None, "bandwidth"), "b": Choice(None, None, "bandwidth")}


def test_allocate_respects_wishes_and_availability() -> None:
    assert allocate(10e6, [demand("a", max_layer=1)]) == {"a": Choice(1, 2)}
    assert allocate(10e6, [demand("a", max_layer=None)]) == {"a": Choice(None, None)}
    # The publisher does not send the top layer: the best one it sends.
    assert allocate(10e6, [demand("a", available=[True, True, False])]) == {"a": Choice(1, 2)}
    # It sends only layers larger than wanted: the lowest that it sends.
    assert allocate(10e6, [demand("a", max_layer=0, available=[False, True, True])]) == {"a": Choice(1, 2)}
    assert allocate(10e6, [demand("a", available=[False, False, False])])["a"].reason == "unavailable"
    # No temporal layers (H.264): temporal is None and the whole rate counts.
    plain = Demand("h", 2, [[100e3], [400e3], [1200e3]], [True] * 3)
    assert allocate(10e6, [plain]) == {"h": Choice(2, None)}
    assert allocate(500e3, [plain]) == {"h": Choice(1, None, "bandwidth")}


def test_allocator_steps_down_at_once_and_up_with_hysteresis() -> None:
    allocator = Allocator()
    tracks = [demand("a")]
    assert allocator.update(10e6, tracks, now=0.0) == {"a": Choice(2, 2)}
    assert allocator.update(10e6, tracks, now=0.5) == {}  # unchanged: nothing to say
    assert allocator.update(0.6e6, tracks, now=1.0) == {"a": Choice(1, 2, "bandwidth")}
    # Enough for the top layer again, but within UP_HOLD of the step down: stay.
    assert allocator.update(10e6, tracks, now=1.0 + UP_HOLD - 0.1) == {}
    # Budget that only just covers the top layer (no margin): stay.
    assert allocator.update(1.5e6 * (UP_MARGIN - 0.05), tracks, now=1.0 + UP_HOLD + 1) == {}
    assert allocator.update(1.5e6 * UP_MARGIN * 1.01, tracks, now=1.0 + UP_HOLD + 1.5) == {"a": Choice(2, 2)}
    # A subscriber asking for less, then more, is served at once (no bandwidth involved).
    assert allocator.update(10e6, [demand("a", max_layer=0)], now=10.0) == {"a": Choice(0, 2)}
    assert allocator.update(10e6, [demand("a", max_layer=2)], now=10.1) == {"a": Choice(2, 2)}
    # A track that goes away is forgotten.
    allocator.update(10e6, [], now=11.0)
    assert allocator.current == {}


def test_the_rate_meter_measures_over_its_window_and_forgets_what_left_it() -> None:
    meter = RateMeter(window=1.0, buckets=10)
    for i in range(100):
        meter.add(1250, i * 0.01)  # 125 kB/s = 1 Mbit/s for one second
    assert meter.rate(0.99) == pytest.approx(1e6, rel=0.02)
    assert 0.35e6 <= meter.rate(1.5) <= 0.55e6  # about half the window has passed
    assert meter.rate(3.0) == 0


def test_bandwidth_estimate_falls_with_loss_and_remb_and_recovers_slowly() -> None:
    estimator = BandwidthEstimator(initial=3e6)
    estimator.on_loss(0.30, sending_rate=2e6, now=0.0)
    assert estimator.value == pytest.approx(2e6 * 0.85)
    estimator.on_loss(0.05, sending_rate=1.7e6, now=0.5)  # moderate loss: hold
    assert estimator.value == pytest.approx(1.7e6)
    estimator.on_remb(2.5e6, sending_rate=1.7e6, now=0.6)  # a REMB over what is sent: no news
    assert estimator.value == pytest.approx(1.7e6)
    estimator.on_remb(0.8e6, sending_rate=1.7e6, now=0.7)  # fell to under what is sent: congestion
    assert estimator.value == pytest.approx(0.8e6)
    # Clean reports: no growth during HOLD, then GROWTH per second.
    estimator.on_loss(0.0, 0.8e6, now=0.7 + HOLD / 2)
    assert estimator.value == pytest.approx(0.8e6)
    estimator.on_loss(0.0, 0.8e6, now=0.7 + HOLD + 0.5)
    estimator.on_loss(0.0, 0.8e6, now=0.7 + HOLD + 1.5)
    assert estimator.value == pytest.approx(0.8e6 * GROWTH**1.5, rel=0.01)  # 1.5 s past the hold
    for step in range(100):
        estimator.on_loss(0.0, 0.8e6, now=10 + step)
    assert estimator.value == estimator.maximum
    estimator.on_loss(1.0, sending_rate=1e3, now=200)
    assert estimator.value == estimator.minimum


def test_a_remb_catching_up_with_a_rate_that_rose_is_not_congestion() -> None:
    estimator = BandwidthEstimator(initial=3e6)
    estimator.on_remb(0.3e6, sending_rate=1.5e6, now=0.0)  # the first REMB: no trend yet
    estimator.on_remb(0.6e6, sending_rate=1.5e6, now=1.0)  # rising after a switch up
    estimator.on_remb(0.6e6, sending_rate=1.5e6, now=2.0)  # holding
    assert estimator.value == 3e6
    estimator.on_remb(0.5e6, sending_rate=1.5e6, now=3.0)  # falling: over-use
    assert estimator.value == pytest.approx(0.5e6)
    estimator.on_remb(0.49e6, sending_rate=0.4e6, now=4.0)  # falling, but over what is sent now
    assert estimator.value == pytest.approx(0.5e6)


def test_rembs_of_separate_receivers_add_up_and_one_for_everything_counts_once() -> None:
    rembs = RembSum()
    # aiortc: one REMB per receiver.  Taken alone, one receiver's made the estimate fall.
    assert rembs.add((111,), 400_000, now=0.0) == 400_000
    assert rembs.add((222,), 300_000, now=0.2) == 700_000
    assert rembs.add((111,), 420_000, now=0.6) == 720_000  # a receiver's newer one replaces its older
    # A receiver that stops reporting stops counting.
    assert rembs.add((111,), 430_000, now=0.2 + REMB_FRESH + 0.1) == 430_000
    # Chromium: one REMB for all SSRCs, delivered to every sender it names: counted once.
    chromium = RembSum()
    for _ in range(3):
        total = chromium.add((111, 222, 333), 2_000_000, now=5.0)
    assert total == 2_000_000
    # A subscriber naming ever new SSRC sets (hostile RTCP) keeps a bounded number of them.
    hostile = RembSum()
    for ssrc in range(1000):
        hostile.add((ssrc,), 1_000, now=6.0)
    assert len(hostile._latest) == RembSum.MAX_SETS
    estimator = BandwidthEstimator(initial=3e6)
    estimator.on_remb(rembs.add((111,), 430_000, now=10.0), sending_rate=600_000, now=10.0)
    estimator.on_remb(rembs.add((222,), 300_000, now=10.2), sending_rate=600_000, now=10.2)
    assert estimator.value == 3e6  # the sum did not fall: no congestion


def test_munger_drops_close_gaps_and_unmap_knows_the_layer() -> None:
    munger = Munger(random.Random(1))
    munger.start(100, 9000, layer=2)
    outs = [munger.map(seq, 9000) for seq in (100, 101)]
    munger.drop(102)
    munger.drop(103)
    outs += [munger.map(seq, 9300) for seq in (104, 105)]
    sequences = [o[0] for o in outs if o is not None]
    assert all(((b - a) & 0xFFFF) == 1 for a, b in zip(sequences, sequences[1:], strict=False))
    assert munger.map(102, 9000) is None  # a dropped packet retransmitted stays dropped
    assert munger.unmap(sequences[2]) == (2, 104)
    assert munger.unmap(sequences[1]) == (2, 101)
    # An upstream loss keeps its slot: 106 lost, 107 dropped, 108 forwarded after a gap of one.
    munger.drop(107)
    out108 = munger.map(108, 9600)
    assert out108 is not None and (out108[0] - sequences[-1]) & 0xFFFF == 2
    assert munger.unmap((sequences[-1] + 1) & 0xFFFF) == (2, 106)  # the lost one, NACKable
    # A switch to another layer continues the output, timestamps by the gap given.
    munger.start(5000, 123456, ts_gap=3000, layer=0)
    first = munger.map(5000, 123456)
    assert first is not None and (first[0] - out108[0]) & 0xFFFF == 1
    assert (first[1] - out108[1]) & 0xFFFFFFFF == 3000
    assert munger.unmap(first[0]) == (0, 5000)
    assert munger.unmap(out108[0]) == (2, 108)  # history remembers the old layer


CHROMIUM_OFFER_VIDEO = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:0
a=rtpmap:111 opus/48000/2
m=video 9 UDP/TLS/RTP/SAVPF 96 97
a=mid:1
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=sendonly
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rid:q send
a=rid:h send
a=rid:f send
a=simulcast:send q;~h;f
"""


def test_simulcast_offers_read_rids_and_ssrc_groups() -> None:
    offers = simulcast_offers(CHROMIUM_OFFER_VIDEO)
    assert list(offers) == ["1"] and offers["1"].rids == ["q", "h", "f"] and offers["1"].layers == 3
    sim = CHROMIUM_OFFER_VIDEO.replace("a=simulcast:send q;~h;f\n", "").replace("a=rid:q send\na=rid:h send\na=rid:f send\n", "")
    sim += "a=ssrc-group:FID 11 21\na=ssrc-group:FID 12 22\na=ssrc-group:SIM 11 12\n"
    offers = simulcast_offers(sim)
    assert offers["1"].ssrcs == [11, 12] and offers["1"].rtx == {21: 11, 22: 12}
    # Malformed or one-layer descriptions are plain streams.
    assert simulcast_offers(CHROMIUM_OFFER_VIDEO.replace("q;~h;f", "q")) == {}
    assert simulcast_offers(sim.replace("SIM 11 12", "SIM 11 x")) == {}
    assert simulcast_offers("garbage\r\nm=video\r\na=simulcast:\r\n") == {}


def test_answers_accept_rid_simulcast_and_sdk_offers_announce_ssrcs() -> None:
    offers = simulcast_offers(CHROMIUM_OFFER_VIDEO)
    answer = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\nm=video 9 X 96 97\r\na=mid:1\r\na=recvonly\r\n"
    accepted = accept_simulcast(answer, offers).splitlines()
    video = accepted[accepted.index("a=mid:1"):]
    assert video[-4:] == ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f"]
    assert "a=rid:q recv" not in accepted[: accepted.index("a=mid:1")]
    offer = "v=0\r\nm=video 9 X 96 97\r\na=mid:0\r\na=ssrc-group:FID 3 4\r\na=ssrc:3 cname:c\r\na=ssrc:4 cname:c\r\n"
    announced = offer_ssrc_simulcast(offer, "0", [(1, 2), (3, 4)], "c")
    parsed = simulcast_offers(announced)["0"]
    assert parsed.ssrcs == [1, 3] and parsed.rtx == {2: 1, 4: 3}
    assert announced.count("a=ssrc:3 ") == 1  # existing lines are not repeated


def test_a_paused_subscriber_without_reports_recovers() -> None:
    estimator = BandwidthEstimator(initial=1e6)
    estimator.on_loss(0.9, sending_rate=1e6, now=0.0)
    low = estimator.value
    for step in range(1, 12):
        estimator.on_idle(now=float(step))  # video paused: no reports come
    assert estimator.value > low * 2


def test_uplink_estimate_holds_across_a_dynacast_pause_until_it_catches_up_or_falls() -> None:
    from prometheus_client import CollectorRegistry

    from sfu.forwarding import UpTrack
    from sfu.interceptors import UPLINK_HOLD
    from sfu.layer import RESUME_WAIT
    from sfu.metrics import SfuMetrics
    from sfu.sdp import SimulcastOffer

    now = [0.0]
    up = UpTrack("t", "alice", "video", "camera", SfuMetrics(CollectorRegistry()), clock=lambda: now[0],
                 simulcast=SimulcastOffer("0", rids=["q", "h", "f"]))
    assert up.remb_hold.outgoing_remb(2.5e6) == 2.5e6  # no pause: the receiver's estimate as it is
    top = up.layers[2]
    up.pause_layers([top])
    assert not top.active and top.available(now[0])  # paused layers can be had on demand
    for step, estimate in enumerate((1.2e6, 0.9e6, 0.7e6)):  # less arrives, the estimate sinks
        now[0] = 1.0 + step
        assert up.remb_hold.outgoing_remb(estimate) == 2.5e6
    now[0] = 10.0
    up.resume_layers([top], now[0])
    assert top.active and top.available(now[0]) and not top.sending(now[0])
    assert not top.available(now[0] + RESUME_WAIT + 0.1)  # resumed but never came: not available
    now[0] = 11.0
    assert up.remb_hold.outgoing_remb(0.75e6) == 2.5e6  # rising after the resume: still held
    now[0] = 12.0
    assert up.remb_hold.outgoing_remb(0.6e6) == 0.6e6  # falling once resumed: congestion, the hold ends
    # A hold also ends once the receiver's estimate reaches it, or UPLINK_HOLD after the resume.
    up.pause_layers([top])
    assert up.remb_hold.outgoing_remb(0.5e6) == 0.6e6
    up.resume_layers([top], now[0])
    assert up.remb_hold.outgoing_remb(0.7e6) == 0.7e6
    up.pause_layers([top])
    up.resume_layers([top], now[0])
    assert up.remb_hold.outgoing_remb(0.69e6) == 0.7e6  # under the hold, not falling: held
    now[0] += UPLINK_HOLD + 1
    assert up.remb_hold.outgoing_remb(0.69e6) == 0.69e6


def test_a_layer_is_seen_stopped_after_about_six_missing_frames() -> None:
    from sfu.layer import LAYER_TIMEOUT, LAYER_TIMEOUT_MIN, Layer

    fast = Layer(0, "f", "video")
    for frame in range(40):  # 20 fps, two packets a frame
        for _ in range(2):
            fast.arrived(frame * 4500, frame * 0.05)
    last = 39 * 0.05
    assert fast.sending(last + 0.45) and not fast.sending(last + LAYER_TIMEOUT_MIN + 0.01)
    fast.arrived(2 * 4500, last + 0.1, repaired=True)  # a retransmission keeps it alive, no more
    assert fast.frame_interval == pytest.approx(0.05, rel=0.1) and fast.sending(last + 0.55)
    slow = Layer(0, None, "video")  # a screen share at 1 fps: never under the longest timeout
    for frame in range(10):
        slow.arrived(frame * 90000, float(frame))
    assert slow.sending(9 + LAYER_TIMEOUT - 0.01) and not slow.sending(9 + LAYER_TIMEOUT)


async def test_only_a_remb_that_reaches_a_video_sender_counts_and_it_names_its_ssrcs() -> None:
    from types import SimpleNamespace

    from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

    from sfu.interceptors import SubscriberFeedback

    async def no_keyframe() -> None:
        pass

    heard: list[tuple] = []
    remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(250_000, [222, 111]))
    for kind in ("audio", "video"):
        feedback = SubscriberFeedback(SimpleNamespace(up=SimpleNamespace(kind=kind)), no_keyframe)  # type: ignore[arg-type]
        feedback.listener = lambda *args: heard.append(args)
        assert await feedback.incoming_rtcp(remb) is True  # consumed either way
    assert heard == [("remb", 250_000.0, (111, 222))]
