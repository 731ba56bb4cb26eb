"""The TURN server's logic (RFC 8656), free of sockets: listeners hand it messages from clients,
relays hand it datagrams from peers, and the clock is passed in, so every rule here is tested with
a fake clock and fake relays.  ``turn.transport`` binds it to real sockets.

The hot paths are :meth:`TurnServer.channel_data` (client to peer) and
:meth:`Allocation.from_peer` (peer to client): a few dictionary look-ups, expiry comparisons and a
token bucket per packet, with counters kept as plain integers that the metrics read on scrape.
Over UDP, relays that can route (``turn.transport.UdpRelay``) are told each allocation's channels
as values (number, peer, and until when channel, permission and allocation all stand), and relay
the matching ChannelData themselves (``turn.fastpath``); the server sees the rest.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from turn import stun
from turn.auth import Credentials, Identity, Nonces, SourceLimiter
from turn.config import TurnSettings
from turn.fastpath import Bucket, bucket_size
from turn.peers import PeerPolicy
from turn.stun import BadRequest, Message, StunError

log = logging.getLogger(__name__)

UDP = 17
FAMILY_IPV4, FAMILY_IPV6 = 1, 2
# RFC 8656 narrowed channel numbers to 0x4000-0x4FFF; RFC 5766's 0x4000-0x7FFF is still accepted
# because coturn's clients (and coturn) use the whole older range.
CHANNEL_MIN, CHANNEL_MAX = 0x4000, 0x7FFF
_CHANNEL_HEADER = struct.Struct("!HH")


class Client:
    """One client 5-tuple on the listening side: a UDP source address on one listener, or a TCP
    or TLS connection."""

    __slots__ = ("key", "addr", "send", "stream", "path")

    def __init__(self, key: Any, addr: tuple, send: Callable[[bytes], None], stream: bool, path: Any = None) -> None:
        self.key = key
        self.addr = addr
        self.send = send
        self.stream = stream  # TCP or TLS: ChannelData is padded to 4 bytes
        self.path = path  # UDP: the listener's routed path (turn.fastpath), where it has one


class Relay(Protocol):
    """A relay address.  One that can route ChannelData itself also has ``route`` (its bandwidth
    bucket, with ``take``) and ``routes(client, [(number, peer, until)])``."""

    address: tuple[str, int]

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...

    def close(self) -> None: ...


class NoRelay(Exception):
    """No relay address could be opened; ``code`` is the answer: 440 when no relay address of the
    family is configured, 508 when the ports are exhausted."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


# open_relay(family, even_port, dont_fragment, on_data) -> Relay
RelayFactory = Callable[[int, bool, bool, Callable[[bytes, tuple], None]], Relay]


class Channel:
    __slots__ = ("number", "peer", "expires")

    def __init__(self, number: int, peer: tuple[str, int], expires: float) -> None:
        self.number = number
        self.peer = peer
        self.expires = expires


@dataclass
class Stats:
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0
    allocations_created: int = 0
    succeeded: dict[str, int] = field(default_factory=dict)  # successful requests by method name
    errors: dict[int, int] = field(default_factory=dict)  # error responses by code
    dropped: dict[str, int] = field(default_factory=dict)  # packets dropped by reason
    # Listeners' routed paths (turn.fastpath), which count what they relay themselves.
    paths: list[Any] = field(default_factory=list)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def relayed(self) -> dict[str, int]:
        """Packets and payload bytes relayed each way: the server's and its paths' together."""
        totals = {
            "packets_to_peer": self.packets_to_peer, "bytes_to_peer": self.bytes_to_peer,
            "packets_to_client": self.packets_to_client, "bytes_to_client": self.bytes_to_client,
        }
        for path in self.paths:
            counters = path.counters()
            totals["packets_to_peer"] += counters["to_peer_packets"]
            totals["bytes_to_peer"] += counters["to_peer_bytes"]
            totals["packets_to_client"] += counters["to_client_packets"]
            totals["bytes_to_client"] += counters["to_client_bytes"]
        return totals

    def reads(self) -> dict[str, tuple[int, int]]:
        """Per kind of socket (listener, relay): reads that returned datagrams, and the datagrams."""
        totals = {"listener": (0, 0), "relay": (0, 0)}
        for path in self.paths:
            counters = path.counters()
            for kind in totals:
                reads, datagrams = totals[kind]
                totals[kind] = (reads + counters[f"{kind}_reads"], datagrams + counters[f"{kind}_datagrams"])
        return totals

    def drops(self) -> dict[str, int]:
        """Packets dropped by reason: the server's and its paths' together."""
        totals = dict(self.dropped)
        for path in self.paths:
            counters = path.counters()
            for reason in ("bandwidth", "send_failed", "receive_error"):
                if counters[reason]:
                    totals[reason] = totals.get(reason, 0) + counters[reason]
        return totals


