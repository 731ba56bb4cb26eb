"""Signaling frames: every client message type generated from ``signaling/schema.json`` (so a new
type is fuzzed as soon as the schema has it), with values that name real things in the room half
the time (placeholders such as ``$other`` or ``$track``, filled in by the server harness), then
mutated: a field dropped, added, of the wrong type or out of range, the type unknown, the JSON
broken, nested thousands deep, or not UTF-8."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from signaling import protocol as p
from tests.fuzz.core import Runner, Undefined, bounded
from tests.fuzz.turn_cases import either

SCHEMA = json.loads((Path(p.__file__).parent / "schema.json").read_text())["client"]
DEFS = SCHEMA["$defs"]
TYPES = sorted(SCHEMA["discriminator"]["mapping"])
MODELS = {name: DEFS[ref.rsplit("/", 1)[1]] for name, ref in SCHEMA["discriminator"]["mapping"].items()}

CANDIDATES = [
    "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
    "candidate:2 1 udp 1694498815 203.0.113.9 40000 typ srflx raddr 127.0.0.1 rport 40000",
    "candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
    "candidate:4 1 udp 2130706431 ::1 40000 typ host generation 0",
    "candidate:1 1 udp", "candidate:x y z a b c d e", "",
]
# Values that name things in the room (filled in by the server harness), by property name.
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "identity": st.sampled_from(["$self", "$other", "$stranger"]),
    "to": st.sampled_from(["$self", "$other", "$stranger"]),
    "identities": st.lists(st.sampled_from(["$self", "$other", "$stranger"]), max_size=3),
    "track_id": st.sampled_from(["$track", "$remote_track", "TR_000000000000"]),
    "token": st.sampled_from(["$token", "$other_token", "not.a.token.at.all"]),
    "session_id": st.sampled_from(["$session", "0" * 32]),
    "resume_token": st.sampled_from(["$resume", "wrong"]),
    "protocol": st.sampled_from([p.PROTOCOL_VERSION, 0, 2]),
    "sdp": st.sampled_from(["$offer", "$broken_offer", "v=0\r\n", "hello"]),
    "candidate": st.one_of(st.none(), st.sampled_from(CANDIDATES)),
    "sdp_mid": st.sampled_from(["0", "1", "99", ""]),
    "mid": st.sampled_from(["0", "1"]),
}


def from_schema(schema: dict[str, Any], name: str | None = None) -> st.SearchStrategy[Any]:
    """Values that fit a JSON schema (the subset pydantic writes), half of them hinted."""
    plain = _plain(schema)
    return either(HINTS[name], plain) if name in HINTS else plain


def _plain(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        return from_schema(DEFS[schema["$ref"].rsplit("/", 1)[1]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of(*(from_schema(option) for option in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
        return st.one_of(st.text(min_size=low, max_size=min(high, 40)), st.just("x" * max(high, low)))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low = min(schema.get("minItems", 0), 4)
        return st.lists(from_schema(schema["items"]), min_size=low, max_size=max(low, min(schema.get("maxItems", 4), 4)))
    if kind == "object":
        return _object(schema)
    raise ValueError(f"schema construct not handled: {schema}")


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {key: from_schema(value, key) for key, value in properties.items() if key in required},
        optional={key: from_schema(value, key) for key, value in properties.items() if key not in required},
    )


messages = st.one_of(*(_object(MODELS[name]) for name in TYPES))

hostile = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@dataclass(frozen=True)
class Mutation:
    kind: str
    key: int  # which field, modulo the message's fields
    value: Any


def _fields(message: dict[str, Any]) -> list[str]:
    return sorted(key for key in message if key != "type") or ["type"]


def mutate(message: dict[str, Any], mutation: Mutation | None) -> dict[str, Any] | str | bytes | Any:
    """The message with one thing wrong; frames that are not objects come back as text."""
    if mutation is None:
        return message
    out = dict(message)
    key = _fields(out)[mutation.key % len(_fields(out))]
    kind = mutation.kind
    if kind == "drop":
        out.pop(key, None)
    elif kind == "add":
        out[f"x{mutation.key}"] = mutation.value
    elif kind == "retype":
        out[key] = mutation.value
    elif kind == "type":
        out["type"] = mutation.value
    elif kind == "long":
        out[key] = "y" * 300_000 if mutation.key % 2 else "y" * 4097
    elif kind == "deep":
        return "[" * 3000 + "]" * 3000 if mutation.key % 2 else '{"type":"ping","a":' + "[" * 5000
    elif kind == "not_object":
        return json.dumps(mutation.value)
    elif kind == "broken_json":
        return json.dumps(out)[: max(1, mutation.key % 40)]
    elif kind == "huge_number":
        return json.dumps(out)[:-1] + ', "n": 1' + "0" * 5000 + "}"
    elif kind == "not_utf8":
        return json.dumps(out).encode()[:-1] + b"\xff\xfe}"
    return out


mutations = st.one_of(
    st.none(),
    st.builds(Mutation, st.sampled_from(["drop", "add", "retype", "type", "long", "deep", "not_object", "broken_json",
                                         "huge_number", "not_utf8"]), st.integers(0, 100), hostile),
)


@dataclass(frozen=True)
class Frame:
    message: dict[str, Any]
    mutation: Mutation | None
    binary: bool  # sent as a binary WebSocket frame

    def payload(self, fill: dict[str, Any] | None = None) -> str | bytes:
        mutated = mutate(fill_in(self.message, fill or {}), self.mutation)
        text = mutated if isinstance(mutated, (str, bytes)) else json.dumps(mutated)
        if self.binary and isinstance(text, str):
            return text.encode()
        return text

    def request_id(self) -> str | None:
        """The id the server may echo: that of the object sent, if it is one with a string id."""
        mutated = mutate(self.message, self.mutation)
        request_id = mutated.get("id") if isinstance(mutated, dict) else None
        return request_id if isinstance(request_id, str) else None


def fill_in(value: Any, fill: dict[str, Any]) -> Any:
    """Placeholders (``$other``...) replaced with what they name, where the harness knows it."""
    if isinstance(value, str) and value.startswith("$"):
        return fill.get(value, value)
    if isinstance(value, list):
        return [fill_in(item, fill) for item in value]
    if isinstance(value, dict):
        return {key: fill_in(item, fill) for key, item in value.items()}
    return value


frames = st.builds(Frame, messages, mutations, st.booleans())
# For the server: a few frames in a row, a quarter of the time on a connection that has not joined.
server_cases = st.tuples(st.lists(frames, min_size=1, max_size=4), st.sampled_from([False, False, False, True]))


def check_error(code: str, message: str, details: Any) -> None:
    if code not in p.ERROR_CODES:
        raise Undefined(f"error code {code!r} is not in the protocol")
    json.dumps(details)  # what the server sends must serialise
    if len(message) > 400:
        raise Undefined(f"an error message of {len(message)} characters")


def run_parse(frame: Frame) -> str:
    payload = frame.payload({"$offer": "v=0\r\n"})
    try:
        model = p.parse_client_message(payload)
    except p.ProtocolError as exc:
        check_error(exc.code, exc.message, exc.details)
        return f"refused:{exc.code}"
    if not isinstance(model, p.ClientMessage) or model.type not in TYPES:
        raise Undefined(f"parsed into {type(model).__name__}")
    return f"parsed:{model.type}"


@contextlib.contextmanager
def open_parse() -> Iterator[Runner]:
    yield bounded(run_parse, 2.0)
