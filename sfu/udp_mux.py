"""Many ICE connections on one UDP port: which connection a datagram belongs to (pure logic).

A node that offers every peer connection's host candidate on one known port (``udp_port``) needs
one socket per local address, shared by all its ICE connections, and a rule that sends each
datagram to its connection, as LiveKit's ``rtc.udp_port`` and mediasoup's WebRtcServer do:

- A STUN Binding request names its connection: its USERNAME is ``<local ufrag>:<remote ufrag>``
  (RFC 8445 7.2.2), and the local ufrag is the connection's.
- Every other datagram (STUN responses, DTLS, SRTP, SRTCP) is routed by its source address: one
  the connection has sent to, other than with a STUN error.  So an address becomes a
  connection's only once the connection has sent a check there (to a candidate its peer gave
  through signaling) or answered a request from there with success, which aioice does only
  after checking the request's MESSAGE-INTEGRITY: someone who guesses a ufrag gets an error
  back and takes no address from anyone.
- A datagram from an address no connection knows is dropped.

The rule reads no more than a STUN header and its attributes' headers.  Addresses per connection and in
all are bounded (the oldest is forgotten first), so that a flood of spoofed sources cannot grow
the table."""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Hashable, Mapping

STUN_MAGIC_COOKIE = 0x2112A442
COOKIE = STUN_MAGIC_COOKIE.to_bytes(4, "big")
BINDING_REQUEST = 0x0001
USERNAME = 0x0006
MAX_ADDRESSES_PER_CONNECTION = 64  # the remote candidates an offer may list (sfu/sdp.py)
MAX_ADDRESSES = 65536


def stun_request_ufrag(data: bytes) -> str | None:
    """The local ufrag a STUN Binding request's USERNAME names, or None for anything else."""
    if len(data) < 20 or data[0] & 0xC0:
        return None
    kind, length, cookie = struct.unpack_from("!HHI", data)
    if kind != BINDING_REQUEST or cookie != STUN_MAGIC_COOKIE or length + 20 > len(data) or length % 4:
        return None
    at, end = 20, 20 + length
    while at + 4 <= end:
        attribute, size = struct.unpack_from("!HH", data, at)
        value = data[at + 4 : at + 4 + size]
        if len(value) < size:
            return None
        if attribute == USERNAME:
            local, colon, _ = value.partition(b":")
            if not colon or not local:
                return None
            try:
                return local.decode("ascii")
            except UnicodeDecodeError:
                return None
        at += 4 + size + (-size % 4)
    return None


class MuxTable:
    """Which connection (any hashable value: the caller's endpoint) owns which remote address."""

    def __init__(self, per_connection: int = MAX_ADDRESSES_PER_CONNECTION, total: int = MAX_ADDRESSES) -> None:
        self.per_connection = per_connection
        self.total = total
        self._by_ufrag: dict[str, Hashable] = {}
        self._ufrag_of: dict[Hashable, str] = {}
        self._by_address: OrderedDict[tuple[str, int], Hashable] = OrderedDict()
        self.owners: Mapping[tuple[str, int], Hashable] = self._by_address  # read-only view: who owns an address
        self._addresses_of: dict[Hashable, OrderedDict[tuple[str, int], None]] = {}

    def __len__(self) -> int:
        return len(self._ufrag_of)

    def add(self, connection: Hashable, ufrag: str) -> None:
        """A connection whose local ufrag is ``ufrag`` joins the socket."""
        self._by_ufrag[ufrag] = connection
        self._ufrag_of[connection] = ufrag
        self._addresses_of[connection] = OrderedDict()

    def remove(self, connection: Hashable) -> None:
        ufrag = self._ufrag_of.pop(connection, None)
        if ufrag is not None and self._by_ufrag.get(ufrag) is connection:
            del self._by_ufrag[ufrag]
        for address in self._addresses_of.pop(connection, {}):
            if self._by_address.get(address) is connection:
                del self._by_address[address]

    def sent(self, connection: Hashable, address: tuple[str, int], data: bytes) -> None:
        """The connection sends ``data`` to ``address``: what comes back from there is its own,
        unless ``data`` is a STUN error (the answer to a request that failed its check).  (Once
        per forwarded packet: an address already the sender's costs one lookup.)"""
        if self._by_address.get(address) is connection or connection not in self._addresses_of:
            return
        if len(data) >= 20 and data[0] & 0x01 and data[1] & 0x10 and data[4:8] == COOKIE:
            return  # STUN (its magic cookie), class bits C1 C0 = 1 1: an error response
        self._bind(connection, address)

    def route(self, data: bytes, address: tuple[str, int]) -> Hashable | None:
        """The connection ``data`` from ``address`` belongs to, or None (drop it)."""
        ufrag = stun_request_ufrag(data)
        if ufrag is not None:
            return self._by_ufrag.get(ufrag)  # its answer, if a success, binds the address
        return self._by_address.get(address)

    def addresses(self, connection: Hashable) -> list[tuple[str, int]]:
        return list(self._addresses_of.get(connection, ()))

    def _bind(self, connection: Hashable, address: tuple[str, int]) -> None:
        owner = self._by_address.get(address)
        if owner is not None and owner is not connection:
            self._addresses_of[owner].pop(address, None)
        self._by_address[address] = connection
        self._by_address.move_to_end(address)
        mine = self._addresses_of[connection]
        mine[address] = None
        mine.move_to_end(address)
        if len(mine) > self.per_connection:
            oldest, _ = mine.popitem(last=False)
            if self._by_address.get(oldest) is connection:
                del self._by_address[oldest]
        while len(self._by_address) > self.total:
            oldest, owner = self._by_address.popitem(last=False)
            self._addresses_of[owner].pop(oldest, None)
