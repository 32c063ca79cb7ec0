"""Routing behaviour against real Redis: matching, language floor, escalation, sticky,
reassignment, transfer, SLA, working hours and reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from channels.models import ChannelHints, InboundMessage
from routing.config import (
    AgentConfig,
    QueueConfig,
    RoutingConfig,
    RuleConfig,
    SlaPolicy,
    StepConfig,
    WhenConfig,
)
from routing.engine import RoutingEngine, RoutingError, reload_engine
from routing.runtime import build_engine
from storage.store import Store

ES_MX_REFUND = QueueConfig("es-mx-refund", priority=5, steps=[
    StepConfig(languages={"es": 3}, markets=["MX"], skills={"refund": 2}),
    StepConfig(after_seconds=60, languages={"es": 3}, skills={"refund": 1}),
    StepConfig(after_seconds=180, languages={"es": 2}),
    StepConfig(after_seconds=600),
])
ES = QueueConfig("es", steps=[StepConfig(languages={"es": 3}), StepConfig(after_seconds=300)])
PT = QueueConfig("pt", steps=[StepConfig(languages={"pt": 3}), StepConfig(after_seconds=300)])
EN = QueueConfig("en", steps=[StepConfig(languages={"en": 3}), StepConfig(after_seconds=300)])
RULES = [
    RuleConfig("es-mx-refund", "es-mx-refund",
               WhenConfig(language=["es"], market=["MX"], skill=["refund"])),
    RuleConfig("spanish", "es", WhenConfig(language=["es"])),
    RuleConfig("portuguese", "pt", WhenConfig(language=["pt"])),
    RuleConfig("english", "en", WhenConfig(language=["en"])),
]


def agent(aid: str, langs: dict[str, int], *, markets: list[str] | None = None,
          skills: dict[str, int] | None = None, chat: int = 2, **kw: Any) -> AgentConfig:
    return AgentConfig(id=aid, name=aid, languages=langs, markets=markets or [],
                       skills=skills or {}, capacity={"chat": chat, "email": 10}, **kw)


Build = Callable[..., Any]


@pytest.fixture
def make_engine(store: Store) -> Build:
    async def build(agents: list[AgentConfig], **overrides: Any) -> RoutingEngine:
        cfg = RoutingConfig(queues=[ES_MX_REFUND, ES, PT, EN], rules=RULES, agents=agents,
                            languages=["es", "pt", "en", "fr", "de", "it", "zh"], **overrides)
        engine = await asyncio.to_thread(build_engine, store, cfg)
        await engine.sync()
        return engine

    return build


class Buyers:
    """Ingests a buyer message and routes it, as the pipeline's router does."""

    def __init__(self, store: Store, engine: RoutingEngine) -> None:
        self.store = store
        self.engine = engine
        self.n = 0

    async def write(self, handle: str, text: str, *, channel: str = "api",
                    thread: str | None = None, hints: ChannelHints | None = None) -> str:
        self.n += 1
        msg = InboundMessage(channel_type=channel, channel_instance=f"{channel}-1",
                             provider_message_id=f"m{self.n}", thread_id=thread or handle,
                             sender_handle=handle, text=text, hints=hints or ChannelHints())
        result = await self.store.ingest(msg)
        conversation = await self.store.get_conversation(result.conversation_id)
        assert conversation is not None
        decision = await self.engine.route(conversation, msg)
        if decision.fields:
            await self.store.update_conversation(conversation.id, decision.fields)
        return result.conversation_id

    async def assignee(self, cid: str) -> str | None:
        state = await self.engine.routing_state(cid)
        return state.get("assignee") if state.get("status") == "assigned" else None


async def test_buyers_land_with_matching_agents_across_channels(make_engine: Build,
                                                                store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, markets=["MX"]),
                                agent("joao", {"pt": 5}), agent("emma", {"en": 5})])
    for a in ("lucia", "joao", "emma"):
        await engine.set_status(a, "online")
    b = Buyers(store, engine)
    cases = [
        ("ana", "Hola, ¿dónde está mi pedido?", "api", None, "lucia"),
        ("jose", "Olá, cadê meu pedido?", "telegram", ChannelHints(language="pt-BR"), "joao"),
        ("bob", "Hi, where is my order? It has not arrived.", "email", None, "emma"),
        ("maria", "hola", "whatsapp", ChannelHints(language="es"), "lucia"),
    ]
    for handle, text, channel, hints, expected in cases:
        cid = await b.write(handle, text, channel=channel, hints=hints)
        assert await b.assignee(cid) == expected, (handle, await engine.explain(cid))
    # capacity is per kind: email and chat counted separately
    lucia = await engine.agent_state("lucia")
    assert lucia["load:chat"] == "2" and lucia.get("load:email", "0") == "0"
    assert (await engine.agent_state("emma"))["load:email"] == "1"


