"""The private aiortc API the SFU relies on is still there, and the ICE limits work."""

from __future__ import annotations

import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from sfu import aiortc_hooks
from sfu.aiortc_hooks import AIORTC_VERSION, HookMissing, configure_ice, verify_hooks
from sfu.sdp import announce_address


def test_every_hook_is_present_in_the_pinned_aiortc() -> None:
    assert aiortc.__version__ == AIORTC_VERSION
    verify_hooks()


def test_a_missing_hook_fails_loudly(monkeypatch) -> None:
    from aiortc import RTCRtpSender

    monkeypatch.delattr(RTCRtpSender, "_handle_rtcp_packet")
    with pytest.raises(HookMissing, match="RTCRtpSender._handle_rtcp_packet"):
        verify_hooks()


async def test_ice_candidates_are_limited_to_the_allowed_addresses_and_ports() -> None:
    configure_ice(["127.0.0.1"], (41000, 41009))
    try:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")]
        await pc.close()
    finally:
        configure_ice(["127.0.0.1"], None)
    assert candidates
    for line in candidates:
        parts = line.split()
        assert parts[4] == "127.0.0.1" and 41000 <= int(parts[5]) <= 41009, line


def test_announced_address_replaces_host_candidates() -> None:
    sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\na=candidate:1 1 udp 2130706431 127.0.0.1 41000 typ host\r\na=candidate:2 1 udp 1694498815 203.0.113.9 41000 typ srflx raddr 127.0.0.1 rport 41000\r\n"
    out = announce_address(sdp, "198.51.100.7")
    assert "a=candidate:1 1 udp 2130706431 198.51.100.7 41000 typ host" in out
    assert "c=IN IP4 198.51.100.7" in out and "203.0.113.9 41000 typ srflx" in out
    with pytest.raises(ValueError):
        announce_address(sdp, "not-an-ip")
    assert aiortc_hooks.REQUIRED_HOOKS
