"""The all-in-one server: the control API, the signaling WebSocket and the SFU in one aiohttp
application (one process, one core)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiortc import RTCIceServer

from control_api.app import create_api_app
from control_api.handlers import SERVICES
from control_api.observability import METRICS
from control_api.security import Clock
from control_api.services.context import utc_now
from sfu.aiortc_hooks import configure_ice, verify_hooks
from sfu.metrics import SfuMetrics
from sfu.room import NodeSettings, SfuNode
from signaling.server import SignalingServer
from videoconf.config import Settings

LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>VideoConf</title></head>
<body><main>
<h1>VideoConf is running</h1>
<p>The control API is at <a href="/api/docs">/api/docs</a> (OpenAPI document: <a href="/api/openapi.json">/api/openapi.json</a>).</p>
<p>The signaling WebSocket is at <code>/signaling</code>; its protocol is in <code>signaling/schema.json</code>.</p>
<p>The web client is not built yet; see the README for what works today.</p>
</main></body></html>
"""

WEB_ROOT = Path(__file__).resolve().parent.parent / "clients" / "web"

SFU: web.AppKey[SfuNode] = web.AppKey("sfu", SfuNode)
SIGNALING: web.AppKey[SignalingServer] = web.AppKey("signaling", SignalingServer)


async def landing(request: web.Request) -> web.Response:
    return web.Response(text=LANDING, content_type="text/html")


def _ice_servers(servers: list) -> list[RTCIceServer]:
    return [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers]


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    verify_hooks()
    configure_ice(settings.ice_addresses, settings.ice_port_range)
    app = create_api_app(settings, clock=clock)
    node = SfuNode(
        SfuMetrics(app[METRICS].registry),
        NodeSettings(ice_servers=_ice_servers(settings.sfu_ice_servers), announced_ip=settings.announced_ip),
    )
    signaling = SignalingServer(node, app[SERVICES], resume_seconds=settings.resume_seconds)
    app[SFU] = node
    app[SIGNALING] = signaling
    app.router.add_get("/", landing, name="landing")
    app.router.add_get("/signaling", signaling.handle, name="signaling")
    app.router.add_static("/web", WEB_ROOT, name="web")

    async def media(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        yield
        await signaling.close()
        await node.stop()

    app.cleanup_ctx.append(media)
    return app
