"""The SLA deadline index (``ih:{r}:sla:due``) against real routing: written by the very steps
that start, stop and judge the clocks, read in deadline order through the partitions' filters,
exact across ties and the scan budget, cleaned on resolve and erasure, and backfilled by the
schema 5 upgrade from what an older release stored."""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.models import ChannelHints
from hub.erasure import erase_contact
from routing.config import SlaPolicy
from storage import keys, schema, sla
from storage.store import ConversationFilter, Store, Visibility
from tests.routing.test_routing import Build, Buyers, agent, make_engine

__all__ = ["make_engine"]  # the fixture, used by name

CLOCKS = {"chat": SlaPolicy(first_response_minutes=5, next_response_minutes=3,
                            resolution_minutes=600, always=True)}


async def due(redis: Redis) -> dict[str, float]:
    return {m.decode(): s for m, s in await redis.zrange(keys.ROUTING_SLA_DUE, 0, -1,
                                                         withscores=True)}


async def test_clocks_start_stop_and_breach_move_the_index(make_engine: Build,
                                                           store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)], sla=CLOCKS)
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    mine = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    waiting = await b.write("eva", "Hola, mi pedido llegó roto")
    state = await engine.routing_state(mine)
    assert state["run:first"] == state["sla:first"]
    index = await due(store.redis)
    assert set(index) == {mine, waiting}
    assert index[mine] == float(state["sla:first"])  # the soonest running clock
    assert index[mine] < index[waiting]

    # An agent's answer stops first (and next); resolution still runs.
    await engine.agent_replied(mine)
    state = await engine.routing_state(mine)
    assert "run:first" not in state and state["sla:first"]  # the deadline stays on record
    assert (await due(store.redis))[mine] == float(state["sla:resolution"])

    # The buyer writes again: the next-response clock starts, in the same step.
    await b.write("ana", "¿Hay novedades?")
    state = await engine.routing_state(mine)
    assert (await due(store.redis))[mine] == float(state["sla:next"]) \
        < float(state["sla:resolution"])

    # A breach keeps the clock running: still listed, now overdue, priority raised.
    later = time.time() + 3600
    await engine.fire_due_timers(now=later)
    assert (await engine.routing_state(waiting)).get("breached:first")
    assert (await due(store.redis))[waiting] < later

    # Resolve stops every clock: out of the index at once; the freed agent's next one stays.
    await engine.release(mine)
    index = await due(store.redis)
    assert mine not in index and waiting in index


# Both plans of storage/sla.py: "driver" (small filter groups, the default) and "scan".
PLANS = pytest.mark.parametrize("small", [sla.SMALL_DRIVER, -1], ids=["driver", "scan"])


@PLANS
async def test_page_orders_by_deadline_filters_and_scopes(make_engine: Build, store: Store,
                                                          small: int) -> None:
    page_of = functools.partial(sla.page_by_deadline, store, small_driver=small)
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1),
                                agent("joao", {"pt": 5}, chat=1)], sla=CLOCKS)
    await engine.set_status("lucia", "online")
    await engine.set_status("joao", "online")
    b = Buyers(store, engine)
    es_mine = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    pt_theirs = await b.write("rui", "Olá, cadê meu pedido?",
                              hints=ChannelHints(language="pt"))
    es_wait = await b.write("eva", "Hola, mi pedido llegó roto")
    pt_wait = await b.write("bia", "Olá, o produto chegou quebrado",
                            hints=ChannelHints(language="pt"))
    order = [es_mine, pt_theirs, es_wait, pt_wait]
    for cid in order:  # what the hub's mirror loop does on each routing event
        await engine.mirror_event(cid)

    page = await page_of(limit=50)
    assert [c.id for c in page.conversations] == order and page.next is None
    assert list(page.deadlines.values()) == sorted(page.deadlines.values())

    page = await page_of(limit=50,
                                      filters=ConversationFilter(language=("pt",)))
    assert [c.id for c in page.conversations] == [pt_theirs, pt_wait]
    lucia = Visibility("lucia", tuple(await engine.state.agent_pool_ids("lucia")))
    page = await page_of(limit=50, visibility=lucia)
    assert [c.id for c in page.conversations] == [es_mine, es_wait]

    # Nothing is due yet; an hour from now, the first-response clocks have all run out.
    assert (await page_of(limit=50, due_by=time.time())).conversations == []
    page = await page_of(limit=50, due_by=time.time() + 3600)
    assert [c.id for c in page.conversations] == order

    # Paging one at a time visits the same order, each once.
    seen: list[str] = []
    after = None
    while True:
        page = await page_of(limit=1, after=after)
        seen += [c.id for c in page.conversations]
        if page.next is None:
            break
        after = page.next
    assert seen == order


