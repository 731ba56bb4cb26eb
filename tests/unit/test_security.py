"""Token codec and password hashing, with the clock passed in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt
import pytest

from control_api.config import PasswordHashing
from control_api.security import KeySet, PasswordHasher, TokenCodec, TokenError, key_id, token_digest

KEY = "k" * 30 + "0123456789abcdefghijklmnopqrstuvwxyz"
OLD = "o" * 10 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def codec(clock: Clock, keys: KeySet | None = None, audience: str = "api") -> TokenCodec:
    return TokenCodec(keys or KeySet(KEY), "videoconf", audience, clock)


def test_a_token_reads_back_until_its_ttl_runs_out() -> None:
    clock = Clock()
    tokens = codec(clock)
    token, expires = tokens.encode({"sub": "u1"}, ttl=60)
    assert expires == clock.now + timedelta(seconds=60)
    assert tokens.decode(token)["sub"] == "u1"
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": key_id(KEY), "typ": "JWT"}
    clock.now += timedelta(seconds=59)
    tokens.decode(token)
    clock.now += timedelta(seconds=1)
    with pytest.raises(TokenError) as error:
        tokens.decode(token)
    assert error.value.code == "token_expired"


def test_not_before_is_honoured() -> None:
    clock = Clock()
    tokens = codec(clock)
    token, _ = tokens.encode({"sub": "u1", "nbf": int(clock.now.timestamp()) + 30}, ttl=60)
    with pytest.raises(TokenError):
        tokens.decode(token)
    clock.now += timedelta(seconds=30)
    tokens.decode(token)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c, k: jwt.encode(c, k, algorithm="HS512", headers={"kid": key_id(k)}),
        lambda c, k: jwt.encode(c, None, algorithm="none", headers={"kid": key_id(k)}),
        lambda c, k: jwt.encode(c, k, algorithm="HS256"),  # no kid
        lambda c, k: jwt.encode(c, k, algorithm="HS256", headers={"kid": "unknown"}),
        lambda c, k: jwt.encode({**c, "aud": "sfu"}, k, algorithm="HS256", headers={"kid": key_id(k)}),
        lambda c, k: jwt.encode({**c, "iss": "someone"}, k, algorithm="HS256", headers={"kid": key_id(k)}),
        lambda c, k: jwt.encode({k2: v for k2, v in c.items() if k2 != "sub"}, k, algorithm="HS256", headers={"kid": key_id(k)}),
        lambda c, k: jwt.encode({**c, "exp": "soon"}, k, algorithm="HS256", headers={"kid": key_id(k)}),
        lambda c, k: "a.b",
        lambda c, k: "",
    ],
)
def test_rejects_tokens_that_are_not_exactly_right(mutate) -> None:
    clock = Clock()
    tokens = codec(clock)
    now = int(clock.now.timestamp())
    claims = {"iss": "videoconf", "aud": "api", "iat": now, "exp": now + 60, "sub": "u1"}
    assert tokens.decode(jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": key_id(KEY)}))
    with pytest.raises(TokenError):
        tokens.decode(mutate(claims, KEY))


def test_key_rotation_accepts_previous_keys_and_signs_with_the_current() -> None:
    clock = Clock()
    old_token, _ = codec(clock, KeySet(OLD)).encode({"sub": "u1"}, ttl=60)
    rotated = codec(clock, KeySet(KEY, [OLD]))
    assert rotated.decode(old_token)["sub"] == "u1"
    new_token, _ = rotated.encode({"sub": "u2"}, ttl=60)
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(KEY)
    with pytest.raises(TokenError):
        codec(clock, KeySet(KEY)).decode(old_token)  # once the old key is dropped


async def test_passwords_hash_with_argon2id_verify_exactly_and_weaker_hashes_need_a_rehash() -> None:
    hasher = PasswordHasher(PasswordHashing(time_cost=1, memory_kib=64, parallelism=1))
    stored = await hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    assert await hasher.verify(stored, "correct horse battery")
    assert not await hasher.verify(stored, "Correct horse battery")
    assert not await hasher.verify(None, "correct horse battery")
    assert not await hasher.verify("not a hash", "x")
    stronger = PasswordHasher(PasswordHashing(time_cost=2, memory_kib=128, parallelism=1))
    assert stronger.needs_rehash(stored) and not hasher.needs_rehash(stored)


def test_token_digest_is_sha256_hex() -> None:
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
