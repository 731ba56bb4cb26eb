"""A ``Forwarder`` whose steady packets go through a native lane (sfu/_fastsend.c), a real SRTP
session and a loopback socket: the forwarding tests run on it as on the Python forwarder."""

from __future__ import annotations

import os
import socket
import struct
import types
from typing import Any

from pylibsrtp import Policy, Session

from sfu import fastsend
from sfu.fastsend import PROTECT, pack_address, session_pointer
from sfu.forwarder import Drop, Forward, Forwarder
from sfu.forwarding import lane_ready, lend, reclaim
from sfu.packet_cache import CachedPacket

CONNECTED = object()  # stands for aiortc's DTLS "connected" state


class Transport:
    """What the lane asks of the socket's transport for every packet."""

    def __init__(self) -> None:
        self.closing = False
        self.queued = 0

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.queued


class Route:
    """A lane's world: a sending and a receiving socket, an SRTP pair of sessions, and the
    connection state the lane checks."""

    def __init__(self) -> None:
        key = os.urandom(30)
        self.tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self.rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.settimeout(2)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.setblocking(False)
        self.dtls = types.SimpleNamespace(_state=CONNECTED)
        self.pair = object()
        self.connection = types.SimpleNamespace(_nominated={1: self.pair})
        self.transport = Transport()
        self.muxed: Any = None

    def arm(self, lane: Any) -> None:
        host, port = self.receiver.getsockname()
        lane.route(self.sender.fileno(), self.tx, session_pointer(self.tx), pack_address(socket.AF_INET, host, port),
                   self.dtls, CONNECTED, self.transport, self.muxed, self.connection, self.pair)

    def receive(self) -> bytes:
        return self.rx.unprotect(self.receiver.recv(4096))

    def close(self) -> None:
        self.receiver.close()
        self.sender.close()


def fan_out(lane: Any, packet: CachedPacket, now: float = 0.0, abs_time: bytes = b"\x00\x00\x00", level: int = -1, ntp: int = 0) -> Any:
    """The helper's (sent, refused, unsent), without the times of its sendmmsg runs."""
    return fan_out_timed(lane, packet, now, abs_time, level, ntp)[:3]


def fan_out_timed(lane: Any, packet: CachedPacket, now: float = 0.0, abs_time: bytes = b"\x00\x00\x00", level: int = -1, ntp: int = 0) -> Any:
    return fastsend.NATIVE.fan_out(
        PROTECT, [lane], packet.sequence, packet.timestamp, packet.marker, packet.payload, abs_time, level,
        packet.tid if packet.tid is not None else -1, packet.picture_id if packet.picture_id is not None else -1,
        packet.tl0 if packet.tl0 is not None else -1, now, ntp,
    )


class LaneForwarder(Forwarder):
    """Decides as ``Forwarder`` does, except that while ``lane_ready`` holds, packets of the
    current layer are mapped, written, protected and sent by a native lane (as the SFU's
    down-tracks do) and read back from the socket; what the lane refuses goes to Python."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.route = Route()
        self.lane = fastsend.NATIVE.Lane()
        self.route.arm(self.lane)
        self.lane.payload_type, self.lane.ssrc = 96, 0x1234
        for levelled in (0, 1):
            self.lane.template(levelled, 0x80, b"", -1, -1)
        self.lane_packets = 0

    def take_back(self) -> None:
        reclaim(self.lane, self)

    def decide(self, packet: CachedPacket, layer: Any, now: float) -> Forward | Drop:
        if not self.lane.armed and layer is self.current and lane_ready(self):
            lend(self.lane, self, self.take_back)
        if self.lane.armed and layer is self.current:
            sent, refused, unsent = fan_out(self.lane, packet, now)
            assert unsent is None
            if refused:
                self.take_back()
            elif sent:
                data = self.route.receive()
                _, _, sequence, timestamp, ssrc = struct.unpack("!BBHII", data[:12])
                assert ssrc == 0x1234
                self.lane_packets += 1
                return Forward(sequence, timestamp, data[12:])
        return super().decide(packet, layer, now)
