"""Joining: passcodes, start-on-join, room tokens with their grants, participants."""

from __future__ import annotations

import jwt
import pytest

from control_api.app import ROOM_AUDIENCE
from control_api.security import TokenError
from tests.conftest import Api, RateLimitRule, limits


def room_claims(api: Api, token: str) -> dict:
    return api.services.ctx.room_tokens.decode(token)


async def test_join_returns_a_room_token_with_grants(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.meeting(host["token"], passcode="246800")
    path = f"/api/meetings/{meeting['id']}/join"
    _, joined = await api.call("POST", path, guest["token"], json={"passcode": "246800", "display_name": "Guy (phone)"}, expect=200)
    assert joined["signaling_url"] == "ws://127.0.0.1:8080/signaling"
    assert joined["ice_servers"] == []
    assert joined["identity"] == guest["user"]["id"] and joined["waiting"] is False
    assert joined["grants"] == {
        "can_publish": True, "can_subscribe": True, "can_publish_data": True,
        "room_admin": False, "hidden": False, "recorder": False,
    }
    claims = room_claims(api, joined["token"])
    assert claims["aud"] == ROOM_AUDIENCE and claims["room"] == meeting["id"]
    assert claims["sub"] == guest["user"]["id"] and claims["name"] == "Guy (phone)"
    assert claims["exp"] - claims["iat"] == 600 and claims["grants"] == joined["grants"]
    header = jwt.get_unverified_header(joined["token"])
    assert header["alg"] == "HS256" and header["kid"]
    # A room token is not an access token, and the other way round.
    await api.call("GET", "/api/users/me", joined["token"], expect=401)
    assert joined["participant"]["display_name"] == "Guy (phone)" and joined["participant"]["join_count"] == 1
    assert joined["meeting"]["my_role"] == "participant" and joined["meeting"]["passcode"] is None

    _, host_join = await api.call("POST", path, host["token"], json={"hidden": True}, expect=200)
    assert host_join["grants"]["room_admin"] is True and host_join["grants"]["hidden"] is True
    status, body = await api.call("POST", path, guest["token"], json={"passcode": "246800", "hidden": True})
    assert status == 403

    _, again = await api.call("POST", path, guest["token"], json={"passcode": "246800"}, expect=200)
    assert again["participant"]["join_count"] == 2 and again["participant"]["display_name"] == "Guy Guest"
    _, people = await api.call("GET", f"/api/meetings/{meeting['id']}/participants", guest["token"], expect=200)
    assert sorted((p["display_name"], p["role"]) for p in people["items"]) == [("Guy Guest", "participant"), ("Hedy Lamarr", "host")]


async def test_room_token_expiry_and_forgery_are_detected(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    _, joined = await api.call("POST", f"/api/meetings/{meeting['id']}/join", host["token"], json={}, expect=200)
    codec = api.services.ctx.room_tokens
    kid = jwt.get_unverified_header(joined["token"])["kid"]
    claims = {**room_claims(api, joined["token"]), "grants": {"room_admin": True}}
    forged = jwt.encode(claims, "a guessed key that is long enough for HS256", algorithm="HS256", headers={"kid": kid})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    for token in (forged, unsigned, joined["token"] + "x", "not.a.token"):
        with pytest.raises(TokenError):
            codec.decode(token)
    codec.decode(joined["token"])
    api.clock.advance(601)
    with pytest.raises(TokenError) as expired:
        codec.decode(joined["token"])
    assert expired.value.code == "token_expired"


async def test_strangers_need_the_passcode_and_hosts_and_invitees_do_not(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    invitee = await api.register("Ina Invitee")
    stranger = await api.register("Sam Stranger")
    meeting = await api.meeting(host["token"], passcode="246800")
    path = f"/api/meetings/{meeting['id']}/join"
    await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [invitee["email"]]}, expect=200)
    status, body = await api.call("POST", path, stranger["token"], json={})
    assert (status, body["error"]["code"]) == (403, "passcode_required")
    status, body = await api.call("POST", path, stranger["token"], json={"passcode": "135700"})
    assert (status, body["error"]["code"]) == (403, "wrong_passcode")
    await api.call("POST", path, invitee["token"], json={}, expect=200)  # invitees need no passcode
    await api.call("POST", path, host["token"], json={}, expect=200)
    assert await api.count("participants") == 2


async def test_wrong_passcodes_are_rate_limited(api_factory) -> None:
    api = await api_factory(rate_limits=limits(passcode_per_user=RateLimitRule(limit=3, period=600)))
    host = await api.register("Hedy Lamarr")
    guesser = await api.register("Mallory Guess")
    meeting = await api.meeting(host["token"], passcode="246800")
    path = f"/api/meetings/{meeting['id']}/join"
    for guess in ("000000", "111111", "222222"):
        await api.call("POST", path, guesser["token"], json={"passcode": guess}, expect=403)
    status, body = await api.call("POST", path, guesser["token"], json={"passcode": "333333"})
    assert status == 429
    # Once the budget is spent the right passcode is refused too (only failures use it up).
    await api.call("POST", path, guesser["token"], json={"passcode": "246800"}, expect=429)


async def test_a_scheduled_meeting_starts_when_its_host_joins_unless_guests_may_join_first(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    guest = await api.register("Guy Guest")
    meeting = await api.scheduled(host["token"])
    path = f"/api/meetings/{meeting['id']}/join"
    status, body = await api.call("POST", path, guest["token"], json={})
    assert (status, body["error"]["code"]) == (409, "meeting_not_started")
    assert await api.count("participants") == 0
    _, joined = await api.call("POST", path, host["token"], json={}, expect=200)
    assert joined["meeting"]["status"] == "live"  # the host joining starts it
    await api.call("POST", path, guest["token"], json={}, expect=200)

    early = await api.scheduled(host["token"], settings={"join_before_host": True})
    _, joined = await api.call("POST", f"/api/meetings/{early['id']}/join", guest["token"], json={}, expect=200)
    assert joined["meeting"]["status"] == "live"


async def test_joining_closed_meetings_fails(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ended = await api.meeting(host["token"])
    await api.call("POST", f"/api/meetings/{ended['id']}/end", host["token"], expect=200)
    status, body = await api.call("POST", f"/api/meetings/{ended['id']}/join", host["token"], json={})
    assert (status, body["error"]["code"]) == (409, "meeting_ended")
    cancelled = await api.scheduled(host["token"])
    await api.call("POST", f"/api/meetings/{cancelled['id']}/cancel", host["token"], expect=200)
    status, body = await api.call("POST", f"/api/meetings/{cancelled['id']}/join", host["token"], json={})
    assert (status, body["error"]["code"]) == (409, "meeting_cancelled")
    await api.call("POST", "/api/meetings/00000000-0000-0000-0000-000000000000/join", host["token"], json={}, expect=404)


async def test_waiting_room_holds_strangers_but_not_admins_or_invitees(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    invitee = await api.register("Ina Invitee")
    stranger = await api.register("Sam Stranger")
    meeting = await api.meeting(host["token"], settings={"waiting_room": True})
    path = f"/api/meetings/{meeting['id']}/join"
    await api.call("POST", f"/api/meetings/{meeting['id']}/invitations", host["token"], json={"emails": [invitee["email"]]}, expect=200)
    results = {}
    for who in (host, invitee, stranger):
        _, joined = await api.call("POST", path, who["token"], json={}, expect=200)
        results[who["user"]["display_name"]] = (joined["waiting"], room_claims(api, joined["token"])["waiting"])
    assert results == {"Hedy Lamarr": (False, False), "Ina Invitee": (False, False), "Sam Stranger": (True, True)}


async def test_ended_meeting_marks_participants_left(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    await api.call("POST", f"/api/meetings/{meeting['id']}/join", host["token"], json={}, expect=200)
    await api.call("POST", f"/api/meetings/{meeting['id']}/end", host["token"], expect=200)
    _, people = await api.call("GET", f"/api/meetings/{meeting['id']}/participants", host["token"], expect=200)
    assert [p["left_at"] is not None for p in people["items"]] == [True]


async def test_ice_servers_and_signaling_url_come_from_configuration(api_factory) -> None:
    api = await api_factory(
        ice_servers=[{"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": "u", "credential": "c"}],
        public_url="https://meet.example.com",
    )
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    _, joined = await api.call("POST", f"/api/meetings/{meeting['id']}/join", host["token"], json={}, expect=200)
    assert joined["ice_servers"] == [{"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": "u", "credential": "c"}]
    assert joined["signaling_url"] == "wss://meet.example.com/signaling"
    assert joined["meeting"]["join_url"] == f"https://meet.example.com/j/{meeting['code']}"
