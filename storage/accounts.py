"""People who sign in with a password: accounts, sessions and failed-login counters in Redis.

An account's id is the agent id routing knows (``[[routing.agents]] id``), so a signed-in
agent is scoped exactly like an agent's bearer token (``hub/scope.py``). Passwords are kept
only as argon2id hashes (argon2-cffi, the memory-hard KDF the OWASP cheat sheet names first);
hashing costs tens of milliseconds of CPU by design, so it runs on a worker thread, never on
the event loop.

Sessions are random 256-bit ids handed to the browser once; Redis keeps only their SHA-256
(a dump of Redis signs nobody in). Each session records the account's ``generation`` when it
was made: signing out everywhere, a password change and disabling the account bump it, which
ends every older session at once without finding them. A session lives
``idle_seconds`` after its last use (the key's TTL, renewed on use) and never longer than
``max_seconds`` after sign-in.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import secrets
import time
from typing import Any, Final, Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from storage import keys

Role = Literal["agent", "supervisor", "admin"]
MIN_PASSWORD: Final = 12
MAX_PASSWORD: Final = 1024  # argon2 takes any length; a megabyte "password" is an attack
_ACCOUNT_ID = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"

_hasher = PasswordHasher()  # argon2id, the library's current RFC 9106 low-memory profile


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so an unknown name costs what a
    wrong password costs and the answer's timing tells nobody which accounts exist. Made on
    first use, not at import: every CLI command imports this module."""
    return _hasher.hash(secrets.token_urlsafe(16))


class Account(msgspec.Struct, frozen=True):
    """What the API shows of an account (never the hash)."""

    id: str
    name: str
    role: Role
    enabled: bool
    created_at: float
    password_changed_at: float


class Session(msgspec.Struct, frozen=True):
    account: str
    role: Role
    csrf_token: str
    created_at: float


class AccountExists(Exception):
    pass


class UnknownAccount(LookupError):
    pass


class WeakPassword(ValueError):
    pass


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD} characters")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def account_key(account_id: str) -> str:
    return f"{keys.PREFIX}:{keys.GLOBAL_TAG}:account:{account_id}"


ACCOUNTS: Final = f"{keys.PREFIX}:{keys.GLOBAL_TAG}:accounts"


def session_key(session_id: str) -> str:
    return f"{keys.PREFIX}:{keys.GLOBAL_TAG}:session:{_digest(session_id)}"


