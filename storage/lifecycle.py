"""Deleting what the hub stores about a buyer: retention of resolved conversations and erasure
of a contact (GDPR art. 17, LGPD art. 18).

What a conversation owns is listed here, in one place; code that adds a key, an index or a
stream field naming a conversation, a message or a contact adds it to this list (and to the
erasure test, which SCANs every key and value for anything of the buyer's):

========================================  ======================================================
partition ``ih:{pN}:``                     how it is removed
========================================  ======================================================
``conv:<c>``                               deleted (first, atomically with the thread field:
                                           ``detach_conversation.lua``)
``idx:<field>:<value>`` members ``<c>``    removed in that same step (the record's ``_idx``
                                           field lists them; see ``conversations.lua``)
``threads`` field ``<instance>\\0<thread>``  deleted in the same atomic step
``detached`` field ``<c>`` -> contact       set by that step, deleted last
``conv:<c>:msgs``                          deleted (last but one: it lists the messages)
``conv:<c>:notes``                         deleted with it (agents' notes, storage/workflow.py)
``snoozed`` zset member ``<c>``            removed with it
``conv:<c>:terms``, ``idx:term:<t>``         search postings: the conversation leaves each
members ``<c>``                            posting its ``terms`` hash lists, then it is deleted
                                           (``storage/search.py``)
``msg:<m>`` per message                    deleted (payload, attachments' metadata, delivery)
``dlv:``/``early:<instance>\\0<id>``         deleted per outbound message (receipt index and
                                           receipts parked here; copies parked in other
                                           partitions name no buyer and expire in 15 min)
``seen:<instance>\\0<provider id>``         deleted per inbound message (dedupe marker)
``replykey:<c>\\0<client key>``             deleted (SCAN by pattern)
``retry`` zset members ``<m>``             removed
``inbound``/``outbox``/``dlq`` entries      removed (XDEL) when they name ``<c>`` or a ``<m>``
``convs`` zset member ``<c>``              removed last: a crashed pass is found and finished
``contact:<id>``, ``contacts`` field        deleted with the contact (erasure; retention when
``<instance>\\0<handle>``                   the contact has no conversation left)
========================================  ======================================================

========================================  ======================================================
routing ``ih:{r}:``
========================================  ======================================================
``rc:<c>``, ``rc:<c>:log``                 deleted
``rc:<c>:routed:<provider id>``            deleted (SCAN by pattern)
``pool:*:wait:*`` members ``<c>``           removed (SCAN the pools)
``agent:*:convs`` members ``<c>``           removed (erasure first releases the agent's
                                           capacity through the routing engine)
``timers``, ``timers:inflight`` members     removed (ZSCAN ``*|<c>|*``)
``sla:due`` member ``<c>``                  removed (release already took it out; kept safe)
``events`` entries with ``conv = <c>``      removed (XDEL)
``eventlog`` entries naming ``<c>`` or a   removed (XDEL, one pass per batch: the live
message of it                              event log, storage/events.py)
``eventlog:holders`` field ``<c>``          removed
``sticky:<contact>``                       deleted with the contact
========================================  ======================================================

People ``ih:{pp}:`` (``storage/people.py``): the contact's ``cp`` field, ``c:<contact>:ids``
and ``c:<contact>:convs``, its member of ``p:<person>:contacts`` and its conversations in
``p:<person>:convs``, and each ``ident`` field (its email, phone, buyer id) that no other
contact of the person carries are deleted with the contact, before its partition record; a
person left with no contact is deleted. A deleted conversation leaves ``c:<contact>:convs``
and ``p:<person>:convs`` in ``delete_conversations``.

Adapters' thread memory (``storage/threads.py``): ``ih:memos-of:<hash(instance, thread)>``
and every ``ih:memo:<hash>`` it names (an email's subject, sender and headers) are deleted with
the conversation.

Receipt watermarks (``storage/deliveries.py``): ``ih:sentto:<hash(instance, recipient)>`` holds
the provider ids of our sends to one recipient (no text, no handle) and expires 30 days after
the last send; it is left to expire.

Global: quarantine entries of the contact's channel instance whose raw body names the buyer's
handle or one of the ids above are removed (erasure only).

Attachments (``storage/attachments.py``): each message leaves the reference set
``ih:{pN}:blob:<sha>`` of every file it names, the conversation's pending uploads
(``upload:<c>\0<id>``) are deleted with their references, and every file left with no
reference in any partition (and no pin of a store in progress) is deleted, before the message
records go (a crash half way leaves references the attachment sweep prunes). A file another
buyer's message also names is kept: content-addressed files are shared by identical bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from channels.models import Attachment, InboundMessage, OutboundReply
from storage import keys, search
from storage.attachments import sha_of
from storage.keys import PartitionKeys
from storage.kpis import state_key as kpi_state_key
from storage.people import People
from storage.scripts import load_script
from storage.store import Store
from storage.threads import forget_thread

log = logging.getLogger(__name__)

_inbound = msgspec.msgpack.Decoder(InboundMessage)
_outbound = msgspec.msgpack.Decoder(OutboundReply)
_BATCH = 500
AUDIT_MAXLEN = 100_000


class ConversationFootprint(msgspec.Struct):
    """Everything that names one conversation, read before anything is deleted."""

    conversation_id: str
    partition: int
    thread_field: str
    contact_id: str
    message_ids: list[str]
    seen_keys: list[str]
    provider_ids: list[str]
    # attachment file key -> the ids of this conversation's messages that name it
    blobs: dict[str, list[str]] = {}
    delivery_keys: list[str] = msgspec.field(default_factory=list)


class Contact(msgspec.Struct, frozen=True):
    id: str
    partition: int
    channel_instance: str
    handle: str


class ErasureCounts(msgspec.Struct):
    """How much was deleted: the whole content of an audit entry besides who and when."""

    conversations: int = 0
    messages: int = 0
    keys: int = 0
    entries: int = 0
    quarantined: int = 0
    files: int = 0


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def footprint(store: Store, conversation_id: str) -> ConversationFootprint | None:
    k = store.keys_for(conversation_id)
    if k is None:
        return None
    redis: Any = store.redis
    raw = await redis.hgetall(k.conversation(conversation_id))
    contact_id = _s(raw.get(b"contact_id")) or _s(await redis.hget(k.detached, conversation_id))
    message_ids = [_s(m) for m in await redis.zrange(k.conversation_messages(conversation_id),
                                                     0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for mid in message_ids:
            pipe.hmget(k.message(mid), "direction", "data", "provider_message_id")
        rows = await pipe.execute() if message_ids else []
    seen_keys: list[str] = []
    provider_ids: list[str] = []
    blobs: dict[str, list[str]] = {}
    instance = _s(raw.get(b"channel_instance"))
    for mid, (direction, data, _sent_as) in zip(message_ids, rows, strict=True):
        attachments: tuple[Attachment, ...] = ()
        if direction == b"in" and data:
            message = _inbound.decode(data)
            instance = instance or message.channel_instance
            seen_keys.append(k.seen(message.channel_instance, message.provider_message_id))
            provider_ids.append(message.provider_message_id)
            attachments = message.attachments
        elif direction == b"out" and data:
            attachments = _outbound.decode(data).attachments
        for attachment in attachments:
            sha = sha_of(attachment.storage_ref)
            if sha is not None:
                blobs.setdefault(sha, []).append(mid)
    delivery_keys: list[str] = []
    for mid, (direction, _data, sent_as) in zip(message_ids, rows, strict=True):
        if direction == b"out":
            delivery_keys.append(k.early_receipts(instance, mid))
            if sent_as:
                delivery_keys += [k.delivery_index(instance, _s(sent_as)),
                                  k.early_receipts(instance, _s(sent_as))]
    return ConversationFootprint(
        conversation_id=conversation_id, partition=k.partition,
        thread_field=f"{instance}\x00{_s(raw.get(b'thread_id'))}",
        contact_id=contact_id, message_ids=message_ids,
        seen_keys=seen_keys, provider_ids=provider_ids, blobs=blobs,
        delivery_keys=delivery_keys,
    )


async def _scan_delete(redis: Any, pattern: str) -> int:
    found = [key async for key in redis.scan_iter(match=pattern, count=1000)]
    return int(await redis.delete(*found)) if found else 0


async def _xdel_naming(redis: Any, stream: str, values: set[bytes],
                       fields: Sequence[bytes]) -> int:
    """Remove every entry of ``stream`` whose ``fields`` hold one of ``values``."""
    removed = 0
    start = "-"
    while True:
        rows = await redis.xrange(stream, start, "+", count=1000)
        doomed = [eid for eid, f in rows if any(f.get(name) in values for name in fields)]
        if doomed:
            removed += int(await redis.xdel(stream, *doomed))
        if len(rows) < 1000:
            return removed
        start = "(" + _s(rows[-1][0])


async def _remove_routing(redis: Any, conversation_ids: set[str]) -> int:
    """Routing keys and members naming the conversations (see the table above)."""
    removed = 0
    for cid in conversation_ids:
        removed += int(await redis.delete(keys.routing_state(cid), keys.routing_log(cid)))
        removed += await _scan_delete(redis, keys.routing_markers_pattern(cid))
        for timers in (keys.ROUTING_TIMERS, keys.ROUTING_TIMERS_INFLIGHT):
            members = [m async for m, _ in redis.zscan_iter(timers, match=f"*|{cid}|*")]
            if members:
                removed += int(await redis.zrem(timers, *members))
    members = list(conversation_ids)
    if members:
        removed += int(await redis.zrem(keys.ROUTING_SLA_DUE, *members))
    for pattern, remove in ((keys.ROUTING_WAIT_PATTERN, "zrem"),
                            (keys.ROUTING_AGENT_CONVS_PATTERN, "srem")):
        async for key in redis.scan_iter(match=pattern, count=1000):
            removed += int(await getattr(redis, remove)(key, *members))
    removed += await _xdel_naming(redis, keys.ROUTING_EVENTS,
                                  {c.encode() for c in conversation_ids}, [b"conv"])
    return removed


async def delete_conversations(store: Store, prints: Sequence[ConversationFootprint]
                               ) -> ErasureCounts:
    """Delete detached conversations and all they own; safe to run again after a crash."""
    counts = ErasureCounts()
    if not prints:
        return counts
    redis: Any = store.redis
    by_part: dict[int, list[ConversationFootprint]] = {}
    for fp in prints:
        by_part.setdefault(fp.partition, []).append(fp)
    for partition, group in by_part.items():
        k = store.partition_keys()[partition]
        conv_ids = {fp.conversation_id for fp in group}
        msg_ids = {m for fp in group for m in fp.message_ids}
        counts.files += await _release_files(store, k, group)
        owned = [key for fp in group for key in
                 (*(k.message(m) for m in fp.message_ids), *fp.seen_keys,
                  *fp.delivery_keys)]
        for i in range(0, len(owned), _BATCH):
            counts.keys += int(await redis.delete(*owned[i:i + _BATCH]))
        for cid in conv_ids:
            counts.keys += await _scan_delete(redis, k.reply_keys_pattern(cid))
        for fp in group:  # what adapters remembered of the thread (storage/threads.py)
            counts.keys += await forget_thread(redis, fp.thread_field)
        if msg_ids:
            await redis.zrem(k.retry, *msg_ids)
        named = {v.encode() for v in conv_ids | msg_ids}
        for stream in (k.inbound, k.outbox, k.dlq):
            counts.entries += await _xdel_naming(redis, stream, named, [b"conv", b"msg"])
        counts.entries += await _remove_routing(redis, conv_ids)
        counts.keys += await search.forget_conversations(redis, k, conv_ids)
        # The KPI aggregator's per-conversation clocks (storage/kpis.py); its hour buckets
        # are sums with no conversation in them and stay.
        counts.keys += int(await redis.delete(*(kpi_state_key(c) for c in conv_ids)))
        await People(store).forget_conversations(
            (fp.contact_id, fp.conversation_id) for fp in group if fp.contact_id)
        counts.keys += int(await redis.delete(*(k.conversation_messages(c) for c in conv_ids),
                                              *(k.conversation_notes(c) for c in conv_ids)))
        await redis.zrem(k.snoozed, *conv_ids)
        await redis.zrem(k.conversations, *conv_ids)
        await redis.hdel(k.detached, *conv_ids)
        counts.conversations += len(conv_ids)
        counts.messages += len(msg_ids)
    # The live event log (storage/events.py) names conversations and messages by id: one
    # pass over it for the whole batch, and the log's record of who held each conversation.
    all_convs = {fp.conversation_id for fp in prints}
    named_all = {v.encode() for v in all_convs | {m for fp in prints for m in fp.message_ids}}
    counts.entries += await _xdel_naming(redis, keys.EVENT_LOG, named_all, [b"conv", b"msg"])
    await redis.hdel(keys.EVENT_HOLDERS, *all_convs)
    return counts


async def _release_files(store: Store, k: PartitionKeys,
                         group: Sequence[ConversationFootprint]) -> int:
    """The messages and pending uploads leave their files' reference sets; files nothing
    references any more are deleted. Returns how many files were deleted."""
    redis: Any = store.redis
    shas: list[str] = []
    for fp in group:
        for sha, mids in fp.blobs.items():
            await redis.srem(k.blob_refs(sha), *mids)
            shas.append(sha)
        if store.attachments is not None:
            shas += await store.attachments.drop_uploads(k, fp.conversation_id)
        else:
            await _scan_delete(redis, k.uploads_pattern(fp.conversation_id))
    if store.attachments is None or not shas:
        return 0
    return await store.attachments.release(shas)


async def detach(store: Store, fp: ConversationFootprint, *, only_resolved_before: float | None
                 ) -> bool:
    """Atomically unlink the conversation from its thread and delete its record."""
    k = store.partition_keys()[fp.partition]
    script = load_script(store.redis, "detach_conversation")
    return bool(await script(
        keys=[k.conversation(fp.conversation_id), k.threads, k.detached],
        args=[fp.thread_field, fp.conversation_id,
              "resolved" if only_resolved_before is not None else "",
              repr(only_resolved_before or 0.0), k.base],
    ))


# -- contacts ---------------------------------------------------------------------------------


async def get_contact(store: Store, contact_id: str) -> Contact | None:
    k = store.keys_for(contact_id)
    if k is None:
        return None
    instance, handle = await store.redis.hmget(k.contact(contact_id), "channel_instance", "handle")
    if handle is None:
        return None
    return Contact(contact_id, k.partition, _s(instance), _s(handle))


async def conversations_of(store: Store, k: PartitionKeys,
                           contact_ids: Iterable[str]) -> dict[str, list[str]]:
    """Conversation ids per contact, by one walk over the partition's conversations (there is
    no contact -> conversations index; this runs for erasure and retention only)."""
    wanted = set(contact_ids)
    found: dict[str, list[str]] = {c: [] for c in wanted}
    redis: Any = store.redis
    batch: list[str] = []

    async def flush() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for cid in batch:
                pipe.hget(k.conversation(cid), "contact_id")
                pipe.hget(k.detached, cid)  # a deletion that was interrupted
            owners = await pipe.execute()
        for i, cid in enumerate(batch):
            owner = _s(owners[2 * i]) or _s(owners[2 * i + 1])
            if owner in wanted:
                found[owner].append(cid)
        batch.clear()

    async for member, _score in redis.zscan_iter(k.conversations, count=1000):
        batch.append(_s(member))
        if len(batch) >= _BATCH:
            await flush()
    if batch:
        await flush()
    return found


async def delete_contact(store: Store, contact: Contact) -> int:
    k = store.partition_keys()[contact.partition]
    redis: Any = store.redis
    # Its person links first: a crash after it leaves the contact, which a rerun finds.
    await People(store).forget(contact.id)
    await redis.hdel(k.contacts, f"{contact.channel_instance}\x00{contact.handle}")
    return int(await redis.delete(k.contact(contact.id), keys.sticky(contact.id)))


async def remove_quarantined(store: Store, contact: Contact, needles: Iterable[str]) -> int:
    """Quarantine entries of the contact's instance whose raw body names the buyer."""
    wanted = [n.encode() for n in needles if n]
    redis: Any = store.redis
    doomed: list[str] = []
    start = "-"
    while True:
        rows = await redis.xrange(keys.QUARANTINE, start, "+", count=100)
        for eid, f in rows:
            instance = _s(f.get(b"instance"))
            raw = f.get(b"raw", b"") + f.get(b"error", b"")
            if (instance == contact.channel_instance or instance.startswith("stream:")) and \
                    any(n in raw for n in wanted):
                doomed.append(_s(eid))
        if len(rows) < 100:
            break
        start = "(" + _s(rows[-1][0])
    for eid in doomed:
        await store.quarantine_log.remove(eid)
    return len(doomed)


