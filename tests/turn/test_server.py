"""The TURN logic with a fake clock and fake relays: every answer and every error path."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.turn.harness import Peer, make_server, time_limited
from turn import stun
from turn.peers import PeerPolicy, networks
from turn.server import NoRelay

CLIENT_PEER = ("192.0.2.200", 7000)  # a documentation address, allowed by the test policy below


def open_policy():
    """Tests relay to documentation addresses; allow them (and loopback) explicitly."""
    return PeerPolicy(allow=networks(["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]), allow_loopback=True)


@pytest.fixture
def turn():
    return make_server(policy=open_policy())


def lifetime(message):
    return stun.u32_value(message.get(stun.LIFETIME), "LIFETIME")


def test_allocate_answers_relayed_and_mapped_addresses_with_integrity(turn):
    server, relays, _ = turn
    alice = Peer(server)
    answer = alice.allocate(fingerprint=True)
    assert answer.cls == stun.SUCCESS
    assert answer.check_integrity(alice.key) and answer.has_fingerprint
    txid = answer.transaction_id
    assert stun.xor_address_value(answer.get(stun.XOR_RELAYED_ADDRESS), txid) == relays.opened[0].address
    assert stun.xor_address_value(answer.get(stun.XOR_MAPPED_ADDRESS), txid) == alice.addr
    assert lifetime(answer) == 600
    assert server.gauges() == {"allocations": 1, "permissions": 0, "channels": 0}
    assert server.stats.allocations_created == 1


@pytest.mark.parametrize("requested, granted", [(10, 600), (1200, 1200), (99999, 3600)])
def test_lifetimes_are_clamped_like_coturn(turn, requested, granted):
    server, _, _ = turn
    alice = Peer(server)
    assert lifetime(alice.allocate((stun.LIFETIME, stun.u32(requested)))) == granted
    assert lifetime(alice.request(stun.REFRESH, [(stun.LIFETIME, stun.u32(requested))])) == granted


def test_retransmitted_allocate_gets_the_same_answer_and_a_new_one_437(turn):
    server, relays, _ = turn
    alice = Peer(server)
    alice.allocate()  # fetches the nonce
    txid = stun.new_transaction_id()
    alice.request(stun.REFRESH, [(stun.LIFETIME, stun.u32(0))])
    first = alice.allocate(txid=txid)
    second = alice.allocate(txid=txid)
    assert first.cls == stun.SUCCESS and second.raw == first.raw
    assert len(relays.opened) == 2  # the retransmission opened nothing
    assert Peer.error(alice.allocate()) == 437


def test_requests_without_an_allocation_get_437(turn):
    server, _, _ = turn
    alice = Peer(server)
    assert Peer.error(alice.request(stun.REFRESH)) == 437
    assert Peer.error(alice.permit(*CLIENT_PEER)) == 437
    assert Peer.error(alice.bind(0x4000, *CLIENT_PEER)) == 437
    assert server.stats.errors[437] == 3


def test_refresh_with_lifetime_zero_deletes_and_its_retransmission_gets_437(turn):
    server, relays, _ = turn
    alice = Peer(server)
    alice.allocate()
    txid = stun.new_transaction_id()
    deleted = alice.request(stun.REFRESH, [(stun.LIFETIME, stun.u32(0))], txid=txid)
    assert deleted.cls == stun.SUCCESS and lifetime(deleted) == 0
    assert relays.opened[0].closed and not server.allocations and not server.per_user
    assert Peer.error(alice.request(stun.REFRESH, [(stun.LIFETIME, stun.u32(0))], txid=txid)) == 437


def test_challenge_then_wrong_password_unknown_user_and_wrong_realm_get_401(turn):
    server, _, _ = turn
    anonymous = Peer(server).send_raw(stun.encode(stun.ALLOCATE, stun.REQUEST, b"a" * 12, [(stun.REQUESTED_TRANSPORT, b"\x11\0\0\0")]))
    assert Peer.error(anonymous) == 401
    assert anonymous.get(stun.REALM) == b"videoconf" and anonymous.get(stun.NONCE)
    assert anonymous.integrity_offset is None  # no key to sign with yet
    for peer in (Peer(server, password="wrong"), Peer(server, username="mallory"), Peer(server, realm="elsewhere")):
        peer.allocate()  # fetches a nonce
        assert Peer.error(peer.allocate()) == 401
    assert not server.allocations


def test_integrity_without_username_realm_or_nonce_is_400(turn):
    server, _, _ = turn
    data = stun.encode(stun.ALLOCATE, stun.REQUEST, b"b" * 12, [(stun.REQUESTED_TRANSPORT, b"\x11\0\0\0"), (stun.USERNAME, b"alice")], key=b"k")
    assert Peer.error(Peer(server).send_raw(data)) == 400


def test_nonces_expire_and_are_bound_to_the_client_address(turn):
    server, _, clock = turn
    alice = Peer(server)
    assert alice.allocate().cls == stun.SUCCESS
    clock.advance(601)
    stale = alice.request(stun.REFRESH)
    assert Peer.error(stale) == 438 and stale.get(stun.NONCE) != alice.nonce and stale.get(stun.REALM) == b"videoconf"
    alice.nonce = stale.get(stun.NONCE)
    assert alice.request(stun.REFRESH).cls == stun.SUCCESS
    # the same nonce from another address, and a forged one, are stale too
    other = Peer(server, addr=("203.0.113.9", 1))
    other.nonce = alice.nonce
    assert Peer.error(other.allocate()) == 438
    forged = Peer(server, addr=("203.0.113.10", 1))
    forged.nonce = b"ffffffff-000000000000000000000000"
    assert Peer.error(forged.allocate()) == 438


def test_401_answers_are_rate_limited_per_source(turn):
    server, _, clock = turn
    mallory = Peer(server, password="guess")
    answers = [mallory.send_raw(stun.encode(stun.ALLOCATE, stun.REQUEST, stun.new_transaction_id(), [])) for _ in range(40)]
    assert sum(a is not None for a in answers) == 30  # the burst, then silence
    assert server.stats.dropped["unauthorized_rate"] == 10
    # another source is not affected, and the bucket refills
    assert Peer(server, addr=("203.0.113.77", 5)).send_raw(stun.encode(stun.ALLOCATE, stun.REQUEST, b"c" * 12, [])) is not None
    clock.advance(1)
    assert sum(mallory.send_raw(stun.encode(stun.ALLOCATE, stun.REQUEST, stun.new_transaction_id(), [])) is not None for _ in range(10)) == 5


def test_another_user_on_the_same_five_tuple_gets_441(turn):
    server, _, _ = turn
    alice = Peer(server)
    alice.allocate()
    bob = Peer(server, username="bob", password="builder")  # same address: the same 5-tuple
    assert Peer.error(bob.request(stun.REFRESH)) == 441
    assert Peer.error(bob.permit(*CLIENT_PEER)) == 441
    assert Peer.error(bob.allocate()) == 437


@pytest.mark.parametrize("transport, code", [(b"\x06\0\0\0", 442), (b"\x11\0", 400)])
def test_requested_transport_must_be_udp(turn, transport, code):
    server, _, _ = turn
    alice = Peer(server)
    alice.allocate()  # nonce
    alice.request(stun.REFRESH, [(stun.LIFETIME, stun.u32(0))])
    answer = alice.request(stun.ALLOCATE, [(stun.REQUESTED_TRANSPORT, transport)])
    assert Peer.error(answer) == code
    assert answer.check_integrity(alice.key)  # errors after authentication are signed
    assert Peer.error(alice.request(stun.ALLOCATE, [])) == 400


def test_an_address_family_the_relays_lack_gets_440_and_even_port_is_passed_on(turn):
    server, relays, _ = turn
    answer = Peer(server).allocate((stun.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0"))
    assert stun.xor_address_value(answer.get(stun.XOR_RELAYED_ADDRESS), answer.transaction_id)[0] == "2001:db8::7"
    assert Peer.error(Peer(server, addr=("203.0.113.5", 2)).allocate((stun.REQUESTED_ADDRESS_FAMILY, b"\x03\0\0\0"))) == 440
    del relays.families[2]
    assert Peer.error(Peer(server, addr=("203.0.113.5", 3)).allocate((stun.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0"))) == 440
    assert Peer(server, addr=("203.0.113.5", 4)).allocate((stun.EVEN_PORT, b"\x00"), (stun.DONT_FRAGMENT, b"")).cls == stun.SUCCESS
    assert relays.calls[-1] == (1, True, True)
    assert Peer.error(Peer(server, addr=("203.0.113.5", 5)).allocate((stun.EVEN_PORT, b"\x80"))) == 508


def test_the_relay_factory_says_which_error_to_answer(turn):
    """``NoRelay`` carries its code; the server never reads it from the message's words."""
    server, relays, _ = turn

    def refuse(family, even_port, dont_fragment, on_data):
        raise NoRelay("this address family is fine, its ports are not", code=508)

    server.open_relay = refuse
    assert Peer.error(Peer(server).allocate()) == 508


