"""The Lua scripts in ``storage/lua``, read once and called by SHA.

redis-py's ``Script`` runs EVALSHA and reloads the source on ``NOSCRIPT`` (after a Redis
restart or failover), so callers never ship the script text on the hot path.
"""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    return files("storage").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def load_script(redis: Redis, name: str) -> AsyncScript:
    return redis.register_script(_source(name))


class Scripts:
    """One handle per script, bound to a client."""

    def __init__(self, redis: Redis) -> None:
        self.ingest: AsyncScript = redis.register_script(_source("ingest"))
        self.enqueue_reply: AsyncScript = redis.register_script(_source("enqueue_reply"))
        self.release_retries: AsyncScript = redis.register_script(_source("release_retries"))
        self.retry_dead: AsyncScript = redis.register_script(_source("retry_dead"))
        self.dead_letter: AsyncScript = redis.register_script(_source("dead_letter"))
        self.claim_send: AsyncScript = redis.register_script(_source("claim_send"))
        self.conversations: AsyncScript = redis.register_script(_source("conversations"))
        self.deliveries: AsyncScript = redis.register_script(_source("deliveries"))
