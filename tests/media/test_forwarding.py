"""End to end through the SFU with real aiortc peers over loopback: every decoded frame is
checked against the pattern its publisher drew, audio carries the publisher's tone."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc.rtp import RTCP_PSFB_APP

from clients.sdk.media import PatternVideoTrack, ToneAudioTrack, tone_strength
from sfu import fastsend
from sfu.aiortc_client import LossStats, drop_incoming_rtp, drop_outgoing_rtp
from sfu.aiortc_hooks import reports_of
from tests.conftest import Backend
from tests.media.conftest import Meeting, open_meeting, until
from videoconf.app import SFU

FRAMES = 45  # three seconds at 15 fps


@pytest.fixture(params=["native", "python"])
def send_path(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both ways copies leave: the native helper (sfu/_fastsend.c, which
    the README's commands build), where steady subscribers get lanes (no Python per copy), and
    the Python path it falls back to (``native_send = false``).  (In this process the clients'
    peer connections would share ``udp_port`` with the SFU's: tests/media/test_single_udp_port.py
    runs a node process on one port.)"""
    if request.param == "native":
        assert fastsend._fastsend is not None, "sfu/_fastsend.c did not build (pip install needs gcc and the Python headers)"
    return request.param


@pytest.fixture
async def meeting(sqlite_backend: Backend, tmp_path: Path, send_path: str) -> AsyncIterator[Meeting]:
    try:
        async with open_meeting(sqlite_backend, tmp_path, native_send=send_path == "native") as state:
            yield state
    finally:
        fastsend.configure(True)


def video_tracks(client):
    return [r for r in client.remote.values() if r.kind == "video" and r.verifier is not None]


def audio_tracks(client):
    return [r for r in client.remote.values() if r.kind == "audio" and r.track is not None]


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_three_subscribers_get_every_frame_intact_and_the_sfu_codes_nothing(meeting: Meeting, codec: str, send_path: str) -> None:
    publisher = await meeting.participant(meeting.host, video_codec=codec)
    subscribers = [await meeting.participant(person) for person in meeting.people[:3]]
    await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(frequency=440), "microphone")])
    for client in subscribers:
        await until(lambda c=client: video_tracks(c) and video_tracks(c)[0].verifier.frames_verified >= FRAMES, timeout=30)
        await until(lambda c=client: audio_tracks(c) and len(audio_tracks(c)[0].audio) >= 100, timeout=10)
    for client in subscribers:
        (video,) = video_tracks(client)
        report = video.verifier.report()
        assert report["frames_corrupt"] == 0, report
        assert report["frames_verified"] == report["frames_received"], report
        assert report["out_of_order"] == 0 and report["duplicates"] == 0, report
        assert video.track is not None and video.participant == publisher.identity
        (audio,) = audio_tracks(client)
        full = await client.report()
        (entry,) = [t for t in full["tracks"] if t["kind"] == "audio"]
        assert entry["tone_strength"] > 0.5, entry
    # The SFU forwarded without decoding or encoding anything.
    node = meeting.api.app[SFU]
    (room,) = node.rooms.values()
    for participant in room.participants.values():
        for up in participant.uptracks.values():
            assert up.tap.receiver._RTCRtpReceiver__decoder_thread is None
            # Every packet was decrypted and handled as its datagram arrived, none through
            # aiortc's receive task (whose queue and task step cost more than the forwarding).
            assert up.packets > 0 and up.tap.handled_now >= up.packets, (up.tap.handled_now, up.packets)
            # The copies left the way this run chose.
            if send_path == "python":
                assert up._batch.sent == 0
        if send_path == "native":  # steady subscribers' copies left through lanes
            lane_packets = [down.lane_packets for down in participant.downtracks.values()]
            assert all(n > 0 for n in lane_packets), lane_packets
        for down in participant.downtracks.values():
            assert not down.tap.has_encoder
            assert down.packets > 0
    assert codec.lower() in {up.codec.mimeType.lower().split("/")[1] for p in room.participants.values() for up in p.uptracks.values()}


async def test_loss_on_a_subscriber_path_is_repaired_by_nack(meeting: Meeting) -> None:
    publisher = await meeting.participant(meeting.host, video_codec="VP8")
    lossy = await meeting.participant(meeting.people[0])
    clean = await meeting.participant(meeting.people[1])
    stats = LossStats()
    rng = random.Random(5)
    lossy.tap_incoming(lambda pc: drop_incoming_rtp(pc, 0.05, rng, stats))
    await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
    await until(lambda: video_tracks(lossy) and video_tracks(lossy)[0].verifier.frames_verified >= 60, timeout=40)
    await until(lambda: video_tracks(clean) and video_tracks(clean)[0].verifier.frames_verified >= 60, timeout=10)
    report = video_tracks(lossy)[0].verifier.report()
    assert stats.dropped >= 10, "the loss injection did not drop anything"
    assert report["frames_corrupt"] == 0, report
    # NACK and RTX repaired nearly everything: at most a few frames never arrived.
    assert report["missing"] <= 3, report
    node = meeting.api.app[SFU]
    (room,) = node.rooms.values()
    down = room.participants[lossy.identity].downtracks
    assert sum(d.retransmitted for d in down.values()) >= stats.dropped // 2


