"""Invitations: hosts invite registered users by email; invitees see the meeting."""

from __future__ import annotations

from tests.conftest import Api


async def test_invite_registered_users_and_report_unknown_addresses(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    ina = await api.register("Ina Invitee", email="ina@example.com")
    meeting = await api.scheduled(host["token"], title="Design review")
    path = f"/api/meetings/{meeting['id']}/invitations"
    _, result = await api.call(
        "POST", path, host["token"],
        json={"emails": ["INA@example.com", "ghost@example.com", host["email"]]}, expect=200,
    )
    assert [(i["email"], i["role"]) for i in result["invited"]] == [("ina@example.com", "guest")]
    assert result["unknown_emails"] == ["ghost@example.com"]
    _, seen = await api.call("GET", f"/api/meetings/{meeting['id']}", ina["token"], expect=200)
    assert seen["my_role"] == "guest"
    _, upcoming = await api.call("GET", "/api/meetings/upcoming", ina["token"], expect=200)
    assert [m["title"] for m in upcoming["items"]] == ["Design review"]
    _, notes = await api.call("GET", "/api/notifications", ina["token"], expect=200)
    assert [(n["kind"], n["data"]["title"], n["data"]["invited_by"]) for n in notes["items"]] == [
        ("invited", "Design review", "Hedy Lamarr")
    ]
    # Inviting again neither duplicates the invitation nor the notification.
    await api.call("POST", path, host["token"], json={"emails": ["ina@example.com"]}, expect=200)
    assert await api.count("invitations") == 1 and await api.count("notifications") == 1


async def test_only_the_host_appoints_cohosts_and_guests_cannot_invite(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    cohost = await api.register("Carl Cohost")
    guest = await api.register("Guy Guest")
    other = await api.register("Olga Other")
    meeting = await api.scheduled(host["token"])
    path = f"/api/meetings/{meeting['id']}/invitations"
    await api.call("POST", path, host["token"], json={"emails": [cohost["email"]], "role": "cohost"}, expect=200)
    await api.call("POST", path, cohost["token"], json={"emails": [guest["email"]]}, expect=200)
    status, body = await api.call("POST", path, cohost["token"], json={"emails": [other["email"]], "role": "cohost"})
    assert (status, body["error"]["code"]) == (403, "not_host")
    await api.call("POST", path, guest["token"], json={"emails": [other["email"]]}, expect=403)
    await api.call("GET", path, guest["token"], expect=403)
    _, listed = await api.call("GET", path, cohost["token"], expect=200)
    assert sorted((i["user"]["display_name"], i["role"]) for i in listed["items"]) == [("Carl Cohost", "cohost"), ("Guy Guest", "guest")]
    # Promote the guest, then withdraw invitations.
    await api.call("POST", path, host["token"], json={"emails": [guest["email"]], "role": "cohost"}, expect=200)
    status, _ = await api.call("DELETE", f"{path}/{guest['user']['id']}", cohost["token"])
    assert status == 403
    await api.call("DELETE", f"{path}/{guest['user']['id']}", host["token"], expect=204)
    await api.call("DELETE", f"{path}/{guest['user']['id']}", host["token"], expect=404)
    await api.call("GET", f"/api/meetings/{meeting['id']}", guest["token"], expect=404)


async def test_invitation_input_is_validated(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.scheduled(host["token"])
    path = f"/api/meetings/{meeting['id']}/invitations"
    for bad in ({"emails": []}, {"emails": ["x@example.com"] * 51}, {"emails": "x@example.com"}, {"emails": ["x@example.com"], "role": "host"}, {"emails": ["not an address"]}):
        status, body = await api.call("POST", path, host["token"], json=bad)
        assert status == 422, (bad, body)
    await api.call("POST", f"/api/meetings/{meeting['id']}/cancel", host["token"], expect=200)
    status, body = await api.call("POST", path, host["token"], json={"emails": ["x@example.com"]})
    assert (status, body["error"]["code"]) == (409, "meeting_closed")
    assert await api.count("invitations") == 0
