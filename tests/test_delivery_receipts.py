"""Delivery receipts on real Redis (issue #12 §6): the index written with the send, the monotone
state, receipts that beat the send, failures with the provider's reason, erasure.

The store runs with two partitions, so a receipt has to find its message's partition and an
early one is parked where the send will land.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from channels.models import DeliveryState, DeliveryUpdate, InboundMessage, OutboundReply
from channels.services.receipts import RANK
from storage import keys
from storage.deliveries import PARKED_TTL_SECONDS, RedisDeliveries
from storage.lifecycle import delete_conversations, detach, footprint
from storage.store import Store


async def outbound(store: Store, thread: str = "t-1") -> OutboundReply:
    ingested = await store.ingest(InboundMessage(
        channel_type="api", channel_instance="shop", provider_message_id=f"in-{thread}",
        thread_id=thread, sender_handle="buyer", text="hola"))
    p = int(ingested.conversation_id.split(".", 1)[0])
    reply = OutboundReply(reply_id=keys.new_id(p), conversation_id=ingested.conversation_id,
                          channel_type="api", channel_instance="shop", thread_id=thread,
                          recipient_handle="buyer", text="su pedido sale hoy")
    await store.enqueue_reply(reply)
    assert (await store.claim_send(reply.reply_id, lease_seconds=30, owner="t"))[0] == "send"
    return reply


def update(pid: str, state: DeliveryState, at: float | None = None,
           error: str | None = None) -> DeliveryUpdate:
    return DeliveryUpdate("shop", pid, state, at=at, error=error)


async def state_of(store: Store, message_id: str) -> tuple[str, str | None, float | None]:
    view = await store.get_message(message_id)
    assert view is not None
    return view.status, view.error, view.status_at


@pytest.fixture
def deliveries(store: Store) -> RedisDeliveries:
    return RedisDeliveries(store)


async def test_out_of_order_receipts_end_in_the_latest_state(
        store: Store, deliveries: RedisDeliveries) -> None:
    reply = await outbound(store)
    await store.mark_sent(reply.reply_id, "wamid.1", channel_instance="shop")
    assert await deliveries.apply(update("wamid.1", "read", at=1_700_000_020.0))
    assert not await deliveries.apply(update("wamid.1", "delivered", at=1_700_000_010.0))
    assert not await deliveries.apply(update("wamid.1", "sent"))
    assert not await deliveries.apply(update("wamid.1", "read"))  # a repeat
    assert await state_of(store, reply.reply_id) == ("read", None, 1_700_000_020.0)


async def test_a_failure_is_shown_with_the_reason_and_can_be_sent_again(
        store: Store, deliveries: RedisDeliveries) -> None:
    reply = await outbound(store)
    await store.mark_sent(reply.reply_id, "SM1", channel_instance="shop")
    reason = "30003: Unreachable destination handset"
    assert await deliveries.apply(update("SM1", "failed", at=1_700_000_000.0, error=reason))
    assert await state_of(store, reply.reply_id) == ("failed", reason, 1_700_000_000.0)
    [dead] = await store.list_dead_letters()
    assert dead.message_id == reply.reply_id and dead.error == reason
    await store.retry_dead_letter(reply.reply_id)  # the operator sends it again
    assert await store.list_dead_letters() == []
    assert (await store.claim_send(reply.reply_id, lease_seconds=30, owner="t"))[0] == "send"
    # A late receipt about the first attempt changes nothing while the second is in flight...
    assert await deliveries.record(update("SM1", "delivered")) == "stale"
    await store.mark_sent(reply.reply_id, "SM2", channel_instance="shop")
    # ... nor after it: the message is the second attempt's now.
    assert await deliveries.record(update("SM1", "read")) == "stale"
    assert await deliveries.apply(update("SM2", "delivered"))
    assert (await state_of(store, reply.reply_id))[:2] == ("delivered", None)


async def test_failed_after_delivered_is_stale_and_delivered_after_failed_wins(
        store: Store, deliveries: RedisDeliveries) -> None:
    one, two = await outbound(store, "t-1"), await outbound(store, "t-2")
    await store.mark_sent(one.reply_id, "p-1", channel_instance="shop")
    await store.mark_sent(two.reply_id, "p-2", channel_instance="shop")
    assert await deliveries.apply(update("p-1", "delivered"))
    assert not await deliveries.apply(update("p-1", "failed", error="30005: Unknown handset"))
    assert (await state_of(store, one.reply_id))[:2] == ("delivered", None)
    assert await deliveries.apply(update("p-2", "failed", error="30008: Unknown error"))
    assert await deliveries.apply(update("p-2", "delivered"))
    assert (await state_of(store, two.reply_id))[:2] == ("delivered", None)
    assert await store.list_dead_letters() == []  # the failure was not final after all


async def test_a_receipt_that_beats_the_send_is_applied_when_the_send_returns(
        store: Store, deliveries: RedisDeliveries, redis: Redis) -> None:
    reply = await outbound(store)
    # The provider's callback arrives while we still wait for its answer to our send.
    assert await deliveries.record(update("wamid.9", "delivered", at=1_700_000_005.0)) == \
        "parked"
    assert (await state_of(store, reply.reply_id))[0] == "sending"
    await store.mark_sent(reply.reply_id, "wamid.9", channel_instance="shop")
    assert await state_of(store, reply.reply_id) == ("delivered", None, 1_700_000_005.0)
    # Parked in both partitions; the copy in the other one expires on its own.
    copies = [k async for k in redis.scan_iter("ih:*:early:*")]
    assert len(copies) == 1
    assert 0 < await redis.ttl(copies[0]) <= PARKED_TTL_SECONDS


async def test_our_reply_id_names_the_message_too(store: Store,
                                                  deliveries: RedisDeliveries) -> None:
    """The API channel's far end may report by our reply id rather than its own id."""
    early, late = await outbound(store, "t-1"), await outbound(store, "t-2")
    assert await deliveries.record(update(early.reply_id, "read")) == "parked"
    await store.mark_sent(early.reply_id, "op-1", channel_instance="shop")
    assert (await state_of(store, early.reply_id))[0] == "read"
    await store.mark_sent(late.reply_id, "op-2", channel_instance="shop")
    assert await deliveries.record(update(late.reply_id, "delivered")) == "applied"
    # Another instance cannot touch our messages by naming their ids.
    assert await deliveries.record(DeliveryUpdate("elsewhere", late.reply_id, "read")) == \
        "parked"
    assert (await state_of(store, late.reply_id))[0] == "delivered"


