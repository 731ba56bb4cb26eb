"""Meetings: scheduling, the status machine, membership (host, co-hosts, invitees), joining with
room tokens, and participants.

Status machine: ``scheduled -> live -> ended`` and ``scheduled -> cancelled``.  Transitions are
conditional updates (``WHERE status = <expected>``), so two racing requests cannot both win; the
loser gets 409.
"""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.cluster import NoNodeAvailable
from control_api.errors import (
    ServiceError,
    conflict,
    forbidden,
    invalid,
    not_found,
    unauthorized,
    unavailable,
)
from control_api.schemas import (
    Grants,
    IceServerOut,
    InvitationList,
    InvitationOut,
    InviteIn,
    InviteResultOut,
    JoinIn,
    JoinOut,
    MeetingCreateIn,
    MeetingOut,
    MeetingPage,
    MeetingPatchIn,
    MeetingPublicOut,
    MyMeetingsQuery,
    ParticipantList,
    ParticipantOut,
    UpcomingQuery,
    UserRef,
)
from control_api.services.admission import (
    ADMITTED,
    REMOVED,
    WAITING,
    RoomEntry,
    admission_on_join,
    capacity_refusal,
    presence_refusal,
    removed,
)
from control_api.services.attempts import Budget, give_back, reserve
from control_api.services.auth import AuthService, Principal, normalise_email
from control_api.services.calendar import CalendarService, join_url
from control_api.services.context import Outbox, ServiceContext
from control_api.services.notifications import NotificationService
from control_api.services.pagination import aware_datetime, decode_cursor, encode_cursor
from control_api.services.webhooks import WebhookService, meeting_event
from control_api.storage.tables import (
    CANCELLED,
    CLOSED,
    ENDED,
    LIVE,
    SCHEDULED,
    invitations,
    meetings,
    participants,
    users,
)
from turn.auth import rest_credentials

CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz"  # no i, l, o: easy to read aloud and to type
CODE_PATTERN = re.compile(r"[a-z]{10}")
DEFAULT_DURATION = timedelta(minutes=60)
MAX_DURATION = timedelta(hours=24)
GENERATED_PASSCODE_DIGITS = 8
ADMIN_ROLES = ("host", "cohost")
MEMBER_ROLES = ("host", "cohost", "guest", "participant")
TRANSITIONS = {
    "start": (SCHEDULED, LIVE),
    "end": (LIVE, ENDED),
    "cancel": (SCHEDULED, CANCELLED),
}


_MY_INVITATION = invitations.alias("my_invitation")
_MY_PARTICIPATION = participants.alias("my_participation")
# Statements built once: constructing a SQLAlchemy statement and its cache key costs more than
# running it on SQLite, and the join path runs these on every request.
MEETING_WITH_ROLE = select(
    meetings,
    users.c.display_name.label("host_name"),
    _MY_INVITATION.c.role.label("invited_role"),
    _MY_PARTICIPATION.c.id.label("participant_id"),
    _MY_PARTICIPATION.c.admission.label("my_admission"),
).select_from(
    meetings.join(users, users.c.id == meetings.c.host_id)
    .outerjoin(
        _MY_INVITATION,
        and_(_MY_INVITATION.c.meeting_id == meetings.c.id, _MY_INVITATION.c.user_id == bindparam("me")),
    )
    .outerjoin(
        _MY_PARTICIPATION,
        and_(_MY_PARTICIPATION.c.meeting_id == meetings.c.id, _MY_PARTICIPATION.c.user_id == bindparam("me")),
    )
)
ONE_MEETING_WITH_ROLE = MEETING_WITH_ROLE.where(meetings.c.id == bindparam("meeting_id"))


def _participant_upsert(insert: Any) -> Any:
    statement = insert(participants).values(
        id=bindparam("id"),
        meeting_id=bindparam("meeting_id"),
        user_id=bindparam("user_id"),
        display_name=bindparam("display_name"),
        role=bindparam("role"),
        first_joined_at=bindparam("now"),
        last_joined_at=bindparam("now"),
        left_at=None,
        join_count=1,
        admission=bindparam("admission"),
    )
    return statement.on_conflict_do_update(
        index_elements=[participants.c.meeting_id, participants.c.user_id],
        set_={
            "display_name": statement.excluded.display_name,
            "role": statement.excluded.role,
            "last_joined_at": statement.excluded.last_joined_at,
            "left_at": None,
            "join_count": participants.c.join_count + 1,
            "admission": statement.excluded.admission,
        },
        where=participants.c.admission != REMOVED,  # a removal that raced this join wins
    ).returning(*participants.c)


