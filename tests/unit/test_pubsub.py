"""Publish/subscribe in memory and through Redis behave alike."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from redis.asyncio import Redis

from clients.loadtest.polling import until
from control_api.pubsub import QUEUE_LIMIT, MemoryPubSub, RedisPubSub
from tests.conftest import REDIS_URL, subscribed
from tests.services import PrivateRedis


@pytest.fixture(params=["memory", "redis"])
def bus(request):
    if request.param == "memory":
        return MemoryPubSub()
    return RedisPubSub(request.getfixturevalue("redis_client"), prefix=f"vctest:{uuid.uuid4().hex}:")


async def test_events_reach_every_subscriber_of_their_channel_in_order(bus) -> None:
    async with bus.subscribe("room:1") as a, bus.subscribe("room:1") as b, bus.subscribe("room:2") as other:
        await subscribed(bus, "room:1", 2)
        await subscribed(bus, "room:2")
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


async def test_a_lost_redis_connection_is_subscribed_again() -> None:
    """The shared Redis kills the subscription's connection: the subscription subscribes again by
    itself and later events reach the same reader."""
    name = f"vctest-{uuid.uuid4().hex[:12]}"
    client = Redis.from_url(REDIS_URL, client_name=name)
    admin = Redis.from_url(REDIS_URL)
    bus = RedisPubSub(client, prefix=f"vctest:{uuid.uuid4().hex}:")
    async with bus.subscribe("c") as sub:
        assert sub.connected
        ours = [c["id"] for c in await admin.client_list() if c.get("name") == name]
        assert ours, "the subscription's connection should be visible"
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        await until(lambda: sub.reconnects >= 1 and sub.connected, 10)
        await subscribed(bus, "c")
        await bus.publish("c", {"n": 1})
        assert await asyncio.wait_for(sub.get(), 5) == {"n": 1}
    await client.aclose()
    await admin.aclose()


async def test_subscriptions_outlive_a_redis_restart_and_deliver_locally_meanwhile() -> None:
    """A private Redis stops and starts again (empty): publishing never raises, this process's
    subscribers get its events while Redis is away, and afterwards events from other clients
    arrive through the new Redis again."""
    with PrivateRedis() as server:
        client = Redis.from_url(server.url, socket_connect_timeout=2, socket_timeout=5)
        bus = RedisPubSub(client, prefix="t:")
        async with bus.subscribe("room") as sub, bus.subscribe("other") as other:
            await bus.publish("room", {"n": 0})
            assert await asyncio.wait_for(sub.get(), 5) == {"n": 0}
            await asyncio.to_thread(server.stop)
            await bus.publish("room", {"n": 1})  # Redis is away: delivered here, no error
            assert await asyncio.wait_for(sub.get(), 5) == {"n": 1}
            assert bus.publish_failures == 1 and other._queue.empty()
            await until(lambda: not sub.connected, 5)
            await asyncio.to_thread(server.start)
            await until(lambda: sub.connected and other.connected, 10)
            assert sub.reconnects == 1
            outsider = Redis.from_url(server.url)
            assert await outsider.publish("t:room", json.dumps({"n": 2})) == 1
            assert await asyncio.wait_for(sub.get(), 5) == {"n": 2}
            await bus.publish("room", {"n": 3})  # through Redis again, exactly once
            assert await asyncio.wait_for(sub.get(), 5) == {"n": 3}
            assert sub._queue.empty() and other._queue.empty()
            await outsider.aclose()
        assert bus._local == {}
        await client.aclose()


async def test_subscribing_while_redis_is_down_does_not_fail() -> None:
    with PrivateRedis() as server:
        client = Redis.from_url(server.url, socket_connect_timeout=2, socket_timeout=5)
        bus = RedisPubSub(client, prefix="t:")
        await asyncio.to_thread(server.stop)
        async with bus.subscribe("late") as sub:
            assert not sub.connected
            await asyncio.to_thread(server.start)
            await until(lambda: sub.connected, 10)
            outsider = Redis.from_url(server.url)
            await outsider.publish("t:late", json.dumps({"ok": True}))
            assert await asyncio.wait_for(sub.get(), 5) == {"ok": True}
            await outsider.aclose()
        await client.aclose()