async def test_a_receipt_for_an_inbound_or_unknown_message_changes_nothing(
        store: Store, deliveries: RedisDeliveries) -> None:
    reply = await outbound(store)
    await store.mark_sent(reply.reply_id, "p-1", channel_instance="shop")
    assert await deliveries.record(update("never-sent", "read")) == "parked"
    assert await deliveries.record(update("in-t-1", "read")) == "parked"
    assert (await state_of(store, reply.reply_id))[0] == "sent"


async def test_mark_sent_writes_nothing_for_an_erased_message(store: Store,
                                                              redis: Redis) -> None:
    reply = await outbound(store)
    k = store.keys_for(reply.reply_id)
    assert k is not None
    await redis.delete(k.message(reply.reply_id))
    await store.mark_sent(reply.reply_id, "p-1", channel_instance="shop")
    assert not await redis.exists(k.message(reply.reply_id), k.delivery_index("shop", "p-1"))


async def test_erasure_removes_the_index_and_parked_receipts(
        store: Store, deliveries: RedisDeliveries, redis: Redis) -> None:
    reply = await outbound(store)
    await deliveries.record(update(reply.reply_id, "delivered"))
    await store.mark_sent(reply.reply_id, "p-77", channel_instance="shop")
    await deliveries.record(update(reply.reply_id, "read"))
    await deliveries.record(update("p-77", "sent"))
    k = store.keys_for(reply.reply_id)
    assert k is not None
    assert await redis.exists(k.delivery_index("shop", "p-77"))
    fp = await footprint(store, reply.conversation_id)
    assert fp is not None
    await detach(store, fp, only_resolved_before=None)
    await delete_conversations(store, [fp])
    left = [key async for key in redis.scan_iter(f"{k.base}*")
            if b"p-77" in key or reply.reply_id.encode() in key]
    assert left == []
    assert await deliveries.record(update("p-77", "read")) == "parked"  # nothing to apply to


async def test_receipts_racing_the_send_always_land(store: Store,
                                                    deliveries: RedisDeliveries) -> None:
    for i in range(30):
        reply = await outbound(store, f"race-{i}")
        await asyncio.gather(
            deliveries.apply(update(f"p-{i}", "delivered")),
            store.mark_sent(reply.reply_id, f"p-{i}", channel_instance="shop"),
        )
        assert (await state_of(store, reply.reply_id))[0] == "delivered", i


STATES: list[DeliveryState] = ["sent", "delivered", "read", "failed"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(st.sampled_from(STATES), min_size=1, max_size=6), data=st.data())
def test_any_order_of_receipts_and_send_ends_in_the_highest_state(
        redis_server: Any, events: list[DeliveryState], data: Any) -> None:
    """Whatever order the receipts come in, before or after the send returns, the message ends
    in the highest-ranked state reported (sent < failed < delivered < read)."""
    order = data.draw(st.permutations(events))
    sent_after = data.draw(st.integers(0, len(order)))

    async def run() -> tuple[str, str | None]:
        redis = Redis(unix_socket_path=redis_server.socket)
        try:
            await redis.flushall()
            store = Store(redis, partitions=2)
            deliveries = RedisDeliveries(store)
            reply = await outbound(store)
            for i, state in enumerate(itertools.chain(order, [None])):
                if i == sent_after:
                    await store.mark_sent(reply.reply_id, "p", channel_instance="shop")
                if state is not None:
                    await deliveries.apply(update("p", state, error=f"{state} reason"))
            view = await store.get_message(reply.reply_id)
            assert view is not None
            return view.status, view.error
        finally:
            await redis.aclose()

    status, error = asyncio.run(run())
    expected = max(["sent", *events], key=lambda s: RANK[s])
    assert status == expected
    assert error == ("failed reason" if expected == "failed" else None)
