"""The adapters' thread memory on Redis (``storage/threads.py``)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from channels.models import InboundMessage
from storage.store import Store
from storage.threads import RedisThreads


async def test_memos_are_scoped_hashed_bounded_and_expire(store: Store, redis: Redis) -> None:
    threads = RedisThreads(store)
    await threads.remember("shop", "s:ana@buyer.test\x00pedido 1", b"v1", ttl_seconds=60,
                           thread_id="t")
    await threads.remember("other", "s:ana@buyer.test\x00pedido 1", b"v2", ttl_seconds=60,
                           thread_id="t")
    assert await threads.recall("shop", "s:ana@buyer.test\x00pedido 1") == b"v1"
    assert await threads.recall("other", "s:ana@buyer.test\x00pedido 1") == b"v2"
    assert await threads.recall("shop", "nothing") is None
    names = [k.decode() for k in await redis.keys("ih:memo:*")]
    assert len(names) == 2 and not any("ana" in n for n in names)  # no address in key names
    assert 0 < await redis.pttl(names[0]) <= 60_000
    with pytest.raises(ValueError):
        await threads.remember("shop", "k", b"x" * 20_000, ttl_seconds=60, thread_id="t")
    with pytest.raises(ValueError):
        await threads.remember("shop", "k", b"x", ttl_seconds=0, thread_id="t")


async def test_thread_status_follows_the_conversation(store: Store) -> None:
    threads = RedisThreads(store)
    assert await threads.thread_status("shop", "t-1") is None
    result = await store.ingest(InboundMessage(
        channel_type="email", channel_instance="shop", provider_message_id="<m@x.test>",
        thread_id="t-1", sender_handle="ana@buyer.test", text="hola"))
    assert await threads.thread_status("shop", "t-1") == "new"
    assert await threads.thread_status("elsewhere", "t-1") is None
    assert await store.update_conversation(result.conversation_id, {"status": "resolved"})
    assert await threads.thread_status("shop", "t-1") == "resolved"


async def test_erasing_the_conversation_erases_its_memos(store: Store, redis: Redis) -> None:
    from storage.lifecycle import delete_conversations, footprint

    threads = RedisThreads(store)
    result = await store.ingest(InboundMessage(
        channel_type="email", channel_instance="shop", provider_message_id="<m@x.test>",
        thread_id="t-1", sender_handle="ana@buyer.test", text="hola"))
    await threads.remember("shop", "m:<m@x.test>", b"ana@buyer.test", ttl_seconds=60,
                           thread_id="t-1")
    await threads.remember("shop", "s:ana", b"t-1", ttl_seconds=3600, thread_id="t-1")
    await threads.remember("shop", "m:<other@x.test>", b"eve", ttl_seconds=60,
                           thread_id="t-2")
    index = await redis.keys("ih:memos-of:*")
    assert len(index) == 2
    for name in index:
        assert 0 < await redis.pttl(name) <= 3_600_000
    fp = await footprint(store, result.conversation_id)
    assert fp is not None
    await delete_conversations(store, [fp])
    assert await threads.recall("shop", "m:<m@x.test>") is None
    assert await threads.recall("shop", "s:ana") is None
    assert await threads.recall("shop", "m:<other@x.test>") == b"eve"


async def test_a_batch_of_writes_leaves_what_one_write_after_another_would(
        store: Store, redis: Redis) -> None:
    """``remember_many`` groups a batch's writes by thread (one index entry command and one
    TTL raise per thread): the memos still end as the writes in order would leave them, a key
    written for two threads keeps its last value and is in both threads' indexes, and each
    index lives as long as its longest memo."""
    from channels.services.threads import MemoWrite
    from storage.threads import memo_key, memos_of

    threads = RedisThreads(store)
    await threads.remember_many("shop", [
        MemoWrite("m:<1@x>", b"one", 60, "t-1"),
        MemoWrite("s:ana", b"first", 60, "t-1"),
        MemoWrite("s:ana", b"second", 3600, "t-2"),
        MemoWrite("m:<2@x>", b"two", 60, "t-2"),
        MemoWrite("s:ana", b"third", 120, "t-1"),
        MemoWrite("t:t-1", b"thread", 60, "t-1"),
    ])
    assert await threads.recall_many("shop", ["m:<1@x>", "s:ana", "m:<2@x>", "t:t-1"]) == [
        b"one", b"third", b"two", b"thread"]
    assert 60_000 < await redis.pttl(memo_key("shop", "s:ana")) <= 120_000  # the last write's
    one = {m.decode() for m in await redis.smembers(memos_of("shop\x00t-1"))}
    two = {m.decode() for m in await redis.smembers(memos_of("shop\x00t-2"))}
    assert one == {memo_key("shop", k) for k in ("m:<1@x>", "s:ana", "t:t-1")}
    assert two == {memo_key("shop", k) for k in ("s:ana", "m:<2@x>")}
    assert 120_000 - 5_000 < await redis.pttl(memos_of("shop\x00t-1")) <= 120_000
    assert 3_600_000 - 5_000 < await redis.pttl(memos_of("shop\x00t-2")) <= 3_600_000
