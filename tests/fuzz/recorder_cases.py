"""The recorder's wire format: streams of every record kind (RTP packet, sender report, JSON
event, unknown kinds) built with ``recorder.wire``'s encoders from plausible and hostile field
values (real VP8 and Opus payloads among them), then corrupted at the stream level; read by
``wire.Reader``/``wire.decode`` alone, and by the worker's whole loop (``recorder.worker.run``)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from recorder import wire
from recorder.synthetic import encode_clip
from recorder.worker import Options, run
from tests.fuzz.core import Runner, Undefined, bounded
from tests.fuzz.turn_cases import either

CLOCK = 5_000.0  # the worker's clock during a case: 0.3 s after the recording's start


def _packet(item: wire.Packet) -> bytes:
    return wire.encode_packet(item.track, item.layer, item.marker, item.keyframe, item.sequence, item.timestamp, item.arrival, item.payload)


def _report(item: wire.SenderReport) -> bytes:
    return wire.encode_report(item.track, item.layer, item.ntp, item.rtp, item.arrival)


def encode(item: Any) -> bytes:
    """A record of the stream: the wire's own Packet and SenderReport, an event or another kind."""
    if isinstance(item, wire.Packet):
        return _packet(item)
    if isinstance(item, wire.SenderReport):
        return _report(item)
    return item.encode()


@dataclass(frozen=True)
class Deep:
    """An array nested ``depth`` deep (written by hand: ``json.dumps`` would recurse)."""

    depth: int


def _deep(value: Any) -> str:
    if isinstance(value, Deep):
        return f"__deep_{value.depth}__"
    raise TypeError(type(value).__name__)


@dataclass(frozen=True)
class EventRecord:
    event: dict[str, Any]

    def encode(self) -> bytes:
        text = json.dumps(self.event, default=_deep, separators=(",", ":"))
        text = re.sub(r'"__deep_(\d+)__"', lambda m: "[" * int(m.group(1)) + "0" + "]" * int(m.group(1)), text)
        body = text.encode("utf-8", "surrogatepass")
        return struct.pack("!I", len(body) + 1) + b"J" + body


@dataclass(frozen=True)
class OtherRecord:
    kind: int
    body: bytes

    def encode(self) -> bytes:
        return struct.pack("!I", len(self.body) + 1) + bytes([self.kind]) + self.body


@dataclass(frozen=True)
class Corruption:
    kind: str  # flip, truncate, length, insert
    at: int
    value: int
    extra: bytes = b""


def _payloads() -> list[bytes]:
    clip = encode_clip(seconds=0.2, width=160, height=120, fps=10)
    return [payload for _, payloads, _ in clip.video for payload in payloads][:12] + clip.audio[:6]


PAYLOADS = _payloads()


def _mutated(payload: bytes, at: int, value: int) -> bytes:
    if not payload:
        return payload
    out = bytearray(payload)
    out[at % len(out)] = value
    return bytes(out)


payloads = st.one_of(
    st.sampled_from(PAYLOADS),
    st.builds(_mutated, st.sampled_from(PAYLOADS), st.integers(0, 2000), st.integers(0, 255)),
    st.binary(max_size=64),
)
times = either(st.floats(4_999.0, 5_001.0), st.floats(allow_nan=True, allow_infinity=True))

# Hostile JSON values: wrong types, non-finite and huge numbers, deep nesting.
hostile = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(Deep, st.integers(1, 3000)),
)


def _field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return either(plausible, hostile)


tracks = st.sampled_from([1, 2, 3])
people = st.lists(st.fixed_dictionaries({"identity": _field(st.sampled_from(["a", "b"])), "name": _field(st.text(max_size=6))}), max_size=3)
EVENTS = {
    "track": {
        "track": tracks, "participant": st.sampled_from(["a", "b"]), "kind": st.sampled_from(["audio", "video"]),
        "source": st.sampled_from(["camera", "microphone", "screen"]),
        "codec": st.sampled_from(["video/VP8", "audio/opus", "video/H264", "video/AV1"]),
        "clock_rate": st.sampled_from([90000, 48000, 0, -1]), "muted": st.booleans(),
    },
    "untrack": {"track": tracks},
    "participants": {"participants": people},
    "speakers": {"dominant": st.sampled_from(["a", "b", None])},
    "muted": {"track": tracks, "muted": st.booleans()},
    "stop": {"at": times},
}


