"""Meetings, joining, invitations and participants."""

from __future__ import annotations

from aiohttp import web

from control_api.handlers import api, client_ip, services
from control_api.routing import UUID_PATTERN, path_uuid
from control_api.schemas import (
    InvitationList,
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
)
from control_api.services.auth import Principal

MEETING = "/api/meetings/{meeting_id:" + UUID_PATTERN + "}"


@api.route(
    "POST", "/api/meetings", summary="Create an instant or scheduled meeting", tags="meetings",
    body=MeetingCreateIn, response=MeetingOut, status=201, errors=(401, 422),
)
async def create_meeting(request: web.Request, user: Principal, body: MeetingCreateIn) -> MeetingOut:
    return await services(request).meetings.create(user, body)


@api.route(
    "GET", "/api/meetings/my-meetings", summary="Meetings the caller hosts, is invited to or joined",
    tags="meetings", query=MyMeetingsQuery, response=MeetingPage, errors=(401, 422),
)
async def my_meetings(request: web.Request, user: Principal, query: MyMeetingsQuery) -> MeetingPage:
    """Newest start time first."""
    return await services(request).meetings.my_meetings(user, query)


@api.route(
    "GET", "/api/meetings/upcoming", summary="Live and future meetings of the caller",
    tags="meetings", query=UpcomingQuery, response=MeetingPage, errors=(401, 422),
)
async def upcoming_meetings(request: web.Request, user: Principal, query: UpcomingQuery) -> MeetingPage:
    """Soonest first; meetings the caller hosts or is invited to."""
    return await services(request).meetings.upcoming(user, query)


@api.route(
    "GET", "/api/meetings/by-code/{code}", summary="Look up a meeting by its code", tags="meetings",
    response=MeetingPublicOut, errors=(401, 404, 422, 429),
    aliases=("/api/meetings/code/{code}",),  # the original VideoConf API's path
)
async def meeting_by_code(request: web.Request, user: Principal) -> MeetingPublicOut:
    """Returns what someone holding the code may see before joining. Rate-limited per address."""
    return await services(request).meetings.by_code(request.match_info["code"], client_ip(request))


@api.route(
    "GET", MEETING, summary="A meeting the caller belongs to", tags="meetings",
    response=MeetingOut, errors=(401, 404),
)
async def get_meeting(request: web.Request, user: Principal) -> MeetingOut:
    return await services(request).meetings.get(user, path_uuid(request, "meeting_id"))


@api.route(
    "PATCH", MEETING, summary="Change a meeting (host or co-host)", tags="meetings",
    body=MeetingPatchIn, response=MeetingOut, errors=(401, 403, 404, 409, 422),
)
async def patch_meeting(request: web.Request, user: Principal, body: MeetingPatchIn) -> MeetingOut:
    """Moving the start keeps the duration unless end_time is given too. Invitees are notified
    of a new time, and the calendar event's SEQUENCE goes up."""
    return await services(request).meetings.update(user, path_uuid(request, "meeting_id"), body)


@api.route(
    "DELETE", MEETING, summary="Delete a meeting (host; not while live)", tags="meetings",
    status=204, errors=(401, 403, 404, 409),
)
async def delete_meeting(request: web.Request, user: Principal) -> None:
    """Chat, participants and invitations go with it; recordings are kept."""
    await services(request).meetings.delete(user, path_uuid(request, "meeting_id"))


@api.route(
    "POST", MEETING + "/start", summary="Start a scheduled meeting", tags="meetings",
    response=MeetingOut, errors=(401, 403, 404, 409),
)
async def start_meeting(request: web.Request, user: Principal) -> MeetingOut:
    return await services(request).meetings.change_status(user, path_uuid(request, "meeting_id"), "start")


@api.route(
    "POST", MEETING + "/end", summary="End a live meeting for everyone", tags="meetings",
    response=MeetingOut, errors=(401, 403, 404, 409),
)
async def end_meeting(request: web.Request, user: Principal) -> MeetingOut:
    return await services(request).meetings.change_status(user, path_uuid(request, "meeting_id"), "end")


@api.route(
    "POST", MEETING + "/cancel", summary="Cancel a scheduled meeting", tags="meetings",
    response=MeetingOut, errors=(401, 403, 404, 409),
)
async def cancel_meeting(request: web.Request, user: Principal) -> MeetingOut:
    return await services(request).meetings.change_status(user, path_uuid(request, "meeting_id"), "cancel")


@api.route(
    "POST", MEETING + "/join", summary="Join: get a room token for the SFU", tags="meetings",
    body=JoinIn, response=JoinOut, errors=(401, 403, 404, 409, 422, 429),
)
async def join_meeting(request: web.Request, user: Principal, body: JoinIn) -> JoinOut:
    """The host or a co-host joining a scheduled meeting starts it; others wait for that unless
    the meeting allows joining before the host. The passcode is not asked of the host, co-hosts
    and invitees. Wrong passcodes are limited per user and meeting and per meeting; once a limit
    is reached every passcode is refused (429), right or wrong. 403 ``removed`` for someone a
    host removed; 409 ``meeting_full`` when the room holds ``settings.max_participants`` people
    (never for the meeting's host)."""
    return await services(request).meetings.join(
        user, path_uuid(request, "meeting_id"), body, client_ip(request)
    )


@api.route(
    "GET", MEETING + "/participants", summary="Everyone who has joined the meeting",
    tags="meetings", response=ParticipantList, errors=(401, 403, 404),
)
async def list_participants(request: web.Request, user: Principal) -> ParticipantList:
    """403 ``waiting`` for someone the waiting room holds, ``removed`` for someone a host removed."""
    return await services(request).meetings.participants(user, path_uuid(request, "meeting_id"))


@api.route(
    "POST", MEETING + "/participants/{user_id:" + UUID_PATTERN + "}/readmit",
    summary="Let a removed participant back in (host or co-host)", tags="meetings",
    response=ParticipantOut, errors=(401, 403, 404, 409),
)
async def readmit_participant(request: web.Request, user: Principal) -> ParticipantOut:
    """A participant a host removed is refused everywhere (room tokens, the room, chat, the
    participant list) until this. 409 ``not_removed`` for anyone else."""
    return await services(request).meetings.readmit(
        user, path_uuid(request, "meeting_id"), path_uuid(request, "user_id")
    )


@api.route(
    "POST", MEETING + "/invitations", summary="Invite registered users by email",
    tags="invitations", body=InviteIn, response=InviteResultOut, errors=(401, 403, 404, 409, 422, 429),
)
async def invite(request: web.Request, user: Principal, body: InviteIn) -> InviteResultOut:
    """Only the host may invite co-hosts. Addresses with no account come back in unknown_emails.
    Every address named counts against the inviter's budget (429 over it)."""
    return await services(request).meetings.invite(user, path_uuid(request, "meeting_id"), body)


@api.route(
    "GET", MEETING + "/invitations", summary="Who is invited (host or co-host)",
    tags="invitations", response=InvitationList, errors=(401, 403, 404),
)
async def list_invitations(request: web.Request, user: Principal) -> InvitationList:
    return await services(request).meetings.invitations(user, path_uuid(request, "meeting_id"))


@api.route(
    "DELETE", MEETING + "/invitations/{user_id:" + UUID_PATTERN + "}", summary="Withdraw an invitation",
    tags="invitations", status=204, errors=(401, 403, 404),
)
async def uninvite(request: web.Request, user: Principal) -> None:
    await services(request).meetings.uninvite(
        user, path_uuid(request, "meeting_id"), path_uuid(request, "user_id")
    )
