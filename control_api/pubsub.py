"""Publish/subscribe of small JSON events between the parts of the platform.

The embedded default runs in one process and delivers in memory; with ``redis_url`` set, events
go through Redis so that every API and signaling node sees them.  Channels used so far:
``user:<id>`` (notifications) and ``meeting:<id>`` (status changes, chat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis

log = logging.getLogger(__name__)

QUEUE_LIMIT = 256


class Subscription:
    """Events of one channel, in order.  A subscriber that falls behind by more than
    ``QUEUE_LIMIT`` events loses the oldest ones rather than holding up publishers."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT + 1)
        self._broken = False
        self.dropped = 0

    def _put(self, event: dict[str, Any]) -> None:
        if self._broken:
            return
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def _break(self) -> None:
        """The source is gone: wake the reader with an error instead of leaving it waiting."""
        if not self._broken:
            self._broken = True
            self._queue.put_nowait(None)

    async def get(self) -> dict[str, Any]:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)
            raise ConnectionError("the event stream was interrupted")
        return event

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.get()


class PubSub(Protocol):
    async def publish(self, channel: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    async def close(self) -> None: ...


class MemoryPubSub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        # Round-trip through JSON so that both backends hand subscribers the same data.
        data = json.loads(json.dumps(event))
        for subscription in list(self._subscribers.get(channel, ())):
            subscription._put(data)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        self._subscribers.setdefault(channel, set()).add(subscription)
        try:
            yield subscription
        finally:
            subs = self._subscribers.get(channel)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._subscribers[channel]

    async def close(self) -> None:
        self._subscribers.clear()


class RedisPubSub:
    """One Redis connection per subscription (Redis PUBSUB holds its connection)."""

    def __init__(self, redis: Redis, prefix: str = "videoconf:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        await self._redis.publish(self._prefix + channel, json.dumps(event))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._prefix + channel)

        async def pump() -> None:
            try:
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        subscription._put(json.loads(message["data"]))
                    except (ValueError, TypeError):
                        log.warning("dropped a malformed event on %s", channel)
            except Exception:
                log.exception("lost the Redis subscription to %s", channel)
            subscription._break()

        task = asyncio.create_task(pump(), name=f"pubsub:{channel}")
        try:
            yield subscription
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pubsub.aclose()

    async def close(self) -> None:
        pass