async def test_portuguese_buyer_waits_for_portuguese_agent(make_engine: Build,
                                                           store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=5),
                                agent("joao", {"pt": 5}, chat=1)])
    await engine.set_status("lucia", "online")
    await engine.set_status("joao", "online")
    b = Buyers(store, engine)
    first = await b.write("p1", "Olá, cadê meu pedido?")
    second = await b.write("p2", "Olá, o produto chegou quebrado, quero devolver")
    assert await b.assignee(first) == "joao"
    assert await b.assignee(second) is None, "went to a Spanish-only agent while waiting"
    # capacity freed -> assigned at once to the Portuguese speaker, not the idle Spanish one
    changes = await engine.release(first)
    assert changes == [(second, "joao")]
    assert await b.assignee(second) == "joao"


async def test_escalation_relaxes_step_by_step_then_overflows(make_engine: Build,
                                                              store: Store) -> None:
    engine = await make_engine([
        agent("maria", {"es": 5}, markets=["MX"], skills={"refund": 3}, chat=1),
        agent("carla", {"es": 4}, skills={"refund": 1}, chat=1),  # es + refund, not MX
        agent("pedro", {"es": 2}),                                 # weak Spanish, no refund
        agent("emma", {"en": 5}),                                  # overflow only
    ])
    b = Buyers(store, engine)
    refund = "Hola, quiero un reembolso, el producto llegó roto"
    cid = await b.write("ana", refund, hints=ChannelHints(market="MX"))
    state = await engine.routing_state(cid)
    assert state["queue"] == "es-mx-refund" and state["status"] == "waiting"
    # Nobody online: no step opts into skip_when_unstaffed, so the buyer is held in step 1
    # (the language floor) instead of being passed straight to the overflow.
    assert state["step"] == "1"
    log = await engine.explain(cid)
    assert [e["step"] for e in log if e["event"] == "held"] == [1]
    assert not [e for e in log if e["event"] == "skipped"]
    await engine.release(cid, "closed")

    for a in ("maria", "carla", "pedro", "emma"):
        await engine.set_status(a, "online")
    first = await b.write("luis", refund, hints=ChannelHints(market="MX"))
    assert await b.assignee(first) == "maria"
    # maria is full: the next one waits in step 1 (someone is online there) until it times out
    second = await b.write("rosa", refund, hints=ChannelHints(market="MX"))
    s = await engine.routing_state(second)
    assert s["status"] == "waiting" and s["step"] == "1"
    t0 = float(s["enqueued_at"])
    await engine.fire_due_timers(now=t0 + 30)
    assert (await engine.routing_state(second))["step"] == "1", "escalated before its timeout"
    await engine.fire_due_timers(now=t0 + 61)
    s = await engine.routing_state(second)
    assert s["status"] == "assigned" and s["assignee"] == "carla" and s["step"] == "2"
    events = [e["event"] for e in await engine.explain(second)]
    assert events[-2:] == ["escalated", "assigned"]

    # maria and carla full: step 2 waits too, step 3 ("es >= 2") reaches pedro - never emma,
    # who only enters at the overflow step.
    third = await b.write("juan", refund, hints=ChannelHints(market="MX"))
    t3 = float((await engine.routing_state(third))["enqueued_at"])
    await engine.fire_due_timers(now=t3 + 61)
    s3 = await engine.routing_state(third)
    assert s3["status"] == "waiting" and s3["step"] == "2"
    await engine.fire_due_timers(now=t3 + 181)
    s3 = await engine.routing_state(third)
    assert s3["step"] == "3" and s3["assignee"] == "pedro"


