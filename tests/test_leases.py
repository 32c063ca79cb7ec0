"""Leases with fencing tokens and fenced cursors: one test body run against the Redis
implementations (storage/leases.py, storage/cursors.py) and the conformance kit's in-memory ones
(channels/testing/polling.py), so a plugin author's kit run means what the hub's does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from channels.services.cursors import (
    MAX_CURSOR_BYTES,
    CursorStore,
    check_account,
    cursor_lease_name,
)
from channels.services.leases import LeaseManager
from channels.testing.polling import MemoryCursorStore, MemoryLeaseManager
from storage import keys
from storage.cursors import RedisCursorStore
from storage.leases import RedisLeaseManager

TTL = 0.3  # seconds; tests that wait for expiry sleep past it

Stores = tuple[Callable[[str], LeaseManager], CursorStore]


@pytest.fixture(params=["redis", "memory"])
def stores(request: pytest.FixtureRequest, redis: Redis) -> Stores:
    """A lease manager factory (one manager per simulated process) and the cursor store."""
    if request.param == "redis":
        return (lambda owner: RedisLeaseManager(redis, owner=owner)), RedisCursorStore(redis)
    memory = MemoryLeaseManager()
    return (lambda owner: memory), MemoryCursorStore(memory)


NAME = cursor_lease_name("shop", "INBOX")


async def test_only_one_holder_and_fences_strictly_increase(stores: Stores) -> None:
    manager, _ = stores
    a, b = manager("host-1"), manager("host-2")
    first = await a.acquire(NAME, TTL)
    assert first is not None and first.fence >= 1 and first.name == NAME
    assert await b.acquire(NAME, TTL) is None
    held = await b.holder(NAME)
    assert held is not None and held.fence == first.fence and 0 < held.expires_in <= TTL
    await asyncio.sleep(TTL + 0.1)  # the holder died: nothing renews it
    assert await a.holder(NAME) is None
    second = await b.acquire(NAME, TTL)
    assert second is not None and second.fence > first.fence
    assert not await first.renew(), "a lease granted to another process cannot be renewed"
    await second.release()
    third = await a.acquire(NAME, TTL)
    assert third is not None and third.fence > second.fence


async def test_concurrent_acquirers_one_wins(stores: Stores) -> None:
    manager, _ = stores
    grants = await asyncio.gather(*(manager(f"host-{i}").acquire(NAME, 5) for i in range(20)))
    assert sum(g is not None for g in grants) == 1


async def test_renew_keeps_the_lease_past_its_ttl(stores: Stores) -> None:
    manager, _ = stores
    lease = await manager("a").acquire(NAME, TTL)
    assert lease is not None
    for _ in range(4):
        await asyncio.sleep(TTL / 3)
        assert await lease.renew()
    assert await manager("b").acquire(NAME, TTL) is None


async def test_a_lapsed_lease_nobody_took_is_renewed_with_its_fence(stores: Stores) -> None:
    manager, cursors = stores
    lease = await manager("a").acquire(NAME, TTL)
    assert lease is not None
    await asyncio.sleep(TTL + 0.1)  # e.g. the holder was paused; no one else asked
    assert await lease.renew()
    assert await manager("b").acquire(NAME, TTL) is None
    assert await cursors.save("shop", "INBOX", b"1:7", fence=lease.fence)


async def test_release_by_a_stale_holder_leaves_the_new_lease(stores: Stores) -> None:
    manager, _ = stores
    stale = await manager("a").acquire(NAME, TTL)
    assert stale is not None
    await asyncio.sleep(TTL + 0.1)
    fresh = await manager("b").acquire(NAME, 5)
    assert fresh is not None
    await stale.release()
    held = await manager("a").holder(NAME)
    assert held is not None and held.fence == fresh.fence


async def test_cursor_write_needs_the_current_fence(stores: Stores) -> None:
    manager, cursors = stores
    assert await cursors.load("shop", "INBOX") is None
    assert not await cursors.save("shop", "INBOX", b"x", fence=1), "written without any lease"
    old = await manager("a").acquire(NAME, TTL)
    assert old is not None
    assert await cursors.save("shop", "INBOX", b"\x00uidvalidity=1;uid=41", fence=old.fence)
    await asyncio.sleep(TTL + 0.1)
    new = await manager("b").acquire(NAME, TTL)
    assert new is not None
    # The paused holder wakes up and checkpoints: refused, the cursor stays where it was.
    assert not await cursors.save("shop", "INBOX", b"stale", fence=old.fence)
    assert await cursors.load("shop", "INBOX") == b"\x00uidvalidity=1;uid=41"
    assert not await cursors.save("shop", "INBOX", b"future", fence=new.fence + 1)
    assert await cursors.save("shop", "INBOX", b"uid=42", fence=new.fence)
    assert await cursors.load("shop", "INBOX") == b"uid=42"
    # Cursors of other accounts are their own.
    assert await cursors.load("shop", "Sent") is None


async def test_bad_cursor_values_and_names_are_refused(stores: Stores) -> None:
    manager, cursors = stores
    lease = await manager("a").acquire(NAME, 5)
    assert lease is not None
    with pytest.raises(ValueError, match="exceeds"):
        await cursors.save("shop", "INBOX", b"x" * (MAX_CURSOR_BYTES + 1), fence=lease.fence)
    with pytest.raises(TypeError, match="bytes"):
        await cursors.save("shop", "INBOX", "41", fence=lease.fence)  # type: ignore[arg-type]
    for bad in ("", "x" * 201, "INBOX\nSent", "a\x00b"):
        with pytest.raises(ValueError, match="account name"):
            check_account(bad)
        with pytest.raises(ValueError, match="account name"):
            await cursors.load("shop", bad)
    with pytest.raises(ValueError):
        await manager("a").acquire(NAME, 0)


async def test_redis_keys_share_one_slot_and_fence_survives_expiry(redis: Redis) -> None:
    """One hash tag per lease (single-slot Lua on Cluster); the fence counter never expires."""
    manager = RedisLeaseManager(redis, owner="host-1-42")
    name = cursor_lease_name("shop", "[Gmail]/All {Mail}")
    lease = await manager.acquire(name, TTL)
    assert lease is not None
    tags = {_tag(keys.lease(name)), _tag(keys.lease_fence(name)), _tag(keys.cursor(name))}
    assert len(tags) == 1
    held = await manager.holder(name)
    assert held is not None and held.owner == "host-1-42"
    assert await redis.pttl(keys.lease(name)) > 0
    assert await redis.ttl(keys.lease_fence(name)) == -1
    await asyncio.sleep(TTL + 0.1)
    assert not await redis.exists(keys.lease(name))
    assert int(await redis.get(keys.lease_fence(name))) == lease.fence


def _tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1:key.index("}", start + 1)]
