"""One meeting over several nodes: the relay links between them, and the remote participants.

Every node that holds participants of a meeting runs its own ``Room`` for it.  Each says what it
holds (its participants, their tracks, and which layers of the others' tracks it wants) in a
``room_state``; the others mirror those participants as **remote participants**, whose tracks
(remote up-tracks) the local participants subscribe to as to any other.

Media between two nodes goes over one relay link per meeting and direction: a peer connection
(ICE, DTLS, SRTP) that the node where the tracks are published offers (a ``RelayFeed``, a hidden
subscriber in its room) and the node that wants them answers (a ``RelayLink``).  The feed sends
each layer of a track as a stream of its own, with the forwarder's rules; the receiving node
files each stream under its layer of the remote up-track and does its own layer selection for
its subscribers.  A layer flows only while the receiving node wants it (its subscribers and taps
such as the recorder, through its dynacast).  A remote track is never relayed again, so links
cannot loop.  Keyframe requests and NACKs travel hop by hop: a subscriber's NACK is answered
from its own node's cache, and what that misses goes to the next hop, whose cache answers it.

Nothing here talks to Redis: the caller carries states, offers and answers between nodes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sfu.aiortc_hooks import ParkedTrack, ReceiverTap, scheduled_reports
from sfu.forwarding import UpTrack
from sfu.interceptors import SenderReports
from sfu.room import MAX_METADATA, Participant, Room, capabilities_for
from sfu.sdp import SimulcastOffer, announce_address, normalize_h264

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_STATE_PARTICIPANTS = 10_000
MAX_TRACKS_PER_PARTICIPANT = 16
MAX_LAYERS = 4


# What one node says about its part of a meeting ---------------------------------------------


def codec_to_json(codec: RTCRtpCodecParameters | None) -> dict[str, Any] | None:
    if codec is None:
        return None
    return {
        "mimeType": codec.mimeType, "clockRate": codec.clockRate, "channels": codec.channels,
        "payloadType": codec.payloadType, "parameters": dict(codec.parameters),
    }


def codec_from_json(data: Any) -> RTCRtpCodecParameters | None:
    if not isinstance(data, dict):
        return None
    try:
        return RTCRtpCodecParameters(
            mimeType=str(data["mimeType"]), clockRate=int(data["clockRate"]),
            channels=None if data.get("channels") is None else int(data["channels"]),
            payloadType=int(data.get("payloadType") or 96), parameters=dict(data.get("parameters") or {}),
        )
    except (KeyError, TypeError, ValueError):
        return None


def wanted_layers(up: UpTrack) -> list[int]:
    """The layers (by position) of a remote track that this node wants relayed: an audio track
    or a plain video while anyone here takes it, a simulcast video's layers that dynacast keeps
    on here (so a layer is paused upstream only when nobody on any node wants it)."""
    consumers = bool(up.downtracks) or bool(up.taps)
    if not consumers:
        return []
    if up.kind == "audio":
        return [0]
    if not up.is_simulcast:
        layer = up.layers[0]
        wanted = any(d.forwarder.wants(layer) for d in up.downtracks) or any(t.wants(layer) for t in up.taps)
        return [0] if wanted else []
    return [layer.position for layer in up.layers if layer.active]


def room_state(room: Room, node_id: str) -> dict[str, Any]:
    """This node's part of the meeting: its own participants and their tracks, and what it
    wants of the others' (``wants``: track id -> layer positions)."""
    people = []
    wants: dict[str, list[int]] = {}
    for participant in room.participants.values():
        if participant.relay_for is not None:
            continue
        if participant.remote is not None:
            for up in participant.uptracks.values():
                layers = wanted_layers(up)
                if layers:
                    wants[up.track_id] = layers
            continue
        people.append({
            "identity": participant.identity, "name": participant.name, "role": participant.role,
            "hand_raised": participant.hand_raised, "hand_raised_at": participant.hand_raised_at,
            "hidden": participant.hidden, "waiting": participant.waiting, "metadata": participant.metadata,
            "tracks": [
                {
                    "track_id": up.track_id, "kind": up.kind, "source": up.source, "muted": up.muted,
                    "blocked": up.blocked, "codec": codec_to_json(up.codec), "layers": len(up.layers),
                }
                for up in participant.uptracks.values() if up.codec is not None
            ],
        })
    consumers = any(p.remote is None and p.relay_for is None and not p.waiting for p in room.participants.values())
    return {"type": "state", "node": node_id, "participants": people, "wants": wants, "link": consumers}


