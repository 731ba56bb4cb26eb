"""Attacks on a node's signaling and media ports, each reproduced from outside, as an attacker on
the internet would try them: the attacked client may lose its own connection, nobody else may
notice."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from urllib.parse import urlsplit

import aiohttp

from clients.sdk.participant import Participant
from signaling.protocol import PROTOCOL_VERSION
from tests.media.conftest import Meeting, until


class StalledClient:
    """A WebSocket client on a raw socket with a tiny receive buffer, which joins and then never
    reads again: what a phone that froze, or an attacker, looks like to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str) -> StalledClient:
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        mask = os.urandom(4)
        header = bytes([0x81]) + (bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack("!H", len(data)))
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    async def close_code(self) -> int:
        """Read on again, skipping every frame, until the server's close frame: its code."""
        while True:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(size)
            if first & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def close(self) -> None:
        self.writer.transport.abort()


async def test_a_client_that_stops_reading_does_not_hold_its_room(meeting: Meeting) -> None:
    """One participant stops reading its WebSocket while 3 MB of chat is posted (more than the
    kernel buffers hold): everyone else still gets every message at once, and then the meeting's
    end."""
    host = await meeting.participant(meeting.host)
    others = [await meeting.participant(person) for person in meeting.people[:2]]
    stalled = await StalledClient.connect(meeting.signaling_url)
    stalled.send({"type": "join", "protocol": PROTOCOL_VERSION, "token": await meeting.token(meeting.people[2])})
    await host.wait_for("participant-joined", lambda m: m["participant"]["identity"] == meeting.people[2]["user"]["id"])
    posts = 800
    try:
        text = "x" * 3900
        for number in range(posts):
            await meeting.api.call(
                "POST", f"/api/meetings/{meeting.meeting['id']}/messages", meeting.host["token"],
                json={"body": f"{number} {text}"}, expect=201,
            )
        for client in others:
            await until(lambda c=client: len(c.chat_messages) == posts, timeout=10)
        await host.send({"type": "end-meeting"})
        for client in others:
            await client.wait_for("meeting-ended", timeout=10)
    finally:
        stalled.close()


async def test_an_outbox_that_overflows_closes_its_connection_without_blocking_anyone() -> None:
    """The outbox of a client that does not read takes frames without ever blocking the caller,
    and once over its bound closes that connection with 4008 (the client may resume)."""
    from aiohttp import web

    from signaling.server import CLOSE_SLOW_CONSUMER, Outbox

    results: dict[str, float] = {}
    overflowed = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        outbox = Outbox(ws, request.transport, limit=10_000, byte_limit=256 * 1024)
        loop = asyncio.get_running_loop()
        started = loop.time()
        accepted = 0
        while outbox.put("y" * 4000):  # never awaits: the caller serves others
            accepted += 1
            if accepted % 50 == 0:
                await asyncio.sleep(0)  # let the writer fill the kernel buffers
        results["accepted"], results["put_seconds"] = accepted, loop.time() - started
        overflowed.set()
        await until(lambda: ws.closed, timeout=10)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = await StalledClient.connect(f"ws://127.0.0.1:{port}/ws")
    try:
        await asyncio.wait_for(overflowed.wait(), 20)
        code = await asyncio.wait_for(client.close_code(), 10)  # the client reads again
    finally:
        client.close()
        await runner.cleanup()
    assert results["accepted"] > 0 and results["put_seconds"] < 5, results
    assert code == CLOSE_SLOW_CONSUMER == 4008


async def test_hostile_frames_get_an_error_and_the_connection_stays_usable(meeting: Meeting) -> None:
    from tests.media.test_signaling import raw_socket, receive

    http, ws = await raw_socket(meeting)
    try:
        await ws.send_json({"type": "join", "protocol": PROTOCOL_VERSION, "token": await meeting.token(meeting.host)})
        await receive(ws, "joined")
        hostile = [
            ('{"type": {"$ne": 1}}', "unknown_type"),
            ('{"type": ["join"]}', "unknown_type"),
            ("[" * 100_000 + "]" * 100_000, "malformed_json"),
            ('{"type": "chat", "text": ' + "[" * 100_000 + "]" * 100_000 + "}", "malformed_json"),
            ('{"type": "' + "q" * 200_000 + '"}', "unknown_type"),
        ]
        for frame, code in hostile:
            await ws.send_str(frame)
            error = await receive(ws, "error")
            assert error["code"] == code, (frame[:40], error)
            assert len(error["message"]) < 200, error  # never an echo of the attacker's 200 KB
        await ws.send_json({"type": "ping", "id": "still-here"})
        assert (await receive(ws, "pong"))["id"] == "still-here"
    finally:
        await ws.close()
        await http.close()


