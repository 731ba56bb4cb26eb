"""One database interface over two backends, with the transaction discipline the services rely on.

PostgreSQL goes through SQLAlchemy's async engine on asyncpg.  SQLite runs on SQLAlchemy's
synchronous engine *inside the event loop*: a query on a local file takes tens of microseconds,
while handing each statement to a worker thread (aiosqlite) cost about 120 us of CPU per hop and
up to nine hops per transaction (measured; see README, "Performance notes").  The services see
the same ``await conn.execute(...)`` either way.

``Database.write()`` opens a transaction that takes the write lock at once (``BEGIN IMMEDIATE``
on SQLite, so a writer never deadlocks when it upgrades from reading; writers of one process
queue on an asyncio lock, other processes on ``busy_timeout``).  ``Database.read()`` opens a
plain transaction.  Every request's writes happen inside one ``write()`` block, so a failed
request leaves no partial rows.

When PostgreSQL cannot be reached (stopped, restarting, crashed, out of connections), every
``read()``/``write()`` raises :class:`DatabaseUnavailable`, which the API answers as a 503
``database_unavailable`` with ``Retry-After`` and signaling as an error of the same code.  Nothing
needs restarting afterwards: the pool drops connections the server closed (checked at checkout,
without a round trip) and opens new ones, so the first request after the database is back
succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from control_api.errors import ServiceError

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
CONNECT_TIMEOUT_SECONDS = 5.0
# Errors of asyncpg that mean "no usable server right now", not "this statement is wrong".
_ASYNCPG_UNAVAILABLE = (
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08: connection exceptions
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


class DatabaseUnavailable(ServiceError):
    """The database cannot be reached now; the request may be retried after ``Retry-After``."""

    def __init__(self) -> None:
        super().__init__(
            503, "database_unavailable", "the database is unavailable; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


def is_unavailable(exc: BaseException, connecting: bool = False) -> bool:
    """Whether ``exc`` says the database server is unreachable or went away (not that a statement
    failed): a connection the server closed, shutdown notices, too many connections; and while
    ``connecting``, any socket error or timeout (refused, unreachable, name not resolved)."""
    if isinstance(exc, ServiceError):
        return False
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _ASYNCPG_UNAVAILABLE):
            return True
        if connecting and isinstance(current, (OSError, TimeoutError)):
            return True
        if isinstance(current, asyncpg.exceptions.InterfaceError) and "closed" in str(current):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


class _Warnings:
    """At most one log line per ``interval`` seconds while the database stays away."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last = -interval
        self.suppressed = 0

    def warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return
        log.warning(
            "the database is unavailable (%s: %s); answering 503 until it is back (%d more since the last warning)",
            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "", self.suppressed,
        )
        self._last = now
        self.suppressed = 0

SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 10000",
)


class Conn(Protocol):
    """What the services use of a connection: the same on both backends."""

    async def execute(self, statement: Any, parameters: Any = None) -> CursorResult[Any]: ...

    async def exec_driver_sql(self, statement: str) -> CursorResult[Any]: ...


class _InlineConnection:
    """A synchronous SQLAlchemy connection behind the async ``Conn`` interface."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute(self, statement: Any, parameters: Any = None) -> CursorResult[Any]:
        return self._connection.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str) -> CursorResult[Any]:
        return self._connection.exec_driver_sql(statement)


def _sqlite_engine(url: Any, pool_size: int) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight to the driver: a statement through SQLAlchemy costs more than the BEGIN.
        write = conn.get_execution_options().get("sqlite_write")
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _postgres_engine(url: Any, pool_size: int, search_path: str | None) -> AsyncEngine:
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_SECONDS}
    if search_path:
        connect_args["server_settings"] = {"search_path": search_path}
    engine = create_async_engine(
        url.set(drivername="postgresql+asyncpg"),
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=connect_args,
    )

    @event.listens_for(engine.sync_engine, "checkout")
    def _drop_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # asyncpg notices at once when the server closes a connection (a restart, a crash, an
        # administrator); hand out a new connection instead of failing the request that drew the
        # dead one.  A local flag, no round trip (unlike pool_pre_ping).
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")

    return engine


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, search_path: str | None = None) -> None:
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        if self.backend == "sqlite":
            self._sync = _sqlite_engine(parsed, pool_size)
        elif self.backend == "postgresql":
            self._async = _postgres_engine(parsed, pool_size, search_path)
        else:
            raise ValueError(f"unsupported database backend {self.backend!r} (use sqlite or postgresql)")
        # SQLite has one writer at a time: queue this process's writers in the event loop.
        self._write_lock = asyncio.Lock() if self.backend == "sqlite" else None
        self._warnings = _Warnings()

    @asynccontextmanager
    async def _postgres(self) -> AsyncIterator[Any]:
        """A connection in a transaction; an unreachable server raises DatabaseUnavailable."""
        assert self._async is not None
        connecting = True
        try:
            async with self._async.connect() as conn:
                connecting = False
                async with conn.begin():
                    yield conn
        except Exception as exc:
            if not is_unavailable(exc, connecting):
                raise
            self._warnings.warn(exc)
            raise DatabaseUnavailable() from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        if self._async is not None:
            async with self._postgres() as conn:
                yield conn
            return
        assert self._sync is not None and self._write_lock is not None
        async with self._write_lock:
            with self._sync.connect() as sync_conn:
                sync_conn = sync_conn.execution_options(sqlite_write=True)
                with sync_conn.begin():
                    yield _InlineConnection(sync_conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        if self._async is not None:
            async with self._postgres() as conn:
                yield conn
            return
        assert self._sync is not None
        with self._sync.connect() as sync_conn, sync_conn.begin():
            yield _InlineConnection(sync_conn)

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` with a synchronous connection in one transaction (migrations, tools)."""
        if self._async is not None:
            async with self._postgres() as conn:
                return await conn.run_sync(fn)
        assert self._sync is not None
        with self._sync.begin() as sync_conn:
            return fn(sync_conn)

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._async is not None:
            await self._async.dispose()
        if self._sync is not None:
            self._sync.dispose()
