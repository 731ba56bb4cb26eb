"""HTTP handlers: check who is asking, validate (done by the route declaration), call a service."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from control_api.routing import Api
from control_api.services.registry import Services

api = Api()
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def client_ip(request: web.Request) -> str:
    """The peer address; behind a configured trusted proxy, the last untrusted X-Forwarded-For hop."""
    remote = request.remote or "unknown"
    trusted = services(request).ctx.settings.trusted_proxies
    if not trusted or not _in(remote, trusted):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return remote


def _in(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


def user_agent(request: web.Request) -> str | None:
    return request.headers.get("User-Agent")


# Importing the handler modules registers their routes on ``api``.
from control_api.handlers import (  # noqa: E402,F401
    auth,
    calendar,
    chat,
    meetings,
    notifications,
    ops,
    recordings,
    server,
    webhooks,
)
