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
