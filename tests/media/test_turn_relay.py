"""A participant behind a "strict firewall" (ICE restricted to relay candidates) joins through the
deployment's own TURN server with the credentials the join endpoint hands out, and media flows
both ways through the relay."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from aiortc import RTCIceServer

from clients.loadtest.process import free_port
from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from clients.sdk.participant import Participant
from tests.conftest import Backend
from tests.media.conftest import open_meeting, until
from turn.auth import rest_password
from turn.config import TurnSettings
from videoconf.app import TURN


def video_tracks(client):
    return [r for r in client.remote.values() if r.kind == "video" and r.verifier is not None]


def selected_types(pc) -> set[str]:
    """Candidate types of the pairs aioice nominated, on this side."""
    types = set()
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for pair in connection._nominated.values():
            types.add(pair.local_candidate.type)
    return types


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_relay_only_participant_joins_through_the_turn_server(sqlite_backend: Backend, tmp_path: Path, transport: str):
    udp, tcp = free_port(socket.SOCK_DGRAM), free_port()
    turn = TurnSettings(enabled=True, listen="127.0.0.1", udp_port=udp, tcp_port=tcp, relay_ports=None,
                        sfu_only=True)  # relays may reach the SFU's media address (127.0.0.1) and nothing else
    async with open_meeting(sqlite_backend, tmp_path, turn=turn) as meeting:
        service = meeting.api.app[TURN]
        _, joined = await meeting.api.call("POST", f"/api/meetings/{meeting.meeting['id']}/join", meeting.people[0]["token"], json={}, expect=200)
        (server,) = [s for s in joined["ice_servers"] if any(u.startswith("turn:") for u in s["urls"])]
        assert server["urls"] == [f"turn:127.0.0.1:{udp}?transport=udp", f"turn:127.0.0.1:{tcp}?transport=tcp"]
        expiry, _, user = server["username"].partition(":")
        assert user == joined["identity"] and int(expiry) > 0
        secret = meeting.api.app[TURN].settings.secrets[0].get_secret_value()
        assert server["credential"] == rest_password(secret, server["username"])

        host = await meeting.participant(meeting.host)
        uri = [u for u in server["urls"] if u.endswith(transport)]
        guest = Participant(meeting.signaling_url, joined["token"], relay_only=True,
                            ice_servers=[RTCIceServer(urls=uri, username=server["username"], credential=server["credential"])])
        meeting.clients.append(guest)
        await guest.connect()
        await host.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(frequency=440), "microphone")])
        await guest.publish([(PatternVideoTrack(320, 240, fps=15), "camera")])
        await until(lambda: video_tracks(guest) and video_tracks(guest)[0].verifier.frames_verified >= 30, timeout=40)
        await until(lambda: video_tracks(host) and video_tracks(host)[0].verifier.frames_verified >= 30, timeout=40)
        for client in (guest, host):
            report = video_tracks(client)[0].verifier.report()
            assert report["frames_corrupt"] == 0, report
        # the guest's media went through the relay: only relay candidates were used on its side
        assert selected_types(guest.publisher) == {"relay"} and selected_types(guest.subscriber) == {"relay"}
        assert selected_types(host.publisher) == {"host"}
        stats = service.server.stats
        # both ways through the relay (30 frames of the guest's video can be fewer than 100 packets)
        relayed = stats.relayed
        await until(lambda: relayed()["packets_to_peer"] > 100 and relayed()["packets_to_client"] > 100, timeout=10)
        assert service.server.gauges()["allocations"] >= 1
        await until(lambda: service.server.stats.succeeded.get("ChannelBind", 0) >= 1, timeout=5)
