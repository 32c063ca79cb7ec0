"""Opens the Redis the config points at: an external URL, or the embedded server.

Used by ``serve`` (which owns the embedded server for its lifetime) and by CLI commands (which
reuse a running hub's server, or start one just for the command when no hub is running).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from hub.config import Config
from storage.embedded import EmbeddedRedis


@contextlib.asynccontextmanager
async def open_redis(config: Config) -> AsyncIterator[tuple[Redis, EmbeddedRedis | None]]:
    """Yield a client plus the embedded server we started (None if we did not start one)."""
    storage = config.storage
    owned: EmbeddedRedis | None = None
    # A blocking pool makes a burst of requests wait for a connection (bounded by
    # pool_timeout) instead of failing with "Too many connections".
    common: dict[str, Any] = {
        "socket_timeout": storage.socket_timeout_seconds,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
        "max_connections": storage.max_connections,
        "timeout": storage.pool_timeout_seconds,
    }
    if storage.redis_url:
        if storage.redis_password:
            common["password"] = storage.redis_password.reveal()
        pool = BlockingConnectionPool.from_url(storage.redis_url, **common)
    else:
        embedded = EmbeddedRedis(config.data_dir, appendfsync=storage.appendfsync)
        if not await embedded.already_running():
            await embedded.start()
            owned = embedded
        pool = BlockingConnectionPool.from_url(embedded.url, **common)
    client = Redis(connection_pool=pool)
    try:
        yield client, owned
    finally:
        await client.aclose()
        await pool.disconnect()
        if owned is not None:
            await owned.stop()
