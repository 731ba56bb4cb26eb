"""``udp_port``: a node (``videoconf run`` in its own process) offers every peer connection's host
candidate on one known UDP port, one socket shared by all of them, so that a firewall or a
Kubernetes hostPort needs that one port.  Media flows both ways for several participants at once
and through their leaving and joining, datagrams from unknown sources are dropped and counted,
and the node never opens another UDP socket."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from clients.loadtest.polling import until
from clients.loadtest.process import free_port
from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from tests.faults.node import Node, frames_advance, video_tracks


def udp_ports(pid: int) -> list[int]:
    """The local ports of the process's UDP sockets."""
    inodes = set()
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].split(":")[1], 16))
    return sorted(ports)


def candidate_ports(sdp: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host", sdp)}


async def test_every_peer_connection_shares_the_one_udp_port(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    node = Node(tmp_path, VIDEOCONF_UDP_PORT=str(port))
    try:
        await node.start()
        assert udp_ports(node.pid) == [port]  # bound at start, before anyone joins
        host, guest, meeting, _ = await node.hosted_meeting()
        third = await node.register("Theo Third")
        publisher = await node.participant(host, meeting)
        await publisher.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(440), "microphone")])
        viewer = await node.participant(guest, meeting)
        await viewer.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(440), "microphone")])
        await frames_advance(viewer, 20)
        await frames_advance(publisher, 20)
        for client in (publisher, viewer):
            for pc in (client.publisher, client.subscriber):
                assert pc is not None and candidate_ports(pc.remoteDescription.sdp) == {port}

        # Noise from addresses that never passed a check reaches no connection.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for payload in (b"", b"\x16\xfe\xfd" + bytes(40), b"\x80\x60" + bytes(40), bytes(300)) * 50:
                attacker.sendto(payload, ("127.0.0.1", port))
        await frames_advance(viewer, 15)
        metrics = await node.metrics()
        assert metrics.get("videoconf_sfu_datagrams_dropped_total{reason=no_connection}", 0) >= 150

        # A third comes and goes, twice; everyone still receives, on the same one socket.
        for _ in range(2):
            late = await node.participant(third, meeting)
            await until(lambda late=late: len(video_tracks(late)) == 2, 20, "the late joiner to receive both videos")
            await frames_advance(late, 10)
            await late.close()
            node.participants.remove(late)
        await frames_advance(viewer, 15)
        await frames_advance(publisher, 15)
        report = await viewer.report()
        audio = [t for t in report["tracks"] if t["kind"] == "audio"]
        assert audio and all(t["tone_strength"] > 0.5 for t in audio), audio
        assert udp_ports(node.pid) == [port]
    finally:
        await node.close()


async def test_chromium_meets_an_sdk_participant_through_the_one_udp_port(tmp_path: Path) -> None:
    """The web client in Debian's Chromium (its own ICE agent: several candidates, its own
    checks and nominations) publishes and receives through a node on one UDP port."""
    from tests.media.browser import chromium
    from tests.media.test_web_client import playing_videos, wait_until

    port = free_port(socket.SOCK_DGRAM)
    node = Node(tmp_path, VIDEOCONF_UDP_PORT=str(port))
    try:
        async with chromium() as browser:
            page, _, sdk = await node.page_with_publishing_host(browser)

            async def host_video() -> dict | None:
                for video in await playing_videos(page):
                    if video["tile"] == "Hedy Host" and video["width"] > 0 and video["frames"] > 10:
                        return video
                return None

            await wait_until(host_video, 30, "the host's video playing in the page")
            await until(lambda: [r for r in sdk.remote.values() if r.kind == "video" and r.frames >= 10], 30,
                        "the page's camera at the SDK participant")
        assert udp_ports(node.pid) == [port]
    finally:
        await node.close()
