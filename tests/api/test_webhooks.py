"""Webhooks through the server API, delivered by the node's worker to a real receiver on
loopback (allowed by the test's configuration), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from clients.loadtest.polling import until
from clients.sdk.webhooks import verify
from tests.api.server_keys import create_key, server_headers
from tests.conftest import Api
from tests.webhook_receiver import Names, Receiver

FAST = {"poll_interval": 0.02, "retry_delays": [2], "jitter": 0, "allowed_networks": ["127.0.0.0/8"]}


class Server:
    """Calls of the server API with a key of the ``webhooks`` scope."""

    def __init__(self, api: Api, key: tuple[str, str]) -> None:
        self.api, self.key = api, key

    async def call(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = server_headers(*self.key, data, now=self.api.clock().timestamp())
        if data is not None:
            headers["Content-Type"] = "application/json"
        return await self.api.call(method, path, headers=headers, data=data, expect=expect)

    async def create(self, **fields: Any) -> dict[str, Any]:
        _, endpoint = await self.call("POST", "/api/server/webhooks", fields, expect=201)
        return endpoint

    async def deliveries(self, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
        _, page = await self.call("GET", f"/api/server/webhooks/{endpoint['id']}/deliveries", expect=200)
        return page["items"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    instance = await Receiver().start()
    yield instance
    await instance.close()


async def open_server(api_factory: Any, **webhooks: Any) -> tuple[Api, Server, Names]:
    api = await api_factory(webhooks={**FAST, **webhooks})
    names = Names(**{"hooks.test": ["127.0.0.1"]})
    api.services.webhooks.guard.resolve = names
    return api, Server(api, await create_key(api, ["webhooks"])), names


async def test_endpoints_are_managed_with_a_key_of_the_webhooks_scope(api_factory, receiver: Receiver) -> None:
    api, server, _ = await open_server(api_factory)
    created = await server.create(url=receiver.url("hooks.test"), events=["meeting.started"], notify_email="ops@example.com")
    assert created["secret"].startswith("whsec_") and created["enabled"] and not created["ordered"]
    _, listed = await server.call("GET", "/api/server/webhooks", expect=200)
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    assert "secret" not in listed["items"][0]  # shown once
    path = f"/api/server/webhooks/{created['id']}"
    _, changed = await server.call("PATCH", path, {"ordered": True, "events": [], "enabled": False}, expect=200)
    assert changed["ordered"] and changed["events"] == [] and not changed["enabled"]
    _, one = await server.call("GET", path, expect=200)
    assert one == changed
    # without a key, with a key of another scope, and unknown event types
    status, body = await api.call("GET", "/api/server/webhooks")
    assert status == 401, body
    other = Server(api, await create_key(api, ["recordings"]))
    status, body = await other.call("GET", "/api/server/webhooks")
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    status, body = await server.call("POST", "/api/server/webhooks", {"url": receiver.url(), "events": ["meeting.exploded"]})
    assert status == 422, body
    await server.call("DELETE", path, expect=204)
    await server.call("GET", path, expect=404)


async def test_a_url_resolving_to_a_denied_address_is_refused_at_creation_and_again_at_delivery(
    api_factory, receiver: Receiver
) -> None:
    api, server, names = await open_server(api_factory)
    names.names["metadata.test"] = ["169.254.169.254"]
    names.names["split.test"] = ["127.0.0.1", "10.0.0.8"]
    for url in ("http://metadata.test/hooks", "http://split.test/hooks", "http://169.254.169.254/latest/meta-data"):
        status, body = await server.call("POST", "/api/server/webhooks", {"url": url})
        assert (status, body["error"]["code"]) == (422, "unsafe_url"), body
    endpoint = await server.create(url=receiver.url("hooks.test"))
    names.names["hooks.test"] = ["10.0.0.8"]  # the name now points into the private network
    user = await api.register()
    await api.meeting(user["token"])  # an instant meeting starts: meeting.started

    async def refused() -> Any:
        items = await server.deliveries(endpoint)
        return items and items[0]["attempts"] >= 1 and items[0]

    delivery = await until(refused, 10, "the delivery to be attempted", interval=0.05)
    assert "10.0.0.8" in delivery["last_error"] and "private" in delivery["last_error"]
    assert delivery["status"] == "pending" and delivery["last_status_code"] is None
    assert receiver.received == []
    names.names["hooks.test"] = ["127.0.0.1"]  # and back: the retry goes through
    api.clock.advance(3)
    await until(lambda: receiver.received, 10, "the retry", interval=0.05)


async def test_a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt_in_meeting_order(
    api_factory, receiver: Receiver
) -> None:
    api, server, _ = await open_server(api_factory)
    endpoint = await server.create(url=receiver.url("hooks.test"), ordered=True)
    receiver.answers = [500, 500, 500]
    user = await api.register()
    meeting = await api.meeting(user["token"])
    await api.call("POST", f"/api/meetings/{meeting['id']}/end", user["token"], expect=200)

    async def delivered() -> bool:
        api.clock.advance(2.5)  # past each retry's delay (2 s, no jitter)
        return len(receiver.received) >= 5

    await until(delivered, 15, lambda: f"five posts, got {receiver.types()}", interval=0.05)
    # meeting.ended waited for meeting.started of the same meeting (an ordered endpoint)
    assert receiver.types() == ["meeting.started"] * 4 + ["meeting.ended"]
    events = receiver.events(endpoint["secret"])
    assert len({item.webhook_id for item in receiver.received[:4]}) == 1  # one id: receivers drop duplicates
    assert events[0]["data"]["meeting"]["id"] == meeting["id"] and events[4]["data"]["meeting"]["status"] == "ended"
    log = await until(lambda: _settled(server, endpoint), 10, "the log to settle", interval=0.05)
    assert [(d["event_type"], d["status"], d["attempts"], d["last_status_code"]) for d in log] == [
        ("meeting.ended", "succeeded", 1, 200),
        ("meeting.started", "succeeded", 4, 200),
    ]


async def _settled(server: Server, endpoint: dict[str, Any]) -> list[dict[str, Any]] | None:
    items = await server.deliveries(endpoint)
    return items if items and all(d["status"] != "pending" for d in items) else None


async def test_a_redelivery_sends_the_same_event_with_the_same_id(api_factory, receiver: Receiver) -> None:
    api, server, _ = await open_server(api_factory)
    endpoint = await server.create(url=receiver.url("hooks.test"))
    user = await api.register()
    await api.meeting(user["token"])
    await until(lambda: receiver.received, 10, "the first delivery", interval=0.05)
    (first,) = await until(lambda: _settled(server, endpoint), 10, "the log to settle", interval=0.05)
    _, again = await server.call(
        "POST", f"/api/server/webhooks/{endpoint['id']}/deliveries/{first['id']}/redeliver", expect=201
    )
    assert again["event_id"] == first["event_id"] and again["status"] == "pending"
    await until(lambda: len(receiver.received) == 2, 10, "the redelivery", interval=0.05)
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id == first["event_id"]
    await server.call("POST", f"/api/server/webhooks/{endpoint['id']}/deliveries/999999/redeliver", expect=404)


async def test_chat_messages_reach_only_endpoints_that_name_them(api_factory, receiver: Receiver) -> None:
    api, server, _ = await open_server(api_factory)
    everything = await server.create(url=receiver.url("hooks.test"))
    chat = await server.create(url=receiver.url("hooks.test"), events=["chat.message"])
    user = await api.register()
    meeting = await api.meeting(user["token"])
    await api.call("POST", f"/api/meetings/{meeting['id']}/join", user["token"], json={}, expect=200)
    await api.call("POST", f"/api/meetings/{meeting['id']}/messages", user["token"], json={"body": "hello"}, expect=201)
    await until(lambda: len(receiver.received) >= 2, 10, "two deliveries", interval=0.05)
    assert [d["event_type"] for d in await server.deliveries(everything)] == ["meeting.started"]
    (message,) = await server.deliveries(chat)
    assert message["event_type"] == "chat.message"
    (event,) = [verify(chat["secret"], r.headers, r.body) for r in receiver.received if r.event["type"] == "chat.message"]
    assert event["data"]["message"]["body"] == "hello"


async def test_an_endpoint_failing_for_the_whole_window_is_disabled_and_its_owner_notified(
    api_factory, receiver: Receiver
) -> None:
    api, server, _ = await open_server(api_factory, retry_window=30)
    owner = await api.register("Olga Owner")
    endpoint = await server.create(url=receiver.url("hooks.test"), notify_email=owner["email"])
    receiver.answers = [503] * 1000
    user = await api.register()
    await api.meeting(user["token"])

    async def disabled() -> Any:
        api.clock.advance(2.5)
        _, body = await server.call("GET", f"/api/server/webhooks/{endpoint['id']}", expect=200)
        return not body["enabled"] and body

    body = await until(disabled, 15, "the endpoint to be disabled", interval=0.05)
    assert "failed since" in body["disabled_reason"]
    (delivery,) = await server.deliveries(endpoint)
    assert delivery["status"] == "failed" and delivery["last_status_code"] == 503 and delivery["attempts"] > 3
    _, notes = await api.call("GET", "/api/notifications", owner["token"], expect=200)
    assert [n["kind"] for n in notes["items"]] == ["webhook_disabled"]
    assert notes["items"][0]["data"]["endpoint_id"] == endpoint["id"]
    # enabling it again clears the reason
    _, body = await server.call("PATCH", f"/api/server/webhooks/{endpoint['id']}", {"enabled": True}, expect=200)
    assert body["enabled"] and body["disabled_reason"] is None and body["failing_since"] is None


async def test_redirects_are_not_followed_and_a_slow_receiver_times_out(api_factory, receiver: Receiver) -> None:
    api, server, _ = await open_server(api_factory, timeout=0.3)
    endpoint = await server.create(url=receiver.url("hooks.test"))
    receiver.answers = [307]  # followed, it would post here again
    user = await api.register()
    await api.meeting(user["token"])

    async def attempted(times: int) -> Any:
        api.clock.advance(2.5)
        items = await server.deliveries(endpoint)
        return items and items[0]["attempts"] >= times and items[0]

    first = await until(lambda: attempted(1), 10, "the first attempt", interval=0.05)
    assert (first["last_status_code"], first["last_error"]) == (307, "HTTP 307: try again")
    assert len(receiver.received) == 1
    receiver.delay = 1.0
    second = await until(lambda: attempted(2), 10, "the second attempt", interval=0.05)
    assert second["last_status_code"] is None and second["last_error"] == "no answer within 0.3 s"
    assert second["status"] == "pending"


async def test_finished_deliveries_past_retention_are_pruned_and_pending_ones_kept(api_factory, receiver: Receiver) -> None:
    api, server, _ = await open_server(api_factory)
    endpoint = await server.create(url=receiver.url("hooks.test"))
    user = await api.register()
    await api.meeting(user["token"])
    (done,) = await until(lambda: _settled(server, endpoint), 10, "the first delivery", interval=0.05)
    assert done["status"] == "succeeded"
    receiver.answers = [500] * 100  # the next event stays pending (its retry is due in 2 s on a clock that stands still)
    await api.meeting(user["token"])
    await until(lambda: len(receiver.received) >= 2, 10, "the second event's first attempt", interval=0.05)
    webhooks = api.services.webhooks
    assert await webhooks.prune(api.clock() - timedelta(days=1)) == 0  # nothing is that old yet
    assert await webhooks.prune(api.clock() + timedelta(seconds=1)) == 1  # the finished one goes
    remaining = await server.deliveries(endpoint)
    assert [d["status"] for d in remaining] == ["pending"], remaining