def failures_key(kind: str, who: str) -> str:
    """Failed sign-ins of one account or one client address (hashed: no address in a key)."""
    return f"{keys.PREFIX}:{keys.GLOBAL_TAG}:loginfail:{kind}:{_digest(who)}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AccountStore:
    def __init__(self, redis: Any, *, idle_seconds: float = 8 * 3600,
                 max_seconds: float = 7 * 86400) -> None:
        self.redis = redis
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds

    # -- accounts ---------------------------------------------------------------------------
    async def create(self, account_id: str, *, name: str, role: Role, password: str) -> Account:
        check_password(password)
        hashed = await asyncio.to_thread(_hasher.hash, password)
        now = time.time()
        fields = {"name": name, "role": role, "enabled": "1", "hash": hashed,
                  "generation": "1", "created_at": repr(now), "password_changed_at": repr(now)}
        # HSETNX on one field first: two admins creating the same id cannot both win.
        if not await self.redis.hsetnx(account_key(account_id), "hash", hashed):
            raise AccountExists(f"account {account_id!r} exists")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(account_key(account_id), mapping=fields)
            pipe.sadd(ACCOUNTS, account_id)
            await pipe.execute()
        return Account(account_id, name, role, True, now, now)

    async def get(self, account_id: str) -> Account | None:
        row = await self.redis.hgetall(account_key(account_id))
        if not row or b"role" not in row:
            return None
        return _account(account_id, row)

    async def list(self) -> list[Account]:
        ids = sorted(_s(i) for i in await self.redis.smembers(ACCOUNTS))
        found = [await self.get(i) for i in ids]
        return [a for a in found if a is not None]

    async def set_password(self, account_id: str, password: str) -> None:
        """A new password ends every session of the account (a leaked one stops working)."""
        check_password(password)
        if await self.get(account_id) is None:
            raise UnknownAccount(account_id)
        hashed = await asyncio.to_thread(_hasher.hash, password)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(account_key(account_id),
                      mapping={"hash": hashed, "password_changed_at": repr(time.time())})
            pipe.hincrby(account_key(account_id), "generation", 1)
            await pipe.execute()

    async def set_enabled(self, account_id: str, enabled: bool) -> Account:
        if await self.get(account_id) is None:
            raise UnknownAccount(account_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(account_key(account_id), "enabled", "1" if enabled else "0")
            if not enabled:
                pipe.hincrby(account_key(account_id), "generation", 1)
            await pipe.execute()
        account = await self.get(account_id)
        assert account is not None
        return account

    async def verify(self, account_id: str, password: str) -> Account | None:
        """The account if the password is right and the account enabled; the same work
        otherwise. A hash made with older parameters is replaced on success."""
        row = await self.redis.hgetall(account_key(account_id)) if _valid_id(account_id) else {}
        stored = (_s(row[b"hash"]) if row.get(b"hash")
                  else await asyncio.to_thread(_dummy_hash))
        try:
            await asyncio.to_thread(_hasher.verify, stored, password[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            return None
        if not row or b"role" not in row:
            return None
        account = _account(account_id, row)
        if not account.enabled:
            return None
        if _hasher.check_needs_rehash(stored):
            hashed = await asyncio.to_thread(_hasher.hash, password)
            await self.redis.hset(account_key(account_id), "hash", hashed)
        return account

    # -- sessions ---------------------------------------------------------------------------
    async def open_session(self, account: Account) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        generation = await self.redis.hget(account_key(account.id), "generation") or b"1"
        session = Session(account.id, account.role, secrets.token_urlsafe(32), time.time())
        await self.redis.hset(session_key(session_id), mapping={
            "account": account.id, "csrf": session.csrf_token, "generation": _s(generation),
            "created_at": repr(session.created_at)})
        await self.redis.expire(session_key(session_id), int(self.idle_seconds))
        return session_id, session

    async def session(self, session_id: str) -> Session | None:
        """The live session behind a cookie, its idle time renewed; None when it expired,
        was signed out, or its account was disabled, re-passworded or signed out everywhere."""
        if not session_id or len(session_id) > 128:
            return None
        key = session_key(session_id)
        row = await self.redis.hgetall(key)
        if not row:
            return None
        created = float(row.get(b"created_at", b"0"))
        account_id = _s(row.get(b"account", b""))
        account_row = await self.redis.hmget(account_key(account_id),
                                             "generation", "enabled", "role")
        generation, enabled, role = (None if v is None else _s(v) for v in account_row)
        if (time.time() - created > self.max_seconds or enabled != "1"
                or generation != _s(row.get(b"generation", b""))
                or role not in ("agent", "supervisor", "admin")):
            await self.redis.delete(key)
            return None
        remaining = self.max_seconds - (time.time() - created)
        await self.redis.expire(key, max(1, int(min(self.idle_seconds, remaining))))
        return Session(account_id, role, _s(row[b"csrf"]), created)  # type: ignore[arg-type]

    async def close_session(self, session_id: str) -> None:
        await self.redis.delete(session_key(session_id))

    async def close_all(self, account_id: str) -> None:
        await self.redis.hincrby(account_key(account_id), "generation", 1)

    # -- failed sign-ins --------------------------------------------------------------------
    async def failures(self, account_id: str, client: str) -> tuple[int, int]:
        values = await self.redis.mget(failures_key("account", account_id),
                                       failures_key("ip", client))
        return int(values[0] or 0), int(values[1] or 0)

    async def record_failure(self, account_id: str, client: str, window_seconds: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (failures_key("account", account_id), failures_key("ip", client)):
                pipe.incr(key)
                pipe.expire(key, window_seconds, nx=True)
            await pipe.execute()

    async def retry_after(self, account_id: str, client: str) -> int:
        ttls = await asyncio.gather(self.redis.ttl(failures_key("account", account_id)),
                                    self.redis.ttl(failures_key("ip", client)))
        return max(1, *(int(t) for t in ttls))

    async def clear_failures(self, account_id: str) -> None:
        await self.redis.delete(failures_key("account", account_id))


def _valid_id(account_id: str) -> bool:
    return re.fullmatch(_ACCOUNT_ID, account_id) is not None


def csrf_matches(expected: str, presented: str) -> bool:
    return hmac.compare_digest(expected.encode(), presented.encode())


def _account(account_id: str, row: dict[bytes, bytes]) -> Account:
    role = _s(row.get(b"role", b"agent"))
    return Account(
        id=account_id, name=_s(row.get(b"name", b"")),
        role=role if role in ("agent", "supervisor", "admin") else "agent",  # type: ignore[arg-type]
        enabled=row.get(b"enabled") == b"1",
        created_at=float(row.get(b"created_at", b"0")),
        password_changed_at=float(row.get(b"password_changed_at", b"0")))


ACCOUNT_ID_PATTERN: Final = _ACCOUNT_ID
