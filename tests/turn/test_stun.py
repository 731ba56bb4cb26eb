"""The STUN codec: RFC 5769's test vectors, strict framing, and random bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turn import stun
from turn.stun import BadRequest, StunError

# RFC 5769 section 2 (the test vectors are data from the RFC)
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56"
    "781ef2b5b2d3f249c1b571a280280004e57a3bcf"
)
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96"
)
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000140002a1470113a9fa"
    "a5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c"
)
SAMPLE_LONG_TERM = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b90000"
    "0015001c662f2f3439396b39353464364f4c33346f4c39465354767936347341"
    "0014000b6578616d706c652e6f726700"
    "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666"
)
SHORT_TERM_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"


def test_the_rfc5769_sample_request_parses_and_checks_with_its_password_only():
    message = stun.parse(SAMPLE_REQUEST)
    assert (message.method, message.cls) == (stun.BINDING, stun.REQUEST)
    assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert message.get(stun.SOFTWARE) == b"STUN test client"
    assert message.get(stun.USERNAME) == b"evtj:h6vY"
    assert message.get(stun.PRIORITY) == bytes.fromhex("6e0001ff")
    assert message.has_fingerprint
    assert message.check_integrity(SHORT_TERM_PASSWORD)
    assert not message.check_integrity(b"wrong password")


@pytest.mark.parametrize("vector, address", [
    (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
    (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
])
def test_rfc5769_responses_parse_check_and_encode_back_to_their_bytes(vector, address):
    message = stun.parse(vector)
    assert (message.method, message.cls) == (stun.BINDING, stun.SUCCESS)
    assert stun.xor_address_value(message.get(stun.XOR_MAPPED_ADDRESS), message.transaction_id) == address
    assert message.check_integrity(SHORT_TERM_PASSWORD)
    # The address encodes to the vector's bytes, and a response built with the same key checks out.
    encoded = stun.xor_address(*address, message.transaction_id)
    assert encoded == message.get(stun.XOR_MAPPED_ADDRESS)
    again = stun.parse(stun.encode(stun.BINDING, stun.SUCCESS, message.transaction_id, [
        (stun.SOFTWARE, b"test vector"), (stun.XOR_MAPPED_ADDRESS, encoded),
    ], key=SHORT_TERM_PASSWORD, fingerprint=True))
    assert again.has_fingerprint and again.check_integrity(SHORT_TERM_PASSWORD)
    assert again.raw[:len(vector) - 36].replace(b"vector\x00", b"vector ") == vector[:len(vector) - 36]


def test_the_rfc5769_long_term_sample_checks_with_the_saslprepped_password_only():
    message = stun.parse(SAMPLE_LONG_TERM)
    username = message.get(stun.USERNAME).decode()
    assert username == "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert message.get(stun.REALM) == b"example.org"
    assert message.get(stun.NONCE) == b"f//499k954d6OL34oL9FSTvy64sA"
    assert stun.saslprep("The\u00adM\u00aatr\u2168") == "TheMatrIX"
    key = stun.long_term_key(username, "example.org", "The\u00adM\u00aatr\u2168")
    assert message.check_integrity(key)
    assert not message.check_integrity(stun.long_term_key(username, "example.org", "TheMatrix"))


def test_saslprep_refuses_prohibited_characters():
    with pytest.raises(ValueError):
        stun.saslprep("bad\u0007password")


def test_message_type_bits_round_trip():
    for method in (stun.BINDING, stun.ALLOCATE, stun.CHANNEL_BIND, 0xFFF):
        for cls in (stun.REQUEST, stun.INDICATION, stun.SUCCESS, stun.ERROR):
            assert stun.split_type(stun.message_type(method, cls)) == (method, cls)
    assert stun.message_type(stun.ALLOCATE, stun.ERROR) == 0x0113
    assert stun.message_type(stun.DATA, stun.INDICATION) == 0x0017


def _corrupt(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


@pytest.mark.parametrize("data, reason", [
    (SAMPLE_REQUEST[:19], "shorter"),
    (_corrupt(SAMPLE_REQUEST, 0, b"\x80"), "leading bits"),
    (_corrupt(SAMPLE_REQUEST, 4, b"\x21\x12\xa4\x43"), "magic cookie"),
    (_corrupt(SAMPLE_REQUEST, 2, b"\x00\x57"), "multiple of 4"),
    (_corrupt(SAMPLE_REQUEST, 2, b"\x00\x54"), "does not match"),
    (SAMPLE_REQUEST + b"\x00\x00\x00\x00", "does not match"),
    (_corrupt(SAMPLE_REQUEST, len(SAMPLE_REQUEST) - 1, b"\x00"), "FINGERPRINT does not match"),
    (_corrupt(SAMPLE_REQUEST, 22, b"\x00\x40"), "past the end"),
])
def test_malformed_framing_is_refused(data, reason):
    with pytest.raises(StunError, match=reason):
        stun.parse(data)


def test_fingerprint_must_be_last():
    body = struct.pack("!HH", stun.FINGERPRINT, 4) + b"\x00" * 4 + struct.pack("!HH", stun.SOFTWARE, 4) + b"abcd"
    data = struct.pack("!HHI", 0x0001, len(body), stun.MAGIC_COOKIE) + b"x" * 12 + body
    with pytest.raises(StunError, match="last"):
        stun.parse(data)


def test_first_duplicate_wins_and_attributes_after_integrity_are_ignored():
    txid = b"t" * 12
    data = stun.encode(stun.ALLOCATE, stun.REQUEST, txid, [(stun.LIFETIME, stun.u32(100)), (stun.LIFETIME, stun.u32(200))], key=b"k")
    # append an attribute after MESSAGE-INTEGRITY (fixing the length): it must be ignored
    extra = struct.pack("!HH", stun.LIFETIME, 4) + stun.u32(300)
    data = data[:2] + struct.pack("!H", len(data) - 20 + 8) + data[4:] + extra
    message = stun.parse(data)
    assert stun.u32_value(message.get(stun.LIFETIME), "LIFETIME") == 100
    assert [stun.u32_value(v, "LIFETIME") for v in message.all(stun.LIFETIME)] == [100, 200]
    assert message.check_integrity(b"k")


def test_unknown_comprehension_required_attributes_are_listed_once():
    data = stun.encode(stun.ALLOCATE, stun.REQUEST, b"t" * 12, [
        (0x0022, b"12345678"), (0x7FFF, b""), (0x0022, b"x"), (0xC001, b"optional"), (stun.LIFETIME, stun.u32(1)),
    ])
    assert stun.parse(data).unknown_required() == [0x0022, 0x7FFF]


@pytest.mark.parametrize("value", [b"", b"\x00\x01\x00", b"\x00\x03" + b"\x00" * 6, b"\x00\x01" + b"\x00" * 18, b"\x00\x02" + b"\x00" * 6])
def test_bad_address_values_are_bad_requests(value):
    with pytest.raises(BadRequest):
        stun.xor_address_value(value, b"t" * 12)


def test_value_decoders_reject_bad_sizes_and_encodings():
    with pytest.raises(BadRequest):
        stun.u32_value(b"\x00\x01", "LIFETIME")  # aioice raises struct.error here
    with pytest.raises(BadRequest):
        stun.text_value(b"\xff\xfe", "USERNAME", 513)
    with pytest.raises(BadRequest):
        stun.text_value(b"a" * 514, "USERNAME", 513)
    assert stun.error_value(stun.error_code(438)) == (438, "Stale Nonce")


# One value of every attribute in the table, as the table reads it.
EXAMPLES = {
    "MAPPED-ADDRESS": ("192.0.2.1", 32853),
    "USERNAME": "evtj:h6vY",
    "MESSAGE-INTEGRITY": bytes(range(20)),
    "ERROR-CODE": (438, "Stale Nonce"),
    "UNKNOWN-ATTRIBUTES": [0x0022, 0x7FFF],
    "CHANNEL-NUMBER": 0x4001,
    "LIFETIME": 600,
    "XOR-PEER-ADDRESS": ("2001:db8:1234:5678:11:2233:4455:6677", 32853),
    "DATA": b"payload",
    "REALM": "example.org",
    "NONCE": "f//499k954d6OL34oL9FSTvy64sA",
    "XOR-RELAYED-ADDRESS": ("198.51.100.7", 50000),
    "REQUESTED-ADDRESS-FAMILY": 2,
    "EVEN-PORT": True,
    "REQUESTED-TRANSPORT": 17,
    "DONT-FRAGMENT": True,
    "MESSAGE-INTEGRITY-SHA256": bytes(range(32)),
    "XOR-MAPPED-ADDRESS": ("192.0.2.1", 32853),
    "PRIORITY": 0x6E0001FF,
    "USE-CANDIDATE": True,
    "SOFTWARE": "VideoConf TURN",
    "FINGERPRINT": 0xE57A3BCF,
}


def test_the_attribute_table_has_one_row_per_type_and_per_name():
    assert len(stun.ATTRIBUTES_BY_TYPE) == len(stun.ATTRIBUTES_BY_NAME) == len(stun.ATTRIBUTES) == len(EXAMPLES)
    assert stun.UNDERSTOOD == {a.type for a in stun.ATTRIBUTES} - {stun.SOFTWARE, stun.FINGERPRINT}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_attribute_round_trips_through_the_table(name):
    attribute = stun.ATTRIBUTES_BY_NAME[name]
    packed = stun.pack(attribute.type, EXAMPLES[name], b"t" * 12)
    assert attribute.size.fits(len(packed))
    assert stun.decode(attribute.type, packed, b"t" * 12) == EXAMPLES[name]


@pytest.mark.parametrize("name, value, reason", [
    ("LIFETIME", b"\0\0\0", "LIFETIME has the wrong size"),
    ("REQUESTED-TRANSPORT", b"\x11", "REQUESTED-TRANSPORT has the wrong size"),
    ("EVEN-PORT", b"\0\0", "EVEN-PORT has the wrong size"),
    ("USERNAME", b"a" * 514, "USERNAME is too long"),
    ("NONCE", b"\xff", "NONCE is not UTF-8"),
    ("ERROR-CODE", b"\0\0\4", "ERROR-CODE is too short"),
    ("UNKNOWN-ATTRIBUTES", b"\0\0\0", "UNKNOWN-ATTRIBUTES has the wrong size"),
    ("XOR-PEER-ADDRESS", b"\0\x01" + b"\0" * 18, "XOR-PEER-ADDRESS has an unknown family"),
])
def test_the_table_refuses_malformed_values_by_the_attribute_s_name(name, value, reason):
    with pytest.raises(BadRequest, match=f"^{reason}$"):
        stun.decode(stun.ATTRIBUTES_BY_NAME[name].type, value, b"t" * 12)


@pytest.mark.parametrize("kind, size", [(stun.FINGERPRINT, 8), (stun.MESSAGE_INTEGRITY, 16), (stun.MESSAGE_INTEGRITY_SHA256, 36)])
def test_integrity_and_fingerprint_of_a_size_the_table_refuses_are_bad_framing(kind, size):
    body = struct.pack("!HH", kind, size) + bytes(size)
    with pytest.raises(StunError, match="wrong size"):
        stun.parse(struct.pack("!HHI", 0x0001, len(body), stun.MAGIC_COOKIE) + b"x" * 12 + body)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_stun_error(data):
    try:
        message = stun.parse(data)
    except StunError:
        return
    message.unknown_required()
    message.check_integrity(b"key")


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_random_attribute_bodies_behind_a_valid_header(body):
    body = body + b"\x00" * (-len(body) & 3)
    data = struct.pack("!HHI", 0x0003, len(body), stun.MAGIC_COOKIE) + b"r" * 12 + body
    try:
        message = stun.parse(data)
    except StunError:
        return
    for _kind, value in message.attributes:
        for decode in (lambda v: stun.xor_address_value(v, message.transaction_id), lambda v: stun.u32_value(v, "x"),
                       lambda v: stun.text_value(v, "x", 763)):
            try:
                decode(value)
            except BadRequest:
                pass
