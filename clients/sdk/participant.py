"""The Python participant SDK: joins a meeting's SFU with a room token, publishes tracks,
receives everyone else's, chats, and reports what it received.

    participant = Participant(signaling_url, token)
    await participant.connect()
    await participant.publish([(PatternVideoTrack(), "camera"), (ToneAudioTrack(), "microphone")])
    ...
    print(participant.report())
    await participant.close()

Reconnecting: give a ``token_provider`` (an async function returning a fresh room token, e.g. from
``POST /api/meetings/{id}/join``, or the pair (``signaling_url``, ``token``) of that answer when the
node may change, as in a cluster) and a lost signaling connection is repaired by itself.  First
the session is resumed (the node still holds it for its resume window, media never stopped);
when the node no longer knows the session (it restarted, or the window passed) the participant
joins again with a new token, on new peer connections, and publishes the same tracks again (new
track ids; mutes are kept).  A node that is draining asks everyone to join again (``reconnect``):
the participant does so through the token provider, on the node it names.  ``state`` says where it is (``connected``, ``reconnecting``,
``failed`` after ``reconnect_timeout`` seconds of trying, ``ended`` when the server ended the
session on purpose: removed, the meeting ended, close code 1000; ``disconnected`` without
reconnection; ``closed``); ``resumes`` and ``rejoins`` count the repairs.

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
from collections.abc import Awaitable, Callable
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
from sfu.aiortc_client import LossStats as LossStats  # re-exported: bots inject loss with the SDK alone
from sfu.aiortc_client import cname_of, layer_sender, sender_ssrcs, start_layer_sender
from sfu.aiortc_client import drop_incoming_rtp as drop_incoming_rtp
from sfu.aiortc_client import drop_outgoing_rtp as drop_outgoing_rtp
from sfu.sdp import offer_ssrc_simulcast
from sfu.tasks import TaskSet
from signaling.protocol import MAX_TRACK_SETTINGS, PROTOCOL_VERSION

log = logging.getLogger(__name__)

AUDIO_KEEP = 500  # audio frames kept per track for analysis (10 s)
REACTIONS_KEEP = 200  # reactions received, kept (the newest)
UNREACHABLE_BEFORE_REJOIN = 3  # resume attempts that cannot reach the node before joining anew
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 2.0  # seconds between reconnection attempts
FINAL_MESSAGES = ("removed", "meeting-ended")  # after these the session is over for good


class SignalingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Feed(MediaStreamTrack):
    """What a sender reads: frames of the application's track, which outlives the sender.  aiortc
    stops the track a sender reads when that sender stops, and a connection that dies stops its
    senders; a participant that joins again must publish the same tracks on new connections."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self) -> Any:
        if self.readyState != "live" or self.source.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


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
    refused_sizes: dict[tuple[int, int], int] = field(default_factory=dict)  # frames whose pattern did not read back
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
        token_provider: Callable[[], Awaitable[str | tuple[str, str]]] | None = None,
        reconnect: bool | None = None,
        reconnect_timeout: float = 60.0,
    ) -> None:
        self.signaling_url = signaling_url
        self.token = token
        self.token_provider = token_provider
        self.reconnect = token_provider is not None if reconnect is None else reconnect
        self.reconnect_timeout = reconnect_timeout
        self.state = "new"
        self.resumes = 0
        self.rejoins = 0
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
        self.data_messages: list[dict[str, Any]] = []  # ``data`` from the server: {sender, topic, payload}
        self.grants: dict[str, bool] | None = None  # as the server last changed them (``grants-updated``)
        self.metadata: dict[str, str] = {}  # participants' metadata by identity (this one's too)
        self.reactions: deque[dict[str, Any]] = deque(maxlen=REACTIONS_KEEP)  # {"participant", "emoji"}
        self.errors: list[dict[str, Any]] = []
        self.remote: dict[str, RemoteTrack] = {}
        self.published: dict[str, MediaStreamTrack] = {}
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks = TaskSet(log, "SDK task failed", expected=self._cut_short)
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self._mid_tracks: dict[str, str] = {}
        self._incoming_tap: Callable[[RTCPeerConnection], None] | None = None
        self._outgoing_tap: Callable[[RTCPeerConnection], None] | None = None
        self._layer_senders: dict[str, list[RTCRtpSender]] = {}
        self.active_speakers: dict[str, Any] | None = None
        self._requests = 0
        self._consumed: set[int] = set()
        self.closed = False
        self._publications: dict[str, tuple[Any, str]] = {}  # track id -> (track, source), to republish
        self._muted: set[str] = set()
        self._final = False  # the server ended the session on purpose
        self._dropping = False
        self._reconnector: asyncio.Task[None] | None = None

    # Connection --------------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.signaling_url, heartbeat=15.0, max_msg_size=4 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read(self._ws), name="sdk-signaling-reader")

    async def connect(self, timeout: float = 15.0) -> dict[str, Any]:
        await self._open()
        since = len(self.history)
        await self.send({"type": "join", "protocol": PROTOCOL_VERSION, "token": self.token})
        joined = await self.wait_for("joined", timeout=timeout, since=since)
        self.state = "connected"
        self.joined = joined
        self.identity = joined["participant"]["identity"]
        self.session_id = joined["session_id"]
        self.resume_token = joined["resume_token"]
        for info in joined["tracks"]:
            self._remember(info)
        return joined

    async def drop_connection(self) -> None:
        """Lose the WebSocket without saying goodbye (tests of resume; no automatic repair)."""
        self._dropping = True
        try:
            if self._ws is not None:
                await self._ws.close()
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
        finally:
            self._dropping = False

    async def resume(self, timeout: float = 15.0) -> dict[str, Any]:
        await self._open()
        since = len(self.history)
        await self.send({
            "type": "resume", "protocol": PROTOCOL_VERSION, "session_id": self.session_id,
            "resume_token": self.resume_token, "last_seq": self.last_seq,
        })
        resumed = await self.wait_for("resumed", timeout=timeout, since=since)
        self.state = "connected"
        return resumed

    # Reconnecting ------------------------------------------------------------------------------

    def _lost(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The signaling connection ``ws`` ended: repair it unless that was meant."""
        if ws is not self._ws or self.closed or self._dropping:
            return
        if self._final or ws.close_code == aiohttp.WSCloseCode.OK:  # the server ended the session on purpose
            self.state = "ended"
            return
        if not self.reconnect:
            self.state = "disconnected"
            return
        if self._reconnector is None or self._reconnector.done():
            self.state = "reconnecting"
            self._reconnector = asyncio.create_task(self._reconnect(), name="sdk-reconnect")

    def _move(self) -> None:
        """The node asks everyone to join again elsewhere (it is draining): a new join through
        the token provider, which names the node to go to, with the same tracks."""
        if self.closed or self.token_provider is None:
            return
        self.session_id = None  # not to be resumed: joined anew
        if self._reconnector is None or self._reconnector.done():
            self.state = "reconnecting"
            self._reconnector = asyncio.create_task(self._reconnect(), name="sdk-reconnect")

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        delay = RECONNECT_FIRST
        session_lost = self.session_id is None
        unreachable = 0
        while not self.closed:
            try:
                if not session_lost:
                    try:
                        await self.resume(timeout=5.0)
                        self.resumes += 1
                        log.info("signaling resumed (session %s)", self.session_id)
                        return
                    except SignalingError as exc:
                        if exc.code != "resume_failed":
                            raise
                        session_lost = True  # the node no longer knows this session: join again
                    except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
                        unreachable += 1
                        # A node that stays out of reach may be gone (in a cluster, the API then
                        # names another): join again through the token provider.
                        if unreachable < UNREACHABLE_BEFORE_REJOIN or self.token_provider is None:
                            raise
                        session_lost = True
                await self._rejoin()
                self.rejoins += 1
                log.info("joined again as %s after the session was lost", self.identity)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable node, no token yet, a join refused for now
                log.info("reconnection attempt failed: %s: %s", type(exc).__name__, exc)
            await self._close_signaling()
            if loop.time() + delay > deadline:
                self.state = "failed"
                log.warning("gave up reconnecting after %.0f s", self.reconnect_timeout)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _close_signaling(self) -> None:
        ws, reader = self._ws, self._reader
        if ws is not None and not ws.closed:
            self._dropping = True
            try:
                await ws.close()
            finally:
                self._dropping = False
        if reader is not None and reader is not asyncio.current_task():
            await asyncio.gather(reader, return_exceptions=True)

    async def _rejoin(self) -> None:
        """A new session: fresh token, new peer connections, the same tracks published again."""
        if self.token_provider is not None:
            issued = await self.token_provider()
            if isinstance(issued, tuple):  # (signaling URL, token): the node may have changed
                self.signaling_url, self.token = issued
            else:
                self.token = issued
        await self._close_signaling()
        await self._reset_media()
        self.session_id = self.resume_token = None
        self.last_seq = 0  # a new session numbers its messages from 1
        await self.connect()
        publications, self._publications = list(self._publications.items()), {}
        if publications:
            try:
                ids = await self.publish([pair for _, pair in publications])
            except BaseException:
                self._publications = dict(publications)  # the next attempt publishes them
                raise
            muted, self._muted = self._muted, set()
            for (old_id, _), new_id in zip(publications, ids, strict=False):
                if old_id in muted:
                    await self.mute(new_id, True)

    async def _reset_media(self) -> None:
        """Drop the dead session's peer connections and remote tracks (not the local tracks)."""
        await self._tasks.cancel_and_wait()  # answers to the old session's offers, old tracks' readers
        await self._close_connections()
        self.publisher = self.subscriber = None
        for remote in self.remote.values():
            remote.ended = True
        self.remote = {}
        self._mid_tracks.clear()
        self.published = {}
        for track, _ in self._publications.values():
            for layer in getattr(track, "tracks", []) or []:
                layer.resume()  # the new session's dynacast decides again

    async def wait_connected(self, timeout: float = 30.0) -> None:
        """Wait until the participant is connected (after a repair); raise if it gave up."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.state != "connected":
            if self.state in ("failed", "closed") or asyncio.get_running_loop().time() > deadline:
                raise ConnectionError(f"not connected: {self.state}")
            await asyncio.sleep(0.05)

    async def send(self, message: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("the signaling connection is closed")
        await self._ws.send_str(json.dumps(message))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
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
        finally:
            self._lost(ws)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.history.append(message)
        if kind == "subscriber-offer":
            self._tasks.spawn(self._answer(message))
        elif kind == "track-published":
            self._remember(message["track"])
        elif kind == "joined":  # also when a host admits this participant from the waiting room
            for info in message.get("tracks") or []:
                self._remember(info)
        elif kind == "track-unpublished":
            remote = self.remote.get(message["track_id"])
            if remote is not None:
                remote.ended = True
                self._tasks.spawn(self._stop_receiving(message["track_id"]))
        elif kind == "chat":
            self.chat_messages.append(message["message"])
        elif kind == "data":
            self.data_messages.append({k: message.get(k) for k in ("sender", "topic", "payload")})
        elif kind == "grants-updated":
            self._grants_updated(message["grants"])
        elif kind in ("participant-updated", "participant-joined"):
            info = message["participant"]
            self.metadata[info["identity"]] = info.get("metadata", "")
        elif kind == "reaction":
            self.reactions.append({"participant": message["participant"], "emoji": message["emoji"]})
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
        elif kind in FINAL_MESSAGES:
            self._final = True
        elif kind == "reconnect":
            self._move()
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
        since: int = 0,
    ) -> dict[str, Any]:
        """The oldest server message of this type (matching ``predicate``) not yet returned by
        an earlier call, waiting for it if it has not come.  An ``error`` answering
        ``join``/``resume``, or carrying ``request_id``, raises ``SignalingError``.  ``since``:
        only messages from that index of ``history`` on (those after a request was sent)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()

        def matches(message: dict[str, Any]) -> bool:
            if message.get("type") == "error" and (
                kind in ("joined", "resumed") or (request_id is not None and message.get("id") == request_id)
            ):
                return True
            return message.get("type") == kind and (predicate is None or predicate(message))

        for index in range(since, len(self.history)):
            seen = self.history[index]
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

    def _cut_short(self, error: BaseException) -> bool:
        """An answer cut short by leaving: no failure to log."""
        return self.closed and isinstance(error, ConnectionError)

    async def _close_connections(self) -> None:
        """Stop the simulcast layers' senders and close both peer connections."""
        for senders in self._layer_senders.values():
            for sender in senders:
                await sender.stop()
        self._layer_senders.clear()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()

    def _peer_connection(self) -> RTCPeerConnection:
        # max-bundle, as the SFU's side: under aiortc's default (balanced) a second m-section of
        # one kind in a first offer shares the first one's transport, which is then stopped as
        # bundled into another kind's m-section, and its packets reach the wrong receiver.
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        return RTCPeerConnection(RTCConfiguration(
            iceServers=list(self.ice_servers), iceTransportPolicy=policy, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        ))

    # Publishing --------------------------------------------------------------------------------

    def _grants_updated(self, grants: dict[str, bool]) -> None:
        """The server changed what this participant may do; without ``can_publish`` it has
        unpublished this participant's tracks, which are then not published again on a rejoin."""
        self.grants = dict(grants)
        if not grants.get("can_publish"):
            self.published.clear()
            self._publications.clear()

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
            transceiver = pc.addTransceiver(_Feed(layers[-1] if layers else track), direction="sendonly")
            if track.kind == "video" and self.video_codec:
                prefs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name.lower() in (self.video_codec.lower(), "rtx")]
                transceiver.setCodecPreferences(prefs)
            extra = [layer_sender(transceiver.sender, _Feed(layer)) for layer in layers[:-1]]
            added.append((transceiver, source, track, extra))
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        sdp = pc.localDescription.sdp
        for transceiver, _, _, extra in added:
            if extra:
                senders = [*extra, transceiver.sender]
                sdp = offer_ssrc_simulcast(sdp, transceiver.mid, [sender_ssrcs(s) for s in senders], cname_of(pc))
        meta = [{"mid": t.mid, "kind": t.kind, "source": source} for t, source, _, _ in added]
        self._requests += 1
        request_id = f"publish-{self._requests}"
        await self.send({"type": "publish", "id": request_id, "sdp": sdp, "tracks": meta})
        answer = await self.wait_for("publish-answer", timeout=timeout, request_id=request_id)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        if self._outgoing_tap is not None:
            self._outgoing_tap(pc)
        by_mid = {t["mid"]: t["track_id"] for t in answer["tracks"]}
        ids = []
        for transceiver, _, track, extra in added:
            track_id = by_mid.get(transceiver.mid)
            if track_id is None:
                continue
            ids.append(track_id)
            self.published[track_id] = track
            self._publications[track_id] = (track, source)
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
        self._publications.pop(track_id, None)
        self._muted.discard(track_id)

    async def mute(self, track_id: str, muted: bool) -> None:
        await self.send({"type": "mute", "track_id": track_id, "muted": muted})
        if muted:
            self._muted.add(track_id)
        else:
            self._muted.discard(track_id)

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

    async def track_settings_many(self, settings: list[dict[str, Any]]) -> None:
        """Settings for many remote video tracks at once, each a dict with ``track_id`` and any of
        ``quality``, ``width``, ``height`` (None leaves a field out): batched ``track-settings``,
        128 tracks a message, where one message per track would run into the flood limit."""
        entries = [{key: value for key, value in entry.items() if value is not None} for entry in settings]
        for start in range(0, len(entries), MAX_TRACK_SETTINGS):
            await self.send({"type": "track-settings", "tracks": entries[start:start + MAX_TRACK_SETTINGS]})

    async def pin(self, identities: list[str]) -> None:
        await self.send({"type": "pin", "identities": identities})

    # Subscribing -------------------------------------------------------------------------------

    def _remember(self, info: dict[str, Any]) -> RemoteTrack:
        remote = self.remote.get(info["track_id"])
        if remote is None:
            remote = self.remote[info["track_id"]] = RemoteTrack(
                info["track_id"], info["participant"], info["kind"], info["source"]
            )
        elif remote.participant == "?":  # its media came before word of it
            remote.participant, remote.source = info["participant"], info["source"]
        return remote

    def tap_incoming(self, tap: Callable[[RTCPeerConnection], None]) -> None:
        """Run ``tap`` on the subscriber connection after every negotiation (e.g. to inject loss)."""
        self._incoming_tap = tap
        if self.subscriber is not None:
            tap(self.subscriber)

    def tap_outgoing(self, tap: Callable[[RTCPeerConnection], None]) -> None:
        """Run ``tap`` on the publisher connection after every negotiation (e.g. to inject loss
        on the uplink with ``sfu.aiortc_client.drop_outgoing_rtp``)."""
        self._outgoing_tap = tap
        if self.publisher is not None:
            tap(self.publisher)

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
        self._tasks.spawn(self._consume(remote, track))

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
                if remote.verifier.add(frame) is None:
                    size = (frame.width, frame.height)
                    remote.refused_sizes[size] = remote.refused_sizes.get(size, 0) + 1
            else:
                remote.audio.append(frame)
            remote.first_frame.set()

    # Meeting features --------------------------------------------------------------------------

    async def chat(self, text: str, to: str | None = None) -> None:
        await self.send({"type": "chat", "text": text, "to": to})

    async def raise_hand(self, raised: bool = True) -> None:
        await self.send({"type": "raise-hand", "raised": raised})

    async def react(self, emoji: str) -> None:
        """A reaction to everyone in the meeting (this participant too), one of
        ``signaling.protocol.REACTIONS``; the server refuses others (``invalid_message``) and more
        than a burst of 5, then 2 a second (``rate_limited``).  Received ones go to ``reactions``."""
        await self.send({"type": "reaction", "emoji": emoji})

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
            if remote.refused_sizes:  # where the corrupt frames were: a blurred small layer, or not
                entry["corrupt_sizes"] = {f"{w}x{h}": n for (w, h), n in sorted(remote.refused_sizes.items())}
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
        self.state = "closed"
        if self._reconnector is not None and not self._reconnector.done():
            self._reconnector.cancel()
            await asyncio.gather(self._reconnector, return_exceptions=True)
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send({"type": "leave"})
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._close_connections()
        await self._tasks.cancel_and_wait()
        for track in self.published.values():
            if track is not None:
                track.stop()
        if self._http is not None:
            await self._http.close()
