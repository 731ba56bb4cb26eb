"""Request and response models of the control API.  Request models forbid unknown fields and are
validated strictly (no silent type coercion); they also feed the generated OpenAPI spec."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from control_api.text import first_text_problem, text_problem


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


def _single_line(value: str) -> str:
    problem = text_problem(value, multiline=False)
    if problem:
        raise ValueError(problem)
    return value


FIRST_YEAR, LAST_YEAR = 2000, 2999


def _plausible_time(value: datetime) -> datetime:
    """Far-off years overflow once moved to UTC or given a duration; no meeting needs them."""
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must be a time between the years {FIRST_YEAR} and {LAST_YEAR}")
    return value


MeetingTime = Annotated[datetime, AfterValidator(_plausible_time)]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_timezone)]
DisplayName = Annotated[
    str, StringConstraints(min_length=1, max_length=100), AfterValidator(_single_line), AfterValidator(_not_blank)
]
Title = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(_single_line), AfterValidator(_not_blank)
]
Email = Annotated[str, StringConstraints(min_length=3, max_length=320)]
Password = Annotated[str, StringConstraints(min_length=10, max_length=1024)]
AnyPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
# Passcodes set from now on have 6 characters at least; shorter ones set earlier still work.
Passcode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{6,20}$")]
GeneratePasscode = Annotated[
    bool, Field(description="Let the server choose the passcode: 8 random digits (instead of passcode)")
]
OpaqueToken = Annotated[str, StringConstraints(min_length=16, max_length=200)]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class SafeText(BaseModel):
    """Every string of every request field, however nested, passes ``control_api.text``."""

    @field_validator("*", mode="after")
    @classmethod
    def _safe_text(cls, value: Any) -> Any:
        problem = first_text_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class In(SafeText):
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(SafeText):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Errors -----------------------------------------------------------------------------------------


class ErrorBody(Out):
    code: str = Field(examples=["validation_error"])
    message: str
    details: Any = None


class ErrorOut(Out):
    error: ErrorBody


# Users and auth ---------------------------------------------------------------------------------


class RegisterIn(In):
    email: Email
    password: Password
    display_name: DisplayName
    timezone: TimeZone = "UTC"


class LoginIn(In):
    email: Email
    password: AnyPassword


class RefreshIn(In):
    refresh_token: OpaqueToken


class ProfileIn(In):
    display_name: DisplayName
    timezone: TimeZone


class PasswordChangeIn(In):
    current_password: AnyPassword
    new_password: Password


class UserOut(Out):
    id: uuid.UUID
    email: str
    display_name: str
    initials: str = Field(description="One or two letters for an avatar")
    timezone: str
    created_at: datetime


class UserRef(Out):
    id: uuid.UUID
    display_name: str


class TokenPairOut(Out):
    token_type: Literal["Bearer"] = "Bearer"
    access_token: str
    expires_in: int = Field(description="Seconds until the access token expires")
    expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    user: UserOut


# Meetings ---------------------------------------------------------------------------------------


class MeetingSettings(In):
    waiting_room: bool = False
    mute_on_join: bool = False
    allow_recording: bool = True
    join_before_host: bool = False
    max_participants: int = Field(default=100, ge=2, le=1000)
    last_n: int = Field(
        default=16, ge=1, le=100, description="Each participant receives video from at most this many others (recent speakers and pins first)"
    )


class MeetingSettingsPatch(In):
    waiting_room: bool | None = None
    mute_on_join: bool | None = None
    allow_recording: bool | None = None
    join_before_host: bool | None = None
    max_participants: int | None = Field(default=None, ge=2, le=1000)
    last_n: int | None = Field(default=None, ge=1, le=100)


class MeetingCreateIn(In):
    title: Title
    description: Annotated[str, StringConstraints(max_length=5000)] = ""
    kind: Literal["instant", "scheduled"] = Field(
        default="scheduled", description="An instant meeting is live at once"
    )
    start_time: MeetingTime | None = Field(
        default=None,
        description="Required for scheduled meetings. A time without offset is read in `timezone`.",
    )
    end_time: MeetingTime | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=1440)
    timezone: TimeZone | None = Field(default=None, description="Defaults to the host's")
    passcode: Passcode | None = None
    generate_passcode: GeneratePasscode = False
    settings: MeetingSettings = MeetingSettings()


class MeetingPatchIn(In):
    title: Title | None = None
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    start_time: MeetingTime | None = None
    end_time: MeetingTime | None = None
    timezone: TimeZone | None = None
    passcode: Passcode | None = Field(default=None, description="null removes the passcode")
    generate_passcode: GeneratePasscode = False
    settings: MeetingSettingsPatch | None = None


MeetingStatus = Literal["scheduled", "live", "ended", "cancelled"]
Role = Literal["host", "cohost", "guest", "participant"]


class MeetingOut(Out):
    id: uuid.UUID
    code: str = Field(examples=["abc-defg-hjk"])
    title: str
    description: str
    kind: Literal["instant", "scheduled"]
    status: MeetingStatus
    host: UserRef
    start_time: datetime
    end_time: datetime
    timezone: str
    settings: dict[str, Any]
    has_passcode: bool
    passcode: str | None = Field(description="Shown to the host and co-hosts only")
    join_url: str
    my_role: Role | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class MeetingPublicOut(Out):
    id: uuid.UUID
    code: str
    title: str
    host_name: str
    status: MeetingStatus
    start_time: datetime
    end_time: datetime
    timezone: str
    has_passcode: bool
    waiting_room: bool


class MeetingPage(Out):
    items: list[MeetingOut]
    next_cursor: str | None


class MyMeetingsQuery(Query):
    status: MeetingStatus | None = None
    role: Literal["host", "invited", "participated"] | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Cursor | None = None


class UpcomingQuery(Query):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Cursor | None = None


class JoinIn(In):
    passcode: Annotated[str, StringConstraints(max_length=64)] | None = None
    display_name: DisplayName | None = None
    hidden: bool = Field(default=False, description="Host and co-hosts only")


class Grants(Out):
    can_publish: bool
    can_subscribe: bool
    can_publish_data: bool
    room_admin: bool
    hidden: bool
    recorder: bool


class IceServerOut(Out):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class ParticipantOut(Out):
    user_id: uuid.UUID
    display_name: str
    role: str
    first_joined_at: datetime
    last_joined_at: datetime
    left_at: datetime | None
    join_count: int
    admission: Literal["waiting", "admitted", "removed"] = Field(
        description="held by the waiting room, admitted, or removed by a host"
    )


class ParticipantList(Out):
    items: list[ParticipantOut]


class JoinOut(Out):
    token: str = Field(description="Room token (JWT) for the signaling WebSocket")
    expires_at: datetime
    signaling_url: str
    node: str | None = Field(
        default=None, description="In a cluster, the node that hosts the meeting (signal it at signaling_url)"
    )
    ice_servers: list[IceServerOut]
    identity: str
    grants: Grants
    waiting: bool = Field(description="True when the waiting room holds this participant")
    participant: ParticipantOut
    meeting: MeetingOut


class InviteIn(In):
    emails: Annotated[list[Email], Field(min_length=1, max_length=50)]
    role: Literal["guest", "cohost"] = "guest"


class InvitationOut(Out):
    user: UserRef
    email: str
    role: Literal["guest", "cohost"]
    invited_at: datetime


class InvitationList(Out):
    items: list[InvitationOut]


class InviteResultOut(Out):
    invited: list[InvitationOut]
    unknown_emails: list[str] = Field(description="Addresses with no registered user")


# Chat -------------------------------------------------------------------------------------------


class MessageIn(In):
    body: Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(_not_blank)]
    recipient_id: uuid.UUID | None = Field(default=None, description="Set for a private message")


class MessageOut(Out):
    id: int
    meeting_id: uuid.UUID
    sender: UserRef | None
    recipient_id: uuid.UUID | None
    private: bool
    body: str
    created_at: datetime


class MessagePage(Out):
    items: list[MessageOut] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `before` for older messages")


class MessagesQuery(Query):
    limit: int = Field(default=50, ge=1, le=200)
    before: Cursor | None = None


# Recordings -------------------------------------------------------------------------------------


class RecordingOut(Out):
    id: uuid.UUID
    meeting_id: uuid.UUID | None
    meeting_title: str
    status: Literal["recording", "processing", "ready", "failed"]
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: int | None
    size_bytes: int | None
    content_type: str
    participants: list[str]
    download_url: str | None
    error: str | None


class RecordingPage(Out):
    items: list[RecordingOut]
    next_cursor: str | None


class RecordingStartIn(In):
    layout: Literal["grid", "speaker"] | None = Field(
        default=None, description="grid: everyone alike; speaker: the active speaker large. Default: the server's"
    )


class RecordingsQuery(Query):
    meeting_id: uuid.UUID | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Cursor | None = None


# Notifications ----------------------------------------------------------------------------------


class NotificationOut(Out):
    id: uuid.UUID
    kind: str = Field(examples=["invited", "meeting_started", "recording_ready"])
    meeting_id: uuid.UUID | None
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class NotificationPage(Out):
    items: list[NotificationOut]
    next_cursor: str | None
    unread_count: int


class NotificationsQuery(Query):
    unread_only: bool = False
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Cursor | None = None


class CountOut(Out):
    updated: int


# Calendar ---------------------------------------------------------------------------------------


class CalendarTokenOut(Out):
    token: str
    feed_url: str


class FeedQuery(Query):
    token: OpaqueToken | None = None


# Operations -------------------------------------------------------------------------------------


class HealthOut(Out):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class NodeLoadOut(Out):
    participants: int
    tracks: int
    rooms: int
    cpu: float
    packets_per_second: float


class NodeOut(Out):
    id: str
    signaling_url: str
    state: Literal["serving", "draining"]
    load: NodeLoadOut
    max_participants: int | None
    heartbeat_at: float
    heartbeat_age: float


class NodesOut(Out):
    cluster: bool
    nodes: list[NodeOut]


class NodeDrainOut(Out):
    node: str
    state: Literal["draining"]


# Server API (API keys) --------------------------------------------------------------------------

# A participant's identity: this server's users are their UUIDs; tokens minted through the server
# API take the caller's own identities, which may not look like a UUID.
IDENTITY_PATTERN = r"[A-Za-z0-9_.@:+\-]{1,64}"
Identity = Annotated[str, StringConstraints(pattern=f"^{IDENTITY_PATTERN}$")]
Metadata = Annotated[str, StringConstraints(max_length=4096)]


def _not_a_uuid(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        return value
    raise ValueError("looks like a user id of this server; choose an identity that is not a UUID")


class ServerTrackOut(Out):
    track_id: str
    participant: str
    kind: Literal["audio", "video"]
    source: str
    muted: bool
    codec: str | None
    simulcast: bool


class ServerParticipantOut(Out):
    identity: str
    name: str
    role: str
    node: str | None = Field(description="The node it is connected to (null outside a cluster)")
    joined_at: datetime
    waiting: bool
    hidden: bool
    hand_raised: bool
    metadata: str
    grants: dict[str, bool]
    tracks: list[ServerTrackOut]


class ServerParticipantList(Out):
    items: list[ServerParticipantOut]


class ServerRecordingStatus(Out):
    recording_id: str
    layout: str
    started_at: str


class ServerRoomOut(Out):
    meeting_id: uuid.UUID
    title: str
    code: str
    nodes: list[str] = Field(description="Nodes with participants of the meeting (empty outside a cluster)")
    started_at: datetime | None = Field(description="When the meeting went live")
    num_participants: int
    num_tracks: int
    recording: ServerRecordingStatus | None


class ServerRoomDetailOut(ServerRoomOut):
    participants: list[ServerParticipantOut]


class ServerRoomList(Out):
    items: list[ServerRoomOut]


class TrackMuteIn(In):
    muted: bool


class GrantsPatch(In):
    can_publish: bool | None = None
    can_subscribe: bool | None = None
    can_publish_data: bool | None = None
    room_admin: bool | None = None


class ParticipantUpdateIn(In):
    grants: GrantsPatch | None = Field(default=None, description="Only the grants given change (hidden cannot)")
    metadata: Metadata | None = Field(default=None, description="Replaces the participant's metadata (4 KiB at most)")


class ServerMessageIn(In):
    kind: Literal["data", "chat"] = Field(
        default="data", description="data: a `data` message; chat: a `chat` message from the server (not stored)"
    )
    identity: Identity | None = Field(default=None, description="One participant; the whole room when null")
    topic: Annotated[str, StringConstraints(max_length=100)] | None = None
    payload: Any = Field(description="Any JSON (16 KiB at most); for chat, the text (1 to 4000 characters)")


class TokenGrantsIn(In):
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    room_admin: bool = False
    hidden: bool = False


class RoomTokenIn(In):
    meeting_id: uuid.UUID
    identity: Annotated[Identity, AfterValidator(_not_a_uuid)] = Field(
        description="Your own id for this participant (letters, digits and _ . @ : + -, not a UUID)"
    )
    name: DisplayName | None = Field(default=None, description="Shown to the others; the identity when null")
    metadata: Metadata = ""
    grants: TokenGrantsIn = Field(default_factory=TokenGrantsIn)
    ttl_seconds: int = Field(default=3600, ge=60, le=86400, description="How long the token may be used to join")


class RoomTokenOut(Out):
    token: str = Field(description="Room token (JWT) for the signaling WebSocket; good for one join")
    join_url: str = Field(description="The web client's page that joins the meeting with this token (no account needed)")
    expires_at: datetime
    signaling_url: str
    node: str | None
    ice_servers: list[IceServerOut]
    identity: str
    grants: Grants
