"""The all-in-one server: the control API, the signaling WebSocket and the SFU in one aiohttp
application (one process, one core)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCIceServer
from prometheus_client import Gauge

from control_api.app import create_api_app
from control_api.handlers import SERVICES
from control_api.observability import METRICS
from control_api.security import Clock
from control_api.services.context import utc_now
from control_api.services.webhooks import EventQueue
from recorder.manager import RecorderConfig, RecorderManager
from sfu import fastsend
from sfu.aiortc_hooks import bind_udp_port, configure_ice, verify_hooks
from sfu.metrics import SfuMetrics
from sfu.room import NodeSettings, SfuNode
from signaling.cascade import Cascade
from signaling.cluster_member import ClusterMember
from signaling.server import SignalingServer
from signaling.webhooks import RoomActivity
from turn.metrics import TurnCollector
from turn.transport import TurnService
from videoconf.config import Settings
from videoconf.tls import CertificateFiles, TlsReloader, is_ip, turn_certificate

WEB_ROOT = Path(__file__).resolve().parent.parent / "clients" / "web"

SFU: web.AppKey[SfuNode] = web.AppKey("sfu", SfuNode)
SIGNALING: web.AppKey[SignalingServer] = web.AppKey("signaling", SignalingServer)
RECORDER: web.AppKey[RecorderManager] = web.AppKey("recorder", RecorderManager)
TURN: web.AppKey[TurnService] = web.AppKey("turn", TurnService)


# The web client's pages: the app shell at / and at invite links (/j/CODE), the service worker at
# the root so that its scope is the whole origin, and the web app manifest.
WEB_PAGES = {"/", "/j/{code}", "/sw.js", "/manifest.webmanifest"}


def _web_file(
    name: str, content_type: str, cache: bool = False
) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    headers = (
        {"Content-Type": content_type}
        if cache
        else {"Content-Type": content_type, "Cache-Control": "no-cache"}
    )

    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / name, headers=headers)

    return handler


def _ice_servers(servers: list) -> list[RTCIceServer]:
    return [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers]


def sfu_media_addresses(settings: Settings) -> list[str]:
    """The IP addresses the SFU offers candidates on: the only peers a `turn.sfu_only` relay reaches."""
    addresses = [a for a in settings.ice_addresses or [] if is_ip(a)]
    if settings.announced_ip:
        addresses.append(settings.announced_ip)
    return addresses


class Drain:
    """SIGTERM on a cluster node: drain, then stop.  The node takes no new rooms and gives its
    meetings' placements up, ``/readyz`` answers 503, everyone here is asked to join again
    (elsewhere), and the process stops once nobody is left or after ``seconds``.  A second
    SIGTERM (or SIGINT) stops it at once."""

    def __init__(self, member: ClusterMember, signaling: SignalingServer, ctx: Any, seconds: float) -> None:
        self.member, self.signaling, self.ctx, self.seconds = member, signaling, ctx, seconds
        self.task: asyncio.Task[None] | None = None
        self.events: EventQueue | None = None  # webhooks: node.draining

    def signalled(self) -> None:
        if self.task is None:
            self.ordered()
        else:
            stop()

    def ordered(self) -> None:
        """Drain (once): from SIGTERM, or ordered through the API."""
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name="drain")

    async def run(self) -> None:
        log = logging.getLogger(__name__)
        self.ctx.draining = True
        if self.events is not None:
            self.events.put("node.draining", {"node": self.member.node_id, "participants": self.member.node.participant_count()}, None)
        await self.member.drain()
        told = await self.signaling.ask_to_reconnect()
        log.warning(
            "draining: %d participants asked to move; stopping when none is left, or in %.0f s",
            told,
            self.seconds,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        while self.member.node.participant_count() and loop.time() < deadline:
            await asyncio.sleep(0.2)
        stop()


def _ca_file(path: Path) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=path.read_bytes(),
            content_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="videoconf-development-ca.pem"'},
        )

    return handler


def stop() -> None:
    """Stop the server as its SIGINT does (aiohttp's run_app then cleans up)."""
    asyncio.get_running_loop().call_soon(_graceful_exit)


def _graceful_exit() -> None:
    raise web.GracefulExit()


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    tls: CertificateFiles | None = None,
    dev_ca: Path | None = None,
) -> web.Application:
    """``tls``: the certificate the node serves (reloaded on SIGHUP and when its files change);
    ``dev_ca``: the development authority's certificate, served at ``/tls/ca.pem`` for devices
    to trust."""
    verify_hooks()
    configure_ice(settings.ice_addresses, settings.ice_port_range, settings.udp_port)
    fastsend.configure(settings.native_send)
    app = create_api_app(settings, clock=clock)
    node = SfuNode(
        SfuMetrics(app[METRICS].registry),
        NodeSettings(ice_servers=_ice_servers(settings.sfu_ice_servers), announced_ip=settings.announced_ip),
    )
    signaling = SignalingServer(
        node, app[SERVICES], resume_seconds=settings.resume_seconds, join_timeout=settings.join_timeout
    )
    recorder = RecorderManager(
        node, app[SERVICES].recordings, RecorderConfig(settings.effective_recordings_dir, settings.recording)
    )
    app[SERVICES].recordings.controller = recorder
    signaling.recorder = recorder
    app[SERVICES].server.local_rooms = signaling.room_summaries
    webhook_events = EventQueue(app[SERVICES].webhooks)
    RoomActivity(node, webhook_events, settings.effective_node_id)
    cluster = app[SERVICES].ctx.cluster
    member = None
    if cluster is not None:
        member = ClusterMember(
            cluster,
            node,
            settings.effective_node_id,
            settings.effective_signaling_url,
            settings.node_max_participants,
        )
        signaling.member = member
        member.rooms = signaling.room_summaries
        signaling.cascade = Cascade(
            app[SERVICES].ctx.bus, settings.effective_node_id, signaling.on_order, recorder.status
        )
        app[METRICS].registry.register(member)
        app[METRICS].registry.register(signaling.cascade)
    app[SFU] = node
    app[SIGNALING] = signaling
    app[RECORDER] = recorder
    app[METRICS].registry.register(recorder)
    turn_tls = turn_certificate(settings.turn) if settings.turn.enabled else None
    turn = (
        TurnService(
            settings.turn,
            sfu_addresses=sfu_media_addresses(settings),
            tls=turn_tls.context if turn_tls else None,
        )
        if settings.turn.enabled
        else None
    )
    if turn is not None:
        app[TURN] = turn
        app[METRICS].registry.register(TurnCollector(lambda: turn.server))
    app_shell = _web_file("index.html", "text/html; charset=utf-8")
    app.router.add_get("/", app_shell, name="web-app")
    app.router.add_get("/j/{code}", app_shell, name="invite-link")
    app.router.add_get("/sw.js", _web_file("sw.js", "text/javascript; charset=utf-8"), name="service-worker")
    app.router.add_get(
        "/manifest.webmanifest",
        _web_file("manifest.webmanifest", "application/manifest+json", cache=True),
        name="manifest",
    )
    app.router.add_get("/signaling", signaling.handle, name="signaling")
    # The same socket under a node's own path, so that a reverse proxy or an Ingress can send
    # /nodes/<node>/ to one node of a cluster without rewriting paths (deploy/nginx, kubernetes).
    app.router.add_get("/nodes/{node}/signaling", signaling.handle, name="node-signaling")
    app.router.add_static("/web", WEB_ROOT, name="web")
    if dev_ca is not None:
        app.router.add_get("/tls/ca.pem", _ca_file(dev_ca), name="development-ca")
    if tls is not None:
        Gauge(
            "videoconf_tls_certificate_expiry_timestamp_seconds",
            "When the certificate this node serves expires (UNIX time)",
            registry=app[METRICS].registry,
        ).set_function(lambda: tls.not_after or 0.0)

    async def media(app: web.Application) -> AsyncIterator[None]:
        try:
            stale = await app[SERVICES].recordings.fail_unfinished()
        except Exception:  # the database may be down at start: /readyz says so, the server still runs
            logging.getLogger(__name__).exception(
                "could not check for recordings left unfinished by the last run"
            )
        else:
            if stale:
                logging.getLogger(__name__).warning(
                    "%d recordings left unfinished by the last run are marked failed", stale
                )
        bound = await bind_udp_port()  # a port already taken stops the node here
        if bound:
            logging.getLogger(__name__).info(
                "ICE on one UDP port: %s", ", ".join(f"{a}:{p}" for a, p in bound)
            )
        await node.start()
        webhook_events.start()
        if member is not None:
            drain = Drain(member, signaling, app[SERVICES].ctx, settings.drain_seconds)
            drain.events = webhook_events
            member.on_drain = drain.ordered
            await member.start(app[SERVICES].ctx.bus)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, drain.signalled)
        if turn is not None:
            await turn.start()
        reloader = TlsReloader([f for f in (tls, turn_tls) if f is not None])
        reloader.start()
        yield
        await reloader.stop()
        if member is not None:
            await member.stop()  # out of the registry first: no new rooms come here
        if turn is not None:
            await turn.stop()
        await recorder.close()
        if signaling.cascade is not None:
            await signaling.cascade.close()
        await signaling.close()
        await node.stop()
        await webhook_events.stop()  # after the rooms closed: their participants' leaving is written

    app.cleanup_ctx.append(media)
    return app
