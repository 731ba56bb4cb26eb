"""Notifications: created on invitation and meeting start, listed, marked read, streamed."""

from __future__ import annotations

import asyncio
import json

from control_api.services.notifications import user_channel
from tests.conftest import Api, subscribed


async def test_meeting_start_and_cancel_notify_the_invited(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ina = await api.register("Ina Invitee")
    started = await api.scheduled(host["token"], title="Starts")
    cancelled = await api.scheduled(host["token"], title="Cancelled")
    for meeting in (started, cancelled):
        await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [ina["email"]]}, expect=200)
    api.clock.advance(1)
    await api.call("POST", f"/api/meetings/{started['id']}/start", host["token"], expect=200)
    api.clock.advance(1)
    await api.call("POST", f"/api/meetings/{cancelled['id']}/cancel", host["token"], expect=200)
    _, page = await api.call("GET", "/api/notifications", ina["token"], expect=200)
    assert [(n["kind"], n["data"]["title"]) for n in page["items"]][:2] == [
        ("meeting_cancelled", "Cancelled"), ("meeting_started", "Starts")
    ]
    assert page["unread_count"] == 4
    _, host_page = await api.call("GET", "/api/notifications", host["token"], expect=200)
    assert host_page["items"] == []  # the host started it: nobody tells them


async def test_mark_read_one_and_all_with_pagination(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ina = await api.register("Ina Invitee")
    for i in range(3):
        meeting = await api.scheduled(host["token"], title=f"M{i}")
        api.clock.advance(1)
        await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [ina["email"]]}, expect=200)
    _, first = await api.call("GET", "/api/notifications?limit=2", ina["token"], expect=200)
    assert [n["data"]["title"] for n in first["items"]] == ["M2", "M1"] and first["next_cursor"]
    _, second = await api.call("GET", f"/api/notifications?limit=2&cursor={first['next_cursor']}", ina["token"], expect=200)
    assert [n["data"]["title"] for n in second["items"]] == ["M0"] and second["next_cursor"] is None
    target = first["items"][0]["id"]
    _, read = await api.call("POST", f"/api/notifications/{target}/read", ina["token"], expect=200)
    assert read["read_at"] is not None
    await api.call("POST", f"/api/notifications/{target}/read", host["token"], expect=404)
    _, unread = await api.call("GET", "/api/notifications?unread_only=true", ina["token"], expect=200)
    assert unread["unread_count"] == 2 and len(unread["items"]) == 2
    _, done = await api.call("POST", "/api/notifications/read-all", ina["token"], expect=200)
    assert done == {"updated": 2}
    _, after = await api.call("GET", "/api/notifications?unread_only=true", ina["token"], expect=200)
    assert after["items"] == [] and after["unread_count"] == 0


async def test_notification_stream_delivers_new_notifications(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ina = await api.register("Ina Invitee")
    meeting = await api.scheduled(host["token"], title="Streamed")
    async with api.client.get("/api/notifications/stream", headers={"Authorization": f"Bearer {ina['token']}"}) as stream:
        assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
        assert await stream.content.readline() == b": connected\n"
        await subscribed(api.services.ctx.bus, user_channel(ina["user"]["id"]))
        await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [ina["email"]]}, expect=200)
        lines = []
        while len(lines) < 3:
            line = (await asyncio.wait_for(stream.content.readline(), 5)).decode().rstrip("\n")
            if line and not line.startswith(":"):
                lines.append(line)
            elif lines:
                break
    assert lines[0] == "event: notification"
    data = json.loads(lines[1].removeprefix("data: "))
    assert data["kind"] == "invited" and data["data"]["title"] == "Streamed"
    await api.call("GET", "/api/notifications/stream", expect=401)