PARTICIPANT_UPSERT = {"sqlite": _participant_upsert(sqlite_insert), "postgresql": _participant_upsert(pg_insert)}


def new_code() -> str:
    """``abc-defg-hjk``: 10 letters from 23, about 45 bits of randomness."""
    letters = "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))
    return f"{letters[:3]}-{letters[3:7]}-{letters[7:]}"


def normalise_code(raw: str) -> str:
    letters = re.sub(r"[\s-]", "", raw.lower())
    if not CODE_PATTERN.fullmatch(letters):
        raise invalid("meeting code must look like abc-defg-hjk", code="invalid_code")
    return f"{letters[:3]}-{letters[3:7]}-{letters[7:]}"


def new_passcode() -> str:
    """What a host gets asking for a generated passcode: digits (easy on a phone keypad), more
    of them than anyone sets by hand."""
    return "".join(secrets.choice("0123456789") for _ in range(GENERATED_PASSCODE_DIGITS))


def join_refusal(row: Any, admin: bool, hidden: bool) -> ServiceError | None:
    """Why nobody in this position may join now, decided before any passcode is looked at (a
    meeting that has not started is no place to test guesses)."""
    if row.status in CLOSED:
        ended = row.status == ENDED
        return conflict(f"meeting_{row.status}", "the meeting has ended" if ended else "the meeting was cancelled")
    if hidden and not admin:
        return forbidden("only the host or a co-host may join hidden")
    if row.status == SCHEDULED and not (admin or row.settings.get("join_before_host")):
        return conflict("meeting_not_started", "the host has not started the meeting yet")
    return None


def meeting_channel(meeting_id: uuid.UUID) -> str:
    return f"meeting:{meeting_id}"


def _field_error(field: str, message: str) -> ServiceError:
    return invalid(message, [{"field": f"body.{field}", "message": message}])


