"""Recordings: the recorder's life cycle calls, visibility, download with Range, deletion."""

from __future__ import annotations

import uuid

import pytest

from control_api.errors import ServiceError
from tests.conftest import Api

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes that show any off-by-one


async def _ready_recording(api: Api, host: dict, meeting: dict) -> dict:
    service = api.services.recordings
    started = await service.begin(uuid.UUID(meeting["id"]))
    assert started.status == "recording"
    name = f"{started.id}.mp4"
    (service.directory / name).write_bytes(PAYLOAD)
    await service.mark_processing(started.id)
    done = await service.finish(started.id, file_name=name, duration_seconds=61, participants=["Hedy Lamarr", "Guy Guest"])
    return done.model_dump(mode="json")


async def test_a_ready_recording_is_listed_downloaded_whole_or_by_range_and_announced(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"], title="Recorded")
    recording = await _ready_recording(api, host, meeting)
    assert recording["size_bytes"] == len(PAYLOAD) and recording["status"] == "ready"
    _, page = await api.call("GET", "/api/recordings", host["token"], expect=200)
    assert [r["id"] for r in page["items"]] == [recording["id"]]
    assert page["items"][0]["participants"] == ["Hedy Lamarr", "Guy Guest"]
    _, one = await api.call("GET", f"/api/recordings/{recording['id']}", host["token"], expect=200)
    assert one["meeting_title"] == "Recorded" and one["duration_seconds"] == 61
    _, by_meeting = await api.call("GET", f"/api/recordings?meeting_id={meeting['id']}", host["token"], expect=200)
    assert len(by_meeting["items"]) == 1

    url = f"/api/recordings/{recording['id']}/download"
    auth = {"Authorization": f"Bearer {host['token']}"}
    async with api.client.get(url, headers=auth) as response:
        assert response.status == 200 and await response.read() == PAYLOAD
        assert response.headers["Content-Type"] == "video/mp4"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert "attachment" in response.headers["Content-Disposition"]
    async with api.client.get(url, headers={**auth, "Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 100-199/{len(PAYLOAD)}"
        assert await response.read() == PAYLOAD[100:200]
    async with api.client.get(url, headers={**auth, "Range": "bytes=-16"}) as response:
        assert response.status == 206 and await response.read() == PAYLOAD[-16:]
    async with api.client.get(url, headers={**auth, "Range": f"bytes={len(PAYLOAD) + 10}-"}) as response:
        assert response.status == 416
    # A recording notifies its owner when it is ready.
    _, notes = await api.call("GET", "/api/notifications", host["token"], expect=200)
    assert [n["kind"] for n in notes["items"]] == ["recording_ready"]


async def test_only_hosts_and_cohosts_see_a_recording_and_deleting_it_removes_the_file(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    cohost = await api.register("Carl Cohost")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"])
    await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [cohost["email"]], "role": "cohost"}, expect=200)
    await api.call("POST", f"/api/meetings/{meeting['id']}/join", guest["token"], json={}, expect=200)
    recording = await _ready_recording(api, host, meeting)
    path = f"/api/recordings/{recording['id']}"
    await api.call("GET", path, cohost["token"], expect=200)
    await api.call("GET", path, guest["token"], expect=404)
    await api.call("GET", path + "/download", guest["token"], expect=404)
    _, listed = await api.call("GET", "/api/recordings", guest["token"], expect=200)
    assert listed["items"] == []
    file = api.services.recordings.directory / f"{recording['id']}.mp4"
    assert file.exists()
    await api.call("DELETE", path, guest["token"], expect=404)
    await api.call("DELETE", path, host["token"], expect=204)
    assert not file.exists()
    await api.call("GET", path, host["token"], expect=404)
    await api.call("DELETE", path, host["token"], expect=404)


async def test_recordings_outlive_their_meeting(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"], title="Kept")
    recording = await _ready_recording(api, host, meeting)
    await api.call("POST", f"/api/meetings/{meeting['id']}/end", host["token"], expect=200)
    await api.call("DELETE", f"/api/meetings/{meeting['id']}", host["token"], expect=204)
    _, kept = await api.call("GET", f"/api/recordings/{recording['id']}", host["token"], expect=200)
    assert kept["meeting_id"] is None and kept["meeting_title"] == "Kept"


async def test_unfinished_and_failed_recordings_cannot_be_downloaded(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    service = api.services.recordings
    running = await service.begin(uuid.UUID(meeting["id"]))
    status, body = await api.call("GET", f"/api/recordings/{running.id}/download", host["token"])
    assert (status, body["error"]["code"]) == (409, "recording_not_ready")
    status, body = await api.call("DELETE", f"/api/recordings/{running.id}", host["token"])
    assert (status, body["error"]["code"]) == (409, "recording_in_progress")
    await service.fail(running.id, "encoder crashed")
    _, failed = await api.call("GET", f"/api/recordings/{running.id}", host["token"], expect=200)
    assert failed["status"] == "failed" and failed["error"] == "encoder crashed" and failed["download_url"] is None
    await api.call("DELETE", f"/api/recordings/{running.id}", host["token"], expect=204)


async def test_recordings_begin_only_in_live_meetings_that_allow_them_and_files_stay_in_their_folder(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    service = api.services.recordings
    closed = await api.meeting(host["token"], settings={"allow_recording": False})
    with pytest.raises(ServiceError) as refused:
        await service.begin(uuid.UUID(closed["id"]))
    assert refused.value.code == "recording_not_allowed"
    scheduled = await api.scheduled(host["token"])
    with pytest.raises(ServiceError) as refused:
        await service.begin(uuid.UUID(scheduled["id"]))
    assert refused.value.code == "meeting_not_live"
    live = await api.meeting(host["token"])
    started = await service.begin(uuid.UUID(live["id"]))
    with pytest.raises(ValueError, match="escapes"):
        await service.finish(started.id, file_name="../../etc/passwd", duration_seconds=1, participants=[])
    assert await api.count("recordings") == 1
