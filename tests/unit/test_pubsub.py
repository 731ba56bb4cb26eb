"""Publish/subscribe in memory and through Redis behave alike."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from control_api.pubsub import QUEUE_LIMIT, MemoryPubSub, RedisPubSub
from tests.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def bus(request):
    if request.param == "memory":
        return MemoryPubSub()
    return RedisPubSub(request.getfixturevalue("redis_client"), prefix=f"vctest:{uuid.uuid4().hex}:")


async def test_events_reach_every_subscriber_of_their_channel_in_order(bus) -> None:
    async with bus.subscribe("room:1") as a, bus.subscribe("room:1") as b, bus.subscribe("room:2") as other:
        await asyncio.sleep(0.05)
        for i in range(5):
            await bus.publish("room:1", {"n": i, "when": "now"})
        for sub in (a, b):
            assert [await asyncio.wait_for(sub.get(), 5) for _ in range(5)] == [{"n": i, "when": "now"} for i in range(5)]
        await bus.publish("room:2", {"n": 99})
        assert await asyncio.wait_for(other.get(), 5) == {"n": 99}
        assert a._queue.empty()


async def test_slow_subscribers_lose_the_oldest_events() -> None:
    bus = MemoryPubSub()
    async with bus.subscribe("c") as sub:
        for i in range(QUEUE_LIMIT + 10):
            await bus.publish("c", {"n": i})
        assert sub.dropped == 10
        assert (await sub.get()) == {"n": 10}
    assert bus._subscribers == {}


async def test_a_lost_redis_connection_wakes_the_subscriber() -> None:
    name = f"vctest-{uuid.uuid4().hex[:12]}"
    client = Redis.from_url(REDIS_URL, client_name=name)
    admin = Redis.from_url(REDIS_URL)
    bus = RedisPubSub(client, prefix=f"vctest:{uuid.uuid4().hex}:")
    async with bus.subscribe("c") as sub:
        await asyncio.sleep(0.05)
        ours = [c["id"] for c in await admin.client_list() if c.get("name") == name]
        assert ours, "the subscription's connection should be visible"
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(sub.get(), 5)
    await client.aclose()
    await admin.aclose()
