"""GStreamer's webrtcbin, an independent WebRTC stack, publishing to and subscribing from the SFU
through the signaling protocol.

The webrtcbin peer runs in Debian's Python (``tests/media/gst_peer.py``); this side relays its
SDP and ICE candidates to and from the signaling WebSocket.  What it found: packets of the
payloaders' default 1,400-byte MTU overflowed SRTP protection and killed the publisher, the SFU
as DTLS client offered no cipher suite for webrtcbin's RSA certificate, and an H.264 answer
without ``profile-level-id`` failed negotiation without a word to the client.  Missing GStreamer
packages fail these tests, never skip them (``make test`` installs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.sdk.media import PatternVideoTrack
from tests.media.conftest import Meeting, until
from videoconf.app import SFU

DEBIAN_PYTHON = "/usr/bin/python3"
PEER = Path(__file__).with_name("gst_peer.py")
# The Debian packages behind each part of the peer, for the message when one is missing.
PROBE = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp
Gst.init(None)
print(" ".join(name for name in NAMES if Gst.ElementFactory.find(name) is None))
"""
ELEMENTS = {
    "webrtcbin": "gstreamer1.0-plugins-bad",
    "dtlssrtpenc": "gstreamer1.0-plugins-bad",
    "h264parse": "gstreamer1.0-plugins-bad",
    "nicesrc": "gstreamer1.0-nice",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "vp8enc": "gstreamer1.0-plugins-good",
    "vp8dec": "gstreamer1.0-plugins-good",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "avdec_h264": "gstreamer1.0-libav",
    "videotestsrc": "gstreamer1.0-plugins-base",
}


@pytest.fixture(scope="module")
def gstreamer() -> None:
    """Fail (not skip) with the Debian package to install when the peer cannot run."""
    code = f"NAMES = {list(ELEMENTS)!r}\n{PROBE}"
    try:
        done = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.fail(f"{DEBIAN_PYTHON} is missing: install Debian's python3, python3-gi and python3-gst-1.0")
    if done.returncode != 0:
        pytest.fail(
            "GStreamer's Python bindings do not load in Debian's Python: install python3-gi, python3-gst-1.0 "
            f"and gir1.2-gst-plugins-bad-1.0 ({done.stderr.strip().splitlines()[-1:]})"
        )
    missing = done.stdout.split()
    if missing:
        needed = ", ".join(f"{name} (install {ELEMENTS[name]})" for name in missing)
        pytest.fail(f"GStreamer elements missing: {needed}")


