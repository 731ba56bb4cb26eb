"""The signaling WebSocket: tokens and grants, bad input, floods, meeting features, resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from clients.sdk.participant import Participant, SignalingError
from control_api.config import RateLimitRule
from signaling.protocol import PROTOCOL_VERSION, REACTIONS, server_adapter
from signaling.server import FLOOD_CLOSE_AFTER, MAX_FRAME, REACTION_RULE
from tests.conftest import Backend, limits
from tests.media.conftest import Meeting, open_meeting, until
from videoconf.app import SFU, SIGNALING


async def raw_socket(meeting: Meeting) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(meeting.signaling_url, max_msg_size=4 * 1024 * 1024)
    return http, ws


async def receive(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5) -> dict:
    while True:
        frame = await asyncio.wait_for(ws.receive(), timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        message = json.loads(frame.data)
        server_adapter.validate_python(message)  # every server message fits the schema
        if message["type"] == kind:
            return message


async def test_bad_tokens_are_refused_and_the_connection_stays_usable(meeting: Meeting) -> None:
    http, ws = await raw_socket(meeting)
    try:
        for token in ("x" * 40, meeting.api.services.ctx.access_tokens.encode({"sub": "u"}, 60)[0]):
            await ws.send_json({"type": "join", "protocol": PROTOCOL_VERSION, "token": token})
            error = await receive(ws, "error")
            assert error["code"] == "invalid_token"
        await ws.send_json({"type": "join", "protocol": 99, "token": "x" * 40})
        assert (await receive(ws, "error"))["code"] == "unsupported_version"
        await ws.send_json({"type": "chat", "text": "before joining"})
        assert (await receive(ws, "error"))["code"] == "not_joined"
        await ws.send_str("{not json")
        assert (await receive(ws, "error"))["code"] == "malformed_json"
        await ws.send_json({"type": "warp"})
        assert (await receive(ws, "error"))["code"] == "unknown_type"
        await ws.send_json({"type": "ping", "id": "still-here"})
        assert (await receive(ws, "pong"))["id"] == "still-here"
        # Now a good token on the same connection.
        await ws.send_json({"type": "join", "protocol": PROTOCOL_VERSION, "token": await meeting.token(meeting.host)})
        joined = await receive(ws, "joined")
        assert joined["participant"]["identity"] == meeting.host["user"]["id"] and joined["seq"] >= 1
        await ws.send_json({"type": "mute", "track_id": "TR_none", "muted": "yes"})
        error = await receive(ws, "error")
        assert error["code"] == "invalid_message" and error["details"][0]["field"] == "muted"
        await ws.send_json({"type": "mute", "track_id": "TR_none", "muted": True, "id": "r7"})
        error = await receive(ws, "error")
        assert (error["code"], error["id"]) == ("unknown_track", "r7")
        await ws.send_json({"type": "subscriber-answer", "sdp": "v=0"})
        assert (await receive(ws, "error"))["code"] == "unexpected_answer"
        await ws.send_json({"type": "publish", "sdp": "this is not sdp", "tracks": []})
        assert (await receive(ws, "error"))["code"] == "invalid_sdp"
        await ws.send_json({"type": "ping", "id": "after"})
        assert (await receive(ws, "pong"))["id"] == "after"
    finally:
        await ws.close()
        await http.close()


async def test_expired_token_and_ended_meeting_are_refused(meeting: Meeting) -> None:
    codec = meeting.api.services.ctx.room_tokens
    claims = {"sub": meeting.host["user"]["id"], "room": meeting.meeting["id"], "grants": {}}
    expired, _ = codec.encode({**claims, "exp": 1}, 60)
    client = Participant(meeting.signaling_url, expired, ice_servers=[])
    meeting.clients.append(client)
    with pytest.raises(SignalingError) as error:
        await client.connect()
    assert error.value.code == "invalid_token"
    token = await meeting.token(meeting.host)
    await meeting.api.call("POST", f"/api/meetings/{meeting.meeting['id']}/end", meeting.host["token"], expect=200)
    late = Participant(meeting.signaling_url, token, ice_servers=[])
    meeting.clients.append(late)
    with pytest.raises(SignalingError) as error:
        await late.connect()
    assert error.value.code == "meeting_not_live"


async def test_oversized_frames_close_with_1009_and_floods_are_limited(meeting: Meeting) -> None:
    http, ws = await raw_socket(meeting)
    try:
        await ws.send_str(json.dumps({"type": "chat", "text": "x" * (MAX_FRAME + 10)}))
        frame = await asyncio.wait_for(ws.receive(), 5)
        assert frame.type == aiohttp.WSMsgType.CLOSE and frame.data == 1009
    finally:
        await http.close()
    http, ws = await raw_socket(meeting)
    try:
        for i in range(60):
            await ws.send_json({"type": "ping", "id": str(i)})
        codes = []
        for _ in range(60):
            message = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
            codes.append(message.get("code") or message["type"])
        assert codes.count("pong") == 50 and codes.count("rate_limited") == 10
        for i in range(FLOOD_CLOSE_AFTER):
            await ws.send_json({"type": "ping", "id": str(i)})
        while True:
            frame = await asyncio.wait_for(ws.receive(), 5)
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
        assert frame.type == aiohttp.WSMsgType.CLOSE and frame.data == 1008
    finally:
        await http.close()


async def test_grants_are_enforced(meeting: Meeting) -> None:
    codec = meeting.api.services.ctx.room_tokens
    host = await meeting.participant(meeting.host)
    guest_account = meeting.people[0]
    await meeting.token(guest_account)  # records the participant
    viewer_token, _ = codec.encode({
        "sub": guest_account["user"]["id"], "name": "Viewer", "room": meeting.meeting["id"], "role": "participant",
        "grants": {"can_publish": False, "can_subscribe": True, "can_publish_data": False, "room_admin": False, "hidden": False},
    }, 600)
    viewer = Participant(meeting.signaling_url, viewer_token, ice_servers=[])
    meeting.clients.append(viewer)
    await viewer.connect()
    with pytest.raises(SignalingError) as error:
        await viewer.publish([(ToneAudioTrack(), "microphone")], timeout=5)
    assert error.value.code == "publish_not_allowed"
    await viewer.chat("hello")
    assert (await viewer.wait_for("error"))["code"] == "data_not_allowed"
    for message in ({"type": "end-meeting"}, {"type": "remove-participant", "identity": host.identity}, {"type": "mute-participant", "identity": host.identity}):
        await viewer.send(message)
        assert (await viewer.wait_for("error"))["code"] == "not_room_admin"


async def test_hidden_participants_are_not_announced(meeting: Meeting) -> None:
    watcher = await meeting.participant(meeting.people[0])
    cohost = meeting.people[1]
    await meeting.api.call(
        "POST", f"/api/meetings/{meeting.meeting['id']}/invitations", meeting.host["token"],
        json={"emails": [cohost["email"]], "role": "cohost"}, expect=200,
    )
    hidden = Participant(meeting.signaling_url, await meeting.token(cohost, hidden=True), ice_servers=[])
    meeting.clients.append(hidden)
    await hidden.connect()
    visible = await meeting.participant(meeting.people[2])
    await watcher.wait_for("participant-joined", lambda m: m["participant"]["identity"] == visible.identity)
    announced = {m["participant"]["identity"] for m in watcher.history if m["type"] == "participant-joined"}
    assert hidden.identity not in announced and visible.identity in announced
    assert hidden.identity not in [p["identity"] for p in visible.joined["participants"]]
    await hidden.close()
    await visible.close()
    await watcher.wait_for("participant-left", lambda m: m["identity"] == visible.identity)
    left = {m["identity"] for m in watcher.history if m["type"] == "participant-left"}
    assert hidden.identity not in left


async def test_chat_to_the_room_and_privately_is_stored(meeting: Meeting) -> None:
    alice = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    carol = await meeting.participant(meeting.people[1])
    await alice.chat("hello everyone")
    for client in (alice, bob, carol):
        message = await client.wait_for("chat", lambda m: m["message"]["body"] == "hello everyone")
        assert message["message"]["sender"]["identity"] == alice.identity and not message["message"]["private"]
    await bob.chat("just for you", to=alice.identity)
    private = await alice.wait_for("chat", lambda m: m["message"]["body"] == "just for you")
    assert private["message"]["private"] is True
    await bob.wait_for("chat", lambda m: m["message"]["body"] == "just for you")
    await bob.chat("to nobody", to="no-such-person")
    assert (await bob.wait_for("error"))["code"] == "unknown_participant"
    # Stored through the control API's chat service: the history shows them.
    _, history = await meeting.api.call("GET", f"/api/meetings/{meeting.meeting['id']}/messages", meeting.host["token"], expect=200)
    assert [m["body"] for m in history["items"]] == ["just for you", "hello everyone"]
    # A message posted over HTTP reaches the room too.
    await meeting.api.call("POST", f"/api/meetings/{meeting.meeting['id']}/messages", meeting.people[1]["token"], json={"body": "from a bot"}, expect=201)
    await alice.wait_for("chat", lambda m: m["message"]["body"] == "from a bot")
    # Carol gets the room's next message, and never got the private one before it.
    await carol.wait_for("chat", lambda m: m["message"]["body"] == "from a bot")
    assert "just for you" not in [m["body"] for m in carol.chat_messages]


async def test_raised_hands_mutes_and_screen_shares_reach_the_others(meeting: Meeting) -> None:
    alice = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    await bob.raise_hand(True)
    updated = await alice.wait_for("participant-updated", lambda m: m["participant"]["identity"] == bob.identity)
    assert updated["participant"]["hand_raised"] is True
    (mic,) = await bob.publish([(ToneAudioTrack(), "microphone")])
    await alice.wait_for("track-published", lambda m: m["track"]["track_id"] == mic)
    await bob.mute(mic, True)
    muted = await alice.wait_for("track-muted", lambda m: m["track_id"] == mic)
    assert muted["muted"] is True and muted["by_host"] is False
    await bob.mute(mic, False)
    assert (await alice.wait_for("track-muted", lambda m: m["track_id"] == mic and not m["muted"]))["participant"] == bob.identity
    (screen,) = await bob.publish([(PatternVideoTrack(320, 240, fps=5), "screen")])
    started = await alice.wait_for("screen-share-started")
    assert (started["participant"], started["track_id"]) == (bob.identity, screen)
    published = next(m for m in alice.history if m["type"] == "track-published" and m["track"]["track_id"] == screen)
    assert published["track"]["source"] == "screen" and published["track"]["kind"] == "video"
    await bob.unpublish(screen)
    stopped = await alice.wait_for("screen-share-stopped")
    assert stopped["track_id"] == screen
    await alice.wait_for("track-unpublished", lambda m: m["track_id"] == screen)


async def test_a_raised_hand_says_when_it_went_up_keeps_that_time_and_clears_it_when_down(meeting: Meeting) -> None:
    alice = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    assert bob.joined["participant"]["hand_raised_at"] is None
    before = time.time()
    await bob.raise_hand(True)
    raised = await alice.wait_for("participant-updated", lambda m: m["participant"]["identity"] == bob.identity)
    at = raised["participant"]["hand_raised_at"]
    assert raised["participant"]["hand_raised"] is True and before <= at <= time.time()
    await bob.raise_hand(True)  # again while up: the first time stays
    again = await alice.wait_for("participant-updated", lambda m: m["participant"]["identity"] == bob.identity)
    assert again["participant"]["hand_raised_at"] == at
    carol = await meeting.participant(meeting.people[1])  # a late joiner sees when it went up
    (seen,) = [p for p in carol.joined["participants"] if p["identity"] == bob.identity]
    assert (seen["hand_raised"], seen["hand_raised_at"]) == (True, at)
    await bob.raise_hand(False)
    lowered = await carol.wait_for("participant-updated", lambda m: m["participant"]["identity"] == bob.identity)
    assert (lowered["participant"]["hand_raised"], lowered["participant"]["hand_raised_at"]) == (False, None)
    for message in alice.history + carol.history:
        server_adapter.validate_python(message)


async def test_reactions_reach_everyone_with_the_sender_and_unknown_ones_are_refused(meeting: Meeting) -> None:
    alice = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    carol = await meeting.participant(meeting.people[1])
    await bob.react(REACTIONS[3])
    for client in (alice, bob, carol):  # the sender too
        reaction = await client.wait_for("reaction")
        assert (reaction["participant"], reaction["emoji"]) == (bob.identity, REACTIONS[3])
        server_adapter.validate_python(reaction)
    assert list(carol.reactions) == [{"participant": bob.identity, "emoji": REACTIONS[3]}]
    await alice.react(REACTIONS[0])
    assert (await bob.wait_for("reaction"))["participant"] == alice.identity
    await carol.send({"type": "reaction", "emoji": "\U0001f984"})  # not one of the six
    error = await carol.wait_for("error")
    assert error["code"] == "invalid_message" and error["details"][0]["field"] == "emoji"
    assert REACTIONS[0] in error["details"][0]["message"]  # it names the ones allowed
    # A participant who joined hidden would show itself by reacting.
    await meeting.api.call(
        "POST", f"/api/meetings/{meeting.meeting['id']}/invitations", meeting.host["token"],
        json={"emails": [meeting.people[2]["email"]], "role": "cohost"}, expect=200,
    )
    hidden = Participant(meeting.signaling_url, await meeting.token(meeting.people[2], hidden=True), ice_servers=[])
    meeting.clients.append(hidden)
    await hidden.connect()
    await hidden.send({"type": "reaction", "emoji": REACTIONS[1], "id": "h"})
    assert (await hidden.wait_for("error", lambda m: m.get("id") == "h"))["code"] == "hidden_participant"
    await alice.react(REACTIONS[2])  # the last reaction bob sees is this one: nothing came from the hidden one
    await bob.wait_for("reaction", lambda m: m["emoji"] == REACTIONS[2])
    assert [r["emoji"] for r in bob.reactions] == [REACTIONS[3], REACTIONS[0], REACTIONS[2]]


async def test_a_waiting_guest_cannot_react(meeting: Meeting) -> None:
    await meeting.api.call("PATCH", f"/api/meetings/{meeting.meeting['id']}", meeting.host["token"], json={"settings": {"waiting_room": True}}, expect=200)
    host = await meeting.participant(meeting.host)
    guest = await meeting.participant(meeting.people[0])
    assert guest.joined["waiting"] is True
    await guest.send({"type": "reaction", "emoji": REACTIONS[0], "id": "w"})
    assert (await guest.wait_for("error", lambda m: m.get("id") == "w"))["code"] == "waiting"
    await host.react(REACTIONS[1])
    await host.wait_for("reaction")
    assert not guest.reactions and not [r for r in host.reactions if r["participant"] == guest.identity]


async def test_reactions_have_a_budget_of_their_own_per_connection(meeting: Meeting) -> None:
    alice = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    burst = REACTION_RULE.limit
    assert (burst, burst / REACTION_RULE.period) == (5, 2.0)  # a burst of 5, then 2 a second
    for i in range(burst + 3):
        await bob.send({"type": "reaction", "emoji": REACTIONS[0], "id": f"r{i}"})
    await bob.ping("after-burst")
    refused = [m["id"] for m in bob.history if m["type"] == "error" and m["code"] == "rate_limited"]
    assert refused == [f"r{i}" for i in range(burst, burst + 3)]
    # Other messages are not held up, and the budget comes back at 2 a second: the next
    # reaction, a little later, goes through and is the sixth alice gets.
    await bob.chat("still talking")
    await alice.wait_for("chat", lambda m: m["message"]["body"] == "still talking")
    await asyncio.sleep(REACTION_RULE.period / REACTION_RULE.limit + 0.1)
    await bob.send({"type": "reaction", "emoji": REACTIONS[5], "id": "later"})
    await alice.wait_for("reaction", lambda m: m["emoji"] == REACTIONS[5])
    assert [r["emoji"] for r in alice.reactions] == [REACTIONS[0]] * burst + [REACTIONS[5]]
    assert not [m for m in bob.history if m["type"] == "error" and m.get("id") == "later"]


async def test_a_batch_of_track_settings_turns_several_tracks_off_in_one_message(meeting: Meeting) -> None:
    publishers = [await meeting.participant(account, video_codec="VP8") for account in (meeting.host, *meeting.people[:3])]
    tracks = [(await p.publish([(PatternVideoTrack(160, 120, fps=5), "camera")]))[0] for p in publishers]
    viewer = await meeting.participant(meeting.people[3])

    def forwarding(track_id: str) -> dict | None:
        remote = viewer.remote.get(track_id)
        return remote.forwarding if remote is not None else None

    await until(lambda: all((forwarding(t) or {}).get("forwarding") for t in tracks), 20, "every track forwarded")
    off, kept = tracks[:3], tracks[3]
    since = len(viewer.history)
    await viewer.send({"type": "track-settings", "id": "page-2", "tracks": [  # one message for three tiles
        {"track_id": off[0], "quality": "off"}, {"track_id": "TR_gone", "quality": "off"},
        {"track_id": off[1], "quality": "off"}, {"track_id": off[2], "quality": "off"},
    ]})
    # The track that is not there is refused, by id, and the others are applied all the same.
    error = await viewer.wait_for("error", lambda m: m.get("id") == "page-2", since=since)
    assert error["code"] == "unknown_track" and error["details"] == [{"track_id": "TR_gone"}]
    for track_id in off:
        message = await viewer.wait_for("track-forwarding", lambda m, t=track_id: m["track_id"] == t, since=since)
        assert (message["forwarding"], message["reason"], message["layer"]) == (False, "requested", None)
    await viewer.ping("settled")
    assert forwarding(kept)["forwarding"] is True
    assert not [m for m in viewer.history[since:] if m["type"] == "track-forwarding" and m["track_id"] == kept]
    node = meeting.api.app[SFU]
    (room,) = node.rooms.values()
    downtracks = room.participants[viewer.identity].downtracks
    assert [downtracks[t].target is None for t in tracks] == [True, True, True, False]
    # One entry back on, by the batch method of the SDK; the single form still works.
    since = len(viewer.history)
    await viewer.track_settings_many([{"track_id": off[0], "quality": "high", "width": None}])
    on = await viewer.wait_for("track-forwarding", lambda m: m["track_id"] == off[0], since=since)
    assert on["forwarding"] is True
    await viewer.track_settings(kept, quality="off")
    assert (await viewer.wait_for("track-forwarding", lambda m: m["track_id"] == kept, since=since))["forwarding"] is False
    await viewer.send({"type": "track-settings", "track_id": "TR_gone", "quality": "off", "id": "one"})
    error = await viewer.wait_for("error", lambda m: m.get("id") == "one", since=since)
    assert (error["code"], error["details"]) == ("unknown_track", None)
    await viewer.send({"type": "track-settings", "track_id": kept, "tracks": [{"track_id": kept}]})
    error = await viewer.wait_for("error", lambda m: m["code"] != "unknown_track", since=since)
    assert error["code"] == "invalid_message" and "exactly one of track_id" in error["details"][0]["message"]


async def test_the_host_mutes_removes_for_good_and_ends_the_meeting_for_everyone(meeting: Meeting) -> None:
    host = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    carol = await meeting.participant(meeting.people[1])
    (mic,) = await bob.publish([(ToneAudioTrack(), "microphone")])
    await until(lambda: [r for r in host.remote.values() if r.track is not None], timeout=15)
    await host.send({"type": "mute-participant", "identity": bob.identity, "kind": "audio"})
    notice = await bob.wait_for("muted-by-host")
    assert notice["track_id"] == mic
    state = await carol.wait_for("track-muted", lambda m: m["track_id"] == mic)
    assert state["muted"] is True and state["by_host"] is True
    node = meeting.api.app[SFU]
    (room,) = node.rooms.values()
    up = room.participants[bob.identity].uptracks[mic]
    forwarded, received = sum(d.packets for d in up.downtracks), up.packets
    await until(lambda: up.packets >= received + 25, 5, "half a second more of bob's audio at the SFU")
    assert sum(d.packets for d in up.downtracks) == forwarded  # nothing forwarded while muted by the host
    await bob.mute(mic, False)
    await until(lambda: sum(d.packets for d in up.downtracks) > forwarded, timeout=5)
    # Remove carol: she is told, everyone else sees her leave, she cannot come back: no new room
    # token, and the room refuses one she got before.
    early_token = await meeting.token(meeting.people[1])
    await host.send({"type": "remove-participant", "identity": carol.identity})
    removed = await carol.wait_for("removed")
    assert removed["reason"] == "removed_by_host"
    assert (await bob.wait_for("participant-left", lambda m: m["identity"] == carol.identity))["reason"] == "removed_by_host"
    status, body = await meeting.api.call(
        "POST", f"/api/meetings/{meeting.meeting['id']}/join", meeting.people[1]["token"], json={}
    )
    assert (status, body["error"]["code"]) == (403, "removed")
    again = Participant(meeting.signaling_url, early_token, ice_servers=[])
    meeting.clients.append(again)
    with pytest.raises(SignalingError) as error:
        await again.connect()
    assert error.value.code == "removed"
    # End the meeting for everyone.
    await host.send({"type": "end-meeting"})
    await bob.wait_for("meeting-ended")
    _, ended = await meeting.api.call("GET", f"/api/meetings/{meeting.meeting['id']}", meeting.host["token"], expect=200)
    assert ended["status"] == "ended"
    await until(lambda: not node.rooms, timeout=5)


def waiting_for(meeting: Meeting, identity: str, text: str) -> bool:
    """Whether the server's session of ``identity`` holds a message with ``text`` to replay."""
    sessions = meeting.api.app[SIGNALING].sessions.values()
    return any(
        text in message for s in sessions if s.participant and s.participant.identity == identity for _, message in s.buffer
    )


