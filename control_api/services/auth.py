"""Accounts and sessions.

Access tokens are short-lived JWTs that carry the user's ``token_version``; a password change
bumps the version, so every older access token stops working at once.  Refresh tokens are
opaque, stored only as a SHA-256 digest, and rotated on every use within a family; presenting a
rotated token again (a sign that it was stolen) revokes the whole family.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.config import RateLimitRule, RateLimits
from control_api.errors import ServiceError, conflict, invalid, unauthorized
from control_api.schemas import TokenPairOut, UserOut
from control_api.security import TokenError, new_opaque_token, token_digest
from control_api.services import sessions
from control_api.services.attempts import Budget, give_back, rate_limited, reserve
from control_api.services.context import Record, ServiceContext
from control_api.services.notifications import user_channel
from control_api.storage.tables import refresh_tokens, users

_PRINCIPAL_BY_ID = select(
    users.c.id, users.c.email, users.c.display_name, users.c.timezone, users.c.token_version
).where(users.c.id == bindparam("user_id"))


@dataclass(frozen=True)
class Principal:
    """The authenticated user of a request."""

    id: uuid.UUID
    email: str
    display_name: str
    timezone: str


def _as_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def normalise_email(raw: str) -> str:
    """NFKC, trimmed, syntax-checked (no DNS look-up), lower-cased."""
    value = unicodedata.normalize("NFKC", raw).strip()
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise invalid(
            "email address is not valid", [{"field": "body.email", "message": str(exc)}]
        ) from None
    return checked.normalized.lower()


def initials(display_name: str) -> str:
    words = [w for w in display_name.split() if w[:1].isalnum()]
    if not words:
        return "?"
    letters = words[0][0] + (words[-1][0] if len(words) > 1 else "")
    return letters.upper()


def user_out(row: Any) -> UserOut:
    return UserOut(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        initials=initials(row.display_name),
        timezone=row.timezone,
        created_at=row.created_at,
    )


@dataclass(frozen=True)
class LoginBudgets:
    """Failed logins are counted per account and address (``pair``: that address alone is
    refused, never the owner elsewhere) and per account from everywhere (``account``).  While
    the account's budget is spent (an attack from many addresses), an address that failed
    within the account's period (``recent``, one try per period) is refused as well: each
    attacking address gets one try per period, and an address without failures, such as the
    owner's, still gets in."""

    pair: Budget
    account: Budget
    recent: Budget

    @classmethod
    def of(cls, email: str, client_ip: str, limits: RateLimits) -> LoginBudgets:
        account_rule = limits.login_per_account
        return cls(
            pair=Budget(f"login:fail:{email}:{client_ip}", limits.login_per_account_ip),
            account=Budget(f"login:fail:{email}", account_rule),
            recent=Budget(f"login:recent:{email}:{client_ip}", RateLimitRule(limit=1, period=account_rule.period)),
        )


