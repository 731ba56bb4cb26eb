"""Authentication of the server API (``/api/server/...``): short-lived EdDSA JWTs signed with
an API key's secret.

A request carries ``Authorization: Bearer <JWT>`` with header ``alg: EdDSA`` and claims
``iss`` (the key id), ``aud`` (``videoconf-server-api``), ``iat`` and ``exp`` (at most
``MAX_LIFETIME`` seconds apart), and optionally ``sha256`` (hex digest of the request body,
checked when present).  The server holds only each key's public half, so neither a database
leak nor a captured token lets anyone sign new requests.  Every endpoint names one scope.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_api.errors import ServiceError, forbidden
from control_api.handlers import services
from control_api.routing import read_body
from control_api.security import TokenError, _header
from control_api.services.api_keys import SCOPES, ApiKeys

AUDIENCE = "videoconf-server-api"
ALGORITHM = "EdDSA"
MAX_LIFETIME = 600  # seconds from iat to exp
CLOCK_SKEW = 30  # seconds an iat may lie in the future


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """The caller of a server API request: the key that signed it."""

    key_id: str
    name: str
    scopes: tuple[str, ...]


def key_unauthorized(message: str, code: str) -> ServiceError:
    return ServiceError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="videoconf-server"'})


async def require_key(request: web.Request, scope: str) -> ApiKeyPrincipal:
    """The key that signed this request, if it is valid and holds ``scope``.

    401 codes: ``missing_token``, ``invalid_token`` (malformed, bad signature, wrong audience
    or algorithm, body hash mismatch), ``unknown_key``, ``key_revoked``, ``token_expired``,
    ``token_lifetime_too_long``, ``token_not_yet_valid``; 403 ``insufficient_scope``.
    """
    assert scope in SCOPES, scope
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise key_unauthorized("a server API call needs 'Authorization: Bearer <JWT>' signed with an API key", "missing_token")
    token = token.strip()
    ctx = services(request).ctx
    try:
        jose = _header(token)
    except TokenError as exc:
        raise key_unauthorized(str(exc), "invalid_token") from None
    if jose.get("alg") != ALGORITHM:
        raise key_unauthorized(f"server API tokens are signed with {ALGORITHM}", "invalid_token")
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise key_unauthorized(f"malformed token: {exc}", "invalid_token") from None
    key_id = unverified.get("iss")
    if not isinstance(key_id, str) or not key_id or len(key_id) > 40:
        raise key_unauthorized("the token's iss must be an API key id", "invalid_token")
    keys = ApiKeys(ctx.db, ctx.clock)
    key = await keys.get(key_id)
    if key is None:
        raise key_unauthorized("no such API key", "unknown_key")
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key.public_key))
        claims = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=key_id,
            options={"require": ["iss", "aud", "iat", "exp"], "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as exc:
        raise key_unauthorized(f"invalid token: {exc}", "invalid_token") from None
    if key.revoked_at is not None:
        raise key_unauthorized("this API key has been revoked", "key_revoked")
    now = ctx.clock().timestamp()
    iat, exp = claims["iat"], claims["exp"]
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise key_unauthorized("iat and exp must be whole seconds", "invalid_token")
    if exp - iat > MAX_LIFETIME:
        raise key_unauthorized(f"a server API token may live at most {MAX_LIFETIME} seconds", "token_lifetime_too_long")
    if now >= exp:
        raise key_unauthorized("token has expired", "token_expired")
    if iat > now + CLOCK_SKEW:
        raise key_unauthorized("token is issued in the future", "token_not_yet_valid")
    digest = claims.get("sha256")
    if digest is not None:
        body = await read_body(request) if request.body_exists else b""
        if not isinstance(digest, str) or not hmac.compare_digest(digest.lower(), hashlib.sha256(body).hexdigest()):
            raise key_unauthorized("the token's sha256 does not match the request body", "invalid_token")
    if scope not in key.scopes:
        raise forbidden(f"this API key lacks the {scope!r} scope", "insufficient_scope")
    await keys.touch(key)
    return ApiKeyPrincipal(key.id, key.name, key.scopes)
