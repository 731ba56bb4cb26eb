"""Recordings metadata and files.

Hosts and co-hosts start and stop recordings (through ``controller``, the SFU node's recorder
manager); the recorder calls ``begin``, ``mark_processing``, ``finish`` and ``fail``; people
list, read, download and delete.  A recording is visible to the meeting's owner (the host at
the time) and to the meeting's co-hosts.  Ready recordings can be downloaded, and so can the
partial file of a recording whose recorder failed.  Files live under ``recordings_dir``, and a
stored file name can never point outside it.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import and_, delete, or_, select, update

from control_api.errors import conflict, forbidden, not_found, unavailable
from control_api.schemas import RecordingOut, RecordingPage
from control_api.services.auth import Principal
from control_api.services.context import Outbox, ServiceContext
from control_api.services.notifications import NotificationService
from control_api.services.pagination import aware_datetime, decode_cursor, encode_cursor
from control_api.services.webhooks import WebhookService, recording_event
from control_api.storage.tables import LIVE, invitations, meetings, recordings

log = logging.getLogger(__name__)


class RecordingController(Protocol):
    """Starts and stops the recorder of a meeting's room (``recorder.manager.RecorderManager``)."""

    async def start(self, meeting_id: uuid.UUID, layout: str | None = None, by: str | None = None) -> RecordingOut: ...

    async def stop(self, meeting_id: uuid.UUID, reason: str = "stopped") -> uuid.UUID: ...


