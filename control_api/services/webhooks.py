"""Webhooks: endpoints, the outbox of events, and the delivery log.

``emit`` writes an event and one pending delivery per enabled endpoint that wants it, inside the
caller's transaction when it has one: an event exists exactly when what caused it committed, and,
being in the database, survives a restart until it is delivered (at least once).  ``claim``
hands a node's worker (``control_api.webhook_worker``) the deliveries that are due, leasing them
so that no other node posts them meanwhile; ``record`` stores the outcome and schedules the next
try.  Events of the SFU (joins, leaves, tracks) go through ``EventQueue`` so that the media path
never waits for the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from control_api.errors import invalid, not_found
from control_api.services.context import Outbox, Record, ServiceContext
from control_api.services.notifications import NotificationService
from control_api.services.pagination import decode_cursor, encode_cursor
from control_api.storage.tables import users, webhook_deliveries, webhook_endpoints, webhook_events
from control_api.webhook_format import EVENT_TYPES, RetryPolicy, new_secret, wanted
from control_api.webhook_schemas import (
    DeliveriesQuery,
    DeliveryOut,
    DeliveryPage,
    WebhookCreatedOut,
    WebhookCreateIn,
    WebhookList,
    WebhookOut,
    WebhookPatchIn,
)
from control_api.webhook_urls import Resolve, UnsafeUrl, UrlGuard, system_resolve, url_policy

log = logging.getLogger(__name__)

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds the lease of, with what it needs to post it."""

    id: int
    endpoint_id: uuid.UUID
    url: str
    secret: str
    event_id: str
    payload: dict[str, Any]
    attempts: int  # before this one
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def meeting_event(row: Any) -> dict[str, Any]:
    """The ``data`` of meeting.started and meeting.ended."""
    return {
        "meeting_id": str(row.id),
        "meeting": {
            "id": str(row.id), "code": row.code, "title": row.title, "host_id": str(row.host_id),
            "status": row.status, "started_at": _iso(row.started_at), "ended_at": _iso(row.ended_at),
        },
    }


def recording_event(row: Any) -> dict[str, Any]:
    """The ``data`` of recording.started, recording.ready and recording.failed."""
    return {
        "meeting_id": str(row.meeting_id) if row.meeting_id else None,
        "recording": {
            "id": str(row.id), "status": row.status, "started_at": _iso(row.started_at),
            "ended_at": _iso(row.ended_at), "duration_seconds": row.duration_seconds,
            "size_bytes": row.size_bytes, "error": row.error,
        },
    }


def _endpoint_out(row: Any) -> WebhookOut:
    return WebhookOut(
        id=row.id, url=row.url, events=list(row.events), ordered=row.ordered, enabled=row.enabled,
        disabled_reason=row.disabled_reason, notify_email=row.notify_email, description=row.description,
        created_at=row.created_at, updated_at=row.updated_at, failing_since=row.failing_since,
    )


def _delivery_out(row: Any) -> DeliveryOut:
    return DeliveryOut(
        id=row.id, endpoint_id=row.endpoint_id, event_id=row.public_id, event_type=row.type,
        meeting_id=row.meeting_id, status=row.status, attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == PENDING else None,
        last_attempt_at=row.last_attempt_at, last_status_code=row.last_status_code,
        last_error=row.last_error, created_at=row.created_at,
    )


def _delivery_query() -> Any:
    d, ev = webhook_deliveries, webhook_events
    return select(d, ev.c.public_id, ev.c.type).join(ev, ev.c.id == d.c.event_id)


