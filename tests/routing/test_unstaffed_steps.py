"""The language floor across relaxation steps: a step nobody online can serve holds the buyer
until the next step's ``after_seconds`` unless the step opts into ``skip_when_unstaffed``.

Each case runs against real Redis with the Spanish team away, offline or at capacity, and
checks both where the conversation went and what the explain record says about it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channels.models import InboundMessage
from routing.config import (
    AgentConfig,
    QueueConfig,
    RoutingConfig,
    RuleConfig,
    StepConfig,
    WhenConfig,
)
from routing.engine import RoutingEngine
from routing.runtime import build_engine
from storage.store import Store

SPANISH = "Hola, ¿dónde está mi pedido? Lo compré hace dos semanas."


def config(skip: bool) -> RoutingConfig:
    es = QueueConfig("es", steps=[
        StepConfig(languages={"es": 3}, skip_when_unstaffed=skip),
        StepConfig(after_seconds=300),
    ])
    return RoutingConfig(
        languages=["es", "en"], queues=[es],
        rules=[RuleConfig("spanish", "es", WhenConfig(language=["es"]))],
        agents=[AgentConfig("lucia", languages={"es": 5}, capacity={"chat": 1}),
                AgentConfig("emma", languages={"en": 5}, capacity={"chat": 5})],
    )


async def engine_for(store: Store, skip: bool) -> RoutingEngine:
    engine = await asyncio.to_thread(build_engine, store, config(skip))
    await engine.sync()
    await engine.set_status("emma", "online")
    return engine


class Buyer:
    def __init__(self, store: Store, engine: RoutingEngine) -> None:
        self.store, self.engine, self.n = store, engine, 0

    async def write(self, handle: str) -> str:
        self.n += 1
        msg = InboundMessage(channel_type="api", channel_instance="api-1",
                             provider_message_id=f"m{self.n}", thread_id=handle,
                             sender_handle=handle, text=SPANISH)
        result = await self.store.ingest(msg)
        conversation = await self.store.get_conversation(result.conversation_id)
        assert conversation is not None
        decision = await self.engine.route(conversation, msg)
        await self.store.update_conversation(conversation.id, decision.fields)
        return result.conversation_id

    async def state(self, cid: str) -> dict[str, str]:
        return await self.engine.routing_state(cid)


async def make_spanish_team_unavailable(engine: RoutingEngine, buyer: Buyer, how: str) -> None:
    """away / offline: lucia is not serving; capacity: lucia online but her one chat is taken."""
    if how == "capacity":
        await engine.set_status("lucia", "online")
        first = await buyer.write("first")
        assert (await buyer.state(first))["assignee"] == "lucia"
    else:
        await engine.set_status("lucia", how)


def events(log: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in log if e["event"] == name]


@pytest.mark.parametrize("how", ["away", "offline", "capacity"])
async def test_default_holds_the_buyer_for_the_step_timeout(store: Store, how: str) -> None:
    engine = await engine_for(store, skip=False)
    buyer = Buyer(store, engine)
    await make_spanish_team_unavailable(engine, buyer, how)
    cid = await buyer.write("ana")
    state = await buyer.state(cid)
    assert state["status"] == "waiting" and state["step"] == "1", state
    log = await engine.explain(cid)
    assert not events(log, "skipped")
    if how != "capacity":  # an agent at capacity is still serving the step: not "held"
        [held] = events(log, "held")
        assert held["step"] == 1 and "skip_when_unstaffed is off" in held["text"]
        assert "300 s" in held["text"]
    t0 = float(state["enqueued_at"])
    await engine.fire_due_timers(now=t0 + 299)
    assert (await buyer.state(cid))["status"] == "waiting", "left step 1 before its timeout"
    await engine.fire_due_timers(now=t0 + 301)
    state = await buyer.state(cid)
    assert state["assignee"] == "emma" and state["step"] == "2"
    log = await engine.explain(cid)
    assert log[-1]["event"] == "assigned" and log[-1]["reason"] == "escalated"
    assert 'by step 2 of queue "es"' in log[-1]["text"]
    assert "300 s in the queue passed" in events(log, "escalated")[-1]["text"]


@pytest.mark.parametrize("how", ["away", "offline"])
async def test_opt_in_skips_a_step_nobody_online_can_serve(store: Store, how: str) -> None:
    engine = await engine_for(store, skip=True)
    buyer = Buyer(store, engine)
    await make_spanish_team_unavailable(engine, buyer, how)
    cid = await buyer.write("ana")
    state = await buyer.state(cid)
    assert state["assignee"] == "emma" and state["step"] == "2", state
    log = await engine.explain(cid)
    [skipped] = events(log, "skipped")
    assert skipped["step"] == 1 and "skip_when_unstaffed = true" in skipped["text"]
    assert log[-1]["reason"] == "best match" and 'by step 2 of queue "es"' in log[-1]["text"]


async def test_opt_in_does_not_skip_a_step_whose_agents_are_at_capacity(store: Store) -> None:
    """Agents at capacity will free up: their step is staffed, so the buyer waits for them."""
    engine = await engine_for(store, skip=True)
    buyer = Buyer(store, engine)
    await make_spanish_team_unavailable(engine, buyer, "capacity")
    cid = await buyer.write("ana")
    state = await buyer.state(cid)
    assert state["status"] == "waiting" and state["step"] == "1", state
    assert not events(await engine.explain(cid), "skipped")
    first = next(c for c in (await engine.agent_state("lucia"))["conversations"])
    assert await engine.release(first) == [(cid, "lucia")]


async def test_held_buyer_goes_to_the_speaker_who_comes_back(store: Store) -> None:
    engine = await engine_for(store, skip=False)
    buyer = Buyer(store, engine)
    await engine.set_status("lucia", "away")
    cid = await buyer.write("ana")
    assert (await buyer.state(cid))["status"] == "waiting"
    assert await engine.set_status("lucia", "online") == [(cid, "lucia")]
    log = await engine.explain(cid)
    assert 'assigned to lucia by step 1 of queue "es"' in log[-1]["text"]
    assert "came online" in log[-1]["text"]


@pytest.mark.parametrize(("skip", "expected"), [(False, None), (True, "emma")])
async def test_requeue_after_agent_leaves_honours_the_flag(store: Store, skip: bool,
                                                           expected: str | None) -> None:
    """Work handed back when the only Spanish speaker goes offline stays in step 1 unless the
    step opts in; it never reaches the English-only agent early by the requeue path."""
    engine = await engine_for(store, skip=skip)
    buyer = Buyer(store, engine)
    await engine.set_status("lucia", "online")
    cid = await buyer.write("ana")
    assert (await buyer.state(cid))["assignee"] == "lucia"
    await engine.set_status("lucia", "offline")
    state = await buyer.state(cid)
    assigned = state.get("assignee") if state["status"] == "assigned" else None
    assert assigned == expected, state
    assert state["step"] == ("2" if skip else "1")
