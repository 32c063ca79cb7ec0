"""The conversation list inside Redis (storage/lua/conversations.lua) against a model.

Random records over two partitions, many sharing a timestamp, paged with every plan the
script has (walk, driver, bounded scan, scan + intersect: the thresholds are lowered so a few
hundred records reach each) and compared with the same query done in Python: every page is
full but the last, nothing is repeated or skipped, the order is (activity, id) descending.
The indexes follow every write and heal when the hash was changed behind them.
"""

from __future__ import annotations

import random
from typing import Any

from channels.models import InboundMessage
from storage.store import ConversationFilter, Position, Store, Visibility

STATUSES = ("new", "queued", "assigned", "resolved")
AGENTS = ("ana", "bruno", "zoe")
LANGS = ("es", "pt", "en")


def message(i: int, instance: str = "shop", channel: str = "api") -> InboundMessage:
    return InboundMessage(channel_type=channel, channel_instance=instance,
                          provider_message_id=f"m{i}", thread_id=f"t{i}",
                          sender_handle=f"s{i}", text="hola")


async def seed(store: Store, n: int, rng: random.Random) -> dict[str, dict[str, Any]]:
    """n conversations with random fields and activity; returns the model."""
    model: dict[str, dict[str, Any]] = {}
    for i in range(n):
        instance = rng.choice(("shop", "shop", "outlet"))
        result = await store.ingest(message(i, instance))
        cid = result.conversation_id
        status = rng.choice(STATUSES)
        fields = {
            "status": status,
            "language": rng.choice(LANGS),
            "market": rng.choice(("MX", "BR", "")),
            "assignee": rng.choice(AGENTS) if status == "assigned" else "",
            "queue": rng.choice(("es", "pt")),
            "pool": rng.choice(("es#1", "pt#1")) if status == "queued" else "",
        }
        await store.update_conversation(cid, fields)
        score = float(rng.randrange(40)) * 10 + 1_700_000_000.5  # many ties on purpose
        k = store.keys_for(cid)
        assert k is not None
        await store.redis.zadd(k.conversations, {cid: score})
        model[cid] = {**fields, "channel": "api", "channel_instance": instance, "score": score}
    return model


def expected(model: dict[str, dict[str, Any]], f: ConversationFilter,
             v: Visibility | None) -> list[str]:
    def ok(row: dict[str, Any]) -> bool:
        for name in ("status", "language", "market", "assignee", "queue"):
            values = getattr(f, name)
            if values and row[name] not in values:
                return False
        if f.channel and not {row["channel"], row["channel_instance"]} & set(f.channel):
            return False
        if v is not None:
            mine = row["assignee"] == v.agent
            waiting = row["status"] == "queued" and row["pool"] in v.pools
            if not (mine or waiting):
                return False
        return True

    rows = [(row["score"], cid) for cid, row in model.items() if ok(row)]
    return [cid for _, cid in sorted(rows, reverse=True)]


async def page_all(store: Store, limit: int, f: ConversationFilter, v: Visibility | None,
                   **tuning: Any) -> tuple[list[str], set[str]]:
    seen: list[str] = []
    plans: set[str] = set()
    after: Position | None = None
    while True:
        page = await store.page_conversations(limit=limit, after=after, filters=f,
                                              visibility=v, **tuning)
        plans.update(page.plans)
        seen.extend(c.id for c in page.conversations)
        if page.next is None:
            return seen, plans
        assert len(page.conversations) == limit, "a page before the last one is short"
        after = page.next


FILTERS = [
    (ConversationFilter(), None),
    (ConversationFilter(status=("assigned",)), None),
    (ConversationFilter(status=("queued",), language=("es",)), None),
    (ConversationFilter(channel=("outlet",), market=("MX", "BR")), None),
    (ConversationFilter(channel=("api",), queue=("pt",)), None),
    (ConversationFilter(assignee=("zoe",), language=("pt",)), None),
    (ConversationFilter(), Visibility("ana", ("es#1",))),
    (ConversationFilter(status=("queued",)), Visibility("bruno", ("es#1", "pt#1"))),
    (ConversationFilter(language=("en",)), Visibility("ana", ())),
    (ConversationFilter(status=("new",)), None),
]

TUNINGS = [
    {},                                  # production thresholds: "driver" for these sizes
    {"small_driver": 0, "min_scan": 10_000},  # bounded scan that finishes
    {"small_driver": 0, "min_scan": 1},       # scan, then intersect
    {"small_driver": 5, "min_scan": 3},
]


