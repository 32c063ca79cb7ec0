"""Reload and the agents' origin: the config file owns its agents (removed from the file ->
taken offline, work requeued, forgotten); agents created through the API survive any reload."""

from __future__ import annotations

import asyncio

import msgspec
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
from routing.engine import RoutingEngine, RoutingError, reload_engine
from routing.runtime import build_engine
from storage.store import Store
from tests.routing.routing_worker import check_state, snapshot

ES = QueueConfig("es", steps=[StepConfig(languages={"es": 3}), StepConfig(after_seconds=300)])
LUCIA = AgentConfig("lucia", languages={"es": 5}, capacity={"chat": 3})
MARTA = AgentConfig("marta", languages={"es": 4}, capacity={"chat": 1})
ZOE = AgentConfig("zoe", languages={"es": 5}, capacity={"chat": 2})


def config(agents: list[AgentConfig]) -> RoutingConfig:
    return RoutingConfig(languages=["es", "en"], queues=[ES], agents=agents,
                         rules=[RuleConfig("spanish", "es", WhenConfig(language=["es"]))])


async def write(store: Store, engine: RoutingEngine, n: int) -> str:
    msg = InboundMessage(channel_type="api", channel_instance="api-1",
                         provider_message_id=f"m{n}", thread_id=f"t{n}",
                         sender_handle=f"buyer{n}", text="Hola, ¿dónde está mi pedido?")
    result = await store.ingest(msg)
    conversation = await store.get_conversation(result.conversation_id)
    assert conversation is not None
    await engine.route(conversation, msg)
    return result.conversation_id


async def test_agent_removed_from_file_is_removed_and_its_work_requeued(store: Store) -> None:
    engine = await asyncio.to_thread(build_engine, store, config([LUCIA, MARTA]))
    await engine.sync()
    await engine.put_agent(ZOE)                      # created through the API
    for a in ("lucia", "zoe"):
        await engine.set_status(a, "online")
    convs = [await write(store, engine, n) for n in range(3)]
    held = {c: (await engine.routing_state(c))["assignee"] for c in convs}
    mine = [c for c, a in held.items() if a == "lucia"]
    assert mine, held
    await engine.set_status("marta", "online")

    await reload_engine(engine, config([MARTA]))     # lucia deleted from the file

    assert {a.id for a in await engine.agents()} == {"marta", "zoe"}
    assert await engine.agent("lucia") is None
    with pytest.raises(RoutingError, match="no agent 'lucia'"):
        await engine.set_status("lucia", "online")
    for c in mine:                                   # requeued: with someone else or waiting
        state = await engine.routing_state(c)
        assert state.get("assignee") != "lucia", state
        assert state["status"] in ("assigned", "waiting"), state
        log = await engine.explain(c)
        assert any(e["event"] == "requeued" and e["why"] == "agent offline" for e in log)
    assert (await engine.agent_state("lucia")) == {"conversations": [],
                                                   "desired_status": "offline"}
    assert (await engine.agent_state("zoe"))["status"] == "online", "API agent was touched"
    bad = check_state(await snapshot(store.redis, engine), engine.queues)
    assert not bad, bad

    # Back in the file: a config agent again, starting offline.
    await reload_engine(engine, config([LUCIA, MARTA]))
    assert await engine.agent("lucia") == LUCIA
    assert (await engine.agent_state("lucia"))["status"] == "offline"


async def test_api_agent_survives_reloads_and_config_edits_stay_the_files(store: Store) -> None:
    engine = await asyncio.to_thread(build_engine, store, config([LUCIA]))
    await engine.sync()
    await engine.put_agent(ZOE)
    # An API edit of a config agent does not make it the API's: the file still owns it.
    await engine.put_agent(msgspec.structs.replace(LUCIA, capacity={"chat": 1}))
    await reload_engine(engine, config([]))
    assert {a.id for a in await engine.agents()} == {"zoe"}
    await reload_engine(engine, config([]))
    assert await engine.agent("zoe") == ZOE


async def test_profiles_without_a_recorded_origin_are_kept(store: Store) -> None:
    """Profiles stored before origins were recorded cannot be told apart: never deleted."""
    engine = await asyncio.to_thread(build_engine, store, config([LUCIA]))
    await store.redis.hset(engine.state.base + "profiles", "legacy",
                           msgspec.json.encode(AgentConfig("legacy", capacity={"chat": 1})))
    await engine.sync()
    await reload_engine(engine, config([]))
    assert {a.id for a in await engine.agents()} == {"legacy"}
