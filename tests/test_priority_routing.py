"""The workflow priority counts in routing: the level's offset (routing/priority.py) joins the
queue's priority and routing's boosts in the waiting score, a waiting conversation moves at once
when its level changes, and every later routing (requeue, transfer, the buyer's next message)
uses the combined priority. Real routing on real Redis."""

from __future__ import annotations

from typing import Any, get_args

from redis.asyncio import Redis

from routing.config import RoutingConfig, SlaPolicy
from routing.engine import RoutingEngine
from routing.priority import WORKFLOW_PRIORITY_OFFSET, workflow_offset
from storage import supervision
from storage.records import Priority
from storage.store import Store
from storage.workflow import Workflow
from tests.routing.test_routing import Build, Buyers, agent, make_engine

__all__ = ["make_engine"]  # the fixture, used by name


async def set_level(store: Store, engine: RoutingEngine, cid: str, level: str) -> str:
    """What POST .../priority does: the record first, then routing in one atomic step."""
    await Workflow(store).set_priority(cid, level)
    return await engine.set_workflow_priority(cid, level)


async def wait_score(redis: Redis, engine: RoutingEngine, cid: str) -> float | None:
    state = await engine.routing_state(cid)
    score = await redis.zscore(supervision.wait_set(state["pool"], state["kind"]), cid)
    return None if score is None else float(score)


def test_every_level_has_an_offset_in_order() -> None:
    assert set(WORKFLOW_PRIORITY_OFFSET) == set(get_args(Priority))
    offsets = [WORKFLOW_PRIORITY_OFFSET[level] for level in ("low", "normal", "high", "urgent")]
    assert offsets == sorted(offsets) and len(set(offsets)) == 4
    assert WORKFLOW_PRIORITY_OFFSET["normal"] == 0
    # urgent goes ahead of a breached normal conversation with the default boosts
    defaults = RoutingConfig()
    assert WORKFLOW_PRIORITY_OFFSET["urgent"] > defaults.sla_breach_priority_boost \
        + defaults.requeue_priority_boost
    assert workflow_offset("made-up") == 0


async def test_raising_the_later_one_to_urgent_serves_it_first(make_engine: Build,
                                                               store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)])
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    busy = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    early = await b.write("eva", "Hola, mi pedido llegó roto")
    late = await b.write("leo", "Hola, quiero devolver el producto")
    assert await b.assignee(busy) == "lucia"
    before = await wait_score(store.redis, engine, late)
    assert before is not None and before > (await wait_score(store.redis, engine, early) or 0)

    assert await set_level(store, engine, late, "urgent") == "waiting"
    state = await engine.routing_state(late)
    assert state["wp"] == "10"
    assert await wait_score(store.redis, engine, late) == before - 10 * 1e10
    assert any(e["event"] == "priority" for e in await engine.explain(late))

    # Free the agent: the urgent one is served first, though it came later.
    assert await engine.release(busy) == [(late, "lucia")]
    assert await engine.release(late) == [(early, "lucia")]


async def test_lowering_lets_the_others_by(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)])
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    busy = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    early = await b.write("eva", "Hola, mi pedido llegó roto")
    late = await b.write("leo", "Hola, quiero devolver el producto")
    await set_level(store, engine, early, "low")
    await set_level(store, engine, late, "high")
    await set_level(store, engine, late, "normal")  # a change replaces, never adds up
    assert (await engine.routing_state(late))["wp"] == "0"
    assert await engine.release(busy) == [(late, "lucia")]
    assert await engine.release(late) == [(early, "lucia")]


async def test_the_combined_priority_survives_requeue_transfer_and_reopening(
        make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1),
                                agent("marta", {"es": 5}, chat=1)])
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    urgent = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    await set_level(store, engine, urgent, "urgent")
    assert await b.assignee(urgent) == "lucia"
    other = await b.write("eva", "Hola, mi pedido llegó roto")

    # Requeue (lucia goes offline): the boost adds to the rule's priority, the level stays.
    await engine.set_status("lucia", "offline")
    state = await engine.routing_state(urgent)
    assert state["status"] == "waiting" and state["priority"] == "1"
    assert await wait_score(store.redis, engine, urgent) == \
        -(1 + 10) * 1e10 + float(state["enqueued_at"])
    # marta comes online: the urgent one first, though the other waited longer
    assert (await engine.set_status("marta", "online"))[0] == (urgent, "marta")

    # Transfer to a queue: routed again from the record's level.
    conversation = await store.get_conversation(other)
    assert conversation is not None
    await set_level(store, engine, other, "high")
    conversation = await store.get_conversation(other)
    assert conversation is not None and conversation.priority == "high"
    await engine.transfer_to_queue(conversation, "es")
    state = await engine.routing_state(other)
    assert state["wp"] == "2"
    assert await wait_score(store.redis, engine, other) == \
        -(0 + 2) * 1e10 + float(state["enqueued_at"])

    # Resolved, then the buyer writes again: a new enqueue, the level still counts.
    await engine.release(urgent)
    assert await b.assignee(other) == "marta"
    await engine.release(other)
    reopened = await b.write("eva", "Sigue roto, por favor")
    assert reopened == other
    assert await b.assignee(other) == "marta"
    third = await b.write("leo", "Hola")
    fourth = await b.write("rosa", "Hola, ayuda")
    await set_level(store, engine, fourth, "high")
    assert await engine.release(other) == [(fourth, "marta")]
    assert await b.assignee(third) is None


async def test_a_level_set_before_routing_counts_at_the_first_enqueue(
        make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)])
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    busy = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    early = await b.write("eva", "Hola, mi pedido llegó roto")
    # A conversation routing never saw: the record takes the level, routing writes nothing.
    msg_store_only = await store.ingest(_message("leo", "Hola, quiero devolver el producto"))
    cid = msg_store_only.conversation_id
    assert await set_level(store, engine, cid, "urgent") == ""
    assert await engine.routing_state(cid) == {}
    conversation = await store.get_conversation(cid)
    assert conversation is not None
    await engine.route(conversation, _message("leo", "Hola, quiero devolver el producto"))
    assert (await engine.routing_state(cid))["wp"] == "10"
    assert await engine.release(busy) == [(cid, "lucia")]
    assert await b.assignee(early) is None


async def test_a_breach_boost_adds_to_the_level(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)],
                               sla={"chat": SlaPolicy(first_response_minutes=5, always=True)})
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    await b.write("ana", "Hola, ¿dónde está mi pedido?")
    waiting = await b.write("eva", "Hola, mi pedido llegó roto")
    await set_level(store, engine, waiting, "high")
    state = await engine.routing_state(waiting)
    await engine.fire_due_timers(now=float(state["sla:first"]) + 1)
    state = await engine.routing_state(waiting)
    assert state["breached:first"] and state["priority"] == "5"
    assert await wait_score(store.redis, engine, waiting) == \
        -(5 + 2) * 1e10 + float(state["enqueued_at"])


def _message(handle: str, text: str) -> Any:
    from channels.models import InboundMessage

    return InboundMessage(channel_type="api", channel_instance="api-1",
                          provider_message_id=f"{handle}-{len(text)}", thread_id=handle,
                          sender_handle=handle, text=text)
