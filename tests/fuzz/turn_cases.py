"""STUN and TURN inputs: messages built from ``turn.stun``'s attribute constants, signed with the
right (or a wrong) long-term key so that generated requests get past authentication, then
mutated at the byte level (a flipped byte, a wrong message or attribute length, truncation);
and sessions of them against a fresh ``TurnServer`` (fake clock, fake relays) through the real
UDP listener's demultiplexing and the TCP framing of ``StreamConnection``."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.core import LoopRunner, Runner, Undefined, bounded
from tests.turn.harness import FakeClock, FakeRelays
from turn import stun
from turn.auth import Credentials, rest_password
from turn.config import TurnSettings
from turn.peers import PeerPolicy
from turn.server import Stats, TurnServer
from turn.transport import StreamConnection, UdpListener

REALM = "videoconf"
SECRET = "fuzz-secret-0123456789"
USERS = {"alice": "wonderland"}
NOW = 1_000_000.0

ADDRESS_ATTRS = (stun.MAPPED_ADDRESS, stun.XOR_PEER_ADDRESS, stun.XOR_RELAYED_ADDRESS, stun.XOR_MAPPED_ADDRESS)
U32_ATTRS = (stun.CHANNEL_NUMBER, stun.LIFETIME, stun.REQUESTED_TRANSPORT, stun.REQUESTED_ADDRESS_FAMILY, stun.PRIORITY)
TEXT_ATTRS = (stun.USERNAME, stun.REALM, stun.NONCE, stun.SOFTWARE)
ATTRIBUTES = sorted(stun.UNDERSTOOD | {stun.SOFTWARE, stun.FINGERPRINT})
METHODS = sorted(stun.METHOD_NAMES)
CLASSES = (stun.REQUEST, stun.INDICATION, stun.SUCCESS, stun.ERROR)

# Peers: loopback, global, private and every IPv4-in-IPv6 embedding the policy must see through.
PEERS = (
    "127.0.0.1", "93.184.216.34", "10.1.2.3", "169.254.169.254", "0.0.0.0", "255.255.255.255",
    "::1", "::", "2606:4700::1111", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1",
    "2002:7f00:1::1", "2001:0:5ef5:79fd:0:59d:a0e5:ba1", "fe80::1", "ff02::1",
)


# Building messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    kind: int
    value: Any  # bytes, or ("peer", host, port) / ("u32", n) / ("text", str), encoded per message


@dataclass(frozen=True)
class Mutation:
    kind: str  # flip, truncate, message_length, attribute_length, append
    at: int
    value: int
    extra: bytes = b""


@dataclass(frozen=True)
class StunSpec:
    method: int
    cls: int
    txid: bytes
    attributes: tuple[Attr, ...]
    auth: str  # none, valid, wrong_key, stale_nonce
    username: bytes
    fingerprint: bool
    mutation: Mutation | None


def _usernames() -> st.SearchStrategy[bytes]:
    rest = st.builds(
        lambda expiry, user: f"{expiry}:{user}".encode(),
        st.one_of(st.integers(0, 2 * int(NOW)), st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=6)),
        st.sampled_from(["alice", "bob", ""]),
    )
    return st.one_of(
        st.just(b"alice"), rest, st.binary(max_size=16), st.text(max_size=12).map(str.encode),
        st.integers(514, 900).map(lambda n: b"u" * n),
    )


def _value(kind: int) -> st.SearchStrategy[Any]:
    junk = st.binary(max_size=40)
    if kind in ADDRESS_ATTRS:
        return st.one_of(st.tuples(st.just("peer"), st.sampled_from(PEERS), st.integers(0, 65535)), junk)
    if kind == stun.CHANNEL_NUMBER:
        return st.one_of(st.tuples(st.just("u32"), st.integers(0, 0xFFFF).map(lambda n: n << 16)), junk)
    if kind == stun.REQUESTED_TRANSPORT:
        return st.one_of(st.sampled_from([b"\x11\x00\x00\x00", b"\x06\x00\x00\x00"]), junk)
    if kind == stun.REQUESTED_ADDRESS_FAMILY:
        return st.one_of(st.sampled_from([b"\x01\x00\x00\x00", b"\x02\x00\x00\x00", b"\x03\x00\x00\x00"]), junk)
    if kind in U32_ATTRS:
        return st.one_of(st.tuples(st.just("u32"), st.integers(0, 0xFFFFFFFF)), junk)
    if kind in TEXT_ATTRS:
        return st.one_of(st.tuples(st.just("text"), st.text(max_size=30)), junk, st.integers(700, 900).map(lambda n: b"r" * n))
    if kind == stun.EVEN_PORT:
        return st.one_of(st.sampled_from([b"\x00", b"\x80"]), junk)
    return junk


_known_attr = st.one_of(*(st.builds(Attr, st.just(kind), _value(kind)) for kind in ATTRIBUTES))
_any_attr = st.builds(Attr, st.integers(0, 0xFFFF), st.binary(max_size=40))


def attributes() -> st.SearchStrategy[tuple[Attr, ...]]:
    return st.lists(st.one_of(_known_attr, _known_attr, _any_attr), max_size=6).map(tuple)


mutations = st.one_of(
    st.none(),
    st.builds(Mutation, st.sampled_from(["flip", "truncate", "message_length", "attribute_length", "append"]),
              st.integers(0, 200), st.integers(0, 0xFFFF), st.binary(max_size=8)),
)


def stun_specs(methods: st.SearchStrategy[int] | None = None, attrs: st.SearchStrategy[tuple[Attr, ...]] | None = None,
               friendly: bool = False) -> st.SearchStrategy[StunSpec]:
    """STUN messages; ``friendly`` ones are mostly requests, signed right by alice, unmutated."""
    if friendly:
        classes, auth = st.just(stun.REQUEST), st.sampled_from(["valid"] * 6 + ["none", "wrong_key", "stale_nonce"])
        names, mutated = st.one_of(st.just(b"alice"), st.just(b"alice"), _usernames()), st.one_of(st.none(), st.none(), mutations)
    else:
        classes, auth = st.sampled_from(CLASSES), st.sampled_from(["valid", "none", "wrong_key", "stale_nonce"])
        names, mutated = _usernames(), mutations
    return st.builds(
        StunSpec,
        methods if methods is not None else st.one_of(st.sampled_from(METHODS), st.integers(0, 0xFFF)),
        classes,
        st.binary(min_size=12, max_size=12),
        attrs if attrs is not None else attributes(),
        auth,
        names,
        st.booleans(),
        mutated,
    )


def _encode_value(value: Any, kind: int, txid: bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    tag = value[0]
    if tag == "peer":
        if kind == stun.MAPPED_ADDRESS:
            return stun.plain_address(value[1], value[2])
        return stun.xor_address(value[1], value[2], txid)
    if tag == "u32":
        return stun.u32(value[1])
    return value[1].encode()


def key_for(username: bytes) -> bytes:
    """The long-term key the server holds for ``username`` (a made-up one for strangers)."""
    name = username.decode("utf-8", "replace")
    if name in USERS:
        return stun.long_term_key(name, REALM, USERS[name])
    return stun.long_term_key(name, REALM, rest_password(SECRET, name))


def build(spec: StunSpec, nonce: bytes) -> bytes:
    attrs = [(a.kind, _encode_value(a.value, a.kind, spec.txid)) for a in spec.attributes]
    key = None
    if spec.auth != "none":
        stale = b"1-000000000000000000000000"
        attrs += [(stun.USERNAME, spec.username), (stun.REALM, REALM.encode()), (stun.NONCE, stale if spec.auth == "stale_nonce" else nonce)]
        key = key_for(spec.username) if spec.auth != "wrong_key" else b"wrong" * 4
    data = stun.encode(spec.method, spec.cls, spec.txid, attrs, key=key, fingerprint=spec.fingerprint)
    return mutate(data, spec.mutation)


def _attribute_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 20
    while pos + 4 <= len(data):
        offsets.append(pos)
        size = struct.unpack_from("!H", data, pos + 2)[0]
        pos += 4 + size + stun.padding(size)
    return offsets


def mutate(data: bytes, mutation: Mutation | None) -> bytes:
    if mutation is None:
        return data
    out = bytearray(data)
    if mutation.kind == "flip":
        out[mutation.at % len(out)] ^= (mutation.value & 0xFF) or 1
    elif mutation.kind == "truncate":
        del out[mutation.at % (len(out) + 1):]
    elif mutation.kind == "message_length":
        struct.pack_into("!H", out, 2, mutation.value)
    elif mutation.kind == "attribute_length":
        offsets = _attribute_offsets(data)
        if offsets:
            struct.pack_into("!H", out, offsets[mutation.at % len(offsets)] + 2, mutation.value)
    else:
        out += mutation.extra
    return bytes(out)


# Sessions against the server --------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    spec: StunSpec
    client: int  # 0 and 1: UDP 5-tuples; 2: the TCP connection


@dataclass(frozen=True)
class ChannelData:
    number: int
    declared: int | None  # the length field, None: the payload's own
    payload: bytes
    client: int
    padded: bool


@dataclass(frozen=True)
class PeerData:
    relay: int
    host: str
    port: int
    data: bytes


@dataclass(frozen=True)
class Raw:
    data: bytes
    client: int


@dataclass(frozen=True)
class Advance:
    seconds: float


def either(first: st.SearchStrategy[Any], second: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Half ``first``, half ``second`` (``one_of`` would flatten both into equal branches)."""

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        return draw(first) if draw(st.booleans()) else draw(second)

    return pick()


