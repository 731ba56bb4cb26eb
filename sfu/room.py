"""Rooms and participants of one SFU node, and the negotiation of their peer connections.

Each participant has up to two peer connections: a publisher connection (the client offers, the
SFU answers, receivers only) and a subscriber connection (the SFU offers, the client answers,
senders only).  Publishing a track creates an up-track; every other participant that may
subscribe gets a sendonly transceiver with a parked track and a down-track on its sender, and a
new subscriber offer.  Offers on one connection are serialised: changes that arrive while an
offer waits for its answer go into the next offer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import is_rtx
from aiortc.exceptions import OperationError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import candidate_from_sdp

from sfu import dynacast
from sfu.aiortc_hooks import GUARD as DATAGRAMS
from sfu.aiortc_hooks import (
    ParkedTrack,
    accept_rsa_peers,
    count_codec_instances,
    enable_simulcast,
    guard_datagrams,
    negotiated_codecs,
    schedule_sender_reports,
    scheduled_reports,
    single_udp_port,
    widen_srtp_buffers,
)
from sfu.bandwidth import BandwidthEstimator, RembSum
from sfu.dynacast import LayerView
from sfu.forwarding import DownTrack, UpTrack
from sfu.metrics import SfuMetrics
from sfu.sdp import (
    MAX_CANDIDATES,
    accept_simulcast,
    announce_address,
    check_candidate,
    check_description,
    normalize_h264,
    simulcast_offers,
)
from sfu.selector import Allocator, Choice, Demand, priority, wanted_layer, wanted_with_cause
from sfu.speaker import ActiveSpeakerDetector
from sfu.tasks import TaskSet

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 20.0
TICK_INTERVAL = 0.02  # while packets are missing upstream: NACKs are due within a tick
CALM_TICK_INTERVAL = 0.1  # otherwise; a new gap wakes the ticker at once
SPEAKER_INTERVAL = 0.25
ALLOCATE_INTERVAL = 0.5
DYNACAST_INTERVAL = 1.0
DEFAULT_LAST_N = 16
MAX_METADATA = 4096  # characters of a participant's metadata (set through the server API)
PC_CLOSE_SECONDS = 10.0  # closing a peer connection that takes longer is abandoned (a hang in aiortc)

Notify = Callable[[dict[str, Any]], Awaitable[None]]


class SignalError(Exception):
    """A request the SFU refuses; ``code`` goes back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TrackWish:
    """How a subscriber shows one remote video track (``track-settings``): a quality, or the
    size it renders."""

    track_id: str
    quality: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class NodeSettings:
    ice_servers: list[RTCIceServer] = field(default_factory=list)  # the SFU's own (STUN for its address)
    announced_ip: str | None = None


