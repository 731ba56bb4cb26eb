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
    Known("rtp-extension-size", "rtp_rtcp_ingress", r"raised out of the receive path \(unpack requires a buffer of \d+ bytes\)",
          "aiortc's RtpPacket.parse raises struct.error (not ValueError) for an abs-send-time, audio-level or "
          "transport-cc element of the wrong size; RTCDtlsTransport._handle_rtp_data lets it out and the "
          "publisher's transport closes (sfu/aiortc_hooks.py has no guard after SRTP)"),
    Known("srtp-replay-window", "rtp_rtcp_ingress", r"replay check failed \(index too old\)",
          "DownTrack.forward sends a packet whose rewritten sequence number is further behind than SRTP's "
          "replay window: pylibsrtp refuses it, the packet path counts and logs an error per packet"),
    Known("contained-repeat", "rtp_rtcp_ingress", r"^a failure in the SFU's packet path \(contained",
          "repeats of the failure above: the packet path logs only the 1st, 2nd, 4th... of each subscriber"),
    Known("nack-across-wrap", "rtp_rtcp_ingress", r"NACK tick failed .*negative shift count",
          "ReceiverTap.send_nack hands aiortc sequence numbers cut to 16 bits across the wrap ([65535, 0]): "
          "aiortc's NACK packing raises ValueError, every 20 ms tick logs it and no NACK goes out"),
    Known("duplicate-mid", "sdp_offers", r"'NoneType' object has no attribute '(stop|transport)'",
          "an offer with two m-sections of the same MID is refused, but the peer connection aiortc was left "
          "with cannot close (AttributeError): Room.remove raises half-way"),
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