def test_unknown_comprehension_required_attributes_get_420(turn):
    server, _, _ = turn
    answer = Peer(server).allocate((0x0022, b"12345678"), (0xC0FF, b"fine"), auth=False)
    assert Peer.error(answer) == 420
    assert answer.get(stun.UNKNOWN_ATTRIBUTES) == b"\x00\x22"


def test_unknown_methods_are_400_and_responses_are_ignored(turn):
    server, _, _ = turn
    alice = Peer(server)
    assert Peer.error(alice.send_raw(stun.encode(0x0ABC, stun.REQUEST, b"d" * 12, []))) == 400
    assert alice.send_raw(stun.encode(stun.ALLOCATE, stun.SUCCESS, b"e" * 12, [])) is None
    assert alice.send_raw(b"\x00\x01\x00\x00" + b"\x00" * 16) is None  # wrong magic cookie: dropped
    assert server.stats.dropped["malformed"] == 1


def test_binding_requests_need_no_credentials(turn):
    server, _, _ = turn
    alice = Peer(server)
    answer = alice.request(stun.BINDING, auth=False, fingerprint=True)
    assert answer.cls == stun.SUCCESS and answer.has_fingerprint
    assert stun.xor_address_value(answer.get(stun.XOR_MAPPED_ADDRESS), answer.transaction_id) == alice.addr