def _peer_attr() -> st.SearchStrategy[Attr]:
    hosts = either(st.sampled_from(["127.0.0.1", "93.184.216.34", "2606:4700::1111"]), st.sampled_from(PEERS))
    return st.builds(lambda host, port: Attr(stun.XOR_PEER_ADDRESS, ("peer", host, port)), hosts, st.integers(0, 65535))


def _scripted(method: int, cls: int, *attrs: st.SearchStrategy[Attr]) -> st.SearchStrategy[StunSpec]:
    """What a well-meaning client sends for ``method``, sometimes with generated attributes more."""
    mine = st.tuples(*attrs) if attrs else st.just(())
    extra = st.one_of(st.just(()), st.just(()), attributes())
    spec = stun_specs(st.just(method), st.builds(lambda a, b: a + b, mine, extra), friendly=True)
    return spec.map(lambda s: s if cls == stun.REQUEST else StunSpec(s.method, cls, *vars_after_cls(s)))


def vars_after_cls(spec: StunSpec) -> tuple[Any, ...]:
    return spec.txid, spec.attributes, spec.auth, spec.username, spec.fingerprint, spec.mutation


def _scripted_specs() -> st.SearchStrategy[StunSpec]:
    transport = st.just(Attr(stun.REQUESTED_TRANSPORT, b"\x11\x00\x00\x00"))
    family = st.builds(lambda f: Attr(stun.REQUESTED_ADDRESS_FAMILY, bytes([f, 0, 0, 0])), st.sampled_from([1, 2]))
    channel = st.builds(lambda n: Attr(stun.CHANNEL_NUMBER, ("u32", n << 16)), st.integers(0x3FFF, 0x8000))
    lifetime = st.builds(lambda n: Attr(stun.LIFETIME, ("u32", n)), st.integers(0, 7200))
    data = st.builds(lambda d: Attr(stun.DATA_ATTR, d), st.binary(max_size=64))
    return st.one_of(
        _scripted(stun.ALLOCATE, stun.REQUEST, transport),
        _scripted(stun.ALLOCATE, stun.REQUEST, transport, family),
        _scripted(stun.CREATE_PERMISSION, stun.REQUEST, _peer_attr()),
        _scripted(stun.CHANNEL_BIND, stun.REQUEST, channel, _peer_attr()),
        _scripted(stun.REFRESH, stun.REQUEST, lifetime),
        _scripted(stun.SEND, stun.INDICATION, _peer_attr(), data),
        _scripted(stun.BINDING, stun.REQUEST),
    )


