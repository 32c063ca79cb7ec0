"""People: one buyer across channels, above the per-channel contacts of ``storage.store``.

A contact is one sender on one channel instance (in one partition); a person is the set of
contacts the same sender identity links (``storage.identifiers``: an email address, an E.164
phone number, a marketplace's buyer id), plus what supervisors merged and split by hand. Every
write is one command of ``storage/lua/people.lua`` under the ``{pp}`` hash tag, so two hub
processes linking the same buyer at once make one person, on Redis Cluster too.

The router links each stored message's contact after routing it (``hub/router.py``): off the
webhook's path, at least once (a crash leaves the stream entry pending and it is linked when
reclaimed), and idempotent. A person keeps its conversations by last activity, so a history
page is one range read. Conversations deleted by retention leave it with them
(``forget_conversations``, called by ``storage.lifecycle.delete_conversations``; a read prunes
any it still meets), and an erased contact's links and identifiers go with it (``forget``,
called by ``storage.lifecycle.delete_contact``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal

import msgspec
from redis.exceptions import ResponseError

from channels.models import InboundMessage
from storage.identifiers import identifiers, shown
from storage.keys import PREFIX
from storage.records import Conversation
from storage.scripts import load_script
from storage.store import Position, Store

BASE = f"{PREFIX}:{{pp}}:"
IDENTS = BASE + "ident"
CONTACT_PERSON = BASE + "cp"
_PERSON_ID = re.compile(r"pe\.[0-9a-f]{16,40}")
SCAN_LIMIT = 1000  # conversations one scoped page looks at, at most (then a short page)


def new_person_id() -> str:
    """Time-ordered and random, like our other ids, but in no partition: ``pe.<hex>``."""
    return f"pe.{time.time_ns():016x}{os.urandom(5).hex()}"


def is_person_id(value: str) -> bool:
    return len(value) <= 43 and _PERSON_ID.fullmatch(value) is not None


def person_key(person_id: str, suffix: str = "") -> str:
    return f"{BASE}p:{person_id}{suffix}"


def contact_key(contact_id: str, suffix: str) -> str:
    return f"{BASE}c:{contact_id}{suffix}"


class UnknownPerson(LookupError):
    """The id names no person (never did, or every contact of it was erased)."""


class SamePerson(ValueError):
    """A merge of a person into itself (or into what it was already merged into)."""


class NotLinked(LookupError):
    """The contact is linked to no person (no message of it was linked yet, or erased)."""


class Alone(ValueError):
    """An unmerge of the only sender of a person: there is nothing to split it from."""


class Identifier(msgspec.Struct, frozen=True):
    """A sender identity that links contacts: ``email`` (an address), ``phone`` (E.164) or
    ``buyer`` (``<marketplace>:<buyer id>``)."""

    kind: Literal["email", "phone", "buyer"]
    value: str


class LinkedContact(msgspec.Struct, frozen=True):
    """One per-channel contact of the person (its id is what block/unblock/erase/unmerge
    take)."""

    id: str
    channel: str
    channel_instance: str
    handle: str
    name: str | None
    identifiers: list[Identifier]


class PersonEvent(msgspec.Struct, frozen=True):
    """A supervisor's merge or unmerge: ``merge`` (``person`` was merged into this one),
    ``merged_into``, ``unmerge`` (``person`` was split out of this one), ``split_from``."""

    action: Literal["merge", "merged_into", "unmerge", "split_from"]
    by: str
    at: float
    person: str


class Person(msgspec.Struct, frozen=True):
    """A buyer across channels: their contacts, the identifiers that link them, and the manual
    merges and unmerges that shaped the person (oldest first, the last 200)."""

    id: str
    created_at: float
    updated_at: float
    contacts: list[LinkedContact]
    identifiers: list[Identifier]
    history: list[PersonEvent]
    split_from: str | None = None


class HistoryPage(msgspec.Struct, frozen=True):
    conversations: list[Conversation]
    next: Position | None


Visible = Callable[[Sequence[Conversation]], Awaitable[set[str]]]


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _f(value: bytes | str | None) -> float:
    text = _s(value)
    return float(text) if text else 0.0


_event_decoder = msgspec.json.Decoder(PersonEvent)


def _identifier(raw: str) -> Identifier | None:
    pair = shown(raw)
    if pair is None:
        return None
    return msgspec.convert({"kind": pair[0], "value": pair[1]}, Identifier)


class People:
    """Typed access to the person layer (one per process, or per app; cheap to make)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis
        self.script = load_script(store.redis, "people")

    async def _call(self, *args: Any) -> Any:
        return await self.script(keys=[IDENTS, CONTACT_PERSON], args=[BASE, *args])

    # -- linking ---------------------------------------------------------------------------

    async def link(self, contact_id: str, idents: Sequence[str], *,
                   conversation_id: str = "", activity: float = 0.0) -> str:
        """Link the contact to the person its identifiers name (a new person when none does),
        and record the conversation's activity; returns the person id. Idempotent."""
        person = await self._call("link", repr(time.time()), new_person_id(), contact_id,
                                  conversation_id, repr(float(activity)), *idents)
        return _s(person) or ""

    async def link_conversation(self, conversation: Conversation,
                                message: InboundMessage | None = None) -> str:
        """Link a conversation's contact by its sender identity: the message's when given
        (the router's), else what the conversation record holds (a record stored before
        linking existed, linked when first asked for)."""
        no_reply = bool(conversation.replies_disabled
                        or (message is not None and message.hints.replies_disabled))
        idents = identifiers(conversation.channel, conversation.channel_instance,
                             message.sender_handle if message else conversation.contact_handle,
                             no_reply=no_reply)
        activity = max(conversation.updated_at, message.received_at if message else 0.0)
        return await self.link(conversation.contact_id, idents,
                               conversation_id=conversation.id, activity=activity)

    async def forget(self, contact_id: str) -> None:
        """Remove an erased (or retired) contact: its links, its conversations, and each
        identifier no other contact of the person carries; a person left with no contact
        is deleted."""
        await self._call("forget", contact_id)

    async def forget_conversations(self, owned: Iterable[tuple[str, str]]) -> None:
        """Remove conversations being deleted (``(contact id, conversation id)`` pairs) from
        their contact's and person's history: retention deletes conversations one by one."""
        by_contact: dict[str, list[str]] = {}
        for contact_id, conversation_id in owned:
            by_contact.setdefault(contact_id, []).append(conversation_id)
        for contact_id, conversation_ids in by_contact.items():
            await self._call("drop", contact_id, *conversation_ids)

    # -- manual merge and unmerge ----------------------------------------------------------

    async def merge(self, into: str, other: str, *, by: str) -> str:
        """Merge person ``other`` into ``into`` (who and when are recorded on both)."""
        try:
            return _s(await self._call("merge", repr(time.time()), into, other, by)) or ""
        except ResponseError as exc:
            if "NOPERSON" in str(exc):
                raise UnknownPerson(other) from None
            if "SAME" in str(exc):
                raise SamePerson(into) from None
            raise

    async def unmerge(self, contact_id: str, *, by: str) -> str:
        """Split the contact (with the same sender's contacts in other partitions) out into a
        person of its own; returns its id. Automatic linking never joins them back."""
        try:
            return _s(await self._call("unmerge", repr(time.time()), contact_id,
                                       new_person_id(), by)) or ""
        except ResponseError as exc:
            if "NOCONTACT" in str(exc):
                raise NotLinked(contact_id) from None
            if "ALONE" in str(exc):
                raise Alone(contact_id) from None
            raise

    # -- reads -----------------------------------------------------------------------------

    async def person_of_contact(self, contact_id: str) -> str | None:
        return await self.resolve(_s(await self.redis.hget(CONTACT_PERSON, contact_id)))

    async def resolve(self, person_id: str | None) -> str | None:
        """The person as it stands now (a merged id names its survivor); None = none."""
        for _ in range(32):
            if person_id is None or not is_person_id(person_id):
                return None
            pid, into = await self.redis.hmget(person_key(person_id), "id", "merged_into")
            if pid is None:
                return None
            if into is None:
                return person_id
            person_id = _s(into)
        return None

    async def get(self, person_id: str) -> Person:
        """The person (following a merge to its survivor), with its contacts as their
        partitions hold them."""
        pid = await self.resolve(person_id)
        if pid is None:
            raise UnknownPerson(person_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(person_key(pid))
            pipe.smembers(person_key(pid, ":contacts"))
            pipe.lrange(person_key(pid, ":log"), 0, -1)
            record, members, log = await pipe.execute()
        contact_ids = sorted(_s(m) or "" for m in members)
        wanted = [(c, k) for c in contact_ids if (k := self.store.keys_for(c)) is not None]
        async with self.redis.pipeline(transaction=False) as pipe:
            for c, k in wanted:
                pipe.hmget(k.contact(c), "channel", "channel_instance", "handle", "name")
                pipe.smembers(contact_key(c, ":ids"))
            rows = await pipe.execute()
        contacts: list[LinkedContact] = []
        seen: dict[tuple[str, str], Identifier] = {}
        for i, (c, _) in enumerate(wanted):
            (channel, instance, handle, name), idents = rows[2 * i], rows[2 * i + 1]
            if handle is None:
                continue  # deleted in its partition a moment ago; forget follows
            mine = [ident for raw in sorted(_s(x) or "" for x in idents)
                    if (ident := _identifier(raw)) is not None]
            for ident in mine:
                seen.setdefault((ident.kind, ident.value), ident)
            contacts.append(LinkedContact(c, _s(channel) or "", _s(instance) or "",
                                          _s(handle) or "", _s(name) or None, mine))
        return Person(
            id=pid, created_at=_f(record.get(b"created_at")),
            updated_at=_f(record.get(b"updated_at")), contacts=contacts,
            identifiers=[seen[k] for k in sorted(seen)],
            history=[_event_decoder.decode(e) for e in log],
            split_from=_s(record.get(b"split_from")),
        )

    async def page(self, person_id: str, *, limit: int = 20, after: Position | None = None,
                   visible: Visible | None = None) -> HistoryPage:
        """The person's conversations across channels, most recently active first, after
        ``after``; ``visible`` keeps only those the caller may see (an agent's scope). Looks
        at no more than ``SCAN_LIMIT`` conversations: a scoped page may then be short, with a
        ``next`` to go on from."""
        pid = await self.resolve(person_id)
        if pid is None:
            raise UnknownPerson(person_id)
        key = person_key(pid, ":convs")
        out: list[Conversation] = []
        scanned = 0
        cursor = after
        while scanned < SCAN_LIMIT:
            batch = await self._after(key, cursor, max(limit + 1, 50))
            if not batch:
                return HistoryPage(out, None)
            scanned += len(batch)
            loaded = {c.id: c for c in await self.store.get_conversations(i for i, _ in batch)}
            gone = [i for i, _ in batch if i not in loaded]
            if gone:
                await self._call("prune", pid, *gone)
            candidates = [loaded[i] for i, _ in batch if i in loaded]
            allowed = (await visible(candidates) if visible is not None
                       else {c.id for c in candidates})
            for cid, score in batch:
                if cid in allowed:
                    if len(out) == limit:
                        return HistoryPage(out, cursor)
                    out.append(loaded[cid])
                cursor = Position(repr(score), cid)
        return HistoryPage(out, cursor)

    async def _after(self, key: str, after: Position | None,
                     count: int) -> list[tuple[str, float]]:
        """Up to ``count`` members after ``after`` in (score, id) descending order, the order
        ZREVRANGE gives: the rest of ``after``'s score (ids below its id), then lower scores."""
        if after is None:
            rows = await self.redis.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count,
                                                     withscores=True)
            return [(_s(m) or "", float(s)) for m, s in rows]
        ties = await self.redis.zrevrangebyscore(key, after.score, after.score, withscores=True)
        out = [(_s(m) or "", float(s)) for m, s in ties if after.id and (_s(m) or "") < after.id]
        out = out[:count]
        if len(out) < count:
            rows = await self.redis.zrevrangebyscore(key, f"({after.score}", "-inf", start=0,
                                                     num=count - len(out), withscores=True)
            out += [(_s(m) or "", float(s)) for m, s in rows]
        return out