async def test_loss_on_a_publisher_s_uplink_is_seen_by_the_sfu_and_repaired_by_its_nacks(meeting: Meeting) -> None:
    """``tap_outgoing`` drops a tenth of the RTP the publisher sends (before SRTP, as the network
    would): the SFU sees the gaps in what it receives, NACKs them upstream, the publisher's
    retransmissions fill them, and the subscriber decodes every frame intact."""
    publisher = await meeting.participant(meeting.host, video_codec="VP8")
    viewer = await meeting.participant(meeting.people[0])
    stats = LossStats()
    rng = random.Random(7)
    publisher.tap_outgoing(lambda pc: drop_outgoing_rtp(pc, 0.1, rng, stats))
    registry = meeting.api.app[SFU].metrics.registry
    nacked = registry.get_sample_value("videoconf_sfu_nacks_sent_total") or 0.0
    (track_id,) = await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
    (room,) = meeting.api.app[SFU].rooms.values()
    layer = room.participants[publisher.identity].uptracks[track_id].layers[0]
    await until(
        lambda: stats.dropped >= 10 and layer.losses.recovered >= 5, 15,
        lambda: f"loss at the SFU (dropped {stats.dropped} of {stats.seen}, recovered {layer.losses.recovered})",
    )
    assert (registry.get_sample_value("videoconf_sfu_nacks_sent_total") or 0.0) - nacked >= 5
    await until(lambda: video_tracks(viewer) and video_tracks(viewer)[0].verifier.frames_verified >= 30, timeout=15)
    report = video_tracks(viewer)[0].verifier.report()
    assert report["frames_corrupt"] == 0, report


async def test_rtcp_sender_reports_down_receiver_reports_and_remb_up(meeting: Meeting) -> None:
    publisher = await meeting.participant(meeting.host, video_codec="VP8")
    subscriber = await meeting.participant(meeting.people[0])
    await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
    assert publisher.publisher is not None
    (sender,) = [s for s in publisher.publisher.getSenders() if s.track is not None]
    feedback: list[int] = []
    original = sender._handle_rtcp_packet

    async def record(packet, _original=original) -> None:  # noqa: ANN001
        feedback.append(getattr(packet, "fmt", -1))
        await _original(packet)

    sender._handle_rtcp_packet = record
    await until(lambda: video_tracks(subscriber) and video_tracks(subscriber)[0].verifier.frames_verified >= 30, timeout=30)

    async def stats_of(pc, kind: str) -> list:  # noqa: ANN001
        report = await pc.getStats()
        return [s for s in report.values() if s.type == kind]

    # Sender reports from the SFU carry the counts of what it forwarded on this stream.
    (sent,) = await until(lambda: stats_of(subscriber.subscriber, "remote-outbound-rtp"), 10, "a sender report", interval=0.25)
    (inbound,) = await stats_of(subscriber.subscriber, "inbound-rtp")
    assert 0 < sent.packetsSent <= inbound.packetsReceived + 50
    # They come from one timer of the event loop, not a task per sender; the subscriber's
    # receiver reports answer them, so the SFU knows the subscriber's round trip.
    node = meeting.api.app[SFU]
    (room,) = node.rooms.values()
    (down,) = room.participants[subscriber.identity].downtracks.values()
    schedule = reports_of(asyncio.get_running_loop())
    assert down.tap.sender in schedule.due
    await until(lambda: down.tap.rtt is not None, 10, "the subscriber's round-trip time", interval=0.25)
    assert -0.01 <= down.tap.rtt < 1.0
    # The publisher hears receiver reports (it knows its RTT) and REMB from the SFU's own estimate.
    await until(lambda: RTCP_PSFB_APP in feedback, timeout=15)
    (remote_inbound,) = await stats_of(publisher.publisher, "remote-inbound-rtp")
    assert remote_inbound.roundTripTime is not None and remote_inbound.roundTripTime < 1.0
    # A subscriber who leaves takes its senders out of the schedule (aiortc's stop, then a BYE).
    sender_of_subscriber = down.tap.sender
    await subscriber.close()
    await until(lambda: sender_of_subscriber not in schedule.due, 10, "the sender to leave the schedule", interval=0.1)


async def test_a_late_receive_only_participant_hears_every_audio_publisher(meeting: Meeting) -> None:
    """Two people publish video and audio before a listener who publishes nothing joins: each of
    its audio m-sections carries its own publisher's tone.  Under aiortc's default bundle policy
    the second audio m-section of that first offer shares the first one's transport, which is
    then stopped as bundled into the video m-section: no audio arrived."""
    tones = {}
    for person, frequency in ((meeting.host, 440.0), (meeting.people[0], 660.0)):
        publisher = await meeting.participant(person)
        await publisher.publish([(PatternVideoTrack(160, 120, fps=10), "camera"), (ToneAudioTrack(frequency=frequency), "microphone")])
        tones[publisher.identity] = frequency
    listener = await meeting.participant(meeting.people[1])
    await until(lambda: len(audio_tracks(listener)) == 2 and all(len(a.audio) >= 100 for a in audio_tracks(listener)), timeout=20)
    for remote in audio_tracks(listener):
        own = tone_strength(list(remote.audio), tones[remote.participant])
        (other,) = [f for who, f in tones.items() if who != remote.participant]
        assert own > 0.5, (remote.participant, own)
        assert tone_strength(list(remote.audio), other) < 0.2, (remote.participant, other)