class GstPeer:
    """The webrtcbin process and its JSON lines; ``stats`` is the latest it reported."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.messages: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        self.log: list[str] = []  # its standard error
        self.reader = asyncio.ensure_future(self._read())
        self.log_reader = asyncio.ensure_future(self._read_log())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:  # something in GStreamer printed to standard output
                self.log.append(line.decode(errors="replace").rstrip())
                continue
            if message["type"] == "stats":
                self.stats = message
            else:
                self.messages.append(message)

    async def _read_log(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.log.append(line.decode(errors="replace").rstrip())

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        await self.process.stdin.drain()

    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "error"]

    def describe(self) -> str:
        return f"webrtcbin peer: {self.stats}, errors {self.errors()}\n" + "\n".join(self.log[-20:])

    async def next(self, kinds: tuple[str, ...], timeout: float = 20.0) -> dict[str, Any]:
        """The oldest message of one of ``kinds`` not taken yet, waiting for it."""
        def found() -> bool:
            return any(m["type"] in kinds for m in self.messages) or self.reader.done()

        await until(found, timeout)
        for index, message in enumerate(self.messages):
            if message["type"] in kinds:
                del self.messages[index]
                return message
        raise AssertionError(f"the webrtcbin peer ended: {self.messages}\n{self.describe()}")


@contextlib.asynccontextmanager
async def gst_peer(*args: str) -> AsyncIterator[GstPeer]:
    process = await asyncio.create_subprocess_exec(
        DEBIAN_PYTHON, str(PEER), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    peer = GstPeer(process)
    try:
        await peer.next(("ready",))
        yield peer
    finally:
        if process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await peer.send({"type": "stop"})
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
        await asyncio.gather(peer.reader, peer.log_reader)


class Relay:
    """The signaling WebSocket of the webrtcbin peer: its SDP and candidates go both ways."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, peer: GstPeer, target: str) -> None:
        self.ws = ws
        self.peer = peer
        self.target = target
        self.received: list[dict[str, Any]] = []
        self.answers: list[str] = []  # what webrtcbin answered the SFU's offers
        self.closed = False
        # Candidates go after the description they belong to: before it, the SFU has no
        # connection to add them to.
        self.described = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._from_server()), asyncio.ensure_future(self._candidates())]

    async def _from_server(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            self.received.append(message)
            if message["type"] == "publish-answer":
                await self.peer.send({"type": "answer", "sdp": message["sdp"]})
            elif message["type"] == "subscriber-offer":
                await self.peer.send({"type": "offer", "sdp": message["sdp"]})
                answer = await self.peer.next(("answer",))
                self.answers.append(answer["sdp"])
                await self.ws.send_json({"type": "subscriber-answer", "sdp": answer["sdp"]})
                self.described.set()
        self.closed = True

    async def _candidates(self) -> None:
        await self.described.wait()
        while True:  # until the relay closes
            candidate = await self.peer.next(("candidate",), timeout=600)
            await self.ws.send_json({
                "type": "ice-candidate", "target": self.target, "candidate": candidate["candidate"],
                "sdp_mline_index": candidate["mline"],
            })

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind]

    def describe(self) -> str:
        kinds = [m["type"] for m in self.received]
        return f"signaling: {kinds}, errors {self.of_type('error')}, closed {self.closed}"

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def relay(meeting: Meeting, account: dict[str, Any], peer: GstPeer, target: str) -> AsyncIterator[Relay]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(meeting.signaling_url)
        await ws.send_json({"type": "join", "protocol": 1, "token": await meeting.token(account)})
        joined = await ws.receive_json(timeout=10)
        assert joined["type"] == "joined", joined
        channel = Relay(ws, peer, target)
        try:
            yield channel
        finally:
            await channel.close()
            await ws.close()


async def publish(peer: GstPeer, channel: Relay) -> None:
    """Send the webrtcbin publisher's offer as its camera."""
    offer = (await peer.next(("offer",)))["sdp"]
    match = re.search(r"^a=mid:(\S+)", offer, re.M)
    assert match, offer
    track = {"mid": match.group(1), "kind": "video", "source": "camera"}
    await channel.ws.send_json({"type": "publish", "id": "p1", "sdp": offer, "tracks": [track]})
    channel.described.set()


def video_of(client: Any) -> Any:
    return next((r for r in client.remote.values() if r.kind == "video" and r.track is not None), None)


def departures(client: Any) -> list[str]:
    return [m["reason"] for m in client.history if m.get("type") == "participant-left"]


def packet_errors(meeting: Meeting) -> dict[str, float]:
    metrics = meeting.api.app[SFU].metrics
    counter = metrics.packet_errors
    return {where: counter.labels(where)._value.get() for where in ("forward", "tap", "receive")}


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_webrtcbin_publisher_with_1400_byte_packets_reaches_an_aiortc_subscriber(
    meeting: Meeting, codec: str, gstreamer: None
) -> None:
    """webrtcbin's RSA certificate meets the SFU as DTLS client (the SFU answers), and its
    packets of the payloader's default 1,400-byte MTU are forwarded to an aiortc subscriber."""
    subscriber = await meeting.participant(meeting.people[0])
    async with gst_peer("publish", codec) as peer, relay(meeting, meeting.host, peer, "publisher") as channel:
        await publish(peer, channel)

        def decoded_or_gone() -> bool:
            video = video_of(subscriber)
            return (video is not None and video.frames >= 60) or bool(departures(subscriber)) or channel.closed

        def status() -> str:
            video = video_of(subscriber)
            return (
                f"{channel.describe()}; the subscriber decoded {video.frames if video else 0} frames and saw "
                f"departures {departures(subscriber)}; SFU packet errors {packet_errors(meeting)}; {peer.describe()}"
            )

        await until(decoded_or_gone, 40, lambda: f"decoded_or_gone: {status()}")
        video = video_of(subscriber)
        assert video is not None and video.frames >= 60 and not departures(subscriber), status()
        assert peer.stats["big_packets"] > 0 and peer.stats["max_rtp_size"] >= 1350, status()
        assert video.last_size == (640, 480) and not peer.errors(), status()
        assert set(packet_errors(meeting).values()) == {0}, status()