class Allocation:
    __slots__ = (
        "server", "client", "identity", "key", "relay", "family", "expires", "permissions",
        "channels", "peers", "cooling_numbers", "cooling_peers", "transaction_id", "response", "bucket", "due",
        "routed",
    )

    def __init__(self, server: TurnServer, client: Client, identity: Identity, key: bytes, family: int,
                 transaction_id: bytes, now: float) -> None:
        self.server = server
        self.client = client
        self.identity = identity
        self.key = key
        self.relay: Relay | None = None
        self.family = family
        self.expires = now
        self.due = now  # the sweep looks at this allocation again from then: its earliest expiry
        self.routed: list[tuple[int, tuple[str, int], float]] | None = None  # what the relay was last told
        self.permissions: dict[str, float] = {}  # peer IP -> expiry
        self.channels: dict[int, Channel] = {}
        self.peers: dict[tuple[str, int], Channel] = {}
        self.cooling_numbers: dict[int, tuple[tuple[str, int], float]] = {}
        self.cooling_peers: dict[tuple[str, int], tuple[int, float]] = {}
        self.transaction_id = transaction_id
        self.response = b""
        # The bandwidth cap, both ways; a routing relay's own bucket replaces it once opened.
        self.bucket: Any = Bucket(*bucket_size(server.config.max_bps), now)

    def take(self, size: int, now: float) -> bool:
        """Whether the bandwidth cap lets ``size`` more bytes through now."""
        return self.bucket.take(size, now)

    def expiring(self, when: float) -> None:
        """Something of this allocation expires at ``when``: the sweep must look by then."""
        if when < self.due:
            self.due = when

    def routes(self) -> list[tuple[int, tuple[str, int], float]]:
        """The channels a routing relay may relay by itself: (number, peer, until when the channel,
        its permission and the allocation all stand)."""
        permissions = self.permissions
        expires = self.expires
        return [
            (number, channel.peer, min(channel.expires, permissions.get(channel.peer[0], 0.0), expires))
            for number, channel in self.channels.items()
        ]

    def reroute(self) -> None:
        """Tell a routing relay what it may relay (after anything in ``routes`` changed)."""
        relay = self.relay
        if relay is not None and hasattr(relay, "routes"):
            routes = self.routes()
            if routes != self.routed:
                relay.routes(self.client, routes)
                self.routed = routes

    def from_peer(self, data: bytes, addr: tuple) -> None:
        """A datagram arrived at the relay address from ``addr``."""
        server = self.server
        stats = server.stats
        now = server.clock()
        peer = addr if len(addr) == 2 else (addr[0], addr[1])  # IPv6 addresses come with flow info and scope
        if self.permissions.get(peer[0], 0.0) < now:
            stats.drop("no_permission")
            return
        size = len(data)
        if not self.take(size, now):
            stats.drop("bandwidth")
            return
        channel = self.peers.get(peer)
        if channel is not None and channel.expires >= now:
            message = _CHANNEL_HEADER.pack(channel.number, size) + data
            if self.client.stream and size & 3:
                message += bytes(4 - (size & 3))
        else:
            transaction_id = stun.new_transaction_id()
            message = stun.encode(stun.DATA, stun.INDICATION, transaction_id, [
                (stun.XOR_PEER_ADDRESS, stun.xor_address(peer[0], peer[1], transaction_id)),
                (stun.DATA_ATTR, data),
            ])
        stats.packets_to_client += 1
        stats.bytes_to_client += size
        self.client.send(message)


def _lifetime(config: TurnSettings, requested: int | None) -> int:
    if requested is None:
        return config.default_lifetime
    return max(config.default_lifetime, min(requested, config.max_lifetime))


