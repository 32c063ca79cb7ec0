"""Buyers' edits on Redis (``channels.services.edits``): the message is found through the
same dedupe marker the ingest script writes, in the partition of its thread; the edit lives
in the message's hash next to the frozen payload (``edited_text``, ``edited_at``), so the
original stays and erasure deletes both with the message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from channels.models import MessageEdit
from storage import keys
from storage.scripts import load_script

if TYPE_CHECKING:
    from storage.store import Store

MAX_EDIT_CHARS = 100_000


class RedisEdits:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.script = load_script(store.redis, "edit_message")

    async def apply(self, edit: MessageEdit) -> bool:
        store = self.store
        p = keys.partition_of(edit.channel_instance, edit.thread_id, store.partitions)
        k = store.partition_keys()[p]
        found = await self.script(
            keys=[k.seen(edit.channel_instance, edit.provider_message_id)],
            args=[k.base, edit.text[:MAX_EDIT_CHARS], repr(float(edit.edited_at))])
        return int(found) != 0
