"""A batch of inbound messages in one Redis round trip: ``Store.ingest_many``, the hub's
``Ingestor.ingest_many`` (metrics per message) and ``ChannelAdapter.store_items``' use of it,
with the semantics of one ``ingest`` after the other."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from channels.base import AdapterContext, Capabilities, ChannelAdapter
from channels.models import DeliveryUpdate, InboundMessage, OutboundReply
from hub.ingest import Ingestor
from hub.metrics import Metrics
from storage import keys
from storage.store import IngestResult, Store


def msg(pid: str, thread: str = "t1", instance: str = "shop") -> InboundMessage:
    return InboundMessage(channel_type="api", channel_instance=instance, provider_message_id=pid,
                          thread_id=thread, sender_handle="s1", text=f"text {pid}")


def stored(results: list[Any]) -> list[IngestResult]:
    assert all(isinstance(r, IngestResult) for r in results)
    return results


async def test_a_batch_is_stored_in_order_like_one_ingest_after_the_other(store: Store) -> None:
    earlier = await store.ingest(msg("p0"))
    batch = [msg("p1"), msg("p2", thread="t2"), msg("p0"), msg("p3"), msg("p1")]
    results = stored(await store.ingest_many(batch))
    assert [r.duplicate for r in results] == [False, False, True, False, True]
    assert results[2].message_id == earlier.message_id  # a repeat of what was stored before
    assert results[4].message_id == results[0].message_id  # a repeat within the batch
    assert results[0].conversation_id == results[3].conversation_id == earlier.conversation_id
    assert (results[0].seq, results[3].seq) == (2, 3)  # in batch order after the earlier one
    assert results[1].new_conversation and not results[0].new_conversation
    views = await store.get_messages(earlier.conversation_id)
    assert [v.text for v in views] == ["text p0", "text p1", "text p3"]
    assert await store.ingest_many([]) == []


async def test_a_batch_spread_over_partitions(store: Store) -> None:
    results = stored(await store.ingest_many([msg(f"p{i}", thread=f"t{i}") for i in range(30)]))
    parts = {keys.partition_from_id(r.conversation_id, store.partitions) for r in results}
    assert parts == {0, 1}
    assert all(not r.duplicate and r.seq == 1 for r in results)


async def test_a_message_redis_refuses_is_its_error_and_the_rest_are_stored(
        store: Store, redis: Redis) -> None:
    bad = msg("bad")
    part = store._parts[keys.partition_of("shop", "t1", store.partitions)]
    await redis.hset(part.seen("shop", "bad"), "x", "1")  # the script's GET: WRONGTYPE
    results = await store.ingest_many([msg("a"), bad, msg("b")])
    assert isinstance(results[1], ResponseError)
    assert isinstance(results[0], IngestResult) and isinstance(results[2], IngestResult)
    again = stored(await store.ingest_many([msg("a"), msg("b")]))  # a redelivery dedupes them
    assert [r.duplicate for r in again] == [True, True]


def counts(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in metrics.ingested.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[sample.labels["outcome"]] = sample.value
    return out


async def test_ingestor_counts_each_message_and_raises_the_first_error(
        store: Store, redis: Redis) -> None:
    metrics = Metrics()
    ingestor = Ingestor(store, metrics)
    results = await ingestor.ingest_many([msg("a"), msg("b"), msg("a")])
    assert [r.duplicate for r in results] == [False, False, True]
    assert counts(metrics) == {"stored": 2, "duplicate": 1}
    part = store._parts[keys.partition_of("shop", "t1", store.partitions)]
    await redis.hset(part.seen("shop", "bad"), "x", "1")
    with pytest.raises(ResponseError):
        await ingestor.ingest_many([msg("c"), msg("bad"), msg("d")])
    assert counts(metrics) == {"stored": 4, "duplicate": 1, "error": 1}
    observed = [s.value for f in metrics.ingest_seconds.collect() for s in f.samples
                if s.name.endswith("_count")]
    assert observed == [5]  # one latency per message made durable


class _Adapter(ChannelAdapter):
    type_name = "kit"
    capabilities = Capabilities(max_text_length=1000)

    async def deliver(self, reply: OutboundReply) -> str:
        raise NotImplementedError


class _Recording:
    """An ingest callback with and without the batch form, recording how it was called."""

    def __init__(self, store: Store, batch: bool) -> None:
        self.store = store
        self.calls: list[list[str]] = []
        if batch:
            self.ingest_many = self._many

    async def __call__(self, message: InboundMessage) -> IngestResult:
        self.calls.append([message.provider_message_id])
        return await self.store.ingest(message)

    async def _many(self, messages: list[InboundMessage]) -> list[IngestResult]:
        self.calls.append([m.provider_message_id for m in messages])
        return stored(await self.store.ingest_many(messages))


def adapter() -> _Adapter:
    async def quarantine(*args: Any, **kwargs: Any) -> str:
        return "q"

    context = AdapterContext(http=None, quarantine=quarantine, spawn=None)  # type: ignore[arg-type]
    context.deliveries = _Deliveries()
    return _Adapter("kit", None, context)


class _Deliveries:
    def __init__(self) -> None:
        self.applied: list[str] = []

    async def apply(self, update: DeliveryUpdate) -> bool:
        self.applied.append(update.provider_message_id)
        return True


async def test_store_items_sends_runs_of_messages_through_ingest_many(store: Store) -> None:
    receipt = DeliveryUpdate(channel_instance="kit", provider_message_id="r1", state="failed")
    items = [msg("a"), msg("b"), receipt, msg("c"), msg("d"), msg("e"), msg("a")]
    batched = _Recording(store, batch=True)
    outcomes = await adapter().store_items(items, batched)
    assert batched.calls == [["a", "b"], ["c", "d", "e", "a"]]
    assert [o.duplicate for o in outcomes] == [False, False, False, False, False, True]
    plain = _Recording(store, batch=False)
    outcomes = await adapter().store_items([msg("x"), msg("y")], plain)
    assert plain.calls == [["x"], ["y"]]
    assert [o.duplicate for o in outcomes] == [False, False]
