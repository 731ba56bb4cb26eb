"""The signaling protocol: the committed schema file matches the models; bad frames get codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signaling.protocol import (
    CLIENT_TYPES,
    ERROR_CODES,
    MAX_TRACK_SETTINGS,
    REACTIONS,
    ProtocolError,
    parse_client_message,
    schema_text,
    server_adapter,
)

SCHEMA = Path(__file__).resolve().parents[2] / "signaling" / "schema.json"


def test_committed_schema_is_generated_from_the_models() -> None:
    assert SCHEMA.read_text() == schema_text(), "run: python -m signaling.protocol > signaling/schema.json"
    schema = json.loads(SCHEMA.read_text())
    client_types = {
        definition["properties"]["type"]["const"]
        for definition in schema["client"]["$defs"].values()
        if "type" in definition.get("properties", {})
    }
    assert client_types == CLIENT_TYPES


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "malformed_json"),
        ("[]", "malformed_json"),
        ('"join"', "malformed_json"),
        ('{"type": "teleport"}', "unknown_type"),
        ("{}", "unknown_type"),
        ('{"type": "join", "protocol": 1}', "invalid_message"),
        ('{"type": "join", "protocol": "1", "token": "0123456789abc"}', "invalid_message"),
        ('{"type": "chat", "text": ""}', "invalid_message"),
        ('{"type": "chat", "text": "hi", "colour": "red"}', "invalid_message"),
        ('{"type": "mute", "track_id": "TR_1", "muted": 1}', "invalid_message"),
        ('{"type": "publish", "sdp": "v=0", "tracks": [{"mid": "0", "kind": "smell", "source": "camera"}]}', "invalid_message"),
        (b"\xff\xfe", "malformed_json"),
    ],
)
def test_bad_frames_are_refused_with_a_code(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_client_message(frame)
    assert error.value.code == code and code in ERROR_CODES


def test_good_frames_parse() -> None:
    message = parse_client_message('{"type": "chat", "text": "hello", "to": "abc", "id": "r1"}')
    assert (message.type, message.text, message.to, message.id) == ("chat", "hello", "abc", "r1")
    candidate = parse_client_message('{"type": "ice-candidate", "target": "publisher", "candidate": null}')
    assert candidate.candidate is None


def test_track_settings_take_one_track_or_a_batch_of_entries_each_checked_like_the_one() -> None:
    one = parse_client_message('{"type": "track-settings", "track_id": "TR_1", "width": 320, "height": 180}')
    assert [(e.track_id, e.quality, e.width, e.height) for e in one.entries()] == [("TR_1", None, 320, 180)]
    batch = parse_client_message(json.dumps({"type": "track-settings", "tracks": [
        {"track_id": "TR_1", "quality": "off"}, {"track_id": "TR_2", "width": 160}, {"track_id": "TR_1", "quality": "low"},
    ]}))
    assert [(e.track_id, e.quality, e.width) for e in batch.entries()] == [("TR_1", "off", None), ("TR_2", None, 160), ("TR_1", "low", None)]
    full = [{"track_id": f"TR_{i}", "quality": "off"} for i in range(MAX_TRACK_SETTINGS)]
    assert len(parse_client_message(json.dumps({"type": "track-settings", "tracks": full})).entries()) == 128


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({}, ""),  # neither form
        ({"track_id": "TR_1", "tracks": [{"track_id": "TR_2"}]}, ""),  # both
        ({"tracks": [{"track_id": "TR_2"}], "quality": "off"}, ""),  # a batch with a single form's field
        ({"tracks": []}, "tracks"),
        ({"tracks": [{"track_id": f"TR_{i}"} for i in range(MAX_TRACK_SETTINGS + 1)]}, "tracks"),
        ({"tracks": [{"track_id": "TR_1"}, {"track_id": "TR_2", "quality": "huge"}]}, "tracks.1.quality"),
        ({"tracks": [{"track_id": "TR_1", "width": 99_999}]}, "tracks.0.width"),
        ({"tracks": [{"track_id": ""}]}, "tracks.0.track_id"),
        ({"tracks": [{"track_id": "TR_1", "colour": "red"}]}, "tracks.0.colour"),
        ({"tracks": ["TR_1"]}, "tracks.0"),
        ({"tracks": {"track_id": "TR_1"}}, "tracks"),
    ],
)
def test_a_track_settings_message_in_neither_form_or_with_a_bad_entry_is_refused(message: dict, field: str) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_client_message(json.dumps({"type": "track-settings", **message}))
    assert error.value.code == "invalid_message"
    assert [d["field"] for d in error.value.details][:1] == [field], error.value.details
    if field == "":
        assert "exactly one of track_id" in error.value.details[0]["message"] or "in its entries" in error.value.details[0]["message"]


def test_reactions_are_the_six_emoji_and_nothing_else() -> None:
    assert REACTIONS == ("\U0001f44d", "\U0001f44f", "\U0001f602", "\u2764\ufe0f", "\U0001f389", "\U0001f62e")
    for emoji in REACTIONS:
        assert parse_client_message(json.dumps({"type": "reaction", "emoji": emoji})).emoji == emoji
    for bad in ("\U0001f984", "\u2764", "", ":+1:", 1, None):  # a unicorn; the heart without U+FE0F
        with pytest.raises(ProtocolError) as error:
            parse_client_message(json.dumps({"type": "reaction", "emoji": bad}))
        assert error.value.code == "invalid_message" and error.value.details[0]["field"] == "emoji"
        assert "\U0001f44d" in error.value.details[0]["message"]  # names the ones allowed
    with pytest.raises(ProtocolError):
        parse_client_message(json.dumps({"type": "reaction", "emoji": REACTIONS[0], "to": "someone"}))


def test_server_reactions_and_hand_times_fit_the_schema() -> None:
    server_adapter.validate_python({"type": "reaction", "participant": "abc", "emoji": REACTIONS[3], "seq": 4})
    with pytest.raises(ValueError):
        server_adapter.validate_python({"type": "reaction", "participant": "abc", "emoji": "\U0001f984"})
    person = {"identity": "abc", "name": "A", "role": "participant", "hand_raised": True, "hand_raised_at": 1.7e9, "tracks": []}
    updated = server_adapter.validate_python({"type": "participant-updated", "participant": person})
    assert updated.participant.hand_raised_at == 1.7e9
    down = server_adapter.validate_python({"type": "participant-updated", "participant": {**person, "hand_raised": False, "hand_raised_at": None}})
    assert down.participant.hand_raised_at is None
    assert "hidden_participant" in ERROR_CODES
