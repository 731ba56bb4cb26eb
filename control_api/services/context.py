"""What every service needs, wired once by ``control_api.app.build_services``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis

from control_api.cluster import RedisCluster
from control_api.config import ApiSettings
from control_api.pubsub import PubSub
from control_api.ratelimit import RateLimiter
from control_api.security import Clock, PasswordHasher, TokenCodec
from control_api.storage.database import Database


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class ServiceContext:
    settings: ApiSettings
    db: Database
    bus: PubSub
    limiter: RateLimiter
    hasher: PasswordHasher
    access_tokens: TokenCodec
    room_tokens: TokenCodec
    clock: Clock = utc_now
    redis: Redis | None = None
    cluster: RedisCluster | None = None  # None: one node, this one
    draining: bool = False  # this node is draining: /readyz answers 503

    def now(self) -> datetime:
        return self.clock()


@dataclass
class Outbox:
    """Events to publish once the transaction that caused them has committed."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, channel: str, event: dict[str, Any]) -> None:
        self.events.append((channel, event))

    async def flush(self, bus: PubSub) -> None:
        events, self.events = self.events, []
        for channel, event in events:
            await bus.publish(channel, event)


class Record:
    """Attribute access over a dict, so rows just inserted read like rows fetched."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)
