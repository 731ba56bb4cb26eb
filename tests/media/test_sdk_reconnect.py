"""The SDK repairs a lost signaling connection by itself when the application gives it a room-token
callback: a node that still holds the session is resumed (same tracks, media never stopped); a
session the server ended on purpose is not reconnected.  (A node that restarted, where the SDK
joins again and republishes, is tests/faults/test_node_restart.py.)"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode

from clients.sdk.media import PatternVideoTrack
from clients.sdk.participant import Participant
from tests.media.conftest import Meeting, until
from videoconf.app import SFU, SIGNALING


async def reconnecting(meeting: Meeting, account: dict[str, Any]) -> Participant:
    async def token_provider() -> str:
        return await meeting.token(account)

    client = Participant(meeting.signaling_url, await token_provider(), ice_servers=[], token_provider=token_provider)
    meeting.clients.append(client)
    await client.connect()
    return client


def verified(client: Participant) -> int:
    return sum(r.verifier.frames_verified for r in client.remote.values() if r.verifier is not None)


async def test_a_connection_the_network_drops_is_resumed_by_itself(meeting: Meeting) -> None:
    publisher = await reconnecting(meeting, meeting.host)
    (track_id,) = await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
    viewer = await reconnecting(meeting, meeting.people[0])
    await until(lambda: verified(viewer) >= 10)
    (session,) = [s for s in meeting.api.app[SIGNALING].sessions.values() if s.participant.identity == viewer.identity]
    await session.ws.close(code=WSCloseCode.GOING_AWAY, message=b"network trouble")

    await until(lambda: viewer.resumes == 1 and viewer.state == "connected", 15)
    assert viewer.rejoins == 0 and viewer.session_id == session.session_id
    frames = verified(viewer)
    await until(lambda: verified(viewer) >= frames + 15)
    assert list(viewer.remote) == [track_id]  # the same track, never interrupted
    assert (await viewer.ping("after-resume"))["type"] == "pong"


async def test_a_removed_participant_does_not_come_back(meeting: Meeting) -> None:
    host = await reconnecting(meeting, meeting.host)
    guest = await reconnecting(meeting, meeting.people[0])
    await host.send({"type": "remove-participant", "identity": guest.identity})
    await guest.wait_for("removed")
    await until(lambda: guest.state == "ended", 10)
    (room,) = meeting.api.app[SFU].rooms.values()
    await until(lambda: guest.identity not in room.participants, 10)
    assert guest.resumes == guest.rejoins == 0
