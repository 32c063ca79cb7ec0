"""Opens the Redis the config points at: an external URL, or the embedded server.

Used by ``serve`` (which owns the embedded server for its lifetime) and by CLI commands (which
reuse a running hub's server, or start one just for the command when no hub is running).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from hub.config import Config
from storage.embedded import EmbeddedRedis


@contextlib.asynccontextmanager
async def open_redis(config: Config) -> AsyncIterator[tuple[Redis, EmbeddedRedis | None]]:
    """Yield a client plus the embedded server we started (None if we did not start one)."""
    storage = config.storage
    owned: EmbeddedRedis | None = None
    common = {
        "socket_timeout": storage.socket_timeout_seconds,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    if storage.redis_url:
        password = storage.redis_password.reveal() if storage.redis_password else None
        client = Redis.from_url(storage.redis_url, password=password, **common)  # type: ignore[arg-type]
    else:
        embedded = EmbeddedRedis(config.data_dir, appendfsync=storage.appendfsync)
        if not await embedded.already_running():
            await embedded.start()
            owned = embedded
        client = Redis(unix_socket_path=str(embedded.socket_path), **common)  # type: ignore[arg-type]
    try:
        yield client, owned
    finally:
        await client.aclose()
        if owned is not None:
            await owned.stop()