def _ops() -> st.SearchStrategy[Any]:
    clients = st.sampled_from([0, 0, 1, 2])
    others = st.one_of(
        st.builds(Message, stun_specs(), clients),
        st.builds(ChannelData, st.integers(0x3FFF, 0x8000), st.one_of(st.none(), st.integers(0, 0xFFFF)),
                  st.binary(max_size=64), clients, st.booleans()),
        st.builds(PeerData, st.integers(0, 3), st.sampled_from(PEERS), st.integers(0, 65535), st.binary(max_size=64)),
        st.builds(Raw, st.binary(max_size=48), clients),
        st.builds(Advance, st.sampled_from([0.5, 30.0, 299.0, 301.0, 601.0, 3601.0])),
    )
    mostly_main = st.sampled_from([0] * 6 + [1, 2])
    return either(st.builds(Message, _scripted_specs(), mostly_main), others)


def _setup(steps: int, host: str, port: int, channel: int, txid: bytes) -> list[Message]:
    """The first ``steps`` of what a client does before relaying: Allocate, CreatePermission,
    ChannelBind, all signed right, on the main client."""
    peer = Attr(stun.XOR_PEER_ADDRESS, ("peer", host, port))
    requests = [
        (stun.ALLOCATE, (Attr(stun.REQUESTED_TRANSPORT, b"\x11\x00\x00\x00"),)),
        (stun.CREATE_PERMISSION, (peer,)),
        (stun.CHANNEL_BIND, (Attr(stun.CHANNEL_NUMBER, ("u32", channel << 16)), peer)),
    ]
    return [
        Message(StunSpec(method, stun.REQUEST, txid[:11] + bytes([n]), attrs, "valid", b"alice", False, None), 0)
        for n, (method, attrs) in enumerate(requests[:steps])
    ]


