"""Two nodes (``videoconf run`` processes, ``cluster = true``) share a private PostgreSQL and
the machine's Redis: each is in the registry while it runs, a meeting's first join places its
room on the least-loaded node, later joins through either node's API go to that node, a node
refuses a meeting placed elsewhere, the placement goes when the room closes, and a node that
stops leaves the registry at once."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from clients.loadtest.polling import until
from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from clients.sdk.participant import Participant, SignalingError
from control_api.cluster import RedisCluster
from tests.conftest import REDIS_URL
from tests.faults.node import Node, frames_advance
from tests.services import PrivatePostgres


async def nodes_seen(node: Node) -> dict[str, dict[str, Any]]:
    _, body, _ = await node.call("GET", "/api/nodes")
    return {entry["id"]: entry for entry in body["nodes"]}


async def join(node: Node, account: dict[str, Any], meeting: dict[str, Any]) -> dict[str, Any]:
    _, body, _ = await node.call("POST", f"/api/meetings/{meeting['id']}/join", account["token"], {}, expect=200)
    return body


async def test_meetings_are_placed_on_the_least_loaded_node_and_joined_there(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    await asyncio.to_thread(pg.start)
    prefix = f"vctest:cluster:{uuid.uuid4().hex[:8]}:"
    shared = {
        "VIDEOCONF_CLUSTER": "true",
        "VIDEOCONF_REDIS_PREFIX": prefix,  # one cluster: the same prefix on every node
        "VIDEOCONF_ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "VIDEOCONF_ROOM_TOKEN_SECRET": secrets.token_urlsafe(32),
    }
    a = Node(tmp_path / "a", database_url=pg.url, redis_url=REDIS_URL, VIDEOCONF_NODE_ID="node-a", **shared)
    b = Node(tmp_path / "b", database_url=pg.url, redis_url=REDIS_URL, VIDEOCONF_NODE_ID="node-b", **shared)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clients: list[Participant] = []
    redis = Redis.from_url(REDIS_URL)
    try:
        await a.start()
        await b.start(migrate=False)
        assert set(await nodes_seen(a)) == {"node-a", "node-b"}
        host, guest, first, _ = await a.hosted_meeting()
        second = await a.meeting(host, title="Second")

        # The first meeting goes to the least-loaded node (both empty: the id decides).
        entry = await join(a, host, first)
        assert entry["signaling_url"] == a.signaling_url
        publisher = Participant(entry["signaling_url"], entry["token"], ice_servers=[])
        clients.append(publisher)
        await publisher.connect()
        await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(), "microphone")])
        async def a_counts_one() -> bool:
            return (await nodes_seen(b))["node-a"]["load"]["participants"] == 1

        await until(a_counts_one, 10, "node-a's heartbeat to count its participant")

        # The second goes to the other node, now the less loaded one, whichever API is asked.
        entry = await join(a, host, second)
        assert entry["signaling_url"] == b.signaling_url

        # Joining the first meeting through node b's API leads to node a, where its room is.
        entry = await join(b, guest, first)
        assert entry["signaling_url"] == a.signaling_url
        viewer = Participant(entry["signaling_url"], entry["token"], ice_servers=[])
        clients.append(viewer)
        await viewer.connect()
        await frames_advance(viewer, 15)

        # Node b refuses the first meeting's room: it is not placed there.
        entry = await join(a, guest, first)
        stray = Participant(b.signaling_url, entry["token"], ice_servers=[])
        with pytest.raises(SignalingError, match="wrong_node"):
            await stray.connect()
        await stray.close()

        # The room closes on node a once everyone has left, and its placement goes with it.
        cluster = RedisCluster(redis, prefix + "cluster:")
        assert (await cluster.placement(first["id"])).node == "node-a"  # type: ignore[union-attr]
        for client in clients:
            await client.close()
        async def released() -> bool:
            return await cluster.placement(first["id"]) is None

        await until(released, 10, "the placement's release")

        # A node that stops leaves the registry at once, not 5 s later.
        await a.stop()
        assert set(await nodes_seen(b)) == {"node-b"}
    finally:
        for client in clients:
            await client.close()
        await a.close()
        await b.close()
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await asyncio.to_thread(pg.stop)

