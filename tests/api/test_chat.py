"""Chat history and posting: membership, privacy, pagination, live publication."""

from __future__ import annotations

import asyncio

from control_api.services.meetings import meeting_channel
from tests.conftest import Api, subscribed


async def test_chat_history_pages_newest_first_and_hides_others_private_messages(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    third = await api.register("Tia Third")
    meeting = await api.meeting(host["token"])
    path = f"/api/meetings/{meeting['id']}"
    for who in (guest, third):
        await api.call("POST", path + "/join", who["token"], json={}, expect=200)
    for i in range(5):
        await api.call("POST", path + "/messages", host["token"], json={"body": f"public {i}"}, expect=201)
    _, private = await api.call(
        "POST", path + "/messages", guest["token"], json={"body": "psst", "recipient_id": host["user"]["id"]}, expect=201
    )
    assert private["private"] is True and private["sender"]["display_name"] == "Guy Guest"

    _, page = await api.call("GET", path + "/messages?limit=2", host["token"], expect=200)
    assert [m["body"] for m in page["items"]] == ["psst", "public 4"]
    bodies = [m["body"] for m in page["items"]]
    while page["next_cursor"]:
        _, page = await api.call("GET", f"{path}/messages?limit=2&before={page['next_cursor']}", host["token"], expect=200)
        bodies += [m["body"] for m in page["items"]]
    assert bodies == ["psst", "public 4", "public 3", "public 2", "public 1", "public 0"]
    _, seen_by_third = await api.call("GET", path + "/messages", third["token"], expect=200)
    assert "psst" not in [m["body"] for m in seen_by_third["items"]] and len(seen_by_third["items"]) == 5
    _, seen_by_guest = await api.call("GET", path + "/messages", guest["token"], expect=200)
    assert seen_by_guest["items"][0]["body"] == "psst"


async def test_chat_is_for_members_of_live_meetings(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    stranger = await api.register("Sam Stranger")
    meeting = await api.meeting(host["token"])
    path = f"/api/meetings/{meeting['id']}/messages"
    await api.call("POST", path, stranger["token"], json={"body": "hi"}, expect=404)
    await api.call("GET", path, stranger["token"], expect=404)
    status, body = await api.call("POST", path, host["token"], json={"body": "hi", "recipient_id": stranger["user"]["id"]})
    assert (status, body["error"]["code"]) == (422, "invalid_recipient")
    status, body = await api.call("POST", path, host["token"], json={"body": "hi", "recipient_id": host["user"]["id"]})
    assert (status, body["error"]["code"]) == (422, "invalid_recipient")
    for bad in ({"body": ""}, {"body": "   "}, {"body": "x" * 4001}, {"body": 5}, {"text": "hi"}):
        status, _ = await api.call("POST", path, host["token"], json=bad)
        assert status == 422, bad
    await api.call("POST", f"/api/meetings/{meeting['id']}/end", host["token"], expect=200)
    status, body = await api.call("POST", path, host["token"], json={"body": "after the end"})
    assert (status, body["error"]["code"]) == (409, "meeting_not_live")
    assert await api.count("messages") == 0
    await api.call("GET", path + "?before=!!", host["token"], expect=422)


async def test_posted_messages_are_published_on_the_meeting_channel(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    async with api.services.ctx.bus.subscribe(meeting_channel(meeting["id"])) as subscription:
        await subscribed(api.services.ctx.bus, meeting_channel(meeting["id"]))
        _, sent = await api.call("POST", f"/api/meetings/{meeting['id']}/messages", host["token"], json={"body": "hello all"}, expect=201)
        event = await asyncio.wait_for(subscription.get(), 5)
    assert event == {"type": "chat.message", "message": sent}
