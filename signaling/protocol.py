"""The signaling protocol, version 1: every message a client may send and every message the server
sends, as pydantic models.  ``signaling/schema.json`` is generated from these models
(``python -m signaling.protocol > signaling/schema.json``) and is what every client uses; a test
keeps the two identical.

Envelope: a JSON object with ``type``.  Client messages may carry an ``id``, which the server
echoes in the error or reply it causes.  Server messages carry ``seq``, increasing by one per
message on a session, so that a client resuming a dropped connection says which it last saw.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

PROTOCOL_VERSION = 1

Sdp = Annotated[str, Field(min_length=1, max_length=200_000)]
Identity = Annotated[str, Field(min_length=1, max_length=100)]
TrackId = Annotated[str, Field(min_length=1, max_length=64)]
RequestId = Annotated[str, Field(max_length=64)]
Quality = Literal["high", "medium", "low", "off"]
Width = Annotated[int, Field(ge=0, le=7680)]
Height = Annotated[int, Field(ge=0, le=4320)]
# The reactions a participant may send (``reaction``); nothing else is relayed.
Emoji = Literal[  # 👍 👏 😂 ❤️ (the heart with U+FE0F) 🎉 😮
    "\U0001f44d", "\U0001f44f", "\U0001f602", "\u2764\ufe0f", "\U0001f389", "\U0001f62e",
]
REACTIONS: tuple[str, ...] = get_args(Emoji)
MAX_TRACK_SETTINGS = 128  # entries in one batched track-settings


class ClientMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: RequestId | None = None


class Join(ClientMessage):
    type: Literal["join"]
    protocol: int = Field(description="Protocol version the client speaks; the server answers 1")
    token: Annotated[str, Field(min_length=10, max_length=4096)] = Field(description="Room token from POST /api/meetings/{id}/join")


class Resume(ClientMessage):
    type: Literal["resume"]
    protocol: int
    session_id: Annotated[str, Field(min_length=1, max_length=64)]
    resume_token: Annotated[str, Field(min_length=1, max_length=128)]
    last_seq: int = Field(ge=0, description="The seq of the last server message received")


class TrackMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mid: Annotated[str, Field(min_length=1, max_length=32)]
    kind: Literal["audio", "video"]
    source: Literal["camera", "microphone", "screen", "screen_audio"]
    muted: bool = False


class Publish(ClientMessage):
    type: Literal["publish"]
    sdp: Sdp = Field(description="Offer of the client's publisher connection")
    tracks: Annotated[list[TrackMeta], Field(max_length=16)] = []


class Unpublish(ClientMessage):
    type: Literal["unpublish"]
    track_id: TrackId


class SubscriberAnswer(ClientMessage):
    type: Literal["subscriber-answer"]
    sdp: Sdp


class IceCandidate(ClientMessage):
    type: Literal["ice-candidate"]
    target: Literal["publisher", "subscriber"]
    candidate: Annotated[str, Field(max_length=2000)] | None = Field(description="null or empty: end of candidates")
    sdp_mid: Annotated[str, Field(max_length=32)] | None = None
    sdp_mline_index: Annotated[int, Field(ge=0, le=1000)] | None = None


class Mute(ClientMessage):
    type: Literal["mute"]
    track_id: TrackId
    muted: bool


class Chat(ClientMessage):
    type: Literal["chat"]
    text: Annotated[str, Field(min_length=1, max_length=4000)]
    to: Identity | None = Field(default=None, description="Identity of one participant for a private message")


class RaiseHand(ClientMessage):
    type: Literal["raise-hand"]
    raised: bool


class MuteParticipant(ClientMessage):
    type: Literal["mute-participant"]
    identity: Identity
    kind: Literal["audio", "video"] = "audio"


class RemoveParticipant(ClientMessage):
    type: Literal["remove-participant"]
    identity: Identity


class Admit(ClientMessage):
    type: Literal["admit"]
    identity: Identity


class EndMeeting(ClientMessage):
    type: Literal["end-meeting"]


class StartRecording(ClientMessage):
    """Host or co-host: record the meeting into one MP4 (when the meeting allows recording)."""

    type: Literal["start-recording"]
    layout: Literal["grid", "speaker"] | None = None


class StopRecording(ClientMessage):
    type: Literal["stop-recording"]


class TrackSetting(BaseModel):
    """One entry of a batched ``track-settings``: the fields of the single form."""

    model_config = ConfigDict(extra="forbid", strict=True)
    track_id: TrackId
    quality: Quality | None = None
    width: Width | None = None
    height: Height | None = None


class TrackSettings(ClientMessage):
    """How a subscriber shows remote video tracks: the size it renders (the SFU forwards the
    best layer at or under it) or a quality; ``off`` stops the track.

    Two forms, exactly one of them: one track (``track_id`` with ``quality``, ``width``,
    ``height``), or a batch (``tracks``: up to 128 entries of those same fields, for a client
    paging a grid, which would otherwise spend its flood budget on one message per tile).  The
    server applies a batch's entries in order (a track named twice takes its last entry), then
    chooses layers once.  A track the subscriber does not receive is refused with
    ``unknown_track``, as in the single form; in a batch it is left out, the other entries apply
    all the same (a track may be unpublished while the batch is on its way), and one
    ``unknown_track`` error lists the ids left out in ``details`` (``[{"track_id": ...}]``)."""

    type: Literal["track-settings"]
    track_id: TrackId | None = Field(default=None, description="One track; not with tracks")
    quality: Quality | None = None
    width: Width | None = None
    height: Height | None = None
    tracks: Annotated[list[TrackSetting], Field(min_length=1, max_length=MAX_TRACK_SETTINGS)] | None = Field(
        default=None, description="A batch of settings, each like the single form; not with track_id"
    )

    @model_validator(mode="after")
    def _one_form(self) -> TrackSettings:
        if (self.track_id is None) == (self.tracks is None):
            raise ValueError("give exactly one of track_id (one track) or tracks (a batch)")
        if self.tracks is not None and (self.quality, self.width, self.height) != (None, None, None):
            raise ValueError("a batch carries quality, width and height in its entries")
        return self

    def entries(self) -> list[TrackSetting]:
        """The settings to apply, the single form as a batch of one."""
        if self.tracks is not None:
            return list(self.tracks)
        assert self.track_id is not None
        return [TrackSetting(track_id=self.track_id, quality=self.quality, width=self.width, height=self.height)]


class Pin(ClientMessage):
    """Participants whose video this subscriber always wants (on top of the recent speakers)."""

    type: Literal["pin"]
    identities: Annotated[list[Identity], Field(max_length=16)]


class Reaction(ClientMessage):
    """An emoji reaction, shown to everyone in the meeting (the sender too) for a moment; never
    stored.  One of ``REACTIONS``; a burst of 5, then 2 a second per connection."""

    type: Literal["reaction"]
    emoji: Emoji


class Ping(ClientMessage):
    type: Literal["ping"]


class Leave(ClientMessage):
    type: Literal["leave"]


ClientMessages = Annotated[
    Union[
        Join, Resume, Publish, Unpublish, SubscriberAnswer, IceCandidate, Mute, Chat, RaiseHand,
        MuteParticipant, RemoveParticipant, Admit, EndMeeting, StartRecording, StopRecording, TrackSettings, Pin,
        Reaction, Ping, Leave,
    ],
    Field(discriminator="type"),
]
CLIENT_TYPES = {
    "join", "resume", "publish", "unpublish", "subscriber-answer", "ice-candidate", "mute", "chat",
    "raise-hand", "mute-participant", "remove-participant", "admit", "end-meeting", "start-recording",
    "stop-recording", "track-settings", "pin", "reaction", "ping", "leave",
}
client_adapter: TypeAdapter[Any] = TypeAdapter(ClientMessages)


# Server messages ------------------------------------------------------------------------------


class ServerMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int | None = None


class ParticipantInfo(BaseModel):
    identity: str
    name: str
    role: str
    hand_raised: bool
    hand_raised_at: float | None = Field(
        default=None, description="When the hand went up (the server's clock, epoch seconds); null while it is down"
    )
    tracks: list[TrackInfo] = []
    metadata: str = Field(default="", description="Set by the server API (at most 4 KiB); empty by default")


class LayerInfo(BaseModel):
    rid: str | None = Field(description="RID of the encoding, null for SSRC-group simulcast")
    index: int = Field(description="0 is the lowest spatial layer")
    width: int | None
    height: int | None
    active: bool = True


class TrackInfo(BaseModel):
    track_id: str
    participant: str
    kind: Literal["audio", "video"]
    source: str
    muted: bool
    codec: str | None
    simulcast: bool = False


class RecordingStatus(BaseModel):
    recording_id: str
    layout: Literal["grid", "speaker"]
    started_at: str = Field(description="UTC, ISO 8601")


class RecordingStarted(ServerMessage):
    """To everyone in the meeting: it is being recorded from now on."""

    type: Literal["recording-started"]
    recording_id: str
    layout: Literal["grid", "speaker"]
    started_at: str
    by: str | None = Field(default=None, description="Identity of whoever started it")


class RecordingStopped(ServerMessage):
    type: Literal["recording-stopped"]
    recording_id: str
    reason: Literal["stopped", "meeting_ended", "recorder_failed", "server_shutdown"]


class MeetingBrief(BaseModel):
    id: str
    title: str
    code: str


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Joined(ServerMessage):
    type: Literal["joined"]
    protocol: int
    session_id: str
    resume_token: str
    resume_seconds: int
    room: str
    participant: ParticipantInfo
    participants: list[ParticipantInfo]
    tracks: list[TrackInfo]
    waiting: bool
    mute_on_join: bool
    recording: RecordingStatus | None = Field(default=None, description="Set while the meeting is being recorded")
    meeting: MeetingBrief | None = Field(default=None, description="The meeting's title and code")
    ice_servers: list[IceServer] = Field(
        default=[], description="ICE servers for this participant (TURN credentials included), as the API's join answer has them: "
        "a client that joined with a server-minted token has no other source"
    )


class Resumed(ServerMessage):
    type: Literal["resumed"]
    session_id: str
    replayed: int


class ParticipantJoined(ServerMessage):
    type: Literal["participant-joined"]
    participant: ParticipantInfo


class ParticipantLeft(ServerMessage):
    type: Literal["participant-left"]
    identity: str
    reason: str


class ParticipantUpdated(ServerMessage):
    type: Literal["participant-updated"]
    participant: ParticipantInfo


class ParticipantWaiting(ServerMessage):
    type: Literal["participant-waiting"]
    participant: ParticipantInfo


class Admitted(ServerMessage):
    type: Literal["admitted"]


class PublishAnswer(ServerMessage):
    type: Literal["publish-answer"]
    sdp: str
    tracks: list[dict[str, str]]


class SubscriberOffer(ServerMessage):
    type: Literal["subscriber-offer"]
    sdp: str
    tracks: dict[str, str] = Field(description="mid -> track_id for every m-line that carries a track")


class TrackPublished(ServerMessage):
    type: Literal["track-published"]
    track: TrackInfo


class TrackUnpublished(ServerMessage):
    type: Literal["track-unpublished"]
    track_id: str
    participant: str


class TrackMuted(ServerMessage):
    type: Literal["track-muted"]
    track_id: str
    participant: str
    muted: bool
    by_host: bool


class ScreenShareStarted(ServerMessage):
    type: Literal["screen-share-started"]
    participant: str
    track_id: str


class ScreenShareStopped(ServerMessage):
    type: Literal["screen-share-stopped"]
    participant: str
    track_id: str


class ChatMessage(BaseModel):
    id: int
    sender: dict[str, str] | None
    recipient_id: str | None
    private: bool
    body: str
    created_at: str


class ChatReceived(ServerMessage):
    type: Literal["chat"]
    message: ChatMessage


class ReactionReceived(ServerMessage):
    """To everyone in the meeting, the sender too: ``participant`` reacted with ``emoji``."""

    type: Literal["reaction"]
    participant: str
    emoji: Emoji


class MutedByHost(ServerMessage):
    type: Literal["muted-by-host"]
    track_id: str
    kind: str


class Removed(ServerMessage):
    type: Literal["removed"]
    reason: str
    message: str


class GrantsUpdated(ServerMessage):
    """To a participant whose grants the server API changed: its grants as they are now.  With
    ``can_publish`` false its tracks have been unpublished and ``publish`` is refused."""

    type: Literal["grants-updated"]
    grants: dict[str, bool]


class DataReceived(ServerMessage):
    """Data sent to the room or to this participant through the server API (``sender`` null:
    the server)."""

    type: Literal["data"]
    sender: str | None = None
    topic: str | None = None
    payload: Any


class MeetingEnded(ServerMessage):
    type: Literal["meeting-ended"]


class Reconnect(ServerMessage):
    """Join again through the API, which names another node, and publish the same tracks there:
    this node is draining (it takes no new rooms and stops once everyone has moved).  The SDK
    does it by itself when it has a token provider."""

    type: Literal["reconnect"]
    reason: Literal["node_draining"]


class TrackForwarding(ServerMessage):
    """What the SFU now forwards to this subscriber for one remote video track."""

    type: Literal["track-forwarding"]
    track_id: str
    participant: str
    forwarding: bool
    layer: int | None = Field(description="Spatial layer index, null when paused")
    temporal: int | None = Field(description="Highest temporal layer forwarded, null if the codec has none")
    width: int | None
    height: int | None
    reason: Literal["requested", "bandwidth", "last_n", "muted", "unavailable"]


class SetLayers(ServerMessage):
    """To a publisher (dynacast): the encodings subscribers take; disable the others."""

    type: Literal["set-layers"]
    track_id: str
    layers: list[LayerInfo]


class ActiveSpeakers(ServerMessage):
    type: Literal["active-speakers"]
    dominant: str | None
    speakers: list[str] = Field(description="Identities speaking now, loudest first")


class Pong(ServerMessage):
    type: Literal["pong"]
    id: str | None = None


class Error(ServerMessage):
    type: Literal["error"]
    code: str
    message: str
    id: str | None = None
    details: Any = None


ServerMessages = Annotated[
    Union[
        Joined, Resumed, ParticipantJoined, ParticipantLeft, ParticipantUpdated, ParticipantWaiting, Admitted,
        PublishAnswer, SubscriberOffer, TrackPublished, TrackUnpublished, TrackMuted, ScreenShareStarted,
        ScreenShareStopped, ChatReceived, ReactionReceived, MutedByHost, Removed, GrantsUpdated, DataReceived, MeetingEnded, Reconnect, TrackForwarding, SetLayers,
        ActiveSpeakers, RecordingStarted, RecordingStopped, Pong, Error,
    ],
    Field(discriminator="type"),
]
server_adapter: TypeAdapter[Any] = TypeAdapter(ServerMessages)

# WebSocket close codes the server uses besides the standard ones (1000 normal, 1001 going away,
# 1008 policy: flooding, 1009 frame too large).
CLOSE_JOIN_TIMEOUT = 4001
CLOSE_SLOW_CONSUMER = 4008
CLOSE_CODES = {
    CLOSE_JOIN_TIMEOUT: "join_timeout: the connection neither joined nor resumed in time",
    CLOSE_SLOW_CONSUMER: "slow_consumer: the client fell too far behind reading; resume to get what it missed",
}

ERROR_CODES = {
    "malformed_json": "the frame is not a JSON object",
    "unknown_type": "the message type is not part of the protocol",
    "invalid_message": "a field is missing, unknown or of the wrong type",
    "unsupported_version": "the protocol version is not supported",
    "not_joined": "join (or resume) first",
    "already_joined": "this connection has joined already",
    "invalid_token": "the room token is not valid or has expired",
    "meeting_not_live": "the meeting is not live",
    "resume_failed": "the session cannot be resumed; join again",
    "rate_limited": "too many messages (or reactions); slow down",
    "publish_not_allowed": "the room token does not allow publishing",
    "data_not_allowed": "the room token does not allow chat",
    "hidden_participant": "a participant who joined hidden cannot do this (it would show them)",
    "not_room_admin": "only a host or co-host may do this",
    "unknown_participant": "no such participant",
    "unknown_track": "no such track",
    "invalid_sdp": "the SDP could not be used",
    "invalid_candidate": "the ICE candidate could not be used",
    "unexpected_answer": "no offer is waiting for an answer",
    "no_connection": "that peer connection does not exist yet",
    "waiting": "a host has not admitted you yet",
    "removed": "a host removed you",
    "codec_unsupported": "no codec in common",
    "chat_failed": "the message could not be stored",
    "recording_unavailable": "this server has no recorder",
    "recording_not_allowed": "this meeting does not allow recording",
    "already_recording": "the meeting is being recorded already",
    "not_recording": "the meeting is not being recorded",
    "meeting_full": "the meeting has as many participants as it allows",
    "wrong_node": "another node of the cluster hosts this meeting: join again through the API, which names it",
    "cannot_remove_host": "the meeting's host cannot be removed",
    "account_needed": "participants who joined with a server-minted token cannot chat, remove, admit or end the meeting (use the server API)",
    "validation_error": "a value was refused (control characters, bidi overrides, or out of range)",
    # Passed through from the control API's services that these requests go through.
    "invalid_recipient": "a private message to yourself, or to someone who is not in the meeting",
    "not_found": "the meeting or participant no longer exists",
    "not_meeting_admin": "only a host or co-host may do this",
    "not_removed": "only a removed participant can be let back in",
    "invalid_transition": "the meeting is in no state this request can change (it has ended already)",
    "nobody_in_meeting": "nobody is in the meeting's room yet, so there is nothing to record",
    "database_unavailable": "the database is unavailable; try again shortly",
}


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def quote(value: Any, limit: int = 40) -> str:
    """A client's value in an error message: its repr, cut to ``limit`` characters."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_client_message(text: str | bytes) -> Any:
    """One client frame to its model, or ``ProtocolError`` with the code to send back."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("malformed_json", "the frame is not valid JSON") from None
    except RecursionError:  # arrays or objects nested thousands deep
        raise ProtocolError("malformed_json", "the frame nests too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError("malformed_json", "a message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {quote(kind)}")
    try:
        return client_adapter.validate_python(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"][1:]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ProtocolError("invalid_message", f"invalid {kind} message", details) from None


def schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "VideoConf signaling protocol",
        "description": __doc__.strip(),
        "version": PROTOCOL_VERSION,
        "client": client_adapter.json_schema(ref_template="#/client/$defs/{model}"),
        "server": server_adapter.json_schema(ref_template="#/server/$defs/{model}"),
        "errors": ERROR_CODES,
        "close_codes": {str(code): meaning for code, meaning in CLOSE_CODES.items()},
    }


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
