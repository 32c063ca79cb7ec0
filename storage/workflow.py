"""What agents record on a conversation beside routing: private notes, the work status
(open / pending / snoozed until a time), priority, spam marks and blocked senders.

Notes live in their own list per conversation (``conv:<c>:notes``), never among the messages:
the sender only ever reads the message list and the outbox, so a note cannot reach a channel.
The other facts are fields of the conversation record (``storage.records.Conversation``), so
every list and view shows them without another read. Blocking is a field of the contact hash:
ingest.lua copies it onto the conversation of each message the contact sends, and the router
(``hub/router.py``) leaves such a message unrouted (``skip_blocked``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any, Literal

import msgspec
from redis.exceptions import ResponseError

from storage import keys
from storage.keys import PartitionKeys
from storage.lifecycle import conversations_of
from storage.records import Conversation
from storage.scripts import load_script
from storage.store import Store, UnknownConversation

MAX_NOTES = 1000
NOTE_MAX_CHARS = 10_000
WAKE_BATCH = 200

SetStatus = Literal["open", "pending", "snoozed"]


class Note(msgspec.Struct, frozen=True):
    """A private note: seen by agents, never sent. ``kind`` tells it from a message where a
    client shows both in one history."""

    id: str
    conversation_id: str
    author: str
    text: Annotated[str, msgspec.Meta(max_length=NOTE_MAX_CHARS)]
    created_at: float
    kind: Literal["note"] = "note"


class ConversationFull(Exception):
    """The conversation already keeps ``MAX_NOTES`` notes."""


class Resolved(Exception):
    """The conversation is resolved: only the buyer's next message reopens it."""


class UnknownContact(LookupError):
    """The id names no contact."""


_note_decoder = msgspec.json.Decoder(Note)


