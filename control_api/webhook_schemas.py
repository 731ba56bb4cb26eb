"""Request and response bodies of the webhook endpoints (``/api/server/webhooks``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from control_api.schemas import Cursor, In, Out, Query
from control_api.webhook_format import EVENT_TYPES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
WebhookUrl = Annotated[str, StringConstraints(min_length=8, max_length=2000, pattern=r"^https?://")]
Email = Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Description = Annotated[str, StringConstraints(max_length=200)]


class WebhookCreateIn(In):
    url: WebhookUrl
    events: list[EventType] = Field(
        default=[], max_length=len(EVENT_TYPES),
        description="Event types to receive; empty: every type but the opt-in ones (chat.message)",
    )
    ordered: bool = Field(
        default=False, description="Deliver one meeting's events one at a time, in order",
    )
    enabled: bool = True
    notify_email: Email | None = Field(
        default=None, description="The account told (a notification) when the endpoint is disabled for failing",
    )
    description: Description = ""


class WebhookPatchIn(In):
    url: WebhookUrl | None = None
    events: list[EventType] | None = Field(default=None, max_length=len(EVENT_TYPES))
    ordered: bool | None = None
    enabled: bool | None = Field(default=None, description="true also clears the reason it was disabled")
    notify_email: Email | None = None
    description: Description | None = None


class WebhookOut(Out):
    id: uuid.UUID
    url: str
    events: list[str]
    ordered: bool
    enabled: bool
    disabled_reason: str | None
    notify_email: str | None
    description: str
    created_at: datetime
    updated_at: datetime
    failing_since: datetime | None


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_...), shown only in this answer")


class WebhookList(Out):
    items: list[WebhookOut]


class DeliveryOut(Out):
    id: int
    endpoint_id: uuid.UUID
    event_id: str = Field(description="The webhook-id header: the same on every attempt and redelivery")
    event_type: str
    meeting_id: uuid.UUID | None
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime


class DeliveryPage(Out):
    items: list[DeliveryOut]
    next_cursor: str | None


class DeliveriesQuery(Query):
    status: Literal["pending", "succeeded", "failed"] | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: Cursor | None = None
