"""The smallest inputs the fuzz targets found that had no defined outcome, each kept as a test of
the rule it broke."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from recorder import wire
from recorder.worker import Options, Recording, run
from sfu.room import SignalError
from signaling.protocol import ERROR_CODES
from tests.media.conftest import Meeting
from tests.turn.harness import FakeClock, Peer, make_server


def test_a_time_limited_username_with_non_ascii_digits_is_refused_not_a_server_error() -> None:
    """'²' and '๙' pass str.isdigit() but not int(): the lookup raised ValueError, answered 500."""
    server, _, _ = make_server(secrets=["secret"], clock=FakeClock())
    for name in ("²:bob", "๙:bob", "🄉๙:bob"):
        client = Peer(server, username=name, password="whatever")
        answer = client.allocate()
        assert answer is not None and Peer.error(answer) == 401, name
    assert 500 not in server.stats.errors


def test_a_recorder_event_nested_thousands_deep_is_skipped() -> None:
    assert wire.decode(ord("J"), b'{"type":"x","a":' + b"[" * 5000 + b"]" * 5000 + b"}") is None
    assert wire.decode(ord("J"), b"[" * 100_000) is None


def recording(tmp_path: Path) -> Recording:
    return Recording(Options(output=str(tmp_path / "r.mp4"), width=160, height=120, fps=10, start=0.0, delay=0.1), lambda m: None)


def raw_event(text: bytes) -> bytes:
    return wire.LENGTH.pack(len(text) + 1) + b"J" + text


def feed(target: Recording, *events: bytes) -> None:
    for kind, body in wire.Reader().feed(b"".join(events)):
        target.handle(kind, body)


def test_recorder_events_with_infinite_numbers_or_bad_tracks_are_counted_as_bad(tmp_path: Path) -> None:
    """int(Infinity) raised OverflowError; a clock rate of 0 raised ValueError at the track's
    first packet; an audio track with a video codec handed video frames to the mixer."""
    target = recording(tmp_path)
    feed(
        target,
        raw_event(b'{"type":"untrack","track":1e999}'),
        wire.encode_event({"type": "track", "track": 1, "participant": "a", "kind": "audio", "codec": "audio/opus", "clock_rate": 0}),
        wire.encode_event({"type": "track", "track": 2, "participant": "a", "kind": "audio", "codec": "video/VP8", "clock_rate": 90000}),
        wire.encode_event({"type": "stop", "at": float("inf")}),
        wire.encode_packet(1, 0, True, True, 1, 960, 0.05, b"\xfc\xff\xfe"),
    )
    assert target.bad_messages == 5 and target.tracks == {} and target.stop_at is None
    target.close()


def test_a_stop_time_ahead_of_the_clock_does_not_keep_the_worker_rendering(tmp_path: Path) -> None:
    """The final render went up to the stop time: one far ahead never ended."""
    stream = io.BytesIO(wire.encode_event({"type": "stop", "at": 1e12}))
    options = Options(output=str(tmp_path / "ahead.mp4"), width=160, height=120, fps=10, start=99.0, delay=0.1)
    result = run(options, stream, io.StringIO(), clock=lambda: 100.0)
    assert result["event"] == "done" and result["duration"] == 1.0


async def test_errors_the_control_api_passes_through_signaling_are_protocol_codes(meeting: Meeting) -> None:
    """A private message to yourself was refused with invalid_recipient, a code the protocol did
    not list (so were invalid_transition, not_found, nobody_in_meeting and others)."""
    host = await meeting.participant(meeting.host)
    await host.send({"type": "chat", "id": "c1", "text": "hello", "to": host.identity})
    error = await host.wait_for("error", lambda m: m.get("id") == "c1")
    assert error["code"] == "invalid_recipient" and error["code"] in ERROR_CODES



async def test_an_offer_whose_bundle_group_names_a_missing_section_is_refused_before_aiortc(caplog: pytest.LogCaptureFixture) -> None:
    """An offer whose first m= line is cut away still bundles mids 0 and 1: aiortc made the
    group's transport from mid 0's section, found none, failed half-way (AttributeError), and
    then failed again closing the peer connection it left."""
    from tests.fuzz.media import Node, client_pc, publisher_offer
    from tests.fuzz.sdp_cases import LineOp, SdpCase

    node = Node("half-applied")
    pc = client_pc()
    sdp, tracks = await publisher_offer(pc, ("H264", "audio"))
    await pc.close()
    first_media_line = sdp.splitlines().index(next(line for line in sdp.splitlines() if line.startswith("m=")))
    offer = SdpCase(base=0, ops=(LineOp(kind="drop", at=first_media_line, other=0, text=""),), newline="\r\n").apply(sdp)
    participant, _ = await node.join("p")
    with pytest.raises(SignalError, match="BUNDLE group names mid '0'"):
        await participant.publish(offer, tracks)
    await participant.room.remove(participant, "left")
    await node.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(("sfu", "aiortc"))]
