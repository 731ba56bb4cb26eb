"""The baseline of the SFU benchmark: stock aiortc forwarding with ``MediaRelay``, which decodes
each published track once and encodes it again for every subscriber.

    python benchmarks/relay_baseline.py --port 8700

``POST /publish`` takes the publisher's offer (video and audio) and answers it; ``POST
/subscribe`` takes a subscriber's recvonly offer and answers with relayed copies of the
published tracks.  ICE uses loopback only and no ICE servers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sfu.aiortc_hooks import configure_ice  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_ice(["127.0.0.1"])
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