def test_allocations_over_a_users_quota_get_486_and_over_the_total_508(turn):
    server, relays, _ = make_server(policy=open_policy(), user_quota=2, total_quota=3)
    for port in (1, 2):
        assert Peer(server, addr=("203.0.113.5", port)).allocate().cls == stun.SUCCESS
    assert Peer.error(Peer(server, addr=("203.0.113.5", 3)).allocate()) == 486
    assert Peer(server, addr=("203.0.113.5", 4), username="bob", password="builder").allocate().cls == stun.SUCCESS
    assert Peer.error(Peer(server, addr=("203.0.113.5", 5), username="bob", password="builder").allocate()) == 508
    relays.exhausted = True
    server.config.total_quota = 0
    assert Peer.error(Peer(server, addr=("203.0.113.5", 6), username="bob", password="builder").allocate()) == 508


def test_time_limited_credentials_count_quotas_per_user_and_rotate_secrets():
    server, _, clock = make_server(users={}, secrets=["new-secret", "old-secret"], policy=open_policy(), user_quota=1)
    username, password = time_limited("old-secret", "carol", 3600, clock)
    carol = Peer(server, username=username, password=password)
    assert carol.allocate().cls == stun.SUCCESS
    # a second credential for the same user (another expiry) counts against the same quota
    username2, password2 = time_limited("new-secret", "carol", 7200, clock)
    assert Peer.error(Peer(server, addr=("203.0.113.5", 2), username=username2, password=password2).allocate()) == 486
    # expired credentials and credentials from a retired secret are refused
    name, word = time_limited("new-secret", "dave", -1, clock)
    expired = Peer(server, addr=("203.0.113.5", 3), username=name, password=word)
    expired.allocate()
    assert Peer.error(expired.allocate()) == 401
    assert carol.request(stun.REFRESH).cls == stun.SUCCESS
    server.credentials.auth_secrets = ["new-secret"]  # the old secret is retired
    assert Peer.error(carol.request(stun.REFRESH)) == 401


