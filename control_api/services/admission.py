"""Who may be in a meeting: the waiting room, removal by a host, and the participant limit.

The decisions are pure functions of what the participants table says (``admission``: waiting,
admitted or removed) and of how many people the meeting's room holds, so that REST (chat,
participants, room tokens) and signaling (entering the room) decide alike.

- The waiting room holds everyone joining a meeting that has one, except the host, co-hosts and
  invitees; once a host admits someone, that holds for their later joins.
- A removed person is refused everywhere (room tokens, the room, chat, the participant list)
  until a host lets them back in (``admit`` over signaling, ``readmit`` over REST).
- ``settings.max_participants`` counts everyone in the room, the waiting room, hosts and hidden
  participants included (the recorder is no participant).  Over it, joining is a 409
  ``meeting_full``; the meeting's host is never refused, so that nobody can fill a meeting to
  lock its host out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from control_api.errors import ServiceError, conflict, forbidden

ADMITTED, WAITING, REMOVED = "admitted", "waiting", "removed"


@dataclass(frozen=True)
class RoomEntry:
    """How someone enters the room: held in the waiting room or not."""

    waiting: bool


def admission_on_join(previous: str | None, waiting_room: bool, admin: bool, role: str | None) -> str:
    if previous == ADMITTED:
        return ADMITTED
    held = waiting_room and not admin and role != "guest"
    return WAITING if held else ADMITTED


def removed() -> ServiceError:
    return forbidden("a host removed you from this meeting", code="removed")


def presence_refusal(admission: str | None, *, waiting_ok: bool = False) -> ServiceError | None:
    """Why someone may not take part (chat, the participant list, a room token, the room)."""
    if admission == REMOVED:
        return removed()
    if admission == WAITING and not waiting_ok:
        return forbidden("a host has not admitted you yet", code="waiting")
    return None


def capacity_refusal(seats_taken: int, settings: dict[str, Any], is_host: bool) -> ServiceError | None:
    limit = int(settings.get("max_participants") or 0)
    if is_host or not limit or seats_taken < limit:
        return None
    return conflict(
        "meeting_full", f"the meeting is full: it allows {limit} people", {"max_participants": limit}
    )