async def test_overflow_takes_anyone_and_nothing_is_dropped(make_engine: Build,
                                                            store: Store) -> None:
    engine = await make_engine([agent("emma", {"en": 5}), agent("lucia", {"es": 5}, chat=1)])
    await engine.set_status("emma", "online")
    b = Buyers(store, engine)
    # No Spanish speaker online at all: the step is not skipped (skip_when_unstaffed is off),
    # the buyer waits for a Spanish speaker until the overflow step starts.
    cid = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    assert await b.assignee(cid) is None
    t0 = float((await engine.routing_state(cid))["enqueued_at"])
    await engine.fire_due_timers(now=t0 + 301)
    assert await b.assignee(cid) == "emma"
    # A Spanish speaker online but busy: the buyer waits for them until the step times out.
    await engine.set_status("lucia", "online")
    busy = await b.write("luis", "Hola, ¿dónde está mi pedido?")
    assert await b.assignee(busy) == "lucia"
    waiting = await b.write("rosa", "Hola, ¿dónde está mi pedido?")
    s = await engine.routing_state(waiting)
    assert s["queue"] == "es" and s["status"] == "waiting" and s["step"] == "1"
    await engine.fire_due_timers(now=float(s["enqueued_at"]) + 301)
    assert await b.assignee(waiting) == "emma"


async def test_unknown_language_goes_to_default_queue(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("emma", {"en": 5})])
    b = Buyers(store, engine)
    cid = await b.write("k", "注文した商品はいつ届きますか")  # Japanese: not configured
    s = await engine.routing_state(cid)
    assert s["queue"] == "default" and s["status"] == "waiting"
    await engine.set_status("emma", "online")  # agent comes online -> assigned at once
    assert await b.assignee(cid) == "emma"


async def test_sticky_returning_buyer_goes_back_to_last_agent(make_engine: Build,
                                                              store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=5),
                                agent("marta", {"es": 5}, chat=5)])
    await engine.set_status("lucia", "online")
    await engine.set_status("marta", "online")
    b = Buyers(store, engine)
    first = await b.write("ana", "Hola, ¿dónde está mi pedido?", thread="order-1")
    owner = await b.assignee(first)
    other = "marta" if owner == "lucia" else "lucia"
    await engine.release(first)
    # load-balancing alone would now pick the other agent (same load, longer idle)
    second = await b.write("ana", "Hola otra vez, ¿y el otro pedido?", thread="order-2")
    assert await b.assignee(second) == owner
    assert (await engine.explain(second))[-1]["reason"] == "sticky"
    # sticky never sends work to an offline agent
    await engine.release(second)
    await engine.set_status(owner or "", "offline")
    third = await b.write("ana", "Hola, ¿me ayudan?", thread="order-3")
    assert await b.assignee(third) == other


async def test_agent_offline_returns_conversations_to_queue(make_engine: Build,
                                                           store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=3),
                                agent("marta", {"es": 4}, chat=1)])
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    convs = [await b.write(f"b{i}", "Hola, ¿dónde está mi pedido?") for i in range(3)]
    assert [await b.assignee(c) for c in convs] == ["lucia"] * 3
    await engine.set_status("marta", "online")
    changes = dict(await engine.set_status("lucia", "offline"))
    assert sorted(changes) == sorted(convs)
    assert sorted(changes.values()) == ["", "", "marta"]
    assert (await engine.agent_state("lucia"))["conversations"] == []
    waiting = [c for c in convs if await b.assignee(c) is None]
    assert len(waiting) == 2
    await engine.set_status("lucia", "online")
    assert all([await b.assignee(c) for c in convs])


async def test_no_reply_reassigns_unless_agent_answered(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}), agent("marta", {"es": 5})],
                               reassign_after_no_reply_minutes=2)
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    quiet = await b.write("q", "Hola, ¿dónde está mi pedido?")
    answered = await b.write("a", "Hola, necesito ayuda")
    assert await b.assignee(quiet) == "lucia" and await b.assignee(answered) == "lucia"
    await engine.agent_replied(answered)
    await engine.set_status("marta", "online")
    await engine.fire_due_timers(now=time.time() + 121)
    assert await b.assignee(quiet) == "marta"
    assert await b.assignee(answered) == "lucia"
    log = await engine.explain(quiet)
    assert any(e["event"] == "requeued" and e["why"] == "no reply" for e in log)


