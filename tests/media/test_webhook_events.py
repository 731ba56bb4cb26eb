"""A meeting run by SDK bots, seen by a webhook receiver: every event, in order, signed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.sdk.media import ToneAudioTrack
from clients.sdk.webhooks import WebhookVerificationError, verify
from tests.api.server_keys import create_key, server_headers
from tests.conftest import Backend
from tests.media.conftest import open_meeting, until
from tests.webhook_receiver import Receiver

WEBHOOKS = {"poll_interval": 0.05, "allowed_networks": ["127.0.0.0/8"]}


async def test_a_receiver_gets_a_meetings_events_in_order_with_valid_signatures(sqlite_backend: Backend, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    try:
        async with open_meeting(sqlite_backend, tmp_path, webhooks=WEBHOOKS) as state:
            api = state.api
            key = await create_key(api, ["webhooks"])
            body = json.dumps({"url": receiver.url(), "ordered": True}).encode()
            headers = {**server_headers(*key, body), "Content-Type": "application/json"}
            _, endpoint = await api.call("POST", "/api/server/webhooks", headers=headers, data=body, expect=201)
            state.meeting = await api.meeting(state.host["token"], title="Watched")  # after the endpoint
            host = await state.participant(state.host)
            guest = await state.participant(state.people[0])
            (track_id,) = await guest.publish([(ToneAudioTrack(), "microphone")])
            await until(lambda: "track.published" in receiver.types(), 15, "track.published")
            await guest.close()
            await until(lambda: "participant.left" in receiver.types(), 15, "the guest's participant.left")
            await api.call("POST", f"/api/meetings/{state.meeting['id']}/end", state.host["token"], expect=200)
            await until(lambda: len(receiver.received) >= 8, 15, lambda: f"eight events, got {receiver.types()}")
            await host.close()
    finally:
        await receiver.close()

    events = receiver.events(endpoint["secret"])  # each verified: signature and timestamp
    assert [e["type"] for e in events] == [
        "meeting.started", "participant.joined", "participant.joined", "track.published",
        "track.unpublished", "participant.left", "meeting.ended", "participant.left",
    ]
    meeting_id = state.meeting["id"]
    assert all(e["data"]["meeting_id"] == meeting_id for e in events)
    host_id, guest_id = state.host["user"]["id"], state.people[0]["user"]["id"]
    assert [e["data"]["participant"]["identity"] for e in events if e["type"].startswith("participant.")] == [
        host_id, guest_id, guest_id, host_id,
    ]
    assert events[3]["data"]["track"] == {"id": track_id, "kind": "audio", "source": "microphone"}
    assert events[5]["data"]["reason"] == "left" and events[7]["data"]["reason"] == "room_closed"
    assert len({e["id"] for e in events}) == 8

    # what a receiver must refuse: a changed body, an old delivery replayed
    first = receiver.received[0]
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(endpoint["secret"], first.headers, first.body.replace(b"meeting.started", b"meeting.ended_"))
    stamp = int(first.headers["webhook-timestamp"])
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(endpoint["secret"], first.headers, first.body, now=stamp + 301)
