"""This TURN server against independent clients: Debian coturn's turnutils_uclient (echoing through
turnutils_peer) and aioice's TURN client."""

from __future__ import annotations

import asyncio
import re
import ssl

import aioice.turn
import pytest
from prometheus_client import CollectorRegistry

from clients.loadtest.polling import until
from clients.loadtest.process import free_port
from tests.turn.conftest import SECRET, coturn_tool
from turn.metrics import TurnCollector

MESSAGES, CLIENTS = 40, 3


def listener_port(service, port_of: str) -> int:
    return {"udp": service.udp_address, "tcp": service.tcp_address, "tls": service.tls_address}[port_of][1]


async def uclient(port: int, peer_port: int, *options: str) -> str:
    """turnutils_uclient against the TURN server listening on ``port``."""
    process = await asyncio.create_subprocess_exec(
        coturn_tool("turnutils_uclient"), *options, "-e", "127.0.0.1", "-r", str(peer_port), "-p", str(port),
        "-n", str(MESSAGES), "-m", str(CLIENTS), "-z", "5", "-c", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return output.decode(errors="replace")


def assert_no_loss(output: str) -> None:
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", output)
    assert totals, output[-2000:]
    sent, received = map(int, totals[-1])
    assert sent == received == MESSAGES * CLIENTS, output[-2000:]
    assert re.search(r"Total lost packets 0 \(", output), output[-2000:]


@pytest.mark.parametrize("options, port_of, uses_channels", [
    (("-u", "alice", "-w", "wonderland"), "udp", True),
    (("-u", "alice", "-w", "wonderland", "-s"), "udp", False),
    (("-u", "alice", "-w", "wonderland", "-t"), "tcp", True),
    (("-u", "alice", "-w", "wonderland", "-t", "-s", "-l", "170"), "tcp", False),
    (("-W", SECRET, "-u", "carol"), "udp", True),
    (("-W", SECRET, "-u", "carol", "-t", "-l", "171"), "tcp", True),
    (("-u", "alice", "-w", "wonderland", "-t", "-S"), "tls", True),
], ids=["udp-channel", "udp-send", "tcp-channel", "tcp-send", "time-limited", "time-limited-tcp", "tls"])
async def test_turnutils_uclient_relays_without_loss(turn_service, udp_peer, options, port_of, uses_channels):
    output = await uclient(listener_port(turn_service, port_of), udp_peer, *options)
    assert_no_loss(output)
    stats = turn_service.server.stats
    relayed = stats.relayed()
    assert relayed["packets_to_peer"] >= MESSAGES * CLIENTS and relayed["packets_to_client"] >= MESSAGES * CLIENTS
    assert type(turn_service.udp.path).__name__ == ("NativePath" if turn_service.settings.native_relay else "PyPath")
    routed = turn_service.udp.path.counters()
    if port_of == "udp" and uses_channels:  # ChannelData over UDP takes the routed path both ways
        assert routed["to_peer_packets"] >= MESSAGES * CLIENTS and routed["to_client_packets"] >= MESSAGES * CLIENTS, routed
        # and the metrics say so, with the reads that carried them
        registry = CollectorRegistry()
        registry.register(TurnCollector(lambda: turn_service.server))
        sample = registry.get_sample_value
        assert sample("videoconf_turn_relayed_packets_total", {"direction": "to_peer"}) == relayed["packets_to_peer"]
        assert sample("videoconf_turn_socket_read_datagrams_total", {"socket": "relay"}) >= MESSAGES * CLIENTS
        assert 0 < sample("videoconf_turn_socket_reads_total", {"socket": "listener"}) <= sample(
            "videoconf_turn_socket_read_datagrams_total", {"socket": "listener"})
    else:  # Send and Data indications, and streams, go through the server
        assert routed["to_peer_packets"] == routed["to_client_packets"] == 0, routed
        assert stats.packets_to_peer >= MESSAGES * CLIENTS and stats.packets_to_client >= MESSAGES * CLIENTS
    assert stats.allocations_created >= CLIENTS
    succeeded = stats.succeeded
    assert (succeeded.get("ChannelBind", 0) >= CLIENTS) == uses_channels, succeeded
    assert succeeded.get("CreatePermission", 0) >= CLIENTS or uses_channels, succeeded
    if port_of != "udp":  # a closed connection takes its allocation along
        await until(lambda: not turn_service.server.allocations, 5, "the closed connections' allocations to go")


async def test_turnutils_uclient_with_a_wrong_password_is_refused(turn_service, udp_peer):
    output = await uclient(listener_port(turn_service, "udp"), udp_peer, "-u", "alice", "-w", "not-the-password")
    assert "Cannot complete Allocation" in output
    assert turn_service.server.stats.errors[401] >= 2  # the challenge, then the wrong password
    assert turn_service.server.stats.relayed()["packets_to_peer"] == 0 and not turn_service.server.allocations


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.received: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_aioice_turn_client_relays_through_channels(turn_service, transport):
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo = echo_transport.get_extra_info("sockname")
    server = turn_service.tls_address if transport == "tls" else getattr(turn_service, f"{transport}_address")
    context = None
    if transport == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    client_transport, collector = await aioice.turn.create_turn_endpoint(
        Collect, server_addr=server, username="alice", password="wonderland",
        transport="tcp" if transport == "tls" else transport, ssl=context,
    )
    try:
        relayed = client_transport.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1"
        for index in range(50):
            client_transport.sendto(f"ping {index}".encode(), echo)
        got = [await asyncio.wait_for(collector.received.get(), 5) for _ in range(50)]
        assert sorted(data for data, _ in got) == sorted(f"ping {i}".encode() for i in range(50))
        assert {addr[:2] for _, addr in got} == {echo[:2]}
        assert turn_service.server.gauges()["channels"] == 1
    finally:
        client_transport.close()
        echo_transport.close()
    # Deleted by the client (UDP) or its closed connection.
    await until(lambda: not turn_service.server.allocations, 5, "the allocation to go")


async def test_videoconf_turn_process_relays_over_tcp(udp_peer, tmp_path):
    """`videoconf turn` as an operator starts it (its own process, on uvloop) relays for
    turnutils_uclient over TCP, as the join response's `?transport=tcp` URIs promise."""
    import os
    import socket
    import sys

    udp_port, tcp_port = free_port(socket.SOCK_DGRAM), free_port()
    env = {
        **os.environ, "VIDEOCONF_DATA_DIR": str(tmp_path), "VIDEOCONF_TURN__LISTEN": "127.0.0.1",
        "VIDEOCONF_TURN__UDP_PORT": str(udp_port), "VIDEOCONF_TURN__TCP_PORT": str(tcp_port),
        "VIDEOCONF_TURN__USERS": '{"alice": "wonderland"}', "VIDEOCONF_TURN__ALLOW_LOOPBACK": "true",
    }
    env.pop("VIDEOCONF_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "videoconf.cli", "turn", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        banner = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"TURN server" in banner, (banner, await process.stderr.read())
        output = await uclient(tcp_port, udp_peer, "-u", "alice", "-w", "wonderland", "-t")
        assert_no_loss(output)
    finally:
        process.terminate()
        _, errors = await asyncio.wait_for(process.communicate(), 20)
    assert b"AssertionError" not in errors and b"Traceback" not in errors, errors.decode()[-2000:]
