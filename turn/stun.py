"""A strict STUN message codec (RFC 8489) with the TURN attributes of RFC 8656.

Parsing is in two layers.  :func:`parse` checks the framing (the two leading zero bits, the
length, the magic cookie, the attribute walk, the FINGERPRINT) and raises :class:`StunError` for
anything that is not a well-formed STUN message; such bytes are dropped without an answer.
Attribute values are decoded on demand (:meth:`Message.value`, :func:`decode`) through one table,
``ATTRIBUTES``, which gives each attribute's type, name, packer, unpacker and allowed sizes; a
malformed value raises :class:`BadRequest`, answered with 400.  Nothing here raises any other
exception on bad input.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

# Limits from RFC 8489 section 14
MAX_USERNAME = 513
MAX_REALM = 763
MAX_NONCE = 763
MAX_SOFTWARE = 763

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


# The attribute table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Size:
    """The lengths an attribute's value may have: ``least`` to ``most`` bytes, a multiple of
    ``step``, and one of ``only`` when that is given."""

    least: int = 0
    most: int = 0xFFFF
    step: int = 1
    only: tuple[int, ...] = ()

    def fits(self, length: int) -> bool:
        return self.least <= length <= self.most and length % self.step == 0 and (not self.only or length in self.only)

    def check(self, value: bytes, name: str) -> None:
        """:class:`BadRequest` unless ``value`` has a length that fits."""
        if self.fits(len(value)):
            return
        if self.only or self.step > 1 or self.least == self.most:
            raise BadRequest(f"{name} has the wrong size")
        raise BadRequest(f"{name} is too {'short' if len(value) < self.least else 'long'}")


def exactly(*lengths: int) -> Size:
    return Size(min(lengths), max(lengths), only=lengths)


ANY_SIZE = Size()
FLAG_SIZE = exactly(0)
U32_SIZE = exactly(4)
ADDRESS_SIZE = exactly(8, 20)


class _Malformed(Exception):
    """What is wrong with a value of the right size; the decoder adds the attribute's name."""


Pack = Callable[[Any, bytes], bytes]
Unpack = Callable[[bytes, bytes], Any]


@dataclass(frozen=True, slots=True)
class Attribute:
    type: int
    name: str
    pack: Pack
    unpack: Unpack
    size: Size = ANY_SIZE


# Packers take (value, transaction ID) and unpackers (bytes of a size that fits, transaction ID).


def _pack_bytes(value: bytes, transaction_id: bytes) -> bytes:
    return bytes(value)


def _unpack_bytes(value: bytes, transaction_id: bytes) -> bytes:
    return value


def _pack_flag(value: bool, transaction_id: bytes) -> bytes:
    return b""


def _unpack_flag(value: bytes, transaction_id: bytes) -> bool:
    return True


def _pack_text(value: str, transaction_id: bytes) -> bytes:
    return value.encode()