class PrincipalCache:
    """Recently authenticated users, so that most requests verify their token without a query.

    An entry is trusted only for the token version it was read with and for ``ttl`` seconds.
    This process drops an entry at once when the password or profile changes; other nodes may
    accept an access token revoked there for at most ``ttl`` seconds (``auth_cache_seconds``,
    0 turns the cache off).
    """

    def __init__(self, ttl: float, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[uuid.UUID, tuple[Principal, int, float]] = {}

    def get(self, user_id: uuid.UUID, version: Any, now: float) -> Principal | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        principal, cached_version, expires = entry
        if now >= expires or cached_version != version:
            del self._entries[user_id]
            return None
        return principal

    def put(self, principal: Principal, version: int, now: float) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[principal.id] = (principal, version, now + self.ttl)

    def invalidate(self, user_id: uuid.UUID) -> None:
        self._entries.pop(user_id, None)


class AuthService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.principals = PrincipalCache(ctx.settings.auth_cache_seconds)

    async def check_rate(self, key: str, rule: RateLimitRule, what: str, cost: int = 1) -> None:
        decision = await self.ctx.limiter.hit(key, rule, self.ctx.now().timestamp(), cost)
        if not decision.allowed:
            raise rate_limited(decision, what)

    # Registration and login ------------------------------------------------------------------

    async def register(
        self,
        *,
        email: str,
        password: str,
        display_name: str,
        timezone: str,
        client_ip: str,
        user_agent: str | None,
    ) -> TokenPairOut:
        limits = self.ctx.settings.rate_limits
        await self.check_rate(f"register:ip:{client_ip}", limits.register_per_ip, "sign-ups")
        email = normalise_email(email)
        if password.strip() == "" or len(set(password)) < 4:
            raise invalid(
                "password is too weak",
                [{"field": "body.password", "message": "use at least 4 different characters"}],
                code="weak_password",
            )
        password_hash = await self.ctx.hasher.hash(password)
        now = self.ctx.now()
        row = {
            "id": uuid.uuid4(),
            "email": email,
            "password_hash": password_hash,
            "display_name": display_name,
            "timezone": timezone,
            "token_version": 0,
            "created_at": now,
            "updated_at": now,
            "password_changed_at": now,
        }
        try:
            async with self.ctx.db.write() as conn:
                await conn.execute(users.insert().values(row))
                return await self._issue(conn, Record(row), None, user_agent)
        except IntegrityError:
            raise conflict("email_taken", "an account with this email address already exists") from None

    async def login(
        self, *, email: str, password: str, client_ip: str, user_agent: str | None
    ) -> TokenPairOut:
        limits = self.ctx.settings.rate_limits
        await self.check_rate(f"login:ip:{client_ip}", limits.login_per_ip, "login attempts")
        try:
            email = normalise_email(email)
        except ServiceError:
            email = email.strip().lower()
        now = self.ctx.now().timestamp()
        counted = await self._count_login(LoginBudgets.of(email, client_ip, limits), now)
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.email == email))).first()
        ok = await self.ctx.hasher.verify(row.password_hash if row else None, password)
        if row is None or not ok:
            raise unauthorized("email or password is wrong", code="invalid_credentials")
        await give_back(self.ctx.limiter, counted, now)
        async with self.ctx.db.write() as conn:
            if self.ctx.hasher.needs_rehash(row.password_hash):
                await conn.execute(
                    update(users)
                    .where(users.c.id == row.id)
                    .values(password_hash=await self.ctx.hasher.hash(password))
                )
            return await self._issue(conn, row, None, user_agent)

    async def _count_login(self, budgets: LoginBudgets, now: float) -> list[Budget]:
        """Count this try as a failure until it proves right; return what to give back then."""
        limiter = self.ctx.limiter
        account = await limiter.hit(budgets.account.key, budgets.account.rule, now)
        counted = [budgets.account] if account.allowed else []
        try:
            await reserve(limiter, [budgets.pair], now, "failed logins for this account from this address")
        except ServiceError:
            await give_back(limiter, counted, now)
            raise
        counted.append(budgets.pair)
        recent = await limiter.hit(budgets.recent.key, budgets.recent.rule, now)
        if recent.allowed:
            counted.append(budgets.recent)
        elif not account.allowed:  # under attack, and this address failed lately
            await give_back(limiter, counted, now)
            raise rate_limited(recent, "failed logins for this account")
        return counted

    # Refresh tokens --------------------------------------------------------------------------

    async def _issue(
        self,
        conn: AsyncConnection,
        user: Any,
        family_id: uuid.UUID | None,
        user_agent: str | None,
    ) -> TokenPairOut:
        settings = self.ctx.settings
        now = self.ctx.now()
        family_id = family_id or uuid.uuid4()
        access, access_expires = self.ctx.access_tokens.encode(
            {"sub": str(user.id), "ver": user.token_version, "sid": str(family_id)}, settings.access_token_ttl
        )
        refresh = new_opaque_token()
        refresh_expires = now + timedelta(seconds=settings.refresh_token_ttl)
        await conn.execute(
            refresh_tokens.insert().values(
                id=uuid.uuid4(),
                user_id=user.id,
                family_id=family_id,
                token_hash=token_digest(refresh),
                created_at=now,
                expires_at=refresh_expires,
                user_agent=(user_agent or "")[:300] or None,
            )
        )
        return TokenPairOut(
            access_token=access,
            expires_in=settings.access_token_ttl,
            expires_at=access_expires,
            refresh_token=refresh,
            refresh_expires_at=refresh_expires,
            user=user_out(user),
        )

    async def refresh(self, token: str, user_agent: str | None) -> TokenPairOut:
        rt = refresh_tokens
        now = self.ctx.now()
        digest = token_digest(token)
        async with self.ctx.db.write() as conn:
            claimed = (
                await conn.execute(
                    update(rt)
                    .where(
                        rt.c.token_hash == digest,
                        rt.c.used_at.is_(None),
                        rt.c.revoked_at.is_(None),
                        rt.c.expires_at > now,
                    )
                    .values(used_at=now)
                    .returning(rt.c.user_id, rt.c.family_id)
                )
            ).first()
            if claimed is not None:
                user = (
                    await conn.execute(select(users).where(users.c.id == claimed.user_id))
                ).one()
                return await self._issue(conn, user, claimed.family_id, user_agent)
            existing = (await conn.execute(select(rt).where(rt.c.token_hash == digest))).first()
        if existing is None:
            raise unauthorized("refresh token is not valid", code="invalid_refresh_token")
        if existing.used_at is not None and existing.revoked_at is None:
            await self.revoke_family(existing.family_id)
            raise unauthorized(
                "refresh token was already used; every session of this login has been signed out",
                code="refresh_token_reused",
            )
        if existing.revoked_at is not None:
            raise unauthorized("refresh token has been revoked", code="refresh_token_revoked")
        raise unauthorized("refresh token has expired", code="refresh_token_expired")

    async def revoke_family(self, family_id: uuid.UUID) -> None:
        """Sign one login out; its notification streams end (``services.sessions``)."""
        async with self.ctx.db.write() as conn:
            owners = await conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.ctx.now())
                .returning(refresh_tokens.c.user_id)
            )
            user_ids = set(owners.scalars())
        for user_id in user_ids:
            await self.ctx.bus.publish(user_channel(user_id), sessions.signed_out(family_id))

    async def logout(self, token: str) -> None:
        async with self.ctx.db.read() as conn:
            family = (
                await conn.execute(
                    select(refresh_tokens.c.family_id).where(
                        refresh_tokens.c.token_hash == token_digest(token)
                    )
                )
            ).scalar()
        if family is None:
            raise unauthorized("refresh token is not valid", code="invalid_refresh_token")
        await self.revoke_family(family)

    # Access tokens ---------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthorized("an access token is required (Authorization: Bearer ...)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <access token>'")
        try:
            claims = self.ctx.access_tokens.decode(token.strip())
            user_id = uuid.UUID(str(claims["sub"]))
            version = claims.get("ver")
        except TokenError as exc:
            raise unauthorized(str(exc), code=exc.code) from None
        except ValueError:
            raise unauthorized("access token subject is not valid", code="invalid_token") from None
        now = self.ctx.now().timestamp()
        principal = self.principals.get(user_id, version, now)
        if principal is not None:
            return principal
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(_PRINCIPAL_BY_ID, {"user_id": user_id})).first()
        if row is None or row.token_version != version:
            raise unauthorized("access token is no longer valid; sign in again", code="invalid_token")
        principal = Principal(row.id, row.email, row.display_name, row.timezone)
        self.principals.put(principal, row.token_version, now)
        return principal

    async def require_account(self, user: Principal) -> None:
        """401 when the caller's account is gone (deleted while its token was still cached)."""
        self.principals.invalidate(user.id)
        async with self.ctx.db.read() as conn:
            await self._account(conn, user.id)

    async def _account(self, conn: AsyncConnection, user_id: uuid.UUID) -> Any:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        if row is None:
            raise self._no_account(user_id)
        return row

    def _no_account(self, user_id: uuid.UUID) -> ServiceError:
        self.principals.invalidate(user_id)
        return unauthorized("this account no longer exists", code="invalid_token")

    async def stream_session(self, authorization: str | None) -> sessions.StreamSession:
        """The session of a long-lived stream, checked past the principal cache: its login must
        not be signed out and its token version must be the account's."""
        try:
            claims = self.ctx.access_tokens.decode((authorization or "").partition(" ")[2].strip())
        except TokenError as exc:
            raise unauthorized(str(exc), code=exc.code) from None
        family = _as_uuid(claims.get("sid"))
        live_family = select(refresh_tokens.c.id).where(
            refresh_tokens.c.family_id == family, refresh_tokens.c.revoked_at.is_(None)
        )
        async with self.ctx.db.read() as conn:
            version = (await conn.execute(_PRINCIPAL_BY_ID, {"user_id": uuid.UUID(str(claims["sub"]))})).first()
            alive = family is not None and (await conn.execute(live_family.limit(1))).first() is not None
        if version is None or version.token_version != claims.get("ver") or not alive:
            raise unauthorized("this session has ended; sign in again", code="invalid_token")
        return sessions.StreamSession(str(family), claims.get("ver"), float(claims["exp"]))

    # Profile ---------------------------------------------------------------------------------

    async def profile(self, user_id: uuid.UUID) -> UserOut:
        async with self.ctx.db.read() as conn:
            row = await self._account(conn, user_id)
        return user_out(row)

    async def update_profile(self, user_id: uuid.UUID, display_name: str, timezone: str) -> UserOut:
        async with self.ctx.db.write() as conn:
            row = (
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(display_name=display_name, timezone=timezone, updated_at=self.ctx.now())
                    .returning(*users.c)
                )
            ).first()
        if row is None:
            raise self._no_account(user_id)
        self.principals.invalidate(user_id)
        return user_out(row)

    async def change_password(
        self, user_id: uuid.UUID, current: str, new: str, user_agent: str | None
    ) -> TokenPairOut:
        await self.check_rate(
            f"password:{user_id}", self.ctx.settings.rate_limits.login_per_account, "password attempts"
        )
        async with self.ctx.db.read() as conn:
            row = await self._account(conn, user_id)
        if not await self.ctx.hasher.verify(row.password_hash, current):
            raise ServiceError(403, "wrong_password", "current password is wrong")
        if current == new:
            raise invalid("new password must differ from the current one", code="same_password")
        new_hash = await self.ctx.hasher.hash(new)
        now = self.ctx.now()
        async with self.ctx.db.write() as conn:
            user = (
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(
                        password_hash=new_hash,
                        token_version=users.c.token_version + 1,
                        password_changed_at=now,
                        updated_at=now,
                    )
                    .returning(*users.c)
                )
            ).one()
            await conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            pair = await self._issue(conn, user, None, user_agent)
        self.principals.invalidate(user_id)
        await self.ctx.bus.publish(user_channel(user_id), sessions.password_changed(user.token_version))
        return pair