def parse_people(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The participants of a state from another node, with what is malformed left out."""
    people = state.get("participants")
    if not isinstance(people, list):
        return []
    result = []
    for person in people[:MAX_STATE_PARTICIPANTS]:
        if not isinstance(person, dict) or not isinstance(person.get("identity"), str):
            continue
        tracks = person.get("tracks") if isinstance(person.get("tracks"), list) else []
        result.append({**person, "tracks": [t for t in tracks[:MAX_TRACKS_PER_PARTICIPANT] if _track_ok(t)]})
    return result


def hand_raised_at(person: dict[str, Any], known: float | None, now: float) -> float | None:
    """When a participant of another node raised its hand, as its node says (that node's wall
    clock); a node that does not say (an older version) leaves the time this node first saw it
    up (``known``, else ``now``).  None while the hand is down."""
    if not person.get("hand_raised"):
        return None
    at = person.get("hand_raised_at")
    if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
        return float(at)
    return known if known is not None else now


def person_metadata(person: dict[str, Any]) -> str:
    """A participant's metadata as another node says, bounded as the server API bounds it."""
    value = person.get("metadata")
    return value[:MAX_METADATA] if isinstance(value, str) else ""


def _track_ok(track: Any) -> bool:
    return (
        isinstance(track, dict) and isinstance(track.get("track_id"), str) and track.get("kind") in ("audio", "video")
        and isinstance(track.get("layers"), int) and 1 <= track["layers"] <= MAX_LAYERS
        and codec_from_json(track.get("codec")) is not None
    )


def remote_track(info: dict[str, Any], owner: str, room: Room) -> UpTrack:
    """The up-track on this node of a track published on another (its layers fed by a link)."""
    layers = int(info["layers"])
    simulcast = SimulcastOffer("relay", rids=[f"relay{i}" for i in range(layers)]) if layers > 1 else None
    up = UpTrack(str(info["track_id"]), owner, str(info["kind"]), str(info.get("source") or "camera"), room.node.metrics, simulcast=simulcast)
    up.codec = codec_from_json(info["codec"])
    up.muted = bool(info.get("muted"))
    up.blocked = bool(info.get("blocked"))
    up.remote = True
    up.on_gap = room.node.wake
    now = room.node.clock()
    for layer in up.layers:
        layer.resumed_at = now  # to be had: the link brings it once it is wanted
    return up


# The node where tracks are published: a feed to another node -------------------------------


def feed_identity(node_id: str) -> str:
    return f"relay:{node_id}"


class RelayFeed(Participant):
    """A hidden subscriber in a room that takes every track published on this node, one stream
    per layer, and offers them to node ``node_id`` through ``send`` (answers come to ``answer``).
    Which layers flow is what that node wants (``set_wanted``), not this node's allocator."""

    def __init__(self, room: Room, node_id: str, send: Send) -> None:
        super().__init__(room, feed_identity(node_id), f"relay to {node_id}", "relay",
                         {"can_subscribe": True, "hidden": True}, self._notify)
        self.relay_for = node_id
        self.feed_id = secrets.token_hex(6)
        self.wanted: dict[str, set[int]] = {}
        self._send = send

    async def _notify(self, message: dict[str, Any]) -> None:
        if message.get("type") == "subscriber-offer":
            await self._send({
                "type": "offer", "to": self.relay_for, "feed": self.feed_id, "sdp": message["sdp"], "tracks": message["tracks"],
            })

    async def subscribe(self, up: UpTrack) -> None:
        if self.closed or up.remote or up.codec is None or f"{up.track_id}/0" in self._sub_transceivers:
            return  # a track that came over a link is never relayed again: links cannot loop
        if self.subscriber is None:
            self.subscriber = self._peer_connection()
        for layer in up.layers:
            transceiver = self.subscriber.addTransceiver(ParkedTrack(up.kind), direction="sendonly")
            transceiver.setCodecPreferences(capabilities_for(up.codec))
            scheduled_reports(transceiver.sender)
            key = f"{up.track_id}/{layer.position}"
            self._pending[key] = (up, transceiver)
            self._sub_transceivers[key] = transceiver
        self.renegotiate()

    async def unsubscribe(self, track_id: str) -> None:
        for key in [k for k in self._sub_transceivers if k.rpartition("/")[0] == track_id]:
            await super().unsubscribe(key)

    def set_wanted(self, wants: Any) -> None:
        """What the other node wants now: track id -> layer positions."""
        wanted: dict[str, set[int]] = {}
        if isinstance(wants, dict):
            for track_id, layers in list(wants.items())[:MAX_STATE_PARTICIPANTS]:
                if isinstance(layers, list):
                    wanted[str(track_id)] = {x for x in layers[:MAX_LAYERS] if isinstance(x, int)}
        if wanted != self.wanted:
            self.wanted = wanted
            self.room.spawn(self.reallocate())

    async def reallocate(self, sources: Any = None) -> None:
        """The layers the other node asked for (``sources``, the room's video sources that
        ``Room.reallocate_all`` passes every participant, are not what a link follows)."""
        for key, down in list(self.downtracks.items()):
            track_id, _, position = key.rpartition("/")
            layer = down.up.layers[int(position)]
            if int(position) in self.wanted.get(track_id, ()):
                if down.target is not layer:
                    down.set_target(layer, None, "relay")
            elif down.target is not None:
                down.set_target(None, None, "relay")


# The node that wants them: a link from another node ------------------------------------------


class RelayLink:
    """The answering end of one feed: a peer connection whose receivers are the layers of the
    other node's tracks, filed under this room's remote up-tracks."""

    def __init__(self, room: Room, origin: str, feed_id: str, send: Send) -> None:
        self.room = room
        self.origin = origin
        self.feed_id = feed_id
        self.send = send
        settings = room.node.settings
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(settings.ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        room.node.peer_connections.add(self.pc)
        self.layers: dict[str, tuple[Any, int | None, int | None]] = {}  # "track/position" -> (receiver, ssrc, rtx)
        self.taps: dict[str, ReceiverTap] = {}
        self.closed = False
        self.failed: Callable[[RelayLink], None] | None = None
        self._lock = asyncio.Lock()

        @self.pc.on("connectionstatechange")
        async def _state() -> None:
            if self.pc.connectionState == "failed" and not self.closed and self.failed is not None:
                self.failed(self)

    async def offer(self, sdp: str, tracks: Any) -> None:
        """Apply the feed's offer and send the answer."""
        if not isinstance(sdp, str) or not isinstance(tracks, dict):
            return
        async with self._lock:
            if self.closed:
                return
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=normalize_h264(sdp), type="offer"))
            ssrcs = ssrcs_by_mid(sdp)
            for transceiver in self.pc.getTransceivers():
                key = tracks.get(transceiver.mid) if transceiver.mid is not None else None
                if not isinstance(key, str) or key in self.layers or "/" not in key:
                    continue
                media, rtx = ssrcs.get(transceiver.mid, (None, None))
                self.layers[key] = (transceiver.receiver, media, rtx)
                self._tap(key)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            answer = self.pc.localDescription.sdp
            announced = self.room.node.settings.announced_ip
            await self.send({"type": "answer", "to": self.origin, "feed": self.feed_id,
                             "sdp": announce_address(answer, announced) if announced else answer})

    def _tap(self, key: str) -> None:
        track_id, _, position = key.rpartition("/")
        receiver, _, _ = self.layers[key]

        def on_packet_now(packet: Any, codec: Any, arrival: int, repaired: bool = False) -> None:
            up = self._bound(track_id, key)
            if up is not None:
                up.receive_now(packet, codec, arrival, repaired)

        async def on_packet(packet: Any, codec: Any, arrival: int, repaired: bool = False) -> None:
            on_packet_now(packet, codec, arrival, repaired)

        def on_report(ssrc: int, ntp: int, rtp: int) -> None:
            up = self._bound(track_id, key)
            if up is not None:
                up._on_sender_report(ssrc, ntp, rtp)

        self.taps[key] = ReceiverTap(receiver, on_packet, [SenderReports(on_report)], on_packet_now=on_packet_now)

    def _bound(self, track_id: str, key: str) -> UpTrack | None:
        up = self.room.remote_track(track_id)
        if up is None or not up.remote:
            return None
        if getattr(up, "relay_link", None) is not self or key not in up.relay_layers:
            self.bind(up)
        return up

    def bind(self, up: UpTrack) -> None:
        """File this link's streams of ``up`` under its layers (again after a new link)."""
        if getattr(up, "relay_link", None) is not self:
            up.relay_link = self
            up.relay_layers = set()
            up.tap = None
        for key, (_, media, rtx) in self.layers.items():
            track_id, _, position = key.rpartition("/")
            if track_id != up.track_id or int(position) >= len(up.layers):
                continue
            up.bind_layer(up.layers[int(position)], self.taps[key], media, rtx)
            up.relay_layers.add(key)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.wait_for(self.pc.close(), 10.0)
        except Exception:
            log.exception("closing the relay link from %s failed", self.origin)


def ssrcs_by_mid(sdp: str) -> dict[str, tuple[int | None, int | None]]:
    """Each m-section's media SSRC and its RTX SSRC (the FID group), by mid."""
    result: dict[str, tuple[int | None, int | None]] = {}
    mid: str | None = None
    media: int | None = None
    rtx: int | None = None

    def done() -> None:
        if mid is not None:
            result[mid] = (media, rtx)

    for line in sdp.splitlines():
        if line.startswith("m="):
            done()
            mid, media, rtx = None, None, None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=ssrc-group:FID "):
            parts = line.split()[1:]
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                media, rtx = int(parts[0]), int(parts[1])
        elif line.startswith("a=ssrc:") and media is None:
            first = line[7:].split(" ", 1)[0]
            if first.isdigit():
                media = int(first)
    done()
    return result
