"""Verifying VideoConf webhooks on the receiving side (the Standard Webhooks scheme).

    from clients.sdk.webhooks import verify, WebhookVerificationError

    try:
        event = verify(secret, request.headers, await request.read())
    except WebhookVerificationError:
        return web.Response(status=400)

``event`` is the parsed JSON: ``{"id", "type", "timestamp", "data"}``.  Keep the ids of events
already handled for longer than ``tolerance`` to drop redeliveries: a delivery may come more than
once, and a retry or redelivery carries the same ``webhook-id``.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from control_api.webhook_format import signature


class WebhookVerificationError(Exception):
    """The delivery is not authentic (or too old to accept); the message says which."""


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance: float = 300, now: float | None = None
) -> dict[str, Any]:
    """The event of an authentic delivery, or WebhookVerificationError.  ``headers``: any mapping,
    looked up case-insensitively; ``tolerance``: seconds the timestamp may be off ``now``."""
    lower = {key.lower(): value for key, value in headers.items()}
    webhook_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not webhook_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance:g} s off (a replay?)")
    try:
        expected = signature(secret, webhook_id, timestamp, body)
    except ValueError:
        raise WebhookVerificationError("the secret is not a whsec_ secret") from None
    # The header may list several space-separated signatures (during a secret rotation).
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise WebhookVerificationError("no signature matches: wrong secret, or the body was changed")
    try:
        event = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event