class RecordingService:
    def __init__(self, ctx: ServiceContext, notifications: NotificationService, webhooks: WebhookService) -> None:
        self.ctx = ctx
        self.notifications = notifications
        self.webhooks = webhooks
        self.controller: RecordingController | None = None

    @property
    def directory(self) -> Path:
        return self.ctx.settings.effective_recordings_dir

    def out(self, row: Any) -> RecordingOut:
        ready = row.status == "ready" or (row.status == "failed" and bool(row.file_name))
        return RecordingOut(
            id=row.id,
            meeting_id=row.meeting_id,
            meeting_title=row.meeting_title,
            status=row.status,
            started_at=row.started_at,
            ended_at=row.ended_at,
            duration_seconds=row.duration_seconds,
            size_bytes=row.size_bytes,
            content_type=row.content_type,
            participants=list(row.participants),
            download_url=f"{self.ctx.settings.base_url}/api/recordings/{row.id}/download" if ready else None,
            error=row.error,
        )

    def _visible_to(self, user_id: uuid.UUID) -> Any:
        cohosted = select(invitations.c.meeting_id).where(
            invitations.c.user_id == user_id, invitations.c.role == "cohost"
        )
        return or_(recordings.c.owner_id == user_id, recordings.c.meeting_id.in_(cohosted))

    def path_of(self, file_name: str) -> Path:
        root = self.directory
        path = (root / file_name).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"recording file name {file_name!r} escapes the recordings directory")
        return path

    # For hosts ---------------------------------------------------------------------------------

    async def _admin_of(self, user: Principal, meeting_id: uuid.UUID) -> RecordingController:
        async with self.ctx.db.read() as conn:
            meeting = (await conn.execute(select(meetings).where(meetings.c.id == meeting_id))).first()
            cohost = (
                await conn.execute(
                    select(invitations.c.user_id).where(
                        invitations.c.meeting_id == meeting_id, invitations.c.user_id == user.id,
                        invitations.c.role == "cohost",
                    )
                )
            ).first()
        if meeting is None:
            raise not_found("meeting")
        if meeting.host_id != user.id and cohost is None:
            raise forbidden("only the host or a co-host can start or stop a recording", "not_meeting_admin")
        if self.controller is None:
            raise unavailable("recording_unavailable", "this server has no recorder")
        return self.controller

    async def start(self, user: Principal, meeting_id: uuid.UUID, layout: str | None) -> RecordingOut:
        controller = await self._admin_of(user, meeting_id)
        return await controller.start(meeting_id, layout, by=str(user.id))

    async def stop(self, user: Principal, meeting_id: uuid.UUID) -> RecordingOut:
        controller = await self._admin_of(user, meeting_id)
        recording_id = await controller.stop(meeting_id)
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(recordings).where(recordings.c.id == recording_id))).one()
        return self.out(row)

    async def fail_unfinished(self) -> int:
        """At start-up: recordings left recording or processing by a server that stopped
        without finishing them cannot finish any more."""
        async with self.ctx.db.write() as conn:
            failed = (
                await conn.execute(
                    update(recordings)
                    .where(recordings.c.status.in_(("recording", "processing")))
                    .values(status="failed", error="the server stopped during the recording", ended_at=self.ctx.now())
                    .returning(*recordings.c)
                )
            ).all()
            for row in failed:
                await self.webhooks.emit("recording.failed", recording_event(row), row.meeting_id, conn)
        return len(failed)

    # For the recorder --------------------------------------------------------------------------

    async def begin(self, meeting_id: uuid.UUID) -> RecordingOut:
        """Open a recording row for a live meeting, owned by its host."""
        async with self.ctx.db.write() as conn:
            meeting = (await conn.execute(select(meetings).where(meetings.c.id == meeting_id))).first()
            if meeting is None:
                raise not_found("meeting")
            if meeting.status != LIVE:
                raise conflict("meeting_not_live", "only a live meeting can be recorded")
            if not meeting.settings.get("allow_recording", True):
                raise conflict("recording_not_allowed", "this meeting does not allow recording")
            now = self.ctx.now()
            row = (
                await conn.execute(
                    recordings.insert()
                    .values(
                        id=uuid.uuid4(),
                        meeting_id=meeting_id,
                        owner_id=meeting.host_id,
                        meeting_title=meeting.title,
                        status="recording",
                        participants=[],
                        started_at=now,
                        created_at=now,
                    )
                    .returning(*recordings.c)
                )
            ).one()
            await self.webhooks.emit("recording.started", recording_event(row), meeting_id, conn)
        return self.out(row)

    async def mark_processing(self, recording_id: uuid.UUID) -> None:
        await self._set(recording_id, ("recording",), status="processing", ended_at=self.ctx.now())

    async def finish(
        self,
        recording_id: uuid.UUID,
        *,
        file_name: str,
        duration_seconds: int,
        participants: list[str],
        content_type: str = "video/mp4",
    ) -> RecordingOut:
        path = self.path_of(file_name)
        size = path.stat().st_size
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            row = await self._set_in(
                conn,
                recording_id,
                ("recording", "processing"),
                status="ready",
                file_name=file_name,
                size_bytes=size,
                duration_seconds=duration_seconds,
                participants=participants,
                content_type=content_type,
            )
            if row.ended_at is None:
                await conn.execute(
                    update(recordings).where(recordings.c.id == recording_id).values(ended_at=self.ctx.now())
                )
                row = (await conn.execute(select(recordings).where(recordings.c.id == recording_id))).one()
            await self.notifications.create(
                conn,
                outbox,
                [row.owner_id],
                "recording_ready",
                {"recording_id": str(row.id), "title": row.meeting_title},
                row.meeting_id,
            )
            await self.webhooks.emit("recording.ready", recording_event(row), row.meeting_id, conn)
        await outbox.flush(self.ctx.bus)
        return self.out(row)

    async def fail(
        self, recording_id: uuid.UUID, error: str, *, file_name: str | None = None, duration_seconds: int | None = None
    ) -> None:
        """The recording failed; a partial file (``file_name``) stays downloadable."""
        values: dict[str, Any] = {"status": "failed", "error": error[:2000], "ended_at": self.ctx.now()}
        if file_name is not None:
            path = self.path_of(file_name)
            values.update(file_name=file_name, size_bytes=path.stat().st_size if path.is_file() else None)
            values["duration_seconds"] = duration_seconds
        async with self.ctx.db.write() as conn:
            row = await self._set_in(conn, recording_id, ("recording", "processing"), **values)
            await self.webhooks.emit("recording.failed", recording_event(row), row.meeting_id, conn)

    async def _set(self, recording_id: uuid.UUID, allowed: tuple[str, ...], **values: Any) -> Any:
        async with self.ctx.db.write() as conn:
            return await self._set_in(conn, recording_id, allowed, **values)

    async def _set_in(self, conn: Any, recording_id: uuid.UUID, allowed: tuple[str, ...], **values: Any) -> Any:
        row = (
            await conn.execute(
                update(recordings)
                .where(recordings.c.id == recording_id, recordings.c.status.in_(allowed))
                .values(**values)
                .returning(*recordings.c)
            )
        ).first()
        if row is None:
            raise conflict("invalid_transition", f"recording is not in state {' or '.join(allowed)}")
        return row

    # For people --------------------------------------------------------------------------------

    async def list(
        self, user: Principal, meeting_id: uuid.UUID | None, limit: int, cursor: str | None
    ) -> RecordingPage:
        r = recordings
        query = select(r).where(self._visible_to(user.id))
        if meeting_id is not None:
            query = query.where(r.c.meeting_id == meeting_id)
        if cursor:
            started, ident = decode_cursor(cursor, (aware_datetime, uuid.UUID))
            query = query.where(or_(r.c.started_at < started, and_(r.c.started_at == started, r.c.id < ident)))
        query = query.order_by(r.c.started_at.desc(), r.c.id.desc()).limit(limit + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(query)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return RecordingPage(
            items=[self.out(row) for row in rows],
            next_cursor=encode_cursor(rows[-1].started_at.isoformat(), rows[-1].id) if more else None,
        )

    async def _visible(self, user: Principal, recording_id: uuid.UUID) -> Any:
        async with self.ctx.db.read() as conn:
            row = (
                await conn.execute(
                    select(recordings).where(recordings.c.id == recording_id, self._visible_to(user.id))
                )
            ).first()
        if row is None:
            raise not_found("recording")
        return row

    async def get(self, user: Principal, recording_id: uuid.UUID) -> RecordingOut:
        return self.out(await self._visible(user, recording_id))

    async def file_for_download(self, user: Principal, recording_id: uuid.UUID) -> tuple[Path, RecordingOut]:
        row = await self._visible(user, recording_id)
        if row.status not in ("ready", "failed") or not row.file_name:
            raise conflict("recording_not_ready", f"the recording is {row.status}")
        path = self.path_of(row.file_name)
        if not path.is_file():
            raise conflict("recording_file_missing", "the recording's file is missing on the server")
        return path, self.out(row)

    async def delete(self, user: Principal, recording_id: uuid.UUID) -> None:
        row = await self._visible(user, recording_id)
        if row.status == "recording":
            raise conflict("recording_in_progress", "stop the recording before deleting it")
        async with self.ctx.db.write() as conn:
            await conn.execute(delete(recordings).where(recordings.c.id == recording_id))
        if row.file_name:
            try:
                self.path_of(row.file_name).unlink(missing_ok=True)
            except (OSError, ValueError):
                log.exception("could not remove the file of deleted recording %s", recording_id)
