"""What every CLI command that reads or writes Redis shares: the connection with the schema
check (a newer release's data is refused, not misread), and how times are printed."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hub.config import LoadedConfig
from hub.redis_connection import open_redis
from storage.schema import ensure_schema

T = TypeVar("T")


async def with_redis(loaded: LoadedConfig, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action`` on a client of the configured Redis once its schema is known good."""
    config = loaded.config
    async with open_redis(config) as (client, _owned):
        await ensure_schema(client, partitions=config.storage.partitions)
        return await action(client)


def stamp(t: float | None) -> str:
    """A UNIX time in local time for a person reading a terminal; ``-`` for none."""
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
