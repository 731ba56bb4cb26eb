"""Server API keys: an id, a name, scopes, and the public half of an Ed25519 key.

The secret handed to the operator is the private key's 32-byte seed (shown once, never stored);
the database keeps only the public key, so a leaked database cannot sign a request.  Used by the
server API (``control_api.server_auth``) and by ``videoconf keys create|list|revoke``.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from control_api.errors import invalid, not_found
from control_api.security import Clock
from control_api.storage.database import Database
from control_api.storage.tables import api_keys

SCOPES = ("rooms:read", "rooms:admin", "tokens:create", "recordings", "webhooks")
SECRET_PREFIX = "vcsk_"
KEY_ID_PREFIX = "AK"
MAX_NAME = 100
# ``last_used_at`` is written at most this often per key, so that signed calls do not each write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    public_key: str  # hex of the raw 32-byte Ed25519 public key
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the public key."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def new_key_id() -> str:
    return KEY_ID_PREFIX + base64.b32encode(secrets.token_bytes(15)).decode()[:20]


def encode_secret(seed: bytes) -> str:
    return SECRET_PREFIX + base64.urlsafe_b64encode(seed).decode().rstrip("=")


def decode_secret(secret: str) -> bytes:
    """The Ed25519 seed in a ``vcsk_...`` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"an API secret starts with {SECRET_PREFIX!r}")
    body = secret[len(SECRET_PREFIX):]
    try:
        seed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the API secret is not base64url") from exc
    if len(seed) != 32:
        raise ValueError("the API secret does not hold a 32-byte key")
    return seed


def public_key_hex(seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise invalid(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise invalid("a key needs at least one scope")
    return tuple(s for s in SCOPES if s in scopes)


class ApiKeys:
    """The ``api_keys`` table.  Stateless: cheap to build wherever a database is at hand."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def create(self, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[ApiKey, str]:
        """The new key and its secret; the secret is not kept anywhere."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise invalid(f"a key name is 1 to {MAX_NAME} characters")
        ordered = check_scopes(scopes)
        seed = secrets.token_bytes(32)
        key = ApiKey(new_key_id(), name, public_key_hex(seed), ordered, self._clock(), None, None)
        async with self._db.write() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key.id, name=key.name, public_key=key.public_key, scopes=list(ordered),
                    created_at=key.created_at,
                )
            )
        return key, encode_secret(seed)

    async def list(self) -> list[ApiKey]:
        async with self._db.read() as conn:
            rows = (await conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))).all()
        return [_key(row) for row in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        return _key(row) if row is not None else None

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoked keys stay listed (with ``revoked_at``); revoking twice keeps the first time."""
        async with self._db.write() as conn:
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        key = await self.get(key_id)
        if key is None:
            raise not_found("API key")
        return key

    async def touch(self, key: ApiKey) -> None:
        now = self._clock()
        if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
            return
        async with self._db.write() as conn:
            await conn.execute(api_keys.update().where(api_keys.c.id == key.id).values(last_used_at=now))


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        public_key=row.public_key,
        scopes=tuple(row.scopes or ()),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
