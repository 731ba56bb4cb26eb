"""Participants come and go without leaving anything behind."""

from __future__ import annotations

import asyncio
import gc
import os

from aiortc import RTCPeerConnection

from clients.sdk.media import ToneAudioTrack
from tests.media.conftest import Meeting, until
from videoconf.app import SFU


def live_peer_connections() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, RTCPeerConnection) and obj.connectionState != "closed")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.1)
        gc.collect()


async def test_twenty_join_leave_cycles_leave_nothing_behind(meeting: Meeting) -> None:
    node = meeting.api.app[SFU]
    anchor = await meeting.participant(meeting.host)
    await anchor.publish([(ToneAudioTrack(), "microphone")])

    async def cycle(number: int) -> None:
        guest = await meeting.participant(meeting.people[number % 4])
        await guest.publish([(ToneAudioTrack(frequency=300 + number), "microphone")])
        await until(lambda: [r for r in guest.remote.values() if r.frames > 0], timeout=15)
        await guest.close()
        meeting.clients.remove(guest)
        await anchor.wait_for("participant-left", lambda m: m["identity"] == guest.identity)

    await cycle(0)  # the anchor's subscriber connection now exists and stays
    await settle()
    tasks, pcs, fds = len(asyncio.all_tasks()), live_peer_connections(), open_fds()
    for number in range(1, 21):
        await cycle(number)
    await settle()
    (room,) = node.rooms.values()
    assert list(room.participants) == [anchor.identity]
    assert not room._tasks
    assert live_peer_connections() == pcs, "peer connections were left open"
    assert len(asyncio.all_tasks()) <= tasks, f"tasks left behind: {len(asyncio.all_tasks())} > {tasks}"
    assert open_fds() <= fds, f"sockets or files left open: {open_fds()} > {fds}"
    up = next(iter(room.participants[anchor.identity].uptracks.values()))
    assert up.downtracks == []


async def test_a_participant_whose_media_connection_dies_is_removed(meeting: Meeting) -> None:
    node = meeting.api.app[SFU]
    alice = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    await bob.publish([(ToneAudioTrack(), "microphone")])
    await until(lambda: [r for r in alice.remote.values() if r.frames > 0], timeout=15)
    await bob.publisher.close()  # the media path dies; the WebSocket lives on
    left = await alice.wait_for("participant-left", lambda m: m["identity"] == bob.identity, timeout=15)
    assert left["reason"] == "connection_failed"
    (room,) = node.rooms.values()
    assert bob.identity not in room.participants
    assert (await alice.wait_for("track-unpublished"))["participant"] == bob.identity


# Gauges that describe the node rather than count what it holds.
NOT_COUNTS = {"videoconf_dependency_up", "videoconf_turn_allocation_quota", "videoconf_tls_certificate_expiry_timestamp_seconds",
              "videoconf_cluster_heartbeat_age_seconds"}


async def node_gauges(meeting: Meeting) -> dict[str, float]:
    """Every videoconf_* gauge sample the node's /metrics shows."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = await meeting.api.call("GET", "/metrics", expect=200)
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.type == "gauge" and family.name.startswith("videoconf_") and not family.name.endswith("_created")
        and family.name not in NOT_COUNTS
        for sample in family.samples
    }


async def test_every_gauge_of_the_node_reads_zero_after_everyone_leaves(meeting: Meeting) -> None:
    """Join, publish, unpublish one track, leave: the room, participant and track gauges follow
    the node's state while people are in, and all read 0 once everyone has gone."""
    from clients.sdk.media import PatternVideoTrack

    host = await meeting.participant(meeting.host)
    await host.publish([(ToneAudioTrack(), "microphone")])
    for number in range(4):
        guest = await meeting.participant(meeting.people[number])
        ids = await guest.publish([(PatternVideoTrack(160, 120, fps=10), "camera"), (ToneAudioTrack(frequency=500), "microphone")])
        gauges = await node_gauges(meeting)
        assert gauges["videoconf_sfu_participants[]"] == 2, gauges
        assert gauges["videoconf_sfu_tracks[('kind', 'audio')]"] == 2, gauges
        assert gauges["videoconf_sfu_tracks[('kind', 'video')]"] == 1, gauges
        if number % 2:
            await guest.unpublish(ids[0])
            await host.wait_for("track-unpublished", lambda m, i=ids[0]: m["track_id"] == i)
        await guest.close()
        meeting.clients.remove(guest)
        await host.wait_for("participant-left", lambda m, g=guest: m["identity"] == g.identity)
    await host.close()
    meeting.clients.remove(host)
    await until(lambda: not meeting.api.app[SFU].rooms, timeout=10)
    gauges = await node_gauges(meeting)
    assert gauges and all(value == 0 for value in gauges.values()), gauges