async def test_resume_within_the_window_and_removal_after_it(meeting: Meeting) -> None:
    alice = await meeting.participant(meeting.host)
    bob = await meeting.participant(meeting.people[0])
    await bob.drop_connection()
    await alice.chat("while bob was away")
    await until(lambda: waiting_for(meeting, bob.identity, "while bob was away"), 5, "the chat in bob's session")
    resumed = await bob.resume()
    assert resumed["replayed"] >= 1
    await until(lambda: bob.chat_messages, timeout=5)
    assert "while bob was away" in [m["body"] for m in bob.chat_messages]
    node = meeting.api.app[SFU]
    (room,) = node.rooms.values()
    assert bob.identity in room.participants
    # Past the window (3 s in these tests) the participant is gone.
    await bob.drop_connection()
    left = await alice.wait_for("participant-left", lambda m: m["identity"] == bob.identity, timeout=10)
    assert left["reason"] == "disconnected"
    with pytest.raises(SignalingError) as error:
        await bob.resume()
    assert error.value.code == "resume_failed"


async def test_a_waiting_guest_cannot_publish_until_the_host_admits_them(meeting: Meeting) -> None:
    await meeting.api.call("PATCH", f"/api/meetings/{meeting.meeting['id']}", meeting.host["token"], json={"settings": {"waiting_room": True}}, expect=200)
    host = await meeting.participant(meeting.host)
    guest = await meeting.participant(meeting.people[0])
    assert guest.joined["waiting"] is True and guest.joined["participants"] == []
    waiting = await host.wait_for("participant-waiting")
    assert waiting["participant"]["identity"] == guest.identity
    with pytest.raises(SignalingError) as error:
        await guest.publish([(ToneAudioTrack(), "microphone")], timeout=5)
    assert error.value.code == "waiting"
    await host.send({"type": "admit", "identity": guest.identity})
    await guest.wait_for("admitted")
    rejoined = await guest.wait_for("joined")
    assert rejoined["waiting"] is False and host.identity in [p["identity"] for p in rejoined["participants"]]
    await host.wait_for("participant-joined", lambda m: m["participant"]["identity"] == guest.identity)


