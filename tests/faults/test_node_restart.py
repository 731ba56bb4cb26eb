"""The node crashes and comes back (SIGKILL, then ``videoconf run`` again on the same port and
data): its sessions are gone, so SDK participants join again by themselves with a new room token
from the application's callback and publish their tracks again; media flows again and nothing
persisted (accounts, the meeting, chat history) is lost."""

from __future__ import annotations

from pathlib import Path

from clients.loadtest.polling import until
from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from tests.faults.node import PASSWORD, Node, frames_advance, video_tracks


async def test_sdk_participants_rejoin_and_republish_after_the_node_restarts(tmp_path: Path) -> None:
    node = Node(tmp_path)  # SQLite in the node's data directory, as `make run` keeps it
    try:
        await node.start()
        host, guest, meeting, chat = await node.hosted_meeting()

        publisher = await node.participant(host, meeting)
        await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(), "microphone")])
        viewer = await node.participant(guest, meeting)
        await viewer.publish([(ToneAudioTrack(frequency=660), "microphone")])
        await frames_advance(viewer, 10)
        (before,) = video_tracks(viewer)
        await viewer.chat("before the crash")
        await publisher.wait_for("chat", lambda m: m["message"]["body"] == "before the crash", timeout=10)

        await node.kill()
        await until(lambda: publisher.state == "reconnecting" and viewer.state == "reconnecting", 10, "both to notice")
        await node.start(migrate=False)

        # Both join again on their own (the old sessions died with the process) and republish.
        await until(lambda: publisher.rejoins == 1 and viewer.rejoins == 1, 30, "both participants to rejoin")
        assert publisher.state == viewer.state == "connected"
        await frames_advance(viewer, 15, timeout=30)
        (after,) = video_tracks(viewer, host["user"]["id"])
        assert after.track_id != before.track_id
        await until(lambda: any(r.kind == "audio" and r.frames > 50 and not r.ended for r in publisher.remote.values()),
                    20, "the viewer's republished audio at the publisher")
        metrics_now = await node.metrics()
        assert metrics_now["videoconf_sfu_participants"] == 2
        assert metrics_now["videoconf_sfu_tracks{kind=video}"] == 1
        assert metrics_now["videoconf_sfu_tracks{kind=audio}"] == 2

        # Chat works again, and nothing persisted was lost.
        await viewer.chat("after the crash")
        await publisher.wait_for("chat", lambda m: m["message"]["body"] == "after the crash", timeout=10)
        _, history, _ = await node.call("GET", chat + "?limit=50", guest["token"], expect=200)
        assert [m["body"] for m in reversed(history["items"])] == ["before the crash", "after the crash"]
        _, again, _ = await node.call("GET", f"/api/meetings/{meeting['id']}", host["token"], expect=200)
        assert again["status"] == "live"
        await node.call("POST", "/api/auth/login", body={"email": guest["email"], "password": PASSWORD}, expect=200)
        (video,) = [t for t in (await viewer.report())["tracks"] if t["kind"] == "video"]
        assert video["frames_corrupt"] == 0, video
    finally:
        await node.close()