def test_permissions_let_data_both_ways_and_expire(turn):
    server, relays, clock = turn
    alice = Peer(server)
    alice.allocate()
    relay = relays.opened[0]
    assert alice.permit("198.51.100.20").cls == stun.SUCCESS
    assert server.gauges()["permissions"] == 1
    txid = stun.new_transaction_id()
    alice.send_raw(stun.encode(stun.SEND, stun.INDICATION, txid, [alice.peer_attr("198.51.100.20", 4242, txid), (stun.DATA_ATTR, b"hello")]))
    assert relay.sent == [(b"hello", ("198.51.100.20", 4242))]
    relay.on_data(b"world", ("198.51.100.20", 4242))
    data = stun.parse(alice.received[-1])
    assert (data.method, data.cls) == (stun.DATA, stun.INDICATION)
    assert data.get(stun.DATA_ATTR) == b"world"
    assert stun.xor_address_value(data.get(stun.XOR_PEER_ADDRESS), data.transaction_id) == ("198.51.100.20", 4242)
    # peers without a permission are dropped, both ways
    count = len(alice.received)
    relay.on_data(b"stranger", ("198.51.100.21", 1))
    assert len(alice.received) == count
    clock.advance(301)
    server.expire()
    assert server.gauges()["permissions"] == 0
    relay.on_data(b"late", ("198.51.100.20", 4242))
    alice.send_raw(stun.encode(stun.SEND, stun.INDICATION, txid, [alice.peer_attr("198.51.100.20", 4242, txid), (stun.DATA_ATTR, b"late")]))
    assert len(alice.received) == count and len(relay.sent) == 1
    assert server.stats.dropped["no_permission"] == 3
    assert (server.stats.packets_to_peer, server.stats.bytes_to_peer) == (1, 5)
    assert (server.stats.packets_to_client, server.stats.bytes_to_client) == (1, 5)


def test_channels_relay_both_ways_and_pad_over_streams():
    server, relays, _ = make_server(policy=open_policy())
    for stream in (False, True):
        alice = Peer(server, addr=("203.0.113.5", 100 + stream), stream=stream)
        alice.allocate()
        relay = relays.opened[-1]
        assert alice.bind(0x4001, "198.51.100.30", 5000).cls == stun.SUCCESS
        server.channel_data(b"\x40\x01\x00\x03abc" + (b"\0" if stream else b""), alice.client.key)
        assert relay.sent[-1] == (b"abc", ("198.51.100.30", 5000))
        relay.on_data(b"xyz", ("198.51.100.30", 5000))
        assert alice.received[-1] == b"\x40\x01\x00\x03xyz" + (b"\0" if stream else b"")
        # the binding installed a permission for the peer's address, any port
        relay.on_data(b"other port", ("198.51.100.30", 5001))
        assert stun.parse(alice.received[-1]).method == stun.DATA
    # unbound channel numbers and short frames are dropped
    server.channel_data(b"\x40\x02\x00\x03abc", alice.client.key)
    server.channel_data(b"\x40\x01\x00\x09abc", alice.client.key)
    assert server.stats.dropped["no_channel"] == 1 and server.stats.dropped["malformed"] == 1


