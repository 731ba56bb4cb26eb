"""The server API's service: rooms and participants as the nodes see them, actions on them,
recordings, the end of a meeting, and room tokens for identities of the caller's own.

Where rooms are known: each node describes its rooms and its own participants
(``SignalingServer.room_summaries``).  Outside a cluster this process is the only node and asks
it directly (``local_rooms``); in a cluster each node also writes its description to Redis with
every heartbeat (every second, and at once on a join or a leave; it expires with the
heartbeat), and this service merges every living node's, its own taken fresh.  So any node
answers for the whole cluster, at most about a second behind.

Actions on participants are published on the meeting's event channel, which every node of the
meeting reads, and done by the node the participant is connected to (``signaling.
server_commands``); they are accepted (202) once the participant is known to be in the room.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from control_api.errors import ServiceError, conflict, invalid, not_found, unavailable
from control_api.schemas import (
    Grants,
    ParticipantUpdateIn,
    RecordingOut,
    RoomTokenIn,
    RoomTokenOut,
    ServerMessageIn,
    ServerParticipantList,
    ServerParticipantOut,
    ServerRecordingStatus,
    ServerRoomDetailOut,
    ServerRoomList,
    ServerRoomOut,
    ServerTrackOut,
)
from control_api.services.context import Outbox, ServiceContext
from control_api.services.meetings import MeetingService, join_refusal, meeting_channel
from control_api.services.recordings import RecordingService
from control_api.storage.tables import CLOSED, LIVE, meetings, recordings

COMMAND = "server.command"  # the event type of a command on the meeting's channel
MAX_PAYLOAD = 16 * 1024  # bytes of a message's JSON payload
MAX_CHAT = 4000
RECORDING_WAIT = 10.0  # seconds to wait for another node to start or stop a recording

RoomSource = Callable[[], list[dict[str, Any]]]


def merge_rooms(by_node: dict[str | None, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every node's description of its rooms, merged per meeting: its nodes, its participants
    (a participant listed by two nodes, as it moves, once: the latest join), its recording."""
    merged: dict[str, dict[str, Any]] = {}
    for node, rooms in by_node.items():
        for room in rooms:
            meeting_id = room.get("meeting_id")
            if not isinstance(meeting_id, str):
                continue
            entry = merged.setdefault(meeting_id, {"nodes": [], "participants": {}, "recording": None})
            if node is not None and node not in entry["nodes"]:
                entry["nodes"].append(node)
            entry["recording"] = entry["recording"] or room.get("recording")
            for person in room.get("participants") or []:
                if not isinstance(person, dict) or not isinstance(person.get("identity"), str):
                    continue
                known = entry["participants"].get(person["identity"])
                if known is None or person.get("joined_at", 0) > known.get("joined_at", 0):
                    entry["participants"][person["identity"]] = {**person, "node": node}
    for entry in merged.values():
        entry["nodes"].sort()
    return merged


def _participant_out(person: dict[str, Any]) -> ServerParticipantOut:
    return ServerParticipantOut(
        identity=person["identity"],
        name=str(person.get("name") or person["identity"]),
        role=str(person.get("role") or "participant"),
        node=person.get("node"),
        joined_at=datetime.fromtimestamp(float(person.get("joined_at") or 0), tz=timezone.utc),
        waiting=bool(person.get("waiting")),
        hidden=bool(person.get("hidden")),
        hand_raised=bool(person.get("hand_raised")),
        metadata=str(person.get("metadata") or ""),
        grants={str(k): bool(v) for k, v in (person.get("grants") or {}).items()},
        tracks=[ServerTrackOut(**track) for track in person.get("tracks") or []],
    )


