"""What a webhook delivery looks like on the wire (the Standard Webhooks specification), and when
a failed one is tried again.  Pure: no I/O, and the clock and the random source are arguments.

A delivery is a POST of the event's JSON with three headers: ``webhook-id`` (the event's id, the
same on every attempt and on a redelivery, so that a receiver can drop duplicates),
``webhook-timestamp`` (UNIX seconds of this attempt, so that a receiver can refuse replays) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body`` keyed with the
base64-decoded part of the endpoint's ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"

# Event types; the opt-in ones reach only endpoints that name them.
EVENT_TYPES = (
    "meeting.started",
    "meeting.ended",
    "participant.joined",
    "participant.left",
    "track.published",
    "track.unpublished",
    "recording.started",
    "recording.ready",
    "recording.failed",
    "chat.message",
    "node.draining",
)
OPT_IN = frozenset({"chat.message"})


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (a secret without the prefix is taken as base64 too)."""
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(encoded, validate=True)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


def wanted(filter_: list[str], event_type: str) -> bool:
    """Whether an endpoint with this event filter takes ``event_type``: an empty filter takes
    every event but the opt-in ones."""
    if filter_:
        return event_type in filter_
    return event_type not in OPT_IN


@dataclass(frozen=True)
class RetryPolicy:
    """``delays``: seconds before the 2nd, 3rd, ... attempt; after the last, ``delays[-1]``
    again, until ``window`` seconds have passed since the event: then the delivery has failed.
    Each delay is spread by +-``jitter`` (a fraction) so that retries of many deliveries do not
    arrive together."""

    delays: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600)
    window: float = 86400
    jitter: float = 0.2

    def after_failure(self, attempts: int, age: float, rng: random.Random) -> float | None:
        """Seconds until the next try of a delivery that has failed ``attempts`` times (>= 1)
        and is ``age`` seconds old; None: its window has passed, it has failed for good."""
        base = self.delays[min(attempts, len(self.delays)) - 1]
        delay = base * (1 + self.jitter * (2 * rng.random() - 1))
        return None if age + delay > self.window else delay
