"""Calendar: events kept in step with meetings, .ics downloads and the feed."""

from __future__ import annotations

from datetime import datetime, timedelta

from icalendar import Calendar
from sqlalchemy import select

from control_api.storage.tables import calendar_events
from tests.conftest import Api


def events(data: bytes) -> list:
    return [c for c in Calendar.from_ical(data).walk("VEVENT")]


async def test_meeting_ics_uses_the_meeting_time_zone(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    year = api.clock().year + 1
    meeting = await api.meeting(
        host["token"], kind="scheduled", title="Berlin call", description="Agenda: all",
        start_time=f"{year}-07-01T09:30:00", duration_minutes=45, timezone="Europe/Berlin",
    )
    status, body = await api.call("GET", f"/api/meetings/{meeting['id']}/calendar.ics", host["token"])
    assert status == 200
    cal = Calendar.from_ical(body)
    assert [tz["TZID"] for tz in cal.walk("VTIMEZONE")] == ["Europe/Berlin"]
    (event,) = events(body)
    start = event.decoded("DTSTART")
    assert (start.hour, start.minute, str(start.tzinfo)) == (9, 30, "Europe/Berlin")
    assert event.decoded("DTEND") - start == timedelta(minutes=45)
    assert str(event["SUMMARY"]) == "Berlin call" and str(event["STATUS"]) == "CONFIRMED"
    assert meeting["join_url"] in str(event["DESCRIPTION"]) and str(event["LOCATION"]) == meeting["join_url"]
    assert str(event["UID"]) == f"{meeting['id']}@videoconf" and int(event["SEQUENCE"]) == 0
    stranger = await api.register("Sam Stranger")
    await api.call("GET", f"/api/meetings/{meeting['id']}/calendar.ics", stranger["token"], expect=404)


async def test_calendar_event_follows_changes_and_cancellation(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.scheduled(host["token"], title="Before")
    new_start = datetime.fromisoformat(meeting["start_time"]) + timedelta(days=1)
    await api.call("PATCH", f"/api/meetings/{meeting['id']}", host["token"], json={"title": "After", "start_time": new_start.isoformat()}, expect=200)
    async with api.services.ctx.db.read() as conn:
        row = (await conn.execute(select(calendar_events))).one()
    assert (row.summary, row.sequence, row.starts_at, row.status) == ("After", 1, new_start, "CONFIRMED")
    await api.call("POST", f"/api/meetings/{meeting['id']}/cancel", host["token"], expect=200)
    _, body = await api.call("GET", f"/api/meetings/{meeting['id']}/calendar.ics", host["token"])
    (event,) = events(body)
    assert str(event["STATUS"]) == "CANCELLED" and int(event["SEQUENCE"]) == 2


async def test_the_calendar_feed_answers_its_secret_or_a_bearer_until_renewed_or_revoked(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ina = await api.register("Ina Invitee")
    hosted = await api.scheduled(host["token"], title="Hosted")
    invited = await api.scheduled(ina["token"], title="Invited")
    await api.scheduled(ina["token"], title="Not for Hedy")
    await api.call("POST", f"/api/meetings/{invited['id']}/invitations", ina["token"], json={"emails": [host["email"]]}, expect=200)
    _, created = await api.call("POST", "/api/calendar/token", host["token"], expect=201)
    assert created["feed_url"].endswith(f"/api/calendar/feed.ics?token={created['token']}")
    status, body = await api.call("GET", f"/api/calendar/feed.ics?token={created['token']}")
    assert status == 200
    assert sorted(str(e["SUMMARY"]) for e in events(body)) == ["Hosted", "Invited"]
    status, bearer = await api.call("GET", "/api/calendar/feed.ics", host["token"])
    assert status == 200 and len(events(bearer)) == 2
    _, renewed = await api.call("POST", "/api/calendar/token", host["token"], expect=201)
    await api.call("GET", f"/api/calendar/feed.ics?token={created['token']}", expect=401)
    await api.call("GET", f"/api/calendar/feed.ics?token={renewed['token']}", expect=200)
    await api.call("DELETE", "/api/calendar/token", host["token"], expect=204)
    await api.call("GET", f"/api/calendar/feed.ics?token={renewed['token']}", expect=401)
    await api.call("GET", "/api/calendar/feed.ics", expect=401)
    await api.call("GET", "/api/calendar/feed.ics?token=short", expect=422)
    assert hosted
