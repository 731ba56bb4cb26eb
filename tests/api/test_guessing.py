"""Guessing: passcodes and passwords.  A spent budget refuses every try, right or wrong; budgets
are per meeting as well as per guesser; failed logins never lock the owner out from elsewhere;
invitations cannot probe addresses in bulk."""

from __future__ import annotations

import re

from tests.conftest import Api, RateLimitRule, limits

PASSCODE = "246813"


def rule(limit: int, period: float = 600) -> RateLimitRule:
    return RateLimitRule(limit=limit, period=period)


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def guess(api: Api, account: dict, meeting: dict, passcode: str) -> tuple[int, str | None]:
    status, body = await api.call("POST", f"/api/meetings/{meeting['id']}/join", account["token"], json={"passcode": passcode})
    return status, (body.get("error") or {}).get("code")


async def test_once_a_guesser_has_spent_the_budget_even_the_right_passcode_is_refused(api_factory) -> None:
    api = await api_factory(rate_limits=limits(passcode_per_user=rule(3)))
    host = await api.register("Hedy Lamarr")
    guesser = await api.register("Mallory Guess")
    meeting = await api.meeting(host["token"], passcode=PASSCODE)
    for wrong in ("000000", "111111", "222222"):
        assert await guess(api, guesser, meeting, wrong) == (403, "wrong_passcode")
    assert await guess(api, guesser, meeting, "333333") == (429, "rate_limited")
    assert await guess(api, guesser, meeting, PASSCODE) == (429, "rate_limited")
    api.clock.advance(200)  # one try has come back
    assert await guess(api, guesser, meeting, PASSCODE) == (200, None)


async def test_the_meeting_has_a_budget_of_its_own_across_guessers(api_factory) -> None:
    api = await api_factory(rate_limits=limits(passcode_per_meeting=rule(4, 3600)))
    host = await api.register("Hedy Lamarr")
    invitee = await api.register("Ina Invitee")
    meeting = await api.meeting(host["token"], passcode=PASSCODE)
    await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [invitee["email"]]}, expect=200)
    for index in range(4):
        sybil = await api.register(f"Sybil {index}")
        assert await guess(api, sybil, meeting, f"{index}00000") == (403, "wrong_passcode")
    latecomer = await api.register("Late Comer")
    assert await guess(api, latecomer, meeting, PASSCODE) == (429, "rate_limited")
    # Invitees need no passcode, so the meeting stays open to them while it is under attack.
    await api.call("POST", f"/api/meetings/{meeting['id']}/join", invitee["token"], json={}, expect=200)


async def test_right_passcodes_cost_nothing(api_factory) -> None:
    api = await api_factory(rate_limits=limits(passcode_per_user=rule(2), passcode_per_meeting=rule(2)))
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"], passcode=PASSCODE)
    for _ in range(5):
        assert await guess(api, guest, meeting, PASSCODE) == (200, None)
    assert await guess(api, guest, meeting, "999999") == (403, "wrong_passcode")


async def test_a_meeting_that_has_not_started_is_no_place_to_test_passcodes(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    stranger = await api.register("Sam Stranger")
    meeting = await api.scheduled(host["token"], passcode=PASSCODE)
    assert await guess(api, stranger, meeting, "000000") == (409, "meeting_not_started")
    assert await guess(api, stranger, meeting, PASSCODE) == (409, "meeting_not_started")


async def test_passcodes_are_six_characters_or_eight_generated_digits(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    status, body = await api.call("POST", "/api/meetings", host["token"], json={"title": "Short", "kind": "instant", "passcode": "2468"})
    assert status == 422 and body["error"]["details"][0]["field"] == "body.passcode"
    meeting = await api.meeting(host["token"], generate_passcode=True)
    assert re.fullmatch(r"[0-9]{8}", meeting["passcode"]), meeting["passcode"]
    path = f"/api/meetings/{meeting['id']}"
    _, changed = await api.call("PATCH", path, host["token"], json={"generate_passcode": True}, expect=200)
    assert re.fullmatch(r"[0-9]{8}", changed["passcode"]) and changed["passcode"] != meeting["passcode"]
    status, body = await api.call("PATCH", path, host["token"], json={"generate_passcode": True, "passcode": "abcdef"})
    assert (status, body["error"]["details"][0]["field"]) == (422, "body.generate_passcode")


async def login(api: Api, email: str, password: str, address: str) -> tuple[int, str | None]:
    status, body = await api.call(
        "POST", "/api/auth/login", json={"email": email, "password": password}, headers=from_address(address)
    )
    return status, (body.get("error") or {}).get("code")


async def test_failed_logins_from_one_address_never_lock_the_owner_out(api_factory) -> None:
    """The report: ten wrong passwords from one address, and the owner's right one from another
    address got 429."""
    api = await api_factory(trusted_proxies=["127.0.0.1/32"], rate_limits=limits(login_per_account=rule(10)))
    owner = await api.register("Olga Owner")
    for i in range(10):
        assert await login(api, owner["email"], f"wrong guess {i}", "198.51.100.7") == (401, "invalid_credentials")
    assert await login(api, owner["email"], "correct horse battery", "198.51.100.7") == (429, "rate_limited")
    assert await login(api, owner["email"], "correct horse battery", "203.0.113.20") == (200, None)


async def test_under_attack_from_many_addresses_each_address_gets_one_try(api_factory) -> None:
    api = await api_factory(trusted_proxies=["127.0.0.1/32"], rate_limits=limits(login_per_account_ip=rule(10), login_per_account=rule(4)))
    owner = await api.register("Olga Owner")
    botnet = [f"198.51.100.{i}" for i in range(1, 9)]
    for address in botnet[:4]:  # the account's budget is spent
        assert await login(api, owner["email"], "wrong", address) == (401, "invalid_credentials")
    for address in botnet[4:]:  # fresh addresses: one try, then refused
        assert await login(api, owner["email"], "wrong", address) == (401, "invalid_credentials")
        assert await login(api, owner["email"], "wrong again", address) == (429, "rate_limited")
    assert await login(api, owner["email"], "correct horse battery", botnet[5]) == (429, "rate_limited")
    # The owner, from an address that has not failed, gets in.
    assert await login(api, owner["email"], "correct horse battery", "203.0.113.20") == (200, None)


async def test_a_right_password_gives_its_try_back(api_factory) -> None:
    api = await api_factory(trusted_proxies=["127.0.0.1/32"], rate_limits=limits(login_per_account_ip=rule(3), login_per_account=rule(3)))
    owner = await api.register("Olga Owner")
    for _ in range(6):
        assert await login(api, owner["email"], "correct horse battery", "203.0.113.20") == (200, None)
    assert await login(api, owner["email"], "typo", "203.0.113.20") == (401, "invalid_credentials")


async def test_invitations_are_limited_by_the_addresses_they_name(api_factory) -> None:
    api = await api_factory(rate_limits=limits(invite_per_user=rule(5, 3600)))
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    path = f"/api/meetings/{meeting['id']}/invitations"
    emails = [f"probe{i}@example.com" for i in range(8)]
    await api.call("POST", path, host["token"], json={"emails": emails[:3]}, expect=200)
    status, body = await api.call("POST", path, host["token"], json={"emails": emails[3:6]})
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    await api.call("POST", path, host["token"], json={"emails": emails[3:5]}, expect=200)
    status, _ = await api.call("POST", path, host["token"], json={"emails": emails[5:6]})
    assert status == 429
