"""Meetings: creation and validation, reading, lists, updates, the status machine, deletion."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import Api, RateLimitRule, limits

# The canonical look-up by code, and its alias from the original VideoConf API: same assertions.
LOOKUP_PATHS = pytest.mark.parametrize("lookup", ["/api/meetings/by-code", "/api/meetings/code"], ids=["canonical", "alias"])


async def test_instant_meeting_is_live_with_a_readable_code(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"], title="Quick call", passcode="471100")
    assert meeting["status"] == "live" and meeting["kind"] == "instant"
    assert re.fullmatch(r"[a-z]{3}-[a-z]{4}-[a-z]{3}", meeting["code"])
    assert not set(meeting["code"]) & set("ilo")
    assert meeting["my_role"] == "host" and meeting["passcode"] == "471100" and meeting["has_passcode"]
    assert meeting["join_url"].endswith("/j/" + meeting["code"])
    assert meeting["started_at"] is not None
    start = datetime.fromisoformat(meeting["start_time"])
    assert datetime.fromisoformat(meeting["end_time"]) - start == timedelta(hours=1)
    assert meeting["settings"] == {
        "waiting_room": False, "mute_on_join": False, "allow_recording": True,
        "join_before_host": False, "max_participants": 100, "last_n": 16,
    }


async def test_scheduled_meeting_times_are_read_in_its_time_zone(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    year = api.clock().year + 1
    meeting = await api.meeting(
        host["token"], kind="scheduled", title="Planning", start_time=f"{year}-07-01T09:30:00",
        duration_minutes=45, timezone="Europe/Berlin", settings={"waiting_room": True},
    )
    assert meeting["status"] == "scheduled"
    assert datetime.fromisoformat(meeting["start_time"]) == datetime(year, 7, 1, 7, 30, tzinfo=timezone.utc)
    assert datetime.fromisoformat(meeting["end_time"]) == datetime(year, 7, 1, 8, 15, tzinfo=timezone.utc)
    assert meeting["timezone"] == "Europe/Berlin" and meeting["settings"]["waiting_room"] is True
    # An explicit offset wins over the time zone; winter time in Berlin is UTC+1.
    winter = await api.meeting(
        host["token"], kind="scheduled", title="Winter", start_time=f"{year}-01-10T09:00:00+01:00",
        end_time=f"{year}-01-10T10:00:00", timezone="Europe/Berlin",
    )
    assert datetime.fromisoformat(winter["start_time"]) == datetime(year, 1, 10, 8, 0, tzinfo=timezone.utc)
    assert datetime.fromisoformat(winter["end_time"]) == datetime(year, 1, 10, 9, 0, tzinfo=timezone.utc)


async def test_meeting_times_default_to_the_hosts_time_zone(api: Api) -> None:
    host = await api.register("Hedy Lamarr", timezone="America/New_York")
    year = api.clock().year + 1
    meeting = await api.meeting(host["token"], kind="scheduled", start_time=f"{year}-07-01T09:00:00")
    assert meeting["timezone"] == "America/New_York"
    assert datetime.fromisoformat(meeting["start_time"]).hour == 13


async def test_a_meeting_that_does_not_fit_is_refused_naming_the_field_and_nothing_is_stored(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    soon = (api.clock() + timedelta(days=1)).isoformat()
    later = (api.clock() + timedelta(days=1, hours=2)).isoformat()
    past = (api.clock() - timedelta(days=1)).isoformat()
    cases = [
        ({"title": "x", "kind": "scheduled"}, "body.start_time"),
        ({"title": "x", "kind": "instant", "start_time": soon}, "body.start_time"),
        ({"title": "x", "kind": "scheduled", "start_time": later, "end_time": soon}, "body.end_time"),
        ({"title": "x", "kind": "scheduled", "start_time": soon, "end_time": later, "duration_minutes": 5}, "body.duration_minutes"),
        ({"title": "x", "kind": "scheduled", "start_time": soon, "duration_minutes": 1441}, "body.duration_minutes"),
        ({"title": "x", "kind": "scheduled", "start_time": past}, "body.end_time"),
        ({"title": "", "kind": "instant"}, "body.title"),
        ({"title": "x", "kind": "weekly"}, "body.kind"),
        ({"title": "x", "passcode": "a b"}, "body.passcode"),
        ({"title": "x", "timezone": "Nowhere/Land"}, "body.timezone"),
        ({"title": "x", "settings": {"max_participants": 1}}, "body.settings.max_participants"),
        ({"title": "x", "settings": {"unknown": True}}, "body.settings.unknown"),
        ({"title": "x", "start_time": "tomorrow", "kind": "scheduled"}, "body.start_time"),
    ]
    for payload, field in cases:
        status, body = await api.call("POST", "/api/meetings", host["token"], json=payload)
        assert status == 422, (payload, body)
        assert field in [d["field"] for d in body["error"]["details"]], (payload, body)
    assert await api.count("meetings") == 0
    assert await api.count("calendar_events") == 0


async def test_meetings_are_invisible_to_strangers(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    stranger = await api.register("Eve Stranger")
    meeting = await api.meeting(host["token"])
    await api.call("GET", f"/api/meetings/{meeting['id']}", host["token"], expect=200)
    status, body = await api.call("GET", f"/api/meetings/{meeting['id']}", stranger["token"])
    assert (status, body["error"]["code"]) == (404, "not_found")
    await api.call("GET", "/api/meetings/00000000-0000-0000-0000-000000000000", host["token"], expect=404)
    await api.call("GET", "/api/meetings/not-a-uuid", host["token"], expect=404)
    await api.call("GET", f"/api/meetings/{meeting['id']}", expect=401)


@LOOKUP_PATHS
async def test_lookup_by_code_shows_only_public_details(api: Api, lookup: str) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"], passcode="123456", settings={"waiting_room": True})
    for code in (meeting["code"], meeting["code"].upper(), meeting["code"].replace("-", "")):
        _, found = await api.call("GET", f"{lookup}/{code}", guest["token"], expect=200)
        assert found["id"] == meeting["id"]
    assert found == {
        "id": meeting["id"], "code": meeting["code"], "title": meeting["title"], "host_name": "Hedy Lamarr",
        "status": "live", "start_time": meeting["start_time"], "end_time": meeting["end_time"],
        "timezone": "UTC", "has_passcode": True, "waiting_room": True,
    }
    status, body = await api.call("GET", f"{lookup}/abc-defg-hjk", guest["token"])
    assert (status, body["error"]["message"]) == (404, "meeting not found")  # the service's, not the router's
    status, body = await api.call("GET", f"{lookup}/abc-12", guest["token"])
    assert (status, body["error"]["code"]) == (422, "invalid_code")


@LOOKUP_PATHS
async def test_lookup_by_code_is_rate_limited(api_factory, lookup: str) -> None:
    api = await api_factory(rate_limits=limits(code_lookup_per_ip=RateLimitRule(limit=3, period=60)))
    user = await api.register("Mallory Guess")
    for _ in range(3):
        _, body = await api.call("GET", f"{lookup}/abc-defg-hjk", user["token"], expect=404)
        assert body["error"]["message"] == "meeting not found"
    status, body = await api.call("GET", f"{lookup}/abc-defg-hjk", user["token"])
    assert status == 429 and body["error"]["details"]["retry_after"] == "20"


async def test_my_meetings_and_upcoming_are_not_captured_by_the_id_route(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    for path in ("/api/meetings/my-meetings", "/api/meetings/upcoming"):
        status, body = await api.call("GET", path, host["token"])
        assert status == 200 and body == {"items": [], "next_cursor": None}


async def test_my_meetings_lists_hosted_invited_and_joined_with_pagination(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    other = await api.register("Otto Other")
    for hours in (1, 2, 3):
        await api.scheduled(host["token"], hours_ahead=hours, title=f"Mine {hours}")
    invited = await api.scheduled(other["token"], hours_ahead=4, title="Invited")
    await api.call("POST", f"/api/meetings/{invited['id']}/invitations", other["token"], json={"emails": [host["email"]]}, expect=200)
    joined = await api.meeting(other["token"], title="Joined")
    await api.call("POST", f"/api/meetings/{joined['id']}/join", host["token"], json={}, expect=200)
    await api.scheduled(other["token"], title="Not mine")
    await api.call("PATCH", f"/api/meetings/{invited['id']}", other["token"], json={"passcode": "999900"}, expect=200)

    items, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        _, page = await api.call("GET", "/api/meetings/my-meetings" + query, host["token"], expect=200)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    seen = [(m["title"], m["my_role"]) for m in items]
    assert seen == [("Invited", "guest"), ("Mine 3", "host"), ("Mine 2", "host"), ("Mine 1", "host"), ("Joined", "participant")]
    # The passcode is shown to hosts and co-hosts only, never in a guest's list.
    assert [m["passcode"] for m in items if m["title"] == "Invited"] == [None]
    _, hosted = await api.call("GET", "/api/meetings/my-meetings?role=host", host["token"], expect=200)
    assert [m["title"] for m in hosted["items"]] == ["Mine 3", "Mine 2", "Mine 1"]
    _, live = await api.call("GET", "/api/meetings/my-meetings?status=live", host["token"], expect=200)
    assert [m["title"] for m in live["items"]] == ["Joined"]
    _, part = await api.call("GET", "/api/meetings/my-meetings?role=participated", host["token"], expect=200)
    assert [m["title"] for m in part["items"]] == ["Joined"]
    for bad in ("?limit=0", "?limit=101", "?status=paused", "?cursor=%%%", "?cursor=WzFd", "?bogus=1", "?limit=1&limit=2"):
        status, body = await api.call("GET", "/api/meetings/my-meetings" + bad, host["token"])
        assert status == 422, (bad, body)


async def test_upcoming_lists_live_and_future_meetings_soonest_first(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    late = await api.scheduled(host["token"], hours_ahead=48, title="Late")
    soon = await api.scheduled(host["token"], hours_ahead=2, title="Soon")
    live = await api.meeting(host["token"], title="Live now")
    cancelled = await api.scheduled(host["token"], hours_ahead=3, title="Cancelled")
    await api.call("POST", f"/api/meetings/{cancelled['id']}/cancel", host["token"], expect=200)
    ended = await api.meeting(host["token"], title="Ended")
    await api.call("POST", f"/api/meetings/{ended['id']}/end", host["token"], expect=200)
    _, page = await api.call("GET", "/api/meetings/upcoming", host["token"], expect=200)
    assert [m["title"] for m in page["items"]] == ["Live now", "Soon", "Late"]
    api.clock.advance(3 * 3600)  # "Soon" is over, though nobody started it
    _, page = await api.call("GET", "/api/meetings/upcoming", await api.login(host["email"]), expect=200)
    assert [m["title"] for m in page["items"]] == ["Live now", "Late"]
    assert soon and late and live


async def test_update_by_host_and_cohost_only(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    cohost = await api.register("Carl Cohost")
    guest = await api.register("Guy Guest")
    stranger = await api.register("Eve Stranger")
    meeting = await api.scheduled(host["token"], passcode="123400")
    path = f"/api/meetings/{meeting['id']}"
    await api.call("POST", path + "/invitations", host["token"], json={"emails": [cohost["email"]], "role": "cohost"}, expect=200)
    await api.call("POST", path + "/invitations", host["token"], json={"emails": [guest["email"]]}, expect=200)
    _, updated = await api.call("PATCH", path, cohost["token"], json={"title": "Renamed", "settings": {"mute_on_join": True}}, expect=200)
    assert updated["title"] == "Renamed" and updated["my_role"] == "cohost" and updated["passcode"] == "123400"
    assert updated["settings"]["mute_on_join"] is True and updated["settings"]["allow_recording"] is True
    status, body = await api.call("PATCH", path, guest["token"], json={"title": "Mine now"})
    assert (status, body["error"]["code"]) == (403, "not_meeting_admin")
    await api.call("PATCH", path, stranger["token"], json={"title": "Mine now"}, expect=404)
    _, seen_by_guest = await api.call("GET", path, guest["token"], expect=200)
    assert seen_by_guest["title"] == "Renamed" and seen_by_guest["passcode"] is None and seen_by_guest["has_passcode"]
    _, cleared = await api.call("PATCH", path, host["token"], json={"passcode": None}, expect=200)
    assert cleared["has_passcode"] is False
    for bad in ({"title": None}, {"settings": None}, {"start_time": None}, {"settings": {"waiting_room": None}}, {"status": "live"}):
        status, body = await api.call("PATCH", path, host["token"], json=bad)
        assert status == 422, (bad, body)


async def test_moving_the_start_keeps_the_duration(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.scheduled(host["token"], duration_minutes=30)
    start = datetime.fromisoformat(meeting["start_time"]) + timedelta(hours=5)
    _, moved = await api.call("PATCH", f"/api/meetings/{meeting['id']}", host["token"], json={"start_time": start.isoformat()}, expect=200)
    assert datetime.fromisoformat(moved["start_time"]) == start
    assert datetime.fromisoformat(moved["end_time"]) == start + timedelta(minutes=30)
    status, body = await api.call(
        "PATCH", f"/api/meetings/{meeting['id']}", host["token"], json={"end_time": (start - timedelta(minutes=1)).isoformat()}
    )
    assert status == 422 and body["error"]["details"][0]["field"] == "body.end_time"


async def test_meetings_go_scheduled_live_ended_or_scheduled_cancelled_and_nothing_else(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.scheduled(host["token"])
    path = f"/api/meetings/{meeting['id']}"
    status, body = await api.call("POST", path + "/end", host["token"])
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    assert body["error"]["details"] == {"status": "scheduled", "action": "end"}
    _, live = await api.call("POST", path + "/start", host["token"], expect=200)
    assert live["status"] == "live" and live["started_at"]
    await api.call("POST", path + "/start", host["token"], expect=409)
    await api.call("POST", path + "/cancel", host["token"], expect=409)
    status, body = await api.call("PATCH", path, host["token"], json={"start_time": (api.clock() + timedelta(hours=1)).isoformat()})
    assert (status, body["error"]["code"]) == (409, "meeting_live")
    _, ended = await api.call("POST", path + "/end", host["token"], expect=200)
    assert ended["status"] == "ended" and ended["ended_at"]
    for action in ("start", "end", "cancel"):
        await api.call("POST", f"{path}/{action}", host["token"], expect=409)
    status, body = await api.call("PATCH", path, host["token"], json={"title": "Too late"})
    assert (status, body["error"]["code"]) == (409, "meeting_closed")

    other = await api.scheduled(host["token"])
    _, cancelled = await api.call("POST", f"/api/meetings/{other['id']}/cancel", host["token"], expect=200)
    assert cancelled["status"] == "cancelled"
    await api.call("POST", f"/api/meetings/{other['id']}/start", host["token"], expect=409)


async def test_only_admins_change_status(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.scheduled(host["token"])
    await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [guest["email"]]}, expect=200)
    for action in ("start", "cancel"):
        await api.call("POST", f"/api/meetings/{meeting['id']}/{action}", guest["token"], expect=403)
    _, still = await api.call("GET", f"/api/meetings/{meeting['id']}", host["token"], expect=200)
    assert still["status"] == "scheduled"


async def test_only_the_host_deletes_a_meeting_once_it_is_over_and_its_chat_and_invitations_go_with_it(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    cohost = await api.register("Carl Cohost")
    meeting = await api.meeting(host["token"])
    path = f"/api/meetings/{meeting['id']}"
    await api.call("POST", path + "/invitations", host["token"], json={"emails": [cohost["email"]], "role": "cohost"}, expect=200)
    await api.call("POST", path + "/messages", host["token"], json={"body": "hello"}, expect=201)
    status, body = await api.call("DELETE", path, host["token"])
    assert (status, body["error"]["code"]) == (409, "meeting_live")
    await api.call("POST", path + "/end", host["token"], expect=200)
    status, body = await api.call("DELETE", path, cohost["token"])
    assert (status, body["error"]["code"]) == (403, "not_host")
    await api.call("DELETE", path, host["token"], expect=204)
    await api.call("GET", path, host["token"], expect=404)
    for table in ("meetings", "messages", "invitations", "participants", "calendar_events"):
        assert await api.count(table) == 0, table
