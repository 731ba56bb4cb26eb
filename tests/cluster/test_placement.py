"""Two nodes (``videoconf run`` processes, ``cluster = true``) share a private PostgreSQL and
the machine's Redis: each is in the registry while it runs, a meeting's first join places its
room on the least-loaded node, later joins through either node's API go to that node, a node
refuses a meeting placed elsewhere, the placement goes when the room closes, and a node that
stops leaves the registry at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import uuid
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, str]]:
    """Nodes ``node-a`` and ``node-b`` of one cluster (a private PostgreSQL, the machine's Redis
    under a prefix of their own, the same secrets), both started; and that prefix."""
    pg = PrivatePostgres()
    await asyncio.to_thread(pg.start)
    prefix = f"vctest:cluster:{uuid.uuid4().hex[:8]}:"
    shared = {
        "VIDEOCONF_CLUSTER": "true",
        "VIDEOCONF_REDIS_PREFIX": prefix,  # one cluster: the same prefix on every node
        "VIDEOCONF_ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "VIDEOCONF_ROOM_TOKEN_SECRET": secrets.token_urlsafe(32),
    }
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(Node(tmp_path / name, database_url=pg.url, redis_url=REDIS_URL, VIDEOCONF_NODE_ID=f"node-{name}", **shared))
    a, b = nodes
    for node, other in ((a, b), (b, a)):  # the web client served by one may signal the other
        node.server.env["VIDEOCONF_CONNECT_SOURCES"] = json.dumps([other.base.replace("http://", "ws://")])
    redis = Redis.from_url(REDIS_URL)
    try:
        await a.start()
        await b.start(migrate=False)
        yield a, b, prefix
    finally:
        await a.close()
        await b.close()
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await asyncio.to_thread(pg.close)


async def test_meetings_are_placed_on_the_least_loaded_node_and_joined_there(tmp_path: Path) -> None:
    clients: list[Participant] = []
    async with two_nodes(tmp_path) as (a, b, prefix), Redis.from_url(REDIS_URL) as redis:
        try:
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

            # A node that stops leaves the registry at once, not 5 s later; the metrics follow.
            assert (await b.metrics())["videoconf_cluster_nodes{state=serving}"] == 2
            await a.stop()
            assert set(await nodes_seen(b)) == {"node-b"}

            async def one_serving() -> bool:
                return (await b.metrics())["videoconf_cluster_nodes{state=serving}"] == 1

            await until(one_serving, 5, "node b's metrics to count one node")
        finally:
            for client in clients:
                await client.close()


async def two_publishers_on(a: Node, b: Node) -> list[Participant]:
    """A meeting placed on node a with two SDK participants publishing and receiving each other,
    whose token provider asks node b's API (the one that stays) and returns its answer's
    (signaling_url, token), so that they can move.  The accounts and the meeting are made
    through node b's API, so that node a, idle, is also the less busy one: placement looks at
    CPU (in steps of a tenth of a core) before the id."""
    host, guest, meeting, _ = await b.hosted_meeting()

    def ticket(account: dict[str, Any]) -> Any:
        async def provide() -> tuple[str, str]:
            entry = await join(b, account, meeting)
            return entry["signaling_url"], entry["token"]
        return provide

    people = []
    for account in (host, guest):
        url, token = await ticket(account)()
        assert url == a.signaling_url
        person = Participant(url, token, ice_servers=[], token_provider=ticket(account))
        b.participants.append(person)  # closed with the node
        await person.connect()
        await person.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(), "microphone")])
        people.append(person)
    for person in people:
        await frames_advance(person, 10)
    return people


async def test_participants_of_a_killed_node_join_again_on_another(tmp_path: Path) -> None:
    """``kill -9`` of the node that hosts a meeting: its heartbeat runs out (5 s), the API places
    the meeting on the living node, and SDK participants whose token provider asks the API join
    there by themselves, publish again and receive each other again."""
    async with two_nodes(tmp_path) as (a, b, _):
        people = await two_publishers_on(a, b)

        await a.kill()
        killed = asyncio.get_running_loop().time()
        await until(lambda: all(p.rejoins == 1 and p.state == "connected" for p in people), 20, "both to join again")
        took = asyncio.get_running_loop().time() - killed
        assert all(p.signaling_url == b.signaling_url for p in people)
        for person in people:
            await frames_advance(person, 10, timeout=20)
        assert took < 15, f"joined again {took:.1f} s after the kill"
        assert set(await nodes_seen(b)) == {"node-b"}


async def test_a_node_ordered_to_drain_moves_its_participants_to_another_and_exits(tmp_path: Path) -> None:
    """``POST /api/nodes/node-a/drain`` on node b's API (SIGTERM does the same; see the web
    client's test): node a takes no new rooms, asks its participants to join again, which SDK
    participants do through the API onto node b, keeping their tracks published, and it exits
    by itself once nobody is left."""
    async with two_nodes(tmp_path) as (a, b, _):
        people = await two_publishers_on(a, b)
        _, body, _ = await b.call("POST", "/api/nodes/nobody/drain", expect=404)
        _, body, _ = await b.call("POST", "/api/nodes/node-a/drain", expect=202)
        assert body == {"node": "node-a", "state": "draining"}
        assert a.server.process is not None
        await until(lambda: all(p.rejoins == 1 and p.state == "connected" for p in people), 20, "both to move")
        assert all(p.signaling_url == b.signaling_url for p in people)
        for person in people:
            await frames_advance(person, 10, timeout=20)
        code = await asyncio.to_thread(a.server.process.wait, 20)
        assert code == 0, a.server.child.log_tail()
        assert set(await nodes_seen(b)) == {"node-b"}


async def test_the_web_client_follows_its_meeting_to_another_node_when_its_node_drains(tmp_path: Path) -> None:
    """Chromium, served by node b, joins a meeting that node a hosts and signals node a (the join
    answer names it; the page's policy allows it); node a drains: the page joins again through
    the API, at node b now, publishes again and plays the host's video again."""
    from tests.media.browser import chromium
    from tests.media.test_web_client import join_by_code, person, playing_videos, wait_until

    async with two_nodes(tmp_path) as (a, b, _):
        host, _, meeting, _ = await b.hosted_meeting()  # through b: node a stays the idler (see two_publishers_on)

        async def host_ticket() -> tuple[str, str]:
            entry = await join(b, host, meeting)
            return entry["signaling_url"], entry["token"]

        url, token = await host_ticket()
        assert url == a.signaling_url
        sdk = Participant(url, token, ice_servers=[], token_provider=host_ticket)
        b.participants.append(sdk)
        await sdk.connect()
        await sdk.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(), "microphone")])
        async with chromium() as browser:
            page = await person(browser, b.base, "Wendy Web")
            await join_by_code(page, meeting["code"])

            async def host_video(exclude: str | None = None) -> dict | None:
                for video in await playing_videos(page):
                    if video["tile"] == "Hedy Host" and video["frames"] > 5 and video["track"] != exclude:
                        return video
                return None

            first = await wait_until(host_video, 30, "the host's video through node a")
            assert a.server.process is not None
            a.server.process.send_signal(signal.SIGTERM)
            await page.locator("#announcer").filter(has_text="Reconnected.").wait_for(timeout=30000)
            await wait_until(lambda: host_video(exclude=first["track"]), 30, "the host's video through node b")
            await until(lambda: sdk.rejoins == 1 and sdk.signaling_url == b.signaling_url, 20, "the host to move")
            await until(lambda: [r for r in sdk.remote.values() if r.kind == "video" and not r.ended and r.frames >= 10], 30,
                        "the page's camera at the host, through node b")
            code = await asyncio.to_thread(a.server.process.wait, 30)
            assert code == 0
            errors = [e for e in page.errors if "ERR_CONNECTION_REFUSED" not in e]
            assert errors == [], errors
