"""Recordings: list, read, download (with HTTP Range) and delete."""

from __future__ import annotations

import re

from aiohttp import web

from control_api.errors import ServiceError
from control_api.handlers import api, services
from control_api.handlers.meetings import MEETING
from control_api.routing import UUID_PATTERN, path_uuid
from control_api.schemas import RecordingOut, RecordingPage, RecordingsQuery, RecordingStartIn
from control_api.services.auth import Principal

RECORDING = "/api/recordings/{recording_id:" + UUID_PATTERN + "}"
# RFC 9110 14.1.1: a suffix range of length zero selects nothing, so it cannot be satisfied
# (aiohttp would read ``-0`` as ``0-`` and send the whole file).
_EMPTY_SUFFIX = re.compile(r"\s*bytes\s*=\s*-\s*0+\s*")


def unsatisfiable(range_header: str | None) -> bool:
    return range_header is not None and _EMPTY_SUFFIX.fullmatch(range_header) is not None


@api.route(
    "POST", MEETING + "/recording", summary="Start recording a live meeting (host or co-host)", tags="recordings",
    body=RecordingStartIn, response=RecordingOut, status=201, errors=(401, 403, 404, 409, 422, 503),
)
async def start_recording(request: web.Request, user: Principal, body: RecordingStartIn) -> RecordingOut:
    """Everyone in the meeting gets ``recording-started``; 409 when nobody is in the meeting's
    room, it is being recorded already, or it does not allow recording."""
    return await services(request).recordings.start(user, path_uuid(request, "meeting_id"), body.layout)


@api.route(
    "DELETE", MEETING + "/recording", summary="Stop recording (host or co-host)", tags="recordings",
    response=RecordingOut, errors=(401, 403, 404, 409, 503),
)
async def stop_recording(request: web.Request, user: Principal) -> RecordingOut:
    """The recording is ``processing`` until its file is finished, then ``ready`` and its owner
    is notified."""
    return await services(request).recordings.stop(user, path_uuid(request, "meeting_id"))


@api.route(
    "GET", "/api/recordings", summary="Recordings the caller owns or co-hosted", tags="recordings",
    query=RecordingsQuery, response=RecordingPage, errors=(401, 422),
)
async def list_recordings(request: web.Request, user: Principal, query: RecordingsQuery) -> RecordingPage:
    return await services(request).recordings.list(user, query.meeting_id, query.limit, query.cursor)


@api.route(
    "GET", RECORDING, summary="One recording", tags="recordings",
    response=RecordingOut, errors=(401, 404),
)
async def get_recording(request: web.Request, user: Principal) -> RecordingOut:
    return await services(request).recordings.get(user, path_uuid(request, "recording_id"))


@api.route(
    "DELETE", RECORDING, summary="Delete a recording and its file", tags="recordings",
    status=204, errors=(401, 404, 409),
)
async def delete_recording(request: web.Request, user: Principal) -> None:
    await services(request).recordings.delete(user, path_uuid(request, "recording_id"))


@api.route(
    "GET", RECORDING + "/download", summary="Download the file (supports Range)", tags="recordings",
    produces="video/mp4", errors=(401, 404, 409, 416),
    extra_parameters=[{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}}],
)
async def download_recording(request: web.Request, user: Principal) -> web.StreamResponse:
    """Answers 206 with Content-Range for a Range request and 416 for an unsatisfiable one."""
    path, recording = await services(request).recordings.file_for_download(
        user, path_uuid(request, "recording_id")
    )
    if unsatisfiable(request.headers.get("Range")):
        size = path.stat().st_size
        raise ServiceError(
            416, "range_not_satisfiable", "the range selects no bytes", headers={"Content-Range": f"bytes */{size}"}
        )
    stamp = recording.started_at.strftime("%Y%m%d-%H%M")
    response = web.FileResponse(
        path,
        headers={
            "Content-Type": recording.content_type,
            "Content-Disposition": f'attachment; filename="recording-{stamp}.mp4"',
            "Cache-Control": "private, no-store",
        },
    )
    return response
