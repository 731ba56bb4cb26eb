"""Long-term credentials for the TURN server: static users, and time-limited credentials in the
format coturn calls ``use-auth-secret`` (the "TURN REST API"): the username is
``<unix expiry>:<user>`` and the password is the base64 HMAC-SHA1 of the username keyed with a
shared secret.  Several secrets may be valid at once so that they can be rotated.

Nonces are stateless: an expiry time and an HMAC over it and the client's address, so a nonce
cannot be reused from another address and every server process with the same key accepts it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from turn.stun import long_term_key


def rest_password(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def rest_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """Time-limited TURN credentials for ``user``, valid for ``ttl`` seconds."""
    expiry = int(now if now is not None else time.time()) + int(ttl)
    username = f"{expiry}:{user}"
    return username, rest_password(secret, username)


@dataclass(frozen=True)
class Identity:
    username: str
    user: str  # whom quotas count: the part after the expiry for time-limited credentials
    keys: tuple[bytes, ...]  # candidate long-term keys; the message's integrity picks one


class Credentials:
    """Looks up the candidate keys for a username; None when the user is unknown or expired."""

    def __init__(
        self,
        realm: str,
        *,
        users: dict[str, str] | None = None,
        auth_secrets: Sequence[str] = (),
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.realm = realm
        self._static = {name: long_term_key(name, realm, password) for name, password in (users or {}).items()}
        self.auth_secrets = list(auth_secrets)
        self.wall_clock = wall_clock

    def lookup(self, username: str) -> Identity | None:
        keys: list[bytes] = []
        user = username
        static = self._static.get(username)
        if static is not None:
            keys.append(static)
        if self.auth_secrets:
            expiry, sep, rest = username.partition(":")
            # ASCII digits only: str.isdigit() also takes '²' or '๙', which int() refuses
            if sep and expiry.isascii() and expiry.isdigit() and len(expiry) <= 12 and int(expiry) >= self.wall_clock():
                user = rest
                keys.extend(
                    long_term_key(username, self.realm, rest_password(secret, username)) for secret in self.auth_secrets
                )
        if not keys:
            return None
        return Identity(username, user, tuple(keys))


class Nonces:
    def __init__(self, lifetime: float, clock: Callable[[], float], key: bytes | None = None) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._key = key or secrets.token_bytes(32)

    def _mac(self, expiry: str, client: str) -> str:
        return hmac.digest(self._key, f"{expiry}|{client}".encode(), "sha256").hex()[:24]

    def issue(self, client: str) -> str:
        expiry = f"{int(self.clock() + self.lifetime):x}"
        return expiry + "-" + self._mac(expiry, client)

    def valid(self, nonce: str, client: str) -> bool:
        expiry, sep, mac = nonce.partition("-")
        if not sep or not 0 < len(expiry) <= 12:
            return False
        try:
            deadline = int(expiry, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(mac.encode(), self._mac(expiry, client).encode()):
            return False
        return deadline >= self.clock()


class SourceLimiter:
    """A token bucket per source address, for the 401 answers a source may get."""

    def __init__(self, burst: float, per_second: float, clock: Callable[[], float], max_sources: int = 100_000) -> None:
        self.burst = burst
        self.rate = per_second
        self.clock = clock
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            return False
        if len(self._buckets) >= self.max_sources and source not in self._buckets:
            self.prune(now)
        self._buckets[source] = (tokens - 1, now)
        return True

    def prune(self, now: float) -> None:
        """Forget the sources whose buckets have refilled: they behave as new ones."""
        full = self.burst / self.rate if self.rate else float("inf")
        for source, (_, last) in list(self._buckets.items()):
            if now - last >= full:
                del self._buckets[source]
        if len(self._buckets) >= self.max_sources:  # still full: drop the oldest half
            for source in sorted(self._buckets, key=lambda s: self._buckets[s][1])[: self.max_sources // 2]:
                del self._buckets[source]
