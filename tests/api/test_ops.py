"""Operations endpoints, the OpenAPI document, metrics and request logs."""

from __future__ import annotations

import json
import logging

from tests.conftest import Api
from videoconf.app import WEB_PAGES


async def test_health_is_ok_and_readiness_checks_the_database_and_redis(api: Api) -> None:
    _, health = await api.call("GET", "/healthz", expect=200)
    assert health == {"status": "ok", "checks": {}}
    _, ready = await api.call("GET", "/readyz", expect=200)
    expected = {"database": "ok"} | ({"redis": "ok"} if api.backend.name == "postgres" else {})
    assert ready == {"status": "ok", "checks": expected}


async def test_a_draining_node_is_not_ready(api: Api) -> None:
    api.services.ctx.draining = True  # what SIGTERM on a cluster node sets (tests/cluster)
    status, body = await api.call("GET", "/readyz")
    assert status == 503 and body["checks"]["node"] == "draining"
    _, health = await api.call("GET", "/healthz", expect=200)  # alive all the same


async def test_readiness_fails_when_the_database_is_gone(api_factory, tmp_path) -> None:
    api = await api_factory(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none", database_schema=None, redis_url=None
    )
    status, body = await api.call("GET", "/readyz")
    assert status == 503 and body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("failed:")
    _, health = await api.call("GET", "/healthz", expect=200)


async def test_every_route_is_in_the_openapi_document(api: Api) -> None:
    _, spec = await api.call("GET", "/api/openapi.json", expect=200)
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    routed = set()
    for route in api.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path")
        if route.method == "HEAD" or path is None or path.startswith("/api/docs/static") or "prefix" in info:
            continue
        if path in WEB_PAGES or path in ("/signaling", "/nodes/{node}/signaling", "/tls/ca.pem"):
            # the web client's pages; the WebSocket (at two paths), documented by
            # signaling/schema.json; the development authority's certificate (--dev-tls only)
            continue
        routed.add((path, route.method))
    missing = routed - documented
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    assert documented - routed == set()
    join = spec["paths"]["/api/meetings/{meeting_id}/join"]["post"]
    assert join["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JoinIn"}
    assert join["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JoinOut"}
    assert {"401", "403", "404", "409", "422", "429", "400", "413"} <= set(join["responses"])
    assert join["security"] == [{"bearerAuth": []}]
    for ref in _refs(spec):
        assert ref.removeprefix("#/components/schemas/") in spec["components"]["schemas"], ref


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


async def test_docs_page_is_served_without_a_cdn(api: Api) -> None:
    status, page = await api.call("GET", "/api/docs")
    assert status == 200 and b"swagger-ui-bundle.js" in page and b"https://" not in page
    status, script = await api.call("GET", "/api/docs/static/swagger-ui-bundle.js")
    assert status == 200 and len(script) > 100_000


async def test_metrics_count_requests_per_route(api: Api) -> None:
    host = await api.register("Hedy Lamarr")
    meeting = await api.meeting(host["token"])
    for _ in range(3):
        await api.call("GET", f"/api/meetings/{meeting['id']}", host["token"], expect=200)
    await api.call("GET", "/api/meetings/00000000-0000-0000-0000-000000000000", host["token"], expect=404)
    await api.call("GET", "/no/such/path", expect=404)
    _, text = await api.call("GET", "/metrics", expect=200)
    text = text.decode()
    assert 'videoconf_http_requests_total{method="GET",route="/api/meetings/{meeting_id}",status="200"} 3.0' in text
    assert 'videoconf_http_requests_total{method="GET",route="/api/meetings/{meeting_id}",status="404"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert 'videoconf_http_request_duration_seconds_count{method="POST",route="/api/meetings"} 1.0' in text


async def test_requests_are_logged_as_json(api_factory, caplog) -> None:
    api = await api_factory(access_log=True)
    with caplog.at_level(logging.INFO, logger="videoconf.access"):
        await api.call("GET", "/healthz", headers={"X-Request-ID": "abc123"}, expect=200)
    (record,) = [r for r in caplog.records if r.name == "videoconf.access"]
    assert (record.method, record.route, record.status, record.request_id) == ("GET", "/healthz", 200, "abc123")
    from pythonjsonlogger.json import JsonFormatter

    line = json.loads(JsonFormatter("%(levelname)s %(message)s").format(record))
    assert line["status"] == 200 and line["route"] == "/healthz" and line["duration_ms"] >= 0
