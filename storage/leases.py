"""Leases with fencing tokens on Redis (``channels.services.leases``): one poller per account
across every hub process.

Expiry runs on the Redis server's clock (``PEXPIRE``), so hub processes whose clocks disagree
still agree on who holds a lease. See ``lua/lease_*.lua``.
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import Redis

from channels.services.leases import LeaseInfo
from storage import keys
from storage.scripts import load_script


def _ttl_ms(ttl_seconds: float) -> int:
    if not ttl_seconds > 0:
        raise ValueError(f"a lease TTL must be positive, got {ttl_seconds!r}")
    return max(1, math.ceil(ttl_seconds * 1000))


def _check_name(name: str) -> None:
    if not name:
        raise ValueError("a lease needs a name")


class RedisLease:
    """One grant of a lease; ``fence`` identifies it for as long as the data lives."""

    def __init__(self, manager: RedisLeaseManager, name: str, fence: int, ttl_ms: int) -> None:
        self._manager = manager
        self._name = name
        self._fence = fence
        self._ttl_ms = ttl_ms

    @property
    def name(self) -> str:
        return self._name

    @property
    def fence(self) -> int:
        return self._fence

    async def renew(self) -> bool:
        m = self._manager
        renewed = await m.renew_script(
            keys=[keys.lease(self._name), keys.lease_fence(self._name)],
            args=[self._fence, self._ttl_ms, m.owner])
        return bool(renewed)

    async def release(self) -> None:
        await self._manager.release_script(keys=[keys.lease(self._name)], args=[self._fence])

    def __repr__(self) -> str:
        return f"RedisLease({self._name!r}, fence={self._fence})"


class RedisLeaseManager:
    """``owner`` names this process in the lease (``storage.streams.consumer_name()``)."""

    def __init__(self, redis: Redis, *, owner: str) -> None:
        self.redis: Any = redis  # bytes replies; see storage.store
        self.owner = owner
        self.acquire_script = load_script(redis, "lease_acquire")
        self.renew_script = load_script(redis, "lease_renew")
        self.release_script = load_script(redis, "lease_release")

    async def acquire(self, name: str, ttl_seconds: float) -> RedisLease | None:
        _check_name(name)
        ttl_ms = _ttl_ms(ttl_seconds)
        fence = int(await self.acquire_script(
            keys=[keys.lease(name), keys.lease_fence(name)], args=[ttl_ms, self.owner]))
        return RedisLease(self, name, fence, ttl_ms) if fence else None

    async def holder(self, name: str) -> LeaseInfo | None:
        _check_name(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.lease(name), "fence", "owner")
            pipe.pttl(keys.lease(name))
            (fence, owner), ttl_ms = await pipe.execute()
        if fence is None or ttl_ms < 0:
            return None
        return LeaseInfo(fence=int(fence), owner=(owner or b"").decode(errors="replace"),
                         expires_in=ttl_ms / 1000)
