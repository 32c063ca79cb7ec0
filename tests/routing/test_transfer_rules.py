"""Transfer to an agent inside the atomic step: a resolved conversation is never revived and
an agent's own transfer fails if the conversation stopped being theirs in between, even when
the Python-side checks are bypassed (another process won the race)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from channels.models import InboundMessage
from routing.config import AgentConfig, QueueConfig, RoutingConfig, RuleConfig, StepConfig
from routing.config import WhenConfig as When
from routing.engine import RoutingEngine, TransferRefused, language_gaps
from routing.runtime import build_engine
from storage.store import Store

ES = QueueConfig("es", steps=[StepConfig(languages={"es": 3})])


async def _engine(store: Store) -> RoutingEngine:
    cfg = RoutingConfig(
        queues=[ES], rules=[RuleConfig("es", "es", When(language=["es"]))],
        languages=["es", "pt", "en"],
        agents=[AgentConfig(id="ana", languages={"es": 5}, capacity={"chat": 2}),
                AgentConfig(id="zoe", languages={"es": 4}, capacity={"chat": 2}, weight=0)])
    engine = await asyncio.to_thread(build_engine, store, cfg)
    await engine.sync()
    for agent in ("ana", "zoe"):
        await engine.set_status(agent, "online")
    return engine


async def _arrive(store: Store, engine: RoutingEngine, n: int) -> str:
    msg = InboundMessage(channel_type="api", channel_instance="shop",
                         provider_message_id=f"m{n}", thread_id=f"t{n}", sender_handle=f"b{n}",
                         text="Hola, ¿dónde está mi pedido? Lo compré hace dos semanas")
    result = await store.ingest(msg)
    conversation = await store.get_conversation(result.conversation_id)
    assert conversation is not None
    decision = await engine.route(conversation, msg)
    await store.update_conversation(conversation.id, decision.fields)
    return conversation.id


async def test_resolved_is_never_revived_even_past_the_python_check(store: Store) -> None:
    engine = await _engine(store)
    cid = await _arrive(store, engine, 1)
    assert (await engine.routing_state(cid))["assignee"] == "ana"
    await engine.release(cid)
    with pytest.raises(TransferRefused) as refused:
        await engine.transfer_to_agent(cid, "zoe")
    assert refused.value.code == "resolved"
    with pytest.raises(ResponseError, match="CLOSED"):
        await engine.call("transfer_agent", cid, "zoe", "")
    state = await engine.routing_state(cid)
    assert state["status"] == "closed" and "assignee" not in state
    assert (await engine.agent_state("zoe"))["conversations"] == []


async def test_an_agents_transfer_requires_it_to_still_be_theirs(store: Store) -> None:
    engine = await _engine(store)
    cid = await _arrive(store, engine, 1)
    with pytest.raises(TransferRefused) as refused:
        await engine.transfer_to_agent(cid, "zoe", only_from="zoe")
    assert refused.value.code == "not_assigned_to_you"
    await engine.transfer_to_agent(cid, "zoe", only_from="ana")  # weight 0 takes transfers
    assert (await engine.routing_state(cid))["assignee"] == "zoe"


def test_language_gaps_is_the_stricter_rule() -> None:
    lu = AgentConfig(id="lu", languages={"es": 2, "en": 1})
    assert language_gaps(lu, ES, "es") == ["es at level 3"]
    assert language_gaps(lu, None, "es") == []          # speaks it: enough without a queue
    assert language_gaps(lu, None, "pt") == ["pt at level 1"]
    assert language_gaps(lu, QueueConfig("default", steps=[StepConfig()]), "en") == []
    assert language_gaps(lu, QueueConfig("d", steps=[StepConfig()]), None) == []


async def test_a_queue_transfer_or_correction_never_reopens_a_resolved_conversation(
        store: Store) -> None:
    """Inside the enqueue step itself: the API's own check can lose a race with a resolve."""
    engine = await _engine(store)
    cid = await _arrive(store, engine, 3)
    await engine.release(cid)  # resolved after the caller looked
    conversation = await store.get_conversation(cid)
    assert conversation is not None
    with pytest.raises(TransferRefused) as refused:
        await engine.transfer_to_queue(conversation, "es")
    assert refused.value.code == "resolved"
    message = await store.load_inbound((await store.get_messages(cid))[0].id)
    assert message is not None
    await engine.correct_language(conversation, "pt", message)  # recorded, not re-routed
    state = await engine.routing_state(cid)
    assert state["status"] == "closed" and "assignee" not in state
    assert (await store.get_conversation(cid)).language == "pt"  # type: ignore[union-attr]
    for agent in ("ana", "zoe"):
        assert (await engine.agent_state(agent))["conversations"] == []
