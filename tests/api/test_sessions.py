"""Sessions that outlive their revocation: a notification stream ends when its login signs out,
when the password changes and when its access token expires; a room token enters the room once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientResponse

from tests.api.signaling import join
from tests.conftest import Api


async def next_event(stream: ClientResponse) -> tuple[str, Any]:
    """The next server-sent event (comments skipped); ("eof", None) when the stream ends."""
    kind, data = "message", None
    async with asyncio.timeout(5):
        while True:
            line = (await stream.content.readline()).decode()
            if not line:
                return "eof", None
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "\n" and data is not None:
                return kind, data


def stream_of(api: Api, token: str) -> Any:
    return api.client.get("/api/notifications/stream", headers={"Authorization": f"Bearer {token}"})


async def invite(api: Api, host: dict, invitee: dict) -> None:
    meeting = await api.meeting(host["token"], title="Another meeting")
    await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [invitee["email"]]}, expect=200)


async def test_signing_out_ends_that_logins_stream_only(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ina = await api.register("Ina Invitee")
    _, laptop = await api.call("POST", "/api/auth/login", json={"email": ina["email"], "password": "correct horse battery"}, expect=200)
    async with stream_of(api, ina["token"]) as phone_stream, stream_of(api, laptop["access_token"]) as laptop_stream:
        assert await phone_stream.content.readline() == b": connected\n"
        assert await laptop_stream.content.readline() == b": connected\n"
        await api.call("POST", "/api/auth/logout", json={"refresh_token": ina["refresh_token"]}, expect=204)
        assert await next_event(phone_stream) == ("session-ended", {"reason": "signed_out"})
        assert await next_event(phone_stream) == ("eof", None)
        await invite(api, host, ina)
        kind, data = await next_event(laptop_stream)
        assert kind == "notification" and data["kind"] == "invited"
    # The signed-out login's access token, though not expired yet, opens no new stream.
    async with stream_of(api, ina["token"]) as again:
        assert again.status == 401


async def test_a_password_change_ends_every_earlier_stream(api: Api) -> None:
    ina = await api.register("Ina Invitee")
    _, laptop = await api.call("POST", "/api/auth/login", json={"email": ina["email"], "password": "correct horse battery"}, expect=200)
    async with stream_of(api, ina["token"]) as phone_stream, stream_of(api, laptop["access_token"]) as laptop_stream:
        await phone_stream.content.readline()
        await laptop_stream.content.readline()
        _, fresh = await api.call(
            "POST", "/api/users/me/password", ina["token"],
            json={"current_password": "correct horse battery", "new_password": "a brand new passphrase"}, expect=200,
        )
        for stream in (phone_stream, laptop_stream):
            assert await next_event(stream) == ("session-ended", {"reason": "password_changed"})
    async with stream_of(api, fresh["access_token"]) as stream:
        assert stream.status == 200 and await stream.content.readline() == b": connected\n"


async def test_a_stream_ends_when_its_access_token_expires(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ina = await api.register("Ina Invitee")
    async with stream_of(api, ina["token"]) as stream:
        await stream.content.readline()
        api.clock.advance(api.services.ctx.settings.access_token_ttl + 1)
        host["token"] = await api.login(host["email"])
        await invite(api, host, ina)  # wakes the stream up; its token has expired meanwhile
        assert await next_event(stream) == ("session-ended", {"reason": "expired"})


async def room_entry(api: Api, token: str) -> dict:
    async with api.client.ws_connect("/signaling") as ws:
        message = await join(ws, token)
        if message["type"] == "joined":
            await ws.send_json({"type": "leave"})
        return message


async def test_a_room_token_enters_the_room_once(api: Api, api_factory) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    path = f"/api/meetings/{meeting['id']}/join"
    _, joined = await api.call("POST", path, host["token"], json={}, expect=200)
    assert (await room_entry(api, joined["token"]))["type"] == "joined"
    replay = await room_entry(api, joined["token"])
    assert (replay["type"], replay["code"]) == ("error", "invalid_token") and "used already" in replay["message"]
    _, fresh = await api.call("POST", path, host["token"], json={}, expect=200)
    assert (await room_entry(api, fresh["token"]))["type"] == "joined"
    if api.backend.name == "postgres":  # another node sharing Redis refuses the replay as well
        other = await api_factory(redis_prefix=api.services.ctx.settings.redis_prefix)
        assert (await room_entry(other, fresh["token"]))["code"] == "invalid_token"