def _unpack_text(value: bytes, transaction_id: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("is not UTF-8") from None


def _pack_u32(value: int, transaction_id: bytes) -> bytes:
    return u32(value)


def _unpack_u32(value: bytes, transaction_id: bytes) -> int:
    return struct.unpack("!I", value)[0]


def _pack_byte(value: int, transaction_id: bytes) -> bytes:
    """A one-byte number (a protocol, an address family) padded to four bytes."""
    return bytes((value, 0, 0, 0))


def _unpack_byte(value: bytes, transaction_id: bytes) -> int:
    return value[0]


def _pack_channel(value: int, transaction_id: bytes) -> bytes:
    return struct.pack("!HH", value, 0)


def _unpack_channel(value: bytes, transaction_id: bytes) -> int:
    return struct.unpack_from("!H", value)[0]


def _pack_even_port(reserve: bool, transaction_id: bytes) -> bytes:
    return b"\x80" if reserve else b"\x00"


def _unpack_even_port(value: bytes, transaction_id: bytes) -> bool:
    """Whether the next port is to be reserved too (the R bit)."""
    return bool(value[0] & 0x80)


def _pack_types(value: list[int], transaction_id: bytes) -> bytes:
    return struct.pack(f"!{len(value)}H", *value)


def _unpack_types(value: bytes, transaction_id: bytes) -> list[int]:
    return list(struct.unpack(f"!{len(value) // 2}H", value))


def _pack_error(value: tuple[int, str | None], transaction_id: bytes) -> bytes:
    return error_code(*value)


def _unpack_error(value: bytes, transaction_id: bytes) -> tuple[int, str]:
    return (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", "replace")


_IP_CLASSES = {1: ipaddress.IPv4Address, 2: ipaddress.IPv6Address}


def _ip_class(value: bytes) -> type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]:
    """The class of the address in an address value, by its family byte."""
    if (value[1], len(value)) not in ((1, 8), (2, 20)):
        raise _Malformed("has an unknown family")
    return _IP_CLASSES[value[1]]


def _pack_address(value: tuple[str, int], transaction_id: bytes) -> bytes:
    return plain_address(*value)


def _unpack_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    return str(_ip_class(value)(value[4:])), struct.unpack_from("!H", value, 2)[0]


def _pack_xor_address(value: tuple[str, int], transaction_id: bytes) -> bytes:
    return xor_address(*value, transaction_id)


def _unpack_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    ip_class = _ip_class(value)
    mask = int.from_bytes((MAGIC_BYTES + transaction_id)[: len(value) - 4], "big")
    port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
    return str(ip_class(int.from_bytes(value[4:], "big") ^ mask)), port


# Every attribute this codec knows, in the style of aioice's ``ATTRIBUTES``: the lookups, the list
# of understood comprehension-required attributes and every size check derive from this table.
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(MAPPED_ADDRESS, "MAPPED-ADDRESS", _pack_address, _unpack_address, ADDRESS_SIZE),
    Attribute(USERNAME, "USERNAME", _pack_text, _unpack_text, Size(most=MAX_USERNAME)),
    Attribute(MESSAGE_INTEGRITY, "MESSAGE-INTEGRITY", _pack_bytes, _unpack_bytes, exactly(20)),
    Attribute(ERROR_CODE, "ERROR-CODE", _pack_error, _unpack_error, Size(least=4)),
    Attribute(UNKNOWN_ATTRIBUTES, "UNKNOWN-ATTRIBUTES", _pack_types, _unpack_types, Size(step=2)),
    Attribute(CHANNEL_NUMBER, "CHANNEL-NUMBER", _pack_channel, _unpack_channel, U32_SIZE),
    Attribute(LIFETIME, "LIFETIME", _pack_u32, _unpack_u32, U32_SIZE),
    Attribute(XOR_PEER_ADDRESS, "XOR-PEER-ADDRESS", _pack_xor_address, _unpack_xor_address, ADDRESS_SIZE),
    Attribute(DATA_ATTR, "DATA", _pack_bytes, _unpack_bytes),
    Attribute(REALM, "REALM", _pack_text, _unpack_text, Size(most=MAX_REALM)),
    Attribute(NONCE, "NONCE", _pack_text, _unpack_text, Size(most=MAX_NONCE)),
    Attribute(XOR_RELAYED_ADDRESS, "XOR-RELAYED-ADDRESS", _pack_xor_address, _unpack_xor_address, ADDRESS_SIZE),
    Attribute(REQUESTED_ADDRESS_FAMILY, "REQUESTED-ADDRESS-FAMILY", _pack_byte, _unpack_byte, U32_SIZE),
    Attribute(EVEN_PORT, "EVEN-PORT", _pack_even_port, _unpack_even_port, exactly(1)),
    Attribute(REQUESTED_TRANSPORT, "REQUESTED-TRANSPORT", _pack_byte, _unpack_byte, U32_SIZE),
    Attribute(DONT_FRAGMENT, "DONT-FRAGMENT", _pack_flag, _unpack_flag, FLAG_SIZE),
    Attribute(MESSAGE_INTEGRITY_SHA256, "MESSAGE-INTEGRITY-SHA256", _pack_bytes, _unpack_bytes, Size(16, 32)),
    Attribute(XOR_MAPPED_ADDRESS, "XOR-MAPPED-ADDRESS", _pack_xor_address, _unpack_xor_address, ADDRESS_SIZE),
    Attribute(PRIORITY, "PRIORITY", _pack_u32, _unpack_u32, U32_SIZE),
    Attribute(USE_CANDIDATE, "USE-CANDIDATE", _pack_flag, _unpack_flag, FLAG_SIZE),
    Attribute(SOFTWARE, "SOFTWARE", _pack_text, _unpack_text, Size(most=MAX_SOFTWARE)),
    Attribute(FINGERPRINT, "FINGERPRINT", _pack_u32, _unpack_u32, U32_SIZE),
)
ATTRIBUTES_BY_TYPE = {attribute.type: attribute for attribute in ATTRIBUTES}
ATTRIBUTES_BY_NAME = {attribute.name: attribute for attribute in ATTRIBUTES}

