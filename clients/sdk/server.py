"""A small client of the server API (``/api/server/...``): the backend of a product that puts
VideoConf behind it creates rooms' tokens, lists rooms and moderates with it.

Each call is signed with a fresh short-lived EdDSA JWT made from the API key's secret
(``server_token``); the body's SHA-256 is part of the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AUDIENCE = "videoconf-server-api"
SECRET_PREFIX = "vcsk_"


def signing_key(secret: str) -> Ed25519PrivateKey:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"an API secret starts with {SECRET_PREFIX!r}")
    body = secret[len(SECRET_PREFIX):]
    return Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def server_token(key_id: str, secret: str, body: bytes | None = None, *, ttl: int = 300, now: float | None = None) -> str:
    """A JWT for one server API call: ``iss`` the key id, valid ``ttl`` seconds (600 at most),
    with the SHA-256 of ``body`` when one is sent."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"iss": key_id, "aud": AUDIENCE, "iat": issued, "exp": issued + ttl}
    if body is not None:
        claims["sha256"] = hashlib.sha256(body).hexdigest()
    return jwt.encode(claims, signing_key(secret), algorithm="EdDSA")


class ServerApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ServerClient:
    """``async with ServerClient(base_url, key_id, secret) as server: await server.list_rooms()``;
    its methods mirror the endpoints of ``/api/server`` and return their JSON."""

    def __init__(self, base_url: str, key_id: str, secret: str, *, ttl: int = 60) -> None:
        self.base_url = base_url.rstrip("/")
        self.key_id = key_id
        self.secret = secret
        self.ttl = ttl
        signing_key(secret)  # a malformed secret fails here, not at the first call
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ServerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, payload: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Authorization": f"Bearer {server_token(self.key_id, self.secret, body, ttl=self.ttl)}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self._session.request(method, self.base_url + path, data=body, headers=headers) as response:
            data = await response.json() if response.content_type == "application/json" else None
            if response.status >= 400:
                error = (data or {}).get("error") or {}
                raise ServerApiError(response.status, str(error.get("code")), str(error.get("message")))
            return data

    # Rooms and participants
    async def list_rooms(self) -> Any:
        return await self.request("GET", "/api/server/rooms")

    async def get_room(self, meeting_id: str) -> Any:
        return await self.request("GET", f"/api/server/rooms/{meeting_id}")

    async def list_participants(self, meeting_id: str) -> Any:
        return await self.request("GET", f"/api/server/rooms/{meeting_id}/participants")

    async def get_participant(self, meeting_id: str, identity: str) -> Any:
        return await self.request("GET", f"/api/server/rooms/{meeting_id}/participants/{quote(identity, safe='')}")

    async def remove_participant(self, meeting_id: str, identity: str) -> None:
        await self.request("DELETE", f"/api/server/rooms/{meeting_id}/participants/{quote(identity, safe='')}")

    async def mute_track(self, meeting_id: str, identity: str, track_id: str, muted: bool = True) -> None:
        path = f"/api/server/rooms/{meeting_id}/participants/{quote(identity, safe='')}/tracks/{track_id}/mute"
        await self.request("POST", path, {"muted": muted})

    async def update_participant(
        self, meeting_id: str, identity: str, *, grants: dict[str, bool] | None = None, metadata: str | None = None
    ) -> None:
        payload: dict[str, Any] = {}
        if grants is not None:
            payload["grants"] = grants
        if metadata is not None:
            payload["metadata"] = metadata
        await self.request("PATCH", f"/api/server/rooms/{meeting_id}/participants/{quote(identity, safe='')}", payload)

    async def send_message(
        self, meeting_id: str, payload: Any, *, kind: str = "data", identity: str | None = None, topic: str | None = None
    ) -> None:
        body: dict[str, Any] = {"kind": kind, "payload": payload}
        if identity is not None:
            body["identity"] = identity
        if topic is not None:
            body["topic"] = topic
        await self.request("POST", f"/api/server/rooms/{meeting_id}/messages", body)

    # Recordings, meetings, tokens
    async def start_recording(self, meeting_id: str, layout: str | None = None) -> Any:
        return await self.request("POST", f"/api/server/rooms/{meeting_id}/recording", {"layout": layout} if layout else {})

    async def stop_recording(self, meeting_id: str) -> Any:
        return await self.request("DELETE", f"/api/server/rooms/{meeting_id}/recording")

    async def end_meeting(self, meeting_id: str) -> None:
        await self.request("POST", f"/api/server/meetings/{meeting_id}/end")

    async def create_token(
        self, meeting_id: str, identity: str, *, name: str | None = None, metadata: str = "",
        grants: dict[str, bool] | None = None, ttl_seconds: int = 3600,
    ) -> Any:
        body: dict[str, Any] = {"meeting_id": meeting_id, "identity": identity, "metadata": metadata, "ttl_seconds": ttl_seconds}
        if name is not None:
            body["name"] = name
        if grants is not None:
            body["grants"] = grants
        return await self.request("POST", "/api/server/tokens", body)