class Workflow:
    """Typed access to the workflow data of the store's Redis (one per process)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.script = load_script(store.redis, "workflow")

    def _keys(self, conversation_id: str) -> PartitionKeys:
        k = self.store.keys_for(conversation_id)
        if k is None:
            raise UnknownConversation(conversation_id)
        return k

    async def _call(self, keys: list[str], k: PartitionKeys, *args: Any) -> Any:
        try:
            return await self.script(keys=keys, args=[k.base, *args])
        except ResponseError as exc:
            if "NOCONV" in str(exc):
                raise UnknownConversation(keys[0]) from None
            if "RESOLVED" in str(exc):
                raise Resolved(keys[0]) from None
            raise

    # -- notes -------------------------------------------------------------------------------

    async def add_note(self, conversation_id: str, author: str, text: str) -> Note:
        k = self._keys(conversation_id)
        note = Note(id=f"note-{time.time_ns():x}", conversation_id=conversation_id,
                    author=author, text=text, created_at=time.time())
        count = await self._call([k.conversation(conversation_id),
                                  k.conversation_notes(conversation_id)], k,
                                 "note", msgspec.json.encode(note), MAX_NOTES)
        if int(count) < 0:
            raise ConversationFull(conversation_id)
        return note

    async def notes(self, conversation_id: str, *, offset: int = 0,
                    limit: int = 100) -> tuple[list[Note], int | None]:
        """Oldest first, ``limit`` from ``offset``; the next offset (None: no more)."""
        k = self._keys(conversation_id)
        raw = await self.store.redis.lrange(k.conversation_notes(conversation_id), offset,
                                            offset + limit)
        notes = [_note_decoder.decode(r) for r in raw[:limit]]
        return notes, offset + limit if len(raw) > limit else None

    # -- status and priority -----------------------------------------------------------------

    async def set_status(self, conversation_id: str, status: SetStatus,
                         snoozed_until: float | None = None) -> None:
        """Open, pending or snoozed until ``snoozed_until`` (resolving is routing's release,
        see hub/workflow_api.py). Raises Resolved for a resolved conversation."""
        k = self._keys(conversation_id)
        await self._call([k.conversation(conversation_id), k.snoozed], k, "status",
                         conversation_id, status,
                         repr(snoozed_until) if snoozed_until is not None else "")
        if self.store.events is not None:  # the live event log (storage/events.py)
            await self.store.events.append("status", conversation_id, action=status)

    async def wake_due(self, now: float | None = None) -> list[str]:
        """Open every snoozed conversation whose time has come; returns their ids."""
        now = time.time() if now is None else now
        woken: list[str] = []
        for k in self.store.partition_keys():
            while True:
                batch = await self._call([k.snoozed, k.snoozed], k, "wake", repr(now),
                                         WAKE_BATCH)
                woken += [b.decode() if isinstance(b, bytes) else str(b) for b in batch]
                for cid in woken[len(woken) - len(batch):]:
                    if self.store.events is not None:
                        await self.store.events.append("status", cid, action="woken")
                if len(batch) < WAKE_BATCH:
                    break
        return woken

    async def set_priority(self, conversation_id: str, priority: str) -> None:
        if not await self.store.update_conversation(conversation_id, {"priority": priority}):
            raise UnknownConversation(conversation_id)

    # -- spam and blocked senders ------------------------------------------------------------

    async def mark_spam(self, conversation_id: str, spam: bool) -> None:
        fields = {"spam": "1", "blocked": "1"} if spam else {"spam": "", "blocked": ""}
        if not await self.store.update_conversation(conversation_id, fields):
            raise UnknownConversation(conversation_id)

    async def block_contact(self, contact_id: str, blocked: bool, *, by: str) -> int:
        """Block (or unblock) a sender: their later messages are stored, not routed. Each
        partition keeps its own contact record of one (channel instance, handle), so every
        record of that sender is marked, and their existing conversations get (or lose) the
        ``blocked`` flag; returns how many conversations."""
        k = self.store.keys_for(contact_id)
        redis: Any = self.store.redis
        if k is None:
            raise UnknownContact(contact_id)
        instance, handle = await redis.hmget(k.contact(contact_id), "channel_instance",
                                             "handle")
        if handle is None:
            raise UnknownContact(contact_id)
        field = (instance or b"") + b"\x00" + handle
        digest = hashlib.sha256(field).hexdigest()
        if blocked:
            await redis.sadd(keys.BLOCKED_SENDERS, digest)
        else:
            await redis.srem(keys.BLOCKED_SENDERS, digest)
        flagged = 0
        for part in self.store.partition_keys():
            raw = await redis.hget(part.contacts, field)
            if raw is None:
                continue
            same = raw.decode()
            if blocked:
                await redis.hset(part.contact(same), mapping={
                    "blocked": "1", "blocked_at": repr(time.time()), "blocked_by": by})
            else:
                await redis.hdel(part.contact(same), "blocked", "blocked_at", "blocked_by")
            for cid in (await conversations_of(self.store, part, [same])).get(same, []):
                if await self.store.update_conversation(cid,
                                                        {"blocked": "1" if blocked else ""}):
                    flagged += 1
        return flagged

    async def contact_blocked(self, contact_id: str) -> bool:
        k = self.store.keys_for(contact_id)
        if k is None:
            return False
        return bool(await self.store.redis.hget(k.contact(contact_id), "blocked") == b"1")


def sender_digest(channel_instance: str, handle: str) -> str:
    return hashlib.sha256(f"{channel_instance}\x00{handle}".encode()).hexdigest()


async def blocked_sender(store: Store, conversation: Conversation) -> bool:
    """Is the conversation's sender on the block list? Asked by the router for a new
    conversation only: its contact record may be new in this partition, made after the block;
    every later message finds the flag ``skip_blocked`` copies onto it."""
    return bool(await store.redis.sismember(
        keys.BLOCKED_SENDERS,
        sender_digest(conversation.channel_instance, conversation.contact_handle)))


async def skip_blocked(store: Store, conversation: Conversation) -> None:
    """The router's answer to a blocked sender's message: stored, not routed, flagged. The
    flag goes onto the contact too, so ingest.lua sees it atomically from now on. A
    conversation routing never saw ("new") is recorded as resolved, so a blocked sender's new
    threads do not sit in the inbox as new work; after an unblock their next message routes
    it as usual."""
    fields = {"blocked": "1"}
    if conversation.status == "new":
        fields["status"] = "resolved"
    await store.update_conversation(conversation.id, fields)
    k = store.keys_for(conversation.contact_id)
    if k is not None and await store.redis.exists(k.contact(conversation.contact_id)):
        await store.redis.hset(k.contact(conversation.contact_id), "blocked", "1")
