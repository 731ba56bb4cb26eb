"""Passwords (argon2id) and signed tokens (JWT, HS256 pinned, ``kid`` header, key rotation).

Two independent key sets: access tokens for this API, and room tokens that SFU nodes verify, so
an SFU node never holds the key that mints API sessions.  Expiry and not-before are checked here
against the injected clock; PyJWT checks the signature, algorithm, issuer and audience.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from argon2 import PasswordHasher as _Argon2
from argon2 import exceptions as argon2_errors

from control_api.config import PasswordHashing

ALGORITHM = "HS256"

Clock = Callable[[], datetime]


def key_id(secret: str) -> str:
    """A public identifier for a signing key: a truncated hash, so the key itself never leaks."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class TokenError(Exception):
    """A token is missing, malformed, forged, expired or meant for someone else."""

    def __init__(self, message: str, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.code = code


class PasswordHasher:
    """argon2id hashing, run in a worker thread so that the event loop never stalls on it."""

    def __init__(self, params: PasswordHashing) -> None:
        self._hasher = _Argon2(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
        )
        # Verifying against this keeps "no such user" as slow as "wrong password".
        self._dummy = self._hasher.hash(secrets.token_hex(16))

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            None, self._verify, stored_hash, password
        )

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy, password) and (
                stored_hash is not None
            )
        except (argon2_errors.VerificationError, argon2_errors.InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


class KeySet:
    """The current signing key and the previous keys still accepted for verification."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        self.current_kid = key_id(current)
        self._current = current
        self._by_kid = {key_id(k): k for k in (*previous, current)}

    def signing_key(self) -> tuple[str, str]:
        return self.current_kid, self._current

    def verification_key(self, kid: str) -> str | None:
        return self._by_kid.get(kid)


@dataclass(frozen=True)
class TokenCodec:
    keys: KeySet
    issuer: str
    audience: str
    clock: Clock

    def encode(self, claims: dict[str, Any], ttl: int) -> tuple[str, datetime]:
        now = self.clock()
        issued = int(now.timestamp())
        expires = issued + ttl
        kid, key = self.keys.signing_key()
        payload = {"iss": self.issuer, "aud": self.audience, "iat": issued, "exp": expires}
        payload.update(claims)
        token = jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid})
        return token, datetime.fromtimestamp(expires, tz=now.tzinfo)

    def decode(self, token: str) -> dict[str, Any]:
        header = _header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenError("token algorithm not accepted")
        kid = header.get("kid")
        key = self.keys.verification_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("token signed with an unknown key")
        try:
            claims = _JWT.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        now = self.clock().timestamp()
        exp = claims.get("exp")
        if not isinstance(exp, int) or now >= exp:
            raise TokenError("token has expired", code="token_expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int) or now < nbf):
            raise TokenError("token is not valid yet")
        return claims


_JWT = jwt.PyJWT()


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read to pick the key; PyJWT then verifies the whole token with it."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise TokenError(f"malformed token: {exc}") from None
    if not isinstance(header, dict):
        raise TokenError("malformed token: the header is not an object")
    return header


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Refresh and calendar tokens are stored only as this digest."""
    return hashlib.sha256(token.encode()).hexdigest()
