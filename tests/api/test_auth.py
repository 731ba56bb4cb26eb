"""Accounts and sessions: register, login, refresh rotation and reuse, logout, profile,
password change, rate limits."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from control_api.storage.tables import refresh_tokens, users
from tests.conftest import Api, RateLimitRule, limits

# The canonical profile path, and its alias from the original VideoConf API: same assertions.
PROFILE_PATHS = pytest.mark.parametrize("profile", ["/api/users/me", "/api/auth/profile"], ids=["canonical", "alias"])


async def test_register_normalises_email_and_returns_a_working_session(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/api/auth/register",
        json={"email": "  Grace.Hopper@EXAMPLE.org ", "password": "a long password", "display_name": "Grace Hopper"},
    )
    assert status == 201, body
    assert body["user"]["email"] == "grace.hopper@example.org"
    assert body["user"]["initials"] == "GH"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    _, me = await api.call("GET", "/api/users/me", body["access_token"], expect=200)
    assert me["id"] == body["user"]["id"]
    async with api.services.ctx.db.read() as conn:
        stored = (await conn.execute(select(users.c.password_hash))).scalar_one()
        token_hash = (await conn.execute(select(refresh_tokens.c.token_hash))).scalar_one()
    assert stored.startswith("$argon2id$")
    assert body["refresh_token"] not in token_hash and len(token_hash) == 64


async def test_register_rejects_duplicate_bad_email_and_weak_password(api: Api) -> None:
    await api.register("Ada Lovelace", email="ada@example.com")
    status, body = await api.call(
        "POST", "/api/auth/register",
        json={"email": "ADA@example.com", "password": "another password", "display_name": "Ada"},
    )
    assert (status, body["error"]["code"]) == (409, "email_taken")
    status, body = await api.call(
        "POST", "/api/auth/register",
        json={"email": "not-an-email", "password": "another password", "display_name": "X"},
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")
    status, body = await api.call(
        "POST", "/api/auth/register", json={"email": "b@example.com", "password": "short", "display_name": "B"},
    )
    assert status == 422 and body["error"]["details"][0]["field"] == "body.password"
    status, body = await api.call(
        "POST", "/api/auth/register",
        json={"email": "c@example.com", "password": "aaaaaaaaaaaa", "display_name": "C"},
    )
    assert (status, body["error"]["code"]) == (422, "weak_password")
    assert await api.count("users") == 1


async def test_login_checks_the_password(api: Api) -> None:
    await api.register("Ada Lovelace", email="ada@example.com")
    status, body = await api.call("POST", "/api/auth/login", json={"email": "Ada@Example.com", "password": "correct horse battery"})
    assert status == 200 and body["user"]["email"] == "ada@example.com"
    status, body = await api.call("POST", "/api/auth/login", json={"email": "ada@example.com", "password": "wrong password"})
    assert (status, body["error"]["code"]) == (401, "invalid_credentials")
    status, body = await api.call("POST", "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong password"})
    assert (status, body["error"]["code"]) == (401, "invalid_credentials")


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    first = await api.register("Ada Lovelace")
    _, second = await api.call("POST", "/api/auth/refresh", json={"refresh_token": first["refresh_token"]}, expect=200)
    assert second["refresh_token"] != first["refresh_token"]
    _, third = await api.call("POST", "/api/auth/refresh", json={"refresh_token": second["refresh_token"]}, expect=200)
    # A thief replays the first token: the whole family dies, including the newest token.
    status, body = await api.call("POST", "/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert (status, body["error"]["code"]) == (401, "refresh_token_reused")
    status, body = await api.call("POST", "/api/auth/refresh", json={"refresh_token": third["refresh_token"]})
    assert (status, body["error"]["code"]) == (401, "refresh_token_revoked")


async def test_refresh_of_one_login_leaves_other_logins_alone(api: Api) -> None:
    account = await api.register("Ada Lovelace", email="ada@example.com")
    _, other = await api.call("POST", "/api/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"}, expect=200)
    _, rotated = await api.call("POST", "/api/auth/refresh", json={"refresh_token": account["refresh_token"]}, expect=200)
    await api.call("POST", "/api/auth/refresh", json={"refresh_token": account["refresh_token"]}, expect=401)
    await api.call("POST", "/api/auth/refresh", json={"refresh_token": other["refresh_token"]}, expect=200)


async def test_refresh_token_expires(api: Api) -> None:
    account = await api.register("Ada Lovelace")
    api.clock.advance(30 * 86400 + 1)
    status, body = await api.call("POST", "/api/auth/refresh", json={"refresh_token": account["refresh_token"]})
    assert (status, body["error"]["code"]) == (401, "refresh_token_expired")
    status, body = await api.call("POST", "/api/auth/refresh", json={"refresh_token": "x" * 43})
    assert (status, body["error"]["code"]) == (401, "invalid_refresh_token")


@PROFILE_PATHS
async def test_access_token_expires_and_is_checked(api: Api, profile: str) -> None:
    account = await api.register("Ada Lovelace")
    await api.call("GET", profile, account["token"], expect=200)
    api.clock.advance(901)
    status, body = await api.call("GET", profile, account["token"])
    assert (status, body["error"]["code"]) == (401, "token_expired")
    async with api.client.get(profile) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"]["code"] == "unauthorized"
    status, body = await api.call("GET", profile, headers={"Authorization": "Basic abc"})
    assert status == 401
    tampered = account["token"][:-3] + ("AAA" if not account["token"].endswith("AAA") else "BBB")
    api.clock.advance(-901)
    status, body = await api.call("GET", profile, tampered)
    assert (status, body["error"]["code"]) == (401, "invalid_token")


async def test_logout_revokes_the_family(api: Api) -> None:
    account = await api.register("Ada Lovelace")
    _, rotated = await api.call("POST", "/api/auth/refresh", json={"refresh_token": account["refresh_token"]}, expect=200)
    await api.call("POST", "/api/auth/logout", json={"refresh_token": rotated["refresh_token"]}, expect=204)
    status, body = await api.call("POST", "/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert (status, body["error"]["code"]) == (401, "refresh_token_revoked")
    await api.call("POST", "/api/auth/logout", json={"refresh_token": "y" * 43}, expect=401)


@PROFILE_PATHS
async def test_a_profile_change_needs_a_valid_name_and_time_zone_and_is_kept(api: Api, profile: str) -> None:
    account = await api.register("Ada Lovelace")
    _, me = await api.call(
        "PUT", profile, account["token"], json={"display_name": "Ada King", "timezone": "Europe/London"}, expect=200
    )
    assert (me["display_name"], me["timezone"], me["initials"]) == ("Ada King", "Europe/London", "AK")
    status, body = await api.call("PUT", profile, account["token"], json={"display_name": "Ada"})
    assert status == 422 and body["error"]["details"][0]["field"] == "body.timezone"
    status, body = await api.call(
        "PUT", profile, account["token"], json={"display_name": "Ada", "timezone": "Mars/Olympus"}
    )
    assert status == 422
    status, body = await api.call("PUT", profile, account["token"], json={"display_name": "   ", "timezone": "UTC"})
    assert status == 422
    _, me = await api.call("GET", profile, account["token"], expect=200)
    assert me["display_name"] == "Ada King"


async def test_password_change_revokes_everything(api: Api) -> None:
    account = await api.register("Ada Lovelace", email="ada@example.com")
    _, other = await api.call("POST", "/api/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"}, expect=200)
    status, body = await api.call(
        "POST", "/api/users/me/password", account["token"],
        json={"current_password": "wrong one!", "new_password": "a brand new secret"},
    )
    assert (status, body["error"]["code"]) == (403, "wrong_password")
    _, fresh = await api.call(
        "POST", "/api/users/me/password", account["token"],
        json={"current_password": "correct horse battery", "new_password": "a brand new secret"},
        expect=200,
    )
    for token in (account["token"], other["access_token"]):
        await api.call("GET", "/api/users/me", token, expect=401)
    for refresh in (account["refresh_token"], other["refresh_token"]):
        status, body = await api.call("POST", "/api/auth/refresh", json={"refresh_token": refresh})
        assert (status, body["error"]["code"]) == (401, "refresh_token_revoked")
    await api.call("GET", "/api/users/me", fresh["access_token"], expect=200)
    await api.call("POST", "/api/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"}, expect=401)
    await api.call("POST", "/api/auth/login", json={"email": "ada@example.com", "password": "a brand new secret"}, expect=200)


async def test_login_is_rate_limited_per_ip_and_per_account(api_factory) -> None:
    api = await api_factory(rate_limits=limits(login_per_ip=RateLimitRule(limit=5, period=60), login_per_account=RateLimitRule(limit=3, period=60)))
    await api.register("Ada Lovelace", email="ada@example.com")
    for _ in range(3):
        await api.call("POST", "/api/auth/login", json={"email": "ada@example.com", "password": "wrong password"}, expect=401)
    async with api.client.post("/api/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"}) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"]["code"] == "rate_limited"
    # Another account from the same address still gets the remaining per-IP budget ...
    await api.call("POST", "/api/auth/login", json={"email": "bob@example.com", "password": "whatever!!"}, expect=401)
    # ... until the address runs out.
    await api.call("POST", "/api/auth/login", json={"email": "carol@example.com", "password": "whatever!!"}, expect=429)
    api.clock.advance(61)
    await api.call("POST", "/api/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"}, expect=200)


async def test_register_is_rate_limited_per_ip(api_factory) -> None:
    api = await api_factory(rate_limits=limits(register_per_ip=RateLimitRule(limit=2, period=3600)))
    await api.register("One")
    await api.register("Two")
    status, body = await api.call(
        "POST", "/api/auth/register", json={"email": "three@example.com", "password": "correct horse battery", "display_name": "Three"}
    )
    assert status == 429 and body["error"]["details"]["retry_after"] == "1800"
    assert await api.count("users") == 2


async def test_other_nodes_revocations_are_honoured_within_the_cache_window(api: Api) -> None:
    """Another node changed the password (the token version moved on in the database): this node
    may trust its cached entry for ``auth_cache_seconds`` (5 s), never longer."""
    account = await api.register("Ada Lovelace")
    await api.call("GET", "/api/users/me", account["token"], expect=200)
    async with api.services.ctx.db.write() as conn:
        await conn.execute(update(users).values(token_version=users.c.token_version + 1))
    await api.call("GET", "/api/users/me", account["token"], expect=200)
    api.clock.advance(5)
    status, body = await api.call("GET", "/api/users/me", account["token"])
    assert (status, body["error"]["code"]) == (401, "invalid_token")
