"""Signaling frames through a real in-process server (control API, signaling, SFU on SQLite, ICE on
127.0.0.1): the fuzzer is the meeting's host on a raw WebSocket, publishing Opus, VP8 and H.264
from a connected client so that its track ids are real; a guest (the Python SDK) is in the room
for the frames that name someone.  After every frame the host sends a ``ping``: everything up to
its ``pong`` is the frame's outcome.  Each error must carry a protocol code (never
``internal_error``) and the request's id, ``seq`` must grow by one, and a connection may only
end the ways the protocol documents; the harness then joins again (in a new meeting when this
one has ended or banned someone).

The flood limit is lifted for the harness (``signaling.server.FLOOD_RULE``): it is tested on its
own, and at 20 messages a second 10,000 cases would take hours."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from clients.sdk.participant import Participant as SdkParticipant
from control_api.config import RateLimitRule
from control_api.storage.database import Database
from control_api.storage.migrate import upgrade
from signaling import server as signaling_server
from signaling.protocol import PROTOCOL_VERSION
from tests.conftest import Api, Backend, make_settings, start_api
from tests.fuzz.core import Runner, Undefined
from tests.fuzz.media import client_pc, open_bench, publisher_offer, until
from tests.fuzz.signaling_cases import Frame, check_error
from tests.media.conftest import RealClock

LOOSE_FLOOD = RateLimitRule(limit=1_000_000, period=1)
# How the server may end a connection (close codes).  1006: a closing handshake the harness did
# not answer within CLOSE_TIMEOUT (nobody reads an idle connection between cases) is dropped.
ENDINGS = {1000, 1001, 1006, 1009, 4001, 4008}


class Closed(Exception):
    """The server closed the host's connection (in a documented way)."""


