"""A strict STUN message codec (RFC 8489) with the TURN attributes of RFC 8656.

Parsing is in two layers.  :func:`parse` checks the framing (the two leading zero bits, the
length, the magic cookie, the attribute walk, the FINGERPRINT) and raises :class:`StunError` for
anything that is not a well-formed STUN message; such bytes are dropped without an answer.
Attribute values are decoded on demand by the ``*_value`` helpers, which raise :class:`BadRequest`
for malformed values, answered with 400.  Nothing here raises any other exception on bad input.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import os
import stringprep
import struct
import unicodedata
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
MAGIC_BYTES = struct.pack("!I", MAGIC_COOKIE)
HEADER = struct.Struct("!HHI12s")
ATTR_HEADER = struct.Struct("!HH")
FINGERPRINT_XOR = 0x5354554E

# Classes
REQUEST, INDICATION, SUCCESS, ERROR = 0b00, 0b01, 0b10, 0b11

# Methods
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009
METHOD_NAMES = {
    BINDING: "Binding", ALLOCATE: "Allocate", REFRESH: "Refresh", SEND: "Send", DATA: "Data",
    CREATE_PERMISSION: "CreatePermission", CHANNEL_BIND: "ChannelBind",
}

# Attributes
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
MESSAGE_INTEGRITY_SHA256 = 0x001C
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028

# Comprehension-required attributes (type < 0x8000) this server understands; any other one in a
# request is answered with 420 (RESERVATION-TOKEN, CONNECTION-ID, USERHASH, ... are not supported).
UNDERSTOOD = frozenset({
    MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, UNKNOWN_ATTRIBUTES, CHANNEL_NUMBER,
    LIFETIME, XOR_PEER_ADDRESS, DATA_ATTR, REALM, NONCE, XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY, EVEN_PORT, REQUESTED_TRANSPORT, DONT_FRAGMENT,
    MESSAGE_INTEGRITY_SHA256, XOR_MAPPED_ADDRESS, PRIORITY, USE_CANDIDATE,
})

# Limits from RFC 8489 section 14
MAX_USERNAME = 513
MAX_REALM = 763
MAX_NONCE = 763

REASONS = {
    300: "Try Alternate", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    420: "Unknown Attribute", 437: "Allocation Mismatch", 438: "Stale Nonce",
    440: "Address Family not Supported", 441: "Wrong Credentials",
    442: "Unsupported Transport Protocol", 443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached", 500: "Server Error", 508: "Insufficient Capacity",
}


class StunError(Exception):
    """Not a well-formed STUN message: dropped without an answer."""


class BadRequest(Exception):
    """A well-formed message with a malformed attribute value: answered with 400."""


def message_type(method: int, cls: int) -> int:
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def split_type(value: int) -> tuple[int, int]:
    method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80)
    cls = ((value >> 4) & 0b01) | ((value >> 7) & 0b10)
    return method, cls


def new_transaction_id() -> bytes:
    return os.urandom(12)


def padding(length: int) -> int:
    return -length & 3


@dataclass(slots=True)
class Message:
    method: int
    cls: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""
    # offset of MESSAGE-INTEGRITY(-SHA256) in raw, for checking it; None when absent
    integrity_offset: int | None = None
    integrity_type: int | None = None
    has_fingerprint: bool = False

    def get(self, attr_type: int) -> bytes | None:
        """The first attribute of this type (later duplicates are ignored), or None."""
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    def all(self, attr_type: int) -> list[bytes]:
        return [value for kind, value in self.attributes if kind == attr_type]

    def unknown_required(self) -> list[int]:
        seen: list[int] = []
        for kind, _ in self.attributes:
            if kind < 0x8000 and kind not in UNDERSTOOD and kind not in seen:
                seen.append(kind)
        return seen

    def check_integrity(self, key: bytes) -> bool:
        """Whether MESSAGE-INTEGRITY (or -SHA256) matches ``key``; compared in constant time."""
        if self.integrity_offset is None:
            return False
        offset = self.integrity_offset
        raw = self.raw
        if self.integrity_type == MESSAGE_INTEGRITY:
            digest, size = hashlib.sha1, 20
        else:
            digest, size = hashlib.sha256, 32
        got = raw[offset + 4: offset + 4 + size]
        if len(got) != size:
            return False
        # The length field counts up to and including the integrity attribute.
        header = raw[:2] + struct.pack("!H", offset + 4 + size - 20) + raw[4:20]
        expected = hmac.new(key, header + raw[20:offset], digest).digest()
        return hmac.compare_digest(expected, got)


def parse(data: bytes) -> Message:
    """Parse one STUN message strictly; :class:`StunError` says what is wrong with it."""
    if len(data) < 20:
        raise StunError("shorter than a STUN header")
    msg_type, length, cookie, txid = HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunError("the two leading bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("wrong magic cookie")
    if length & 3:
        raise StunError("length is not a multiple of 4")
    if 20 + length != len(data):
        raise StunError("length does not match the message size")
    method, cls = split_type(msg_type)
    message = Message(method, cls, txid, raw=bytes(data))
    pos = 20
    end = 20 + length
    after_integrity = False
    while pos < end:
        if end - pos < 4:
            raise StunError("truncated attribute header")
        kind, size = ATTR_HEADER.unpack_from(data, pos)
        start = pos + 4
        stop = start + size
        if stop > end:
            raise StunError("attribute runs past the end of the message")
        value = bytes(data[start:stop])
        if kind == FINGERPRINT:
            if size != 4:
                raise StunError("FINGERPRINT has the wrong size")
            if stop + padding(size) != end:
                raise StunError("FINGERPRINT is not the last attribute")
            expected = (binascii.crc32(data[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            # The CRC covers the header with the length as sent (which includes the fingerprint).
            if struct.unpack("!I", value)[0] != expected:
                raise StunError("FINGERPRINT does not match")
            message.has_fingerprint = True
        elif kind in (MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256):
            if not after_integrity:
                if (kind == MESSAGE_INTEGRITY and size != 20) or (kind == MESSAGE_INTEGRITY_SHA256 and not 16 <= size <= 32):
                    raise StunError("MESSAGE-INTEGRITY has the wrong size")
                message.integrity_offset = pos
                message.integrity_type = kind
                after_integrity = True
        elif not after_integrity:
            # Attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored.
            message.attributes.append((kind, value))
        pos = stop + padding(size)
        if pos > end:
            raise StunError("attribute padding runs past the end of the message")
    return message


# Encoding -----------------------------------------------------------------------------------


def encode(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    *,
    key: bytes | None = None,
    fingerprint: bool = False,
) -> bytes:
    body = bytearray()
    for kind, value in attributes:
        body += ATTR_HEADER.pack(kind, len(value))
        body += value
        body += bytes(padding(len(value)))
    msg_type = message_type(method, cls)
    if key is not None:
        header = HEADER.pack(msg_type, len(body) + 24, MAGIC_COOKIE, transaction_id)
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += ATTR_HEADER.pack(MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        header = HEADER.pack(msg_type, len(body) + 8, MAGIC_COOKIE, transaction_id)
        crc = (binascii.crc32(header + body) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        body += ATTR_HEADER.pack(FINGERPRINT, 4) + struct.pack("!I", crc)
    return HEADER.pack(msg_type, len(body), MAGIC_COOKIE, transaction_id) + bytes(body)


def error_code(code: int, reason: str | None = None) -> bytes:
    text = (reason or REASONS.get(code, "Error")).encode()[:763]
    return struct.pack("!HBB", 0, code // 100, code % 100) + text


def xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    ip = ipaddress.ip_address(host)
    port ^= MAGIC_COOKIE >> 16
    if ip.version == 4:
        return struct.pack("!BBHI", 0, 1, port, int(ip) ^ MAGIC_COOKIE)
    mask = int.from_bytes(MAGIC_BYTES + transaction_id, "big")
    return struct.pack("!BBH", 0, 2, port) + (int(ip) ^ mask).to_bytes(16, "big")


def plain_address(host: str, port: int) -> bytes:
    ip = ipaddress.ip_address(host)
    return struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, port) + ip.packed


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


# Decoding attribute values (BadRequest -> 400) -----------------------------------------------


def xor_address_value(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    if len(value) not in (8, 20):
        raise BadRequest("address attribute has the wrong size")
    family = value[1]
    port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
    if family == 1 and len(value) == 8:
        return str(ipaddress.IPv4Address(struct.unpack_from("!I", value, 4)[0] ^ MAGIC_COOKIE)), port
    if family == 2 and len(value) == 20:
        mask = int.from_bytes(MAGIC_BYTES + transaction_id, "big")
        return str(ipaddress.IPv6Address(int.from_bytes(value[4:20], "big") ^ mask)), port
    raise BadRequest("address attribute has an unknown family")


def u32_value(value: bytes, name: str) -> int:
    if len(value) != 4:
        raise BadRequest(f"{name} has the wrong size")
    return struct.unpack("!I", value)[0]


def text_value(value: bytes, name: str, limit: int) -> str:
    if len(value) > limit:
        raise BadRequest(f"{name} is too long")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not UTF-8") from None


def error_value(value: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise BadRequest("ERROR-CODE is too short")
    code = (value[2] & 0x07) * 100 + value[3]
    return code, value[4:].decode("utf-8", "replace")


# Long-term credentials -----------------------------------------------------------------------


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013) of a password, as RFC 8489 asks for long-term credentials."""
    mapped = []
    for char in text:
        if stringprep.in_table_c12(char):  # non-ASCII space -> space
            mapped.append(" ")
        elif not stringprep.in_table_b1(char):  # commonly mapped to nothing
            mapped.append(char)
    result = unicodedata.normalize("NFKC", "".join(mapped))
    for char in result:
        if (
            stringprep.in_table_c12(char) or stringprep.in_table_c21(char) or stringprep.in_table_c22(char)
            or stringprep.in_table_c3(char) or stringprep.in_table_c4(char) or stringprep.in_table_c5(char)
            or stringprep.in_table_c6(char) or stringprep.in_table_c7(char) or stringprep.in_table_c8(char)
            or stringprep.in_table_c9(char)
        ):
            raise ValueError("the password has a character SASLprep prohibits")
    return result


def long_term_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{saslprep(password)}".encode()).digest()
