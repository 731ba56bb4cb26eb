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