def capabilities_for(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """Offer a subscriber exactly the publisher's codec (and RTX for video): no transcoding."""
    caps = RTCRtpSender.getCapabilities(codec.mimeType.split("/")[0]).codecs
    chosen = [
        c for c in caps
        if c.mimeType.lower() == codec.mimeType.lower() and c.clockRate == codec.clockRate and c.parameters == codec.parameters
    ]
    if not chosen:
        raise SignalError("codec_unsupported", f"no subscriber codec matches {codec.mimeType}")
    chosen += [c for c in caps if is_rtx(c)][:1]
    return chosen


def _negotiation_error(exc: Exception, what: str, identity: str) -> SignalError:
    """What the client is told when aiortc fails on an offer or answer (logged here):
    ``codec_unsupported`` for aiortc's OperationError (no codec in common), else ``invalid_sdp``."""
    code = "codec_unsupported" if isinstance(exc, OperationError) else "invalid_sdp"
    message = f"the {what} could not be negotiated: {str(exc) or type(exc).__name__}"
    log.warning("negotiation with %s failed: %s", identity, message, exc_info=code == "invalid_sdp")
    return SignalError(code, message)


class RoomObserver(Protocol):
    """Told what happens in a room (the recorder): who is in it, their tracks, mutes, the
    dominant speaker, and that the room is closing."""

    def participants_changed(self) -> None: ...

    def track_added(self, owner: Participant, up: UpTrack) -> None: ...

    def track_removed(self, up: UpTrack) -> None: ...

    def track_muted(self, up: UpTrack) -> None: ...

    def speakers_changed(self, dominant: str | None) -> None: ...

    async def room_closing(self) -> None: ...


class Participant:
    def __init__(
        self,
        room: Room,
        identity: str,
        name: str,
        role: str,
        grants: dict[str, bool],
        notify: Notify,
        *,
        waiting: bool = False,
    ) -> None:
        self.room = room
        self.identity = identity
        self.name = name
        self.role = role
        self.grants = grants
        self.notify = notify
        self.waiting = waiting
        self.hidden = bool(grants.get("hidden"))
        self.hand_raised_at: float | None = None  # wall clock (epoch seconds) when the hand went up
        self.metadata = ""  # set through the server API, shown to everyone in participant info
        self.joined_at = time.time()
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.uptracks: dict[str, UpTrack] = {}
        self.downtracks: dict[str, DownTrack] = {}
        self._mid_tracks: dict[str, str] = {}
        self._sub_transceivers: dict[str, Any] = {}
        self._pending: dict[str, tuple[UpTrack, Any]] = {}
        self._answer: asyncio.Future[str] | None = None
        self._trickled: dict[str, int] = {}  # ICE candidates trickled, per connection
        self._negotiating = False
        self._again = False
        self.closed = False
        # what this subscriber asked for, and what its downlink takes
        self.track_settings: dict[str, tuple[str | None, int | None, int | None]] = {}
        self.pins: list[str] = []
        self.estimator = BandwidthEstimator()
        self.rembs = RembSum()
        self.allocator = Allocator()
        self._forwarding: dict[str, tuple[Any, ...]] = {}
        self.remote: str | None = None  # the node it is on, for a participant of another node
        self.relay_for: str | None = None  # the node it relays this one's tracks to (a relay feed)

    @property
    def local(self) -> bool:
        """Connected to this node (not another node's participant, nor a relay feed)."""
        return self.remote is None and self.relay_for is None

    @property
    def hand_raised(self) -> bool:
        return self.hand_raised_at is not None

    def raise_hand(self, raised: bool, now: float) -> bool:
        """Raise (at wall-clock time ``now``) or lower the hand; a hand raised again while up keeps
        the time it first went up.  Whether anything changed."""
        since = (self.hand_raised_at if self.hand_raised_at is not None else now) if raised else None
        changed = since != self.hand_raised_at
        self.hand_raised_at = since
        return changed

    def info(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "name": self.name,
            "role": self.role,
            "hand_raised": self.hand_raised,
            "hand_raised_at": self.hand_raised_at,
            "tracks": [up.info() for up in self.uptracks.values()],
            "metadata": self.metadata,
        }

    async def set_grants(self, grants: dict[str, bool]) -> None:
        """Change what this participant may do, now: losing ``can_publish`` unpublishes its
        tracks, losing ``can_subscribe`` drops what it receives, and gaining it subscribes it to
        what the room publishes.  ``hidden`` cannot change while it is in the room."""
        before = self.grants
        self.grants = {**before, **grants, "hidden": before.get("hidden", False)}
        if before.get("can_publish") and not self.grants.get("can_publish"):
            for track_id in list(self.uptracks):
                await self.unpublish(track_id)
        if before.get("can_subscribe") and not self.grants.get("can_subscribe"):
            for track_id in list(self.downtracks) + list(self._pending):
                await self.unsubscribe(track_id)
        elif not before.get("can_subscribe") and self.grants.get("can_subscribe"):
            for other in list(self.room.participants.values()):
                if other is not self and not other.waiting:
                    for up in list(other.uptracks.values()):
                        await self.subscribe(up)

    def _peer_connection(self) -> RTCPeerConnection:
        # max-bundle: with aiortc's default (balanced) a transceiver added while an offer waits
        # for its answer takes the transport of the first one of its kind, which that answer
        # then discards (bundled into mid 0): its sender never starts.  Seen with Chromium.
        pc = RTCPeerConnection(RTCConfiguration(
            iceServers=list(self.room.node.settings.ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        ))
        self.room.node.peer_connections.add(pc)

        @pc.on("connectionstatechange")
        async def _state() -> None:
            # "closed" without our asking means the client's side went away (DTLS close).
            if pc.connectionState in ("failed", "closed") and not self.closed:
                self.room.spawn(self.room.remove(self, "connection_failed"))

        return pc

    def _local_sdp(self, pc: RTCPeerConnection) -> str:
        sdp = pc.localDescription.sdp
        announced = self.room.node.settings.announced_ip
        return announce_address(sdp, announced) if announced else sdp

    # Publishing --------------------------------------------------------------------------------

    async def publish(self, sdp: str, tracks: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.grants.get("can_publish"):
            raise SignalError("publish_not_allowed", "this room token does not allow publishing")
        if self.waiting:
            raise SignalError("waiting", "wait until a host admits you")
        try:
            check_description(sdp, bundled=single_udp_port())
        except ValueError as exc:
            raise SignalError("invalid_sdp", f"the offer could not be used: {exc}") from None
        meta = {t["mid"]: t for t in tracks}
        simulcast = simulcast_offers(sdp)
        if self.publisher is None:
            self.publisher = self._peer_connection()
        pc = self.publisher
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=normalize_h264(sdp), type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            # aiortc has begun to apply the offer: the connection is in no known state.  The
            # error goes out (with the request's id) before the removal task runs.
            self.room.spawn(self.room.remove(self, "negotiation_failed"))
            raise _negotiation_error(exc, "offer", self.identity) from None
        published = []
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            if mid is None or mid in self._mid_tracks or transceiver.currentDirection not in ("recvonly", "sendrecv"):
                continue
            info = meta.get(mid, {})
            source = info.get("source") or ("camera" if transceiver.kind == "video" else "microphone")
            up = UpTrack(
                f"TR_{secrets.token_hex(6)}", self.identity, transceiver.kind, source, self.room.node.metrics,
                simulcast=simulcast.get(mid) if transceiver.kind == "video" else None,
            )
            up.muted = bool(info.get("muted"))
            up.on_gap = self.room.node.wake
            media = [c for c in negotiated_codecs(transceiver) if not is_rtx(c)]
            if not media:
                continue
            up.codec = media[0]
            up.attach(transceiver.receiver)
            self.uptracks[up.track_id] = up
            self._mid_tracks[mid] = up.track_id
            published.append(up)
        result = {
            "sdp": accept_simulcast(self._local_sdp(pc), simulcast),
            "tracks": [{"mid": mid, "track_id": tid} for mid, tid in self._mid_tracks.items()],
        }
        for up in published:
            self.room.spawn(self.room.track_published(self, up))
        return result

    async def unpublish(self, track_id: str) -> None:
        up = self.uptracks.pop(track_id, None)
        if up is None:
            raise SignalError("unknown_track", f"you publish no track {track_id}")
        self._mid_tracks = {m: t for m, t in self._mid_tracks.items() if t != track_id}
        await self.room.track_unpublished(self, up)

    async def add_ice_candidate(self, target: str, candidate: str | None, sdp_mid: str | None, index: int | None) -> None:
        pc = self.publisher if target == "publisher" else self.subscriber
        if pc is None:
            raise SignalError("no_connection", f"there is no {target} connection yet")
        if candidate is None or not candidate.strip():
            await pc.addIceCandidate(None)
            return
        trickled = self._trickled.get(target, 0)
        if trickled >= MAX_CANDIDATES:
            raise SignalError("invalid_candidate", f"at most {MAX_CANDIDATES} ICE candidates per connection")
        try:
            check_candidate(candidate)
        except ValueError as exc:
            raise SignalError("invalid_candidate", f"the ICE candidate could not be parsed: {exc}") from None
        self._trickled[target] = trickled + 1
        ice = candidate_from_sdp(candidate.removeprefix("candidate:"))
        ice.sdpMid = sdp_mid
        ice.sdpMLineIndex = index
        if sdp_mid is None and index is None:
            raise SignalError("invalid_candidate", "an ICE candidate needs sdp_mid or sdp_mline_index")
        try:
            await pc.addIceCandidate(ice)
        except Exception as exc:  # aiortc and aioice assert on what they cannot use
            raise SignalError("invalid_candidate", f"the ICE candidate could not be used: {str(exc)[:100]}") from None

    # Subscribing -------------------------------------------------------------------------------

    async def subscribe(self, up: UpTrack) -> None:
        if (
            self.closed
            or self.waiting
            or not self.grants.get("can_subscribe")
            or up.owner == self.identity
            or up.track_id in self.downtracks
            or up.track_id in self._pending
            or up.codec is None
        ):
            return
        if self.subscriber is None:
            self.subscriber = self._peer_connection()
        transceiver = self.subscriber.addTransceiver(ParkedTrack(up.kind), direction="sendonly")
        transceiver.setCodecPreferences(capabilities_for(up.codec))
        scheduled_reports(transceiver.sender)
        self._pending[up.track_id] = (up, transceiver)
        self._sub_transceivers[up.track_id] = transceiver
        self.renegotiate()

    async def unsubscribe(self, track_id: str) -> None:
        self._pending.pop(track_id, None)
        downtrack = self.downtracks.pop(track_id, None)
        if downtrack is not None:
            downtrack.up.remove(downtrack)
        transceiver = self._sub_transceivers.pop(track_id, None)
        if transceiver is not None and transceiver.mid is not None and not self.closed:
            # The m-line stays (inactive) but its sender's loops end now.
            transceiver.direction = "inactive"
            await transceiver.sender.stop()
            self.renegotiate()

    def renegotiate(self) -> None:
        """Send the subscriber a new offer, in a task of its own: the caller may be handling a
        message from this very participant (a host removing someone it subscribes to), whose
        answer could not be read while the caller waited for it."""
        if self._negotiating:
            self._again = True
        else:
            self.room.spawn(self._negotiate())

    async def _negotiate(self) -> None:
        if self._negotiating:
            self._again = True
            return
        self._negotiating = True
        try:
            while not self.closed and self.subscriber is not None:
                self._again = False
                pc = self.subscriber
                try:
                    await pc.setLocalDescription(await pc.createOffer())
                except Exception as exc:
                    await self._negotiation_failed(exc, "offer")
                    return
                offered = {tid: (up, t) for tid, (up, t) in self._pending.items() if t.mid is not None}
                mids = {t.mid: tid for tid, t in self._sub_transceivers.items() if t.mid is not None}
                self._answer = asyncio.get_running_loop().create_future()
                await self.notify({"type": "subscriber-offer", "sdp": self._local_sdp(pc), "tracks": mids})
                try:
                    sdp = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT)
                except asyncio.TimeoutError:
                    log.warning("participant %s did not answer a subscriber offer", self.identity)
                    self.room.spawn(self.room.remove(self, "negotiation_timeout"))
                    return
                finally:
                    self._answer = None
                try:
                    check_description(sdp, max_media=len(pc.getTransceivers()))
                    answer = normalize_h264(sdp, offer=pc.localDescription.sdp)
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                except Exception as exc:
                    await self._negotiation_failed(exc, "answer")
                    return
                for tid, (up, transceiver) in offered.items():
                    self._pending.pop(tid, None)
                    media = [c for c in negotiated_codecs(transceiver) if not is_rtx(c)]
                    if not media or tid not in self._sub_transceivers:
                        continue
                    downtrack = DownTrack(up, self.identity, transceiver.sender, media[0].payloadType, self.room.node.metrics, self.room.node.rng)
                    downtrack.feedback.listener = self._on_feedback
                    self.downtracks[tid] = downtrack
                    up.add(downtrack)
                    if up.kind == "video":
                        await self.reallocate()
                if not self._again and not [1 for _, t in self._pending.values() if t.mid is None]:
                    break
        finally:
            self._negotiating = False

    async def _negotiation_failed(self, exc: Exception, what: str) -> None:
        """A subscriber offer or answer failed in aiortc: the client is told, then removed."""
        if self.closed:  # closed meanwhile (aiortc refuses a closed connection): nobody to tell
            return
        error = _negotiation_error(exc, what, self.identity)
        await self.notify({"type": "error", "code": error.code, "message": error.message})
        self.room.spawn(self.room.remove(self, "negotiation_failed"))

    # Layer selection ---------------------------------------------------------------------------

    def set_track_settings(self, wishes: list[TrackWish]) -> list[str]:
        """Take each wish for a track this subscriber receives, in order, then choose layers once;
        the ids of the tracks it does not receive, which are left out."""
        unknown = []
        for wish in wishes:
            if wish.track_id not in self.downtracks and wish.track_id not in self._pending:
                unknown.append(wish.track_id)
                continue
            self.track_settings[wish.track_id] = (wish.quality, wish.width, wish.height)
        if len(unknown) < len(wishes):
            self.room.spawn(self.reallocate())
        return unknown

    def set_pins(self, identities: list[str]) -> None:
        self.pins = list(dict.fromkeys(identities))
        self.room.spawn(self.reallocate())

    def sending_rate(self, now: float) -> float:
        return sum(d.meter.rate(now) for d in self.downtracks.values())

    def _on_feedback(self, kind: str, value: float, ssrcs: tuple[int, ...] = ()) -> None:
        now = self.room.node.clock()
        if kind == "loss":
            self.estimator.on_loss(value, self.sending_rate(now), now)
        elif kind == "remb":
            self.estimator.on_remb(self.rembs.add(ssrcs, value, now), self.sending_rate(now), now)

    def _demand(self, down: DownTrack, visible: set[str], now: float) -> tuple[Demand, str]:
        up = down.up
        layers = up.order
        quality, width, height = self.track_settings.get(up.track_id, (None, None, None))
        wanted = wanted_layer([layer.height for layer in layers], quality, width, height, [layer.width for layer in layers])
        wanted, cause = wanted_with_cause(wanted, up.muted or up.blocked, up.track_id in visible)
        room = self.room
        rank = priority(up.owner, up.source, self.pins, room.speakers.dominant, room.current_speakers)
        rates = [layer.rates(now) for layer in layers]
        return Demand(up.track_id, wanted, rates, [layer.available(now) for layer in layers], rank), cause

    async def reallocate(self, sources: tuple[dict[str, UpTrack], dict[str, list[str]]] | None = None) -> None:
        """Choose, for every video track this participant receives, the layer its downlink and
        its wishes allow, and tell it what changed."""
        if self.closed:
            return
        now = self.room.node.clock()
        videos = [d for d in self.downtracks.values() if d.up.kind == "video"]
        if not videos:
            return
        visible = self.room.video_set_for(self, sources)
        demands = []
        causes = {}
        for down in videos:
            demand, cause = self._demand(down, visible, now)
            demands.append(demand)
            causes[demand.track_id] = cause
        self.estimator.on_idle(now)
        audio = sum(d.meter.rate(now) for d in self.downtracks.values() if d.up.kind == "audio")
        changes = self.allocator.update(max(self.estimator.value - audio, 0.0), demands, now)
        for track_id, choice in changes.items():
            down = self.downtracks.get(track_id)
            if down is None:
                continue
            if choice.layer is None and choice.reason != "bandwidth":
                choice = Choice(None, None, causes[track_id] if causes[track_id] != "requested" else choice.reason)
            layer = down.up.order[choice.layer] if choice.layer is not None and choice.layer < len(down.up.order) else None
            down.set_target(layer, choice.temporal, choice.reason)
            await self._tell_forwarding(down, choice)

    async def _tell_forwarding(self, down: DownTrack, choice: Choice) -> None:
        layer = down.target
        state = (choice.layer, choice.temporal, choice.reason)
        if self._forwarding.get(down.up.track_id) == state:
            return
        self._forwarding[down.up.track_id] = state
        await self.notify({
            "type": "track-forwarding",
            "track_id": down.up.track_id,
            "participant": down.up.owner,
            "forwarding": layer is not None,
            "layer": choice.layer,
            "temporal": choice.temporal,
            "width": layer.width if layer is not None else None,
            "height": layer.height if layer is not None else None,
            "reason": choice.reason,
        })

    def answer(self, sdp: str) -> None:
        if self._answer is None or self._answer.done():
            raise SignalError("unexpected_answer", "there is no subscriber offer waiting for an answer")
        self._answer.set_result(sdp)

    # Ending ------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        for downtrack in self.downtracks.values():
            downtrack.up.remove(downtrack)
        self.downtracks.clear()
        self.room.speakers.remove(self.identity)
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                try:
                    await asyncio.wait_for(pc.close(), PC_CLOSE_SECONDS)
                except asyncio.TimeoutError:  # a task of aiortc's that never ends must not hold the removal
                    log.error("closing a peer connection of %s took over %s s: abandoned", self.identity, PC_CLOSE_SECONDS)
                except Exception:  # aiortc left half-negotiated: closing must still finish here
                    log.exception("closing a peer connection of %s failed", self.identity)
        self.publisher = self.subscriber = None


class Room:
    def __init__(self, node: SfuNode, room_id: str) -> None:
        self.node = node
        self.room_id = room_id
        self.participants: dict[str, Participant] = {}
        self.banned: set[str] = set()
        self.closed = False
        self._tasks = TaskSet(log, "room %s task failed", room_id)
        self.on_empty: Callable[[Room], Awaitable[None]] | None = None
        self.last_n = DEFAULT_LAST_N
        self.speakers = ActiveSpeakerDetector()
        self.current_speakers: list[str] = []
        self._order = 0
        self.join_order: dict[str, int] = {}
        self.observers: list[RoomObserver] = []
        self.on_change: Callable[[], None] | None = None  # the cascade: tell the other nodes
        self.opened_at = time.time()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background step of this room; errors are logged, never lost."""
        self._tasks.spawn(coro)

    def visible(self) -> list[Participant]:
        return [p for p in self.participants.values() if not p.hidden and not p.waiting]

    def local_participants(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.local]

    def remote_track(self, track_id: str) -> UpTrack | None:
        """A track of another node's participant, by id."""
        for participant in self.participants.values():
            if participant.remote is not None and track_id in participant.uptracks:
                return participant.uptracks[track_id]
        return None

    def changed(self) -> None:
        """Something other nodes of the meeting see changed here (who, their tracks, mutes, hands)."""
        if self.on_change is not None:
            self.on_change()

    def tracks(self) -> list[dict[str, Any]]:
        return [up.info() for p in self.participants.values() if not p.waiting for up in p.uptracks.values()]

    async def broadcast(self, message: dict[str, Any], exclude: Participant | None = None, admins_only: bool = False) -> None:
        for participant in list(self.participants.values()):
            if participant is exclude or participant.waiting:
                continue
            if admins_only and not participant.grants.get("room_admin"):
                continue
            await participant.notify(message)

    async def add(self, participant: Participant) -> None:
        if participant.identity in self.banned:
            raise SignalError("removed", "a host removed you from this meeting")
        previous = self.participants.get(participant.identity)
        if previous is not None:
            await previous.notify({"type": "removed", "reason": "replaced", "message": "you joined from somewhere else"})
            await self.remove(previous, "replaced", keep_room=True)
        self.participants[participant.identity] = participant
        self._order += 1
        self.join_order[participant.identity] = self._order
        self.changed()
        if participant.waiting:
            await self.broadcast({"type": "participant-waiting", "participant": participant.info()}, admins_only=True)
            return
        await self._admitted(participant)

    async def _admitted(self, participant: Participant) -> None:
        for observer in list(self.observers):
            observer.participants_changed()
        self.node.on_activity("joined", participant)
        if not participant.hidden:
            await self.broadcast({"type": "participant-joined", "participant": participant.info()}, exclude=participant)
        for other in list(self.participants.values()):
            if other is not participant and not other.waiting:
                for up in list(other.uptracks.values()):
                    self.spawn(participant.subscribe(up))

    async def admit(self, identity: str) -> Participant:
        participant = self.participants.get(identity)
        if participant is None or not participant.waiting:
            raise SignalError("unknown_participant", f"nobody called {identity} is waiting")
        participant.waiting = False
        self.changed()
        await self._admitted(participant)
        return participant

    async def remove(self, participant: Participant, reason: str, keep_room: bool = False) -> None:
        if self.participants.get(participant.identity) is not participant:
            return
        del self.participants[participant.identity]
        uptracks = list(participant.uptracks.values())
        participant.uptracks.clear()
        await participant.close()
        for up in uptracks:
            await self._drop_track(participant, up)
        for observer in list(self.observers):
            observer.participants_changed()
        if not participant.hidden and not participant.waiting:
            await self.broadcast({"type": "participant-left", "identity": participant.identity, "reason": reason})
        self.node.on_participant_removed(participant, reason)
        self.changed()
        if not self.local_participants() and not keep_room:
            await self.close()

    def video_sources(self) -> tuple[dict[str, UpTrack], dict[str, list[str]]]:
        """Each participant's first camera track and its screen-share tracks (not those waiting
        in the lobby): once per allocation round, not once per subscriber."""
        cameras: dict[str, UpTrack] = {}
        screens: dict[str, list[str]] = {}
        for participant in self.participants.values():
            if participant.waiting:
                continue
            for up in participant.uptracks.values():
                if up.kind != "video":
                    continue
                if up.source == "screen":
                    screens.setdefault(participant.identity, []).append(up.track_id)
                else:
                    cameras.setdefault(participant.identity, up)
        return cameras, screens

    def video_set_for(
        self, subscriber: Participant, sources: tuple[dict[str, UpTrack], dict[str, list[str]]] | None = None
    ) -> set[str]:
        """Last-N: the camera tracks ``subscriber`` receives video from: its pins, then the most
        recent speakers, then the earliest joined, at most ``last_n``; screen shares always."""
        every_camera, screens = sources if sources is not None else self.video_sources()
        me = subscriber.identity
        chosen = {track for identity, tracks in screens.items() if identity != me for track in tracks}
        cameras = every_camera if me not in every_camera else {i: up for i, up in every_camera.items() if i != me}
        if len(cameras) <= self.last_n:
            return chosen | {up.track_id for up in cameras.values()}
        order = list(subscriber.pins)
        order += self.speakers.recent(self.last_n)
        order += sorted(cameras, key=lambda identity: self.join_order.get(identity, 0))
        picked: list[str] = []
        for identity in order:
            if identity in cameras and identity not in picked:
                picked.append(identity)
            if len(picked) >= self.last_n:
                break
        return chosen | {cameras[identity].track_id for identity in picked}

    async def reallocate_all(self) -> None:
        """Every participant's allocation; one that fails leaves the others theirs."""
        sources = self.video_sources()
        for participant in list(self.participants.values()):
            try:
                await participant.reallocate(sources)
            except Exception:
                log.exception("allocation failed for participant %s", participant.identity)

    async def update_speakers(self, now: float) -> None:
        for participant in self.participants.values():
            for up in participant.uptracks.values():
                if up.kind == "audio" and not up.muted and not up.blocked and up.audio_level is not None:
                    if up.layers[0].sending(now) and now - up.layers[0].last_packet < 0.1:
                        self.speakers.add_level(participant.identity, up.audio_level[1], now)
        change = self.speakers.update(now)
        if change is None:
            return
        dominant_changed = change.dominant != (self.current_speakers[0] if self.current_speakers else None)
        self.current_speakers = list(change.speakers)
        visible = [p for p in self.participants.values() if not p.hidden]
        speakers = [s for s in change.speakers if s in {p.identity for p in visible}]
        dominant = change.dominant if change.dominant in {p.identity for p in visible} else None
        await self.broadcast({"type": "active-speakers", "dominant": dominant, "speakers": speakers})
        if dominant_changed:
            for observer in list(self.observers):
                observer.speakers_changed(dominant)
        if dominant_changed and len(self.participants) > self.last_n + 1:
            await self.reallocate_all()

    async def dynacast(self, now: float) -> None:
        """Tell publishers to stop encodings no subscriber takes, and to resume them on demand."""
        for owner in list(self.participants.values()):
            for up in owner.uptracks.values():
                if not up.is_simulcast:
                    continue
                views = [
                    LayerView(layer.active, layer.inactive_since, any(d.forwarder.wants(layer) for d in up.downtracks)
                              or any(tap.wants(layer) for tap in up.taps))
                    for layer in up.layers
                ]
                decision = dynacast.decide(views, bool(up.downtracks or up.taps), now)
                for layer, since in zip(up.layers, decision.inactive_since, strict=True):
                    layer.inactive_since = since
                up.resume_layers([up.layers[i] for i in decision.resume], now)
                up.pause_layers([up.layers[i] for i in decision.pause])
                if decision.changed:
                    await owner.notify({"type": "set-layers", "track_id": up.track_id, "layers": up.layer_info()})

    async def track_published(self, owner: Participant, up: UpTrack) -> None:
        self.changed()
        self.node.on_activity("track_published", owner, up)
        for observer in list(self.observers):
            observer.track_added(owner, up)
        message = {"type": "track-published", "track": up.info()}
        await self.broadcast(message, exclude=owner)
        if up.source == "screen":
            await self.broadcast({"type": "screen-share-started", "participant": owner.identity, "track_id": up.track_id})
        await asyncio.gather(*(p.subscribe(up) for p in list(self.participants.values()) if p is not owner))

    async def track_unpublished(self, owner: Participant, up: UpTrack) -> None:
        await self._drop_track(owner, up)

    async def _drop_track(self, owner: Participant, up: UpTrack) -> None:
        self.changed()
        self.node.on_activity("track_unpublished", owner, up)
        for observer in list(self.observers):
            observer.track_removed(up)
        for participant in list(self.participants.values()):
            if up.track_id in participant.downtracks or up.track_id in participant._pending:
                await participant.unsubscribe(up.track_id)
        up.downtracks.clear()
        await self.broadcast({"type": "track-unpublished", "track_id": up.track_id, "participant": owner.identity})
        if up.source == "screen":
            await self.broadcast({"type": "screen-share-stopped", "participant": owner.identity, "track_id": up.track_id})

    async def set_muted(self, up: UpTrack, muted: bool, by_host: bool = False) -> None:
        if by_host:
            up.blocked = muted
        else:
            up.muted = muted
            if not muted:
                up.blocked = False
        self.changed()
        for observer in list(self.observers):
            observer.track_muted(up)
        await self.broadcast({"type": "track-muted", "track_id": up.track_id, "participant": up.owner, "muted": up.muted or up.blocked, "by_host": by_host})

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for observer in list(self.observers):
            await observer.room_closing()
        for participant in list(self.participants.values()):
            await self.remove(participant, "room_closed", keep_room=True)
        self._tasks.cancel()
        self.node.rooms.pop(self.room_id, None)
        if self.on_empty is not None:
            await self.on_empty(self)


class SfuNode:
    """The rooms of this process, the periodic NACK ticker and the node's metrics."""

    def __init__(self, metrics: SfuMetrics, settings: NodeSettings | None = None, rng: random.Random | None = None) -> None:
        self.metrics = metrics
        self.settings = settings or NodeSettings()
        self.rng = rng or random.Random()
        self.rooms: dict[str, Room] = {}
        self.clock: Callable[[], float] = time.monotonic
        self._ticker: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._calm = True
        self.removal_listeners: list[Callable[[Participant, str], None]] = []
        # Told of admissions ("joined") and of tracks published and unpublished (webhooks); they
        # must not block (the media path calls them).
        self.activity_listeners: list[Callable[[str, Participant, UpTrack | None], None]] = []
        self.peer_connections: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()  # all it made
        enable_simulcast()
        widen_srtp_buffers()
        accept_rsa_peers()
        guard_datagrams()
        schedule_sender_reports()
        metrics.observe(self)
        codecs = count_codec_instances()
        codecs.listeners.append(lambda kind, _mime: metrics.codec_instances.labels(kind).inc())

    def room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(self, room_id)
        return room

    def room_count(self) -> int:
        return len(self.rooms)

    def participant_count(self) -> int:
        """Participants connected to this node (not other nodes' participants, nor relay feeds)."""
        return sum(len(room.local_participants()) for room in self.rooms.values())

    def track_count(self, kind: str) -> int:
        return sum(
            1 for room in self.rooms.values() for participant in room.local_participants()
            for up in participant.uptracks.values() if up.kind == kind
        )

    def dropped_datagrams(self) -> dict[str, int]:
        return dict(DATAGRAMS.dropped)

    def on_participant_removed(self, participant: Participant, reason: str) -> None:
        for listener in self.removal_listeners:
            listener(participant, reason)

    def on_activity(self, kind: str, participant: Participant, up: UpTrack | None = None) -> None:
        for listener in self.activity_listeners:
            try:
                listener(kind, participant, up)
            except Exception:
                log.exception("an activity listener failed on %s", kind)

    def forwarded_stream_count(self, kind: str) -> int:
        """Down-tracks of ``kind`` that forward now: every audio one, and each video one with a
        target layer (not paused, off or outside last-N)."""
        return sum(
            1 for room in self.rooms.values() for participant in room.local_participants()
            for down in participant.downtracks.values()
            if down.up.kind == kind and (kind == "audio" or not down.paused)
        )

    def peer_connection_count(self) -> int:
        """Peer connections this node made that are not closed (whoever still holds them)."""
        return sum(1 for pc in list(self.peer_connections) if pc.connectionState != "closed")

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="sfu-ticker")

    def wake(self) -> None:
        """A packet went missing upstream: tick within ``TICK_INTERVAL`` (a packet merely
        reordered has that long to arrive before it is NACKed, as before), and every
        ``TICK_INTERVAL`` while anything is missing."""
        wake, timer = self._wake, self._timer
        if wake is None or wake.done() or timer is None or not self._calm:
            return
        timer.cancel()
        self._calm = False
        self._timer = asyncio.get_running_loop().call_later(TICK_INTERVAL, _settle, wake)

    async def _tick(self) -> None:
        """The node's clock: upstream NACKs, active speakers, allocation and dynacast.  It runs
        every ``TICK_INTERVAL`` while packets are missing upstream, else every
        ``CALM_TICK_INTERVAL`` (50 wake-ups a second cost an idle node about 1% of a core)."""
        loop = asyncio.get_running_loop()
        last_speakers = last_allocation = last_dynacast = self.clock()
        missing = False
        while True:
            self._wake = wake = loop.create_future()
            self._calm = not missing
            self._timer = loop.call_later(TICK_INTERVAL if missing else CALM_TICK_INTERVAL, _settle, wake)
            try:
                await wake
            finally:
                self._timer.cancel()
                self._wake = self._timer = None
            now = self.clock()
            missing = False
            for room in list(self.rooms.values()):
                for participant in list(room.participants.values()):
                    for up in list(participant.uptracks.values()):
                        try:
                            await up.tick()
                        except ConnectionError:
                            pass
                        except Exception:
                            log.exception("NACK tick failed for %s", up.track_id)
                        missing = missing or up.losses_pending()
            await self._periodic(now, last_speakers, SPEAKER_INTERVAL, Room.update_speakers)
            if now - last_speakers >= SPEAKER_INTERVAL:
                last_speakers = now
            if now - last_allocation >= ALLOCATE_INTERVAL:
                last_allocation = now
                for room in list(self.rooms.values()):
                    await self._guarded(room.reallocate_all(), "allocation")
            if now - last_dynacast >= DYNACAST_INTERVAL:
                last_dynacast = now
                await self._periodic(now, now - DYNACAST_INTERVAL, DYNACAST_INTERVAL, Room.dynacast)

    async def _periodic(self, now: float, last: float, interval: float, step: Callable[[Room, float], Awaitable[None]]) -> None:
        if now - last < interval:
            return
        for room in list(self.rooms.values()):
            await self._guarded(step(room, now), step.__name__)

    @staticmethod
    async def _guarded(step: Awaitable[None], what: str) -> None:
        try:
            await step
        except ConnectionError:
            pass
        except Exception:
            log.exception("SFU %s step failed", what)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.wait({self._ticker}, timeout=5)
        for room in list(self.rooms.values()):
            await room.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