# Comprehension-required attributes (type < 0x8000) this server understands; any other one in a
# request is answered with 420 (RESERVATION-TOKEN, CONNECTION-ID, USERHASH, ... are not supported).
UNDERSTOOD = frozenset(attribute.type for attribute in ATTRIBUTES if attribute.type < 0x8000)


def _decoded(size: Size, unpack: Unpack, value: bytes, transaction_id: bytes, name: str) -> Any:
    size.check(value, name)
    try:
        return unpack(value, transaction_id)
    except _Malformed as exc:
        raise BadRequest(f"{name} {exc}") from None


def decode(attr_type: int, value: bytes, transaction_id: bytes = b"") -> Any:
    """An attribute's value as the table reads it; :class:`BadRequest` when it is malformed."""
    attribute = ATTRIBUTES_BY_TYPE[attr_type]
    return _decoded(attribute.size, attribute.unpack, value, transaction_id, attribute.name)


def pack(attr_type: int, value: Any, transaction_id: bytes = b"") -> bytes:
    """An attribute's value as bytes, as the table writes it."""
    return ATTRIBUTES_BY_TYPE[attr_type].pack(value, transaction_id)


def fits(attr_type: int, value: bytes) -> bool:
    return ATTRIBUTES_BY_TYPE[attr_type].size.fits(len(value))


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

    def value(self, attr_type: int) -> Any:
        """The first attribute of this type decoded (:func:`decode`), or None when absent."""
        raw = self.get(attr_type)
        return None if raw is None else decode(attr_type, raw, self.transaction_id)

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
        expected = hmac.digest(key, header + raw[20:offset], digest)
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
            _check_framing(kind, size)
            if stop + padding(size) != end:
                raise StunError("FINGERPRINT is not the last attribute")
            expected = (binascii.crc32(data[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            # The CRC covers the header with the length as sent (which includes the fingerprint).
            if struct.unpack("!I", value)[0] != expected:
                raise StunError("FINGERPRINT does not match")
            message.has_fingerprint = True
        elif kind in (MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256):
            if not after_integrity:
                _check_framing(kind, size)
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


def _check_framing(kind: int, size: int) -> None:
    """FINGERPRINT and MESSAGE-INTEGRITY(-SHA256) of a size the table refuses are bad framing."""
    attribute = ATTRIBUTES_BY_TYPE[kind]
    if not attribute.size.fits(size):
        raise StunError(f"{attribute.name} has the wrong size")


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
        mac = hmac.digest(key, header + body, "sha1")
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


# Decoding values outside a message (BadRequest -> 400) ------------------------------------------


def xor_address_value(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    """The address in any XOR-*-ADDRESS value (they share one layout)."""
    return _decoded(ADDRESS_SIZE, _unpack_xor_address, value, transaction_id, "address attribute")


def u32_value(value: bytes, name: str) -> int:
    return _decoded(U32_SIZE, _unpack_u32, value, b"", name)


def text_value(value: bytes, name: str, limit: int) -> str:
    return _decoded(Size(most=limit), _unpack_text, value, b"", name)


def error_value(value: bytes) -> tuple[int, str]:
    return decode(ERROR_CODE, value)


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
