"""With an external redis_url the hub cannot make Redis durable itself; it says at start-up
when AOF is off, when fsync is left to the OS, or when the eviction policy can drop keys."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from redis.asyncio import Redis

from hub.redis_connection import durability_warnings
from storage.embedded import EmbeddedRedis


@pytest_asyncio.fixture
async def durable() -> AsyncIterator[Redis]:
    """A Redis configured the way the README asks: AOF on, everysec, noeviction."""
    base = Path(tempfile.mkdtemp(prefix="ihdur-", dir="/tmp"))
    server = EmbeddedRedis(base / "data")
    await server.start()
    client = Redis(unix_socket_path=str(server.socket_path))
    try:
        yield client
    finally:
        await client.aclose()
        await server.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_a_durable_redis_gets_no_warning(durable: Redis) -> None:
    assert await durability_warnings(durable) == []


async def test_aof_off_is_named(redis: Redis) -> None:  # the test session's Redis: AOF off
    [warning] = await durability_warnings(redis)
    assert "AOF off" in warning and "appendonly yes" in warning


async def test_fsync_left_to_the_os_is_named(durable: Redis) -> None:
    await durable.config_set("appendfsync", "no")
    [warning] = await durability_warnings(durable)
    assert "appendfsync no" in warning


async def test_an_evicting_policy_is_named(durable: Redis) -> None:
    await durable.config_set("maxmemory", "1gb")
    await durable.config_set("maxmemory-policy", "allkeys-lru")
    [warning] = await durability_warnings(durable)
    assert "allkeys-lru" in warning and "noeviction" in warning
    await durable.config_set("maxmemory-policy", "noeviction")
    assert await durability_warnings(durable) == []