class Host:
    """The fuzzer's raw WebSocket: frames go out as given, everything that comes back is read."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.joined: dict[str, Any] = {}
        self.tracks: list[str] = []
        self.pings = 0

    async def read(self, timeout: float = 10.0) -> dict[str, Any]:
        frame = await self.ws.receive(timeout=timeout)
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            code = self.ws.close_code
            if code not in ENDINGS:
                raise Undefined(f"the server closed the connection with {code} ({frame.extra})")
            raise Closed(f"{code}")
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise Undefined(f"the server sent a {frame.type.name} frame")
        message = json.loads(frame.data)
        self._check(message)
        return message

    def _check(self, message: dict[str, Any]) -> None:
        seq = message.get("seq")
        if seq is not None and self.seq and seq != self.seq + 1:
            raise Undefined(f"seq went from {self.seq} to {seq}")
        if seq is not None:
            self.seq = seq
        if message.get("type") == "error":
            if message["code"] == "internal_error":
                raise Undefined(f"internal_error: {message.get('message')}")
            check_error(message["code"], message["message"], message.get("details"))

    async def until(self, kind: str, request_id: str | None = None) -> list[dict[str, Any]]:
        seen = []
        while True:
            message = await self.read()
            seen.append(message)
            if message.get("type") == kind and (request_id is None or message.get("id") == request_id):
                return seen

    async def drain(self) -> None:
        """Read what came meanwhile (a negotiation's late error, a removal): ``Closed`` when the
        server has ended the connection since."""
        while True:
            try:
                await self.read(timeout=0.001)
            except asyncio.TimeoutError:
                return

    async def exchange(self, payload: str | bytes, request_id: str | None) -> list[dict[str, Any]]:
        """Send one frame, then a ping: what came back up to the pong."""
        self.pings += 1
        ping = f"fuzz-ping-{self.pings}"
        try:
            await (self.ws.send_bytes(payload) if isinstance(payload, bytes) else self.ws.send_str(payload))
            await self.ws.send_str(json.dumps({"type": "ping", "id": ping}))
        except ConnectionError:  # the server closed the connection while the frame went out
            await self.until("never")
        seen = await self.until("pong", ping)
        for message in seen:
            if message.get("type") == "error" and message.get("id") not in (None, request_id):
                raise Undefined(f"an error answered id {message.get('id')!r}, not {request_id!r}")
        return seen


class SignalingBench:
    def __init__(self) -> None:
        self.directory = tempfile.TemporaryDirectory()
        self.host: Host | None = None
        self.guest: SdkParticipant | None = None
        self.clients: list[RTCPeerConnection] = []
        self.http: aiohttp.ClientSession | None = None
        self.meeting: dict[str, Any] = {}
        self.ended = True
        self.cases = 0

    async def open(self) -> None:
        self.flood, signaling_server.FLOOD_RULE = signaling_server.FLOOD_RULE, LOOSE_FLOOD
        path = Path(self.directory.name)
        db = Database(f"sqlite:///{path / 'fuzz.db'}")
        await upgrade(db)
        await db.close()
        backend = Backend("sqlite", f"sqlite:///{path / 'fuzz.db'}", None, None)
        settings = make_settings(path, backend, ice_addresses=["127.0.0.1"], resume_seconds=3)
        self.api: Api = await start_api(settings, RealClock(), backend)  # type: ignore[arg-type]
        self.accounts = [await self.api.register("Fuzz Host"), await self.api.register("Fuzz Guest")]
        self.http = aiohttp.ClientSession()
        pc = client_pc()
        self.offer, self.tracks = await publisher_offer(pc, ("audio", "VP8"))
        await pc.close()

    @property
    def url(self) -> str:
        return str(self.api.client.make_url("/signaling")).replace("http://", "ws://")

    async def token(self, account: dict[str, Any]) -> str:
        _, body = await self.api.call("POST", f"/api/meetings/{self.meeting['id']}/join", account["token"], json={})
        if "token" not in body:
            self.ended = True  # removed, full or ended: the next case starts a new meeting
            raise Closed(str(body))
        return body["token"]

    # Keeping a host and a guest in a live meeting ----------------------------------------------------

    async def ensure(self) -> Host:
        for _ in range(3):
            try:
                if self.ended:
                    await self._new_meeting()
                if self.guest is None or self.guest.state != "connected":
                    await self._connect_guest()
                if self.host is not None and not self.host.ws.closed:
                    with contextlib.suppress(Closed):
                        await self.host.drain()
                if self.host is None or self.host.ws.closed:
                    await self._connect_host()
                return self.host  # type: ignore[return-value]
            except (Closed, TimeoutError, asyncio.TimeoutError):
                self.ended = True
        raise Undefined("the harness could not get into a meeting three times in a row")

    async def _new_meeting(self) -> None:
        await self._drop_host()
        if self.guest is not None:
            await self.guest.close()
            self.guest = None
        self.meeting = await self.api.meeting(self.accounts[0]["token"], settings={"allow_recording": False})
        self.ended = False

    async def _connect_guest(self) -> None:
        if self.guest is not None:
            await self.guest.close()
        self.guest = SdkParticipant(self.url, await self.token(self.accounts[1]), ice_servers=[])
        try:
            await self.guest.connect(timeout=10)
        except Exception as exc:
            raise Closed(f"the guest could not join: {exc}") from None

    async def _connect_host(self) -> None:
        await self._drop_host()
        host = Host(await self.http.ws_connect(self.url, max_msg_size=8 * 1024 * 1024))  # type: ignore[union-attr]
        self.host = host
        await host.ws.send_str(json.dumps({"type": "join", "protocol": PROTOCOL_VERSION, "token": await self.token(self.accounts[0])}))
        reply = (await host.until("joined"))[-1]
        host.joined = reply
        await self._publish(host)

    async def _publish(self, host: Host) -> None:
        """Publish from a client that connects, so that the host's tracks are real."""
        pc = client_pc()
        self.clients.append(pc)
        offer, tracks = await publisher_offer(pc, ("audio", "VP8"))
        await host.ws.send_str(json.dumps({"type": "publish", "id": "harness", "sdp": offer, "tracks": tracks}))
        answer = (await host.until("publish-answer"))[-1]
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        host.tracks = [t["track_id"] for t in answer["tracks"]]
        await until(lambda: pc.connectionState == "connected", 10, "the host's publisher connection")

    async def _drop_host(self) -> None:
        if self.host is not None:
            await self.host.ws.close()
            self.host = None
        for pc in self.clients:
            await pc.close()
        self.clients.clear()

    # One case ----------------------------------------------------------------------------------------

    async def fill(self, frame: Frame, host: Host) -> dict[str, Any]:
        text = json.dumps(frame.message)
        guest = self.guest
        fill: dict[str, Any] = {
            "$self": host.joined["participant"]["identity"], "$other": guest.identity if guest else "x",
            "$stranger": str(uuid.uuid4()), "$track": host.tracks[self.cases % len(host.tracks)] if host.tracks else "TR_x",
            "$remote_track": "TR_000000000000", "$session": host.joined.get("session_id"),
            "$resume": host.joined.get("resume_token"), "$offer": self.offer,
            "$broken_offer": "\r\n".join(self.offer.splitlines()[::2]) + "\r\n",
        }
        if "$token" in text:
            fill["$token"] = await self.token(self.accounts[0])
        if "$other_token" in text:
            fill["$other_token"] = await self.token(self.accounts[1])
        return fill

    async def case(self, case: tuple[list[Frame], bool]) -> str:
        frames, fresh = case
        self.cases += 1
        host = await self.ensure()
        if fresh:  # a connection that has not joined
            host = Host(await self.http.ws_connect(self.url, max_msg_size=8 * 1024 * 1024))  # type: ignore[union-attr]
        label = "none"
        try:
            for frame in frames:
                label = await self._frame(host, frame)
                if label.startswith("closed"):
                    break
        finally:
            if fresh:
                await host.ws.close()
        return label

    async def _frame(self, host: Host, frame: Frame) -> str:
        try:
            fill = await self.fill(frame, self.host or host)
        except Closed:  # no new room token: the meeting ended meanwhile
            return "closed:meeting-ended"
        payload = frame.payload(fill)
        try:
            seen = await host.exchange(payload, frame.request_id())
        except Closed as exc:
            return f"closed:{exc}"
        ended = [m for m in seen if m.get("type") in ("meeting-ended", "removed")]
        if ended:
            self.ended = True
        errors = [m["code"] for m in seen if m.get("type") == "error"]
        kind = frame.message.get("type")
        return f"{kind}:{errors[0]}" if errors else f"{kind}:ok"

    def check(self) -> None:
        """Every rule is checked as the frames come back (``Host``)."""

    async def close(self) -> None:
        signaling_server.FLOOD_RULE = self.flood
        await self._drop_host()
        if self.guest is not None:
            await self.guest.close()
        if self.http is not None:
            await self.http.close()
        await self.api.client.close()
        self.directory.cleanup()


def open_signaling() -> contextlib.AbstractContextManager[Runner]:
    return open_bench(SignalingBench(), ("signaling", "sfu", "control_api"), seconds=60)