def _in_zone(value: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """Times without an offset are wall-clock times in the meeting's time zone."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(timezone.utc)


def _check_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise _field_error("end_time", "end_time must be after start_time")
    if end - start > MAX_DURATION:
        raise _field_error("end_time", "a meeting may last at most 24 hours")


class MeetingService:
    def __init__(
        self,
        ctx: ServiceContext,
        auth: AuthService,
        calendar: CalendarService,
        notifications: NotificationService,
        webhooks: WebhookService,
    ) -> None:
        self.ctx = ctx
        self.auth = auth
        self.webhooks = webhooks
        self.calendar = calendar
        self.notifications = notifications
        # How many people the meeting's room holds, less ``identity``; set by the signaling
        # server of this node (no room here: nobody).
        self.occupancy: Callable[[uuid.UUID, str], int] = _empty_room

    # Reading -----------------------------------------------------------------------------------

    @staticmethod
    def _role(row: Any, user_id: uuid.UUID) -> str | None:
        if row.host_id == user_id:
            return "host"
        if row.invited_role:
            return str(row.invited_role)
        if row.participant_id is not None:
            return "participant"
        return None

    def _out(self, row: Any, role: str | None) -> MeetingOut:
        return MeetingOut(
            id=row.id,
            code=row.code,
            title=row.title,
            description=row.description,
            kind=row.kind,
            status=row.status,
            host=UserRef(id=row.host_id, display_name=row.host_name),
            start_time=row.start_time,
            end_time=row.end_time,
            timezone=row.timezone,
            settings=row.settings,
            has_passcode=row.passcode is not None,
            passcode=row.passcode if role in ADMIN_ROLES else None,
            join_url=join_url(self.ctx.settings.base_url, row.code),
            my_role=role,  # type: ignore[arg-type]
            created_at=row.created_at,
            updated_at=row.updated_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
        )

    async def load(
        self, conn: AsyncConnection, meeting_id: uuid.UUID, user_id: uuid.UUID
    ) -> tuple[Any, str | None]:
        row = (
            await conn.execute(ONE_MEETING_WITH_ROLE, {"me": user_id, "meeting_id": meeting_id})
        ).first()
        if row is None:
            raise not_found("meeting")
        return row, self._role(row, user_id)

    async def load_member(
        self, conn: AsyncConnection, meeting_id: uuid.UUID, user_id: uuid.UUID, roles: tuple[str, ...]
    ) -> tuple[Any, str]:
        """Meetings are invisible (404) to non-members; members without the role get 403."""
        row, role = await self.load(conn, meeting_id, user_id)
        if role is None:
            raise not_found("meeting")
        if role not in roles:
            raise forbidden("only the host or a co-host may do this", code="not_meeting_admin")
        return row, role

    async def load_present_member(
        self, conn: AsyncConnection, meeting_id: uuid.UUID, user_id: uuid.UUID, roles: tuple[str, ...]
    ) -> tuple[Any, str]:
        """A member who takes part: neither held by the waiting room nor removed (403)."""
        row, role = await self.load_member(conn, meeting_id, user_id, roles)
        refusal = presence_refusal(row.my_admission)
        if refusal is not None:
            raise refusal
        return row, role

    async def get(self, user: Principal, meeting_id: uuid.UUID) -> MeetingOut:
        async with self.ctx.db.read() as conn:
            row, role = await self.load_member(conn, meeting_id, user.id, MEMBER_ROLES)
        return self._out(row, role)

    async def by_code(self, raw_code: str, client_ip: str) -> MeetingPublicOut:
        await self.auth.check_rate(
            f"code:ip:{client_ip}", self.ctx.settings.rate_limits.code_lookup_per_ip, "meeting look-ups"
        )
        code = normalise_code(raw_code)
        async with self.ctx.db.read() as conn:
            row = (
                await conn.execute(
                    select(meetings, users.c.display_name.label("host_name"))
                    .join(users, users.c.id == meetings.c.host_id)
                    .where(meetings.c.code == code)
                )
            ).first()
        if row is None:
            raise not_found("meeting")
        return MeetingPublicOut(
            id=row.id,
            code=row.code,
            title=row.title,
            host_name=row.host_name,
            status=row.status,
            start_time=row.start_time,
            end_time=row.end_time,
            timezone=row.timezone,
            has_passcode=row.passcode is not None,
            waiting_room=bool(row.settings.get("waiting_room")),
        )

    async def _page(
        self, user_id: uuid.UUID, query: Any, limit: int, cursor: str | None, newest_first: bool
    ) -> MeetingPage:
        if cursor:
            start, ident = decode_cursor(cursor, (aware_datetime, uuid.UUID))
            if newest_first:
                after = or_(
                    meetings.c.start_time < start,
                    and_(meetings.c.start_time == start, meetings.c.id < ident),
                )
            else:
                after = or_(
                    meetings.c.start_time > start,
                    and_(meetings.c.start_time == start, meetings.c.id > ident),
                )
            query = query.where(after)
        if newest_first:
            query = query.order_by(meetings.c.start_time.desc(), meetings.c.id.desc())
        else:
            query = query.order_by(meetings.c.start_time, meetings.c.id)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(query.limit(limit + 1), {"me": user_id})).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return MeetingPage(
            items=[self._out(r, self._role(r, user_id)) for r in rows],
            next_cursor=encode_cursor(rows[-1].start_time.isoformat(), rows[-1].id) if more else None,
        )

    def _membership(self, user_id: uuid.UUID, *, participated: bool) -> Any:
        invited = exists().where(
            invitations.c.meeting_id == meetings.c.id, invitations.c.user_id == user_id
        )
        clauses = [meetings.c.host_id == user_id, invited]
        if participated:
            clauses.append(
                exists().where(
                    participants.c.meeting_id == meetings.c.id, participants.c.user_id == user_id
                )
            )
        return or_(*clauses)

    async def my_meetings(self, user: Principal, q: MyMeetingsQuery) -> MeetingPage:
        query = MEETING_WITH_ROLE
        if q.role == "host":
            query = query.where(meetings.c.host_id == user.id)
        elif q.role == "invited":
            query = query.where(
                exists().where(
                    invitations.c.meeting_id == meetings.c.id, invitations.c.user_id == user.id
                )
            )
        elif q.role == "participated":
            query = query.where(
                exists().where(
                    participants.c.meeting_id == meetings.c.id, participants.c.user_id == user.id
                )
            )
        else:
            query = query.where(self._membership(user.id, participated=True))
        if q.status:
            query = query.where(meetings.c.status == q.status)
        return await self._page(user.id, query, q.limit, q.cursor, newest_first=True)

    async def upcoming(self, user: Principal, q: UpcomingQuery) -> MeetingPage:
        query = MEETING_WITH_ROLE.where(
            self._membership(user.id, participated=False),
            or_(
                meetings.c.status == LIVE,
                and_(meetings.c.status == SCHEDULED, meetings.c.end_time > self.ctx.now()),
            ),
        )
        return await self._page(user.id, query, q.limit, q.cursor, newest_first=False)

    # Writing -----------------------------------------------------------------------------------

    async def create(self, user: Principal, body: MeetingCreateIn) -> MeetingOut:
        now = self.ctx.now()
        tz_name = body.timezone or user.timezone
        zone = zoneinfo.ZoneInfo(tz_name)
        if body.end_time is not None and body.duration_minutes is not None:
            raise _field_error("duration_minutes", "give end_time or duration_minutes, not both")
        if body.generate_passcode and body.passcode is not None:
            raise _field_error("generate_passcode", "give passcode or generate_passcode, not both")
        if body.kind == "instant":
            if body.start_time is not None:
                raise _field_error("start_time", "an instant meeting starts now; omit start_time")
            start = now
        else:
            if body.start_time is None:
                raise _field_error("start_time", "a scheduled meeting needs a start_time")
            start = _in_zone(body.start_time, zone)
        if body.end_time is not None:
            end = _in_zone(body.end_time, zone)
        elif body.duration_minutes is not None:
            end = start + timedelta(minutes=body.duration_minutes)
        else:
            end = start + DEFAULT_DURATION
        _check_window(start, end)
        if end <= now:
            raise _field_error("end_time", "the meeting would be over before it is created")
        live = body.kind == "instant"
        row = {
            "id": uuid.uuid4(),
            "host_id": user.id,
            "title": body.title,
            "description": body.description,
            "kind": body.kind,
            "status": LIVE if live else SCHEDULED,
            "start_time": start,
            "end_time": end,
            "timezone": tz_name,
            "passcode": new_passcode() if body.generate_passcode else body.passcode,
            "settings": body.settings.model_dump(),
            "created_at": now,
            "updated_at": now,
            "started_at": now if live else None,
            "ended_at": None,
        }
        async with self.ctx.db.write() as conn:
            row["code"] = await self._unused_code(conn)
            await conn.execute(meetings.insert().values(row))
            meeting, role = await self.load(conn, row["id"], user.id)
            await self.calendar.sync(conn, meeting)
            if live:
                await self.webhooks.emit("meeting.started", meeting_event(meeting), meeting.id, conn)
        return self._out(meeting, role)

    async def _unused_code(self, conn: AsyncConnection) -> str:
        for _ in range(8):
            code = new_code()
            taken = (
                await conn.execute(select(meetings.c.id).where(meetings.c.code == code))
            ).first()
            if taken is None:
                return code
        raise RuntimeError("could not find an unused meeting code")  # 45 bits: never in practice

    async def update(self, user: Principal, meeting_id: uuid.UUID, body: MeetingPatchIn) -> MeetingOut:
        given = body.model_fields_set
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            row, role = await self.load_member(conn, meeting_id, user.id, ADMIN_ROLES)
            if row.status in CLOSED:
                raise conflict("meeting_closed", f"the meeting is {row.status} and cannot change")
            values: dict[str, Any] = {}
            for name in ("title", "description"):
                if name in given:
                    if getattr(body, name) is None:
                        raise _field_error(name, f"{name} cannot be null")
                    values[name] = getattr(body, name)
            if "passcode" in given:
                values["passcode"] = body.passcode
            if body.generate_passcode:
                if "passcode" in given:
                    raise _field_error("generate_passcode", "give passcode or generate_passcode, not both")
                values["passcode"] = new_passcode()
            if "settings" in given:
                if body.settings is None:
                    raise _field_error("settings", "settings cannot be null")
                changes = body.settings.model_dump(exclude_unset=True)
                if any(v is None for v in changes.values()):
                    raise _field_error("settings", "a setting cannot be null")
                values["settings"] = {**row.settings, **changes}
            times_changed = bool(given & {"start_time", "end_time", "timezone"})
            if times_changed:
                if "timezone" in given and body.timezone is None:
                    raise _field_error("timezone", "timezone cannot be null")
                tz_name = body.timezone or row.timezone
                zone = zoneinfo.ZoneInfo(tz_name)
                start, end = row.start_time, row.end_time
                if "start_time" in given:
                    if row.status != SCHEDULED:
                        raise conflict("meeting_live", "a live meeting's start time cannot change")
                    if body.start_time is None:
                        raise _field_error("start_time", "start_time cannot be null")
                    new_start = _in_zone(body.start_time, zone)
                    end = end + (new_start - start)  # keep the duration unless end_time is given
                    start = new_start
                if "end_time" in given:
                    if body.end_time is None:
                        raise _field_error("end_time", "end_time cannot be null")
                    end = _in_zone(body.end_time, zone)
                _check_window(start, end)
                if end <= self.ctx.now():
                    raise _field_error("end_time", "end_time must be in the future")
                values.update(start_time=start, end_time=end, timezone=tz_name)
            if not values:
                return self._out(row, role)
            values["updated_at"] = self.ctx.now()
            await conn.execute(update(meetings).where(meetings.c.id == meeting_id).values(values))
            row, role = await self.load(conn, meeting_id, user.id)
            await self.calendar.sync(conn, row)
            if times_changed:
                await self.notifications.create(
                    conn,
                    outbox,
                    await self._audience(conn, meeting_id, exclude=user.id),
                    "meeting_rescheduled",
                    {"title": row.title, "start_time": row.start_time.isoformat()},
                    meeting_id,
                )
            outbox.add(meeting_channel(meeting_id), {"type": "meeting.updated", "meeting_id": str(meeting_id)})
        await outbox.flush(self.ctx.bus)
        return self._out(row, role)

    async def _audience(
        self, conn: AsyncConnection, meeting_id: uuid.UUID, exclude: uuid.UUID | None
    ) -> list[uuid.UUID]:
        """Who hears about the meeting: the host and everyone invited, less the actor."""
        rows = await conn.execute(
            select(invitations.c.user_id).where(invitations.c.meeting_id == meeting_id)
        )
        host = await conn.execute(select(meetings.c.host_id).where(meetings.c.id == meeting_id))
        ids = [host.scalar_one(), *rows.scalars()]
        return [i for i in ids if i != exclude]

    async def transition(
        self,
        conn: AsyncConnection,
        outbox: Outbox,
        row: Any,
        action: str,
        actor: uuid.UUID,
    ) -> None:
        expected, target = TRANSITIONS[action]
        now = self.ctx.now()
        values: dict[str, Any] = {"status": target, "updated_at": now}
        if target == LIVE:
            values["started_at"] = now
        if target in CLOSED:
            values["ended_at"] = now
        result = await conn.execute(
            update(meetings)
            .where(meetings.c.id == row.id, meetings.c.status == expected)
            .values(values)
        )
        if result.rowcount != 1:
            current = (
                await conn.execute(select(meetings.c.status).where(meetings.c.id == row.id))
            ).scalar_one()
            raise conflict(
                "invalid_transition",
                f"cannot {action} a meeting that is {current}",
                {"status": current, "action": action},
            )
        if target == ENDED:
            await conn.execute(
                update(participants)
                .where(participants.c.meeting_id == row.id, participants.c.left_at.is_(None))
                .values(left_at=now)
            )
        kinds = {LIVE: "meeting_started", CANCELLED: "meeting_cancelled"}
        if target in kinds:
            await self.notifications.create(
                conn,
                outbox,
                await self._audience(conn, row.id, exclude=actor),
                kinds[target],
                {"title": row.title, "code": row.code},
                row.id,
            )
        if target == CANCELLED:
            fresh = (await conn.execute(select(meetings).where(meetings.c.id == row.id))).one()
            await self.calendar.sync(conn, fresh)
        if target in (LIVE, ENDED):
            fresh = (await conn.execute(select(meetings).where(meetings.c.id == row.id))).one()
            kind = "meeting.started" if target == LIVE else "meeting.ended"
            await self.webhooks.emit(kind, meeting_event(fresh), row.id, conn)
        outbox.add(
            meeting_channel(row.id),
            {"type": "meeting.status", "meeting_id": str(row.id), "status": target},
        )

    async def change_status(self, user: Principal, meeting_id: uuid.UUID, action: str) -> MeetingOut:
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            row, _ = await self.load_member(conn, meeting_id, user.id, ADMIN_ROLES)
            await self.transition(conn, outbox, row, action, user.id)
            row, role = await self.load(conn, meeting_id, user.id)
        await outbox.flush(self.ctx.bus)
        return self._out(row, role)

    async def delete(self, user: Principal, meeting_id: uuid.UUID) -> None:
        async with self.ctx.db.write() as conn:
            row, role = await self.load_member(conn, meeting_id, user.id, ADMIN_ROLES)
            if role != "host":
                raise forbidden("only the host may delete a meeting", code="not_host")
            if row.status == LIVE:
                raise conflict("meeting_live", "end the meeting before deleting it")
            await conn.execute(delete(meetings).where(meetings.c.id == meeting_id))

    # Joining -----------------------------------------------------------------------------------

    async def room_node(self, meeting_id: uuid.UUID) -> tuple[str, str | None]:
        """The signaling URL and id of the node a participant joins the meeting's room on (this
        one alone, without an id, outside a cluster)."""
        if self.ctx.cluster is None:
            return self.ctx.settings.effective_signaling_url, None
        try:
            node = await self.ctx.cluster.node_for_join(str(meeting_id))
        except NoNodeAvailable as exc:
            raise unavailable("no_node_available", str(exc)) from None
        return node.signaling_url, node.id

    async def join(
        self, user: Principal, meeting_id: uuid.UUID, body: JoinIn, client_ip: str
    ) -> JoinOut:
        now = self.ctx.now()
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            row, role = await self.load(conn, meeting_id, user.id)
            admin = role in ADMIN_ROLES
            refusal = (
                join_refusal(row, admin, body.hidden)
                or presence_refusal(row.my_admission, waiting_ok=True)
                or capacity_refusal(self.occupancy(row.id, str(user.id)), row.settings, row.host_id == user.id)
            )
            if refusal is not None:
                raise refusal
            if row.passcode is not None and role not in ("host", "cohost", "guest"):
                await self._check_passcode(row, user.id, body.passcode)
            started = row.status == SCHEDULED
            if started:
                await self.transition(conn, outbox, row, "start", user.id)
            display_name = body.display_name or user.display_name
            participant_role = role if role in ("host", "cohost", "guest") else "participant"
            admission = admission_on_join(row.my_admission, bool(row.settings.get("waiting_room")), admin, role)
            participant = await self._upsert_participant(
                conn, row.id, user.id, display_name, participant_role, admission, now
            )
            if started:
                row, role = await self.load(conn, meeting_id, user.id)
            role = role or "participant"
        await outbox.flush(self.ctx.bus)
        waiting = admission == WAITING
        grants = Grants(
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            room_admin=admin,
            hidden=body.hidden,
            recorder=False,
        )
        identity = str(user.id)
        token, expires_at = self.ctx.room_tokens.encode(
            {
                "sub": identity,
                "name": display_name,
                "room": str(meeting_id),
                "role": participant_role,
                "grants": grants.model_dump(),
                "waiting": waiting,
                "jti": uuid.uuid4().hex,
            },
            self.ctx.settings.room_token_ttl,
        )
        signaling_url, node = await self.room_node(meeting_id)
        return JoinOut(
            token=token,
            expires_at=expires_at,
            signaling_url=signaling_url,
            node=node,
            ice_servers=self.ice_servers_for(identity),
            identity=identity,
            grants=grants,
            waiting=waiting,
            participant=participant,
            meeting=self._out(row, role),
        )

    def ice_servers_for(self, identity: str) -> list[IceServerOut]:
        """The configured ICE servers, plus this deployment's TURN server with time-limited
        credentials for this participant when it has an auth secret."""
        settings = self.ctx.settings
        servers = [IceServerOut(**s.model_dump()) for s in settings.ice_servers]
        turn = settings.turn
        uris = turn.client_uris()
        if turn.secrets and uris:
            username, password = rest_credentials(
                turn.secrets[0].get_secret_value(), identity, turn.credential_ttl, now=self.ctx.now().timestamp()
            )
            servers.append(IceServerOut(urls=uris, username=username, credential=password))
        return servers

    async def _check_passcode(self, row: Any, user_id: uuid.UUID, given: str | None) -> None:
        """Each guess counts against the guesser's budget for this meeting and the meeting's own
        budget before it is compared; a right one is given back.  Once either budget is spent,
        every guess is refused, right or wrong (see ``services.attempts``)."""
        if given is None:
            raise forbidden("this meeting needs a passcode", code="passcode_required")
        limits = self.ctx.settings.rate_limits
        budgets = [
            Budget(f"passcode:{user_id}:{row.id}", limits.passcode_per_user),
            Budget(f"passcode:meeting:{row.id}", limits.passcode_per_meeting),
        ]
        now = self.ctx.now().timestamp()
        await reserve(self.ctx.limiter, budgets, now, "wrong passcodes")
        if not hmac.compare_digest(given.encode(), row.passcode.encode()):
            raise forbidden("the passcode is wrong", code="wrong_passcode")
        await give_back(self.ctx.limiter, budgets, now)

    async def _upsert_participant(
        self,
        conn: AsyncConnection,
        meeting_id: uuid.UUID,
        user_id: uuid.UUID,
        display_name: str,
        role: str,
        admission: str,
        now: datetime,
    ) -> ParticipantOut:
        values = {
            "id": uuid.uuid4(),
            "meeting_id": meeting_id,
            "user_id": user_id,
            "display_name": display_name,
            "role": role,
            "admission": admission,
            "now": now,
        }
        statement = PARTICIPANT_UPSERT[self.ctx.db.backend]
        row = (await conn.execute(statement, values)).first()
        if row is None:
            raise removed()
        return _participant_out(row)

    async def participants(self, user: Principal, meeting_id: uuid.UUID) -> ParticipantList:
        async with self.ctx.db.read() as conn:
            await self.load_present_member(conn, meeting_id, user.id, MEMBER_ROLES)
            rows = (
                await conn.execute(
                    select(participants)
                    .where(participants.c.meeting_id == meeting_id)
                    .order_by(participants.c.first_joined_at, participants.c.id)
                )
            ).all()
        return ParticipantList(items=[_participant_out(r) for r in rows])

    # The meeting's room (signaling) and host actions ---------------------------------------------

    async def enter_room(self, claims: dict[str, Any], meeting: Any, seats_taken: int) -> RoomEntry:
        """Whether the holder of a room token may enter the room now, and held or not; the
        participants table decides, the token only for identities it does not know (bots)."""
        admission = meeting.my_admission
        refusal = presence_refusal(admission, waiting_ok=True) or capacity_refusal(
            seats_taken, meeting.settings, str(meeting.host_id) == str(claims["sub"])
        )
        if refusal is not None:
            raise refusal
        await self._spend_room_token(claims)
        waiting = admission == WAITING if admission is not None else bool(claims.get("waiting"))
        return RoomEntry(waiting=waiting)

    async def _spend_room_token(self, claims: dict[str, Any]) -> None:
        """Room tokens are good for one entry: the ``jti`` is remembered until the token expires
        (in Redis when the nodes share one, so on every node), and a replay is refused.  A lost
        connection resumes its session with the session's own secret, not with the token."""
        jti = claims.get("jti")
        if not isinstance(jti, str):
            return  # only tokens minted outside the API (load tests) have none
        now = self.ctx.now().timestamp()
        if not await self.ctx.limiter.claim(f"room-token:{jti}", float(claims["exp"]), now):
            raise unauthorized("this room token has been used already; ask POST /join for a new one", code="invalid_token")

    async def remove_participant(self, admin: Principal, meeting_id: uuid.UUID, identity: str) -> None:
        """Removed for good: REST and signaling refuse them until a host lets them back in."""
        target = _as_uuid(identity)
        now = self.ctx.now()
        async with self.ctx.db.write() as conn:
            row, _ = await self.load_member(conn, meeting_id, admin.id, ADMIN_ROLES)
            if target == row.host_id:
                raise forbidden("nobody can remove the host of a meeting", code="cannot_remove_host")
            await conn.execute(
                update(participants)
                .where(participants.c.meeting_id == meeting_id, participants.c.user_id == target)
                .values(admission=REMOVED, removed_at=now, left_at=now)
            )

    async def admit(self, admin: Principal, meeting_id: uuid.UUID, identity: str) -> str | None:
        """Let someone in, out of the waiting room or back after a removal.  Returns what they
        were (None: the meeting knows no such participant)."""
        async with self.ctx.db.write() as conn:
            await self.load_member(conn, meeting_id, admin.id, ADMIN_ROLES)
            return await self._let_in(conn, meeting_id, _as_uuid(identity), (WAITING, REMOVED))

    async def readmit(self, admin: Principal, meeting_id: uuid.UUID, user_id: uuid.UUID) -> ParticipantOut:
        """Let a removed person back in (REST).  People in the waiting room are admitted from
        the meeting's room, where the host sees them."""
        async with self.ctx.db.write() as conn:
            await self.load_member(conn, meeting_id, admin.id, ADMIN_ROLES)
            previous = await self._let_in(conn, meeting_id, user_id, (REMOVED,))
            if previous is None:
                raise not_found("participant")
            if previous != REMOVED:
                raise conflict("not_removed", f"this participant is {previous}, not removed", {"admission": previous})
            row = (
                await conn.execute(
                    select(participants).where(participants.c.meeting_id == meeting_id, participants.c.user_id == user_id)
                )
            ).one()
        return _participant_out(row)

    async def _let_in(
        self, conn: AsyncConnection, meeting_id: uuid.UUID, user_id: uuid.UUID | None, states: tuple[str, ...]
    ) -> str | None:
        where = (participants.c.meeting_id == meeting_id, participants.c.user_id == user_id)
        previous = (await conn.execute(select(participants.c.admission).where(*where))).scalar()
        if previous in states:
            await conn.execute(update(participants).where(*where).values(admission=ADMITTED, removed_at=None))
        return previous

    # Invitations -------------------------------------------------------------------------------

    def _invitation_query(self, meeting_id: uuid.UUID) -> Any:
        return (
            select(invitations, users.c.email, users.c.display_name)
            .join(users, users.c.id == invitations.c.user_id)
            .where(invitations.c.meeting_id == meeting_id)
            .order_by(invitations.c.created_at, users.c.email)
        )

    async def invite(self, user: Principal, meeting_id: uuid.UUID, body: InviteIn) -> InviteResultOut:
        """Each address counts against the inviter's budget, so that invitations can neither
        probe which addresses have accounts nor flood people with notifications."""
        emails = list(dict.fromkeys(normalise_email(e) for e in body.emails))
        await self.auth.check_rate(
            f"invite:{user.id}", self.ctx.settings.rate_limits.invite_per_user, "invited addresses", cost=len(emails)
        )
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            row, role = await self.load_member(conn, meeting_id, user.id, ADMIN_ROLES)
            if body.role == "cohost" and role != "host":
                raise forbidden("only the host may appoint co-hosts", code="not_host")
            if row.status in CLOSED:
                raise conflict("meeting_closed", f"the meeting is {row.status}")
            found = (
                await conn.execute(select(users.c.id, users.c.email).where(users.c.email.in_(emails)))
            ).all()
            by_email = {r.email: r.id for r in found}
            existing = {
                r.user_id: r.role
                for r in await conn.execute(
                    select(invitations.c.user_id, invitations.c.role).where(
                        invitations.c.meeting_id == meeting_id
                    )
                )
            }
            now = self.ctx.now()
            new_ids: list[uuid.UUID] = []
            for email in emails:
                invitee = by_email.get(email)
                if invitee is None or invitee == row.host_id:
                    continue
                if invitee not in existing:
                    await conn.execute(
                        invitations.insert().values(
                            meeting_id=meeting_id,
                            user_id=invitee,
                            role=body.role,
                            invited_by=user.id,
                            created_at=now,
                        )
                    )
                    new_ids.append(invitee)
                elif existing[invitee] != body.role and role == "host":
                    await conn.execute(
                        update(invitations)
                        .where(invitations.c.meeting_id == meeting_id, invitations.c.user_id == invitee)
                        .values(role=body.role)
                    )
            await self.notifications.create(
                conn,
                outbox,
                new_ids,
                "invited",
                {
                    "title": row.title,
                    "code": row.code,
                    "start_time": row.start_time.isoformat(),
                    "invited_by": user.display_name,
                },
                meeting_id,
            )
            invited_ids = {by_email[e] for e in emails if e in by_email}
            rows = (await conn.execute(self._invitation_query(meeting_id))).all()
        await outbox.flush(self.ctx.bus)
        return InviteResultOut(
            invited=[_invitation_out(r) for r in rows if r.user_id in invited_ids],
            unknown_emails=[e for e in emails if e not in by_email],
        )

    async def invitations(self, user: Principal, meeting_id: uuid.UUID) -> InvitationList:
        async with self.ctx.db.read() as conn:
            await self.load_member(conn, meeting_id, user.id, ADMIN_ROLES)
            rows = (await conn.execute(self._invitation_query(meeting_id))).all()
        return InvitationList(items=[_invitation_out(r) for r in rows])

    async def uninvite(self, user: Principal, meeting_id: uuid.UUID, invitee: uuid.UUID) -> None:
        async with self.ctx.db.write() as conn:
            _, role = await self.load_member(conn, meeting_id, user.id, ADMIN_ROLES)
            current = (
                await conn.execute(
                    select(invitations.c.role).where(
                        invitations.c.meeting_id == meeting_id, invitations.c.user_id == invitee
                    )
                )
            ).scalar()
            if current is None:
                raise not_found("invitation")
            if current == "cohost" and role != "host":
                raise forbidden("only the host may remove a co-host", code="not_host")
            await conn.execute(
                delete(invitations).where(
                    invitations.c.meeting_id == meeting_id, invitations.c.user_id == invitee
                )
            )

    async def member_role(self, meeting_id: uuid.UUID, user_id: uuid.UUID) -> tuple[Any, str | None]:
        """The meeting row and the user's role in it (None for strangers); 404 if no meeting."""
        async with self.ctx.db.read() as conn:
            return await self.load(conn, meeting_id, user_id)


def _empty_room(meeting_id: uuid.UUID, identity: str) -> int:
    return 0


def _as_uuid(identity: str) -> uuid.UUID | None:
    """A room identity as a user id; None for identities that are no user (minted for bots)."""
    try:
        return uuid.UUID(identity)
    except ValueError:
        return None


def _participant_out(row: Any) -> ParticipantOut:
    return ParticipantOut(
        user_id=row.user_id,
        display_name=row.display_name,
        role=row.role,
        first_joined_at=row.first_joined_at,
        last_joined_at=row.last_joined_at,
        left_at=row.left_at,
        join_count=row.join_count,
        admission=row.admission,
    )


def _invitation_out(row: Any) -> InvitationOut:
    return InvitationOut(
        user=UserRef(id=row.user_id, display_name=row.display_name),
        email=row.email,
        role=row.role,
        invited_at=row.created_at,
    )
