"""The original VideoConf (Node/Express) paths its web, mobile and desktop clients call, served
as documented aliases of the canonical ones. tests/api/test_auth.py and test_meetings.py run
their profile and look-up tests on both paths; here, an old client's whole journey and the
OpenAPI document."""

from __future__ import annotations

from tests.conftest import Api

ALIASES = {
    ("get", "/api/auth/profile"): "/api/users/me",
    ("put", "/api/auth/profile"): "/api/users/me",
    ("get", "/api/meetings/code/{code}"): "/api/meetings/by-code/{code}",
}


async def test_a_client_of_the_original_api_signs_in_edits_its_profile_and_joins_by_code(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"], passcode="471100")
    await api.register("Old Client", email="old@example.com")
    _, session = await api.call("POST", "/api/auth/login", json={"email": "old@example.com", "password": "correct horse battery"}, expect=200)
    token = session["access_token"]

    _, profile = await api.call("GET", "/api/auth/profile", token, expect=200)
    _, canonical = await api.call("GET", "/api/users/me", token, expect=200)
    assert profile == canonical and profile["email"] == "old@example.com"
    _, changed = await api.call("PUT", "/api/auth/profile", token, json={"display_name": "Old Timer", "timezone": "Europe/Berlin"}, expect=200)
    assert changed["display_name"] == "Old Timer" and changed["initials"] == "OT"
    _, canonical = await api.call("GET", "/api/users/me", token, expect=200)
    assert canonical == changed

    _, found = await api.call("GET", f"/api/meetings/code/{meeting['code'].upper()}", token, expect=200)
    _, same = await api.call("GET", f"/api/meetings/by-code/{meeting['code']}", token, expect=200)
    assert found == same and found["id"] == meeting["id"] and found["has_passcode"]
    _, joined = await api.call("POST", f"/api/meetings/{found['id']}/join", token, json={"passcode": "471100"}, expect=200)
    assert joined["token"]
    await api.call("GET", "/api/auth/profile", expect=401)
    await api.call("GET", "/api/meetings/code/abc-defg-hjk", expect=401)


async def test_the_openapi_document_lists_the_aliases_as_deprecated_twins(api: Api) -> None:
    _, spec = await api.call("GET", "/api/openapi.json", expect=200)
    paths = spec["paths"]
    for (method, alias), canonical in ALIASES.items():
        operation, original = paths[alias][method], paths[canonical][method]
        assert operation["deprecated"] is True and operation["x-alias-of"] == canonical
        assert f"`{method.upper()} {canonical}`" in operation["description"]
        assert "deprecated" not in original and "x-alias-of" not in original
        for key in ("parameters", "responses", "security", "tags", "requestBody"):
            assert operation.get(key) == original.get(key), (alias, key)
        assert operation["operationId"] != original["operationId"]
    aliased = {(m, p) for p, ops in paths.items() for m, op in ops.items() if op.get("deprecated")}
    assert aliased == set(ALIASES)
    operation_ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
