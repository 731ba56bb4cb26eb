"""The control API application factory: ``create_api_app(settings)``.

Resources (database engine, Redis, pub/sub) are opened in a cleanup context before the server
accepts requests and closed after it stops; long-lived notification streams are cancelled on
shutdown so that the server stops promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path

import swagger_ui_bundle
from aiohttp import web
from redis.asyncio import Redis

from control_api import web_headers
from control_api.cluster import RedisCluster
from control_api.config import ApiSettings, TokenSettings
from control_api.handlers import SERVICES, api
from control_api.handlers.notifications import STREAMS
from control_api.handlers.ops import SPEC, DependencyWatch
from control_api.observability import ACCESS_LOG, METRICS, Metrics, observe
from control_api.openapi import build_spec
from control_api.pubsub import MemoryPubSub, PubSub, RedisPubSub
from control_api.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from control_api.routing import AUTHENTICATOR, MAX_BODY, REVALIDATOR
from control_api.security import Clock, KeySet, PasswordHasher, TokenCodec
from control_api.services.auth import Principal
from control_api.services.context import ServiceContext, utc_now
from control_api.services.registry import Services, build_services
from control_api.storage.database import Database
from control_api.webhook_worker import WebhookWorker

API_AUDIENCE = "videoconf-api"
ROOM_AUDIENCE = "videoconf-sfu"


def version() -> str:
    try:
        return metadata.version("videoconf")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def token_codecs(settings: TokenSettings, clock: Clock) -> tuple[TokenCodec, TokenCodec]:
    """Access tokens for this API and room tokens for SFU nodes, each with its own keys."""

    def codec(kind: str, audience: str) -> TokenCodec:
        previous = getattr(settings, f"{kind}_previous_secrets")
        keys = KeySet(settings.secret(f"{kind}_secret"), [s.get_secret_value() for s in previous])
        return TokenCodec(keys, settings.token_issuer, audience, clock)

    return codec("access_token", API_AUDIENCE), codec("room_token", ROOM_AUDIENCE)


def build_context(settings: ApiSettings, clock: Clock = utc_now, db: Database | None = None) -> ServiceContext:
    # Bounded waits: an unreachable Redis fails a command in seconds instead of holding requests
    # (blocking reads of subscriptions are not bounded by socket_timeout).
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5) if settings.redis_url else None
    prefix = settings.redis_prefix
    bus: PubSub = RedisPubSub(redis, prefix) if redis is not None else MemoryPubSub()
    limiter: RateLimiter = (
        RedisRateLimiter(redis, prefix + "rl:") if redis is not None else MemoryRateLimiter()
    )
    access, room = token_codecs(settings, clock)
    return ServiceContext(
        settings=settings,
        db=db
        or Database(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            search_path=settings.database_schema,
        ),
        bus=bus,
        limiter=limiter,
        hasher=PasswordHasher(settings.password_hashing),
        access_tokens=access,
        room_tokens=room,
        clock=clock,
        redis=redis,
        cluster=RedisCluster(redis, prefix + "cluster:") if redis is not None and settings.cluster else None,
    )


def create_api_app(
    settings: ApiSettings,
    *,
    clock: Clock = utc_now,
    db: Database | None = None,
) -> web.Application:
    ctx = build_context(settings, clock, db)
    services = build_services(ctx)
    app = web.Application(
        middlewares=[observe],
        client_max_size=settings.max_body_bytes,
        handler_args={"max_field_size": 16384},
    )
    app[SERVICES] = services
    app[METRICS] = Metrics()
    app[ACCESS_LOG] = settings.access_log
    app[MAX_BODY] = settings.max_body_bytes
    app[STREAMS] = set()

    async def authenticate(request: web.Request) -> Principal:
        return await services.auth.authenticate(request.headers.get("Authorization"))

    app[AUTHENTICATOR] = authenticate
    app[REVALIDATOR] = services.auth.require_account
    api.install(app)
    app.router.add_static(
        "/api/docs/static", Path(swagger_ui_bundle.swagger_ui_path), append_version=True
    )
    app[SPEC] = build_spec(
        api.endpoints, title="VideoConf control API", version=version(), server_url=settings.base_url
    )
    web_headers.install(app, settings)
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_stop_streams)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    services: Services = app[SERVICES]
    ctx = services.ctx
    ctx.settings.effective_recordings_dir.mkdir(parents=True, exist_ok=True)
    watch = DependencyWatch(ctx, app[METRICS].registry)
    watch.start()
    worker = WebhookWorker(services.webhooks, ctx.settings.webhooks, app[METRICS].registry)
    if ctx.settings.webhooks.enabled:
        worker.start()
    yield
    await worker.stop()
    await watch.stop()
    await ctx.bus.close()
    if ctx.redis is not None:
        await ctx.redis.aclose()
    await ctx.db.close()


async def _stop_streams(app: web.Application) -> None:
    tasks = list(app[STREAMS])
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
