"""The server API in a cluster: a call that lands on node B acts on a participant connected to
node A (two ``videoconf run`` processes, each taking one participant), and both nodes list the
whole room."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from clients.loadtest.polling import until
from clients.sdk.media import ToneAudioTrack
from clients.sdk.participant import Participant
from clients.sdk.server import ServerClient
from tests.cluster.test_cascade import cluster, join_meeting


async def test_a_call_to_one_node_acts_on_a_participant_of_another(tmp_path: Path) -> None:
    async with cluster(tmp_path, count=2, limit=1) as nodes:
        a, b = nodes
        made = await asyncio.to_thread(
            a.server.cli, "keys", "create", "--name", "cluster", "--scope", "rooms:read", "--scope", "rooms:admin",
            "--scope", "tokens:create", "--scope", "recordings",
        )
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        host_account = await a.register("Hedy Host")
        meeting = await a.meeting(host_account)
        host, host_node = await join_meeting(a, host_account, meeting)
        guest, guest_node = await join_meeting(b, await b.register("Gus Guest"), meeting)
        assert (host_node, guest_node) == ("node-a", "node-b")
        (mic,) = await host.publish([(ToneAudioTrack(), "microphone")])

        async with ServerClient(b.base, key["id"], key["secret"]) as server_b, ServerClient(a.base, key["id"], key["secret"]) as server_a:
            for server in (server_a, server_b):  # either node lists the whole room
                await until(lambda server=server: _whole_room(server, meeting["id"]), 10, "both nodes' participants")
            person = await until(lambda: _with_tracks(server_b, meeting["id"], host.identity), 10, "the host's track")
            assert person["node"] == "node-a" and [t["track_id"] for t in person["tracks"]] == [mic]

            # Through node B: mute, metadata, grants, a message to one participant, on node A.
            await server_b.mute_track(meeting["id"], host.identity, mic, True)
            assert (await host.wait_for("muted-by-host", timeout=5))["track_id"] == mic
            await guest.wait_for("track-muted", lambda m: m["track_id"] == mic and m["muted"], timeout=5)
            await server_b.update_participant(meeting["id"], host.identity, metadata="from B", grants={"can_publish": False})
            assert (await host.wait_for("grants-updated", timeout=5))["grants"]["can_publish"] is False
            for client in (host, guest):  # the guest on node B hears of it through the cascade
                await client.wait_for(
                    "participant-updated", lambda m: m["participant"]["metadata"] == "from B", timeout=5
                )
            await guest.wait_for("track-unpublished", lambda m: m["track_id"] == mic, timeout=5)
            await server_b.send_message(meeting["id"], {"hi": "A"}, identity=host.identity)
            assert (await host.wait_for("data", timeout=5))["payload"] == {"hi": "A"}

            # Node B removes the host from node A; a token minted on node B then joins an
            # identity of the caller's own where the API names.
            await server_b.remove_participant(meeting["id"], host.identity)
            assert (await host.wait_for("removed", timeout=5))["reason"] == "removed_by_server"
            await guest.wait_for("participant-left", lambda m: m["identity"] == host.identity, timeout=10)
            # Node A, where nobody is now, has node B record the meeting and stop.
            await until(lambda: _identities(server_a, meeting["id"], {guest.identity}), 10, "the host gone")
            recording = await server_a.start_recording(meeting["id"])
            assert recording["status"] == "recording"
            assert (await guest.wait_for("recording-started", timeout=10))["recording_id"] == recording["id"]
            await until(lambda: _recorded(server_a, meeting["id"]), 10, "node B to report its recording")
            stopped = await server_a.stop_recording(meeting["id"])
            assert stopped["id"] == recording["id"] and stopped["status"] != "recording"
            minted = await server_b.create_token(meeting["id"], "kiosk-1", name="Kiosk")
            kiosk = Participant(minted["signaling_url"], minted["token"], ice_servers=[])
            b.participants.append(kiosk)
            await kiosk.connect()
            await until(lambda: _identities(server_a, meeting["id"], {guest.identity, "kiosk-1"}), 10, "the host gone")


async def _whole_room(server: ServerClient, meeting_id: str) -> bool:
    rooms = (await server.list_rooms())["items"]
    return bool(rooms) and rooms[0]["nodes"] == ["node-a", "node-b"] and rooms[0]["num_participants"] == 2


async def _identities(server: ServerClient, meeting_id: str, expected: set[str]) -> bool:
    return {p["identity"] for p in (await server.list_participants(meeting_id))["items"]} == expected


async def _with_tracks(server: ServerClient, meeting_id: str, identity: str) -> dict | None:
    """The participant once its node reports a track of it (nodes report about every second)."""
    person = await server.get_participant(meeting_id, identity)
    return person if person["tracks"] else None


async def _recorded(server: ServerClient, meeting_id: str) -> bool:
    return (await server.get_room(meeting_id))["recording"] is not None
