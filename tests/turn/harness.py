"""A fake clock, fake relays and a scripted client for testing the TURN logic without sockets."""

from __future__ import annotations

from tests import clock
from turn import stun
from turn.auth import Credentials, rest_credentials
from turn.config import TurnSettings
from turn.peers import PeerPolicy
from turn.server import FAMILY_IPV4, Client, NoRelay, TurnServer


class FakeClock(clock.FakeClock):
    """The TURN tests' clock starts at 1,000,000 s: time-limited usernames carry it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        super().__init__(now)


class FakeRelay:
    def __init__(self, address, on_data):
        self.address = address
        self.on_data = on_data
        self.sent: list[tuple[bytes, tuple]] = []
        self.closed = False
        self.routed: list[tuple[int, tuple, float]] | None = None  # what the server last said it may relay itself

    def sendto(self, data, addr):
        self.sent.append((data, addr))

    def routes(self, client, channels):
        self.routed = list(channels)

    def close(self):
        self.closed = True


class FakeRelays:
    def __init__(self):
        self.opened: list[FakeRelay] = []
        self.calls: list[tuple] = []
        self.exhausted = False
        self.families = {FAMILY_IPV4: "198.51.100.7", 2: "2001:db8::7"}

    def __call__(self, family, even_port, dont_fragment, on_data):
        self.calls.append((family, even_port, dont_fragment))
        if self.exhausted:
            raise NoRelay("no free relay port", code=508)
        if family not in self.families:
            raise NoRelay("address family not configured", code=440)
        relay = FakeRelay((self.families[family], 50000 + 2 * len(self.opened)), on_data)
        self.opened.append(relay)
        return relay


def make_server(*, users=None, secrets=(), policy=None, clock=None, **settings):
    clock = clock or FakeClock()
    config = TurnSettings(**settings)
    credentials = Credentials(config.realm, users=users if users is not None else {"alice": "wonderland", "bob": "builder"},
                              auth_secrets=list(secrets), wall_clock=lambda: clock.now)
    relays = FakeRelays()
    server = TurnServer(config, credentials, relays, policy=policy or PeerPolicy(allow_loopback=True), clock=clock)
    return server, relays, clock


class Peer:
    """A scripted TURN client on one 5-tuple."""

    def __init__(self, server: TurnServer, addr=("203.0.113.5", 40000), username="alice", password="wonderland",
                 stream=False, realm="videoconf"):
        self.server = server
        self.addr = addr
        self.received: list[bytes] = []
        self.client = Client(("udp", addr) if not stream else object(), addr, self.received.append, stream)
        self.username = username
        self.password = password
        self.realm = realm
        self.nonce: bytes | None = None

    @property
    def key(self) -> bytes:
        return stun.long_term_key(self.username, self.realm, self.password)

    def send_raw(self, data: bytes) -> stun.Message | None:
        before = len(self.received)
        self.server.handle_stun(data, self.client)
        if len(self.received) == before:
            return None
        return stun.parse(self.received[-1])

    def request(self, method, attributes=(), *, auth=True, txid=None, fingerprint=False, key=None) -> stun.Message | None:
        """Send a request, authenticating (and fetching a nonce first) unless ``auth`` is false."""
        txid = txid or stun.new_transaction_id()
        attributes = list(attributes)
        if auth and self.nonce is None:
            challenge = self.send_raw(stun.encode(method, stun.REQUEST, stun.new_transaction_id(), attributes))
            assert challenge is not None and self.error(challenge) == 401
            self.nonce = challenge.get(stun.NONCE)
        if auth:
            attributes += [(stun.USERNAME, self.username.encode()), (stun.REALM, self.realm.encode()), (stun.NONCE, self.nonce)]
        data = stun.encode(method, stun.REQUEST, txid, attributes, key=(key or self.key) if auth else None, fingerprint=fingerprint)
        return self.send_raw(data)

    @staticmethod
    def error(message: stun.Message) -> int | None:
        value = message.get(stun.ERROR_CODE)
        return None if value is None else stun.error_value(value)[0]

    def allocate(self, *extra, **kwargs) -> stun.Message:
        return self.request(stun.ALLOCATE, [(stun.REQUESTED_TRANSPORT, b"\x11\x00\x00\x00"), *extra], **kwargs)

    def peer_attr(self, host, port, txid) -> tuple[int, bytes]:
        return (stun.XOR_PEER_ADDRESS, stun.xor_address(host, port, txid))

    def permit(self, host, port=9000) -> stun.Message:
        txid = stun.new_transaction_id()
        return self.request(stun.CREATE_PERMISSION, [self.peer_attr(host, port, txid)], txid=txid)

    def bind(self, number, host, port) -> stun.Message:
        txid = stun.new_transaction_id()
        return self.request(stun.CHANNEL_BIND, [(stun.CHANNEL_NUMBER, stun.u32(number << 16)), self.peer_attr(host, port, txid)], txid=txid)


def time_limited(secret: str, user: str, ttl: int, clock: FakeClock) -> tuple[str, str]:
    return rest_credentials(secret, user, ttl, now=clock.now)
