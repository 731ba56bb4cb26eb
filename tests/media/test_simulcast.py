"""Simulcast through the SFU with real aiortc peers: the SDK publishes three layers (SSRC-group
simulcast), subscribers choose layers by size or quality, bandwidth moves them down and back
up, unused layers pause at the publisher, and the loudest participant is announced."""

from __future__ import annotations

import random

from clients.sdk.media import PatternVideoTrack, SimulcastPattern, ToneAudioTrack
from sfu.aiortc_client import LossStats, drop_incoming_rtp
from tests.media.conftest import Meeting, until
from videoconf.app import SFU

SIZES = ((320, 180), (640, 360), (1280, 720))


def video(client):
    tracks = [r for r in client.remote.values() if r.kind == "video" and r.verifier is not None]
    return tracks[0] if tracks else None


def forwarding(client, track_id: str) -> dict | None:
    remote = client.remote.get(track_id)
    return remote.forwarding if remote is not None else None


async def test_a_subscriber_asks_for_each_layer_in_turn(meeting: Meeting) -> None:
    publisher = await meeting.participant(meeting.host, video_codec="VP8")
    viewer = await meeting.participant(meeting.people[0])
    source = SimulcastPattern(SIZES, fps=10)
    (track_id,) = await publisher.publish([(source, "camera")])
    await until(lambda: video(viewer) is not None and video(viewer).frames >= 5, timeout=30)
    node = meeting.api.app[SFU]
    (room,) = node.rooms.values()
    up = room.participants[publisher.identity].uptracks[track_id]
    assert up.is_simulcast and len(up.layers) == 3
    await until(lambda: all(layer.height is not None for layer in up.layers), timeout=15)
    assert [(layer.width, layer.height) for layer in up.order] == list(SIZES)
    for ask, size in (({"quality": "low"}, (320, 180)), ({"width": 640, "height": 360}, (640, 360)), ({"quality": "high"}, (1280, 720))):
        remote = video(viewer)
        await viewer.track_settings(track_id, **ask)
        await until(lambda r=remote, s=size: r.last_size == s, timeout=20)
        before = remote.sizes.get(size, 0)
        await until(lambda r=remote, s=size, b=before: r.sizes.get(s, 0) >= b + 10, timeout=20)
        assert any(
            m["type"] == "track-forwarding" and m["track_id"] == track_id and m["layer"] == SIZES.index(size)
            for m in viewer.history
        )
    report = video(viewer).verifier.report()
    down = room.participants[viewer.identity].downtracks[track_id]
    assert down.switches >= 2
    # aiortc's VP8 encoder (its temporal denoiser) leaves part of a pattern cell stale in a few
    # 320x180 frames (README: it happens without the SFU): a handful read as damaged, never out
    # of order.
    assert report["frames_corrupt"] <= down.switches and report["out_of_order"] == 0, report
    assert report["frames_verified"] >= report["frames_received"] - down.switches, report
    # "off" stops the video; the publisher is told to stop encodings nobody takes (dynacast).
    await viewer.track_settings(track_id, quality="off")
    await until(lambda: (forwarding(viewer, track_id) or {}).get("forwarding") is False, timeout=10)
    await until(lambda: all(layer.paused for layer in source.tracks), timeout=15)
    await viewer.track_settings(track_id, quality="medium")
    await until(lambda: not source.tracks[1].paused, timeout=10)
    assert source.tracks[2].paused
    remote = video(viewer)
    frames = remote.sizes.get((640, 360), 0)
    await until(lambda: remote.sizes.get((640, 360), 0) >= frames + 5, timeout=20)


async def test_constrained_bandwidth_steps_down_within_five_seconds_and_back_up(meeting: Meeting) -> None:
    publisher = await meeting.participant(meeting.host, video_codec="VP8")
    viewer = await meeting.participant(meeting.people[0])
    stats = LossStats()
    viewer.tap_incoming(lambda pc: drop_incoming_rtp(pc, 0.0, random.Random(3), stats))
    (track_id,) = await publisher.publish([(SimulcastPattern(SIZES[:2], fps=10), "camera")])
    await until(lambda: (forwarding(viewer, track_id) or {}).get("layer") == 1 and video(viewer) is not None and video(viewer).last_size == SIZES[1], timeout=30)
    loop_time = __import__("asyncio").get_running_loop().time
    started = loop_time()
    stats.rate = 0.3
    await until(lambda: (forwarding(viewer, track_id) or {}).get("layer") == 0, timeout=10)
    assert loop_time() - started <= 5.0
    assert forwarding(viewer, track_id)["reason"] == "bandwidth"
    stats.rate = 0.0
    await until(lambda: (forwarding(viewer, track_id) or {}).get("layer") == 1, timeout=40)
    remote = video(viewer)
    frames = remote.sizes.get(SIZES[1], 0)
    await until(lambda: remote.sizes.get(SIZES[1], 0) >= frames + 5, timeout=20)


async def test_last_n_forwards_the_dominant_speakers_video_and_a_pin_overrides_it(meeting: Meeting) -> None:
    await meeting.api.call("PATCH", f"/api/meetings/{meeting.meeting['id']}", meeting.host["token"], json={"settings": {"last_n": 1}}, expect=200)
    quiet = await meeting.participant(meeting.host)
    loud = await meeting.participant(meeting.people[0])
    viewer = await meeting.participant(meeting.people[1])
    quiet_ids = await quiet.publish([(PatternVideoTrack(160, 120, fps=10), "camera"), (ToneAudioTrack(amplitude=0.0), "microphone")])
    loud_ids = await loud.publish([(PatternVideoTrack(160, 120, fps=10), "camera"), (ToneAudioTrack(amplitude=0.8), "microphone")])
    await until(lambda: viewer.active_speakers is not None and viewer.active_speakers["dominant"] == loud.identity, timeout=15)
    assert quiet.identity not in viewer.active_speakers["speakers"]
    # Last-N = 1: only the speaker's video reaches the viewer.
    await until(lambda: (forwarding(viewer, loud_ids[0]) or {}).get("forwarding") is True, timeout=10)
    await until(lambda: (forwarding(viewer, quiet_ids[0]) or {}).get("reason") == "last_n", timeout=10)
    # Pinning the quiet one brings its video in (and the speaker's out).
    await viewer.pin([quiet.identity])
    await until(lambda: (forwarding(viewer, quiet_ids[0]) or {}).get("forwarding") is True, timeout=10)
    await until(lambda: (forwarding(viewer, loud_ids[0]) or {}).get("reason") == "last_n", timeout=10)
