"""Reads for a conversation's history view beside its messages: the order it is about and its
private notes, a slice at a time.

The order reference is what a channel parsed at ingest (``ChannelHints.order_id``), kept only
in the frozen payload of each inbound message, so it is read from the newest inbound messages
(two round trips, however many are looked at). Notes are the append-only list
``conv:<c>:notes`` (storage/workflow.py): an index into it is stable, which is what lets a
cursor continue them.
"""

from __future__ import annotations

import msgspec

from channels.models import InboundMessage
from storage.store import Store, UnknownConversation
from storage.workflow import Note

# How far back an order reference is looked for: a marketplace gives it on every message of an
# order's thread, so the newest few carry it when any does.
ORDER_LOOKBACK_MESSAGES = 200

_inbound = msgspec.msgpack.Decoder(InboundMessage)
_note = msgspec.json.Decoder(Note)


async def order_reference(store: Store, conversation_id: str,
                          lookback: int = ORDER_LOOKBACK_MESSAGES) -> str | None:
    """The order id the newest inbound message that has one was parsed with, or None."""
    k = store.keys_for(conversation_id)
    if k is None:
        return None
    ids = await store.redis.zrevrange(k.conversation_messages(conversation_id), 0,
                                      lookback - 1)
    if not ids:
        return None
    async with store.redis.pipeline(transaction=False) as pipe:
        for mid in ids:
            pipe.hmget(k.message(mid.decode() if isinstance(mid, bytes) else mid),
                       "direction", "data")
        rows = await pipe.execute()
    for direction, data in rows:
        if direction != b"in" or data is None:
            continue
        order_id = _inbound.decode(data).hints.order_id
        if order_id:
            return order_id
    return None


async def note_count(store: Store, conversation_id: str) -> int:
    k = store.keys_for(conversation_id)
    if k is None:
        raise UnknownConversation(conversation_id)
    return int(await store.redis.llen(k.conversation_notes(conversation_id)))


async def notes_slice(store: Store, conversation_id: str, start: int, stop: int) -> list[Note]:
    """Notes ``start`` through ``stop`` (inclusive, oldest first; empty when out of range)."""
    k = store.keys_for(conversation_id)
    if k is None:
        raise UnknownConversation(conversation_id)
    if stop < start or stop < 0:
        return []
    raw = await store.redis.lrange(k.conversation_notes(conversation_id), max(start, 0), stop)
    return [_note.decode(r) for r in raw]
