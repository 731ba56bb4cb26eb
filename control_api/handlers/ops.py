"""Operations: liveness, readiness, metrics, the OpenAPI document and the docs page."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from control_api.handlers import api, services
from control_api.observability import METRICS
from control_api.openapi import DOCS_HTML
from control_api.schemas import HealthOut

READY_TIMEOUT = 2.0
SPEC: web.AppKey[dict[str, Any]] = web.AppKey("openapi_spec", dict)


@api.route("GET", "/healthz", summary="Liveness", tags="operations", response=HealthOut, auth=False)
async def healthz(request: web.Request) -> HealthOut:
    return HealthOut(status="ok")


@api.route(
    "GET", "/readyz", summary="Readiness: the database (and Redis, when used) answer",
    tags="operations", response=HealthOut, auth=False, errors=(503,),
)
async def readyz(request: web.Request) -> web.Response:
    ctx = services(request).ctx
    checks: dict[str, str] = {}

    async def check(name: str, probe: Any) -> None:
        try:
            await asyncio.wait_for(probe, READY_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks[name] = f"failed: {type(exc).__name__}: {exc}"[:300]

    await check("database", ctx.db.ping())
    if ctx.redis is not None:
        await check("redis", ctx.redis.ping())
    ok = all(v == "ok" for v in checks.values())
    body = HealthOut(status="ok" if ok else "unavailable", checks=checks)
    return web.Response(
        status=200 if ok else 503, body=body.model_dump_json().encode(), content_type="application/json"
    )


@api.route(
    "GET", "/metrics", summary="Prometheus metrics", tags="operations", auth=False,
    produces="text/plain",
)
async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[METRICS].registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@api.route(
    "GET", "/api/openapi.json", summary="This document", tags="operations", auth=False,
    produces="application/json",
)
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[SPEC])


@api.route("GET", "/api/docs", summary="Interactive API docs", tags="operations", auth=False, produces="text/html")
async def api_docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_HTML, content_type="text/html")