async def test_a_connection_that_never_joins_is_closed_after_the_join_timeout(meeting: Meeting) -> None:
    from signaling.server import CLOSE_JOIN_TIMEOUT
    from videoconf.app import SIGNALING

    meeting.api.app[SIGNALING].join_timeout = 0.5
    from tests.media.test_signaling import raw_socket

    http, idle = await raw_socket(meeting)
    http2, pinging = await raw_socket(meeting)
    try:
        for _ in range(3):  # pings are not a join: they do not keep a connection open
            await pinging.send_json({"type": "ping"})
        for ws in (idle, pinging):
            while True:
                frame = await asyncio.wait_for(ws.receive(), 5)
                if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert ws.close_code == CLOSE_JOIN_TIMEOUT
    finally:
        await http.close()
        await http2.close()


def sfu_media_ports(client: Participant) -> set[int]:
    """The SFU's UDP ports as the client's descriptions name them (what a port scan finds)."""
    ports = set()
    for pc, description in ((client.publisher, "remoteDescription"), (client.subscriber, "remoteDescription")):
        if pc is None or getattr(pc, description) is None:
            continue
        for line in getattr(pc, description).sdp.splitlines():
            if line.startswith("a=candidate:"):
                ports.add(int(line.split()[5]))
    return ports


