"""The server API (``/api/server/...``): for the backend of a product that puts VideoConf behind
it.  Each call is signed with an API key (``control_api.server_auth``) and needs one scope."""

from __future__ import annotations

from aiohttp import web

from control_api.handlers import api, services
from control_api.routing import UUID_PATTERN, path_uuid
from control_api.schemas import (
    IDENTITY_PATTERN,
    ParticipantUpdateIn,
    RecordingOut,
    RecordingStartIn,
    RoomTokenIn,
    RoomTokenOut,
    ServerMessageIn,
    ServerParticipantList,
    ServerParticipantOut,
    ServerRoomDetailOut,
    ServerRoomList,
    TrackMuteIn,
)
from control_api.server_auth import ApiKeyPrincipal

ROOM = "/api/server/rooms/{meeting_id:" + UUID_PATTERN + "}"
PARTICIPANT = ROOM + "/participants/{identity:" + IDENTITY_PATTERN + "}"
TAG = "server"
KEY_ERRORS = (401, 403)


def _identity(request: web.Request) -> str:
    return request.match_info["identity"]


@api.route(
    "GET", "/api/server/rooms", summary="Live rooms, on every node", tags=TAG, auth=False, scope="rooms:read",
    response=ServerRoomList, errors=KEY_ERRORS,
)
async def server_list_rooms(request: web.Request, key: ApiKeyPrincipal) -> ServerRoomList:
    """Meetings with someone in their room: nodes, participant and track counts, the recording.
    In a cluster, as the nodes last reported (at most about a second ago)."""
    return await services(request).server.list_rooms()


@api.route(
    "GET", ROOM, summary="One live room with its participants", tags=TAG, auth=False, scope="rooms:read",
    response=ServerRoomDetailOut, errors=(*KEY_ERRORS, 404),
)
async def server_get_room(request: web.Request, key: ApiKeyPrincipal) -> ServerRoomDetailOut:
    """404 ``room_not_found`` when nobody is in the meeting's room."""
    return await services(request).server.get_room(path_uuid(request, "meeting_id"))


@api.route(
    "GET", ROOM + "/participants", summary="Participants of a live room", tags=TAG, auth=False, scope="rooms:read",
    response=ServerParticipantList, errors=(*KEY_ERRORS, 404),
)
async def server_list_participants(request: web.Request, key: ApiKeyPrincipal) -> ServerParticipantList:
    return await services(request).server.list_participants(path_uuid(request, "meeting_id"))


@api.route(
    "GET", PARTICIPANT, summary="One participant", tags=TAG, auth=False, scope="rooms:read",
    response=ServerParticipantOut, errors=(*KEY_ERRORS, 404),
)
async def server_get_participant(request: web.Request, key: ApiKeyPrincipal) -> ServerParticipantOut:
    return await services(request).server.get_participant(path_uuid(request, "meeting_id"), _identity(request))


@api.route(
    "DELETE", PARTICIPANT, summary="Remove a participant from the room", tags=TAG, auth=False, scope="rooms:admin",
    status=202, errors=(*KEY_ERRORS, 404),
)
async def server_remove_participant(request: web.Request, key: ApiKeyPrincipal) -> None:
    """The participant gets ``removed`` (reason ``removed_by_server``) and leaves, on whichever
    node it is connected to.  Not a ban: a new token lets it join again."""
    await services(request).server.remove(path_uuid(request, "meeting_id"), _identity(request))


@api.route(
    "PATCH", PARTICIPANT, summary="Change a participant's grants or metadata", tags=TAG, auth=False,
    scope="rooms:admin", body=ParticipantUpdateIn, status=202, errors=(*KEY_ERRORS, 404),
)
async def server_update_participant(request: web.Request, key: ApiKeyPrincipal, body: ParticipantUpdateIn) -> None:
    """Applied at once: the participant gets ``grants-updated`` (with ``can_publish`` false its
    tracks are unpublished), everyone ``participant-updated`` with the new metadata."""
    await services(request).server.update(path_uuid(request, "meeting_id"), _identity(request), body)


@api.route(
    "POST", PARTICIPANT + "/tracks/{track_id:TR_[0-9a-f]{1,32}}/mute", summary="Mute or unmute a published track",
    tags=TAG, auth=False, scope="rooms:admin", body=TrackMuteIn, status=202, errors=(*KEY_ERRORS, 404),
)
async def server_mute_track(request: web.Request, key: ApiKeyPrincipal, body: TrackMuteIn) -> None:
    """Muting stops forwarding the track and tells its publisher (``muted-by-host``); unmuting
    lifts that (a track its publisher muted stays muted)."""
    await services(request).server.mute(
        path_uuid(request, "meeting_id"), _identity(request), request.match_info["track_id"], body.muted
    )


@api.route(
    "POST", ROOM + "/messages", summary="Send data or chat to the room or one participant", tags=TAG, auth=False,
    scope="rooms:admin", body=ServerMessageIn, status=202, errors=(*KEY_ERRORS, 404),
)
async def server_send_message(request: web.Request, key: ApiKeyPrincipal, body: ServerMessageIn) -> None:
    """Delivered over signaling as ``data`` {sender: null, topic, payload} or ``chat`` with a
    null sender; not stored."""
    await services(request).server.send(path_uuid(request, "meeting_id"), body)


@api.route(
    "POST", ROOM + "/recording", summary="Start recording a live room", tags=TAG, auth=False, scope="recordings",
    body=RecordingStartIn, response=RecordingOut, status=201, errors=(*KEY_ERRORS, 404, 409, 503),
)
async def server_start_recording(request: web.Request, key: ApiKeyPrincipal, body: RecordingStartIn) -> RecordingOut:
    return await services(request).server.start_recording(path_uuid(request, "meeting_id"), body.layout)


@api.route(
    "DELETE", ROOM + "/recording", summary="Stop recording a room", tags=TAG, auth=False, scope="recordings",
    response=RecordingOut, errors=(*KEY_ERRORS, 404, 409, 503),
)
async def server_stop_recording(request: web.Request, key: ApiKeyPrincipal) -> RecordingOut:
    return await services(request).server.stop_recording(path_uuid(request, "meeting_id"))


@api.route(
    "POST", "/api/server/meetings/{meeting_id:" + UUID_PATTERN + "}/end", summary="End a meeting", tags=TAG,
    auth=False, scope="rooms:admin", status=204, errors=(*KEY_ERRORS, 404, 409),
)
async def server_end_meeting(request: web.Request, key: ApiKeyPrincipal) -> None:
    """Everyone gets ``meeting-ended`` and leaves, on every node; 409 ``invalid_transition``
    when it is not live."""
    await services(request).server.end_meeting(path_uuid(request, "meeting_id"))


@api.route(
    "POST", "/api/server/tokens", summary="Mint a room token for an identity of your own", tags=TAG, auth=False,
    scope="tokens:create", body=RoomTokenIn, response=RoomTokenOut, status=201, errors=(*KEY_ERRORS, 404, 409),
)
async def server_mint_token(request: web.Request, key: ApiKeyPrincipal, body: RoomTokenIn) -> RoomTokenOut:
    """For people who are not users of this server ("bring your own users"), with the grants,
    name and metadata given; the SDK and the browser module ``sfu-client.js`` join with it at
    ``signaling_url``.  Good for one join within ``ttl_seconds``; the identity may not be a UUID
    (those are this server's users).  Chat and host actions that the control API stores need a
    user account (``account_needed``)."""
    return await services(request).server.mint_token(body)