async def webrtcbin_decodes(
    peer: GstPeer, channel: Relay, size: tuple[int, int], context: Callable[[], str] = lambda: ""
) -> str:
    """Wait for the webrtcbin subscriber to decode 30 frames of ``size``; fail early, with what
    happened (and ``context()``), if the SFU refused its answer.  Returns its answer."""

    def decoded_or_refused() -> bool:
        return peer.stats.get("frames_decoded", 0) >= 30 or bool(channel.of_type("error")) or channel.closed

    def status() -> str:
        return f"{context()}subscriber {channel.describe()}; {peer.describe()}"

    await until(decoded_or_refused, 40, lambda: f"decoded_or_refused: {status()}")
    assert peer.stats["frames_decoded"] >= 30 and not channel.of_type("error"), status()
    assert (peer.stats["width"], peer.stats["height"]) == size, status()
    (answer,) = channel.answers
    return answer


async def test_webrtcbin_subscriber_answering_without_profile_level_id_decodes_h264(
    meeting: Meeting, gstreamer: None
) -> None:
    """webrtcbin answers H.264 without ``profile-level-id``, which RFC 6184 reads as 42000A
    (Baseline): the SFU, offering the publisher's Baseline H.264, accepts it, and webrtcbin
    decodes the frames."""
    publisher = await meeting.participant(meeting.host, video_codec="H264")
    async with gst_peer("subscribe") as peer, relay(meeting, meeting.people[0], peer, "subscriber") as channel:
        await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
        answer = await webrtcbin_decodes(peer, channel, (320, 240))
        assert "H264/90000" in answer and "profile-level-id" not in answer, answer


async def test_webrtcbin_to_webrtcbin_through_the_sfu(meeting: Meeting, gstreamer: None) -> None:
    """webrtcbin publishes Constrained Baseline H.264, webrtcbin subscribes and answers without
    ``profile-level-id``: a Baseline decoder decodes Constrained Baseline, so the SFU takes it."""
    async with gst_peer("publish", "H264") as sender, relay(meeting, meeting.host, sender, "publisher") as up:
        async with gst_peer("subscribe") as receiver, relay(meeting, meeting.people[0], receiver, "subscriber") as down:
            await publish(sender, up)
            answer = await webrtcbin_decodes(receiver, down, (640, 480), lambda: f"publisher {up.describe()}; ")
            assert "profile-level-id" not in answer, answer
            assert "profile-level-id=42e01f" in up.of_type("publish-answer")[0]["sdp"]


async def test_webrtcbin_to_webrtcbin_through_a_node_on_one_udp_port(tmp_path: Path, gstreamer: None) -> None:
    """The same through a node (its own process) whose every connection shares one UDP port."""
    import socket

    from clients.loadtest.process import free_port
    from tests.faults.node import Node
    from tests.media.test_single_udp_port import candidate_ports, udp_ports

    port = free_port(socket.SOCK_DGRAM)
    node = Node(tmp_path, VIDEOCONF_UDP_PORT=str(port))
    try:
        await node.start()
        host, guest, row, _ = await node.hosted_meeting()

        class OnNode:
            signaling_url = node.signaling_url
            people = [guest]

            async def token(self, account: dict[str, Any]) -> str:
                return await node.room_token(account, row)

        on_node: Any = OnNode()
        on_node.host = host
        async with gst_peer("publish", "VP8") as sender, relay(on_node, host, sender, "publisher") as up:
            async with gst_peer("subscribe") as receiver, relay(on_node, guest, receiver, "subscriber") as down:
                await publish(sender, up)
                await webrtcbin_decodes(receiver, down, (640, 480), lambda: f"publisher {up.describe()}; ")
                assert candidate_ports(up.of_type("publish-answer")[0]["sdp"]) == {port}
                assert candidate_ports(down.of_type("subscriber-offer")[-1]["sdp"]) == {port}
        assert udp_ports(node.pid) == [port]
    finally:
        await node.close()
