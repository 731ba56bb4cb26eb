"""iCalendar downloads: one meeting, and a subscribable feed of the caller's meetings."""

from __future__ import annotations

from aiohttp import web

from control_api.errors import unauthorized
from control_api.handlers import api, services
from control_api.handlers.meetings import MEETING
from control_api.routing import path_uuid
from control_api.schemas import CalendarTokenOut, FeedQuery
from control_api.services.auth import Principal
from control_api.services.meetings import MEMBER_ROLES


def _ics(body: bytes, filename: str) -> web.Response:
    return web.Response(
        body=body,
        content_type="text/calendar",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@api.route(
    "GET", MEETING + "/calendar.ics", summary="The meeting as an iCalendar file", tags="calendar",
    produces="text/calendar", errors=(401, 404),
)
async def meeting_ics(request: web.Request, user: Principal) -> web.Response:
    svc = services(request)
    meeting_id = path_uuid(request, "meeting_id")
    async with svc.ctx.db.read() as conn:
        row, _ = await svc.meetings.load_member(conn, meeting_id, user.id, MEMBER_ROLES)
    return _ics(await svc.calendar.meeting_ics(meeting_id), f"meeting-{row.code}.ics")


@api.route(
    "POST", "/api/calendar/token", summary="Create the caller's secret feed address",
    tags="calendar", response=CalendarTokenOut, status=201, errors=(401,),
)
async def new_calendar_token(request: web.Request, user: Principal) -> CalendarTokenOut:
    """Calendar apps cannot send a bearer token, so the feed URL carries its own secret.
    Creating a new one retires the previous address."""
    return await services(request).calendar.new_feed_token(user.id)


@api.route(
    "DELETE", "/api/calendar/token", summary="Retire the feed address", tags="calendar",
    status=204, errors=(401,),
)
async def revoke_calendar_token(request: web.Request, user: Principal) -> None:
    await services(request).calendar.revoke_feed_token(user.id)


@api.route(
    "GET", "/api/calendar/feed.ics", summary="Feed of the caller's meetings", tags="calendar",
    query=FeedQuery, auth=False, produces="text/calendar", errors=(401, 422),
)
async def calendar_feed(request: web.Request, query: FeedQuery) -> web.Response:
    """Authenticated by the feed token in the URL, or by a bearer token."""
    svc = services(request)
    if query.token:
        user_id = await svc.calendar.user_for_feed_token(query.token)
    elif request.headers.get("Authorization"):
        user_id = (await svc.auth.authenticate(request.headers.get("Authorization"))).id
    else:
        raise unauthorized("a feed token or an access token is required")
    return _ics(await svc.calendar.feed_ics(user_id), "videoconf.ics")
