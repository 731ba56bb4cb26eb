"""The webhook wire format, the SDK's verifier, the retry schedule and the URL rules, with no server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

import pytest

from clients.sdk.webhooks import WebhookVerificationError, verify
from control_api.webhook_format import RetryPolicy, headers, new_secret, signature, wanted
from control_api.webhook_urls import UnsafeUrl, UrlGuard, url_policy
from tests.webhook_receiver import Names

NOW = 1_800_000_000


def test_the_signature_is_the_standard_webhooks_hmac_of_id_timestamp_and_body() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type":"meeting.started"}'
    expected = base64.b64encode(hmac.new(b"k" * 32, b"evt_1.1800000000." + body, hashlib.sha256).digest()).decode()
    assert signature(secret, "evt_1", NOW, body) == "v1," + expected


def test_a_signed_delivery_verifies_and_returns_the_event() -> None:
    secret = new_secret()
    body = json.dumps({"id": "evt_1", "type": "meeting.ended", "data": {}}).encode()
    sent = headers(secret, "evt_1", NOW, body)
    assert verify(secret, sent, body, now=NOW + 10)["type"] == "meeting.ended"
    # header names in any case, and a list of signatures (a rotation) of which one matches
    other = signature(new_secret(), "evt_1", NOW, body)
    mixed = {"Webhook-Id": "evt_1", "Webhook-Timestamp": str(NOW), "Webhook-Signature": f"{other} {sent['webhook-signature']}"}
    assert verify(secret, mixed, body, now=NOW)["id"] == "evt_1"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h, b: (h, b.replace(b"ended", b"start")), "no signature matches"),
        (lambda h, b: ({**h, "webhook-id": "evt_2"}, b), "no signature matches"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW - 301)}, b), "off"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "not a number"),
    ],
)
def test_a_tampered_body_another_id_an_old_timestamp_or_a_missing_header_fail(change, message) -> None:
    secret = new_secret()
    body = b'{"type":"meeting.ended"}'
    changed_headers, changed_body = change(headers(secret, "evt_1", NOW, body), body)
    with pytest.raises(WebhookVerificationError, match=message):
        verify(secret, changed_headers, changed_body, now=NOW)


def test_the_wrong_secret_fails() -> None:
    body = b"{}"
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(new_secret(), headers(new_secret(), "evt_1", NOW, body), body, now=NOW)


def test_an_empty_filter_takes_every_event_but_the_opt_in_chat() -> None:
    assert wanted([], "meeting.started") and not wanted([], "chat.message")
    assert wanted(["chat.message"], "chat.message") and not wanted(["chat.message"], "meeting.started")


def test_retries_back_off_with_jitter_and_stop_after_the_window() -> None:
    policy = RetryPolicy(delays=(5, 30, 120), window=600, jitter=0.2)
    rng = random.Random(1)
    delays = [policy.after_failure(n, 0, rng) for n in (1, 2, 3, 4, 5)]
    for delay, base in zip(delays, (5, 30, 120, 120, 120), strict=True):
        assert delay is not None and base * 0.8 <= delay <= base * 1.2
    assert policy.after_failure(3, 500, rng) is None  # 500 s + ~120 s is past the window
    assert RetryPolicy().after_failure(1, 0, rng) is not None


# An address the peer rules treat as public; the tests resolve names with a fake resolver and
# contact nothing.
PUBLIC = "11.0.0.1"

@pytest.mark.parametrize(
    "addresses, why",
    [
        (["127.0.0.1"], "loopback"),
        (["10.1.2.3"], "private"),
        (["169.254.169.254"], "link-local"),  # the metadata service
        ([PUBLIC, "192.168.1.1"], "private"),  # every address counts
        (["::ffff:10.0.0.1"], "private"),  # an IPv4-mapped private address
        (["fd00:ec2::254"], "private"),
    ],
)
async def test_names_resolving_to_denied_addresses_are_refused(addresses, why) -> None:
    guard = UrlGuard(url_policy(False, []), Names(**{"hooks.example": addresses}))
    with pytest.raises(UnsafeUrl, match=why):
        await guard.check("https://hooks.example/in")


async def test_public_addresses_pass_and_configuration_can_allow_private_ones() -> None:
    names = Names(**{"hooks.example": [PUBLIC], "local.example": ["127.0.0.1"]})
    await UrlGuard(url_policy(False, []), names).check("https://hooks.example/in")
    await UrlGuard(url_policy(False, ["127.0.0.0/8"]), names).check("http://local.example:8080/in")
    await UrlGuard(url_policy(True, []), names).check("http://10.0.0.1/in")
    with pytest.raises(UnsafeUrl, match="loopback"):
        await UrlGuard(url_policy(False, ["10.0.0.0/8"]), names).check("http://local.example/in")


@pytest.mark.parametrize(
    "url, message",
    [("ftp://hooks.example/", "http or https"), ("http://user:pw@hooks.example/", "credentials"),
     ("https://nowhere.example/", "does not resolve"), ("http://[::1]:80/", "loopback")],
)
async def test_other_schemes_credentials_and_unknown_names_are_refused(url, message) -> None:
    with pytest.raises(UnsafeUrl, match=message):
        await UrlGuard(url_policy(False, []), Names()).check(url)