class WebhookService:
    def __init__(self, ctx: ServiceContext, notifications: NotificationService, resolve: Resolve = system_resolve) -> None:
        self.ctx = ctx
        self.notifications = notifications
        settings = ctx.settings.webhooks
        self.guard = UrlGuard(url_policy(settings.allow_private_addresses, settings.allowed_networks), resolve)
        self.retry = RetryPolicy(tuple(settings.retry_delays), settings.retry_window, settings.jitter)
        self.rng = random.Random()
        self.wakeup = asyncio.Event()  # set when an event is written: the worker looks sooner

    # Emitting ---------------------------------------------------------------------------------

    async def emit(self, event_type: str, data: dict[str, Any], meeting_id: uuid.UUID | None = None, conn: Any = None) -> None:
        """Write the event and its deliveries, in ``conn``'s transaction when given."""
        if conn is not None:
            await self._write(conn, [(event_type, data, meeting_id)])
        else:
            async with self.ctx.db.write() as own:
                await self._write(own, [(event_type, data, meeting_id)])
        self.wakeup.set()

    async def emit_many(self, events: list[tuple[str, dict[str, Any], uuid.UUID | None]]) -> None:
        async with self.ctx.db.write() as conn:
            await self._write(conn, events)
        self.wakeup.set()

    async def _write(self, conn: Any, events: list[tuple[str, dict[str, Any], uuid.UUID | None]]) -> None:
        assert all(kind in EVENT_TYPES for kind, _, _ in events)
        e = webhook_endpoints
        endpoints = (await conn.execute(select(e.c.id, e.c.events).where(e.c.enabled))).all()
        if not endpoints:
            return  # nobody listens: nothing to keep
        now = self.ctx.now()
        for event_type, data, meeting_id in events:
            targets = [row.id for row in endpoints if wanted(list(row.events), event_type)]
            if not targets:
                continue
            public_id = f"evt_{uuid.uuid4().hex}"
            payload = {"id": public_id, "type": event_type, "timestamp": now.isoformat(), "data": data}
            event_id = (
                await conn.execute(
                    webhook_events.insert()
                    .values(public_id=public_id, type=event_type, meeting_id=meeting_id, payload=payload, created_at=now)
                    .returning(webhook_events.c.id)
                )
            ).scalar_one()
            await conn.execute(
                webhook_deliveries.insert(),
                [
                    {"endpoint_id": target, "event_id": event_id, "meeting_id": meeting_id, "status": PENDING,
                     "attempts": 0, "next_attempt_at": now, "created_at": now}
                    for target in targets
                ],
            )

    # Endpoints --------------------------------------------------------------------------------

    async def _check_url(self, url: str) -> None:
        try:
            await self.guard.check(url)
        except UnsafeUrl as exc:
            raise invalid(str(exc), [{"field": "body.url", "message": str(exc)}], code="unsafe_url") from None

    async def create(self, body: WebhookCreateIn) -> WebhookCreatedOut:
        await self._check_url(body.url)
        now = self.ctx.now()
        row = {
            "id": uuid.uuid4(), "url": body.url, "secret": new_secret(), "events": list(dict.fromkeys(body.events)),
            "ordered": body.ordered, "enabled": body.enabled, "disabled_reason": None,
            "notify_email": body.notify_email, "description": body.description,
            "created_at": now, "updated_at": now, "failing_since": None,
        }
        async with self.ctx.db.write() as conn:
            await conn.execute(webhook_endpoints.insert().values(row))
        return WebhookCreatedOut(**_endpoint_out(Record(row)).model_dump(), secret=row["secret"])

    async def list(self) -> WebhookList:
        async with self.ctx.db.read() as conn:
            rows = await conn.execute(select(webhook_endpoints).order_by(webhook_endpoints.c.created_at))
            return WebhookList(items=[_endpoint_out(row) for row in rows])

    async def _endpoint(self, conn: Any, endpoint_id: uuid.UUID) -> Any:
        row = (await conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))).first()
        if row is None:
            raise not_found("webhook endpoint")
        return row

    async def get(self, endpoint_id: uuid.UUID) -> WebhookOut:
        async with self.ctx.db.read() as conn:
            return _endpoint_out(await self._endpoint(conn, endpoint_id))

    async def update(self, endpoint_id: uuid.UUID, body: WebhookPatchIn) -> WebhookOut:
        changes = body.model_dump(exclude_unset=True)
        if changes.get("url") is not None:
            await self._check_url(changes["url"])
        values = {k: v for k, v in changes.items() if v is not None or k == "notify_email"}
        if "events" in values:
            values["events"] = list(dict.fromkeys(values["events"]))
        if values.get("enabled"):
            values.update(disabled_reason=None, failing_since=None)
        async with self.ctx.db.write() as conn:
            await self._endpoint(conn, endpoint_id)
            values["updated_at"] = self.ctx.now()
            await conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(values))
            row = await self._endpoint(conn, endpoint_id)
        if values.get("enabled"):
            self.wakeup.set()
        return _endpoint_out(row)

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        async with self.ctx.db.write() as conn:
            await self._endpoint(conn, endpoint_id)
            await conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))

    # The delivery log -------------------------------------------------------------------------

    async def deliveries(self, endpoint_id: uuid.UUID, query: DeliveriesQuery) -> DeliveryPage:
        d = webhook_deliveries
        statement = _delivery_query().where(d.c.endpoint_id == endpoint_id)
        if query.status is not None:
            statement = statement.where(d.c.status == query.status)
        if query.cursor:
            (before,) = decode_cursor(query.cursor, (int,))
            statement = statement.where(d.c.id < before)
        async with self.ctx.db.read() as conn:
            await self._endpoint(conn, endpoint_id)
            rows = (await conn.execute(statement.order_by(d.c.id.desc()).limit(query.limit + 1))).all()
        items = [_delivery_out(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return DeliveryPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)

    async def redeliver(self, endpoint_id: uuid.UUID, delivery_id: int) -> DeliveryOut:
        """A new pending delivery of the same event (the same ``webhook-id``)."""
        d = webhook_deliveries
        async with self.ctx.db.write() as conn:
            await self._endpoint(conn, endpoint_id)
            old = (await conn.execute(select(d).where(d.c.id == delivery_id, d.c.endpoint_id == endpoint_id))).first()
            if old is None:
                raise not_found("delivery")
            now = self.ctx.now()
            new_id = (
                await conn.execute(
                    d.insert()
                    .values(endpoint_id=endpoint_id, event_id=old.event_id, meeting_id=old.meeting_id, status=PENDING,
                            attempts=0, next_attempt_at=now, created_at=now)
                    .returning(d.c.id)
                )
            ).scalar_one()
            row = (await conn.execute(_delivery_query().where(d.c.id == new_id))).one()
        self.wakeup.set()
        return _delivery_out(row)

    # For the worker ---------------------------------------------------------------------------

    async def claim(self, limit: int, lease: float) -> list[Claimed]:
        """Deliveries due now, leased to the caller for ``lease`` seconds (PostgreSQL: rows other
        nodes hold are skipped).  Of an ordered endpoint, a meeting's delivery waits while an
        earlier one of the same meeting is pending."""
        d, e, ev = webhook_deliveries, webhook_endpoints, webhook_events
        earlier = aliased(d)
        blocked = exists().where(
            earlier.c.endpoint_id == d.c.endpoint_id,
            earlier.c.meeting_id == d.c.meeting_id,
            earlier.c.status == PENDING,
            earlier.c.id < d.c.id,
        )
        now = self.ctx.now()
        due = (
            select(d.c.id)
            .join(e, e.c.id == d.c.endpoint_id)
            .where(d.c.status == PENDING, d.c.next_attempt_at <= now, e.c.enabled)
            .where(or_(e.c.ordered.is_(False), d.c.meeting_id.is_(None), ~blocked))
            .order_by(d.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=d)
        )
        async with self.ctx.db.write() as conn:
            ids = list((await conn.execute(due)).scalars())
            if not ids:
                return []
            await conn.execute(
                update(d).where(d.c.id.in_(ids)).values(next_attempt_at=now + timedelta(seconds=lease))
            )
            rows = await conn.execute(
                select(d.c.id, d.c.endpoint_id, d.c.attempts, d.c.created_at, e.c.url, e.c.secret,
                       ev.c.public_id, ev.c.payload)
                .join(e, e.c.id == d.c.endpoint_id)
                .join(ev, ev.c.id == d.c.event_id)
                .where(d.c.id.in_(ids))
                .order_by(d.c.id)
            )
            return [
                Claimed(row.id, row.endpoint_id, row.url, row.secret, row.public_id, row.payload, row.attempts, row.created_at)
                for row in rows
            ]

    async def record(self, claimed: Claimed, outcome: Outcome) -> str:
        """Store one attempt's outcome; what became of the delivery: succeeded, retrying, failed."""
        d, e = webhook_deliveries, webhook_endpoints
        now = self.ctx.now()
        attempts = claimed.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempts, "last_attempt_at": now,
            "last_status_code": outcome.status_code, "last_error": outcome.error[:1000] if outcome.error else None,
        }
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            if outcome.ok:
                result = SUCCEEDED
                values["status"] = SUCCEEDED
                await conn.execute(update(e).where(e.c.id == claimed.endpoint_id).values(failing_since=None))
            else:
                delay = self.retry.after_failure(attempts, (now - claimed.created_at).total_seconds(), self.rng)
                if delay is None:
                    result = FAILED
                    values["status"] = FAILED
                else:
                    result = "retrying"
                    values["next_attempt_at"] = now + timedelta(seconds=delay)
                await conn.execute(
                    update(e).where(e.c.id == claimed.endpoint_id, e.c.failing_since.is_(None)).values(failing_since=now)
                )
                # Given up: disable the endpoint if nothing reached it since early in this
                # delivery's window (the first half, so that a late first attempt still counts).
                streak_from = claimed.created_at + timedelta(seconds=self.retry.window / 2) if delay is None else None
                await self._disable_if_failing(conn, outbox, claimed.endpoint_id, now, streak_from)
            await conn.execute(update(d).where(d.c.id == claimed.id, d.c.status == PENDING).values(values))
        await outbox.flush(self.ctx.bus)
        return result

    async def _disable_if_failing(
        self, conn: Any, outbox: Outbox, endpoint_id: uuid.UUID, now: datetime, given_up_since: datetime | None
    ) -> None:
        """An endpoint without a success for the whole retry window (or since the first attempt
        of a delivery that just failed for good, ``given_up_since``) is disabled, and its owner
        (``notify_email``'s account) notified."""
        e = webhook_endpoints
        row = (await conn.execute(select(e).where(e.c.id == endpoint_id))).first()
        if row is None or not row.enabled or row.failing_since is None:
            return
        whole_window = (now - row.failing_since).total_seconds() >= self.retry.window
        if not whole_window and not (given_up_since is not None and row.failing_since <= given_up_since):
            return
        reason = f"every delivery failed since {row.failing_since.isoformat()}"
        await conn.execute(
            update(e).where(e.c.id == endpoint_id).values(enabled=False, disabled_reason=reason, updated_at=now)
        )
        log.error("webhook endpoint %s (%s) disabled: %s", endpoint_id, row.url, reason)
        owner = None
        if row.notify_email:
            owner = (
                await conn.execute(select(users.c.id).where(func.lower(users.c.email) == row.notify_email.lower()))
            ).scalar()
        if owner is None:
            log.error("webhook endpoint %s has no owner account to notify (notify_email %r)", endpoint_id, row.notify_email)
            return
        await self.notifications.create(
            conn, outbox, [owner], "webhook_disabled",
            {"endpoint_id": str(endpoint_id), "url": row.url, "reason": reason},
        )

    async def prune(self, before: datetime) -> int:
        """Forget finished deliveries (succeeded or failed) made before ``before``, and the events
        no delivery needs any more; pending ones stay, however old.  How many deliveries went."""
        d, e = webhook_deliveries, webhook_events
        async with self.ctx.db.write() as conn:
            gone = (await conn.execute(delete(d).where(d.c.status != PENDING, d.c.created_at < before))).rowcount
            await conn.execute(delete(e).where(e.c.created_at < before, ~exists().where(d.c.event_id == e.c.id)))
        return int(gone or 0)

    async def pending_count(self) -> int:
        async with self.ctx.db.read() as conn:
            d = webhook_deliveries
            return int((await conn.execute(select(func.count()).where(and_(d.c.status == PENDING)))).scalar_one())


