"""SDP text helpers for the SFU's own descriptions (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


def announce_address(sdp: str, announced_ip: str) -> str:
    """Behind a 1:1 NAT: replace the address of every host candidate (and the connection line)
    with the public address the NAT maps to, keeping the ports."""
    ipaddress.ip_address(announced_ip)  # refuse anything that is not an address
    family = "IP6" if ":" in announced_ip else "IP4"
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and " typ host" in line:
            parts = line.split(" ")
            if len(parts) > 5:
                parts[4] = announced_ip
                line = " ".join(parts)
        elif line.startswith("c=IN "):
            line = f"c=IN {family} {announced_ip}"
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


# Bounds on a client's description, checked before anything parses it, so that parsing costs
# bounded time: an offer of 1,000 m-sections once became 1,000 up-tracks, a 1.1 MB offer to
# everyone else, and a 1.4 s stall of the event loop.
MAX_MEDIA_SECTIONS = 16  # m-sections in a publisher's offer: the tracks one participant may publish
MAX_STOPPED_FACTOR = 4  # ... and in all, stopped ones (port 0) included, this many times as many
MAX_SDP_LINES = 4000
MAX_LINE_LENGTH = 4096
MAX_CANDIDATES = 64  # candidates in one description, and trickled to one connection
MAX_CANDIDATE_LENGTH = 512


def check_candidate(candidate: str) -> None:
    """A trickled or described ICE candidate's attribute value: bounded, and one aiortc reads."""
    from aiortc.sdp import candidate_from_sdp

    if len(candidate) > MAX_CANDIDATE_LENGTH:
        raise ValueError(f"an ICE candidate is at most {MAX_CANDIDATE_LENGTH} characters")
    try:
        candidate_from_sdp(candidate.removeprefix("candidate:"))
    except Exception:  # aiortc asserts on what it cannot read
        raise ValueError("the ICE candidate does not parse") from None


def check_description(sdp: str, max_media: int = MAX_MEDIA_SECTIONS, bundled: bool = False) -> None:
    """Refuse text that is not a usable session description, or is larger than a client needs,
    before aiortc sees it: aiortc takes almost anything (an offer of plain prose yields an empty
    answer) and asserts on what it cannot read.  ``bundled``: every active media section must be
    in one BUNDLE group (on one UDP port, the transports of one peer connection would share a
    username fragment, and only one transport can own it)."""
    from aiortc.sdp import SessionDescription

    lines = [line for line in sdp.splitlines() if line]
    if not lines or lines[0] != "v=0":
        raise ValueError("a session description starts with v=0")
    if len(lines) > MAX_SDP_LINES or max(len(line) for line in lines) > MAX_LINE_LENGTH:
        raise ValueError(f"a description has at most {MAX_SDP_LINES} lines of {MAX_LINE_LENGTH} characters")
    media = [line for line in lines if line.startswith("m=")]
    if not media:
        raise ValueError("the description has no media section")
    active = [line for line in media if line.split(" ", 2)[1:2] != ["0"]]  # port 0: stopped, no track
    if len(active) > max_media or len(media) > MAX_STOPPED_FACTOR * max_media:
        raise ValueError(f"the description has {len(active)} media sections; at most {max_media} are allowed")
    for line in media:
        kind = line[2:].split(" ", 1)[0]
        if kind not in ("audio", "video", "application"):
            raise ValueError(f"unsupported media section {kind[:20]!r}")
    mids = [line[6:] for line in lines if line.startswith("a=mid:")]
    if len(set(mids)) != len(mids):
        raise ValueError("two media sections have the same mid")
    candidates = [line[2:] for line in lines if line.startswith("a=candidate:")]
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"the description has more than {MAX_CANDIDATES} ICE candidates")
    for candidate in candidates:
        check_candidate(candidate)
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser asserts, indexes and converts without checking
        raise ValueError(f"the description does not parse: {str(exc)[:100] or type(exc).__name__}") from None
    for section in parsed.media:
        if section.kind in ("audio", "video") and (section.dtls is None or section.ice is None):
            raise ValueError(f"media section {str(section.rtp.muxId)[:32]!r} lacks ICE or DTLS parameters")
    present = {str(section.rtp.muxId) for section in parsed.media}
    for group in parsed.group:
        missing = [str(mid) for mid in group.items if str(mid) not in present]
        if group.semantic == "BUNDLE" and missing:
            # aiortc builds the group's transport on its first mid's section, and has none.
            raise ValueError(f"the BUNDLE group names mid {missing[0][:32]!r}, which no media section has")
    if bundled:
        active = {str(section.rtp.muxId) for section in parsed.media if section.port != 0}
        groups = [{str(mid) for mid in group.items} for group in parsed.group if group.semantic == "BUNDLE"]
        if not any(active <= group for group in groups):
            raise ValueError("this node takes every connection on one UDP port: BUNDLE all media sections")


