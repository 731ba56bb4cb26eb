"""The all-in-one server: every service of the platform in one aiohttp application.

So far that is the control API; signaling and the SFU join here as they are built.
"""

from __future__ import annotations

from aiohttp import web

from control_api.app import create_api_app
from control_api.security import Clock
from control_api.services.context import utc_now
from videoconf.config import Settings

LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>VideoConf</title></head>
<body><main>
<h1>VideoConf is running</h1>
<p>The control API is at <a href="/api/docs">/api/docs</a> (OpenAPI document: <a href="/api/openapi.json">/api/openapi.json</a>).</p>
<p>The web client is not built yet; see the README for what works today.</p>
</main></body></html>
"""


async def landing(request: web.Request) -> web.Response:
    return web.Response(text=LANDING, content_type="text/html")


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    app = create_api_app(settings, clock=clock)
    app.router.add_get("/", landing, name="landing")
    return app
