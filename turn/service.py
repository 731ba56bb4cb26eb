"""``videoconf turn``: the TURN server as a process of its own, with /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from turn.config import TurnSettings
from turn.metrics import TurnCollector
from turn.transport import TurnService

log = logging.getLogger(__name__)


def metrics_app(service: TurnService) -> web.Application:
    registry = CollectorRegistry()
    registry.register(TurnCollector(lambda: service.server))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "listeners": service.describe()})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    return app


async def run_standalone(
    settings: TurnSettings, sfu_addresses: list[str] | None = None, tls: ssl.SSLContext | None = None
) -> None:
    service = TurnService(settings, sfu_addresses=sfu_addresses, tls=tls)
    await service.start()
    runner: web.AppRunner | None = None
    if settings.metrics_port is not None:
        runner = web.AppRunner(metrics_app(service), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"VideoConf TURN server: {service.describe()} (Ctrl+C to stop)", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("TURN server stopping")
        if runner is not None:
            await runner.cleanup()
        await service.stop()