async def test_paging_matches_the_model_under_every_plan(store: Store) -> None:
    model = await seed(store, 300, random.Random(7))
    plans: set[str] = set()
    for f, v in FILTERS:
        want = expected(model, f, v)
        for tuning in TUNINGS:
            for limit in (3, 60):
                got, used = await page_all(store, limit, f, v, **tuning)
                plans |= used
                assert got == want, (f, v, tuning, limit)
    assert plans == {"all", "driver", "scan", "scan+intersect"}


async def test_before_is_a_position_past_every_id_at_that_time(store: Store) -> None:
    model = await seed(store, 60, random.Random(3))
    cut = sorted({row["score"] for row in model.values()})[len(model) // 4]
    page = await store.page_conversations(limit=200, after=Position(repr(cut)))
    assert [c.id for c in page.conversations] == [
        cid for cid in expected(model, ConversationFilter(), None) if model[cid]["score"] < cut]
    listed = await store.list_conversations(limit=200, before=cut)
    assert [c.id for c in listed] == [c.id for c in page.conversations]


async def test_indexes_follow_writes_and_heal(store: Store) -> None:
    first = await store.ingest(message(1))
    cid = first.conversation_id

    async def ids(**f: Any) -> list[str]:
        page = await store.page_conversations(filters=ConversationFilter(**f))
        return [c.id for c in page.conversations]

    assert await ids(status=("new",)) == [cid], "indexed at ingest, before any routing"
    assert await ids(channel=("shop",)) == [cid] == await ids(channel=("api",))
    await store.update_conversation(cid, {"status": "queued", "pool": "es#1", "queue": "es"})
    assert await ids(status=("new",)) == []
    assert await ids(status=("queued",)) == [cid] == await ids(queue=("es",))
    page = await store.page_conversations(visibility=Visibility("ana", ("es#1",)))
    assert [c.id for c in page.conversations] == [cid]
    await store.update_conversation(cid, {"status": "assigned", "assignee": "ana", "pool": ""})
    page = await store.page_conversations(visibility=Visibility("bruno", ("es#1",)))
    assert page.conversations == [], "assigned: no longer waiting in the pool"
    await store.update_conversation(cid, {"status": "resolved", "assignee": ""})
    assert await ids(status=("resolved",)) == [cid]
    assert await ids(assignee=("ana",)) == []

    # ingest.lua reopens a resolved conversation by writing the hash alone: the list never
    # shows it under the stale index, and the next write (or a reindex) puts it right.
    second = await store.ingest(InboundMessage(
        channel_type="api", channel_instance="shop", provider_message_id="m2", thread_id="t1",
        sender_handle="s1", text="otra vez"))
    assert second.conversation_id == cid and not second.new_conversation
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation.status == "new"
    assert await ids(status=("resolved",)) == []
    assert await store.reindex_conversation(cid)
    assert await ids(status=("new",)) == [cid]
    k = store.keys_for(cid)
    assert k is not None
    members = await store.redis.smembers(k.index("status", "resolved"))
    assert members == set()


async def test_update_of_a_missing_record_writes_nothing(store: Store) -> None:
    ghost = "0.00ff00ff00"
    assert await store.update_conversation(ghost, {"status": "queued"}) is False
    k = store.keys_for(ghost)
    assert k is not None
    assert not await store.redis.exists(k.conversation(ghost), k.index("status", "queued"))


async def test_backfill_indexes_records_written_before_the_indexes(store: Store) -> None:
    """An upgrade: records without `_idx` (and without the mirrored pool) become findable."""
    from storage import keys

    cids = [(await store.ingest(message(i))).conversation_id for i in range(3)]
    for cid in cids:  # what a record written by the previous release looks like
        k = store.keys_for(cid)
        assert k is not None
        await store.redis.hset(k.conversation(cid), mapping={"status": "queued",
                                                             "queue": "es"})
        await store.redis.hdel(k.conversation(cid), "_idx")
        await store.redis.delete(k.index("status", "new"))
    await store.redis.hset(keys.routing_state(cids[0]),
                           mapping={"status": "waiting", "pool": "es#1"})
    page = await store.page_conversations(filters=ConversationFilter(status=("queued",)))
    assert page.conversations == []
    assert await store.backfill_indexes(batch=2) == 3
    page = await store.page_conversations(filters=ConversationFilter(status=("queued",)))
    assert {c.id for c in page.conversations} == set(cids)
    page = await store.page_conversations(visibility=Visibility("ana", ("es#1",)))
    assert [c.id for c in page.conversations] == [cids[0]]