async def write_audit(store: Store, action: str, actor: str, counts: ErasureCounts) -> str:
    """An audit entry with no personal data: what was done, by whom, how much."""
    entry = await store.redis.xadd(keys.AUDIT, {
        "action": action, "by": actor, "at": repr(time.time()),
        "conversations": counts.conversations, "messages": counts.messages,
        "keys": counts.keys, "entries": counts.entries, "quarantined": counts.quarantined,
        "files": counts.files,
    }, maxlen=AUDIT_MAXLEN, approximate=True)
    return _s(entry)


# -- retention --------------------------------------------------------------------------------


async def purge_expired(store: Store, now: float, *, retention_seconds: float,
                        batch: int = 200) -> int:
    """One retention pass: delete up to ``batch`` conversations per partition that are resolved
    and untouched for ``retention_seconds``, with everything they own, and contacts left with
    no conversation. Returns how many conversations were deleted (0: nothing due)."""
    if retention_seconds <= 0:
        return 0
    cutoff = now - retention_seconds
    deleted = 0
    for k in store.partition_keys():
        doomed = await _due(store, k, cutoff, batch)
        counts = await delete_conversations(store, doomed)
        deleted += counts.conversations
        owners = {fp.contact_id for fp in doomed if fp.contact_id}
        if owners:
            remaining = await conversations_of(store, k, owners)
            for contact_id, left in remaining.items():
                contact = await get_contact(store, contact_id)
                if not left and contact is not None:
                    await delete_contact(store, contact)
    if deleted:
        log.info("retention: deleted %d resolved conversation(s) older than %.1f days",
                 deleted, retention_seconds / 86400)
    return deleted


async def _due(store: Store, k: PartitionKeys, cutoff: float,
               limit: int) -> list[ConversationFootprint]:
    """Detach up to ``limit`` due conversations. ``convs`` is scored by last activity, so only
    its head can be due; open conversations there are skipped, not counted, so old open work
    never starves the purge of resolved conversations behind it."""
    redis: Any = store.redis
    doomed: list[ConversationFootprint] = []
    offset = 0
    while len(doomed) < limit:
        page = [_s(c) for c in await redis.zrangebyscore(
            k.conversations, "-inf", f"({cutoff}", start=offset, num=_BATCH)]
        if not page:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for cid in page:
                pipe.hget(k.conversation(cid), "status")
            statuses = await pipe.execute()
        for cid, status in zip(page, statuses, strict=True):
            # No record: a pass that crashed after detaching it; finish the job.
            if status not in (None, b"resolved") or len(doomed) >= limit:
                continue
            fp = await footprint(store, cid)
            if fp is not None and (status is None or
                                   await detach(store, fp, only_resolved_before=cutoff)):
                doomed.append(fp)
        offset += len(page)
    return doomed
