"""Redis restarts mid-meeting (without persistence, so it comes back empty).

What "nothing acknowledged is lost" means here (README, "Operations"): a chat message is
acknowledged once the database has committed it (the API's 201), so it stays in the history
whatever Redis does; pub/sub is best-effort fan-out, and a node keeps delivering its own events
to its own rooms while Redis is away; rate-limit state may reset (each node counts in memory
while Redis is away, and Redis comes back empty).

Checked: while Redis is down the API still stores chat (201) and signs people in, and the room
still gets its chat; after Redis is back the node's subscriptions are live on it again (an event
another node publishes reaches the room, a notification reaches an open event stream) and rate
limits are counted in Redis again; media goes on throughout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from clients.loadtest.polling import until
from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from tests.faults.node import PASSWORD, Node, frames_advance
from tests.services import PrivatePostgres, PrivateRedis


async def read_events(node: Node, token: str, into: list[dict[str, Any]]) -> None:
    """Follow the notification stream, collecting each notification."""
    assert node.http is not None
    async with node.http.get(
        node.base + "/api/notifications/stream", headers={"Authorization": f"Bearer {token}"},
        timeout=None,
    ) as response:
        assert response.status == 200
        async for line in response.content:
            if line.startswith(b"data: "):
                into.append(json.loads(line[6:]))


async def subscribers(redis: Redis, channel: str) -> int:
    return dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0)


async def test_redis_restarted_mid_meeting(tmp_path: Path) -> None:
    pg, redis_server = PrivatePostgres(), PrivateRedis()
    await asyncio.to_thread(pg.start)
    await asyncio.to_thread(redis_server.start)
    node = Node(
        tmp_path, database_url=pg.url, redis_url=redis_server.url,
        # A real limit (10 per 10 minutes), so that its state lives in Redis long enough to see.
        VIDEOCONF_RATE_LIMITS__LOGIN_PER_ACCOUNT__LIMIT="10", VIDEOCONF_RATE_LIMITS__LOGIN_PER_ACCOUNT__PERIOD="600",
    )
    prefix = node.server.env["VIDEOCONF_REDIS_PREFIX"]
    redis = Redis.from_url(redis_server.url)
    stream: asyncio.Task[None] | None = None
    try:
        await node.start()
        host, guest, meeting, chat = await node.hosted_meeting()
        other = await node.meeting(host, title="Later")
        room_channel = f"{prefix}meeting:{meeting['id']}"
        user_channel = f"{prefix}user:{guest['user']['id']}"

        publisher = await node.participant(host, meeting)
        await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(), "microphone")])
        viewer = await node.participant(guest, meeting)
        await frames_advance(viewer, 10)
        notifications: list[dict[str, Any]] = []
        stream = asyncio.create_task(read_events(node, guest["token"], notifications))
        deadline = asyncio.get_running_loop().time() + 10
        while await subscribers(redis, user_channel) < 1 or await subscribers(redis, room_channel) < 1:
            assert asyncio.get_running_loop().time() < deadline, "the node never subscribed"
            await asyncio.sleep(0.1)

        async def said(text: str) -> None:
            await viewer.wait_for("chat", lambda m: m["message"]["body"] == text, timeout=10)

        await publisher.chat("one")
        await said("one")

        await asyncio.to_thread(redis_server.stop)
        # Acknowledged means committed: the API stores chat and answers 201 with Redis away...
        await node.call("POST", chat, host["token"], {"body": "two"}, expect=201)
        await said("two")  # ...and this node's own room still gets it.
        await publisher.chat("three")
        await said("three")
        # Sign-in works; its rate limits are counted in this process meanwhile.
        await node.call("POST", "/api/auth/login", body={"email": guest["email"], "password": PASSWORD}, expect=200)
        status, ready, _ = await node.call("GET", "/readyz")
        assert status == 503 and ready["checks"]["redis"].startswith("failed"), ready
        await frames_advance(viewer, 15)

        await asyncio.to_thread(redis_server.start)
        await redis.aclose()
        redis = Redis.from_url(redis_server.url)  # this test's own connection died with the server
        # The node's subscriptions come back by themselves, on the new (empty) Redis.
        deadline = asyncio.get_running_loop().time() + 15
        while await subscribers(redis, user_channel) < 1 or await subscribers(redis, room_channel) < 1:
            assert asyncio.get_running_loop().time() < deadline, "the node did not subscribe again after Redis came back"
            await asyncio.sleep(0.1)
        await publisher.chat("four")
        await said("four")
        # An event published by another node reaches this node's room through Redis.
        await node.call("POST", chat, host["token"], {"body": "five"}, expect=201)
        await said("five")
        relayed = {"type": "chat.message", "message": {
            "id": "00000000-0000-0000-0000-000000000001", "meeting_id": meeting["id"], "body": "from another node",
            "sender": {"id": host["user"]["id"], "display_name": "Hedy Host"}, "recipient_id": None,
            "created_at": "2026-01-01T00:00:00Z",
        }}
        assert await redis.publish(room_channel, json.dumps(relayed)) >= 1
        await said("from another node")
        # The notification stream opened before the restart gets an invitation made after it.
        await node.call("POST", f"/api/meetings/{other['id']}/invitations", host["token"], {"emails": [guest["email"]]}, expect=200)
        await until(lambda: any(n["kind"] == "invited" and n["meeting_id"] == other["id"] for n in notifications), 10, "the notification")
        # Rate limits are kept in Redis again.
        await node.call("POST", "/api/auth/login", body={"email": guest["email"], "password": PASSWORD}, expect=200)
        assert await redis.keys(f"{prefix}rl:*"), "rate limits are not counted in Redis after its restart"
        assert (await node.call("GET", "/readyz"))[0] == 200

        _, history, _ = await node.call("GET", chat + "?limit=50", guest["token"], expect=200)
        bodies = [m["body"] for m in reversed(history["items"])]
        assert bodies == ["one", "two", "three", "four", "five"], bodies
        await frames_advance(viewer, 10)
        (video,) = [t for t in (await viewer.report())["tracks"] if t["kind"] == "video"]
        assert video["frames_corrupt"] == 0, video
    finally:
        if stream is not None:
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
        await redis.aclose()
        await node.close()
        await asyncio.to_thread(redis_server.close)
        await asyncio.to_thread(pg.close)
