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


def test_a_scheduled_sender_report_is_the_one_aiortcs_loop_would_send() -> None:
    from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

    sender = aiortc_hooks._probe_transceiver().sender
    s = aiortc_hooks._S
    setattr(sender, f"{s}ntp_timestamp", 0xE8F0_1234_5678_9ABC)
    setattr(sender, f"{s}rtp_timestamp", 0x1_0000_0005)  # wrapped to 32 bits as aiortc does for counts
    setattr(sender, f"{s}packet_count", 12345)
    setattr(sender, f"{s}octet_count", (1 << 32) + 99)
    setattr(sender, f"{s}cname", "cname-é")
    expected = bytes(RtcpSrPacket(ssrc=sender._ssrc, sender_info=RtcpSenderInfo(
        ntp_timestamp=0xE8F0_1234_5678_9ABC, rtp_timestamp=5, packet_count=12345, octet_count=99,
    ))) + bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, "cname-é".encode())])]))
    assert aiortc_hooks.sender_report(sender) == expected
    # the report's middle 32 bits of NTP time, for the round trip aiortc computes from receiver reports
    assert getattr(sender, f"{s}lsr") == 0x1234_5678
    assert getattr(sender, f"{s}lsr_time") is not None


async def test_the_report_schedule_keeps_aiortcs_random_intervals_and_its_one_timer() -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    schedule = aiortc_hooks.ReportSchedule(loop)
    senders = [aiortc_hooks._probe_transceiver().sender for _ in range(20)]
    for sender in senders:
        schedule.add(sender, now=100.0)
    assert all(100.5 <= due < 101.5 for due in schedule.due.values())
    assert schedule._timer is not None
    schedule.tick(100.49)  # nothing due yet
    assert schedule.sent == 0
    schedule.tick(101.5)  # every one due once (none connected: aiortc's path, which drops it)
    assert schedule.sent == 20
    assert all(102.0 <= due < 103.0 for due in schedule.due.values())
    schedule.tick(101.9)
    assert schedule.sent == 20
    await asyncio.sleep(0)  # the tap-less senders' writes ran and found no connection
    # A sender whose report cannot be built costs only its own report.
    broken = senders[0]
    del broken._RTCRtpSender__ntp_timestamp
    schedule.tick(103.0)
    assert schedule.failed == 1 and schedule.sent == 39
    for sender in senders:
        schedule.discard(sender)
    assert not schedule.due and schedule._timer is None
