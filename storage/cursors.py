"""Poll cursors on Redis (``channels.services.cursors``): one hash per polled account, written
only with the current fence of the lease that guards it (``lua/save_cursor.lua``)."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from channels.services.cursors import check_cursor, cursor_lease_name
from storage import keys
from storage.scripts import load_script


class RedisCursorStore:
    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis  # bytes replies; see storage.store
        self.save_script = load_script(redis, "save_cursor")

    async def load(self, instance: str, name: str) -> bytes | None:
        value = await self.redis.hget(keys.cursor(cursor_lease_name(instance, name)), "value")
        return bytes(value) if value is not None else None

    async def save(self, instance: str, name: str, value: bytes, *, fence: int) -> bool:
        check_cursor(value)
        lease_name = cursor_lease_name(instance, name)
        written = await self.save_script(
            keys=[keys.cursor(lease_name), keys.lease_fence(lease_name)],
            args=[fence, value, f"{time.time():.3f}"])
        return bool(written)