setups = st.builds(_setup, st.integers(0, 3), st.sampled_from(["127.0.0.1", "93.184.216.34"]), st.integers(1024, 65535),
                   st.integers(0x4000, 0x4FFF), st.binary(min_size=12, max_size=12))
# (operations, how TCP bytes are split into reads, whether the main client (0) is the TCP one)
sessions = st.tuples(
    st.builds(lambda setup, ops: setup + ops, setups, st.lists(_ops(), min_size=1, max_size=10)),
    st.lists(st.integers(1, 64), max_size=4),
    st.booleans(),
)


class FakeStreamTransport:
    """What ``StreamConnection`` needs of a TCP transport."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.protocol: StreamConnection | None = None

    def get_extra_info(self, name: str) -> Any:
        return ("203.0.113.9", 40100) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        if not self.closing and self.protocol is not None:
            self.closing = True
            self.protocol.connection_lost(None)


STAGES = ("dropped", "challenged", "refused", "allocated", "permitted", "bound", "relayed")


class TurnSession:
    """One case: a fresh server, two UDP clients through a real ``UdpListener`` (read by hand,
    its loop never runs) and one TCP connection, and what came back to each."""

    def __init__(self, listener: UdpListener, clients: list[socket.socket], tcp_main: bool) -> None:
        self.tcp_main = tcp_main
        self.clock = FakeClock(NOW)
        config = TurnSettings(realm=REALM, max_bps=64_000, user_quota=2, max_permissions=4, unauthorized_burst=1000)
        credentials = Credentials(REALM, users=USERS, auth_secrets=[SECRET], wall_clock=lambda: self.clock.now)
        self.relays = FakeRelays()
        self.server = TurnServer(config, credentials, self.relays, policy=PeerPolicy(allow_loopback=True),
                                 clock=self.clock, stats=Stats())
        listener.server = self.server
        self.listener = listener
        self.clients = clients
        self.tcp = FakeStreamTransport()
        self.stream = StreamConnection(self.server, set())
        self.tcp.protocol = self.stream
        self.stream.connection_made(self.tcp)  # type: ignore[arg-type]
        self.nonces: dict[int, bytes] = {}
        self.stage = 0

    def nonce(self, client: int) -> bytes:
        """A nonce the server issued to this client's address (asked for once)."""
        if self.tcp_main and client in (0, 2):
            client = 2 - client
        if client not in self.nonces:
            address = self.stream.client.addr if client == 2 else self.clients[client].getsockname()  # type: ignore[union-attr]
            self.nonces[client] = self.server.nonces.issue(address[0]).encode()
        return self.nonces[client]

    def send(self, client: int, data: bytes, chunks: list[int]) -> None:
        if self.tcp_main and client in (0, 2):
            client = 2 - client
        if client < 2:
            self.clients[client].sendto(data, self.listener.address)
            self.listener._readable()
            return
        if self.tcp.closing:
            return
        for piece in _split(data, chunks):
            self.stream.data_received(piece)
            if self.tcp.closing:
                return

    def apply(self, op: Any, chunks: list[int]) -> None:
        if isinstance(op, Message):
            self.send(op.client, build(op.spec, self.nonce(op.client)), chunks)
        elif isinstance(op, ChannelData):
            size = len(op.payload) if op.declared is None else op.declared
            data = struct.pack("!HH", op.number, size) + op.payload
            if op.padded:
                data += bytes(-len(op.payload) & 3)
            self.send(op.client, data, chunks)
        elif isinstance(op, PeerData):
            if self.relays.opened:
                relay = self.relays.opened[op.relay % len(self.relays.opened)]
                relay.on_data(op.data, (op.host, op.port))
        elif isinstance(op, Raw):
            self.send(op.client, op.data, chunks)
        else:
            self.clock.advance(op.seconds)
            self.server.expire()

    def check_answers(self) -> None:
        for sock in self.clients:
            while True:
                try:
                    check_answer(sock.recv(65536))
                except BlockingIOError:
                    break
        check_stream(bytes(self.tcp.written))
        self.tcp.written.clear()
        if self.server.stats.errors.get(500):
            raise Undefined("the server answered 500")

    def label(self) -> str:
        stats = self.server.stats
        if stats.packets_to_peer or stats.packets_to_client:
            return "relayed"
        succeeded = stats.succeeded
        for stage, method in (("bound", "ChannelBind"), ("permitted", "CreatePermission"), ("allocated", "Allocate")):
            if succeeded.get(method):
                return stage
        if set(stats.errors) - {401}:
            return "refused"
        return "challenged" if stats.errors else "dropped"


