"""Chat history (live chat arrives over signaling and is stored through the same service)."""

from __future__ import annotations

from aiohttp import web

from control_api.handlers import api, services
from control_api.handlers.meetings import MEETING
from control_api.routing import path_uuid
from control_api.schemas import MessageIn, MessageOut, MessagePage, MessagesQuery
from control_api.services.auth import Principal


@api.route(
    "GET", MEETING + "/messages", summary="Chat history, newest first", tags="chat",
    query=MessagesQuery, response=MessagePage, errors=(401, 403, 404, 422),
)
async def list_messages(request: web.Request, user: Principal, query: MessagesQuery) -> MessagePage:
    """Private messages appear only to their sender and recipient. Pass next_cursor as
    ``before`` to page back."""
    return await services(request).chat.history(
        user, path_uuid(request, "meeting_id"), query.limit, query.before
    )


@api.route(
    "POST", MEETING + "/messages", summary="Send a chat message to a live meeting", tags="chat",
    body=MessageIn, response=MessageOut, status=201, errors=(401, 403, 404, 409, 422, 429),
)
async def post_message(request: web.Request, user: Principal, body: MessageIn) -> MessageOut:
    """For bots and clients without a signaling connection; signaling uses the same service and
    the same rate limits (per sender in the meeting, and per meeting)."""
    return await services(request).chat.post(
        user, path_uuid(request, "meeting_id"), body.body, body.recipient_id
    )