async def test_manual_transfer(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1),
                                agent("marta", {"es": 5}, chat=1),
                                agent("zoe", {"es": 5}, weight=0)])
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    cid = await b.write("a", "Hola, ¿dónde está mi pedido?")
    assert await b.assignee(cid) == "lucia"
    with pytest.raises(RoutingError, match="not online"):
        await engine.transfer_to_agent(cid, "marta")
    await engine.set_status("zoe", "online")  # weight 0: transfers only
    other = await b.write("o", "Hola, otra consulta")
    assert await b.assignee(other) is None, "weight-0 agent must not get automatic work"
    await engine.transfer_to_agent(cid, "zoe")
    assert await b.assignee(cid) == "zoe"
    assert await b.assignee(other) == "lucia", "capacity freed by the transfer is used at once"
    await engine.set_status("marta", "online")
    third = await b.write("t", "Hola, una tercera")
    assert await b.assignee(third) == "marta"
    with pytest.raises(RoutingError, match="no free capacity"):
        await engine.transfer_to_agent(other, "marta")
    conv = await store.get_conversation(other)
    assert conv is not None
    await engine.put_agent(agent("joao", {"pt": 5}, chat=1))
    await engine.set_status("joao", "online")
    await engine.transfer_to_queue(conv, "pt")
    s = await engine.routing_state(other)
    assert s["queue"] == "pt" and s["assignee"] == "joao"
    assert (await engine.agent_state("lucia"))["conversations"] == []
    assert any(e["event"] == "transferred" for e in await engine.explain(other))
    with pytest.raises(RoutingError):
        await engine.transfer_to_queue(conv, "nope")


async def test_sla_breach_raises_priority_and_is_recorded(make_engine: Build,
                                                          store: Store) -> None:
    engine = await make_engine(
        [agent("lucia", {"es": 5}, chat=1)],
        sla={"chat": SlaPolicy(first_response_minutes=5, always=True)},
    )
    b = Buyers(store, engine)
    late = await b.write("late", "Hola, ¿dónde está mi pedido?")
    fresh = await b.write("fresh", "Hola, otra pregunta")
    await engine.fire_due_timers(now=time.time() + 301)
    state = await engine.routing_state(late)
    assert "breached:first" in state and int(state["priority"]) > 0
    assert any(e["event"] == "sla_breach" for e in await engine.explain(late))
    # both breached; the older one is served first (same priority then age)
    await engine.set_status("lucia", "online")
    assert await b.assignee(late) == "lucia" and await b.assignee(fresh) is None


async def test_sla_not_breached_after_agent_reply(make_engine: Build, store: Store) -> None:
    engine = await make_engine(
        [agent("lucia", {"es": 5})],
        sla={"chat": SlaPolicy(first_response_minutes=5, always=True)},
    )
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    cid = await b.write("x", "Hola, ¿dónde está mi pedido?")
    await engine.agent_replied(cid)
    await engine.fire_due_timers(now=time.time() + 301)
    assert "breached:first" not in await engine.routing_state(cid)


async def test_working_hours_end_of_shift_requeues(make_engine: Build, store: Store) -> None:
    all_week = {d: [("00:00", "24:00")] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    never = {"mon": [("00:00", "00:01")]}
    engine = await make_engine([agent("day", {"es": 5}, working_hours=all_week),
                                agent("night", {"es": 5}, working_hours=never)])
    await engine.set_status("day", "online")
    await engine.set_status("night", "online")
    assert (await engine.agent_state("night"))["status"] in ("offline", "online")
    b = Buyers(store, engine)
    cid = await b.write("x", "Hola, ¿dónde está mi pedido?")
    assert await b.assignee(cid) == "day"
    # Jump to a Monday 12:00 UTC: "day" still on shift, "night" off shift.
    monday_noon = 1795780800.0  # 2026-11-30 (Mon) 12:00 UTC
    await engine.check_presence(now=monday_noon)
    assert (await engine.agent_state("night"))["status"] == "offline"
    assert (await engine.agent_state("day"))["status"] == "online"


async def test_lost_heartbeat_takes_agent_offline(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5})])
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    cid = await b.write("x", "Hola, ¿dónde está mi pedido?")
    await engine.check_presence(heartbeat_grace=60, now=time.time() + 30)
    assert await b.assignee(cid) == "lucia"
    await engine.check_presence(heartbeat_grace=60, now=time.time() + 61)
    assert await b.assignee(cid) is None
    assert (await engine.routing_state(cid))["status"] == "waiting"


