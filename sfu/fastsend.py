"""The copies of one incoming packet, protected and written together.

Forwarding one packet to N subscribers used to cost N rounds of pylibsrtp's ``protect`` (a
cffi call that allocates and copies twice) and N ``sendto`` calls through the event loop's
transport.  A ``SendBatch`` collects the copies of one packet instead, and ``flush`` hands them
to the native helper ``sfu._fastsend`` (sfu/_fastsend.c): it protects each copy in a buffer of
its own with the very libsrtp that pylibsrtp built (the subscribers' sessions are aiortc's),
and writes each run of copies on one socket with one ``sendmmsg``.  Copies the socket would not
take (it would block) come back protected and are queued on their transport, in order.

The helper is built from source by ``pip install`` (setup.py; gcc and the Python headers).
When it is missing, or the setting ``native_send`` is false, ``NATIVE`` is None and the SFU sends each
copy as before (``SenderTap.send_now``): the forwarding tests run on both paths.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from pylibsrtp import Error, Session
from pylibsrtp._binding import ffi, lib

try:
    from sfu import _fastsend
except ImportError:  # not built (no compiler when installed): the Python path
    _fastsend = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

PROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))
UNPROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect")))
# srtp_protect_rtcp takes the same arguments as srtp_protect: a SendBatch of RTCP uses it.
PROTECT_RTCP = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect_rtcp")))

# SRTP's trailer per profile (the authentication tag), for the transport's byte counter.
TRAILERS = {b"SRTP_AES128_CM_SHA1_80": 10, b"SRTP_AEAD_AES_128_GCM": 16, b"SRTP_AEAD_AES_256_GCM": 16}


NATIVE: Any = _fastsend  # None: every copy from Python
# Lanes (sfu.forwarding.DownTrack.arm_lane): steady subscribers forwarded with no Python per copy.
LANES = True


def configure(native: bool, lanes: bool = True) -> None:
    """The ``native_send`` setting: use the helper where it was built, or Python only."""
    global NATIVE, LANES
    NATIVE = _fastsend if native else None
    LANES = lanes
    if native and _fastsend is None:
        log.warning("native_send is on but sfu/_fastsend.c was not built (gcc and the Python headers at install): forwarding from Python")


def session_pointer(session: Any) -> int:
    """The ``srtp_t`` of a pylibsrtp ``Session``, as the helper takes it."""
    return int(ffi.cast("uintptr_t", session._srtp[0]))


def unprotect(session: Any, data: bytes) -> bytes:
    """pylibsrtp's ``Session.unprotect`` through the helper (one copy, no allocation but the
    result); raises ``pylibsrtp.Error`` the same way.  The session's pointer is kept on it."""
    native = NATIVE
    if native is None or session.__class__ is not Session:
        return session.unprotect(data)
    pointer = session.__dict__.get("_vc_pointer")
    if pointer is None:
        pointer = session._vc_pointer = session_pointer(session)
    plain = native.unprotect(UNPROTECT, pointer, data)
    if plain.__class__ is int:
        raise Error(f"srtp_unprotect failed with status {plain}")
    return plain


def pack_address(family: int, host: str, port: int) -> bytes:
    """``host``:``port`` as a ``struct sockaddr_in`` (AF_INET) or ``sockaddr_in6``."""
    head = family.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
    if family == socket.AF_INET:
        return head + socket.inet_pton(socket.AF_INET, host) + bytes(8)
    if family == socket.AF_INET6:
        return head + bytes(4) + socket.inet_pton(socket.AF_INET6, host) + bytes(4)
    raise ValueError(f"no socket address for family {family}")


def socket_of(transport: Any) -> tuple[int, int] | None:
    """The descriptor and family of a UDP transport's own socket, or None (a TURN relay, or a
    transport that does not show its socket)."""
    try:
        sock = transport.get_extra_info("socket")
    except Exception:  # a transport without extras
        return None
    if sock is None or sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    fd = sock.fileno()
    return (fd, sock.family) if fd >= 0 else None


class SendBatch:
    """The copies of one packet waiting for ``flush``: ``(fd, session, sockaddr, packet,
    transport, address)`` each, the last two for a copy the socket would not take.  ``protect``:
    libsrtp's function that protects them (``PROTECT_RTCP`` for a batch of RTCP)."""

    __slots__ = ("items", "sent", "queued", "failed", "protect")

    def add(self, fd: int, session: int, sockaddr: bytes, packet: bytes, transport: Any, address: tuple[str, int]) -> None:
        self.items.append((fd, session, sockaddr, packet, transport, address))

    def __init__(self, protect: int = PROTECT) -> None:
        self.protect = protect
        self.items: list[tuple[int, int, bytes, bytes, Any, tuple[str, int]]] = []
        self.sent = 0  # copies written by the helper
        self.queued = 0  # copies the socket would not take, queued on their transport
        self.failed = 0  # copies that could not be protected (dropped)

    def flush(self) -> int:
        """Protect and write what was added; the number of copies lost (not protected)."""
        items = self.items
        if not items:
            return 0
        self.items = []
        result = NATIVE.send(self.protect, items)
        if result.__class__ is int:
            self.sent += result
            return 0
        failed = self.failed
        for item, outcome in zip(items, result, strict=True):
            if outcome is None:
                self.sent += 1
            elif outcome.__class__ is bytes:
                self.queued += 1
                try:
                    item[4].sendto(outcome, item[5])
                except Exception:  # the transport closed meanwhile: the copy is lost, as a datagram may be
                    self.failed += 1
            else:
                self.failed += 1
                if self.failed & (self.failed - 1) == 0:
                    log.warning("a forwarded copy could not be protected (libsrtp status %s)", outcome)
        return self.failed - failed
