"""Helpers for tests of the server API: make a key, sign a request."""

from __future__ import annotations

from typing import Any

from clients.sdk.server import server_token
from control_api.services.api_keys import ApiKeys


async def create_key(api_or_services: Any, scopes: list[str], name: str = "test key") -> tuple[str, str]:
    """A new API key (id, secret) with ``scopes``; takes the ``api`` fixture or its services."""
    services = getattr(api_or_services, "services", api_or_services)
    key, secret = await ApiKeys(services.ctx.db, services.ctx.clock).create(name, scopes)
    return key.id, secret


def server_headers(
    key_id: str, secret: str, body: bytes | None = None, *, ttl: int = 300, now: float | None = None
) -> dict[str, str]:
    """``Authorization: Bearer <JWT>`` for one call; pass the exact body bytes to sign them."""
    return {"Authorization": f"Bearer {server_token(key_id, secret, body, ttl=ttl, now=now)}"}
