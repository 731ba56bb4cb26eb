"""Security headers on real responses: a Content-Security-Policy that allows no inline code and no
framing, nosniff, no referrer, no cached tokens, no version in the Server header; /metrics only
for this machine or the holder of the metrics token."""

from __future__ import annotations

import re

from tests.conftest import Api

REMOTE = {"X-Forwarded-For": "203.0.113.5"}


def directives(policy: str) -> dict[str, list[str]]:
    parsed = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in parsed}


async def test_the_web_client_is_served_under_a_strict_policy(api: Api) -> None:
    for path in ("/", "/j/abc-defg-hjk", "/web/js/app.js", "/sw.js", "/api/openapi.json", "/api/nothing"):
        async with api.client.get(path) as response:
            headers = response.headers
            assert headers["X-Content-Type-Options"] == "nosniff", path
            assert headers["Referrer-Policy"] == "no-referrer", path
            assert headers["X-Frame-Options"] == "DENY", path
            assert headers["Server"] == "VideoConf", (path, headers["Server"])
            policy = directives(headers["Content-Security-Policy"])
            assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"], path
            assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"], path
            assert policy["base-uri"] == ["'none'"], path
    async with api.client.get("/") as response:
        page = await response.text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "the page has an inline script"
    assert not re.search(r"\son\w+=|\sstyle=|<style", page), "the page has inline handlers or styles"


async def test_the_docs_page_runs_no_inline_script(api: Api) -> None:
    async with api.client.get("/api/docs") as response:
        page = await response.text()
        policy = directives(response.headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    async with api.client.get("/api/docs/init.js") as response:
        assert response.status == 200 and "SwaggerUIBundle" in await response.text()


async def test_token_responses_are_never_cached(api: Api) -> None:
    _, account = await api.call("POST", "/api/auth/register", json={"email": "a@example.com", "password": "correct horse battery", "display_name": "Ada"})
    token = account["access_token"]
    meeting = await api.meeting(token)
    for method, path, body, auth in (
        ("POST", "/api/auth/login", {"email": "a@example.com", "password": "correct horse battery"}, None),
        ("POST", "/api/auth/refresh", {"refresh_token": account["refresh_token"]}, None),
        ("POST", f"/api/meetings/{meeting['id']}/join", {}, token),
        ("POST", "/api/calendar/token", None, token),
        ("GET", "/api/users/me", None, token),
    ):
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        async with api.client.request(method, path, json=body, headers=headers) as response:
            assert response.status < 300, (path, await response.text())
            assert response.headers["Cache-Control"] == "no-store", path
    async with api.client.get("/web/app.css") as response:
        assert "no-store" not in response.headers.get("Cache-Control", "")


async def test_metrics_answer_this_machine_only_by_default(api_factory) -> None:
    api = await api_factory(trusted_proxies=["127.0.0.1/32"])
    async with api.client.get("/metrics") as response:
        assert response.status == 200 and "videoconf_http_requests_total" in await response.text()
    status, body = await api.call("GET", "/metrics", headers=REMOTE)
    assert (status, body["error"]["code"]) == (403, "metrics_forbidden")


async def test_metrics_ask_for_the_metrics_token_when_one_is_set(api_factory) -> None:
    api = await api_factory(metrics_token="a-long-random-metrics-token-0123456789")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "a-long-random-metrics-token-0123456789"}):
        status, body = await api.call("GET", "/metrics", headers=headers)
        assert (status, body["error"]["code"]) == (401, "unauthorized"), headers
    async with api.client.get("/metrics", headers={**REMOTE, "Authorization": "Bearer a-long-random-metrics-token-0123456789"}) as response:
        assert response.status == 200 and "process_cpu_seconds_total" in await response.text()


async def test_the_node_list_is_guarded_as_the_metrics_are(api_factory) -> None:
    api = await api_factory(trusted_proxies=["127.0.0.1/32"])
    status, body = await api.call("GET", "/api/nodes")
    assert (status, body) == (200, {"cluster": False, "nodes": []})  # one node, no registry
    status, body = await api.call("GET", "/api/nodes", headers=REMOTE)
    assert (status, body["error"]["code"]) == (403, "metrics_forbidden")
    api = await api_factory(metrics_token="a-long-random-metrics-token-0123456789")
    status, body = await api.call("GET", "/api/nodes")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, _ = await api.call("GET", "/api/nodes", headers={"Authorization": "Bearer a-long-random-metrics-token-0123456789"})
    assert status == 200


async def test_a_drain_order_needs_a_cluster_and_the_operators_access(api_factory) -> None:
    api = await api_factory(trusted_proxies=["127.0.0.1/32"])
    status, body = await api.call("POST", "/api/nodes/node-a/drain")
    assert (status, body["error"]["code"]) == (409, "no_cluster")
    status, body = await api.call("POST", "/api/nodes/node-a/drain", headers=REMOTE)
    assert (status, body["error"]["code"]) == (403, "metrics_forbidden")