def _event(kind: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Half complete and plausible, half with fields missing or hostile."""
    complete = st.fixed_dictionaries({"type": st.just(kind), **fields})
    damaged = st.fixed_dictionaries({"type": st.just(kind)}, optional={name: _field(value) for name, value in fields.items()})
    return either(complete, damaged)


events = st.one_of(
    *(_event(kind, fields) for kind, fields in EVENTS.items()),
    st.fixed_dictionaries({"type": _field(st.text(max_size=8))}),
)
records = st.one_of(
    st.builds(wire.Packet, either(tracks, st.integers(0, 0xFFFF)), st.integers(0, 3), st.booleans(), st.booleans(),
              st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), times, payloads),
    st.builds(wire.SenderReport, tracks, st.integers(0, 3), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), times),
    st.builds(EventRecord, events),
    st.builds(OtherRecord, st.integers(0, 255), st.binary(max_size=32)),
)
corruptions = st.one_of(
    st.none(),
    st.builds(Corruption, st.sampled_from(["flip", "truncate", "length", "insert"]), st.integers(0, 4000), st.integers(0, 2**32 - 1), st.binary(max_size=8)),
)
# (records, a corruption of the stream, how the stream is split into reads)
streams = st.tuples(st.lists(records, max_size=12), corruptions, st.lists(st.integers(1, 300), max_size=4))


def corrupt(data: bytes, corruption: Corruption | None) -> bytes:
    if corruption is None or not data:
        return data
    out = bytearray(data)
    at = corruption.at % len(out)
    if corruption.kind == "flip":
        out[at] ^= (corruption.value & 0xFF) or 1
    elif corruption.kind == "truncate":
        del out[at:]
    elif corruption.kind == "length":
        out[at: at + 4] = struct.pack("!I", corruption.value)
    else:
        out[at:at] = corruption.extra
    return bytes(out)


def stream_bytes(case: tuple[list[Any], Corruption | None, list[int]]) -> tuple[bytes, list[bytes]]:
    items, corruption, splits = case
    data = corrupt(b"".join(encode(item) for item in items), corruption)
    chunks, pos = [], 0
    for size in splits:
        chunks.append(data[pos: pos + size])
        pos += size
    chunks.append(data[pos:])
    return data, chunks


def _check_decoded(message: Any) -> None:
    if message is None or isinstance(message, (wire.Packet, wire.SenderReport)):
        return
    if not (isinstance(message, dict) and isinstance(message.get("type"), str)):
        raise Undefined(f"decode returned {type(message).__name__}")


def run_wire(case: tuple[list[Any], Corruption | None, list[int]]) -> str:
    _, chunks = stream_bytes(case)
    reader = wire.Reader()
    decoded = skipped = 0
    try:
        for chunk in chunks:
            for kind, body in reader.feed(chunk):
                message = wire.decode(kind, body)
                _check_decoded(message)
                decoded += message is not None
                skipped += message is None
    except wire.WireError:
        return "refused"
    if case[1] is None and decoded + skipped != len(case[0]):
        raise Undefined("an intact stream did not come out record by record")
    return "skipped" if skipped else "decoded"


@contextlib.contextmanager
def open_wire() -> Iterator[Runner]:
    yield bounded(run_wire, 2.0)


@contextlib.contextmanager
def open_worker() -> Iterator[Runner]:
    with tempfile.TemporaryDirectory() as directory:
        output = str(Path(directory) / "fuzz.mp4")

        def run_case(case: tuple[list[Any], Corruption | None, list[int]]) -> str:
            data, _ = stream_bytes(case)
            options = Options(output=output, width=160, height=120, fps=10, start=CLOCK - 0.3, delay=0.1, preset="ultrafast")
            result = run(options, io.BytesIO(data), io.StringIO(), clock=lambda: CLOCK)
            if result.get("event") != "done" or not math.isfinite(result["duration"]):
                raise Undefined(f"the worker ended with {result}")
            return "bad_messages" if result["bad_messages"] else "clean"

        yield bounded(run_case, 5.0)
