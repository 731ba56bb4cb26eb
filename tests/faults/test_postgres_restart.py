"""PostgreSQL stops mid-meeting (a clean restart, then a crash): the API answers a clear 503 with
``database_unavailable`` and ``Retry-After`` meanwhile, signaling stays usable, media between the
participants goes on, and once PostgreSQL is back the very next call succeeds without anyone
restarting the node; nothing committed before is lost.

The node runs as ``videoconf run`` on a private PostgreSQL (tests/services.py), never on the
machine's shared one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from clients.sdk.participant import Participant, SignalingError
from tests.faults.node import Node, frames_advance, verified_frames
from tests.services import PrivatePostgres


async def test_postgresql_restarted_and_crashed_mid_meeting(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    await asyncio.to_thread(pg.start)
    node = Node(tmp_path, database_url=pg.url)
    try:
        await node.start()
        host, guest, meeting, chat = await node.hosted_meeting()
        await node.call("POST", chat, host["token"], {"body": "before"}, expect=201)

        publisher = await node.participant(host, meeting)
        await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(), "microphone")])
        viewer = await node.participant(guest, meeting)
        await frames_advance(viewer, 10)

        for how, stop in (("restart", pg.stop), ("crash", pg.kill)):
            token = await node.room_token(guest, meeting)
            await asyncio.to_thread(stop)
            # Reads, writes and joins fail clearly, as the same 503 every time.
            for method, path, body in (
                ("GET", "/api/meetings/my-meetings", None),
                ("POST", chat, {"body": f"refused during {how}"}),
                ("POST", f"/api/meetings/{meeting['id']}/join", {}),
                ("GET", "/api/users/me", None),
            ):
                status, answer, headers = await node.call(method, path, host["token"], body)
                assert status == 503, (how, method, path, status, answer)
                assert answer["error"]["code"] == "database_unavailable", answer
                assert int(headers["Retry-After"]) >= 1, headers
            status, ready, _ = await node.call("GET", "/readyz")
            assert status == 503 and ready["checks"]["database"].startswith("failed"), ready

            # Media goes on while the database is away.
            await frames_advance(viewer, 15)
            # Signaling stays usable: a chat that cannot be stored is refused with the same code.
            await viewer.chat(f"signaling chat during {how}")
            refused = await viewer.wait_for("error", lambda m: m["code"] == "database_unavailable", timeout=10)
            assert "database" in refused["message"]
            await viewer.ping(f"still-there-{how}")
            # Joining needs the database: refused with the same code, not as a bad token.
            latecomer = Participant(node.signaling_url, token, ice_servers=[])
            try:
                with pytest.raises(SignalingError) as refused_join:
                    await latecomer.connect()
                assert refused_join.value.code == "database_unavailable"
            finally:
                await latecomer.close()

            await asyncio.to_thread(pg.start)
            # The node recovers by itself: the first call after PostgreSQL is back succeeds.
            await node.call("GET", "/api/meetings/my-meetings", host["token"], expect=200)
            await node.call("POST", chat, host["token"], {"body": f"after {how}"}, expect=201)
            status, ready, _ = await node.call("GET", "/readyz")
            assert status == 200, ready

        await viewer.chat("signaling chat after")
        await publisher.wait_for("chat", lambda m: m["message"]["body"] == "signaling chat after", timeout=10)
        _, history, _ = await node.call("GET", chat + "?limit=50", guest["token"], expect=200)
        bodies = [m["body"] for m in reversed(history["items"])]
        assert bodies == ["before", "after restart", "after crash", "signaling chat after"], bodies
        _, again, _ = await node.call("GET", f"/api/meetings/{meeting['id']}", host["token"], expect=200)
        assert again["status"] == "live"

        await frames_advance(viewer, 10)
        (video,) = [t for t in (await viewer.report())["tracks"] if t["kind"] == "video"]
        assert video["frames_corrupt"] == 0 and verified_frames(viewer) == video["frames_verified"], (video, await viewer.report())
    finally:
        await node.close()
        await asyncio.to_thread(pg.close)
