"""A webhook receiver for tests: an aiohttp server on loopback that keeps what it is sent and
answers with the statuses a test queues (then 200); and a resolver the test controls."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from clients.sdk.webhooks import verify


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []  # statuses for the next requests; 200 once empty
        self.delay = 0.0  # seconds before each answer
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        status = self.answers.pop(0) if self.answers else 200
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"Location": "/hooks"} if 300 <= status < 400 else {}  # a redirect back here
        return web.Response(status=status, text="ok" if status < 300 else "try again", headers=headers)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hooks"

    def events(self, secret: str) -> list[dict[str, Any]]:
        """What was received, each verified with ``secret`` (raises if one is not authentic)."""
        return [verify(secret, item.headers, item.body) for item in self.received]

    def types(self) -> list[str]:
        return [item.event["type"] for item in self.received]


class Names:
    """A resolver the test changes: a name resolves to what the test says now."""

    def __init__(self, **names: list[str]) -> None:
        self.names = names

    async def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.names:
            raise OSError("unknown host")
        return self.names[host]
