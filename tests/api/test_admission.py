"""The waiting room, removal by a host and the participant limit hold over REST as in the room:
the participants table is the one truth both read.  Signaling is driven over its WebSocket with
no media."""

from __future__ import annotations

import contextlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from aiohttp import WSMsgType

from tests.api.signaling import join, receive
from tests.conftest import Api


class Peer:
    """A signaling connection of one participant."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, message: dict) -> None:
        await self.ws.send_json(message)

    async def wait_for(self, kind: str) -> dict:
        message = await receive(self.ws, kind, "error")
        assert message["type"] == kind, message
        return message


@asynccontextmanager
async def in_room(api: Api, token: str, expect: str = "joined") -> AsyncIterator[tuple[Peer, dict]]:
    async with api.client.ws_connect("/signaling") as ws:
        peer = Peer(ws)
        entered = await join(ws, token)
        assert entered["type"] == expect, entered
        yield peer, entered
        if expect == "joined":  # leave the room now rather than after the resume window
            with contextlib.suppress(ConnectionError):
                await peer.send({"type": "leave"})
            while (await ws.receive(timeout=5)).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                pass


async def room_token(api: Api, account: dict, meeting: dict, expect: int = 200) -> dict:
    _, body = await api.call("POST", f"/api/meetings/{meeting['id']}/join", account["token"], json={}, expect=expect)
    return body


async def takes_part(api: Api, account: dict, meeting: dict) -> list[tuple[int, str | None]]:
    """What chat (post, history) and the participant list answer this account."""
    path = f"/api/meetings/{meeting['id']}"
    answers = []
    for method, suffix, body in (("POST", "/messages", {"body": "hello"}), ("GET", "/messages", None), ("GET", "/participants", None)):
        status, answer = await api.call(method, path + suffix, account["token"], json=body)
        answers.append((status, (answer.get("error") or {}).get("code")))
    return answers


REFUSED_WAITING = [(403, "waiting")] * 3
REFUSED_REMOVED = [(403, "removed")] * 3
ALLOWED = [(201, None), (200, None), (200, None)]


async def test_the_waiting_room_holds_people_over_rest_too(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    stranger = await api.register("Sam Stranger")
    meeting = await api.meeting(host["token"], settings={"waiting_room": True})
    host_token = (await room_token(api, host, meeting))["token"]
    held = await room_token(api, stranger, meeting)
    assert await takes_part(api, stranger, meeting) == REFUSED_WAITING
    assert held["waiting"] is True and held["participant"]["admission"] == "waiting"
    async with in_room(api, host_token) as (room_host, _), in_room(api, held["token"]) as (_, joined):
        assert joined["waiting"] is True
        await room_host.send({"type": "admit", "identity": stranger["user"]["id"]})
        await room_host.wait_for("participant-joined")
    assert await takes_part(api, stranger, meeting) == ALLOWED
    # Admitted once is admitted: a later join is not held again.
    assert (await room_token(api, stranger, meeting))["waiting"] is False


async def test_a_removed_person_is_refused_everywhere_until_a_host_lets_them_back_in(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"])
    host_token = (await room_token(api, host, meeting))["token"]
    guest_token, spare_token = (await room_token(api, guest, meeting))["token"], (await room_token(api, guest, meeting))["token"]
    async with in_room(api, host_token) as (room_host, _), in_room(api, guest_token) as (room_guest, _):
        await room_host.send({"type": "remove-participant", "identity": guest["user"]["id"]})
        assert (await room_guest.wait_for("removed"))["reason"] == "removed_by_host"
    assert await takes_part(api, guest, meeting) == REFUSED_REMOVED
    status, body = await api.call("POST", f"/api/meetings/{meeting['id']}/join", guest["token"], json={})
    assert (status, body["error"]["code"]) == (403, "removed")
    async with in_room(api, spare_token, expect="error") as (_, error):  # a token from before the removal
        assert error["code"] == "removed"
    # Only a host or co-host lets them back in, once.
    path = f"/api/meetings/{meeting['id']}/participants/{guest['user']['id']}/readmit"
    status, _ = await api.call("POST", path, guest["token"])
    assert status == 403
    _, back = await api.call("POST", path, host["token"], expect=200)
    assert back["admission"] == "admitted" and back["user_id"] == guest["user"]["id"]
    status, body = await api.call("POST", path, host["token"])
    assert (status, body["error"]["code"]) == (409, "not_removed")
    assert await takes_part(api, guest, meeting) == ALLOWED
    async with in_room(api, (await room_token(api, guest, meeting))["token"]) as (_, joined):
        assert joined["waiting"] is False


async def test_admit_over_signaling_lets_a_removed_person_back_in(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"])
    host_token, guest_token = (await room_token(api, host, meeting))["token"], (await room_token(api, guest, meeting))["token"]
    async with in_room(api, host_token) as (room_host, _):
        async with in_room(api, guest_token) as (room_guest, _):
            await room_host.send({"type": "remove-participant", "identity": guest["user"]["id"]})
            await room_guest.wait_for("removed")
        await room_token(api, guest, meeting, expect=403)
        await room_host.send({"type": "admit", "identity": guest["user"]["id"]})
        await room_host.send({"type": "ping", "id": "after-admit"})
        assert (await room_host.wait_for("pong"))["id"] == "after-admit"
    async with in_room(api, (await room_token(api, guest, meeting))["token"]) as (_, joined):
        assert joined["participant"]["identity"] == guest["user"]["id"]


async def test_nobody_removes_the_host(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    cohost = await api.register("Cora Cohost")
    meeting = await api.meeting(host["token"])
    await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [cohost["email"]], "role": "cohost"}, expect=200)
    host_token, cohost_token = (await room_token(api, host, meeting))["token"], (await room_token(api, cohost, meeting))["token"]
    async with in_room(api, host_token), in_room(api, cohost_token) as (room_cohost, _):
        await room_cohost.send({"type": "remove-participant", "identity": host["user"]["id"], "id": "r1"})
        error = await room_cohost.wait_for("error")
        assert (error["code"], error["id"]) == ("cannot_remove_host", "r1")
    await room_token(api, host, meeting)


async def test_max_participants_holds_at_join_and_in_the_room(api: Api) -> None:
    """The report: four people joined a meeting limited to two."""
    host = await api.register("Hedy Lamarr")
    people = [await api.register(f"Person {i}") for i in range(3)]
    meeting = await api.meeting(host["token"], settings={"max_participants": 2, "join_before_host": True})
    early_tokens = [(await room_token(api, p, meeting))["token"] for p in people]  # before the room filled
    async with in_room(api, early_tokens[0]), in_room(api, early_tokens[1]):
        status, body = await api.call("POST", f"/api/meetings/{meeting['id']}/join", people[2]["token"], json={})
        assert (status, body["error"]["code"]) == (409, "meeting_full")
        assert body["error"]["details"] == {"max_participants": 2}
        async with in_room(api, early_tokens[2], expect="error") as (_, error):
            assert error["code"] == "meeting_full"
        # The host is never locked out of their own meeting.
        async with in_room(api, (await room_token(api, host, meeting))["token"]) as (_, joined):
            assert joined["participant"]["identity"] == host["user"]["id"]
        # Someone in the room joining again replaces their own session: no seat is taken.
        await room_token(api, people[0], meeting)
    # Once people leave, there is room again.
    await room_token(api, people[2], meeting)
