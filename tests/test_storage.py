"""Storage: the migrations build exactly the declared schema on both backends, SQLite runs with
foreign keys and WAL, timestamps keep their time zone, concurrent writers queue instead of
failing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, StatementError

from control_api.storage.database import Database
from control_api.storage.migrate import current_revision, downgrade, head_revision, upgrade
from control_api.storage.tables import metadata, users
from tests.conftest import POSTGRES_URL, Api, Backend

# The newest migration in control_api/storage/migrations/versions/ (its file name's number).
NEWEST = max(p.name.split("_", 1)[0] for p in (Path(__file__).parent.parent / "control_api/storage/migrations/versions").glob("0*.py"))


async def test_migrations_match_the_declared_schema(backend: Backend) -> None:
    db = backend.database()
    try:
        assert await current_revision(db) == head_revision() == NEWEST
        diff = await db.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
        )
        assert diff == []
        names = set(await db.run_sync(lambda sync: sync.dialect.get_table_names(sync)))
        assert {"users", "refresh_tokens", "meetings", "participants", "messages", "recordings",
                "calendar_events", "notifications", "invitations", "api_keys"} <= names
    finally:
        await db.close()


async def test_downgrade_and_upgrade_round_trip(tmp_path) -> None:
    schema = f"vc_mig_{uuid.uuid4().hex[:8]}"
    admin = Database(POSTGRES_URL)
    await admin.run_sync(lambda conn: conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"'))
    try:
        for db in (Database(f"sqlite:///{tmp_path / 'm.db'}"), Database(POSTGRES_URL, search_path=schema)):
            await upgrade(db)
            await downgrade(db, "base")
            assert await current_revision(db) is None
            await upgrade(db)
            assert await current_revision(db) == NEWEST
            await db.close()
    finally:
        await admin.run_sync(lambda conn: conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.close()


async def test_sqlite_runs_with_foreign_keys_and_wal(sqlite_backend: Backend) -> None:
    db = sqlite_backend.database()
    async with db.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at) "
                "VALUES ('a', 'no-such-user', 'f', 'h', '2026-01-01', '2026-01-02')"
            )
    await db.close()


def _user(created: datetime) -> dict:
    return {
        "id": uuid.uuid4(), "email": f"{uuid.uuid4().hex}@example.com", "password_hash": "x",
        "display_name": "T", "created_at": created, "updated_at": created, "password_changed_at": created,
    }


async def test_timestamps_keep_their_instant_and_come_back_in_utc(backend: Backend) -> None:
    db = backend.database()
    berlin = timezone(timedelta(hours=2))
    moment = datetime(2026, 7, 1, 9, 30, 15, 123456, tzinfo=berlin)
    row = _user(moment)
    async with db.write() as conn:
        await conn.execute(insert(users).values(row))
    async with db.read() as conn:
        created = (await conn.execute(select(users.c.created_at).where(users.c.id == row["id"]))).scalar_one()
    assert created == moment and created.utcoffset() == timedelta(0) and created.hour == 7
    with pytest.raises(StatementError, match="naive datetime"):
        async with db.write() as conn:
            await conn.execute(insert(users).values(_user(datetime(2026, 7, 1, 9, 30))))
    await db.close()


async def test_concurrent_writers_all_succeed(api: Api) -> None:
    """Twenty sign-ups at once: SQLite writers queue on the write lock instead of failing."""
    results = await asyncio.gather(*(api.register(f"User {i}") for i in range(20)))
    assert len({r["user"]["id"] for r in results}) == 20
    assert await api.count("users") == 20 and await api.count("refresh_tokens") == 20