# Simulcast ------------------------------------------------------------------------------------

MAX_LAYERS = 4


@dataclass(slots=True)
class SimulcastOffer:
    """What a publisher's offer says about the encodings of one video m-section, lowest first as
    the client listed them.  RID simulcast (``a=rid`` + ``a=simulcast:send``) gives ``rids``;
    SSRC-group simulcast (``a=ssrc-group:SIM``) gives ``ssrcs`` and their RTX SSRCs."""

    mid: str
    rids: list[str] = field(default_factory=list)
    ssrcs: list[int] = field(default_factory=list)
    rtx: dict[int, int] = field(default_factory=dict)  # RTX SSRC -> media SSRC (FID groups)

    @property
    def layers(self) -> int:
        return len(self.rids) or len(self.ssrcs)


def _sections(sdp: str) -> list[list[str]]:
    """Session part first, then one list of lines per m-section."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _simulcast_rids(value: str) -> list[str]:
    """``send q;~h;f`` -> [q, h, f]: paused (~) streams still exist; of alternatives (a,b) the
    first is taken."""
    parts = value.split()
    if len(parts) < 2 or parts[0] != "send":
        return []
    rids = []
    for stream in parts[1].split(";"):
        rid = stream.split(",")[0].lstrip("~")
        if rid and len(rid) <= 16 and rid.replace("-", "").replace("_", "").isalnum():
            rids.append(rid)
    return rids


def simulcast_offers(sdp: str) -> dict[str, SimulcastOffer]:
    """The video m-sections of an offer that carry simulcast, by mid.  Malformed or partial
    attributes are ignored (the section is then treated as a single stream)."""
    offers: dict[str, SimulcastOffer] = {}
    for section in _sections(sdp)[1:]:
        if not section[0].startswith("m=video"):
            continue
        mid = None
        send_rids: set[str] = set()
        listed: list[str] = []
        sim: list[int] = []
        fid: dict[int, int] = {}
        for line in section:
            name, _, value = line.partition(":")
            if name == "a=mid":
                mid = value.strip()
            elif name == "a=rid":
                parts = value.split()
                if len(parts) >= 2 and parts[1] == "send":
                    send_rids.add(parts[0])
            elif name == "a=simulcast":
                listed = _simulcast_rids(value)
            elif name == "a=ssrc-group":
                parts = value.split()
                try:
                    numbers = [int(p) for p in parts[1:]]
                except ValueError:
                    continue
                if parts and parts[0] == "SIM" and 1 < len(numbers) <= MAX_LAYERS:
                    sim = numbers
                elif parts and parts[0] == "FID" and len(numbers) == 2:
                    fid[numbers[1]] = numbers[0]
        if mid is None:
            continue
        rids = [rid for rid in listed if rid in send_rids][:MAX_LAYERS]
        if len(rids) > 1:
            offers[mid] = SimulcastOffer(mid, rids=rids)
        elif sim:
            offers[mid] = SimulcastOffer(mid, ssrcs=sim, rtx={r: m for r, m in fid.items() if m in sim})
    return offers


def accept_simulcast(answer: str, offers: dict[str, SimulcastOffer]) -> str:
    """aiortc's answer drops ``a=rid``/``a=simulcast``; without them a browser sends only its
    first encoding.  Add ``a=rid:<rid> recv`` and ``a=simulcast:recv`` to each answered section
    whose offer had RID simulcast (SSRC-group simulcast needs nothing in the answer)."""
    if not any(offer.rids for offer in offers.values()):
        return answer
    out: list[str] = []
    for section in _sections(answer):
        mid = next((line.split(":", 1)[1].strip() for line in section if line.startswith("a=mid:")), None)
        offer = offers.get(mid) if mid is not None and section and section[0].startswith("m=video") else None
        out.extend(section)
        if offer is not None and offer.rids and not section[0].startswith("m=video 0 "):
            out.extend(f"a=rid:{rid} recv" for rid in offer.rids)
            out.append("a=simulcast:recv " + ";".join(offer.rids))
    return "\r\n".join(out) + "\r\n"


def offer_ssrc_simulcast(sdp: str, mid: str, layers: list[tuple[int, int | None]], cname: str) -> str:
    """Describe SSRC-group simulcast in an offer's m-section ``mid``: ``layers`` are (media SSRC,
    RTX SSRC or None), lowest first.  Adds the ``a=ssrc`` lines and FID groups that are missing,
    then ``a=ssrc-group:SIM``.  (The Python SDK sends its layers this way; the SFU reads them
    back with ``simulcast_offers``.)"""
    out: list[str] = []
    for section in _sections(sdp):
        out.extend(section)
        if not section or not section[0].startswith("m=video"):
            continue
        if f"a=mid:{mid}" not in section:
            continue
        present = set()
        for line in section:
            if line.startswith("a=ssrc:"):
                try:
                    present.add(int(line[7:].split(" ", 1)[0]))
                except ValueError:
                    continue
        groups = {line for line in section if line.startswith("a=ssrc-group:FID ")}
        for media, rtx in layers:
            if rtx is not None and f"a=ssrc-group:FID {media} {rtx}" not in groups:
                out.append(f"a=ssrc-group:FID {media} {rtx}")
            for ssrc in (media, rtx):
                if ssrc is not None and ssrc not in present:
                    out.append(f"a=ssrc:{ssrc} cname:{cname}")
                    present.add(ssrc)
        out.append("a=ssrc-group:SIM " + " ".join(str(media) for media, _ in layers))
    return "\r\n".join(out) + "\r\n"


# H.264 parameters -------------------------------------------------------------------------------

# RFC 6184 section 8.1: without profile-level-id, an H.264 format is Baseline profile, level 1.0.
H264_DEFAULT_PROFILE_LEVEL_ID = "42000a"
_BASELINE_IDC = "42"  # profile_idc 66: Baseline, and Constrained Baseline (a subset) with its flag


def _h264_profiles(section: list[str]) -> dict[str, str | None]:
    """The H.264 payload types of an m-section and their profile-level-id (None: absent)."""
    types: dict[str, str | None] = {}
    for line in section:
        if line.startswith("a=rtpmap:"):
            number, _, encoding = line[9:].partition(" ")
            if encoding.strip().lower().startswith("h264/"):
                types[number] = None
    for line in section:
        number, _, params = line[7:].partition(" ")
        if not line.startswith("a=fmtp:") or number not in types:
            continue
        for part in params.split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() == "profile-level-id":
                types[number] = value.strip()
    return types


def _mid(section: list[str]) -> str | None:
    return next((line[6:].strip() for line in section if line.startswith("a=mid:")), None)


def _implied_profile(offered: str | None) -> str:
    """What an answer without profile-level-id accepts: RFC 6184's Baseline, level 1.0.  A
    Baseline decoder decodes Constrained Baseline too (a subset), so when the offer was either,
    the answer takes the offered profile (at level 1.0)."""
    if offered is not None and offered[:2] == _BASELINE_IDC and len(offered) == 6:
        return offered[:4].lower() + H264_DEFAULT_PROFILE_LEVEL_ID[4:]
    return H264_DEFAULT_PROFILE_LEVEL_ID


def _add_profile(fmtp: str, value: str) -> str:
    head, _, params = fmtp.partition(" ")
    params = params.strip().rstrip(";")
    return f"{head} {params};profile-level-id={value}" if params else f"{head} profile-level-id={value}"


def normalize_h264(sdp: str, offer: str | None = None) -> str:
    """Write RFC 6184's reading of an absent ``profile-level-id`` into every H.264 format of a
    remote description, appending it to the format's ``a=fmtp`` line or adding one: Baseline
    (42000A), or, in an answer to the SFU's ``offer`` of Baseline or Constrained Baseline at that
    payload type, the offered profile (see ``_implied_profile``).

    aiortc reads an absent profile-level-id as 42E01F (Constrained Baseline, libwebrtc's legacy
    default): offered Baseline, it found no codec in common with an answer that left the
    parameter out, as webrtcbin's answers do, and refused it."""
    offered: dict[tuple[str | None, str], str | None] = {}
    for section in _sections(offer or "")[1:]:
        offered.update({(_mid(section), number): value for number, value in _h264_profiles(section).items()})
    out: list[str] = []
    for section in _sections(sdp):
        mid = _mid(section)
        absent = [number for number, value in _h264_profiles(section).items() if value is None]
        implied = {number: _implied_profile(offered.get((mid, number))) for number in absent}
        with_fmtp = {line[7:].split(" ", 1)[0] for line in section if line.startswith("a=fmtp:")}
        for line in section:
            if line.startswith("a=fmtp:") and line[7:].split(" ", 1)[0] in implied:
                line = _add_profile(line, implied[line[7:].split(" ", 1)[0]])
            out.append(line)
            number = line[9:].split(" ", 1)[0] if line.startswith("a=rtpmap:") else ""
            if number in implied and number not in with_fmtp:
                out.append(f"a=fmtp:{number} profile-level-id={implied[number]}")
    return "\r\n".join(out) + "\r\n"
