"""The server API against real SDK participants (the whole server in this process, SQLite,
in-process pub/sub): rooms and participants as the SFU has them, moderation, messages, grants
and metadata changed live, recordings, the end of a meeting, and tokens for identities that
are not users of this server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from clients.sdk.participant import Participant, SignalingError
from clients.sdk.server import ServerApiError, ServerClient
from control_api.services.api_keys import SCOPES
from signaling.protocol import server_adapter
from tests.api.server_keys import create_key
from tests.media.conftest import Meeting, until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def server(meeting: Meeting) -> AsyncIterator[ServerClient]:
    key_id, secret = await create_key(meeting.api, list(SCOPES))
    client = ServerClient(str(meeting.api.client.make_url("")), key_id, secret)
    yield client
    await client.close()


async def participant_of(server: ServerClient, meeting_id: str, identity: str, check: object) -> dict:
    """The participant as the server API lists it, once ``check(participant)`` holds."""
    found: list[dict] = []

    async def seen() -> dict | None:
        try:
            person = await server.get_participant(meeting_id, identity)
        except ServerApiError:
            return None
        found.append(person)
        return person if check(person) else None  # type: ignore[operator]

    return await until(seen, 10, lambda: f"{identity} to change: {found[-1:] }", interval=0.1)


async def test_rooms_and_participants_are_listed_and_moderated_live(meeting: Meeting, server: ServerClient) -> None:
    meeting_id = meeting.meeting["id"]
    host = await meeting.participant(meeting.host)
    guest = await meeting.participant(meeting.people[0])
    mic, camera = await host.publish([(ToneAudioTrack(), "microphone"), (PatternVideoTrack(160, 120, fps=5), "camera")])

    rooms = await until(lambda: _room_with_tracks(server, 2), 10, "the room with its two tracks")
    (room,) = rooms
    assert (room["meeting_id"], room["title"], room["num_participants"], room["recording"]) == (meeting_id, "Media test", 2, None)
    detail = await server.get_room(meeting_id)
    assert {p["identity"] for p in detail["participants"]} == {host.identity, guest.identity}
    person = await server.get_participant(meeting_id, host.identity)
    assert {t["track_id"] for t in person["tracks"]} == {mic, camera} and person["grants"]["room_admin"]
    assert len((await server.list_participants(meeting_id))["items"]) == 2
    with pytest.raises(ServerApiError) as missing:
        await server.get_participant(meeting_id, "nobody-here")
    assert (missing.value.status, missing.value.code) == (404, "participant_not_found")

    # Mute and unmute a published track: its publisher and the others are told.
    await server.mute_track(meeting_id, host.identity, mic, True)
    assert (await host.wait_for("muted-by-host", timeout=5))["track_id"] == mic
    await guest.wait_for("track-muted", lambda m: m["track_id"] == mic and m["muted"], timeout=5)
    await server.mute_track(meeting_id, host.identity, mic, False)
    await guest.wait_for("track-muted", lambda m: m["track_id"] == mic and not m["muted"], timeout=5)

    # Metadata: everyone gets participant-updated.
    await server.update_participant(meeting_id, guest.identity, metadata='{"seat": 7}')
    for client in (host, guest):
        update = await client.wait_for("participant-updated", lambda m: m["participant"]["identity"] == guest.identity, timeout=5)
        assert update["participant"]["metadata"] == '{"seat": 7}'
    await participant_of(server, meeting_id, guest.identity, lambda p: p["metadata"] == '{"seat": 7}')

    # Grants: without can_publish, publishing is refused; with it again, allowed.
    await server.update_participant(meeting_id, guest.identity, grants={"can_publish": False})
    assert (await guest.wait_for("grants-updated", timeout=5))["grants"]["can_publish"] is False
    with pytest.raises(SignalingError) as refused:
        await guest.publish([(ToneAudioTrack(), "microphone")], timeout=5)
    assert refused.value.code == "publish_not_allowed"
    await server.update_participant(meeting_id, guest.identity, grants={"can_publish": True})
    await guest.wait_for("grants-updated", lambda m: m["grants"]["can_publish"], timeout=5)
    tracks = await guest.publish([(ToneAudioTrack(), "microphone")])
    await host.wait_for("track-published", lambda m: m["track"]["track_id"] in tracks, timeout=5)

    # Losing can_publish unpublishes what the participant publishes.
    await server.update_participant(meeting_id, host.identity, grants={"can_publish": False})
    await guest.wait_for("track-unpublished", lambda m: m["track_id"] == camera, timeout=5)
    assert host.grants is not None and host.grants["can_publish"] is False and not host.published

    # Messages as the server: data to the room, chat to one participant.
    await server.send_message(meeting_id, {"poll": [1, 2]}, topic="polls")
    for client in (host, guest):
        data = await client.wait_for("data", timeout=5)
        assert (data["sender"], data["topic"], data["payload"]) == (None, "polls", {"poll": [1, 2]})
    await server.send_message(meeting_id, "Only for you", kind="chat", identity=guest.identity)
    chat = await guest.wait_for("chat", timeout=5)
    assert chat["message"]["sender"] is None and chat["message"]["private"] and chat["message"]["body"] == "Only for you"
    await host.ping("after-chat")
    assert not [m for m in host.chat_messages if m["body"] == "Only for you"]

    # Every new server message fits the published schema.
    for message in host.history + guest.history:
        if message["type"] in ("data", "chat", "grants-updated", "participant-updated"):
            server_adapter.validate_python(message)

    # Remove: the participant is told and leaves, for everyone.
    await server.remove_participant(meeting_id, guest.identity)
    assert (await guest.wait_for("removed", timeout=5))["reason"] == "removed_by_server"
    await host.wait_for("participant-left", lambda m: m["identity"] == guest.identity, timeout=5)
    await until(lambda: _count(server, meeting_id, 1), 10, "the room with one participant")


async def _room_with_tracks(server: ServerClient, tracks: int) -> list[dict] | None:
    rooms = (await server.list_rooms())["items"]
    return rooms if rooms and rooms[0]["num_tracks"] == tracks else None


async def _count(server: ServerClient, meeting_id: str, count: int) -> bool:
    return (await server.get_room(meeting_id))["num_participants"] == count


async def test_a_minted_token_joins_with_the_sdk_for_an_identity_that_is_no_user(meeting: Meeting, server: ServerClient) -> None:
    meeting_id = meeting.meeting["id"]
    host = await meeting.participant(meeting.host)
    minted = await server.create_token(
        meeting_id, "customer-42", name="Carla Customer", metadata="vip", ttl_seconds=120,
        grants={"can_publish": False, "can_subscribe": True, "can_publish_data": True},
    )
    assert minted["identity"] == "customer-42" and minted["grants"]["can_publish"] is False
    assert minted["signaling_url"] and minted["node"] is None
    carla = Participant(meeting.signaling_url, minted["token"], ice_servers=[])
    meeting.clients.append(carla)
    joined = await carla.connect()
    assert joined["participant"]["identity"] == "customer-42" and joined["participant"]["metadata"] == "vip"
    arrived = await host.wait_for("participant-joined", timeout=5)
    assert (arrived["participant"]["name"], arrived["participant"]["metadata"]) == ("Carla Customer", "vip")
    person = await participant_of(server, meeting_id, "customer-42", lambda p: True)
    assert person["grants"]["can_publish"] is False and person["name"] == "Carla Customer"
    with pytest.raises(SignalingError) as refused:
        await carla.publish([(ToneAudioTrack(), "microphone")], timeout=5)
    assert refused.value.code == "publish_not_allowed"
    await carla.chat("hello")
    assert (await carla.wait_for("error", timeout=5))["code"] == "account_needed"
    await host.chat("a private word", to="customer-42")
    assert (await host.wait_for("error", timeout=5))["code"] == "account_needed"

    # The token is good for one join; identities that look like users', and bad TTLs, are refused.
    again = Participant(meeting.signaling_url, minted["token"], ice_servers=[])
    meeting.clients.append(again)
    with pytest.raises(SignalingError) as replay:
        await again.connect()
    assert replay.value.code == "invalid_token"
    for identity, ttl in ((str(uuid.uuid4()), 120), ("ok-id", 30), ("ok-id", 90_000), ("bad id", 120)):
        with pytest.raises(ServerApiError) as bad:
            await server.create_token(meeting_id, identity, ttl_seconds=ttl)
        assert bad.value.status == 422, (identity, ttl)


async def test_recordings_and_the_end_of_a_meeting_through_the_server_api(meeting: Meeting, server: ServerClient) -> None:
    meeting_id = meeting.meeting["id"]
    with pytest.raises(ServerApiError) as empty:
        await server.start_recording(meeting_id)
    assert (empty.value.status, empty.value.code) == (404, "room_not_found")
    host = await meeting.participant(meeting.host)
    guest = await meeting.participant(meeting.people[0])
    await host.publish([(ToneAudioTrack(), "microphone")])
    recording = await server.start_recording(meeting_id, "grid")
    assert recording["status"] == "recording"
    started = await guest.wait_for("recording-started", timeout=10)
    assert started["recording_id"] == recording["id"] and started["by"] is None
    rooms = await until(lambda: _recorded(server), 10, "the room listed as recorded")
    assert rooms[0]["recording"]["recording_id"] == recording["id"]
    stopped = await server.stop_recording(meeting_id)
    assert stopped["id"] == recording["id"] and stopped["status"] in ("processing", "ready")
    await guest.wait_for("recording-stopped", timeout=10)

    await server.end_meeting(meeting_id)
    for client in (host, guest):
        await client.wait_for("meeting-ended", timeout=5)
    await until(lambda: _no_rooms(server), 10, "no room left")
    with pytest.raises(ServerApiError) as ended:
        await server.end_meeting(meeting_id)
    assert (ended.value.status, ended.value.code) == (409, "invalid_transition")
    with pytest.raises(ServerApiError) as closed:
        await server.create_token(meeting_id, "late-comer")
    assert closed.value.code == "meeting_ended"


async def _recorded(server: ServerClient) -> list[dict] | None:
    rooms = (await server.list_rooms())["items"]
    return rooms if rooms and rooms[0]["recording"] else None


async def _no_rooms(server: ServerClient) -> bool:
    return not (await server.list_rooms())["items"]


async def test_the_web_client_follows_grants_the_server_api_changes(meeting: Meeting, server: ServerClient) -> None:
    """A person in Chromium loses can_publish: the SFU unpublishes their camera and microphone, the
    page says so and disables the controls that send; allowed again, the page sends them again."""
    from tests.media.browser import chromium
    from tests.media.test_large_meeting import enter
    from tests.media.test_web_client import base_url, person
    from videoconf.app import SFU

    meeting_id = meeting.meeting["id"]
    await meeting.token(meeting.host)  # the host's join starts the meeting
    node = meeting.api.app[SFU]

    def published(name: str) -> set[str]:
        return {up.kind for room in node.rooms.values() for p in room.participants.values() if p.name == name for up in p.uptracks.values()}

    async with chromium() as browser:
        page = await person(browser, base_url(meeting), "Wes Web")
        await enter(page, meeting.meeting["code"])
        await until(lambda: published("Wes Web") == {"audio", "video"}, 20, "the page's camera and microphone")
        identity = await page.evaluate("() => window.videoconfRoom.identity")
        await server.update_participant(meeting_id, identity, grants={"can_publish": False})
        await until(lambda: published("Wes Web") == set(), 10, "the page's tracks unpublished")
        await page.locator("#announcer").filter(has_text="You can no longer send audio or video").wait_for(timeout=10000)
        assert await page.get_by_role("button", name="Share screen").is_disabled()
        await server.update_participant(meeting_id, identity, grants={"can_publish": True})
        await page.locator("#announcer").filter(has_text="You can send audio and video again.").wait_for(timeout=10000)
        await until(lambda: published("Wes Web") == {"audio", "video"}, 20, "the page's camera and microphone again")
        assert not await page.get_by_role("button", name="Share screen").is_disabled()
        assert page.errors == [], page.errors


async def test_the_web_client_joins_with_a_minted_token_and_no_account(meeting: Meeting, server: ServerClient) -> None:
    """An application mints a token for its own user; its join_url opens the web client, which joins
    without an account, shows the meeting's title, sees the others and sends its camera; leaving
    says goodbye instead of sending a stranger to a dashboard; a spent or broken link says so."""
    from tests.media.browser import chromium
    from tests.media.test_large_meeting import all_playing

    meeting_id = meeting.meeting["id"]
    host = await meeting.participant(meeting.host)
    await host.publish([(PatternVideoTrack(320, 180, fps=10), "camera")])
    minted = await server.create_token(meeting_id, "shop-customer-7", name="Customer Seven", grants={"can_publish": True, "can_subscribe": True})
    base = str(meeting.api.client.make_url("")).rstrip("/")
    assert minted["join_url"].endswith(f"/#/room/{minted['token']}")  # on the configured base URL
    async with chromium() as browser:
        context = await browser.new_context(permissions=["camera", "microphone"])
        page = await context.new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        await page.goto(f"{base}/#/room/{minted['token']}")
        await page.get_by_text("You join as Customer Seven.").wait_for()
        await page.get_by_role("button", name="Join now").click()
        await page.get_by_role("heading", name=meeting.meeting["title"]).wait_for(timeout=15000)
        await until(lambda: all_playing(page, ["Hedy Host"]), 30, "the host's video playing")
        await host.wait_for("track-published", lambda m: m["track"]["participant"] == "shop-customer-7", timeout=20)
        await page.get_by_role("button", name="Leave").click()
        await page.get_by_role("heading", name="You left the meeting").wait_for()
        # The token was good for one join; a broken one is said to be so.
        await page.goto(f"{base}/#/room/not.a.token")
        await page.get_by_role("heading", name="This link cannot be used").wait_for()
        assert page.errors == [], page.errors
