"""Operations: liveness, readiness, metrics, the OpenAPI document and the docs page."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from control_api.cluster import node_channel, node_summary
from control_api.errors import ServiceError, conflict, forbidden, not_found, unauthorized
from control_api.handlers import api, client_ip, services
from control_api.observability import METRICS
from control_api.openapi import DOCS_HTML, DOCS_INIT_JS
from control_api.schemas import HealthOut, NodeDrainOut, NodeOut, NodesOut

READY_TIMEOUT = 2.0
DEPENDENCY_CHECK_INTERVAL = 10.0
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
    checks = await probe_dependencies(ctx)
    if ctx.draining:
        checks["node"] = "draining"
    ok = all(v == "ok" for v in checks.values())
    body = HealthOut(status="ok" if ok else "unavailable", checks=checks)
    return web.Response(
        status=200 if ok else 503, body=body.model_dump_json().encode(), content_type="application/json"
    )


async def probe_dependencies(ctx: Any) -> dict[str, str]:
    """``ok`` or why not, for the database and (when used) Redis."""
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
    return checks


class DependencyWatch:
    """``videoconf_dependency_up{dependency}`` and ``videoconf_node_draining``: the database and
    Redis checked every ``interval`` seconds (a scrape cannot wait for them), for the alerts."""

    def __init__(self, ctx: Any, registry: Any, interval: float = DEPENDENCY_CHECK_INTERVAL) -> None:
        self.ctx, self.interval = ctx, interval
        self.up = Gauge("videoconf_dependency_up", "1 when the dependency answered its last check", ("dependency",), registry=registry)
        Gauge("videoconf_node_draining", "1 while this node drains", registry=registry).set_function(lambda: float(ctx.draining))
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def check(self) -> dict[str, str]:
        checks = await probe_dependencies(self.ctx)
        for name, outcome in checks.items():
            self.up.labels(name).set(1.0 if outcome == "ok" else 0.0)
        return checks

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
            except Exception:  # never stop watching; the gauges keep their last values
                logging.getLogger(__name__).exception("the dependency check failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dependency-watch")

    async def stop(self) -> None:
        """Let a check in flight finish (each probe gives up after ``READY_TIMEOUT``) rather than
        cancel it mid-command: a Redis command cancelled while the client is being closed can
        leave the close waiting."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=2 * READY_TIMEOUT + 1)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({self._task}, timeout=1)


def metrics_refusal(authorization: str | None, client: str, token: str | None) -> ServiceError | None:
    """Why a scrape is refused, or None."""
    if token is None:
        return None if _loopback(client) else forbidden(
            "metrics are served to this machine only; set metrics_token to scrape from elsewhere",
            code="metrics_forbidden",
        )
    expected = f"Bearer {token}".encode()
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
        return unauthorized("metrics need the metrics token (Authorization: Bearer ...)")
    return None


def operator_only(request: web.Request) -> None:
    """The guard of the operators' endpoints (``/metrics``, the node list and drain orders):
    the metrics token when one is set, else a client on this machine."""
    token = services(request).ctx.settings.metrics_token
    refusal = metrics_refusal(
        request.headers.get("Authorization"), client_ip(request), token.get_secret_value() if token else None
    )
    if refusal is not None:
        raise refusal


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@api.route(
    "GET", "/metrics", summary="Prometheus metrics", tags="operations", auth=False,
    produces="text/plain", errors=(401, 403),
)
async def metrics(request: web.Request) -> web.Response:
    """With ``metrics_token`` set, asks for ``Authorization: Bearer <metrics_token>``; without
    it, answers only clients on this machine (a Prometheus elsewhere needs the token)."""
    operator_only(request)
    response = web.Response(body=generate_latest(request.app[METRICS].registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@api.route(
    "GET", "/api/nodes", summary="The cluster's living nodes: load, state, heartbeat age", tags="operations",
    auth=False, response=NodesOut, errors=(401, 403),
)
async def nodes(request: web.Request) -> NodesOut:
    """An operator endpoint, guarded as ``/metrics`` is (this machine only, or the metrics
    token).  Without ``cluster``: no registry, no nodes."""
    operator_only(request)
    ctx = services(request).ctx
    if ctx.cluster is None:
        return NodesOut(cluster=False, nodes=[])
    now = time.time()
    return NodesOut(
        cluster=True, nodes=[NodeOut.model_validate(node_summary(node, now)) for node in await ctx.cluster.nodes()]
    )


@api.route(
    "POST", "/api/nodes/{node_id}/drain", summary="Drain a node: its meetings move to the others, then it stops",
    tags="operations", auth=False, response=NodeDrainOut, status=202, errors=(401, 403, 404, 409),
)
async def drain_node(request: web.Request) -> NodeDrainOut:
    """Guarded as ``/metrics`` is.  Any node's API takes the order; the node named gets it over
    pub/sub and drains as on SIGTERM."""
    operator_only(request)
    ctx = services(request).ctx
    if ctx.cluster is None:
        raise conflict("no_cluster", "this node is not in a cluster: stop it with SIGTERM")
    node_id = request.match_info["node_id"]
    if node_id not in {node.id for node in await ctx.cluster.nodes()}:
        raise not_found("node")
    await ctx.bus.publish(node_channel(node_id), {"type": "drain"})
    return NodeDrainOut(node=node_id, state="draining")


@api.route(
    "GET", "/api/openapi.json", summary="This document", tags="operations", auth=False,
    produces="application/json",
)
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[SPEC])


@api.route("GET", "/api/docs", summary="Interactive API docs", tags="operations", auth=False, produces="text/html")
async def api_docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_HTML, content_type="text/html")


@api.route(
    "GET", "/api/docs/init.js", summary="Starts Swagger UI on the docs page", tags="operations", auth=False,
    produces="text/javascript",
)
async def api_docs_init(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_INIT_JS, content_type="text/javascript")
