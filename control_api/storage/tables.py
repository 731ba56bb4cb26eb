"""The one schema, shared by SQLite and PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on both backends.

    PostgreSQL stores ``timestamptz``.  SQLite has no timezone type, so values are converted to UTC
    and stored without an offset; reading attaches UTC again.  Naive datetimes are refused so
    that a local time can never be stored by mistake.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

MEETING_STATUSES = ("scheduled", "live", "ended", "cancelled")
SCHEDULED, LIVE, ENDED, CANCELLED = MEETING_STATUSES
CLOSED = (ENDED, CANCELLED)  # a meeting in either status is over for good
RECORDING_STATUSES = ("recording", "processing", "ready", "failed")
MEMBER_ROLES = ("cohost", "guest")
ADMISSIONS = ("waiting", "admitted", "removed")


def one_of(column: str, values: tuple[str, ...]) -> str:
    """A check constraint's SQL: ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("token_version", Integer, nullable=False, server_default="0"),
    Column("calendar_token_hash", String(64), nullable=True, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("password_changed_at", UTCDateTime, nullable=False),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("family_id", Uuid, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("user_agent", String(300), nullable=True),
    Index("ix_refresh_tokens_family", "family_id"),
    Index("ix_refresh_tokens_user", "user_id"),
)

meetings = Table(
    "meetings",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("code", String(16), nullable=False, unique=True),
    Column("host_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("passcode", String(32), nullable=True),
    Column("settings", JsonType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    CheckConstraint(one_of("status", MEETING_STATUSES), name="status"),
    CheckConstraint("kind IN ('instant', 'scheduled')", name="kind"),
    CheckConstraint("end_time > start_time", name="times"),
    Index("ix_meetings_host_start", "host_id", "start_time"),
    Index("ix_meetings_status_start", "status", "start_time"),
)

invitations = Table(
    "invitations",
    metadata,
    Column("meeting_id", Uuid, ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("invited_by", Uuid, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(one_of("role", MEMBER_ROLES), name="role"),
    Index("ix_invitations_user", "user_id"),
)

participants = Table(
    "participants",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("meeting_id", Uuid, ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("first_joined_at", UTCDateTime, nullable=False),
    Column("last_joined_at", UTCDateTime, nullable=False),
    Column("left_at", UTCDateTime, nullable=True),
    Column("join_count", Integer, nullable=False, server_default="1"),
    # The one truth REST and signaling read: held by the waiting room, admitted, or removed by a
    # host (who alone can let a removed person back in).
    Column("admission", String(16), nullable=False, server_default="admitted"),
    Column("removed_at", UTCDateTime, nullable=True),
    CheckConstraint(one_of("admission", ADMISSIONS), name="admission"),
    UniqueConstraint("meeting_id", "user_id", name="uq_participants_meeting_user"),
    Index("ix_participants_user", "user_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("meeting_id", Uuid, ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False),
    Column("sender_id", Uuid, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("sender_name", String(100), nullable=False),
    Column("recipient_id", Uuid, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_messages_meeting_id", "meeting_id", "id"),
)

recordings = Table(
    "recordings",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("meeting_id", Uuid, ForeignKey("meetings.id", ondelete="SET NULL"), nullable=True),
    Column("owner_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("meeting_title", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("file_name", String(255), nullable=True),
    Column("content_type", String(100), nullable=False, server_default="video/mp4"),
    Column("size_bytes", BigInteger, nullable=True),
    Column("duration_seconds", Integer, nullable=True),
    Column("participants", JsonType, nullable=False),
    Column("error", Text, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(one_of("status", RECORDING_STATUSES), name="status"),
    Index("ix_recordings_owner_started", "owner_id", "started_at"),
    Index("ix_recordings_meeting", "meeting_id"),
)

calendar_events = Table(
    "calendar_events",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "meeting_id",
        Uuid,
        ForeignKey("meetings.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("uid", String(255), nullable=False, unique=True),
    Column("sequence", Integer, nullable=False, server_default="0"),
    Column("summary", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("location", String(500), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("status IN ('CONFIRMED', 'CANCELLED')", name="status"),
    Index("ix_calendar_events_starts", "starts_at"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("meeting_id", Uuid, ForeignKey("meetings.id", ondelete="CASCADE"), nullable=True),
    Column("data", JsonType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("read_at", UTCDateTime, nullable=True),
    Index("ix_notifications_user_created", "user_id", "created_at"),
)

# Server API keys (`videoconf keys create`): the key's id is public; of its secret, an Ed25519
# private key's seed shown once, only the public key is kept, which verifies what the secret signs
# and cannot sign anything itself.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("scopes", JsonType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)


# Webhooks (README "Webhooks"): endpoints, the outbox of events, and one delivery per event and
# endpoint, retried until it succeeds or its window passes.
WEBHOOK_DELIVERY_STATUSES = ("pending", "succeeded", "failed")

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("secret", String(100), nullable=False),
    Column("events", JsonType, nullable=False),  # empty: every event but the opt-in ones
    Column("ordered", Boolean, nullable=False, server_default=false()),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("disabled_reason", String(500), nullable=True),
    Column("notify_email", String(320), nullable=True),
    Column("description", String(200), nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("failing_since", UTCDateTime, nullable=True),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("public_id", String(40), nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("meeting_id", Uuid, nullable=True),
    Column("payload", JsonType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("endpoint_id", Uuid, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", BigInteger, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
    Column("meeting_id", Uuid, nullable=True),  # the event's, for per-meeting order
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # When it is due; while a node posts it, the end of that node's lease.
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(one_of("status", WEBHOOK_DELIVERY_STATUSES), name="status"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    Index("ix_webhook_deliveries_order", "endpoint_id", "meeting_id", "status", "id"),
)