def test_channel_bind_rules_expiry_and_rebind_cooldown(turn):
    server, relays, clock = turn
    alice = Peer(server)
    alice.allocate((stun.LIFETIME, stun.u32(3600)))
    assert alice.bind(0x4000, "198.51.100.40", 1).cls == stun.SUCCESS
    assert alice.bind(0x4000, "198.51.100.40", 1).cls == stun.SUCCESS  # refresh
    assert Peer.error(alice.bind(0x4000, "198.51.100.41", 1)) == 400  # number taken
    assert Peer.error(alice.bind(0x4001, "198.51.100.40", 1)) == 400  # peer taken
    for bad in (0x3FFF, 0x8000, 0xFFFF, 0x0000):
        assert Peer.error(alice.bind(bad, "198.51.100.42", 1)) == 400
    clock.advance(300)
    alice.permit("198.51.100.40")  # permissions last 300 s; the channel 600 s
    clock.advance(301)
    server.expire()
    assert server.gauges()["channels"] == 0
    server.channel_data(b"\x40\x00\x00\x01x", alice.client.key)
    assert relays.opened[0].sent == []
    # for 5 minutes after expiry neither the number nor the peer may be bound to another
    alice.nonce = None
    assert Peer.error(alice.bind(0x4000, "198.51.100.41", 1)) == 400
    assert Peer.error(alice.bind(0x4002, "198.51.100.40", 1)) == 400
    clock.advance(301)
    server.expire()
    assert alice.bind(0x4000, "198.51.100.41", 1).cls == stun.SUCCESS
    assert alice.bind(0x4002, "198.51.100.40", 1).cls == stun.SUCCESS


def test_routes_are_channels_until_channel_permission_and_allocation_all_stand(turn):
    server, relays, clock = turn
    alice = Peer(server)
    alice.allocate((stun.LIFETIME, stun.u32(700)))
    relay = relays.opened[0]
    start = clock.now
    assert relay.routed is None  # nothing routed before a channel
    alice.bind(0x4001, "198.51.100.40", 7)
    assert relay.routed == [(0x4001, ("198.51.100.40", 7), start + 300)]  # the permission ends first
    clock.advance(200)
    alice.permit("198.51.100.40")
    assert relay.routed == [(0x4001, ("198.51.100.40", 7), start + 500)]
    clock.advance(250)
    alice.bind(0x4001, "198.51.100.40", 7)  # refreshes the channel (to start + 1050) and the permission (+ 750)
    assert relay.routed == [(0x4001, ("198.51.100.40", 7), start + 700)]  # now the allocation ends first
    alice.request(stun.REFRESH, [(stun.LIFETIME, stun.u32(3600))])
    assert relay.routed == [(0x4001, ("198.51.100.40", 7), start + 750)]
    clock.advance(301)
    server.expire()  # the permission lapsed: the route's time has passed and the server says so again
    assert relay.routed == [(0x4001, ("198.51.100.40", 7), 0.0)]
    clock.advance(600)
    server.expire()
    assert relay.routed == []


def test_the_sweep_looks_at_an_allocation_only_when_something_of_it_is_due(turn):
    server, relays, clock = turn
    alice = Peer(server)
    alice.allocate((stun.LIFETIME, stun.u32(3600)))
    allocation = server.allocations[alice.client.key]
    start = clock.now
    assert allocation.due == start + 3600
    alice.permit("198.51.100.40")
    assert allocation.due == start + 300  # the permission expires first
    clock.advance(100)
    alice.permit("198.51.100.40")  # refreshed: the old due time stays, a look that finds nothing yet
    server.expire()
    assert allocation.due == start + 300 and allocation.permissions
    clock.advance(201)
    server.expire()
    assert allocation.due == start + 400 and allocation.permissions  # the refreshed permission
    clock.advance(100)
    server.expire()
    assert not allocation.permissions and allocation.due == start + 3600
    alice.request(stun.REFRESH, [(stun.LIFETIME, stun.u32(600))])  # shortened: due earlier
    assert allocation.due == clock.now + 600
    clock.advance(601)
    server.expire()
    assert not server.allocations and relays.opened[0].closed


