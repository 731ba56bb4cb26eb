"""Notifications: stored per user, published on ``user:<id>`` after commit for live delivery."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.errors import not_found
from control_api.schemas import NotificationOut, NotificationPage
from control_api.services.context import Outbox, Record, ServiceContext
from control_api.services.pagination import aware_datetime, decode_cursor, encode_cursor
from control_api.storage.tables import notifications


def user_channel(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


def _out(row: Any) -> NotificationOut:
    return NotificationOut(
        id=row.id,
        kind=row.kind,
        meeting_id=row.meeting_id,
        data=row.data,
        created_at=row.created_at,
        read_at=row.read_at,
    )


class NotificationService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def create(
        self,
        conn: AsyncConnection,
        outbox: Outbox,
        user_ids: list[uuid.UUID],
        kind: str,
        data: dict[str, Any],
        meeting_id: uuid.UUID | None = None,
    ) -> None:
        """Add one notification per user inside the caller's transaction."""
        if not user_ids:
            return
        now = self.ctx.now()
        rows = [
            {
                "id": uuid.uuid4(),
                "user_id": user_id,
                "kind": kind,
                "meeting_id": meeting_id,
                "data": data,
                "created_at": now,
                "read_at": None,
            }
            for user_id in dict.fromkeys(user_ids)
        ]
        await conn.execute(notifications.insert(), rows)
        for row in rows:
            event = _out(Record(row)).model_dump(mode="json")
            outbox.add(user_channel(row["user_id"]), {"type": "notification", "notification": event})

    async def list(
        self, user_id: uuid.UUID, *, unread_only: bool, limit: int, cursor: str | None
    ) -> NotificationPage:
        n = notifications
        query = select(n).where(n.c.user_id == user_id)
        if unread_only:
            query = query.where(n.c.read_at.is_(None))
        if cursor:
            created, ident = decode_cursor(cursor, (aware_datetime, uuid.UUID))
            query = query.where(
                or_(n.c.created_at < created, and_(n.c.created_at == created, n.c.id < ident))
            )
        query = query.order_by(n.c.created_at.desc(), n.c.id.desc()).limit(limit + 1)
        unread = (
            select(func.count())
            .select_from(n)
            .where(n.c.user_id == user_id, n.c.read_at.is_(None))
        )
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(query)).all()
            unread_count = (await conn.execute(unread)).scalar_one()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id) if more else None
        return NotificationPage(
            items=[_out(r) for r in rows], next_cursor=next_cursor, unread_count=unread_count
        )

    async def mark_read(self, user_id: uuid.UUID, notification_id: uuid.UUID) -> NotificationOut:
        n = notifications
        async with self.ctx.db.write() as conn:
            row = (
                await conn.execute(
                    select(n).where(n.c.id == notification_id, n.c.user_id == user_id)
                )
            ).first()
            if row is None:
                raise not_found("notification")
            if row.read_at is None:
                await conn.execute(
                    update(n).where(n.c.id == notification_id).values(read_at=self.ctx.now())
                )
                row = (await conn.execute(select(n).where(n.c.id == notification_id))).one()
        return _out(row)

    async def mark_all_read(self, user_id: uuid.UUID) -> int:
        n = notifications
        async with self.ctx.db.write() as conn:
            result = await conn.execute(
                update(n)
                .where(n.c.user_id == user_id, n.c.read_at.is_(None))
                .values(read_at=self.ctx.now())
            )
        return result.rowcount
