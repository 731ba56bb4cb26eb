"""The room's webhook events: participant.joined, participant.left (with the reason),
track.published and track.unpublished.

The node tells its listeners synchronously, from the media path; the events go into a bounded
queue (``EventQueue``) that a task of its own writes to the database.  In a cluster each node
reports only its own participants (not those mirrored from other nodes, nor relay feeds), so that
each event is written once.  Hidden participants, and people still in the waiting room, make no
events.
"""

from __future__ import annotations

import uuid
from typing import Any

from control_api.services.webhooks import EventQueue
from sfu.forwarding import UpTrack
from sfu.room import Participant, SfuNode


def _participant(participant: Participant) -> dict[str, Any]:
    return {"identity": participant.identity, "name": participant.name, "role": participant.role}


class RoomActivity:
    def __init__(self, node: SfuNode, queue: EventQueue, node_id: str) -> None:
        self.queue = queue
        self.node_id = node_id
        node.activity_listeners.append(self._activity)
        node.removal_listeners.append(self._removed)

    def _emit(self, event_type: str, participant: Participant, **extra: Any) -> None:
        meeting_id = _meeting(participant.room.room_id)
        data = {
            "meeting_id": str(meeting_id) if meeting_id else participant.room.room_id,
            "participant": _participant(participant),
            "node": self.node_id,
            **extra,
        }
        self.queue.put(event_type, data, meeting_id)

    @staticmethod
    def _counts(participant: Participant) -> bool:
        return participant.local and not participant.hidden and not participant.waiting

    def _activity(self, kind: str, participant: Participant, up: UpTrack | None) -> None:
        if not self._counts(participant):
            return
        if kind == "joined":
            self._emit("participant.joined", participant)
        elif up is not None and kind in ("track_published", "track_unpublished"):
            track = {"id": up.track_id, "kind": up.kind, "source": up.source}
            self._emit("track." + kind.removeprefix("track_"), participant, track=track)

    def _removed(self, participant: Participant, reason: str) -> None:
        if self._counts(participant):
            self._emit("participant.left", participant, reason=reason)


def _meeting(room_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(room_id)
    except ValueError:
        return None
