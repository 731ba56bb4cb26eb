"""What the server API asks of the nodes, and what the nodes tell it about their rooms.

Commands travel on the meeting's event channel (``meeting_channel``), which every node with a
room of the meeting reads (``SignalingServer._room_events``), as chat and reactions do: so a
call to the API of any node reaches the participant wherever it is connected.  Each node acts
only on its own participants (remove, mute, grants, metadata) and hands messages only to its
own participants; a participant's new metadata reaches the other nodes through the cascade's
room state.  A command naming a ``node`` (recordings) is for that node alone.

Each node describes its rooms with ``node_rooms``: its own participants only (those relayed
from other nodes are described by their own node), so that the API can merge every node's
description into the meeting's whole room.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control_api.services.server_api import COMMAND as COMMAND  # the event type the API publishes
from sfu.room import MAX_METADATA, Participant, Room, SfuNode

if TYPE_CHECKING:
    from signaling.server import SignalingServer

log = logging.getLogger(__name__)

MAX_SUMMARY_PARTICIPANTS = 1000  # per room and node, in what a node reports
LIVE_GRANTS = ("can_publish", "can_subscribe", "can_publish_data", "room_admin")


def participant_summary(participant: Participant) -> dict[str, Any]:
    return {
        **participant.info(),
        "joined_at": participant.joined_at,
        "waiting": participant.waiting,
        "hidden": participant.hidden,
        "grants": {k: bool(v) for k, v in participant.grants.items()},
    }


def node_rooms(node: SfuNode, node_id: str | None, recording: Any) -> list[dict[str, Any]]:
    """This node's rooms with its own participants; ``recording(room_id)`` is the recording
    this node makes of a room, or None."""
    rooms = []
    for room in list(node.rooms.values()):
        local = room.local_participants()
        if room.closed or not local:
            continue
        rooms.append({
            "meeting_id": room.room_id,
            "node": node_id,
            "opened_at": room.opened_at,
            "participants": [participant_summary(p) for p in local[:MAX_SUMMARY_PARTICIPANTS]],
            "recording": recording(room.room_id),
        })
    return rooms


@dataclass(frozen=True)
class Delivery:
    """A message from the server to the room (``identity`` None) or to one participant."""

    kind: str  # "data" or "chat"
    identity: str | None
    payload: Any
    topic: str | None

    def message(self) -> dict[str, Any]:
        if self.kind == "chat":
            return {"type": "chat", "message": {
                "id": 0, "sender": None, "recipient_id": self.identity, "private": self.identity is not None,
                "body": str(self.payload), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }}
        return {"type": "data", "sender": None, "topic": self.topic, "payload": self.payload}


async def apply(server: SignalingServer, room: Room, event: dict[str, Any]) -> None:
    """One command from the server API, as this node's part of it."""
    action = event.get("action")
    if action == "message":
        delivery = Delivery(str(event.get("kind")), event.get("identity"), event.get("payload"), event.get("topic"))
        for participant in room.local_participants():
            if not participant.waiting and delivery.identity in (None, participant.identity):
                await participant.notify(delivery.message())
        return
    if action in ("record-start", "record-stop"):
        await _record(server, room, action, event)
        return
    target = room.participants.get(str(event.get("identity")))
    if target is None or not target.local:
        return
    if action == "remove":
        await target.notify({"type": "removed", "reason": "removed_by_server", "message": "the server removed you"})
        await room.remove(target, "removed_by_server")
    elif action == "mute":
        up = target.uptracks.get(str(event.get("track_id")))
        if up is not None:
            muted = bool(event.get("muted"))
            await room.set_muted(up, muted, by_host=True)
            if muted:
                await target.notify({"type": "muted-by-host", "track_id": up.track_id, "kind": up.kind})
    elif action == "update":
        await update(target, event.get("grants"), event.get("metadata"))


async def update(target: Participant, grants: Any, metadata: Any) -> None:
    """New grants (those in ``LIVE_GRANTS``) and metadata for a participant of this node: it
    gets ``grants-updated``, everyone here ``participant-updated``, the other nodes the new
    metadata with the room's state."""
    if isinstance(grants, dict):
        await target.set_grants({k: bool(v) for k, v in grants.items() if k in LIVE_GRANTS})
        await target.notify({"type": "grants-updated", "grants": {k: bool(v) for k, v in target.grants.items()}})
    if isinstance(metadata, str):
        target.metadata = metadata[:MAX_METADATA]
    target.room.changed()
    if not target.hidden and not target.waiting:
        await target.room.broadcast({"type": "participant-updated", "participant": target.info()})


async def _record(server: SignalingServer, room: Room, action: str, event: dict[str, Any]) -> None:
    here = server.member.node_id if server.member is not None else None
    if event.get("node") != here or server.recorder is None:
        return
    try:
        if action == "record-start":
            await server.recorder.start(uuid.UUID(room.room_id), event.get("layout"), by=None)
        else:
            await server.recorder.stop(uuid.UUID(room.room_id))
    except Exception as exc:  # the API that asked reads the outcome from the recordings table
        log.warning("a server API %s of meeting %s failed: %s", action, room.room_id, exc)