class TurnServer:
    def __init__(
        self,
        config: TurnSettings,
        credentials: Credentials,
        open_relay: RelayFactory,
        *,
        policy: PeerPolicy | None = None,
        clock: Callable[[], float],
        nonce_key: bytes | None = None,
        stats: Stats | None = None,  # shared with the relays, which count their send failures
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.open_relay = open_relay
        self.policy = policy or PeerPolicy()
        self.clock = clock
        self.nonces = Nonces(config.nonce_lifetime, clock, nonce_key)
        self.limiter = SourceLimiter(config.unauthorized_burst, config.unauthorized_per_second, clock)
        self.allocations: dict[Any, Allocation] = {}
        self.per_user: dict[str, int] = {}
        self.stats = stats or Stats()
        self._software = config.software.encode()

    # Client to peer: ChannelData ------------------------------------------------------------

    def channel_data(self, data: bytes, key: Any) -> None:
        allocation = self.allocations.get(key)
        stats = self.stats
        if allocation is None:
            stats.drop("no_allocation")
            return
        now = self.clock()
        number = (data[0] << 8) | data[1]
        channel = allocation.channels.get(number)
        if channel is None or channel.expires < now:
            stats.drop("no_channel")
            return
        size = (data[2] << 8) | data[3]
        if size + 4 > len(data):
            stats.drop("malformed")
            return
        if allocation.permissions.get(channel.peer[0], 0.0) < now:
            stats.drop("no_permission")
            return
        if not allocation.take(size, now):
            stats.drop("bandwidth")
            return
        stats.packets_to_peer += 1
        stats.bytes_to_peer += size
        allocation.relay.sendto(data[4:4 + size], channel.peer)  # type: ignore[union-attr]

    # STUN messages ---------------------------------------------------------------------------

    def handle_stun(self, data: bytes, client: Client) -> None:
        try:
            message = stun.parse(data)
        except StunError:
            self.stats.drop("malformed")
            return
        try:
            self._dispatch(message, client)
        except BadRequest as exc:
            if message.cls == stun.REQUEST:
                self._error(client, message, 400, str(exc))
            else:
                self.stats.drop("malformed")
        except Exception:
            log.exception("TURN: failed to handle a %s message", stun.METHOD_NAMES.get(message.method, message.method))
            if message.cls == stun.REQUEST:
                self._error(client, message, 500)

    def _dispatch(self, message: Message, client: Client) -> None:
        if message.cls == stun.INDICATION:
            if message.method == stun.SEND and not message.unknown_required():
                self._send_indication(message, client)
            return
        if message.cls != stun.REQUEST:
            self.stats.drop("unexpected_response")
            return
        unknown = message.unknown_required()
        if unknown:
            self._error(client, message, 420, extra=[(stun.UNKNOWN_ATTRIBUTES, stun.pack(stun.UNKNOWN_ATTRIBUTES, unknown))])
            return
        if message.method == stun.BINDING:
            host, port = client.addr[0], client.addr[1]
            self._reply(client, message, [
                (stun.XOR_MAPPED_ADDRESS, stun.xor_address(host, port, message.transaction_id)),
                (stun.MAPPED_ADDRESS, stun.plain_address(host, port)),
            ])
            return
        handler = self._handlers.get(message.method)
        if handler is None:
            self._error(client, message, 400, "Unknown method")
            return
        auth = self._authenticate(message, client)
        if auth is not None:
            try:
                handler(self, message, client, *auth)
            except BadRequest as exc:  # after authentication, the answer is signed
                self._error(client, message, 400, str(exc), key=auth[1])

    # Authentication --------------------------------------------------------------------------

    def _challenge(self, client: Client, message: Message, code: int) -> None:
        if code == 401 and not self.limiter.allow(client.addr[0]):
            self.stats.drop("unauthorized_rate")
            return
        self._error(client, message, code, extra=[
            (stun.REALM, self.config.realm.encode()),
            (stun.NONCE, self.nonces.issue(client.addr[0]).encode()),
        ])

    def _authenticate(self, message: Message, client: Client) -> tuple[Identity, bytes] | None:
        if message.integrity_offset is None:
            self._challenge(client, message, 401)
            return None
        raw_username = message.get(stun.USERNAME)
        raw_realm = message.get(stun.REALM)
        raw_nonce = message.get(stun.NONCE)
        if raw_username is None or raw_realm is None or raw_nonce is None:
            self._error(client, message, 400, "USERNAME, REALM and NONCE are required with MESSAGE-INTEGRITY")
            return None
        username = stun.decode(stun.USERNAME, raw_username)
        realm = stun.decode(stun.REALM, raw_realm)
        nonce = stun.decode(stun.NONCE, raw_nonce)
        if not self.nonces.valid(nonce, client.addr[0]):
            self._challenge(client, message, 438)
            return None
        identity = self.credentials.lookup(username) if realm == self.config.realm else None
        matched = None
        if identity is not None:
            for key in identity.keys:  # every key is checked, so timing does not tell which matched
                if message.check_integrity(key) and matched is None:
                    matched = key
        if identity is None or matched is None:
            self._challenge(client, message, 401)
            return None
        return identity, matched

    # Requests --------------------------------------------------------------------------------

    def _allocation_for(self, message: Message, client: Client, identity: Identity, key: bytes) -> Allocation | None:
        allocation = self.allocations.get(client.key)
        if allocation is None:
            self._error(client, message, 437, key=key)
            return None
        if allocation.identity.username != identity.username:
            self._error(client, message, 441, key=key)
            return None
        return allocation

    def _allocate(self, message: Message, client: Client, identity: Identity, key: bytes) -> None:
        existing = self.allocations.get(client.key)
        if existing is not None:
            if existing.transaction_id == message.transaction_id and existing.identity.username == identity.username:
                client.send(existing.response)  # a retransmission: the same answer
            else:
                self._error(client, message, 437, key=key)
            return
        transport = message.value(stun.REQUESTED_TRANSPORT)
        if transport is None:
            self._error(client, message, 400, "REQUESTED-TRANSPORT is required", key=key)
            return
        if transport != UDP:
            self._error(client, message, 442, key=key)
            return
        family = message.value(stun.REQUESTED_ADDRESS_FAMILY)
        family = FAMILY_IPV4 if family is None else family
        if family not in (FAMILY_IPV4, FAMILY_IPV6):
            self._error(client, message, 440, key=key)
            return
        reserve = message.value(stun.EVEN_PORT)  # None without EVEN-PORT
        if reserve:  # reserving the next port (R bit) is not supported
            self._error(client, message, 508, "Port reservation is not supported", key=key)
            return
        requested = message.value(stun.LIFETIME)
        config = self.config
        if config.user_quota and self.per_user.get(identity.user, 0) >= config.user_quota:
            self._error(client, message, 486, key=key)
            return
        if config.total_quota and len(self.allocations) >= config.total_quota:
            self._error(client, message, 508, key=key)
            return
        now = self.clock()
        allocation = Allocation(self, client, identity, key, family, message.transaction_id, now)
        try:
            allocation.relay = self.open_relay(
                family, reserve is not None, message.get(stun.DONT_FRAGMENT) is not None, allocation.from_peer
            )
        except NoRelay as exc:
            self._error(client, message, exc.code, key=key)
            return
        route = getattr(allocation.relay, "route", None)
        if route is not None:
            allocation.bucket = route
        lifetime = _lifetime(config, requested)
        allocation.expires = allocation.due = now + lifetime
        host, port = client.addr[0], client.addr[1]
        relay_host, relay_port = allocation.relay.address[0], allocation.relay.address[1]
        allocation.response = self._encode(message, stun.SUCCESS, [
            (stun.XOR_RELAYED_ADDRESS, stun.xor_address(relay_host, relay_port, message.transaction_id)),
            (stun.LIFETIME, stun.u32(lifetime)),
            (stun.XOR_MAPPED_ADDRESS, stun.xor_address(host, port, message.transaction_id)),
        ], key)
        self.allocations[client.key] = allocation
        self.per_user[identity.user] = self.per_user.get(identity.user, 0) + 1
        self.stats.allocations_created += 1
        self.stats.succeeded["Allocate"] = self.stats.succeeded.get("Allocate", 0) + 1
        log.info("TURN allocation for %s from %s:%s at %s:%s for %d s", identity.user, host, port, relay_host, relay_port, lifetime)
        client.send(allocation.response)

    def _refresh(self, message: Message, client: Client, identity: Identity, key: bytes) -> None:
        allocation = self._allocation_for(message, client, identity, key)
        if allocation is None:
            return
        family = message.get(stun.REQUESTED_ADDRESS_FAMILY)
        if family is not None and not (stun.fits(stun.REQUESTED_ADDRESS_FAMILY, family) and family[0] == allocation.family):
            self._error(client, message, 443, key=key)
            return
        requested = message.value(stun.LIFETIME)
        if requested == 0:
            self.delete(allocation)
            lifetime = 0
        else:
            lifetime = _lifetime(self.config, requested)
            allocation.expires = self.clock() + lifetime
            allocation.expiring(allocation.expires)
            allocation.reroute()
        self._reply(client, message, [(stun.LIFETIME, stun.u32(lifetime))], key)

    def _peer(self, value: bytes, message: Message, client: Client, allocation: Allocation, key: bytes) -> tuple[str, int] | None:
        """The decoded peer address, or None after answering 403 or 443."""
        host, port = stun.xor_address_value(value, message.transaction_id)
        why = self.policy.check(host)
        if why is not None:
            log.info("TURN: %s may not reach %s (%s)", allocation.identity.user, host, why)
            self._error(client, message, 403, f"Forbidden peer address ({why})", key=key)
            return None
        if (":" in host) != (allocation.family == FAMILY_IPV6):
            self._error(client, message, 443, key=key)
            return None
        return host, port

    def _room_for(self, allocation: Allocation, hosts: set[str], now: float) -> bool:
        current = {ip for ip, expiry in allocation.permissions.items() if expiry >= now}
        return len(current | hosts) <= self.config.max_permissions

    def _create_permission(self, message: Message, client: Client, identity: Identity, key: bytes) -> None:
        allocation = self._allocation_for(message, client, identity, key)
        if allocation is None:
            return
        values = message.all(stun.XOR_PEER_ADDRESS)
        if not values:
            raise BadRequest("XOR-PEER-ADDRESS is required")
        hosts: set[str] = set()
        for value in values:
            peer = self._peer(value, message, client, allocation, key)
            if peer is None:
                return
            hosts.add(peer[0])
        now = self.clock()
        if not self._room_for(allocation, hosts, now):
            self._error(client, message, 508, "Too many permissions", key=key)
            return
        for host in hosts:
            allocation.permissions[host] = now + self.config.permission_lifetime
        allocation.expiring(now + self.config.permission_lifetime)
        allocation.reroute()
        self._reply(client, message, [], key)

    def _channel_bind(self, message: Message, client: Client, identity: Identity, key: bytes) -> None:
        allocation = self._allocation_for(message, client, identity, key)
        if allocation is None:
            return
        number_value = message.get(stun.CHANNEL_NUMBER)
        peer_value = message.get(stun.XOR_PEER_ADDRESS)
        if number_value is None or peer_value is None:
            raise BadRequest("CHANNEL-NUMBER and XOR-PEER-ADDRESS are required")
        number = stun.decode(stun.CHANNEL_NUMBER, number_value)
        if not CHANNEL_MIN <= number <= CHANNEL_MAX:
            raise BadRequest("channel number out of range")
        peer = self._peer(peer_value, message, client, allocation, key)
        if peer is None:
            return
        now = self.clock()
        bound = allocation.channels.get(number)
        other = allocation.peers.get(peer)
        cooling_peer = allocation.cooling_numbers.get(number)
        cooling_number = allocation.cooling_peers.get(peer)
        if (
            (bound is not None and bound.peer != peer)
            or (other is not None and other.number != number)
            or (cooling_peer is not None and cooling_peer[1] > now and cooling_peer[0] != peer)
            or (cooling_number is not None and cooling_number[1] > now and cooling_number[0] != number)
        ):
            raise BadRequest("channel or peer already bound")
        if not self._room_for(allocation, {peer[0]}, now):
            self._error(client, message, 508, "Too many permissions", key=key)
            return
        if bound is None:
            bound = Channel(number, peer, 0.0)
            allocation.channels[number] = bound
            allocation.peers[peer] = bound
            allocation.cooling_numbers.pop(number, None)
            allocation.cooling_peers.pop(peer, None)
        bound.expires = now + self.config.channel_lifetime
        allocation.permissions[peer[0]] = now + self.config.permission_lifetime
        allocation.expiring(min(bound.expires, now + self.config.permission_lifetime))
        allocation.reroute()
        self._reply(client, message, [], key)

    _handlers: dict[int, Callable[..., None]] = {
        stun.ALLOCATE: _allocate,
        stun.REFRESH: _refresh,
        stun.CREATE_PERMISSION: _create_permission,
        stun.CHANNEL_BIND: _channel_bind,
    }

    def _send_indication(self, message: Message, client: Client) -> None:
        allocation = self.allocations.get(client.key)
        if allocation is None:
            self.stats.drop("no_allocation")
            return
        peer_value = message.get(stun.XOR_PEER_ADDRESS)
        data = message.get(stun.DATA_ATTR)
        if peer_value is None or data is None:
            self.stats.drop("malformed")
            return
        host, port = stun.xor_address_value(peer_value, message.transaction_id)
        now = self.clock()
        if allocation.permissions.get(host, 0.0) < now:
            self.stats.drop("no_permission")
            return
        if not allocation.take(len(data), now):
            self.stats.drop("bandwidth")
            return
        self.stats.packets_to_peer += 1
        self.stats.bytes_to_peer += len(data)
        allocation.relay.sendto(data, (host, port))  # type: ignore[union-attr]

    # Answers ---------------------------------------------------------------------------------

    def _encode(self, message: Message, cls: int, attributes: list[tuple[int, bytes]], key: bytes | None) -> bytes:
        attributes = [*attributes, (stun.SOFTWARE, self._software)]
        return stun.encode(message.method, cls, message.transaction_id, attributes, key=key, fingerprint=message.has_fingerprint)

    def _reply(self, client: Client, message: Message, attributes: list[tuple[int, bytes]], key: bytes | None = None) -> None:
        name = stun.METHOD_NAMES[message.method]
        self.stats.succeeded[name] = self.stats.succeeded.get(name, 0) + 1
        client.send(self._encode(message, stun.SUCCESS, attributes, key))

    def _error(self, client: Client, message: Message, code: int, reason: str | None = None, *,
               extra: list[tuple[int, bytes]] = (), key: bytes | None = None) -> None:  # type: ignore[assignment]
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        client.send(self._encode(message, stun.ERROR, [(stun.ERROR_CODE, stun.error_code(code, reason)), *extra], key))

    # Lifetimes -------------------------------------------------------------------------------

    def delete(self, allocation: Allocation) -> None:
        if self.allocations.get(allocation.client.key) is not allocation:
            return
        del self.allocations[allocation.client.key]
        user = allocation.identity.user
        left = self.per_user.get(user, 1) - 1
        if left > 0:
            self.per_user[user] = left
        else:
            self.per_user.pop(user, None)
        if allocation.relay is not None:
            allocation.relay.close()

    def client_gone(self, key: Any) -> None:
        """A TCP or TLS connection closed: its allocation goes with it."""
        allocation = self.allocations.get(key)
        if allocation is not None:
            self.delete(allocation)

    def expire(self) -> None:
        """Remove what has expired; run about once a second."""
        now = self.clock()
        cooldown = self.config.channel_cooldown
        for allocation in list(self.allocations.values()):
            if allocation.due > now:  # nothing of it has expired yet
                continue
            if allocation.expires < now:
                log.info("TURN allocation for %s expired", allocation.identity.user)
                self.delete(allocation)
                continue
            changed = False
            for ip in [ip for ip, expiry in allocation.permissions.items() if expiry < now]:
                del allocation.permissions[ip]
                changed = True
            for channel in [c for c in allocation.channels.values() if c.expires < now]:
                del allocation.channels[channel.number]
                del allocation.peers[channel.peer]
                allocation.cooling_numbers[channel.number] = (channel.peer, channel.expires + cooldown)
                allocation.cooling_peers[channel.peer] = (channel.number, channel.expires + cooldown)
                changed = True
            if changed:
                allocation.reroute()
            for number in [n for n, (_, until) in allocation.cooling_numbers.items() if until <= now]:
                del allocation.cooling_numbers[number]
            for peer in [p for p, (_, until) in allocation.cooling_peers.items() if until <= now]:
                del allocation.cooling_peers[peer]
            allocation.due = min([
                allocation.expires, *allocation.permissions.values(), *(c.expires for c in allocation.channels.values()),
                *(until for _, until in allocation.cooling_numbers.values()), *(until for _, until in allocation.cooling_peers.values()),
            ])

    def close(self) -> None:
        for allocation in list(self.allocations.values()):
            self.delete(allocation)

    # Metrics ---------------------------------------------------------------------------------

    def gauges(self) -> dict[str, int]:
        now = self.clock()
        permissions = channels = 0
        for allocation in self.allocations.values():
            permissions += sum(1 for expiry in allocation.permissions.values() if expiry >= now)
            channels += sum(1 for channel in allocation.channels.values() if channel.expires >= now)
        return {"allocations": len(self.allocations), "permissions": permissions, "channels": channels}
