"""The Python participant SDK: joins a meeting's SFU with a room token, publishes tracks,
receives everyone else's, chats, and reports what it received.

    participant = Participant(signaling_url, token)
    await participant.connect()
    await participant.publish([(PatternVideoTrack(), "camera"), (ToneAudioTrack(), "microphone")])
    ...
    print(participant.report())
    await participant.close()

Every remote track is consumed as it arrives: video frames go through a ``FrameVerifier`` (which
checks the pattern of ``PatternVideoTrack`` publishers), audio frames are kept (bounded) for a
tone check.  ICE servers are always explicit (an empty list by default), so the SDK never
contacts a public STUN server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from clients.sdk.media import FrameVerifier, tone_strength
from sfu.aiortc_hooks import cname_of, layer_sender, start_layer_sender
from sfu.sdp import offer_ssrc_simulcast
from signaling.protocol import PROTOCOL_VERSION

log = logging.getLogger(__name__)

AUDIO_KEEP = 500  # audio frames kept per track for analysis (10 s)


class SignalingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class RemoteTrack:
    track_id: str
    participant: str
    kind: str
    source: str
    track: MediaStreamTrack | None = None
    verifier: FrameVerifier | None = None
    audio: deque[Any] = field(default_factory=lambda: deque(maxlen=AUDIO_KEEP))
    frames: int = 0
    ended: bool = False
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)  # decoded frames per (width, height)
    last_size: tuple[int, int] | None = None
    forwarding: dict[str, Any] | None = None  # the SFU's last track-forwarding message
    first_frame: asyncio.Event = field(default_factory=asyncio.Event)


class Participant:
    def __init__(
        self,
        signaling_url: str,
        token: str,
        *,
        ice_servers: list[RTCIceServer] | None = None,
        video_codec: str | None = None,
        relay_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signaling_url = signaling_url
        self.token = token
        self.ice_servers = list(ice_servers or [])
        self.relay_only = relay_only  # ICE through TURN relays only, as behind a strict firewall
        self.video_codec = video_codec
        self.clock = clock
        self.identity: str | None = None
        self.session_id: str | None = None
        self.resume_token: str | None = None
        self.last_seq = 0
        self.joined: dict[str, Any] | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.history: list[dict[str, Any]] = []
        self.chat_messages: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.remote: dict[str, RemoteTrack] = {}
        self.published: dict[str, MediaStreamTrack] = {}
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self._mid_tracks: dict[str, str] = {}
        self._incoming_tap: Callable[[RTCPeerConnection], None] | None = None
        self._layer_senders: dict[str, list[RTCRtpSender]] = {}
        self.active_speakers: dict[str, Any] | None = None
        self._requests = 0
        self._consumed: set[int] = set()
        self.closed = False

    # Connection --------------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.signaling_url, heartbeat=15.0, max_msg_size=4 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read(self._ws), name="sdk-signaling-reader")

    async def connect(self, timeout: float = 15.0) -> dict[str, Any]:
        await self._open()
        await self.send({"type": "join", "protocol": PROTOCOL_VERSION, "token": self.token})
        joined = await self.wait_for("joined", timeout=timeout)
        self.joined = joined
        self.identity = joined["participant"]["identity"]
        self.session_id = joined["session_id"]
        self.resume_token = joined["resume_token"]
        for info in joined["tracks"]:
            self._remember(info)
        return joined

    async def drop_connection(self) -> None:
        """Lose the WebSocket without saying goodbye (tests of resume)."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def resume(self, timeout: float = 15.0) -> dict[str, Any]:
        await self._open()
        await self.send({
            "type": "resume", "protocol": PROTOCOL_VERSION, "session_id": self.session_id,
            "resume_token": self.resume_token, "last_seq": self.last_seq,
        })
        return await self.wait_for("resumed", timeout=timeout)

    async def send(self, message: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("the signaling connection is closed")
        await self._ws.send_str(json.dumps(message))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            seq = message.get("seq")
            if isinstance(seq, int):
                if seq <= self.last_seq:
                    continue  # replayed twice
                self.last_seq = seq
            await self._dispatch(message)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.history.append(message)
        if kind == "subscriber-offer":
            self._spawn(self._answer(message))
        elif kind == "track-published":
            self._remember(message["track"])
        elif kind == "track-unpublished":
            remote = self.remote.get(message["track_id"])
            if remote is not None:
                remote.ended = True
                self._spawn(self._stop_receiving(message["track_id"]))
        elif kind == "chat":
            self.chat_messages.append(message["message"])
        elif kind == "set-layers":
            self._set_layers(message)
        elif kind == "track-forwarding":
            remote = self.remote.get(message["track_id"])
            if remote is not None:
                remote.forwarding = message
        elif kind == "active-speakers":
            self.active_speakers = message
        elif kind == "error":
            self.errors.append(message)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(message):
                self._consumed.add(len(self.history) - 1)
                future.set_result(message)
                break
        await self.events.put(message)

    async def wait_for(
        self,
        kind: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 15.0,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """The oldest server message of this type (matching ``predicate``) not yet returned by
        an earlier call, waiting for it if it has not come.  An ``error`` answering
        ``join``/``resume``, or carrying ``request_id``, raises ``SignalingError``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()

        def matches(message: dict[str, Any]) -> bool:
            if message.get("type") == "error" and (
                kind in ("joined", "resumed") or (request_id is not None and message.get("id") == request_id)
            ):
                return True
            return message.get("type") == kind and (predicate is None or predicate(message))

        for index, seen in enumerate(self.history):
            if index not in self._consumed and matches(seen):
                self._consumed.add(index)
                future.set_result(seen)
                break
        entry = (matches, future)
        self._waiters.append(entry)
        try:
            message = await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(entry)
        if message.get("type") == "error" and kind != "error":
            raise SignalingError(message["code"], message["message"])
        return message

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SDK task failed", exc_info=task.exception())

    def _peer_connection(self) -> RTCPeerConnection:
        # max-bundle, as the SFU's side: under aiortc's default (balanced) a second m-section of
        # one kind in a first offer shares the first one's transport, which is then stopped as
        # bundled into another kind's m-section, and its packets reach the wrong receiver.
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        return RTCPeerConnection(RTCConfiguration(
            iceServers=list(self.ice_servers), iceTransportPolicy=policy, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        ))

    # Publishing --------------------------------------------------------------------------------

    async def publish(self, tracks: list[tuple[Any, str]], timeout: float = 20.0) -> list[str]:
        """Publish (track, source) pairs; returns their track ids on the SFU.  A track may be a
        :class:`SimulcastPattern` (or anything with ``kind == "video"`` and ``tracks``, lowest
        layer first): its layers go out as SSRC-group simulcast on one m-section, the top layer
        on the transceiver's own sender and the others on senders of their own."""
        if self.publisher is None:
            self.publisher = self._peer_connection()
        pc = self.publisher
        added = []
        for track, source in tracks:
            layers = list(getattr(track, "tracks", []) or [])
            transceiver = pc.addTransceiver(layers[-1] if layers else track, direction="sendonly")
            if track.kind == "video" and self.video_codec:
                prefs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name.lower() in (self.video_codec.lower(), "rtx")]
                transceiver.setCodecPreferences(prefs)
            extra = [layer_sender(transceiver.sender, layer) for layer in layers[:-1]]
            added.append((transceiver, source, track, extra))
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        sdp = pc.localDescription.sdp
        for transceiver, _, _, extra in added:
            if extra:
                senders = [*extra, transceiver.sender]
                sdp = offer_ssrc_simulcast(sdp, transceiver.mid, [(s._ssrc, s._rtx_ssrc) for s in senders], cname_of(pc))
        meta = [{"mid": t.mid, "kind": t.kind, "source": source} for t, source, _, _ in added]
        self._requests += 1
        request_id = f"publish-{self._requests}"
        await self.send({"type": "publish", "id": request_id, "sdp": sdp, "tracks": meta})
        answer = await self.wait_for("publish-answer", timeout=timeout, request_id=request_id)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        by_mid = {t["mid"]: t["track_id"] for t in answer["tracks"]}
        ids = []
        for transceiver, _, track, extra in added:
            track_id = by_mid.get(transceiver.mid)
            if track_id is None:
                continue
            ids.append(track_id)
            self.published[track_id] = track
            for sender in extra:
                await start_layer_sender(pc, transceiver, sender)
            self._layer_senders[track_id] = extra
        return ids

    def _set_layers(self, message: dict[str, Any]) -> None:
        """Dynacast: pause the encodings no subscriber takes, resume the ones wanted again."""
        source = self.published.get(message["track_id"])
        layers = list(getattr(source, "tracks", []) or [])
        if not layers:
            return
        for info in message["layers"]:
            match = [t for t in layers if (t.width, t.height) == (info.get("width"), info.get("height"))]
            if not match and 0 <= info["index"] < len(layers):
                match = [layers[info["index"]]]
            for layer in match:
                if info["active"]:
                    layer.resume()
                else:
                    layer.pause()

    async def unpublish(self, track_id: str) -> None:
        await self.send({"type": "unpublish", "track_id": track_id})

    async def mute(self, track_id: str, muted: bool) -> None:
        await self.send({"type": "mute", "track_id": track_id, "muted": muted})

    async def track_settings(
        self, track_id: str, quality: str | None = None, width: int | None = None, height: int | None = None
    ) -> None:
        """Ask for a remote video track at the size it is shown (or a quality, or "off")."""
        message: dict[str, Any] = {"type": "track-settings", "track_id": track_id}
        if quality is not None:
            message["quality"] = quality
        if width is not None:
            message["width"] = width
        if height is not None:
            message["height"] = height
        await self.send(message)

    async def pin(self, identities: list[str]) -> None:
        await self.send({"type": "pin", "identities": identities})

    # Subscribing -------------------------------------------------------------------------------

    def _remember(self, info: dict[str, Any]) -> RemoteTrack:
        remote = self.remote.get(info["track_id"])
        if remote is None:
            remote = self.remote[info["track_id"]] = RemoteTrack(
                info["track_id"], info["participant"], info["kind"], info["source"]
            )
        return remote

    def tap_incoming(self, tap: Callable[[RTCPeerConnection], None]) -> None:
        """Run ``tap`` on the subscriber connection after every negotiation (e.g. to inject loss)."""
        self._incoming_tap = tap
        if self.subscriber is not None:
            tap(self.subscriber)

    async def _answer(self, offer: dict[str, Any]) -> None:
        if self.subscriber is None:
            self.subscriber = self._peer_connection()
            self.subscriber.on("track", self._on_track)
        pc = self.subscriber
        self._mid_tracks.update(offer["tracks"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        if self._incoming_tap is not None:
            self._incoming_tap(pc)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        await self.send({"type": "subscriber-answer", "sdp": pc.localDescription.sdp})

    async def _stop_receiving(self, track_id: str) -> None:
        """The track is gone: end its receiver (decoder thread, RTCP loop) at once."""
        if self.subscriber is None:
            return
        for transceiver in self.subscriber.getTransceivers():
            if transceiver.mid is not None and self._mid_tracks.get(transceiver.mid) == track_id:
                await transceiver.receiver.stop()

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.subscriber is not None
        mid = next((t.mid for t in self.subscriber.getTransceivers() if t.receiver.track is track), None)
        track_id = self._mid_tracks.get(mid or "")
        if track_id is None:
            log.warning("track on unknown mid %s", mid)
            return
        remote = self.remote.get(track_id) or self._remember(
            {"track_id": track_id, "participant": "?", "kind": track.kind, "source": "?"}
        )
        remote.track = track
        if track.kind == "video":
            remote.verifier = FrameVerifier(clock=self.clock)
        self._spawn(self._consume(remote, track))

    async def _consume(self, remote: RemoteTrack, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                remote.ended = True
                return
            remote.frames += 1
            if remote.kind == "video":
                size = (frame.width, frame.height)
                remote.sizes[size] = remote.sizes.get(size, 0) + 1
                remote.last_size = size
            if remote.verifier is not None:
                remote.verifier.add(frame)
            else:
                remote.audio.append(frame)
            remote.first_frame.set()

    # Meeting features --------------------------------------------------------------------------

    async def chat(self, text: str, to: str | None = None) -> None:
        await self.send({"type": "chat", "text": text, "to": to})

    async def raise_hand(self, raised: bool = True) -> None:
        await self.send({"type": "raise-hand", "raised": raised})

    async def ping(self, request_id: str = "p") -> dict[str, Any]:
        await self.send({"type": "ping", "id": request_id})
        return await self.wait_for("pong", lambda m: m.get("id") == request_id)

    # Reporting ---------------------------------------------------------------------------------

    async def report(self, tone_frequency: float = 440.0) -> dict[str, Any]:
        """Per remote track: frames decoded and verified, frame rate, freezes, packets lost."""
        lost: dict[str, int] = {}
        if self.subscriber is not None:
            mids = {t.receiver: t.mid for t in self.subscriber.getTransceivers()}
            for receiver, mid in mids.items():
                stats = await receiver.getStats()
                for stat in stats.values():
                    if getattr(stat, "type", "") == "inbound-rtp":
                        lost[self._mid_tracks.get(mid or "", "?")] = stat.packetsLost
        tracks = []
        for remote in self.remote.values():
            entry: dict[str, Any] = {
                "track_id": remote.track_id,
                "participant": remote.participant,
                "kind": remote.kind,
                "source": remote.source,
                "frames": remote.frames,
                "packets_lost": lost.get(remote.track_id),
            }
            if remote.sizes:
                entry["sizes"] = {f"{w}x{h}": n for (w, h), n in sorted(remote.sizes.items())}
            if remote.verifier is not None:
                entry.update(remote.verifier.report())
            elif remote.audio:
                entry["tone_strength"] = round(tone_strength(list(remote.audio), tone_frequency), 3)
            tracks.append(entry)
        return {"identity": self.identity, "tracks": tracks, "errors": self.errors}

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send({"type": "leave"})
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        for senders in self._layer_senders.values():
            for sender in senders:
                await sender.stop()
        self._layer_senders.clear()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for track in self.published.values():
            if track is not None:
                track.stop()
        if self._http is not None:
            await self._http.close()
