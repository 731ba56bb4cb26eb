"""SDP text helpers for the SFU's own descriptions (pure)."""

from __future__ import annotations

import ipaddress


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


def check_description(sdp: str) -> None:
    """Refuse text that is not a usable session description before aiortc sees it: aiortc takes
    almost anything (an offer of plain prose yields an empty answer)."""
    from aiortc.sdp import SessionDescription

    lines = [line for line in sdp.splitlines() if line]
    if not lines or lines[0] != "v=0":
        raise ValueError("a session description starts with v=0")
    media = [line for line in lines if line.startswith("m=")]
    if not media:
        raise ValueError("the description has no media section")
    for line in media:
        kind = line[2:].split(" ", 1)[0]
        if kind not in ("audio", "video", "application"):
            raise ValueError(f"unsupported media section {kind!r}")
    try:
        parsed = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the description does not parse: {exc}") from None
    for section in parsed.media:
        if section.kind in ("audio", "video") and (section.dtls is None or section.ice is None):
            raise ValueError(f"media section {section.rtp.muxId!r} lacks ICE or DTLS parameters")