class EventQueue:
    """Events from the media path (joins, leaves, tracks), written by a task of their own: ``put``
    never waits; past ``maxsize`` waiting events, new ones are dropped, counted and logged."""

    def __init__(self, webhooks: WebhookService, maxsize: int = 10_000) -> None:
        self.webhooks = webhooks
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], uuid.UUID | None]] = asyncio.Queue(maxsize)
        self.dropped = 0
        self._writing = False
        self._task: asyncio.Task[None] | None = None

    def put(self, event_type: str, data: dict[str, Any], meeting_id: uuid.UUID | None) -> None:
        try:
            self.queue.put_nowait((event_type, data, meeting_id))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook event %s dropped: %d events wait to be written (%d dropped)",
                        event_type, self.queue.qsize(), self.dropped)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-events")

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < 100:
                batch.append(self.queue.get_nowait())
            self._writing = True
            try:
                await self._write(batch)
            finally:
                self._writing = False

    async def _write(self, batch: list[tuple[str, dict[str, Any], uuid.UUID | None]]) -> None:
        for attempt in range(5):
            try:
                await self.webhooks.emit_many(batch)
                return
            except Exception:
                log.exception("writing %d webhook events failed (try %d)", len(batch), attempt + 1)
                await asyncio.sleep(0.5 * 2**attempt)
        self.dropped += len(batch)

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout``), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._writing or not self.queue.empty()) and loop.time() < deadline and self._task is not None and not self._task.done():
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
