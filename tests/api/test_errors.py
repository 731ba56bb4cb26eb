"""Bad input gets one JSON error shape and leaves the database unchanged."""

from __future__ import annotations

from tests.conftest import Api

TABLES = ("users", "refresh_tokens", "meetings", "calendar_events", "invitations", "participants", "messages", "notifications")


async def snapshot(api: Api) -> dict[str, int]:
    return {table: await api.count(table) for table in TABLES}


def assert_error(body: dict, code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_malformed_bodies_are_rejected_without_writes(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    before = await snapshot(api)
    auth = {"Authorization": f"Bearer {host['token']}"}
    json_type = {**auth, "Content-Type": "application/json"}
    cases = [
        ("POST", "/api/meetings", {"data": b'{"title": "x"', "headers": json_type}, 400, "malformed_json"),
        ("POST", "/api/meetings", {"data": b"", "headers": json_type}, 400, "malformed_json"),
        ("POST", "/api/meetings", {"data": b"\xff\xfe", "headers": json_type}, 400, "malformed_json"),
        ("POST", "/api/meetings", {"data": b"[1, 2]", "headers": json_type}, 422, "validation_error"),
        ("POST", "/api/meetings", {"data": b'"title"', "headers": json_type}, 422, "validation_error"),
        ("POST", "/api/meetings", {"data": b"title=x", "headers": {**auth, "Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"),
        ("POST", "/api/meetings", {"json": {"title": "x", "colour": "red"}, "headers": auth}, 422, "validation_error"),
        ("POST", "/api/meetings", {"json": {"title": 42}, "headers": auth}, 422, "validation_error"),
        ("POST", "/api/meetings", {"json": {"title": "x", "settings": {"waiting_room": "yes"}}, "headers": auth}, 422, "validation_error"),
        ("POST", "/api/meetings", {"json": {"title": "x", "settings": {"max_participants": "10"}}, "headers": auth}, 422, "validation_error"),
        ("POST", "/api/meetings", {"json": {"title": "x" * 201}, "headers": auth}, 422, "validation_error"),
        ("POST", "/api/meetings", {"json": {"title": "x", "description": "y" * 70_000}, "headers": auth}, 413, "payload_too_large"),
        ("PATCH", f"/api/meetings/{meeting['id']}", {"json": {"title": ["x"]}, "headers": auth}, 422, "validation_error"),
        ("POST", f"/api/meetings/{meeting['id']}/messages", {"data": b"{}" + b" " * 70_000, "headers": json_type}, 413, "payload_too_large"),
        ("POST", "/api/auth/register", {"json": {"email": "a@example.com", "password": "p" * 2000, "display_name": "A"}}, 422, "validation_error"),
        ("POST", "/api/auth/register", {"json": {"email": "a@example.com", "password": "long enough pw", "display_name": "A", "admin": True}}, 422, "validation_error"),
        ("POST", "/api/auth/login", {"json": {"email": "a@example.com", "password": 12345678901}}, 422, "validation_error"),
        ("POST", "/api/auth/refresh", {"json": {"refresh_token": None}}, 422, "validation_error"),
    ]
    for method, path, kwargs, status, code in cases:
        got, body = await api.call(method, path, **kwargs)
        assert got == status, (path, kwargs.get("json") or kwargs.get("data", b"")[:40], body)
        assert_error(body, code)
    assert await snapshot(api) == before


async def test_validation_errors_name_the_fields(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    _, body = await api.call("POST", "/api/meetings", host["token"], json={"title": 1, "extra": 2, "settings": {"waiting_room": 3}})
    fields = sorted(d["field"] for d in body["error"]["details"])
    assert fields == ["body.extra", "body.settings.waiting_room", "body.title"]


async def test_unknown_routes_and_methods_use_the_error_shape(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    status, body = await api.call("GET", "/api/nothing-here", host["token"])
    assert status == 404
    assert_error(body, "not_found")
    async with api.client.put("/api/meetings", headers={"Authorization": f"Bearer {host['token']}"}) as response:
        assert response.status == 405 and "POST" in response.headers["Allow"]
        assert_error(await response.json(), "method_not_allowed")


async def test_chunked_oversized_body_is_refused(api: Api) -> None:
    host = await api.register("Hedy Lamarr")

    async def body():
        yield b'{"title": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    before = await snapshot(api)
    async with api.client.post(
        "/api/meetings", data=body(), headers={"Authorization": f"Bearer {host['token']}", "Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
        assert_error(await response.json(), "payload_too_large")
    assert await snapshot(api) == before


async def test_a_failing_request_leaves_no_partial_rows(api: Api, monkeypatch) -> None:
    """Creating a meeting writes the meeting and its calendar event in one transaction: if the
    second write fails, the first is rolled back and the client gets a 500 in the error shape."""
    host = await api.register("Hedy Lamarr")
    calendar = api.services.calendar

    async def broken_sync(conn, meeting):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(calendar, "sync", broken_sync)
    status, body = await api.call("POST", "/api/meetings", host["token"], json={"title": "Doomed", "kind": "instant"})
    assert status == 500
    assert_error(body, "internal_error")
    assert body["error"]["details"]["request_id"]
    assert await api.count("meetings") == 0