def test_rebinding_the_same_pair_during_cooldown_is_allowed(turn):
    server, _, clock = turn
    alice = Peer(server)
    alice.allocate((stun.LIFETIME, stun.u32(3600)))
    alice.bind(0x4000, "198.51.100.40", 1)
    clock.advance(601)
    server.expire()
    alice.nonce = None
    assert alice.bind(0x4000, "198.51.100.40", 1).cls == stun.SUCCESS


def test_permission_cap_and_family_mismatch(turn):
    server, _, _ = make_server(policy=open_policy(), max_permissions=2)
    alice = Peer(server)
    alice.allocate()
    assert alice.permit("198.51.100.1").cls == stun.SUCCESS
    assert alice.permit("198.51.100.2").cls == stun.SUCCESS
    assert alice.permit("198.51.100.1").cls == stun.SUCCESS  # a refresh is not a new one
    assert Peer.error(alice.permit("198.51.100.3")) == 508
    assert Peer.error(alice.bind(0x4000, "198.51.100.3", 1)) == 508
    assert Peer.error(alice.permit("2001:db8::1")) == 443


DENIED = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "168.63.129.16",
    "100.100.100.200", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.192",
    "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1", "::10.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT)
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:c0a8:101::1",  # 6to4
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo with client 127.0.0.1 (obfuscated)
    "2001:0:a00:1:8000:63bf:3fff:fdd2",  # Teredo via server 10.0.0.1
]


@pytest.mark.parametrize("host", DENIED)
def test_each_denied_peer_form_gets_403(host):
    server, relays, _ = make_server(policy=PeerPolicy())
    alice = Peer(server)
    family = b"\x02\0\0\0" if ":" in host else b"\x01\0\0\0"
    alice.allocate((stun.REQUESTED_ADDRESS_FAMILY, family))
    answer = alice.permit(host)
    assert Peer.error(answer) == 403, stun.error_value(answer.get(stun.ERROR_CODE))
    assert Peer.error(alice.bind(0x4000, host, 1)) == 403
    assert server.gauges()["permissions"] == 0


