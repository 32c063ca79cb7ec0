"""The store against a real Redis: atomic ingest, partitions, ordering, outbox bookkeeping."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from redis.asyncio import Redis

from channels.models import InboundMessage, OutboundReply
from storage import keys
from storage.store import (
    QUARANTINE_RAW_LIMIT,
    NotRetryable,
    Store,
    UnknownConversation,
    UnknownMessage,
)


def msg(pid: str, thread: str = "t1", text: str = "hola", sender: str = "s1",
        instance: str = "shop") -> InboundMessage:
    return InboundMessage(channel_type="api", channel_instance=instance, provider_message_id=pid,
                          thread_id=thread, sender_handle=sender, text=text)


async def test_ingest_dedupes_concurrent_repeats(store: Store) -> None:
    results = await asyncio.gather(*(store.ingest(msg("p1")) for _ in range(100)))
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.message_id for r in results}) == 1
    assert len(await store.get_messages(results[0].conversation_id)) == 1


async def test_same_provider_id_on_two_instances_is_two_messages(store: Store) -> None:
    a = await store.ingest(msg("p1", instance="shop"))
    b = await store.ingest(msg("p1", instance="other"))
    assert not a.duplicate and not b.duplicate and a.conversation_id != b.conversation_id


async def test_thread_groups_messages_and_seq_orders_them(store: Store) -> None:
    first = await store.ingest(msg("a", thread="order-9"))
    second = await store.ingest(msg("b", thread="order-9", sender="s1"))
    other = await store.ingest(msg("c", thread="order-10"))
    assert first.new_conversation and not second.new_conversation
    assert first.conversation_id == second.conversation_id != other.conversation_id
    assert (first.seq, second.seq) == (1, 2)
    conv = await store.get_conversation(first.conversation_id)
    assert conv is not None and conv.message_count == 2 and conv.status == "new"
    assert conv.last_inbound_provider_id == "b"


async def test_conversations_spread_over_partitions_and_list_merges(store: Store) -> None:
    results = [await store.ingest(msg(f"p{i}", thread=f"t{i}")) for i in range(40)]
    parts = {keys.partition_from_id(r.conversation_id, store.partitions) for r in results}
    assert parts == {0, 1}
    listed = await store.list_conversations(limit=100)
    assert {c.id for c in listed} == {r.conversation_id for r in results}
    assert [c.updated_at for c in listed] == sorted((c.updated_at for c in listed), reverse=True)


async def test_hash_tags_put_each_partition_in_one_slot(store: Store) -> None:
    from redis.crc import key_slot

    k = store.partition_keys()[1]
    names = [k.inbound, k.outbox, k.retry, k.dlq, k.threads, k.contacts, k.conversations,
             k.seen("shop", "x"), k.conversation("1.ab"), k.message("1.cd"), k.contact("1.ef")]
    assert len({key_slot(n.encode()) for n in names}) == 1


async def test_ids_are_validated(store: Store) -> None:
    for bad in ("", "x", "9.abc", "0.", "0.xyz", "../0.ab", "0.ab/../c", "-1.ab", "0." + "a" * 80):
        assert await store.get_conversation(bad) is None
    with pytest.raises(UnknownConversation):
        await store.get_messages("nope")


async def test_resolved_conversation_reopens_on_new_message(store: Store) -> None:
    r = await store.ingest(msg("a"))
    await store.update_conversation(r.conversation_id, {"status": "resolved"})
    await store.ingest(msg("b"))
    conv = await store.get_conversation(r.conversation_id)
    assert conv is not None and conv.status == "new"


def reply(cid: str, text: str = "hi") -> OutboundReply:
    p = int(cid.split(".")[0])
    return OutboundReply(reply_id=keys.new_id(p), conversation_id=cid, channel_type="api",
                         channel_instance="shop", thread_id="t1", recipient_handle="s1",
                         text=text)


async def test_enqueue_reply_appends_and_queues(store: Store, redis: Redis) -> None:
    r = await store.ingest(msg("a"))
    mid, dup = await store.enqueue_reply(reply(r.conversation_id))
    assert not dup
    k = store.keys_for(mid)
    assert k is not None and await redis.xlen(k.outbox) == 1
    messages = await store.get_messages(r.conversation_id)
    assert [(m.direction, m.seq, m.status) for m in messages] == [("in", 1, "received"),
                                                                   ("out", 2, "queued")]
    again, dup = await store.enqueue_reply(reply(r.conversation_id), client_key="k")
    same, dup2 = await store.enqueue_reply(reply(r.conversation_id), client_key="k")
    assert again == same and not dup and dup2
    with pytest.raises(UnknownConversation):
        await store.enqueue_reply(reply("0.00ff"))


async def test_dead_letter_and_retry_are_consistent(store: Store, redis: Redis) -> None:
    r = await store.ingest(msg("a"))
    rep = reply(r.conversation_id)
    await store.enqueue_reply(rep)
    with pytest.raises(NotRetryable):
        await store.retry_dead_letter(rep.reply_id)
    await store.dead_letter(rep, "PermanentError: HTTP 400", 2)
    view = await store.get_message(rep.reply_id)
    assert view is not None and view.status == "failed" and view.error == "PermanentError: HTTP 400"
    letters = await store.list_dead_letters()
    assert [d.message_id for d in letters] == [rep.reply_id] and letters[0].attempts == 2
    k = store.keys_for(rep.reply_id)
    assert k is not None
    before = await redis.xlen(k.outbox)
    await asyncio.gather(*(store.retry_dead_letter(rep.reply_id) for _ in range(5)),
                         return_exceptions=True)
    assert await redis.xlen(k.outbox) == before + 1, "concurrent retries must queue once"
    assert await store.list_dead_letters() == []
    view = await store.get_message(rep.reply_id)
    assert view is not None and view.status == "queued" and view.attempts == 0
    with pytest.raises(UnknownMessage):
        await store.retry_dead_letter("0.00ff")


async def test_release_retries_moves_more_than_8k_in_bounded_batches(store: Store,
                                                                      redis: Redis) -> None:
    """Lua unpack limits bit other queues (dramatiq #258); release in bounded batches."""
    r = await store.ingest(msg("a"))
    k = store.keys_for(r.conversation_id)
    assert k is not None
    n = 9000
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            mid = f"{k.partition}.{i:020x}"
            pipe.hset(k.message(mid), mapping={"conversation_id": r.conversation_id,
                                               "status": "queued", "retry_pending": 1})
            pipe.zadd(k.retry, {mid: time.time() - 1})
        await pipe.execute()
    await redis.zadd(k.retry, {f"{k.partition}.{'f' * 20}": time.time() + 3600})
    released = await store.release_due_retries(time.time())
    assert released == n
    assert await redis.xlen(k.outbox) == n
    assert await redis.zcard(k.retry) == 1, "a retry not yet due must stay"


async def test_quarantine_keeps_raw_bounded(store: Store) -> None:
    await store.quarantine("shop", b"\xff\xfe not utf8", "bad")
    await store.quarantine("shop", b"x" * (QUARANTINE_RAW_LIMIT + 10), "big")
    big, small = await store.list_quarantine()
    assert big.raw_truncated and len(big.raw) == QUARANTINE_RAW_LIMIT
    assert not small.raw_truncated and "not utf8" in small.raw


async def test_inbound_payload_round_trips(store: Store) -> None:
    m = msgspec.structs.replace(msg("a"), sender_name="Ana", sent_at=1.5)
    r = await store.ingest(m)
    loaded = await store.load_inbound(r.message_id)
    assert loaded is not None and loaded.sender_name == "Ana" and loaded.sent_at == 1.5
    assert loaded.received_at > 0


async def test_a_moderated_message_is_stored_and_read_back_with_its_mark(store: Store) -> None:
    """A marketplace's moderation (Mercado Libre ``message_moderation``) is kept and shown,
    never a reason to drop what the buyer wrote."""
    flagged = msgspec.structs.replace(msg("m1", text="mi whatsapp es ..."),
                                      moderation="rejected: PERSONAL_DATA")
    result = await store.ingest(flagged)
    [view] = await store.get_messages(result.conversation_id)
    assert view.moderation == "rejected: PERSONAL_DATA" and view.text == "mi whatsapp es ..."
    [plain] = await store.get_messages((await store.ingest(msg("m2", thread="t2"))
                                        ).conversation_id)
    assert plain.moderation is None


async def test_get_conversations_reads_only_the_fields_asked_for(store: Store) -> None:
    """The KPI aggregator's read: the dimensions it folds by, nothing else (no contact)."""
    stored = await store.ingest(msg("f-1", text="hola"))
    await store.update_conversation(stored.conversation_id, {"queue": "es", "language": "es"})
    full = (await store.get_conversations([stored.conversation_id]))[0]
    [slim] = await store.get_conversations([stored.conversation_id, "0.missing"],
                                           fields=("queue", "language", "channel", "spam"))
    assert (slim.id, slim.queue, slim.language, slim.channel, slim.spam) == \
        (full.id, "es", "es", full.channel, False)
    assert slim.contact_handle == "" and slim.message_count == 0  # not read: defaults
