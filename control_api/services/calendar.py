"""Calendar: one ``calendar_events`` row per meeting, kept in step in the same transaction as
every change to the meeting, and rendered as iCalendar (RFC 5545) with the meeting's own time
zone (VTIMEZONE included) for a single meeting or for a user's whole feed."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import timedelta
from typing import Any

from icalendar import Calendar, Event, vCalAddress, vText
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.errors import unauthorized
from control_api.schemas import CalendarTokenOut
from control_api.security import new_opaque_token, token_digest
from control_api.services.context import ServiceContext
from control_api.storage.tables import CANCELLED, calendar_events, invitations, meetings, users

PRODID = "-//VideoConf//Meetings//EN"
FEED_HISTORY = timedelta(days=60)


def join_url(base_url: str, code: str) -> str:
    return f"{base_url}/j/{code}"


class CalendarService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def sync(self, conn: AsyncConnection, meeting: Any) -> None:
        """Create or update the meeting's event; every change raises its SEQUENCE."""
        now = self.ctx.now()
        values = {
            "summary": meeting.title,
            "description": meeting.description,
            "location": join_url(self.ctx.settings.base_url, meeting.code),
            "starts_at": meeting.start_time,
            "ends_at": meeting.end_time,
            "timezone": meeting.timezone,
            "status": "CANCELLED" if meeting.status == CANCELLED else "CONFIRMED",
            "updated_at": now,
        }
        ce = calendar_events
        result = await conn.execute(
            update(ce)
            .where(ce.c.meeting_id == meeting.id)
            .values(sequence=ce.c.sequence + 1, **values)
        )
        if result.rowcount == 0:
            await conn.execute(
                ce.insert().values(
                    id=uuid.uuid4(),
                    meeting_id=meeting.id,
                    uid=f"{meeting.id}@videoconf",
                    sequence=0,
                    created_at=now,
                    **values,
                )
            )

    def _event(self, row: Any) -> Event:
        tz = zoneinfo.ZoneInfo(row.timezone)
        event = Event()
        event.add("uid", row.uid)
        event.add("sequence", row.sequence)
        event.add("dtstamp", row.updated_at)
        event.add("created", row.created_at)
        event.add("last-modified", row.updated_at)
        event.add("dtstart", row.starts_at.astimezone(tz))
        event.add("dtend", row.ends_at.astimezone(tz))
        event.add("summary", row.summary)
        description = row.description
        description += ("\n\n" if description else "") + f"Join: {row.location}"
        event.add("description", description)
        event.add("location", row.location)
        event.add("url", row.location)
        event.add("status", row.status)
        organizer = vCalAddress(f"mailto:{row.host_email}")
        organizer.params["cn"] = vText(row.host_name)
        event.add("organizer", organizer)
        return event

    def render(self, rows: list[Any], name: str) -> bytes:
        cal = Calendar()
        cal.add("prodid", PRODID)
        cal.add("version", "2.0")
        cal.add("calscale", "GREGORIAN")
        cal.add("method", "PUBLISH")
        cal.add("x-wr-calname", vText(name))  # as TEXT, so a line break is escaped, not refused
        for row in rows:
            cal.add_component(self._event(row))
        cal.add_missing_timezones()
        return cal.to_ical()

    def _events_query(self) -> Any:
        ce = calendar_events
        return select(
            ce, users.c.email.label("host_email"), users.c.display_name.label("host_name")
        ).select_from(
            ce.join(meetings, meetings.c.id == ce.c.meeting_id).join(
                users, users.c.id == meetings.c.host_id
            )
        )

    async def meeting_ics(self, meeting_id: uuid.UUID) -> bytes:
        async with self.ctx.db.read() as conn:
            rows = (
                await conn.execute(
                    self._events_query().where(calendar_events.c.meeting_id == meeting_id)
                )
            ).all()
        return self.render(rows, rows[0].summary if rows else "Meeting")

    async def feed_ics(self, user_id: uuid.UUID) -> bytes:
        """Meetings the user hosts or is invited to, from two months back on."""
        since = self.ctx.now() - FEED_HISTORY
        invited = select(invitations.c.meeting_id).where(invitations.c.user_id == user_id)
        query = (
            self._events_query()
            .where(
                or_(meetings.c.host_id == user_id, meetings.c.id.in_(invited)),
                calendar_events.c.ends_at >= since,
            )
            .order_by(calendar_events.c.starts_at)
        )
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return self.render(rows, "VideoConf meetings")

    async def new_feed_token(self, user_id: uuid.UUID) -> CalendarTokenOut:
        """A fresh secret feed address; the previous one stops working."""
        token = new_opaque_token()
        async with self.ctx.db.write() as conn:
            result = await conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(calendar_token_hash=token_digest(token))
            )
        if result.rowcount != 1:
            raise unauthorized("this account no longer exists", code="invalid_token")
        return CalendarTokenOut(
            token=token, feed_url=f"{self.ctx.settings.base_url}/api/calendar/feed.ics?token={token}"
        )

    async def revoke_feed_token(self, user_id: uuid.UUID) -> None:
        async with self.ctx.db.write() as conn:
            await conn.execute(
                update(users).where(users.c.id == user_id).values(calendar_token_hash=None)
            )

    async def user_for_feed_token(self, token: str) -> uuid.UUID:
        async with self.ctx.db.read() as conn:
            user_id = (
                await conn.execute(
                    select(users.c.id).where(users.c.calendar_token_hash == token_digest(token))
                )
            ).scalar()
        if user_id is None:
            raise unauthorized("calendar feed token is not valid", code="invalid_token")
        return user_id
