"""The signaling protocol: the committed schema file matches the models; bad frames get codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signaling.protocol import CLIENT_TYPES, ERROR_CODES, ProtocolError, parse_client_message, schema_text

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
