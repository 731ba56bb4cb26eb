"""Notifications: a list, read markers, and a live stream (server-sent events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from control_api.handlers import api, services
from control_api.routing import UUID_PATTERN, path_uuid
from control_api.schemas import CountOut, NotificationOut, NotificationPage, NotificationsQuery
from control_api.security import Clock
from control_api.services.auth import Principal
from control_api.services.notifications import user_channel
from control_api.services.sessions import StreamSession, end_reason

KEEPALIVE_SECONDS = 15.0
STREAMS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("notification_streams", set)


@api.route(
    "GET", "/api/notifications", summary="The caller's notifications, newest first",
    tags="notifications", query=NotificationsQuery, response=NotificationPage, errors=(401, 422),
)
async def list_notifications(
    request: web.Request, user: Principal, query: NotificationsQuery
) -> NotificationPage:
    return await services(request).notifications.list(
        user.id, unread_only=query.unread_only, limit=query.limit, cursor=query.cursor
    )


@api.route(
    "POST", "/api/notifications/{notification_id:" + UUID_PATTERN + "}/read",
    summary="Mark one notification read", tags="notifications",
    response=NotificationOut, errors=(401, 404),
)
async def read_notification(request: web.Request, user: Principal) -> NotificationOut:
    return await services(request).notifications.mark_read(
        user.id, path_uuid(request, "notification_id")
    )


@api.route(
    "POST", "/api/notifications/read-all", summary="Mark every notification read",
    tags="notifications", response=CountOut, errors=(401,),
)
async def read_all_notifications(request: web.Request, user: Principal) -> CountOut:
    return CountOut(updated=await services(request).notifications.mark_all_read(user.id))


@api.route(
    "GET", "/api/notifications/stream", summary="New notifications as server-sent events",
    tags="notifications", produces="text/event-stream", errors=(401,),
)
async def notification_stream(request: web.Request, user: Principal) -> web.StreamResponse:
    """Each event is ``event: notification`` with the notification as JSON data; a comment line
    every 15 s keeps proxies from closing the connection.  The stream ends with ``event:
    session-ended`` (data: ``{"reason": ...}``) when this login signs out (``signed_out``), the
    password changes (``password_changed``) or the access token expires (``expired``: reconnect
    with a fresh one)."""
    svc = services(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    task = asyncio.current_task()
    streams = request.app[STREAMS]
    if task is not None:
        streams.add(task)
    try:
        async with svc.ctx.bus.subscribe(user_channel(user.id)) as subscription:
            session = await svc.auth.stream_session(request.headers.get("Authorization"))  # after subscribing: no gap
            await response.prepare(request)
            await response.write(b": connected\n\n")
            reason = await _pump(response, subscription, session, svc.ctx.now)
            await response.write(f"event: session-ended\ndata: {json.dumps({'reason': reason})}\n\n".encode())
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        if task is not None:
            streams.discard(task)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def _pump(response: web.StreamResponse, subscription: Any, session: StreamSession, now: Clock) -> str:
    """Write notifications until the session ends; return why it ended."""
    while True:
        remaining = session.expires_at - now().timestamp()
        if remaining <= 0:
            return "expired"
        try:
            event = await asyncio.wait_for(subscription.get(), min(KEEPALIVE_SECONDS, remaining))
        except asyncio.TimeoutError:
            await response.write(b": keepalive\n\n")
            continue
        expired = session.expires_at <= now().timestamp()  # nothing more for an expired token
        reason = end_reason(event, session) or ("expired" if expired else None)
        if reason is not None:
            return reason
        if event.get("type") == "notification":
            data = json.dumps(event["notification"], separators=(",", ":"))
            await response.write(f"event: notification\ndata: {data}\n\n".encode())