# Arbitrary global addresses (only checked by the policy: nothing is sent anywhere)
@pytest.mark.parametrize("host", ["11.22.33.44", "2a02:1:2:3::4", "::ffff:11.22.33.44", "64:ff9b::b16:212c", "2002:b16:212c::1"])
def test_public_peers_are_allowed_by_default(host):
    server, _, _ = make_server(policy=PeerPolicy())
    alice = Peer(server)
    alice.allocate((stun.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0" if ":" in host else b"\x01\0\0\0"))
    assert alice.permit(host).cls == stun.SUCCESS


def test_a_peer_passes_the_allow_list_unless_denied_and_an_only_list_admits_nothing_else():
    policy = PeerPolicy(allow=networks(["10.5.0.0/16"]), deny=networks(["11.22.0.0/16", "10.5.5.0/24"]))
    assert policy.check("10.5.1.1") is None
    assert policy.check("10.5.5.1") == "denied by configuration"
    assert policy.check("11.22.33.44") == "denied by configuration"
    assert policy.check("::ffff:11.22.1.1") == "denied by configuration"  # deny lists see through embeddings
    assert policy.check("5.6.7.8") is None
    sfu_only = PeerPolicy(only=networks(["10.0.0.5/32"]))
    assert sfu_only.check("10.0.0.5") is None  # private, but the SFU's own media address
    assert sfu_only.check("::ffff:10.0.0.5") is None
    assert sfu_only.check("5.6.7.8") == "not an allowed peer"
    assert PeerPolicy(allow_loopback=True).check("::ffff:127.0.0.1") is None
    assert PeerPolicy(allow_loopback=True).check("10.0.0.1") == "private"


def test_an_allocation_relays_a_burst_then_its_rate_and_drops_the_rest():
    server, relays, clock = make_server(policy=open_policy(), max_bps=800_000)  # 100 kB/s, burst 100 kB
    alice = Peer(server)
    alice.allocate()
    alice.bind(0x4000, "198.51.100.50", 1)
    frame = b"\x40\x00\x04\x00" + bytes(1024)
    for _ in range(150):
        server.channel_data(frame, alice.client.key)
    assert len(relays.opened[0].sent) == 97  # 100,000 bytes of burst
    assert server.stats.dropped["bandwidth"] == 53
    clock.advance(0.5)  # 50 kB more
    for _ in range(100):
        server.channel_data(frame, alice.client.key)
    assert len(relays.opened[0].sent) == 97 + 49


def test_allocations_expire_and_stream_clients_take_theirs_along(turn):
    server, relays, clock = turn
    alice = Peer(server)
    alice.allocate()
    tcp = Peer(server, addr=("203.0.113.6", 1), stream=True)
    tcp.allocate((stun.LIFETIME, stun.u32(3600)))
    server.client_gone(tcp.client.key)
    assert relays.opened[1].closed
    clock.advance(599)
    server.expire()
    assert server.allocations
    clock.advance(2)
    server.expire()
    assert not server.allocations and relays.opened[0].closed and not server.per_user


def test_an_internal_error_is_answered_500_and_counted(turn, monkeypatch):
    server, _, _ = turn
    alice = Peer(server)
    alice.allocate()
    monkeypatch.setitem(type(server)._handlers, stun.REFRESH, lambda *a: 1 / 0)
    assert Peer.error(alice.request(stun.REFRESH)) == 500
    assert server.stats.errors[500] == 1


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_escape(data):
    server, _, _ = make_server(policy=open_policy())
    alice = Peer(server)
    alice.allocate()
    server.handle_stun(data, alice.client)
    server.channel_data(b"\x40\x00" + data, alice.client.key)
    for reply in alice.received:
        stun.parse(reply)  # every answer is well-formed STUN


@settings(max_examples=800, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([
    stun.LIFETIME, stun.XOR_PEER_ADDRESS, stun.CHANNEL_NUMBER, stun.REQUESTED_TRANSPORT, stun.REQUESTED_ADDRESS_FAMILY,
    stun.EVEN_PORT, stun.DATA_ATTR, stun.DONT_FRAGMENT, stun.USERNAME, stun.NONCE, stun.REALM,
]), st.binary(max_size=24)), max_size=5), st.sampled_from([stun.ALLOCATE, stun.REFRESH, stun.CREATE_PERMISSION, stun.CHANNEL_BIND, stun.SEND]))
def test_authenticated_requests_with_random_attributes_get_well_formed_answers(attributes, method):
    server, _, _ = make_server(policy=open_policy())
    alice = Peer(server)
    alice.allocate()
    if method == stun.SEND:
        alice.send_raw(stun.encode(stun.SEND, stun.INDICATION, b"s" * 12, attributes))
        return
    answer = alice.request(method, attributes)
    assert answer is not None and answer.cls in (stun.SUCCESS, stun.ERROR)
    if answer.cls == stun.ERROR:
        assert Peer.error(answer) in (400, 401, 403, 437, 438, 440, 442, 443, 508)
    assert 500 not in server.stats.errors


def test_channel_number_is_read_from_its_first_two_bytes_and_rffu_ignored(turn):
    server, _, _ = turn
    alice = Peer(server)
    alice.allocate()
    # CHANNEL-NUMBER carries the number in the first two bytes; the other two are RFFU
    txid = stun.new_transaction_id()
    answer = alice.request(stun.CHANNEL_BIND, [(stun.CHANNEL_NUMBER, struct.pack("!HH", 0x4ABC, 0xFFFF)),
                                               alice.peer_attr("198.51.100.60", 9, txid)], txid=txid)
    assert answer.cls == stun.SUCCESS and 0x4ABC in server.allocations[alice.client.key].channels
