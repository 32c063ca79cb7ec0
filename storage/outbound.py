"""Conversations the seller starts: their record, made as ingest makes a new thread's.

The record lives in the partition of its thread (``keys.partition_of``, as ingest places it),
so the buyer's answer finds it through the same ``threads`` hash and continues it. The first
message is not written here: the caller queues it with ``Store.enqueue_reply`` under the start
key, the normal exactly-once send path, so delivery states, retries and the dead-letter queue
work as for any reply (``storage/lua/start_conversation.lua`` says why the two steps are safe).
"""

from __future__ import annotations

import time

import msgspec

from storage import keys
from storage.scripts import load_script
from storage.store import Store


class Started(msgspec.Struct, frozen=True):
    """``new``: this call made the record. ``resumable``: the record was made by a request
    with the same start key (a retry), so its first message may still be queued."""

    conversation_id: str
    new: bool
    resumable: bool


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Outbound:
    """Starts conversations on the store's Redis (one per process)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.script = load_script(store.redis, "start_conversation")

    async def start(self, *, channel_type: str, channel_instance: str, thread_id: str,
                    handle: str, name: str | None, start_key: str, agent: str) -> Started:
        """The conversation of (instance, thread), made now unless it exists."""
        p = keys.partition_of(channel_instance, thread_id, self.store.partitions)
        k = self.store.partition_keys()[p]
        cid, new, same = await self.script(
            keys=[k.threads, k.contacts, k.conversations],
            args=[k.base, keys.new_id(p), keys.new_id(p),
                  f"{channel_instance}\x00{thread_id}", f"{channel_instance}\x00{handle}",
                  repr(time.time()), channel_type, channel_instance, thread_id, handle,
                  name or "", start_key, agent])
        return Started(_s(cid), bool(new), bool(same))
