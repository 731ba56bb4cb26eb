"""Shared fixtures.

Every API test runs twice: on SQLite with in-process pub/sub and rate limits, and on the real
PostgreSQL (127.0.0.1:5432, database ``test``) with Redis (127.0.0.1:6379).  If PostgreSQL or
Redis cannot be reached, the tests that need them fail; they are never skipped.

Every asynchronous test, and every server it starts in this process, runs on the event loop
production uses (``videoconf.runtime``: uvloop).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from sqlalchemy import text

from clients.loadtest.polling import until
from control_api.pubsub import RedisPubSub
from control_api.storage.database import Database
from control_api.storage.migrate import upgrade
from control_api.storage.tables import metadata
from videoconf import runtime
from videoconf.config import PasswordHashing, RateLimitRule, RateLimits, Settings, load_settings

POSTGRES_URL = os.environ.get(
    "VIDEOCONF_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("VIDEOCONF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
LOOSE = RateLimitRule(limit=100_000, period=1)
FAST_HASHING = PasswordHashing(time_cost=1, memory_kib=64, parallelism=1)


def limits(**rules: RateLimitRule) -> RateLimits:
    """Every rate limit loose except the ones a test sets."""
    return RateLimits(**{name: rules.get(name, LOOSE) for name in RateLimits.model_fields})


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """The production event loop for every test (uvloop), not asyncio's default."""
    return {"production-loop": runtime.loop_factory()}


class FakeClock:
    """A clock the tests move by hand; starts at the current time, whole seconds."""

    def __init__(self) -> None:
        self.current = datetime.now(timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# Databases ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def postgres_schema() -> AsyncIterator[str]:
    """A schema of its own for this test run, migrated once, dropped at the end."""
    schema = f"vc_test_{RUN_ID}"
    admin = Database(POSTGRES_URL)
    try:
        await admin.run_sync(lambda conn: conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}", pytrace=False)
    db = Database(POSTGRES_URL, search_path=schema)
    await upgrade(db)
    await db.close()
    yield schema
    await admin.run_sync(lambda conn: conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.close()


@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(f"sqlite:///{path}")
    await upgrade(db)
    async with db.read() as conn:
        await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    await db.close()
    return path


@dataclass
class Backend:
    name: str
    database_url: str
    search_path: str | None
    redis_url: str | None

    def database(self) -> Database:
        return Database(self.database_url, search_path=self.search_path, pool_size=5)


@pytest.fixture
def sqlite_backend(sqlite_template: Path, tmp_path: Path) -> Backend:
    path = tmp_path / "videoconf.db"
    shutil.copyfile(sqlite_template, path)
    return Backend("sqlite", f"sqlite:///{path}", None, None)


@pytest.fixture
async def postgres_backend(postgres_schema: str) -> Backend:
    await _redis_reachable()
    db = Database(POSTGRES_URL, search_path=postgres_schema)
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    async with db.write() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await db.close()
    return Backend("postgres", POSTGRES_URL, postgres_schema, REDIS_URL)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """SQLite with in-process pub/sub and limits, or PostgreSQL with Redis."""
    return request.getfixturevalue(f"{request.param}_backend")


async def _redis_reachable() -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        pytest.fail(f"Redis at {REDIS_URL} is unreachable: {exc}", pytrace=False)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """A client of the real Redis; the test fails if Redis cannot be reached."""
    await _redis_reachable()
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


# Settings and the app -------------------------------------------------------------------------


def make_settings(tmp_path: Path, backend: Backend | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": tmp_path / "data",
        "password_hashing": FAST_HASHING,
        "rate_limits": limits(),
        "access_log": False,
        "redis_prefix": f"vctest:{RUN_ID}:{uuid.uuid4().hex[:8]}:",
    }
    if backend is not None:
        values["database_url"] = backend.database_url
        values["redis_url"] = backend.redis_url
        values["database_schema"] = backend.search_path
    values.update(overrides)
    return load_settings(**values)


async def subscribed(bus: Any, channel: str, count: int = 1) -> None:
    """Until Redis has taken ``count`` subscriptions of ``channel``, so that what is published
    from now on reaches them (``subscribe()`` sends SUBSCRIBE without waiting for Redis to take
    it; in-process pub/sub delivers from the moment one subscribes)."""
    if isinstance(bus, RedisPubSub):
        name = bus._prefix + channel

        async def taken() -> bool:
            ((_, subscriptions),) = await bus._redis.pubsub_numsub(name)
            return subscriptions >= count

        await until(taken, 5, f"Redis to take {count} subscription(s) of {channel}", interval=0.01)


@dataclass
class Api:
    """A test client with helpers for signing up and calling the API as someone."""

    client: TestClient
    app: web.Application
    clock: FakeClock
    backend: Backend

    async def call(
        self, method: str, path: str, token: str | None = None, *, expect: int | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                body: Any = await response.json()
            else:
                body = await response.read()
            if expect is not None:
                assert response.status == expect, (response.status, body)
            return response.status, body

    async def register(self, name: str = "Alice Example", email: str | None = None, **extra: Any) -> dict[str, Any]:
        email = email or f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
        _, body = await self.call(
            "POST",
            "/api/auth/register",
            json={"email": email, "password": "correct horse battery", "display_name": name, **extra},
            expect=201,
        )
        body["token"] = body["access_token"]
        body["email"] = email
        return body

    async def login(self, email: str, password: str = "correct horse battery") -> str:
        _, body = await self.call("POST", "/api/auth/login", json={"email": email, "password": password}, expect=200)
        return body["access_token"]

    async def meeting(self, token: str, **fields: Any) -> dict[str, Any]:
        payload = {"title": "Weekly sync", "kind": "instant", **fields}
        _, body = await self.call("POST", "/api/meetings", token, json=payload, expect=201)
        return body

    async def scheduled(self, token: str, hours_ahead: float = 24, **fields: Any) -> dict[str, Any]:
        start = self.clock() + timedelta(hours=hours_ahead)
        return await self.meeting(token, kind="scheduled", start_time=start.isoformat(), **fields)

    @property
    def services(self) -> Any:
        from control_api.handlers import SERVICES

        return self.app[SERVICES]

    async def count(self, table: str) -> int:
        async with self.services.ctx.db.read() as conn:
            return (await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()


async def start_api(settings: Settings, clock: FakeClock, backend: Backend) -> Api:
    from videoconf.app import create_app

    app = create_app(settings, clock=clock)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return Api(client, app, clock, backend)


@pytest.fixture
async def api(backend: Backend, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Api]:
    instance = await start_api(make_settings(tmp_path, backend), clock, backend)
    try:
        yield instance
    finally:
        await instance.client.close()


@pytest.fixture
async def api_factory(backend: Backend, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    """Start an API with settings of the test's own (rate limits, body size, ...)."""
    started: list[Api] = []

    async def factory(**overrides: Any) -> Api:
        instance = await start_api(make_settings(tmp_path, backend, **overrides), clock, backend)
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        await instance.client.close()