class ServerApiService:
    def __init__(self, ctx: ServiceContext, meetings: MeetingService, recordings: RecordingService) -> None:
        self.ctx = ctx
        self.meetings = meetings
        self.recordings = recordings
        # This node's rooms; set by the signaling server of this process (none without one).
        self.local_rooms: RoomSource = lambda: []

    # Rooms and participants -------------------------------------------------------------------

    async def _rooms(self) -> dict[str, dict[str, Any]]:
        cluster = self.ctx.cluster
        if cluster is None:
            return merge_rooms({None: self.local_rooms()})
        try:
            nodes = [node.id for node in await cluster.nodes()]
            by_node: dict[str | None, list[dict[str, Any]]] = dict(await cluster.node_rooms(nodes))
        except Exception as exc:  # Redis away
            raise unavailable("cluster_unavailable", f"the cluster registry cannot be read: {exc}") from None
        by_node[self.ctx.settings.effective_node_id] = self.local_rooms()
        return merge_rooms(by_node)

    async def _meeting_rows(self, ids: list[str]) -> dict[str, Any]:
        if not ids:
            return {}
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(select(meetings).where(meetings.c.id.in_([uuid.UUID(i) for i in ids])))).all()
        return {str(row.id): row for row in rows}

    @staticmethod
    def _room_out(row: Any, entry: dict[str, Any], detail: bool) -> ServerRoomOut:
        people = list(entry["participants"].values())
        recording = entry.get("recording")
        fields = {
            "meeting_id": row.id,
            "title": row.title,
            "code": row.code,
            "nodes": entry["nodes"],
            "started_at": row.started_at,
            "num_participants": sum(1 for p in people if not p.get("hidden")),
            "num_tracks": sum(len(p.get("tracks") or []) for p in people),
            "recording": ServerRecordingStatus(**recording) if isinstance(recording, dict) else None,
        }
        if detail:
            return ServerRoomDetailOut(**fields, participants=[_participant_out(p) for p in people])
        return ServerRoomOut(**fields)

    async def list_rooms(self) -> ServerRoomList:
        rooms = await self._rooms()
        rows = await self._meeting_rows(list(rooms))
        items = [self._room_out(rows[i], entry, False) for i, entry in rooms.items() if i in rows and rows[i].status == LIVE]
        items.sort(key=lambda room: (room.started_at or datetime.min.replace(tzinfo=timezone.utc), str(room.meeting_id)))
        return ServerRoomList(items=items)

    async def _room(self, meeting_id: uuid.UUID) -> tuple[Any, dict[str, Any]]:
        rooms = await self._rooms()
        entry = rooms.get(str(meeting_id))
        rows = await self._meeting_rows([str(meeting_id)])
        row = rows.get(str(meeting_id))
        if row is None:
            raise not_found("meeting")
        if entry is None or row.status != LIVE:
            raise ServiceError(404, "room_not_found", "nobody is in this meeting's room")
        return row, entry

    async def get_room(self, meeting_id: uuid.UUID) -> ServerRoomDetailOut:
        row, entry = await self._room(meeting_id)
        return self._room_out(row, entry, True)  # type: ignore[return-value]

    async def list_participants(self, meeting_id: uuid.UUID) -> ServerParticipantList:
        _, entry = await self._room(meeting_id)
        return ServerParticipantList(items=[_participant_out(p) for p in entry["participants"].values()])

    async def _person(self, meeting_id: uuid.UUID, identity: str) -> dict[str, Any]:
        _, entry = await self._room(meeting_id)
        person = entry["participants"].get(identity)
        if person is None:
            raise ServiceError(404, "participant_not_found", "nobody with this identity is in the room")
        return person

    async def get_participant(self, meeting_id: uuid.UUID, identity: str) -> ServerParticipantOut:
        return _participant_out(await self._person(meeting_id, identity))

    # Actions ------------------------------------------------------------------------------------

    async def _command(self, meeting_id: uuid.UUID, action: str, **fields: Any) -> None:
        event = {"type": COMMAND, "action": action, "meeting_id": str(meeting_id), **fields}
        await self.ctx.bus.publish(meeting_channel(meeting_id), event)

    async def remove(self, meeting_id: uuid.UUID, identity: str) -> None:
        await self._person(meeting_id, identity)
        await self._command(meeting_id, "remove", identity=identity)

    async def mute(self, meeting_id: uuid.UUID, identity: str, track_id: str, muted: bool) -> None:
        person = await self._person(meeting_id, identity)
        if not any(track.get("track_id") == track_id for track in person.get("tracks") or []):
            raise ServiceError(404, "track_not_found", "this participant publishes no such track")
        await self._command(meeting_id, "mute", identity=identity, track_id=track_id, muted=muted)

    async def update(self, meeting_id: uuid.UUID, identity: str, body: ParticipantUpdateIn) -> None:
        if body.grants is None and body.metadata is None:
            raise invalid("give grants, metadata or both")
        await self._person(meeting_id, identity)
        grants = body.grants.model_dump(exclude_none=True) if body.grants is not None else None
        await self._command(meeting_id, "update", identity=identity, grants=grants, metadata=body.metadata)

    async def send(self, meeting_id: uuid.UUID, body: ServerMessageIn) -> None:
        if body.kind == "chat":
            if not isinstance(body.payload, str) or not 1 <= len(body.payload.strip()) <= MAX_CHAT:
                raise invalid(f"a chat payload is text of 1 to {MAX_CHAT} characters")
        elif len(json.dumps(body.payload)) > MAX_PAYLOAD:
            raise invalid(f"the payload is over {MAX_PAYLOAD} bytes of JSON")
        if body.identity is not None:
            await self._person(meeting_id, body.identity)
        else:
            await self._room(meeting_id)
        await self._command(
            meeting_id, "message", kind=body.kind, identity=body.identity, topic=body.topic, payload=body.payload
        )

    async def end_meeting(self, meeting_id: uuid.UUID) -> None:
        """As its host would: everyone is told and leaves, on every node."""
        outbox = Outbox()
        async with self.ctx.db.write() as conn:
            row, _ = await self.meetings.load(conn, meeting_id, None)  # type: ignore[arg-type]
            await self.meetings.transition(conn, outbox, row, "end", row.host_id)
        await outbox.flush(self.ctx.bus)

    # Recordings ---------------------------------------------------------------------------------

    async def start_recording(self, meeting_id: uuid.UUID, layout: str | None) -> RecordingOut:
        """Made by this node when it has participants of the meeting, else asked of a node that
        has (the answer waits until that node has started it)."""
        controller = self.recordings.controller
        if controller is None:
            raise unavailable("recording_unavailable", "this server has no recorder")
        row, entry = await self._room(meeting_id)
        if not row.settings.get("allow_recording", True):
            raise conflict("recording_not_allowed", "this meeting does not allow recording")
        here = self.ctx.settings.effective_node_id if self.ctx.cluster is not None else None
        if self.ctx.cluster is None or here in entry["nodes"]:
            return await controller.start(meeting_id, layout, by=None)
        if entry.get("recording"):
            raise conflict("already_recording", "the meeting is being recorded already")
        await self._command(meeting_id, "record-start", node=entry["nodes"][0], layout=layout)
        found = await self._wait_recording(meeting_id, lambda r: r.status == "recording")
        if found is None:
            raise unavailable("recording_unavailable", f"node {entry['nodes'][0]} did not start the recording")
        return self.recordings.out(found)

    async def stop_recording(self, meeting_id: uuid.UUID) -> RecordingOut:
        controller = self.recordings.controller
        if controller is None:
            raise unavailable("recording_unavailable", "this server has no recorder")
        if controller.status(str(meeting_id)) is not None or self.ctx.cluster is None:
            recording_id = await controller.stop(meeting_id)
            found = await self._wait_recording(meeting_id, lambda r: r.id == recording_id, wait=0)
        else:
            _, entry = await self._room(meeting_id)
            recording = entry.get("recording")
            if not recording:
                raise conflict("not_recording", "the meeting is not being recorded")
            recording_id = uuid.UUID(recording["recording_id"])
            owner = next((n for n in entry["nodes"] if n), None)
            for node in entry["nodes"]:
                await self._command(meeting_id, "record-stop", node=node)
            found = await self._wait_recording(meeting_id, lambda r: r.id == recording_id and r.status != "recording")
            if found is None:
                raise unavailable("recording_unavailable", f"node {owner} did not stop the recording")
        assert found is not None
        return self.recordings.out(found)

    async def _wait_recording(self, meeting_id: uuid.UUID, match: Callable[[Any], bool], wait: float = RECORDING_WAIT) -> Any:
        """The newest recording of the meeting that ``match``es, looked for until ``wait`` s pass."""

        async def found() -> Any:
            async with self.ctx.db.read() as conn:
                rows = (
                    await conn.execute(
                        select(recordings).where(recordings.c.meeting_id == meeting_id).order_by(recordings.c.started_at.desc()).limit(5)
                    )
                ).all()
            return next((row for row in rows if match(row)), None)

        # (``clients.loadtest.polling.until`` would do, but the control API does not import clients)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (row := await found()) is None and loop.time() < deadline:
            await asyncio.sleep(0.1)
        return row

    # Tokens -------------------------------------------------------------------------------------

    async def mint_token(self, body: RoomTokenIn) -> RoomTokenOut:
        """A room token for an identity of the caller's own (no user of this server).  The
        meeting must not have ended; it must be live when the token is used."""
        async with self.ctx.db.read() as conn:
            row, _ = await self.meetings.load(conn, body.meeting_id, None)  # type: ignore[arg-type]
        refusal = join_refusal(row, True, False) if row.status in CLOSED else None
        if refusal is not None:
            raise refusal
        grants = Grants(**body.grants.model_dump(), recorder=False)
        name = body.name or body.identity
        token, expires_at = self.ctx.room_tokens.encode(
            {
                "sub": body.identity,
                "name": name,
                "room": str(body.meeting_id),
                "role": "participant",
                "grants": grants.model_dump(),
                "waiting": False,
                "jti": uuid.uuid4().hex,
                "byo": True,
                "metadata": body.metadata,
            },
            body.ttl_seconds,
        )
        signaling_url, node = await self.meetings.room_node(body.meeting_id)
        return RoomTokenOut(
            token=token,
            join_url=f"{self.ctx.settings.base_url}/#/room/{token}",
            expires_at=expires_at,
            signaling_url=signaling_url,
            node=node,
            ice_servers=self.meetings.ice_servers_for(body.identity),
            identity=body.identity,
            grants=grants,
        )