async def test_a_presence_check_never_undoes_a_status_change_made_after_its_read(
        make_engine: Build, store: Store) -> None:
    """The race behind buyers left queued beside an agent who had just gone online: the
    periodic check read her presence ("offline"), she went online, and the check then
    placed her offline. A placement now holds only while the presence it was computed from
    does (routing.lua's ``agent``, atomically)."""
    engine = await make_engine([agent("lucia", {"es": 5})])
    stale = await engine.state.presence("lucia")  # what a check read: nothing yet
    await engine.set_status("lucia", "online")
    lucia = await engine.agent("lucia")
    assert lucia is not None
    await engine._place_as(lucia, "offline", time.time(), expect_presence=stale or "")
    assert (await engine.agent_state("lucia"))["status"] == "online"
    b = Buyers(store, engine)
    assert await b.assignee(await b.write("x", "Hola, ¿dónde está mi pedido?")) == "lucia"
    # With the presence it was computed from still in place, the placement applies.
    await engine.set_status("lucia", "away")
    await engine._place_as(lucia, "offline", time.time(), expect_presence="away")
    assert (await engine.agent_state("lucia"))["status"] == "offline"


async def test_language_correction_reroutes(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}), agent("joao", {"pt": 5})])
    await engine.set_status("lucia", "online")
    await engine.set_status("joao", "online")
    b = Buyers(store, engine)
    cid = await b.write("x", "pedido", hints=ChannelHints(language="es"))
    assert await b.assignee(cid) == "lucia"
    conv = await store.get_conversation(cid)
    msgs = await store.get_messages(cid)
    msg = await store.load_inbound(msgs[0].id)
    assert conv is not None and msg is not None
    await engine.correct_language(conv, "pt", msg)
    assert await b.assignee(cid) == "joao"
    assert (await store.get_conversation(cid)).language == "pt"  # type: ignore[union-attr]


async def test_further_message_keeps_assignment(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}), agent("marta", {"es": 5})])
    await engine.set_status("lucia", "online")
    await engine.set_status("marta", "online")
    b = Buyers(store, engine)
    cid = await b.write("x", "Hola, ¿dónde está mi pedido?")
    owner = await b.assignee(cid)
    again = await b.write("x", "¿Hola? ¿Alguien?")
    assert again == cid and await b.assignee(cid) == owner
    state = await engine.agent_state(owner or "")
    assert state["load:chat"] == "1"


async def test_reload_requeues_work_of_removed_queues(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("emma", {"en": 5})])
    b = Buyers(store, engine)
    cid = await b.write("x", "Olá, cadê meu pedido?")
    assert (await engine.routing_state(cid))["queue"] == "pt"
    new_cfg = msgspec.structs.replace(engine.cfg, queues=[ES, EN],
                                      rules=[r for r in RULES if r.queue in ("es", "en")])
    moved = await reload_engine(engine, new_cfg)
    assert moved == 1
    assert (await engine.routing_state(cid))["queue"] == "default"
    await engine.set_status("emma", "online")
    assert await b.assignee(cid) == "emma"


def test_queue_priority_then_age_ordering() -> None:
    """Priority dominates age in the waiting score (score = -priority * 1e10 + enqueued_at)."""
    high_late = -5 * 1e10 + 1_900_000_000
    low_early = 0 * 1e10 + 1_700_000_000
    assert high_late < low_early


async def test_sla_policy_per_channel_type_wins_over_kind(make_engine: Build,
                                                         store: Store) -> None:
    engine = await make_engine(
        [agent("lucia", {"es": 5})],
        sla={"chat": SlaPolicy(first_response_minutes=60, always=True),
             "telegram": SlaPolicy(first_response_minutes=2, always=True)},
    )
    b = Buyers(store, engine)
    tg = await b.write("t", "Hola, ¿dónde está mi pedido?", channel="telegram")
    api = await b.write("a", "Hola, ¿dónde está mi pedido?", channel="api")
    tg_due = float((await engine.routing_state(tg))["sla:first"])
    api_due = float((await engine.routing_state(api))["sla:first"])
    assert 110 < tg_due - time.time() <= 120 and api_due - time.time() > 3500
    await engine.fire_due_timers(now=time.time() + 121)
    assert "breached:first" in await engine.routing_state(tg)
    assert "breached:first" not in await engine.routing_state(api)
