"""Adapters' thread memory on Redis (``channels.services.threads``): one string per memo
with its TTL, named by a hash of instance and key, and per thread a set of its memos' names
(``memos_of``) so that erasure and retention delete them with the conversation
(``storage.lifecycle``); the conversation's status is read through the same ``threads`` hash
the ingest script writes."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from channels.services.threads import check_memo
from storage import keys

if TYPE_CHECKING:
    from storage.store import Store


def memo_key(instance: str, key: str) -> str:
    digest = hashlib.sha256(f"{instance}\x00{key}".encode()).hexdigest()[:40]
    return f"{keys.PREFIX}:memo:{digest}"


def memos_of(thread_field: str) -> str:
    """The set of memo names of one thread; ``thread_field`` is ``<instance>\\0<thread>``."""
    digest = hashlib.sha256(thread_field.encode()).hexdigest()[:40]
    return f"{keys.PREFIX}:memos-of:{digest}"


async def forget_thread(redis: Any, thread_field: str) -> int:
    """Delete every memo of a thread (and the set naming them); the keys deleted."""
    index = memos_of(thread_field)
    names = list(await redis.smembers(index))
    return int(await redis.delete(*names, index)) if names else int(await redis.delete(index))


class RedisThreads:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis

    async def recall(self, instance: str, key: str) -> bytes | None:
        value = await self.redis.get(memo_key(instance, key))
        return bytes(value) if value is not None else None

    async def remember(self, instance: str, key: str, value: bytes, *,
                       ttl_seconds: float, thread_id: str) -> None:
        check_memo(value, ttl_seconds)
        name = memo_key(instance, key)
        index = memos_of(f"{instance}\x00{thread_id}")
        ttl_ms = int(ttl_seconds * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(name, value, px=ttl_ms)
            pipe.sadd(index, name)
            # the index lives as long as its longest memo (GT: never shortened)
            pipe.pexpire(index, ttl_ms, gt=True)
            pipe.pexpire(index, ttl_ms, nx=True)
            await pipe.execute()

    async def thread_status(self, instance: str, thread_id: str) -> str | None:
        store = self.store
        k = store.partition_keys()[keys.partition_of(instance, thread_id, store.partitions)]
        conversation_id = await self.redis.hget(k.threads, f"{instance}\x00{thread_id}")
        if conversation_id is None:
            return None
        status = await self.redis.hget(k.conversation(conversation_id.decode()), "status")
        return status.decode() if status is not None else None