def _split(data: bytes, chunks: list[int]) -> Iterator[bytes]:
    pos = 0
    for size in chunks:
        if pos >= len(data):
            return
        yield data[pos: pos + size]
        pos += size
    if pos < len(data):
        yield data[pos:]


def check_answer(data: bytes) -> None:
    """What the server sends a client is well-formed STUN, or ChannelData."""
    if data and 0x40 <= data[0] < 0x80:
        if len(data) < 4 or struct.unpack_from("!H", data, 2)[0] + 4 > len(data):
            raise Undefined(f"malformed ChannelData sent to a client: {data[:8].hex()}")
        return
    try:
        stun.parse(data)
    except stun.StunError as exc:
        raise Undefined(f"the server sent a malformed STUN message ({exc})") from None


def check_stream(data: bytes) -> None:
    pos = 0
    while pos < len(data):
        first = data[pos]
        length = struct.unpack_from("!H", data, pos + 2)[0]
        total = 20 + length if first < 0x40 else 4 + length + (-length & 3)
        check_answer(data[pos: pos + total])
        pos += total


@contextlib.contextmanager
def open_turn() -> Iterator[Runner]:
    loop = LoopRunner()  # the listener registers its reader on it; it never runs
    listener = UdpListener(None, loop.loop, "127.0.0.1", 0)  # type: ignore[arg-type]
    clients = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        clients.append(sock)
    from tests.fuzz.core import ErrorLog

    def run(case: tuple[list[Any], list[int], bool]) -> str:
        ops, chunks, tcp_main = case
        session = TurnSession(listener, clients, tcp_main)
        with ErrorLog("turn") as errors:
            for op in ops:
                session.apply(op, chunks)
                session.check_answers()
                errors.check()
        return session.label()

    try:
        yield bounded(run, 5.0)
    finally:
        listener.close()
        for sock in clients:
            sock.close()
        loop.close()


# The codec alone ----------------------------------------------------------------------------------


def decode_attributes(message: stun.Message) -> None:
    """Every attribute through the decoder the server would use: a value or ``BadRequest``."""
    for kind, value in message.attributes:
        with contextlib.suppress(stun.BadRequest):
            if kind in ADDRESS_ATTRS:
                stun.xor_address_value(value, message.transaction_id)
            elif kind in U32_ATTRS:
                stun.u32_value(value, "attribute")
            elif kind in TEXT_ATTRS:
                stun.text_value(value, "attribute", stun.MAX_NONCE)
            elif kind == stun.ERROR_CODE:
                stun.error_value(value)


def run_codec(spec: StunSpec | bytes) -> str:
    data = spec if isinstance(spec, bytes) else build(spec, b"fuzz-nonce")
    try:
        message = stun.parse(data)
    except stun.StunError:
        return "refused"
    decode_attributes(message)
    if message.integrity_offset is not None:
        message.check_integrity(key_for(message.get(stun.USERNAME) or b""))
    again = stun.parse(stun.encode(message.method, message.cls, message.transaction_id, message.attributes))
    if again.attributes != message.attributes:
        raise Undefined("a parsed message does not survive encoding")
    return "parsed"


@contextlib.contextmanager
def open_codec() -> Iterator[Runner]:
    yield bounded(run_codec, 2.0)


codec_inputs = st.one_of(stun_specs(), st.binary(max_size=120))
