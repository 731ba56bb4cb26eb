"""The server API's keys and their signed tokens: made, listed, revoked; what is refused, and
with which code.  (What the endpoints do to rooms: tests/media/test_server_api.py.)"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.sdk.server import server_token
from control_api.services.api_keys import ApiKeys
from tests.api.server_keys import create_key, server_headers
from tests.conftest import Api
from videoconf.cli import keys_command, main

ROOMS = "/api/server/rooms"


async def refused(api: Api, headers: dict[str, str], status: int = 401, path: str = ROOMS, **kwargs: object) -> str:
    _, body = await api.call("GET" if "json" not in kwargs and "data" not in kwargs else "POST", path, headers=headers, expect=status, **kwargs)
    return body["error"]["code"]


async def test_a_key_signs_requests_and_only_its_public_half_is_stored(api: Api) -> None:
    key_id, secret = await create_key(api, ["rooms:read"])
    assert key_id.startswith("AK") and len(key_id) == 22 and secret.startswith("vcsk_")
    _, body = await api.call("GET", ROOMS, headers=server_headers(key_id, secret), expect=200)
    assert body == {"items": []}
    async with api.services.ctx.db.read() as conn:
        row = (await conn.exec_driver_sql("SELECT public_key, last_used_at FROM api_keys")).one()
    seed = base64.urlsafe_b64decode(secret[5:] + "=")
    assert seed.hex() not in row[0] and secret not in row[0] and len(row[0]) == 64
    assert row[1] is not None  # the call was recorded


async def test_bad_tokens_are_refused_with_clear_codes(api: Api) -> None:
    key_id, secret = await create_key(api, ["rooms:read"])
    now = time.time()
    assert await refused(api, {}) == "missing_token"
    assert await refused(api, {"Authorization": "Bearer not-a-jwt"}) == "invalid_token"
    other = "vcsk_" + base64.urlsafe_b64encode(b"\x01" * 32).decode().rstrip("=")
    assert await refused(api, server_headers(key_id, other)) == "invalid_token"  # wrong signature
    assert await refused(api, server_headers("AK" + "A" * 20, secret)) == "unknown_key"
    assert await refused(api, server_headers(key_id, secret, now=now - 400, ttl=300)) == "token_expired"
    assert await refused(api, server_headers(key_id, secret, ttl=601)) == "token_lifetime_too_long"
    assert await refused(api, server_headers(key_id, secret, now=now + 120)) == "token_not_yet_valid"
    hs256 = jwt.encode({"iss": key_id, "aud": "videoconf-server-api", "iat": int(now), "exp": int(now) + 60}, "k" * 32)
    assert await refused(api, {"Authorization": f"Bearer {hs256}"}) == "invalid_token"
    wrong_audience = jwt.encode(
        {"iss": key_id, "aud": "videoconf-api", "iat": int(now), "exp": int(now) + 60},
        Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(secret[5:] + "=")), algorithm="EdDSA",
    )
    assert await refused(api, {"Authorization": f"Bearer {wrong_audience}"}) == "invalid_token"


async def test_a_signed_body_must_match_and_a_missing_scope_is_forbidden(api: Api) -> None:
    key_id, secret = await create_key(api, ["rooms:read"])
    body = json.dumps({"meeting_id": "00000000-0000-0000-0000-000000000000", "identity": "ext-1"}).encode()
    headers = {**server_headers(key_id, secret, body), "Content-Type": "application/json"}
    code = await refused(api, headers, 403, "/api/server/tokens", data=body)
    assert code == "insufficient_scope"
    signed_other = {**server_headers(key_id, secret, b"{}"), "Content-Type": "application/json"}
    assert await refused(api, signed_other, 401, "/api/server/tokens", data=body) == "invalid_token"


async def test_a_revoked_key_is_refused_and_stays_listed(api: Api) -> None:
    key_id, secret = await create_key(api, ["rooms:read", "rooms:admin"])
    keys = ApiKeys(api.services.ctx.db, api.services.ctx.clock)
    await keys.revoke(key_id)
    assert await refused(api, server_headers(key_id, secret)) == "key_revoked"
    listed = {k.id: k for k in await keys.list()}
    assert listed[key_id].revoked_at is not None and listed[key_id].scopes == ("rooms:read", "rooms:admin")


async def test_the_cli_creates_lists_and_revokes_keys(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    settings = api.services.ctx.settings
    made = await keys_command(settings, "create", name="backend", scopes=["tokens:create", "rooms:read"])
    assert made["secret"].startswith("vcsk_") and made["scopes"] == ["rooms:read", "tokens:create"]
    listed = await keys_command(settings, "list")
    assert [k["id"] for k in listed] == [made["id"]] and all("secret" not in k and "public_key" not in k for k in listed)
    await api.call("GET", ROOMS, headers=server_headers(made["id"], made["secret"]), expect=200)
    revoked = await keys_command(settings, "revoke", key_id=made["id"])
    assert revoked["revoked_at"] is not None
    assert await refused(api, server_headers(made["id"], made["secret"])) == "key_revoked"
    with pytest.raises(Exception) as error:
        await keys_command(settings, "create", name="x", scopes=["everything"])
    assert "unknown scope" in str(error.value)


def test_the_keys_command_line(tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    data = Path(str(tmp_path))
    monkeypatch.setenv("VIDEOCONF_DATA_DIR", str(data))
    monkeypatch.setenv("VIDEOCONF_DATABASE_URL", f"sqlite:///{data / 'keys.db'}")
    assert main(["migrate"]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--name", "ops", "--scope", "rooms:read", "--scope", "recordings"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["scopes"] == ["rooms:read", "recordings"] and made["secret"].startswith("vcsk_")
    assert main(["keys", "list"]) == 0
    assert "vcsk_" not in capsys.readouterr().out
    assert main(["keys", "revoke", made["id"]]) == 0
    assert json.loads(capsys.readouterr().out)["revoked_at"]
    assert main(["keys", "create", "--name", "bad", "--scope", "root"]) == 2


async def test_every_server_route_is_documented_with_its_scope(api: Api) -> None:
    _, spec = await api.call("GET", "/api/openapi.json", expect=200)
    operations = [op for ops in spec["paths"].values() for op in ops.values() if op["operationId"].startswith("server_")]
    assert len(operations) >= 12
    assert all(op["security"] == [{"serverApiKey": [op["x-scope"]]}] for op in operations)
    assert server_token("AK" + "B" * 20, "vcsk_" + "A" * 43).count(".") == 2
