"""Hostile values get a 4xx in the error shape, never a 500, and the connection stays usable:
far-off dates, line breaks in titles, NUL and bidirectional overrides in any text field, a
deleted user's cached token, an empty suffix range, and errors that would echo a huge request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from sqlalchemy import delete, update

from control_api.storage.tables import calendar_events, users
from tests.api.signaling import join, receive
from tests.api.test_recordings import PAYLOAD, _ready_recording
from tests.conftest import Api


class OneConnection:
    """A client that must do everything over one keep-alive connection."""

    def __init__(self, api: Api, session: aiohttp.ClientSession, opened: list[object]) -> None:
        self.api = api
        self.session = session
        self.opened = opened

    async def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        async with self.session.request(method, self.api.client.make_url(path), headers=headers, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else await response.read()
            return response.status, body


@asynccontextmanager
async def one_connection(api: Api) -> AsyncIterator[OneConnection]:
    opened: list[object] = []

    async def on_create(session: object, context: object, params: object) -> None:
        opened.append(params)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        yield OneConnection(api, session, opened)
    assert len(opened) == 1, f"the server closed the connection ({len(opened)} connections were opened)"


def code(body: Any) -> str:
    return body["error"]["code"]


async def test_far_off_start_times_are_refused_on_create_and_patch(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.scheduled(host["token"])
    path = f"/api/meetings/{meeting['id']}"
    async with one_connection(api) as conn:
        for body in (
            {"title": "Far", "kind": "scheduled", "start_time": "9999-12-31T23:00:00"},
            {"title": "Far", "kind": "scheduled", "start_time": "9999-12-31T23:00:00-05:00"},
            {"title": "Far", "kind": "scheduled", "start_time": "2030-01-01T10:00:00Z", "end_time": "9999-12-31T23:59:59Z"},
        ):
            status, answer = await conn.call("POST", "/api/meetings", host["token"], json=body)
            assert (status, code(answer)) == (422, "validation_error"), answer
        for patch in ({"start_time": "9999-12-31T23:00:00"}, {"end_time": "9999-12-31T23:59:59+14:00"}):
            status, answer = await conn.call("PATCH", path, host["token"], json=patch)
            assert (status, code(answer)) == (422, "validation_error"), answer
            assert answer["error"]["details"][0]["field"] in ("body.start_time", "body.end_time")
        status, _ = await conn.call("GET", path, host["token"])
        assert status == 200


async def test_a_title_with_a_line_break_is_refused_and_old_ones_still_render(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    async with one_connection(api) as conn:
        status, answer = await conn.call("POST", "/api/meetings", host["token"], json={"title": "Standup\nBEGIN:VEVENT", "kind": "instant"})
        assert (status, code(answer)) == (422, "validation_error")
        assert answer["error"]["details"][0]["field"] == "body.title"
        meeting = await api.meeting(host["token"], title="Standup")
        status, answer = await conn.call("PATCH", f"/api/meetings/{meeting['id']}", host["token"], json={"title": "a\rb"})
        assert status == 422
        # A title stored before this rule (written straight to the database) still renders.
        async with api.services.ctx.db.write() as db:
            await db.execute(
                update(calendar_events).where(calendar_events.c.meeting_id == uuid.UUID(meeting["id"])).values(summary="Old\ntitle")
            )
        status, ics = await conn.call("GET", f"/api/meetings/{meeting['id']}/calendar.ics", host["token"])
        assert status == 200 and ics.startswith(b"BEGIN:VCALENDAR")


async def test_nul_and_bidi_overrides_are_refused_in_every_text_field(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"])
    mid = meeting["id"]
    nul, rlo, isolate = "a\x00b", "invoice\u202egnp.exe", "x\u2066y"
    cases = [
        ("POST", "/api/auth/register", None, {"email": "new@example.com", "password": "long enough pw", "display_name": nul}),
        ("POST", "/api/auth/register", None, {"email": "new@example.com", "password": "long enough pw", "display_name": rlo}),
        ("PUT", "/api/users/me", host["token"], {"display_name": rlo, "timezone": "UTC"}),
        ("POST", "/api/meetings", host["token"], {"title": nul, "kind": "instant"}),
        ("POST", "/api/meetings", host["token"], {"title": "ok", "description": "line\x00", "kind": "instant"}),
        ("PATCH", f"/api/meetings/{mid}", host["token"], {"description": isolate}),
        ("POST", f"/api/meetings/{mid}/join", guest["token"], {"display_name": rlo}),
        ("POST", f"/api/meetings/{mid}/messages", host["token"], {"body": nul}),
        ("POST", f"/api/meetings/{mid}/messages", host["token"], {"body": rlo}),
        ("POST", "/api/auth/login", None, {"email": host["email"], "password": "pass\x00word"}),
    ]
    async with one_connection(api) as conn:
        for method, path, token, body in cases:
            status, answer = await conn.call(method, path, token, json=body)
            assert (status, code(answer)) == (422, "validation_error"), (path, body, answer)
            assert "\x00" not in answer["error"]["message"] + str(answer["error"]["details"])
        status, answer = await conn.call("GET", f"/api/meetings/{mid}/messages?before=%00", host["token"])
        assert status == 422
        # Line breaks and right-to-left marks stay fine where they belong.
        status, _ = await conn.call("POST", f"/api/meetings/{mid}/messages", host["token"], json={"body": "two\nlines \u200fشكرا"})
        assert status == 201
    assert await api.count("messages") == 1


async def test_bidi_overrides_are_refused_in_signaling_chat_too(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    _, joined = await api.call("POST", f"/api/meetings/{meeting['id']}/join", host["token"], json={}, expect=200)
    async with api.client.ws_connect("/signaling") as ws:
        assert (await join(ws, joined["token"]))["waiting"] is False
        await ws.send_json({"type": "chat", "text": "evil\u202etxt.exe", "id": "c1"})
        error = await receive(ws, "error")
        assert (error["code"], error["id"]) == ("validation_error", "c1")
    assert await api.count("messages") == 0


async def test_a_deleted_users_cached_token_gets_401(api: Api) -> None:
    """The principal cache may trust a token for auth_cache_seconds after its account is deleted
    elsewhere; whatever the request touches then answers 401, never 500."""
    host = await api.register("Hedy Lamarr")
    other = await api.register("Olga Other")
    theirs = await api.meeting(other["token"])
    async with one_connection(api) as conn:
        assert (await conn.call("GET", "/api/users/me", host["token"]))[0] == 200  # now cached
        async with api.services.ctx.db.write() as db:
            await db.execute(delete(users).where(users.c.id == uuid.UUID(host["user"]["id"])))
        for method, path, body in (
            ("GET", "/api/users/me", None),
            ("PUT", "/api/users/me", {"display_name": "Ghost", "timezone": "UTC"}),
            ("POST", "/api/users/me/password", {"current_password": "correct horse battery", "new_password": "another long one"}),
            ("POST", "/api/meetings", {"title": "Ghost meeting", "kind": "instant"}),
            ("POST", "/api/calendar/token", None),
            ("POST", f"/api/meetings/{theirs['id']}/join", {}),
        ):
            assert (await conn.call("GET", "/api/users/me", host["token"]))[0] == 401
            api.services.auth.principals.put(_principal(host), 0, api.clock().timestamp())  # cached again
            status, answer = await conn.call(method, path, host["token"], json=body)
            assert (status, code(answer)) == (401, "invalid_token"), (path, answer)


def _principal(account: dict) -> Any:
    from control_api.services.auth import Principal

    user = account["user"]
    return Principal(uuid.UUID(user["id"]), user["email"], user["display_name"], user["timezone"])


async def test_an_empty_suffix_range_is_416(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"], title="Recorded")
    recording = await _ready_recording(api, host, meeting)
    url = f"/api/recordings/{recording['id']}/download"
    async with one_connection(api) as conn:
        for bad in ("bytes=-0", "bytes=-00"):
            status, answer = await conn.call("GET", url, host["token"], headers={"Range": bad})
            assert status == 416, (bad, status)
        status, body = await conn.call("GET", url, host["token"], headers={"Range": "bytes=-1"})
        assert status == 206 and body == PAYLOAD[-1:]


async def test_errors_never_echo_a_large_part_of_the_request(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    huge = "k" * 60_000
    async with one_connection(api) as conn:
        for method, path, kwargs in (
            ("POST", "/api/meetings", {"json": {"title": "x", huge: 1}}),
            ("POST", "/api/meetings", {"json": {"title": "x", "kind": huge[:50_000]}}),
            ("GET", f"/api/meetings/my-meetings?{huge[:6000]}=1", {}),
            ("GET", f"/api/meetings/by-code/{huge[:6000]}", {}),
        ):
            async with conn.session.request(
                method, api.client.make_url(path), headers={"Authorization": f"Bearer {host['token']}"}, **kwargs
            ) as response:
                raw = await response.read()
                assert 400 <= response.status < 500, (path[:60], response.status)
                assert len(raw) < 3000, (path[:60], len(raw))
