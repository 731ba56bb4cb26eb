"""Publish/subscribe of small JSON events between the parts of the platform.

The embedded default runs in one process and delivers in memory; with ``redis_url`` set, events
go through Redis so that every API and signaling node sees them.  Channels used so far:
``user:<id>`` (notifications) and ``meeting:<id>`` (status changes, chat).

Delivery is best-effort fan-out, never the record: what matters is committed to the database
before it is published (chat, notifications), so an event lost here is still in the history.
Through Redis, a subscription survives Redis restarts and lost connections: it subscribes again
by itself (backing off from 0.1 s to 2 s) and its reader never sees the gap.  While a
subscription is not connected, or when a publish cannot reach Redis, this process's own
subscribers of the channel get the event directly, so one node's rooms keep their chat while
Redis is away; events other nodes published meanwhile are lost to it.
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
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

QUEUE_LIMIT = 256
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 2.0  # seconds between attempts to subscribe again
SUBSCRIBE_WAIT = 2.0  # how long subscribe() waits for Redis to confirm before going on


class Subscription:
    """Events of one channel, in order.  A subscriber that falls behind by more than
    ``QUEUE_LIMIT`` events loses the oldest ones rather than holding up publishers."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT + 1)
        self._broken = False
        self.dropped = 0
        self.connected = True  # to its source (a Redis subscription is not, while reconnecting)
        self.reconnects = 0

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
        self._local: dict[str, set[Subscription]] = {}
        self.publish_failures = 0
        self._last_warning = -60.0

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        """Publish through Redis; never raises for an unreachable Redis (see the module's notes)."""
        data = json.dumps(event)
        try:
            await self._redis.publish(self._prefix + channel, data)
        except REDIS_ERRORS as exc:
            self.publish_failures += 1
            self._warn(f"cannot publish to Redis ({type(exc).__name__}: {exc}); delivering to this node's subscribers only")
            self._deliver_locally(channel, data, everyone=True)
            return
        self._deliver_locally(channel, data, everyone=False)

    def _deliver_locally(self, channel: str, data: str, *, everyone: bool) -> None:
        """Hand the event to this process's subscribers of ``channel`` that Redis cannot reach
        (all of them when the publish itself failed)."""
        targets = [s for s in self._local.get(channel, ()) if everyone or not s.connected]
        if targets:
            event = json.loads(data)
            for subscription in targets:
                subscription._put(event)

    def _warn(self, message: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_warning >= 5.0:
            self._last_warning = now
            log.warning(message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        subscription.connected = False
        self._local.setdefault(channel, set()).add(subscription)
        attempted = asyncio.Event()
        task = asyncio.create_task(self._pump(channel, subscription, attempted), name=f"pubsub:{channel}")
        try:
            # Events published after subscribe() returns reach the subscriber, unless Redis is
            # unreachable: then the subscription goes on trying in the background.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(attempted.wait(), SUBSCRIBE_WAIT)
            yield subscription
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            subscribers = self._local.get(channel)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._local[channel]

    async def _pump(self, channel: str, subscription: Subscription, attempted: asyncio.Event) -> None:
        """Subscribe, read, and subscribe again whenever the connection is lost."""
        delay = RECONNECT_FIRST
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._prefix + channel)
                subscription.connected = True
                attempted.set()
                delay = RECONNECT_FIRST
                if not first:
                    subscription.reconnects += 1
                    log.info("subscribed to %s again", channel)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        subscription._put(json.loads(message["data"]))
                    except (ValueError, TypeError):
                        log.warning("dropped a malformed event on %s", channel)
            except REDIS_ERRORS as exc:
                if subscription.connected:
                    log.warning("lost the Redis subscription to %s (%s: %s); subscribing again", channel, type(exc).__name__, exc)
            except Exception:
                log.exception("the Redis subscription to %s failed; subscribing again", channel)
            finally:
                subscription.connected = False
                attempted.set()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            first = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def close(self) -> None:
        pass
