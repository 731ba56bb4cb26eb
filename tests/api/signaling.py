"""The signaling WebSocket without media, for API tests that need the room's side of a rule."""

from __future__ import annotations

from typing import Any

PROTOCOL = 1


async def receive(ws: Any, *kinds: str) -> dict:
    """The next message of one of ``kinds``, skipping others; fails after 5 s."""
    while True:
        message = await ws.receive_json(timeout=5)
        if message["type"] in kinds:
            return message


async def join(ws: Any, token: str) -> dict:
    """``joined``, or the ``error`` that refused the token."""
    await ws.send_json({"type": "join", "protocol": PROTOCOL, "token": token})
    return await receive(ws, "joined", "error")