@PLANS
async def test_ties_and_the_scan_budget_page_exactly(make_engine: Build, store: Store,
                                                     small: int) -> None:
    page_of = functools.partial(sla.page_by_deadline, store, small_driver=small)
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)])
    b = Buyers(store, engine)
    ids = [await b.write(f"b{i}", "Hola, ¿dónde está mi pedido?") for i in range(9)]
    # Nine clocks with one deadline (routing's own "sla" step starts them): ties by id.
    deadline = time.time() + 600
    for cid in ids:
        await engine.call("sla", cid, f"resolution:{time.time()!r}", repr(deadline))
    wanted = sorted(ids, key=str.encode)
    for limit, budget in ((2, 20_000), (4, 3), (1, 1)):
        seen: list[str] = []
        after = None
        for _ in range(30):
            page = await page_of(limit=limit, after=after, budget=budget)
            assert len(page.conversations) <= limit
            seen += [c.id for c in page.conversations]
            if page.next is None:
                break
            after = page.next
        assert seen == wanted, (limit, budget)
    # A filter matching one of them, in the middle of the ties: found by either plan; a
    # scan with a small budget answers short pages with cursors until it gets there.
    one = wanted[6]
    await store.update_conversation(one, {"tags": "vip"})
    only = ConversationFilter(tag=("vip",))
    page = await page_of(limit=5, filters=only)
    assert [c.id for c in page.conversations] == [one] and page.next is None
    got: list[str] = []
    after = None
    for _ in range(10):
        page = await page_of(limit=5, filters=only,
                                          budget=2, after=after)
        got += [c.id for c in page.conversations]
        if page.next is None:
            break
        assert small < 0 or page.conversations, "the driver plan needs no budget"
        after = page.next
    assert got == [one]


async def test_erasure_takes_the_conversation_out(make_engine: Build, store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)], sla=CLOCKS)
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    gone = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    kept = await b.write("eva", "Hola, mi pedido llegó roto")
    conversation = await store.get_conversation(gone)
    assert conversation is not None
    await erase_contact(store, engine, conversation.contact_id, actor="test")
    assert set(await due(store.redis)) == {kept}
    assert [c.id for c in (await sla.page_by_deadline(store, limit=10)).conversations] == [kept]


async def test_schema_5_upgrade_indexes_clocks_an_older_release_left(make_engine: Build,
                                                                     store: Store) -> None:
    engine = await make_engine([agent("lucia", {"es": 5}, chat=1)], sla=CLOCKS)
    await engine.set_status("lucia", "online")
    b = Buyers(store, engine)
    answered = await b.write("ana", "Hola, ¿dónde está mi pedido?")
    await engine.agent_replied(answered)
    await b.write("ana", "¿Hay novedades?")  # next runs again
    fresh = await b.write("eva", "Hola, mi pedido llegó roto")  # waiting, never answered
    quiet = await b.write("leo", "Hola, gracias")
    closed = await b.write("rosa", "Hola")
    await engine.release(closed)
    await engine.agent_replied(quiet)  # only resolution runs (it waits: lucia is full)
    expected = await due(store.redis)
    assert set(expected) == {answered, fresh, quiet}

    # What release 4 left: deadlines (sla:<clock>) and no record of which clocks run.
    redis: Any = store.redis
    for cid in (answered, fresh, quiet, closed):
        await redis.hdel(keys.routing_state(cid), "run:first", "run:next", "run:resolution")
    await redis.delete(keys.ROUTING_SLA_DUE)
    await redis.set(keys.SCHEMA_VERSION, 4)

    assert await schema.ensure_schema(redis, partitions=store.partitions) == 4
    assert await redis.get(keys.SCHEMA_VERSION) == str(schema.CURRENT).encode()
    assert await due(store.redis) == expected
    state = await engine.routing_state(answered)
    assert "run:first" not in state and state["run:next"] == state["sla:next"]
    assert "run:first" in await engine.routing_state(fresh)
    # Idempotent, and it never undoes what this release recorded.
    await engine.agent_replied(fresh)
    assert await sla.backfill(redis) == 0
    assert "run:first" not in await engine.routing_state(fresh)
