"""Meeting chat: stored, readable as history with cursor pagination, and published live on the
meeting's channel.  Private messages are visible only to their sender and recipient."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_, select

from control_api.errors import conflict, invalid
from control_api.schemas import MessageOut, MessagePage, UserRef
from control_api.services.attempts import Budget, reserve
from control_api.services.auth import Principal
from control_api.services.context import Outbox, ServiceContext
from control_api.services.meetings import MEMBER_ROLES, MeetingService, meeting_channel
from control_api.services.pagination import decode_cursor, encode_cursor
from control_api.storage.tables import LIVE, messages
from control_api.text import text_problem


def _out(row: Any) -> MessageOut:
    return MessageOut(
        id=row.id,
        meeting_id=row.meeting_id,
        sender=UserRef(id=row.sender_id, display_name=row.sender_name) if row.sender_id else None,
        recipient_id=row.recipient_id,
        private=row.recipient_id is not None,
        body=row.body,
        created_at=row.created_at,
    )


class ChatService:
    def __init__(self, ctx: ServiceContext, meetings: MeetingService) -> None:
        self.ctx = ctx
        self.meetings = meetings

    async def post(
        self,
        user: Principal,
        meeting_id: uuid.UUID,
        body: str,
        recipient_id: uuid.UUID | None,
        sender_name: str | None = None,
    ) -> MessageOut:
        """Store a chat message from a member of a live meeting and publish it."""
        problem = text_problem(body)  # REST bodies were checked by their schema; signaling's not
        if problem:
            raise invalid(f"the message {problem}", [{"field": "body.body", "message": problem}])
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            row, _ = await self.meetings.load_present_member(conn, meeting_id, user.id, MEMBER_ROLES)
            if row.status != LIVE:
                raise conflict("meeting_not_live", "chat is open only while the meeting is live")
            await self._count(user.id, meeting_id)
            if recipient_id is not None:
                if recipient_id == user.id:
                    raise invalid("a private message needs another recipient", code="invalid_recipient")
                _, recipient_role = await self.meetings.load(conn, meeting_id, recipient_id)
                if recipient_role is None:
                    raise invalid("the recipient is not in this meeting", code="invalid_recipient")
            values = {
                "meeting_id": meeting_id,
                "sender_id": user.id,
                "sender_name": sender_name or user.display_name,
                "recipient_id": recipient_id,
                "body": body,
                "created_at": self.ctx.now(),
            }
            stored = (
                await conn.execute(messages.insert().values(values).returning(*messages.c))
            ).one()
            message = _out(stored)
            await self.meetings.webhooks.emit(
                "chat.message", {"meeting_id": str(meeting_id), "message": message.model_dump(mode="json")}, meeting_id, conn
            )
            outbox.add(
                meeting_channel(meeting_id),
                {"type": "chat.message", "message": message.model_dump(mode="json")},
            )
        await outbox.flush(self.ctx.bus)
        return message

    async def _count(self, user_id: uuid.UUID, meeting_id: uuid.UUID) -> None:
        """One budget for REST and signaling alike: per sender in the meeting, and per meeting
        (every message fans out to everyone in it)."""
        limits = self.ctx.settings.rate_limits
        budgets = [
            Budget(f"chat:{meeting_id}:{user_id}", limits.chat_per_user),
            Budget(f"chat:{meeting_id}", limits.chat_per_meeting),
        ]
        await reserve(self.ctx.limiter, budgets, self.ctx.now().timestamp(), "chat messages")

    async def history(
        self, user: Principal, meeting_id: uuid.UUID, limit: int, before: str | None
    ) -> MessagePage:
        m = messages
        query = select(m).where(
            m.c.meeting_id == meeting_id,
            or_(m.c.recipient_id.is_(None), m.c.sender_id == user.id, m.c.recipient_id == user.id),
        )
        if before:
            (last_id,) = decode_cursor(before, (int,))
            query = query.where(m.c.id < last_id)
        query = query.order_by(m.c.id.desc()).limit(limit + 1)
        async with self.ctx.db.read() as conn:
            await self.meetings.load_present_member(conn, meeting_id, user.id, MEMBER_ROLES)
            rows = (await conn.execute(query)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return MessagePage(
            items=[_out(r) for r in rows], next_cursor=encode_cursor(rows[-1].id) if more else None
        )
