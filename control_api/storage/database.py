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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")

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
    connect_args: dict[str, Any] = {}
    if search_path:
        connect_args["server_settings"] = {"search_path": search_path}
    return create_async_engine(
        url.set(drivername="postgresql+asyncpg"),
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=connect_args,
    )


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

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        if self._async is not None:
            async with self._async.connect() as conn, conn.begin():
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
            async with self._async.connect() as conn, conn.begin():
                yield conn
            return
        assert self._sync is not None
        with self._sync.connect() as sync_conn, sync_conn.begin():
            yield _InlineConnection(sync_conn)

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` with a synchronous connection in one transaction (migrations, tools)."""
        if self._async is not None:
            async with self._async.begin() as conn:
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