async def test_leave_and_rejoin_receives_media_again(meeting: Meeting) -> None:
    publisher = await meeting.participant(meeting.host, video_codec="VP8")
    await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
    viewer = await meeting.participant(meeting.people[0])
    await until(lambda: any(r.verifier and r.verifier.frames_verified >= 15 for r in viewer.remote.values()), timeout=20)
    await viewer.close()
    await publisher.wait_for("participant-left", lambda m: m["identity"] == viewer.identity)
    again = await meeting.participant(meeting.people[0])
    assert [t["participant"] for t in again.joined["tracks"]] == [publisher.identity]
    await until(lambda: any(r.verifier and r.verifier.frames_verified >= 15 for r in again.remote.values()), timeout=20)
    report = next(r for r in again.remote.values() if r.verifier).verifier.report()
    assert report["frames_corrupt"] == 0
    assert str(uuid.UUID(again.identity)) == meeting.people[0]["user"]["id"]


async def closing_reason(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> str:
    """Read until the server closes the connection; its reason."""
    while True:
        frame = await asyncio.wait_for(ws.receive(), timeout)
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return str(frame.extra or "")


@contextlib.asynccontextmanager
async def joined_peer(meeting: Meeting, account: dict) -> AsyncIterator[tuple[aiohttp.ClientWebSocketResponse, Any, str]]:
    """A raw signaling connection joined as ``account``, an aiortc peer connection for it, and
    its identity."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    http, ws = await raw_socket(meeting)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await ws.send_json({"type": "join", "protocol": PROTOCOL_VERSION, "token": await meeting.token(account)})
        joined = await receive(ws, "joined")
        yield ws, pc, joined["participant"]["identity"]
    finally:
        await pc.close()
        await ws.close()
        await http.close()


async def test_a_publish_offer_without_a_codec_in_common_is_refused_and_ends_the_connection(meeting: Meeting) -> None:
    """Only H.264 High profile, which aiortc does not do: aiortc's OperationError reaches the
    client as an error answering its request, and the participant is removed."""
    from aiortc import RTCRtpSender

    observer = await meeting.participant(meeting.host)
    async with joined_peer(meeting, meeting.people[0]) as (ws, pc, identity):
        transceiver = pc.addTransceiver(PatternVideoTrack(320, 240), direction="sendonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "H264"][:1])
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp.replace("profile-level-id=42001f", "profile-level-id=640028")
        await ws.send_json({"type": "publish", "id": "p1", "sdp": offer, "tracks": []})
        error = await receive(ws, "error")
        assert (error["code"], error["id"]) == ("codec_unsupported", "p1"), error
        assert await closing_reason(ws) == "negotiation_failed"
    left = await observer.wait_for("participant-left", lambda m: m["identity"] == identity)
    assert left["reason"] == "negotiation_failed"


async def test_a_subscriber_answer_without_a_codec_in_common_is_refused_and_ends_the_connection(meeting: Meeting) -> None:
    """An answer taking H.264 in packetization mode 0, which the SFU did not offer: the client
    is told, and removed, instead of waiting for media that never comes."""
    from aiortc import RTCSessionDescription

    publisher = await meeting.participant(meeting.host, video_codec="H264")
    await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
    async with joined_peer(meeting, meeting.people[0]) as (ws, pc, identity):
        offer = await receive(ws, "subscriber-offer")
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp.replace("packetization-mode=1", "packetization-mode=0")
        await ws.send_json({"type": "subscriber-answer", "sdp": answer})
        error = await receive(ws, "error")
        assert error["code"] == "codec_unsupported", error
        assert await closing_reason(ws) == "negotiation_failed"
    left = await publisher.wait_for("participant-left", lambda m: m["identity"] == identity)
    assert left["reason"] == "negotiation_failed"


async def test_reactions_have_a_budget_per_meeting(sqlite_backend: Backend, tmp_path: Path) -> None:
    """Every reaction fans out to everyone: past the meeting's budget, whoever sends is refused."""
    rule = RateLimitRule(limit=3, period=60)
    async with open_meeting(sqlite_backend, tmp_path, rate_limits=limits(reactions_per_meeting=rule)) as meeting:
        alice = await meeting.participant(meeting.host)
        bob = await meeting.participant(meeting.people[0])
        for i, client in enumerate((alice, bob, alice, bob)):
            await client.send({"type": "reaction", "emoji": REACTIONS[0], "id": f"m{i}"})
            await client.ping(f"after-{i}")
        refused = [m for m in bob.history if m["type"] == "error" and m.get("id") == "m3"]
        assert refused and refused[0]["code"] == "rate_limited", bob.history[-3:]
        await until(lambda: len(alice.reactions) == 3, 5, "the three reactions within the budget")
        await bob.ping("settled")
        assert len(alice.reactions) == 3