async def test_datagrams_from_anyone_to_the_media_ports_end_no_meeting(meeting: Meeting) -> None:
    """Empty, unknown, oversized and DTLS- or RTP-looking datagrams from an address ICE never
    checked, sent to every media port of the node, are dropped before aiortc: nobody is removed
    and the video goes on."""
    from clients.sdk.media import PatternVideoTrack
    from sfu.aiortc_hooks import GUARD
    from tests.media.test_forwarding import video_tracks
    from videoconf.app import SFU

    publisher = await meeting.participant(meeting.host)
    viewer = await meeting.participant(meeting.people[0])
    await publisher.publish([(PatternVideoTrack(160, 120, fps=15), "camera")])
    await until(lambda: video_tracks(viewer) and video_tracks(viewer)[0].verifier.frames_verified >= 10, timeout=20)
    ports = sfu_media_ports(publisher) | sfu_media_ports(viewer)
    assert len(ports) >= 2, ports
    before = dict(GUARD.dropped)
    attack = [b"", b"\x05garbage", b"\x16" + os.urandom(100), b"\x80" + os.urandom(3000), b"\x90" + os.urandom(200)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        for port in ports:
            for datagram in attack:
                attacker.sendto(datagram, ("127.0.0.1", port))
    dropped = lambda: {k: v - before.get(k, 0) for k, v in GUARD.dropped.items() if v - before.get(k, 0)}  # noqa: E731
    await until(lambda: sum(dropped().values()) >= len(ports) * len(attack), timeout=10)
    assert set(dropped()) >= {"empty", "unknown_kind", "unchecked_source"}, dropped()
    verified = video_tracks(viewer)[0].verifier.frames_verified
    await until(lambda: video_tracks(viewer)[0].verifier.frames_verified >= verified + 15, timeout=10)
    (room,) = meeting.api.app[SFU].rooms.values()
    assert set(room.participants) == {publisher.identity, viewer.identity}
    assert not publisher.errors and not viewer.errors
    _, metrics = await meeting.api.call("GET", "/metrics", expect=200)
    assert b'videoconf_sfu_datagrams_dropped_total{reason="empty"}' in metrics


async def test_a_congested_subscriber_does_not_slow_the_others(meeting: Meeting) -> None:
    """One viewer stops reading its media socket (a congested or hung path): the other viewer
    keeps the full frame rate and nobody's packets wait for the stalled one."""
    from clients.sdk.media import PatternVideoTrack
    from sfu.aiortc_client import stop_receiving
    from tests.media.test_forwarding import video_tracks

    publisher = await meeting.participant(meeting.host)
    steady = await meeting.participant(meeting.people[0])
    stalled = await meeting.participant(meeting.people[1])
    await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
    for viewer in (steady, stalled):
        await until(lambda v=viewer: video_tracks(v) and video_tracks(v)[0].verifier.frames_verified >= 10, timeout=20)
    assert stop_receiving(stalled.subscriber) >= 1
    loop = asyncio.get_running_loop()
    started, verified = loop.time(), video_tracks(steady)[0].verifier.frames_verified
    await until(lambda: video_tracks(steady)[0].verifier.frames_verified >= verified + 45, timeout=6)
    assert loop.time() - started < 4.5  # 45 frames at 15 fps: about 3 s
    report = video_tracks(steady)[0].verifier.report()
    assert report["frames_corrupt"] == 0, report


async def real_offer() -> str:
    """A publisher's offer from aiortc: one audio m-section, with ICE and DTLS."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from clients.sdk.media import ToneAudioTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def with_sections(offer: str, count: int) -> str:
    """``count`` small audio m-sections (mids 0..count-1) sharing the offer's ICE and DTLS
    parameters at session level: 1,000 of them fit in one signaling frame."""
    head, section = offer.split("m=audio", 1)
    shared = [line for line in section.splitlines() if line.startswith(("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"))]
    head = [line for line in head.splitlines() if line and not line.startswith("a=group:BUNDLE")]
    lines = head + shared + [f"a=group:BUNDLE {' '.join(map(str, range(count)))}"]
    for mid in range(count):
        lines += [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=mid:{mid}", "a=sendonly", "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
        ]
    return "\r\n".join(lines) + "\r\n"


async def test_oversized_and_broken_descriptions_are_refused_quickly(meeting: Meeting) -> None:
    """An offer of 1,000 m-sections, and the descriptions and candidates aiortc asserts on, get
    an error frame at once; no track is published, and the node's loop never stalls (another
    participant's pings keep answering)."""
    from tests.media.test_signaling import raw_socket, receive
    from videoconf.app import SFU

    bystander = await meeting.participant(meeting.people[0])
    http, ws = await raw_socket(meeting)
    offer = await real_offer()
    try:
        await ws.send_json({"type": "join", "protocol": PROTOCOL_VERSION, "token": await meeting.token(meeting.host)})
        await receive(ws, "joined")
        attacks = [
            ({"type": "publish", "sdp": with_sections(offer, 1000), "tracks": []}, "invalid_sdp"),
            ({"type": "publish", "sdp": "v=0\r\n...a=candidate:x\r\n", "tracks": []}, "invalid_sdp"),
            ({"type": "publish", "sdp": "v=0\n\nm=audio 9 x 1", "tracks": []}, "invalid_sdp"),
            ({"type": "publish", "sdp": offer + "a=candidate:1 1 udp 1 127.0.0.1 9 typ host " + "x" * 2000 + "\r\n", "tracks": []}, "invalid_sdp"),
        ]
        loop = asyncio.get_running_loop()
        for message, code in attacks:
            started = loop.time()
            await ws.send_json(message)
            pong = asyncio.ensure_future(bystander.ping(f"p{started}"))
            error = await receive(ws, "error")
            assert error["code"] == code, (message["sdp"][:60], error)
            await asyncio.wait_for(pong, 1.0)
            assert loop.time() - started < 1.0
        await ws.send_json({"type": "publish", "sdp": offer, "tracks": []})
        await receive(ws, "publish-answer")  # a good offer still works on the same connection
        for candidate in ("candidate:" + "x" * 1900, "candidate:x", "candidate:1 1 udp 1 127.0.0.1 9 typ host " + "y" * 900):
            await ws.send_json({"type": "ice-candidate", "target": "publisher", "candidate": candidate, "sdp_mid": "0"})
            assert (await receive(ws, "error"))["code"] == "invalid_candidate"
        await ws.send_json({"type": "ping", "id": "alive"})
        assert (await receive(ws, "pong"))["id"] == "alive"
        (room,) = meeting.api.app[SFU].rooms.values()
        assert len(room.participants[meeting.host["user"]["id"]].uptracks) == 1
    finally:
        await ws.close()
        await http.close()
