"""The fuzz targets, each a strategy and a harness whose runner gives every input a defined outcome
(a label) or raises.  ``test_targets.py`` runs each for a small budget; ``benchmarks/fuzz_run.py``
for 10,000 cases or more.

``KNOWN`` lists undefined outcomes found in code this work may not change (``sfu/``, aiortc under
it), reported with a reproducer to its owners: the suite counts them apart instead of failing on
them, and drops each from the list when it is fixed (a known finding that no longer occurs in
the benchmark run is reported as gone)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.fuzz import (
    media,
    recorder_cases,
    rtp_cases,
    sdp_cases,
    signaling_cases,
    signaling_server,
    turn_cases,
)
from tests.fuzz.core import Target


@dataclass(frozen=True)
class Known:
    name: str
    target: str
    pattern: str  # matched against the Undefined's message
    where: str

    def matches(self, target: str, message: str) -> bool:
        return target == self.target and re.search(self.pattern, message) is not None


KNOWN = [
]


def known(target: str, message: str) -> Known | None:
    return next((k for k in KNOWN if k.matches(target, message)), None)


TARGETS = [
    Target("rtp_rtcp_ingress", "decrypted RTP/RTCP into a connected publisher's and subscriber's SFU transports",
           rtp_cases.packet_runs, media.open_rtp, 30),
    Target("stun_codec", "turn.stun.parse and the attribute decoders", turn_cases.codec_inputs, turn_cases.open_codec, 150),
    Target("turn_server", "sessions against a fresh TurnServer: UDP through UdpListener, TCP through StreamConnection",
           turn_cases.sessions, turn_cases.open_turn, 60),
    Target("sdp_offers", "mutated offers through Participant.publish on a real node", sdp_cases.sdp_cases, media.open_publish, 40),
    Target("sdp_answers", "mutated answers through the subscriber negotiation on a real node", sdp_cases.sdp_cases,
           media.open_answer, 25),
    Target("signaling_parse", "signaling.protocol.parse_client_message", signaling_cases.frames, signaling_cases.open_parse, 200),
    Target("signaling_server", "frames on a real server connection, each followed by a ping", signaling_cases.server_cases,
           signaling_server.open_signaling, 25),
    Target("recorder_wire", "recorder.wire.Reader and decode", recorder_cases.streams, recorder_cases.open_wire, 100),
    Target("recorder_worker", "the worker's loop (recorder.worker.run) on the same streams", recorder_cases.streams,
           recorder_cases.open_worker, 25),
]
BY_NAME = {target.name: target for target in TARGETS}
