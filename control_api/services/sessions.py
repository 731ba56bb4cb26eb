"""Sessions that end while a long-lived connection (the notification stream) still holds one.

Access tokens carry ``sid`` (their login's refresh-token family) and ``ver`` (the user's token
version).  Signing out or a stolen refresh token coming back ends one family; a password change
raises the version, which ends every session from before it.  Both are published on the user's
channel, so that a stream on any node ends at once; a stream also ends when its access token
expires (the client reconnects with a fresh one).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

SESSION_ENDED = "session.ended"


@dataclass(frozen=True)
class StreamSession:
    """What a stream needs to know about the access token it was opened with."""

    session_id: str | None
    version: int | None
    expires_at: float


def signed_out(family_id: uuid.UUID) -> dict[str, Any]:
    return {"type": SESSION_ENDED, "session": str(family_id)}


def password_changed(new_version: int) -> dict[str, Any]:
    return {"type": SESSION_ENDED, "before_version": new_version}


def end_reason(event: dict[str, Any], session: StreamSession) -> str | None:
    """Why ``event`` ends a stream of ``session``, or None."""
    if event.get("type") != SESSION_ENDED:
        return None
    if session.session_id is not None and event.get("session") == session.session_id:
        return "signed_out"
    before = event.get("before_version")
    if isinstance(before, int) and (session.version is None or session.version < before):
        return "password_changed"
    return None
