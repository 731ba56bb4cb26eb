"""The baseline of the SFU benchmark: stock aiortc forwarding with ``MediaRelay``, which decodes
each published track once and encodes it again for every subscriber.

    python -m benchmarks.relay_baseline --port 8700

``POST /publish`` takes the publisher's offer (video and audio) and answers it; ``POST
/subscribe`` takes a subscriber's recvonly offer and answers with relayed copies of the
published tracks.  ICE uses loopback only and no ICE servers.  ``RelayBaseline`` is the
benchmarks' side: the server in its own process, pinned to core 0, and its peers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from benchmarks.media import peer, vp8_only
from clients.loadtest.process import ChildProcess, free_port, listening, pinned
from sfu.aiortc_hooks import configure_ice

ROOT = Path(__file__).resolve().parent.parent
Counter = TypeVar("Counter")


def create_app() -> web.Application:
    relay = MediaRelay()
    sources: dict[str, object] = {}
    connections: set[RTCPeerConnection] = set()
    published = asyncio.Event()

    def peer() -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        connections.add(pc)
        return pc

    async def publish(request: web.Request) -> web.Response:
        offer = await request.json()
        pc = peer()

        @pc.on("track")
        def on_track(track: object) -> None:
            sources[track.kind] = track  # type: ignore[attr-defined]
            if {"audio", "video"} <= sources.keys():
                published.set()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def subscribe(request: web.Request) -> web.Response:
        offer = await request.json()
        await asyncio.wait_for(published.wait(), 20)
        pc = peer()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        for transceiver in pc.getTransceivers():
            transceiver.direction = "sendonly"
            transceiver.sender.replaceTrack(relay.subscribe(sources[transceiver.kind]))  # type: ignore[arg-type]
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def close(app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc in connections))

    app = web.Application()
    app.router.add_post("/publish", publish)
    app.router.add_post("/subscribe", subscribe)
    app.router.add_get("/healthz", lambda request: web.Response(text="ok"))
    app.on_shutdown.append(close)
    return app


class RelayBaseline:
    """The baseline in its own process (pinned to core 0), one publisher and its subscribers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "benchmarks.relay_baseline", "--port", str(self.port)]
        self.child = ChildProcess(pinned(0, command), cwd=ROOT)
        self.pcs: list[RTCPeerConnection] = []

    @property
    def pid(self) -> int:
        return self.child.pid

    async def connect(
        self, video: MediaStreamTrack, audio: MediaStreamTrack, subscribers: int, count: Callable[[RTCPeerConnection], Counter]
    ) -> list[Counter]:
        """Start the server, publish ``video`` (VP8) and ``audio``, and subscribe ``subscribers``
        peers, each counted by ``count(pc)``."""
        self.child.start(lambda: listening(self.port), 10, "the MediaRelay baseline")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            publisher = self._peer()
            publisher.addTransceiver(video, direction="sendonly").setCodecPreferences(vp8_only())
            publisher.addTransceiver(audio, direction="sendonly")
            await self._exchange(http, "/publish", publisher)
            counters = []
            for _ in range(subscribers):
                pc = self._peer()
                pc.addTransceiver("video", direction="recvonly").setCodecPreferences(vp8_only())
                pc.addTransceiver("audio", direction="recvonly")
                await self._exchange(http, "/subscribe", pc)
                counters.append(count(pc))
        return counters

    def _peer(self) -> RTCPeerConnection:
        self.pcs.append(peer())
        return self.pcs[-1]

    async def _exchange(self, http: aiohttp.ClientSession, path: str, pc: RTCPeerConnection) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(self.base + path, json={"sdp": pc.localDescription.sdp}) as response:
            answer = await response.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)
        self.child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_ice(["127.0.0.1"])
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
