"""The signaling WebSocket (``GET /signaling``) of an SFU node.

A connection first sends ``join`` with a room token minted by the control API (or ``resume``
with the id and secret of a session it lost less than ``RESUME_SECONDS`` ago).  The token's
grants are enforced on every request.  Bad frames get an ``error`` and the connection stays
usable; frames over ``MAX_FRAME`` bytes close it with 1009; more than ``FLOOD_RULE`` allows are
answered with ``rate_limited`` and dropped, and a connection that keeps flooding is closed (1008).
Some messages have a budget of their own besides (``MESSAGE_RULES``: reactions), whose excess is
answered with ``rate_limited`` and dropped the same way.

A session outlives its WebSocket by ``RESUME_SECONDS``: media keeps flowing, server messages are
buffered with their ``seq`` and replayed on resume.  After that the participant is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from control_api.config import RateLimitRule
from control_api.errors import ServiceError
from control_api.ratelimit import gcra
from control_api.security import TokenError
from control_api.services.attempts import Budget, reserve
from control_api.services.auth import Principal
from control_api.services.meetings import meeting_channel
from control_api.services.registry import Services
from control_api.storage.database import DatabaseUnavailable
from control_api.storage.tables import CLOSED, LIVE
from recorder.manager import RecorderManager
from sfu.room import MAX_METADATA, Participant, Room, SfuNode, SignalError, TrackWish
from sfu.tasks import TaskSet
from signaling import protocol as p
from signaling import server_commands
from signaling.cascade import Cascade
from signaling.cluster_member import ClusterMember

log = logging.getLogger(__name__)

MAX_FRAME = 256 * 1024
RESUME_SECONDS = 30
REPLAY_BUFFER = 512
FLOOD_RULE = RateLimitRule(limit=50, period=2.5)  # a burst of 50, then 20 a second
FLOOD_CLOSE_AFTER = 100  # dropped messages before the connection is closed
REACTION_RULE = RateLimitRule(limit=5, period=2.5)  # a burst of 5, then 2 a second
MESSAGE_RULES = {"reaction": REACTION_RULE}  # per connection, on top of FLOOD_RULE
OUTBOX_MESSAGES = 1024  # frames queued for one client before its connection is closed
OUTBOX_BYTES = 4 * 1024 * 1024  # ... or bytes
CLOSE_JOIN_TIMEOUT, CLOSE_SLOW_CONSUMER = p.CLOSE_JOIN_TIMEOUT, p.CLOSE_SLOW_CONSUMER
JOIN_TIMEOUT = 10.0  # seconds a connection may stay open without joining
CLOSE_TIMEOUT = 5.0  # seconds a closing handshake may take before the transport is dropped
ADMIN_TYPES = {"mute-participant", "remove-participant", "admit", "end-meeting", "start-recording", "stop-recording"}


class Outbox:
    """What the server writes to one WebSocket: a bounded queue drained by a writer task of its
    own, so that nobody awaits a client's drain on a path that serves others (one client that
    stops reading would otherwise hold its whole room).  A queue that overflows closes its
    connection with ``CLOSE_SLOW_CONSUMER``; the session survives, and the client may resume and
    have what it missed replayed."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        limit: int = OUTBOX_MESSAGES,
        byte_limit: int = OUTBOX_BYTES,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.limit = limit
        self.byte_limit = byte_limit
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # everything queued has been written
        self._idle.set()
        self.overflowed = False
        self._writer = asyncio.create_task(self._write(), name="signaling-writer")

    def put(self, text: str) -> bool:
        """Queue one frame; False (and the connection closing) when the client is too far behind."""
        if self.overflowed or self.ws.closed:
            return False
        if len(self._queue) >= self.limit or self._bytes + len(text) > self.byte_limit:
            self.overflowed = True
            self._writer.cancel()
            self._closer = asyncio.create_task(self.close_connection(CLOSE_SLOW_CONSUMER, b"slow consumer: resume"))
            return False
        self._queue.append(text)
        self._bytes += len(text)
        self._idle.clear()
        self._ready.set()
        return True

    async def _write(self) -> None:
        queue, ws = self._queue, self.ws
        while not ws.closed:
            if not queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            text = queue.popleft()
            self._bytes -= len(text)
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def close_connection(self, code: int, reason: bytes) -> None:
        """Close the WebSocket even if its client does not read: the closing handshake may take
        ``CLOSE_TIMEOUT`` seconds, then the connection is dropped.  What is queued goes first."""
        if not self.overflowed and not self._writer.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), CLOSE_TIMEOUT)
        self._writer.cancel()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason), CLOSE_TIMEOUT)
        except Exception:  # timed out, or the connection broke
            if self.transport is not None:
                self.transport.abort()

    async def stop(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


class Session:
    """One participant's signaling state, which survives a dropped WebSocket for a while."""

    def __init__(self, server: SignalingServer, room: Room, claims: dict[str, Any]) -> None:
        self.server = server
        self.room = room
        self.claims = claims
        self.session_id = uuid.uuid4().hex
        self.resume_token = secrets.token_urlsafe(24)
        self.ws: web.WebSocketResponse | None = None
        self.outbox: Outbox | None = None
        self.seq = 0
        self.buffer: deque[tuple[int, str]] = deque(maxlen=REPLAY_BUFFER)
        self.participant: Participant | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.ended = False

    async def send(self, message: dict[str, Any]) -> None:
        self.seq += 1
        text = json.dumps({**message, "seq": self.seq}, separators=(",", ":"))
        self.buffer.append((self.seq, text))
        if self.outbox is not None:
            self.outbox.put(text)

    def detach(self) -> None:
        """The WebSocket is gone: keep the session for the resume window."""
        self.ws = None
        self.outbox = None
        if not self.ended and self.expiry is None:
            loop = asyncio.get_running_loop()
            self.expiry = loop.call_later(self.server.resume_seconds, self._expire)

    def _expire(self) -> None:
        self.expiry = None
        if self.ws is None and not self.ended and self.participant is not None:
            self.room.spawn(self.room.remove(self.participant, "disconnected"))

    def attach(self, ws: web.WebSocketResponse, outbox: Outbox, last_seq: int) -> int:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.ws = ws
        self.outbox = outbox
        replay = [text for seq, text in self.buffer if seq > last_seq]
        for text in replay:
            outbox.put(text)
        return len(replay)


class Connection:
    """One WebSocket: parsing, flood control, dispatch."""

    def __init__(self, server: SignalingServer, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        self.server = server
        self.ws = ws
        self.outbox = Outbox(ws, transport)
        self.session: Session | None = None
        self._tat: float | None = None
        self._tats: dict[str, float] = {}  # per message type with a rule of its own (MESSAGE_RULES)
        self.dropped = 0

    async def error(self, code: str, message: str, request_id: str | None = None, details: Any = None) -> None:
        payload = {"type": "error", "code": code, "message": message, "id": request_id, "details": details}
        if self.session is not None:
            await self.session.send(payload)
        else:
            self.outbox.put(json.dumps(payload))

    def _allowed(self) -> bool:
        now = asyncio.get_running_loop().time()
        decision, tat = gcra(self._tat, now, FLOOD_RULE)
        if tat is not None:
            self._tat = tat
        return decision.allowed

    def _within_budget(self, kind: str) -> bool:
        """Whether one more message of ``kind`` fits its own rule (``MESSAGE_RULES``), if it has one."""
        rule = MESSAGE_RULES.get(kind)
        if rule is None:
            return True
        decision, tat = gcra(self._tats.get(kind), asyncio.get_running_loop().time(), rule)
        if tat is not None:
            self._tats[kind] = tat
        return decision.allowed

    async def _frames(self) -> AsyncIterator[Any]:
        """The client's frames until it closes; a connection that has not joined (or resumed)
        within the server's join timeout is closed with ``CLOSE_JOIN_TIMEOUT``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.join_timeout
        while True:
            timeout = None if self.session is not None else max(deadline - loop.time(), 0.0)
            try:
                frame = await self.ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                await self.outbox.close_connection(CLOSE_JOIN_TIMEOUT, b"join timeout")
                return
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            yield frame

    async def run(self) -> None:
        async for frame in self._frames():
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if not self._allowed():
                self.dropped += 1
                if self.dropped >= FLOOD_CLOSE_AFTER:
                    await self.outbox.close_connection(WSCloseCode.POLICY_VIOLATION, b"flooding")
                    break
                await self.error("rate_limited", p.ERROR_CODES["rate_limited"])
                continue
            try:
                message = p.parse_client_message(frame.data)
            except p.ProtocolError as exc:
                await self.error(exc.code, exc.message, details=exc.details)
                continue
            await self._handle(message)
            if self.session is not None and self.session.ended:
                break

    async def _handle(self, message: Any) -> None:
        try:
            await self.dispatch(message)
        except p.ProtocolError as exc:
            await self.error(exc.code, exc.message, message.id, exc.details)
        except SignalError as exc:
            await self.error(exc.code, exc.message, message.id)
        except ServiceError as exc:
            await self.error(exc.code, exc.message, message.id, exc.details)
        except Exception:
            log.exception("signaling failed on %s", message.type)
            await self.error("internal_error", "the server failed to handle this message", message.id)

    async def dispatch(self, message: Any) -> None:
        kind = message.type
        if kind == "ping":
            await self._reply({"type": "pong", "id": message.id})
            return
        if kind in ("join", "resume"):
            if self.session is not None:
                raise p.ProtocolError("already_joined", p.ERROR_CODES["already_joined"])
            if message.protocol != p.PROTOCOL_VERSION:
                raise p.ProtocolError("unsupported_version", f"this server speaks protocol {p.PROTOCOL_VERSION}")
            if kind == "join":
                await self.server.join(self, message)
            else:
                await self.server.resume(self, message)
            return
        session = self.session
        if session is None or session.participant is None:
            raise p.ProtocolError("not_joined", p.ERROR_CODES["not_joined"])
        participant = session.participant
        if kind in ADMIN_TYPES and not participant.grants.get("room_admin"):
            raise p.ProtocolError("not_room_admin", p.ERROR_CODES["not_room_admin"])
        if not self._within_budget(kind):
            rule = MESSAGE_RULES[kind]
            raise p.ProtocolError(
                "rate_limited", f"too many {kind} messages: {rule.limit} at once, then {rule.limit / rule.period:g} a second"
            )
        handler = getattr(self.server, "on_" + kind.replace("-", "_"))
        await handler(session, participant, message)

    async def _reply(self, payload: dict[str, Any]) -> None:
        if self.session is not None:
            await self.session.send(payload)
        else:
            self.outbox.put(json.dumps(payload))


class SignalingServer:
    def __init__(
        self, node: SfuNode, services: Services, resume_seconds: float = RESUME_SECONDS, join_timeout: float = JOIN_TIMEOUT
    ) -> None:
        self.node = node
        self.services = services
        self.resume_seconds = resume_seconds
        self.join_timeout = join_timeout
        self.sessions: dict[str, Session] = {}
        self._room_watchers: dict[str, asyncio.Task[None]] = {}
        self._closing = TaskSet(log, "closing a signaling connection failed")
        self.recorder: RecorderManager | None = None  # the node's recorder manager, when it has one
        self.member: ClusterMember | None = None  # this node in the cluster, when it is in one
        self.cascade: Cascade | None = None  # meetings over several nodes, in a cluster
        node.removal_listeners.append(self._participant_removed)
        services.meetings.occupancy = lambda meeting_id, identity: seats_taken(node.rooms.get(str(meeting_id)), identity)

    # WebSocket entry --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=15.0)
        await ws.prepare(request)
        connection = Connection(self, ws, request.transport)
        try:
            await connection.run()
        finally:
            session = connection.session
            if session is not None and session.ws is ws:
                session.detach()
            if not ws.closed:
                await connection.outbox.close_connection(WSCloseCode.OK, b"")
            await connection.outbox.stop()
        return ws

    # Joining -----------------------------------------------------------------------------------

    async def join(self, connection: Connection, message: p.Join) -> None:
        try:
            claims = self.services.ctx.room_tokens.decode(message.token)
        except TokenError as exc:
            raise p.ProtocolError("invalid_token", str(exc)) from None
        room_id = str(claims.get("room", ""))
        identity = str(claims["sub"])
        try:
            user_id = None if claims.get("byo") is True else uuid.UUID(identity)  # server-minted: no user
            meeting, _ = await self.services.meetings.member_role(uuid.UUID(room_id), user_id)
        except DatabaseUnavailable:
            raise  # a 503 to try again, not a bad token
        except (ValueError, ServiceError):
            raise p.ProtocolError("invalid_token", "the room token names no meeting") from None
        if meeting.status != LIVE:
            raise p.ProtocolError("meeting_not_live", f"the meeting is {meeting.status}")
        if self.member is not None and not await self.member.admits(room_id, open_here=room_id in self.node.rooms):
            raise p.ProtocolError("wrong_node", "another node hosts this meeting: join again through the API")
        # The participants table decides (removed, waiting) and the room's size (meeting_full).
        entry = await self.services.meetings.enter_room(claims, meeting, seats_taken(self.node.rooms.get(room_id), identity))
        room = self.node.room(room_id)
        room.last_n = int(meeting.settings.get("last_n") or room.last_n)
        self._watch(room)
        session = Session(self, room, claims)
        session.ws = connection.ws
        session.outbox = connection.outbox
        grants = dict(claims.get("grants") or {})
        participant = Participant(
            room, identity, str(claims.get("name") or identity), str(claims.get("role") or "participant"),
            grants, session.send, waiting=entry.waiting,
        )
        participant.metadata = str(claims.get("metadata") or "")[:MAX_METADATA]
        session.participant = participant
        await room.add(participant)  # raises SignalError("removed") for banned identities
        if self.member is not None:
            self.member.touch()
        connection.session = session
        self.sessions[session.session_id] = session
        await session.send(self._joined(session, participant, meeting))

    def _joined(self, session: Session, participant: Participant, meeting: Any) -> dict[str, Any]:
        room = session.room
        return {
            "type": "joined",
            "protocol": p.PROTOCOL_VERSION,
            "session_id": session.session_id,
            "resume_token": session.resume_token,
            "resume_seconds": int(self.resume_seconds),
            "room": room.room_id,
            "participant": participant.info(),
            "participants": [] if participant.waiting else [x.info() for x in room.visible() if x is not participant],
            "tracks": [] if participant.waiting else [t for t in room.tracks() if t["participant"] != participant.identity],
            "waiting": participant.waiting,
            "mute_on_join": bool(meeting.settings.get("mute_on_join")),
            "recording": None if participant.waiting else self._recording(room.room_id),
            "meeting": {"id": str(meeting.id), "title": meeting.title, "code": meeting.code},
            "ice_servers": [s.model_dump() for s in self.services.meetings.ice_servers_for(participant.identity)],
        }

    def _recording(self, room_id: str) -> dict[str, Any] | None:
        """The room's recording, made here or (a meeting over nodes) on another node."""
        local = self.recorder.status(room_id) if self.recorder is not None else None
        if local is None and self.cascade is not None:
            return self.cascade.remote_recording(room_id)
        return local

    async def resume(self, connection: Connection, message: p.Resume) -> None:
        session = self.sessions.get(message.session_id)
        if (
            session is None
            or session.ended
            or not hmac.compare_digest(session.resume_token.encode(), message.resume_token.encode())
        ):
            raise p.ProtocolError("resume_failed", p.ERROR_CODES["resume_failed"])
        old = session.outbox
        if old is not None and old.ws is not connection.ws and not old.ws.closed:
            self.spawn_close(old, WSCloseCode.GOING_AWAY, b"resumed elsewhere")
        connection.session = session
        replayed = session.attach(connection.ws, connection.outbox, message.last_seq)
        await session.send({"type": "resumed", "session_id": session.session_id, "replayed": replayed})

    def _participant_removed(self, participant: Participant, reason: str) -> None:
        if self.member is not None and participant.local:
            self.member.touch()
        for session_id, session in list(self.sessions.items()):
            if session.participant is participant:
                session.ended = True
                if session.expiry is not None:
                    session.expiry.cancel()
                del self.sessions[session_id]
                outbox = session.outbox
                if outbox is not None and not outbox.ws.closed:
                    self.spawn_close(outbox, WSCloseCode.OK, reason.encode()[:100])

    def spawn_close(self, outbox: Outbox, code: int, reason: bytes) -> None:
        self._closing.spawn(outbox.close_connection(code, reason))

    # Room events from the bus (chat, meeting status) -----------------------------------------

    def _watch(self, room: Room) -> None:
        if room.room_id in self._room_watchers:
            return
        task = asyncio.create_task(self._room_events(room), name=f"room-events:{room.room_id}")
        self._room_watchers[room.room_id] = task
        if self.cascade is not None:
            self.cascade.watch(room)

        async def stop_watching(closed: Room) -> None:
            watcher = self._room_watchers.pop(closed.room_id, None)
            if watcher is not None and watcher is not asyncio.current_task():
                watcher.cancel()
            if self.member is not None:
                self._closing.spawn(self.member.room_closed(closed.room_id))

        room.on_empty = stop_watching

    async def _room_events(self, room: Room) -> None:
        try:
            async with self.services.ctx.bus.subscribe(meeting_channel(uuid.UUID(room.room_id))) as events:
                while not room.closed:
                    event = await events.get()
                    if event.get("type") == "chat.message":
                        await self._deliver_chat(room, event["message"])
                    elif event.get("type") == "reaction":
                        await self._deliver_reaction(room, event)
                    elif event.get("type") == server_commands.COMMAND:
                        await self._server_command(room, event)
                    elif event.get("type") == "meeting.status" and event.get("status") in CLOSED:
                        await room.broadcast({"type": "meeting-ended"})
                        await room.close()
        except asyncio.CancelledError:
            pass
        except ConnectionError:
            log.warning("lost the event stream of room %s", room.room_id)

    async def _server_command(self, room: Room, event: dict[str, Any]) -> None:
        try:
            await server_commands.apply(self, room, event)
        except Exception:
            log.exception("a server API command for room %s failed", room.room_id)

    def room_summaries(self) -> list[dict[str, Any]]:
        """This node's rooms and its own participants in them, for the server API."""
        node_id = self.member.node_id if self.member is not None else None
        recording = self.recorder.status if self.recorder is not None else (lambda room_id: None)
        return server_commands.node_rooms(self.node, node_id, recording)

    async def _deliver_chat(self, room: Room, message: dict[str, Any]) -> None:
        recipient = message.get("recipient_id")
        sender = (message.get("sender") or {}).get("id")
        for participant in list(room.participants.values()):
            if participant.waiting:
                continue
            if recipient is None or participant.identity in (recipient, sender):
                await participant.notify({"type": "chat", "message": _chat_payload(message)})

    async def _deliver_reaction(self, room: Room, event: dict[str, Any]) -> None:
        """A reaction from this node or another of the meeting, to this node's participants."""
        identity, emoji = event.get("participant"), event.get("emoji")
        if not isinstance(identity, str) or emoji not in p.REACTIONS:
            return
        await room.broadcast({"type": "reaction", "participant": identity, "emoji": emoji})

    # Requests ----------------------------------------------------------------------------------

    async def on_publish(self, session: Session, participant: Participant, message: p.Publish) -> None:
        result = await participant.publish(message.sdp, [t.model_dump() for t in message.tracks])
        await session.send({"type": "publish-answer", **result})

    async def on_unpublish(self, session: Session, participant: Participant, message: p.Unpublish) -> None:
        await participant.unpublish(message.track_id)

    async def on_subscriber_answer(self, session: Session, participant: Participant, message: p.SubscriberAnswer) -> None:
        participant.answer(message.sdp)

    async def on_ice_candidate(self, session: Session, participant: Participant, message: p.IceCandidate) -> None:
        await participant.add_ice_candidate(message.target, message.candidate, message.sdp_mid, message.sdp_mline_index)

    async def on_mute(self, session: Session, participant: Participant, message: p.Mute) -> None:
        up = participant.uptracks.get(message.track_id)
        if up is None:
            raise SignalError("unknown_track", f"you publish no track {message.track_id}")
        await participant.room.set_muted(up, message.muted)

    async def on_track_settings(self, session: Session, participant: Participant, message: p.TrackSettings) -> None:
        """One track, or a batch whose entries for tracks this subscriber does not receive are
        left out (and listed in one ``unknown_track`` error) while the others apply."""
        wishes = [TrackWish(e.track_id, e.quality, e.width, e.height) for e in message.entries()]
        unknown = participant.set_track_settings(wishes)
        if message.tracks is None and unknown:
            raise SignalError("unknown_track", f"you receive no track {message.track_id}")
        if unknown:
            shown = ", ".join(p.quote(track_id, 20) for track_id in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
            rest = "the other entries were applied" if len(unknown) < len(wishes) else "nothing was applied"
            raise p.ProtocolError(
                "unknown_track", f"you receive no track {shown}; {rest}", [{"track_id": track_id} for track_id in unknown]
            )

    async def on_pin(self, session: Session, participant: Participant, message: p.Pin) -> None:
        participant.set_pins(message.identities)

    async def on_chat(self, session: Session, participant: Participant, message: p.Chat) -> None:
        if not participant.grants.get("can_publish_data") or participant.waiting:
            raise SignalError("data_not_allowed", p.ERROR_CODES["data_not_allowed"])
        recipient = None
        if message.to is not None:
            target = participant.room.participants.get(message.to)
            if target is None or target.hidden:
                raise SignalError("unknown_participant", f"nobody called {message.to} is here")
            try:
                recipient = uuid.UUID(target.identity)
            except ValueError:  # joined with a server-minted token: chat is stored for users only
                raise SignalError("account_needed", "private chat goes to users of this server only") from None
        principal = _principal(participant)
        await self.services.chat.post(principal, uuid.UUID(participant.room.room_id), message.text, recipient, participant.name)

    async def on_raise_hand(self, session: Session, participant: Participant, message: p.RaiseHand) -> None:
        participant.raise_hand(message.raised, time.time())
        participant.room.changed()
        await participant.room.broadcast({"type": "participant-updated", "participant": participant.info()})

    async def on_reaction(self, session: Session, participant: Participant, message: p.Reaction) -> None:
        """Published on the meeting's channel, as chat is: every node of the meeting (this one
        too) hands it to its own participants (``_deliver_reaction``)."""
        if participant.waiting:
            raise SignalError("waiting", p.ERROR_CODES["waiting"])
        if participant.hidden:
            raise SignalError("hidden_participant", p.ERROR_CODES["hidden_participant"])
        ctx = self.services.ctx
        budget = Budget(f"reaction:{participant.room.room_id}", ctx.settings.rate_limits.reactions_per_meeting)
        await reserve(ctx.limiter, [budget], ctx.now().timestamp(), "reactions in this meeting")
        event = {"type": "reaction", "participant": participant.identity, "emoji": message.emoji}
        await self.services.ctx.bus.publish(meeting_channel(uuid.UUID(participant.room.room_id)), event)

    async def on_mute_participant(self, session: Session, participant: Participant, message: p.MuteParticipant) -> None:
        target = self._target(participant.room, message.identity)
        if target.remote is not None and self.cascade is not None:
            await self.cascade.order(participant.room, target.remote, "mute", identity=target.identity, kind=message.kind)
            return
        await self._mute(target, message.kind)

    async def _mute(self, target: Participant, kind: str) -> None:
        for up in target.uptracks.values():
            if up.kind == kind:
                await target.room.set_muted(up, True, by_host=True)
                await target.notify({"type": "muted-by-host", "track_id": up.track_id, "kind": up.kind})

    async def on_remove_participant(self, session: Session, participant: Participant, message: p.RemoveParticipant) -> None:
        room = participant.room
        target = self._target(room, message.identity)
        await self.services.meetings.remove_participant(_principal(participant), uuid.UUID(room.room_id), target.identity)
        if target.remote is not None and self.cascade is not None:
            await self.cascade.order(room, target.remote, "remove", identity=target.identity, by=participant.name)
            return
        await self._remove(target, participant.name)

    async def _remove(self, target: Participant, by: str) -> None:
        await target.notify({"type": "removed", "reason": "removed_by_host", "message": f"{by} removed you"})
        await target.room.remove(target, "removed_by_host")

    async def on_admit(self, session: Session, participant: Participant, message: p.Admit) -> None:
        previous = await self.services.meetings.admit(_principal(participant), uuid.UUID(participant.room.room_id), message.identity)
        if previous == "removed":  # let back in: they may join again
            return
        target = participant.room.participants.get(message.identity)
        if target is not None and target.remote is not None and self.cascade is not None:
            await self.cascade.order(participant.room, target.remote, "admit", identity=message.identity)
            return
        await self._admit(participant.room, message.identity)

    async def _admit(self, room: Room, identity: str) -> None:
        admitted = await room.admit(identity)
        await admitted.notify({"type": "admitted"})
        for sess in self.sessions.values():
            if sess.participant is admitted:
                meeting, _ = await self.services.meetings.member_role(uuid.UUID(admitted.room.room_id), uuid.UUID(admitted.identity))
                await sess.send(self._joined(sess, admitted, meeting))

    async def on_end_meeting(self, session: Session, participant: Participant, message: p.EndMeeting) -> None:
        await self.services.meetings.change_status(_principal(participant), uuid.UUID(participant.room.room_id), "end")

    async def on_start_recording(self, session: Session, participant: Participant, message: p.StartRecording) -> None:
        if self.recorder is None:
            raise SignalError("recording_unavailable", p.ERROR_CODES["recording_unavailable"])
        await self.recorder.start(uuid.UUID(participant.room.room_id), message.layout, by=participant.identity)

    async def on_stop_recording(self, session: Session, participant: Participant, message: p.StopRecording) -> None:
        if self.recorder is None:
            raise SignalError("recording_unavailable", p.ERROR_CODES["recording_unavailable"])
        await self.recorder.stop(uuid.UUID(participant.room.room_id))

    async def on_leave(self, session: Session, participant: Participant, message: p.Leave) -> None:
        session.ended = True
        await participant.room.remove(participant, "left")

    async def on_order(self, room: Room, order: dict[str, Any]) -> None:
        """A host on another node of the meeting acts on a participant of this one."""
        target = room.participants.get(str(order.get("identity")))
        if target is None or not target.local:
            return
        action = order.get("action")
        if action == "mute" and order.get("kind") in ("audio", "video"):
            await self._mute(target, str(order["kind"]))
        elif action == "remove":
            await self._remove(target, str(order.get("by") or "A host"))
        elif action == "admit" and target.waiting:
            await self._admit(room, target.identity)

    def _target(self, room: Room, identity: str) -> Participant:
        target = room.participants.get(identity)
        if target is None or target.relay_for is not None:
            raise SignalError("unknown_participant", f"nobody called {identity} is here")
        return target

    async def ask_to_reconnect(self) -> int:
        """Tell everyone on this node to join again through the API (the node is draining); how
        many were told."""
        told = 0
        for room in list(self.node.rooms.values()):
            told += len(room.participants)
            await room.broadcast({"type": "reconnect", "reason": "node_draining"})
        return told

    async def close(self) -> None:
        await self._closing.wait()
        for task in list(self._room_watchers.values()):
            task.cancel()
        for task in list(self._room_watchers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._room_watchers.clear()
        for session in list(self.sessions.values()):
            if session.expiry is not None:
                session.expiry.cancel()
            if session.outbox is not None and not session.outbox.ws.closed:
                await session.outbox.close_connection(WSCloseCode.GOING_AWAY, b"server shutdown")


def seats_taken(room: Room | None, identity: str) -> int:
    """Everyone in the room but ``identity`` (who would replace their own earlier session)."""
    if room is None:
        return 0
    return sum(1 for other, p in room.participants.items() if other != identity and p.relay_for is None)


def _principal(participant: Participant) -> Principal:
    """The user behind a participant, for what the control API stores in their name (chat) or
    checks against their role (removal, admission, the end of the meeting).  Participants who
    joined with a server-minted token are no user: they are refused (``account_needed``)."""
    try:
        return Principal(uuid.UUID(participant.identity), "", participant.name, "UTC")
    except ValueError:
        raise SignalError("account_needed", p.ERROR_CODES["account_needed"]) from None


def _chat_payload(message: dict[str, Any]) -> dict[str, Any]:
    sender = message.get("sender")
    return {
        "id": message["id"],
        "sender": {"identity": str(sender["id"]), "name": sender["display_name"]} if sender else None,
        "recipient_id": message.get("recipient_id"),
        "private": bool(message.get("private")),
        "body": message["body"],
        "created_at": message["created_at"],
    }
