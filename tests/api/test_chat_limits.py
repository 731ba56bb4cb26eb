"""Chat is rate-limited by one rule in the chat service, whichever way a message comes in (REST
or signaling): per sender in a meeting, and per meeting."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.signaling import join, receive
from tests.conftest import Api, RateLimitRule, RateLimits, limits


async def post(api: Api, account: dict, meeting: dict, body: str) -> tuple[int, Any]:
    return await api.call("POST", f"/api/meetings/{meeting['id']}/messages", account["token"], json={"body": body})


async def test_a_flood_over_rest_is_refused_at_the_default_limits(api_factory) -> None:
    """The report: 414 messages a second were accepted."""
    api = await api_factory(rate_limits=RateLimits())
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    results = await asyncio.gather(*(post(api, host, meeting, f"spam {i}") for i in range(100)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == RateLimits().chat_per_user.limit == 20
    refused = next(body for status, body in results if status == 429)
    assert refused["error"]["code"] == "rate_limited" and int(refused["error"]["details"]["retry_after"]) >= 1
    assert await api.count("messages") == 20
    api.clock.advance(1)  # two a second after the burst
    assert [(await post(api, host, meeting, "later"))[0] for _ in range(3)] == [201, 201, 429]


async def test_the_meeting_has_a_chat_budget_of_its_own(api_factory) -> None:
    api = await api_factory(rate_limits=limits(chat_per_meeting=RateLimitRule(limit=6, period=10)))
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"])
    await api.call("POST", f"/api/meetings/{meeting['id']}/join", guest["token"], json={}, expect=200)
    statuses = [(await post(api, who, meeting, "hi"))[0] for _ in range(4) for who in (host, guest)]
    assert statuses == [201] * 6 + [429, 429]
    other = await api.meeting(host["token"], title="Another meeting")
    assert (await post(api, host, other, "hi"))[0] == 201


async def test_signaling_chat_and_rest_chat_share_the_budget(api_factory) -> None:
    api = await api_factory(rate_limits=limits(chat_per_user=RateLimitRule(limit=3, period=10)))
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    _, joined = await api.call("POST", f"/api/meetings/{meeting['id']}/join", host["token"], json={}, expect=200)
    assert [(await post(api, host, meeting, "rest"))[0] for _ in range(2)] == [201, 201]
    async with api.client.ws_connect("/signaling") as ws:
        assert (await join(ws, joined["token"]))["type"] == "joined"
        await ws.send_json({"type": "chat", "text": "over signaling", "id": "c1"})
        assert (await receive(ws, "chat"))["message"]["body"] == "over signaling"
        await ws.send_json({"type": "chat", "text": "one too many", "id": "c2"})
        error = await receive(ws, "error")
        assert (error["code"], error["id"]) == ("rate_limited", "c2")
    assert (await post(api, host, meeting, "rest again"))[0] == 429
    assert await api.count("messages") == 3

