"""One meeting over three nodes (``videoconf run`` processes sharing a private PostgreSQL and the
machine's Redis), each taking at most two participants: later joins go to the other nodes, and
the nodes relay the tracks between them over peer connections of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from clients.loadtest.polling import until
from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from clients.sdk.participant import Participant
from tests.conftest import REDIS_URL
from tests.faults.node import Node, verified_frames
from tests.services import PrivatePostgres


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, count: int = 3, limit: int = 2, **env: str) -> AsyncIterator[list[Node]]:
    """``count`` nodes of one cluster (``node-a``, ``node-b``, ...), each taking ``limit``
    participants before the API sends joins elsewhere, all started."""
    pg = PrivatePostgres()
    await asyncio.to_thread(pg.start)
    prefix = f"vctest:cascade:{uuid.uuid4().hex[:8]}:"
    shared = {
        "VIDEOCONF_CLUSTER": "true",
        "VIDEOCONF_REDIS_PREFIX": prefix,
        "VIDEOCONF_NODE_MAX_PARTICIPANTS": str(limit),
        "VIDEOCONF_ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "VIDEOCONF_ROOM_TOKEN_SECRET": secrets.token_urlsafe(32),
        **env,
    }
    nodes = []
    for index in range(count):
        name = "abcdefgh"[index]
        (tmp_path / name).mkdir()
        nodes.append(Node(tmp_path / name, database_url=pg.url, redis_url=REDIS_URL, VIDEOCONF_NODE_ID=f"node-{name}", **shared))
    redis = Redis.from_url(REDIS_URL)
    try:
        await nodes[0].start()
        await asyncio.gather(*(node.start(migrate=False) for node in nodes[1:]))
        yield nodes
    finally:
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await asyncio.to_thread(pg.stop)


async def join_meeting(api: Node, account: dict[str, Any], meeting: dict[str, Any], **options: Any) -> tuple[Participant, str]:
    """An SDK participant joined where the API sends it (it asks the API again to rejoin); and
    that node's id."""

    async def ticket() -> tuple[str, str]:
        _, entry, _ = await api.call("POST", f"/api/meetings/{meeting['id']}/join", account["token"], {}, expect=200)
        return entry["signaling_url"], entry["token"]

    _, entry, _ = await api.call("POST", f"/api/meetings/{meeting['id']}/join", account["token"], {}, expect=200)
    person = Participant(entry["signaling_url"], entry["token"], ice_servers=[], token_provider=ticket, **options)
    api.participants.append(person)
    await person.connect()
    return person, entry["node"]


def senders_seen(person: Participant, others: list[Participant], frames: int) -> bool:
    """``person`` has verified ``frames`` video frames of each of ``others``."""
    return all(verified_frames(person, other.identity) >= frames for other in others if other is not person)


async def test_one_meeting_spans_three_nodes_with_media_chat_and_host_actions_between_them(tmp_path: Path) -> None:
    async with cluster(tmp_path) as nodes:
        a = nodes[0]
        host = await a.register("Hedy Host")
        meeting = await a.meeting(host)
        accounts = [host] + [await a.register(f"Guest{i} Person") for i in range(5)]
        people: list[Participant] = []
        placed: list[str] = []
        for index, account in enumerate(accounts):
            codec = "VP8" if index % 2 == 0 else "H264"
            person, node_id = await join_meeting(nodes[index % 3], account, meeting, video_codec=codec)
            await person.publish([(PatternVideoTrack(160, 120, fps=10), "camera"), (ToneAudioTrack(), "microphone")])
            people.append(person)
            placed.append(node_id)
        # Two on each node: the first two on the meeting's node, then the others in turn.
        assert sorted(placed) == ["node-a", "node-a", "node-b", "node-b", "node-c", "node-c"], placed

        # Everyone decodes everyone's verified video (VP8 and H.264) and hears their tones.
        await until(lambda: all(senders_seen(p, people, 20) for p in people), 60, "everyone's video at everyone")
        for person in people:
            report = await person.report()
            tones = [t for t in report["tracks"] if t["kind"] == "audio"]
            assert len(tones) == 5, report
            assert all(t["tone_strength"] > 0.5 for t in tones), report
            videos = [t for t in report["tracks"] if t["kind"] == "video"]
            assert all(t.get("corrupt", 0) <= 2 for t in videos), report

        # Chat and a raised hand from node c reach every node.
        speaker = people[placed.index("node-c")]
        await speaker.chat("hello from node c")
        await speaker.raise_hand(True)
        for person in people:
            await person.wait_for("chat", lambda m: m["message"]["body"] == "hello from node c", timeout=10)
            if person is not speaker:
                await person.wait_for(
                    "participant-updated",
                    lambda m: m["participant"]["identity"] == speaker.identity and m["participant"]["hand_raised"], timeout=10,
                )

        # The host (node a) mutes a participant on node c: it is told, and every node sees it.
        host_client = people[0]
        await host_client.send({"type": "mute-participant", "identity": speaker.identity, "kind": "audio"})
        await speaker.wait_for("muted-by-host", timeout=10)
        for person in people:
            if person is not speaker:
                await person.wait_for(
                    "track-muted", lambda m: m["participant"] == speaker.identity and m["muted"] and m["by_host"], timeout=10
                )

        # The host removes a participant of node b; everyone sees them leave.
        removed = people[placed.index("node-b")]
        await host_client.send({"type": "remove-participant", "identity": removed.identity})
        await removed.wait_for("removed", timeout=10)
        for person in people:
            if person is not removed:
                await person.wait_for("participant-left", lambda m: m["identity"] == removed.identity, timeout=10)

        # Media still flows between the rest.
        rest = [p for p in people if p is not removed]
        start = {id(p): {o.identity: verified_frames(p, o.identity) for o in rest} for p in rest}
        await until(
            lambda: all(verified_frames(p, o.identity) >= start[id(p)][o.identity] + 10 for p in rest for o in rest if o is not p),
            30, "video among the rest after the removal",
        )

        # The host ends the meeting: everyone on every node is told.
        await host_client.send({"type": "end-meeting"})
        for person in rest:
            await person.wait_for("meeting-ended", timeout=10)

        # Nothing is left: no room, no relay link, no peer connection on any node.
        async def empty() -> bool:
            for node in nodes:
                metrics = await node.metrics()
                if metrics.get("videoconf_sfu_peer_connections", 1) or metrics.get("videoconf_sfu_rooms", 1):
                    return False
            return True

        await until(empty, 20, "every node to be empty")
        text = json.dumps(placed)
        assert "node-a" in text
