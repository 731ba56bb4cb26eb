"""SDP built from real descriptions (aiortc clients' offers and answers), mutated line by line:
lines dropped, duplicated, swapped, cut short, their values or numbers replaced with boundary
values, and lines of every attribute the SFU or aiortc reads inserted with generated values."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import strategies as st

NUMBERS = [-1, 0, 1, 9, 35, 63, 96, 97, 111, 127, 128, 255, 256, 4095, 65535, 65536, 2**31, 2**32, 2**64, 10**30]
TEMPLATES = [
    "a=rtpmap:{n} {codec}/{n}", "a=rtpmap:{n} {codec}/{n}/{n}", "a=fmtp:{n} {word}={n};apt={n}", "a=fmtp:{n} {word}",
    "a=rtcp-fb:{n} {word}", "a=extmap:{n} {uri}", "a=extmap:{n}/{word} {uri}", "a=ssrc:{n} cname:{word}",
    "a=ssrc-group:{group} {n} {n}", "a=ssrc-group:{group} {n} {n} {n}", "a=rid:{word} {direction}", "a=rid:{word} send pt={n}",
    "a=simulcast:{direction} {word};{word};~{word}", "a=mid:{word}", "a=group:BUNDLE {word} {word}", "a=setup:{word}",
    "a=fingerprint:{word} {hex}", "a=ice-ufrag:{word}", "a=ice-pwd:{word}", "a=candidate:{n} 1 udp {n} {address} {n} typ {word}",
    "m={kind} {n} {proto} {n} {n}", "m={kind} {n} {proto}", "c=IN {family} {address}", "a={direction}", "a=msid:{word} {word}",
    "a=rtcp-mux", "a=rtcp:{n} IN IP4 {address}", "a=sctp-port:{n}", "a=max-message-size:{n}", "b=AS:{n}", "a=ptime:{n}",
    "a=extmap-allow-mixed", "a=end-of-candidates", "a=ice-options:{word}", "o=- {n} {n} IN IP4 {address}", "t={n} {n}", "v={n}", "{word}",
]
WORDS = st.one_of(st.sampled_from(["0", "1", "2", "q", "h", "f", "sha-256", "actpass", "active", "passive", "SIM", "FID",
                                   "nack", "nack pli", "ccm fir", "goog-remb", "transport-cc", "host", "apt", ""]),
                  st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=12))
CODECS = st.sampled_from(["opus", "VP8", "H264", "VP9", "AV1", "rtx", "red", "ulpfec", "PCMU", "", "x" * 64])
URIS = st.sampled_from([
    "urn:ietf:params:rtp-hdrext:sdes:mid", "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id", "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "urn:x", "",
])


@dataclass(frozen=True)
class LineOp:
    kind: str  # drop, duplicate, swap, cut, value, numbers, insert
    at: int
    other: int
    text: str


@dataclass(frozen=True)
class SdpCase:
    base: int  # which real description to start from
    ops: tuple[LineOp, ...]
    newline: str  # how lines are joined

    def apply(self, sdp: str) -> str:
        lines = sdp.splitlines()
        for op in self.ops:
            lines = _apply(lines, op)
        return self.newline.join(lines) + self.newline


def _apply(lines: list[str], op: LineOp) -> list[str]:
    if not lines:
        return [op.text]
    at = op.at % len(lines)
    line = lines[at]
    if op.kind == "drop":
        return lines[:at] + lines[at + 1:]
    if op.kind == "duplicate":
        return lines[: at + 1] + [line] + lines[at + 1:]
    if op.kind == "swap":
        other = op.other % len(lines)
        lines = list(lines)
        lines[at], lines[other] = lines[other], lines[at]
        return lines
    if op.kind == "cut":
        replaced = line[: op.other % (len(line) + 1)]
    elif op.kind == "value":
        head, sep, _ = line.partition(":") if line.startswith("a=") else line.partition("=")
        replaced = head + (sep or "=") + op.text
    elif op.kind == "numbers":
        replaced = re.sub(r"\d+", str(NUMBERS[op.other % len(NUMBERS)]), line, count=1 + op.other % 3)
    else:
        return lines[:at] + [op.text] + lines[at:]
    return lines[:at] + [replaced] + lines[at + 1:]


@st.composite
def inserted_line(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from(TEMPLATES))

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "n":
            return str(draw(st.one_of(st.sampled_from(NUMBERS), st.integers(0, 200))))
        if key == "codec":
            return draw(CODECS)
        if key == "uri":
            return draw(URIS)
        if key == "group":
            return draw(st.sampled_from(["SIM", "FID", "FEC", "X"]))
        if key == "direction":
            return draw(st.sampled_from(["send", "recv", "sendonly", "recvonly", "sendrecv", "inactive", "x"]))
        if key == "kind":
            return draw(st.sampled_from(["audio", "video", "application", "text", ""]))
        if key == "proto":
            return draw(st.sampled_from(["UDP/TLS/RTP/SAVPF", "RTP/AVP", "UDP/DTLS/SCTP", "x"]))
        if key == "family":
            return draw(st.sampled_from(["IP4", "IP6", "X"]))
        if key == "address":
            return draw(st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "256.1.1.1", "example.org", ""]))
        if key == "hex":
            return draw(st.sampled_from(["00:11", ":".join(["AB"] * 32), "zz", ""]))
        return draw(WORDS)

    return re.sub(r"\{(\w+)\}", fill, template)


line_ops = st.one_of(
    st.builds(LineOp, st.sampled_from(["drop", "duplicate", "swap", "cut", "numbers"]), st.integers(0, 400), st.integers(0, 400), st.just("")),
    st.builds(LineOp, st.just("value"), st.integers(0, 400), st.just(0), WORDS),
    st.builds(LineOp, st.just("insert"), st.integers(0, 400), st.just(0), inserted_line()),
)
sdp_cases = st.builds(
    SdpCase, st.integers(0, 3), st.lists(line_ops, max_size=6).map(tuple), st.sampled_from(["\r\n", "\r\n", "\n"])
)
