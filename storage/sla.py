"""The SLA-due list: conversations with a running SLA clock, soonest deadline first.

The index is ``ih:{r}:sla:due`` (``keys.ROUTING_SLA_DUE``): member = conversation, score = the
soonest deadline among its running clocks (``run:<clock>`` of its routing state). It lives under
the routing hash tag, not in the partitions, because the clocks do: routing.lua writes it in the
very step that starts a clock (enqueue, the buyer's follow-up), stops one (an agent's answer
stops first and next; release on resolve, erasure or a move stops all) or judges one (a breach
keeps the clock running, now overdue), so it can never disagree with the clocks, a crash
included. A breached conversation stays listed until its clock stops.

Two plans, both exact, both checking every row with the partitions' own list predicates
(``Store.pick_conversations``: the same filters and agent visibility as the activity-ordered
list). "driver": when the smallest filter group (an agent's own and their pools' conversations,
a tag, a queue) holds at most ``SMALL_DRIVER`` conversations in all partitions, those are read
from the partitions' filter indexes, given their deadlines (ZMSCORE) and sorted. "scan": walk
the index in (deadline, id) order, chunk by chunk; at most ``SCAN_BUDGET`` entries per page, and
a page that stops there is short but carries a cursor (it takes that many running clocks
outside broad filters ahead of the next match).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec

from storage import keys
from storage.records import Conversation
from storage.routing_store import RoutingStore
from storage.store import ConversationFilter, Position, Store, Visibility

log = logging.getLogger(__name__)

SMALL_DRIVER = 2000
FIRST_CHUNK = 200
MAX_CHUNK = 2000
SCAN_BUDGET = 20_000
_RC_KEY = re.compile(re.escape(keys.ROUTING_BASE + "rc:") + r"([0-9]{1,4}\.[0-9a-f]{1,40})")


class DeadlinePage(msgspec.Struct, frozen=True):
    """One page, soonest deadline first; ``deadlines`` maps each id to its soonest running
    deadline (UNIX seconds); ``next`` continues it (None: last page)."""

    conversations: list[Conversation]
    deadlines: dict[str, float]
    next: Position | None


async def page_by_deadline(
    store: Store, *, limit: int, after: Position | None = None, due_by: float | None = None,
    filters: ConversationFilter | None = None, visibility: Visibility | None = None,
    budget: int = SCAN_BUDGET, small_driver: int = SMALL_DRIVER,
) -> DeadlinePage:
    """Conversations with a running SLA clock due at or before ``due_by`` (None: any), that
    match ``filters`` and ``visibility``, in (deadline, id) order after ``after``. The
    thresholds choose the plan; tests lower them to drive both with little data."""
    redis: Any = store.redis
    groups = (filters or ConversationFilter()).groups()
    if visibility is not None:
        groups.append(visibility.group())
    driver = await _small_driver(store, groups, small_driver)
    if driver is not None:
        return await _driver_page(store, driver, limit=limit, after=after, due_by=due_by,
                                  filters=filters, visibility=visibility)
    high = "+inf" if due_by is None else repr(float(due_by))
    cur: tuple[float, bytes] | None = (None if after is None
                                       else (float(after.score), after.id.encode()))
    tie_offset = 0  # index entries at cur's deadline already passed (a long run of ties)
    chunk = FIRST_CHUNK
    examined = 0
    found: list[tuple[str, float, Conversation]] = []
    while len(found) <= limit and examined < budget:
        low = "-inf" if cur is None else repr(cur[0])
        want = min(chunk, budget - examined)
        raw = await redis.zrangebyscore(keys.ROUTING_SLA_DUE, low, high, start=tie_offset,
                                        num=want, withscores=True)
        fresh = [(m, float(s)) for m, s in raw
                 if cur is None or float(s) > cur[0] or (float(s) == cur[0] and m > cur[1])]
        if not fresh:
            if len(raw) < want:
                return _page(found, limit, None)
            tie_offset += len(raw)
            continue
        picked = await store.pick_conversations(
            [(m.decode(), repr(s)) for m, s in fresh], filters=filters, visibility=visibility)
        for member, score in fresh:
            examined += 1
            if cur is None or score != cur[0]:
                tie_offset = 0
            cur = (score, member)
            conversation = picked.get(member.decode())
            if conversation is not None:
                found.append((conversation.id, score, conversation))
                if len(found) > limit:
                    break
        if len(found) <= limit and len(raw) < want:
            return _page(found, limit, None)
        chunk = min(chunk * 2, MAX_CHUNK)
    if len(found) > limit:
        last = found[limit - 1]
        return _page(found, limit, Position(repr(last[1]), last[0]))
    assert cur is not None  # the budget was spent on entries examined
    log.info("SLA list: scan budget spent after %d index entries; the page continues", examined)
    return _page(found, limit, Position(repr(cur[0]), cur[1].decode()))


async def _small_driver(store: Store, groups: list[list[tuple[str, str]]],
                        small: int) -> list[bytes] | None:
    """The members of the smallest filter group over all partitions, or None when there is
    no group or it holds more than ``small`` (then the index is scanned instead)."""
    if not groups:
        return None
    redis: Any = store.redis
    parts = store.partition_keys()
    async with redis.pipeline(transaction=False) as pipe:
        for k in parts:
            for group in groups:
                for field, value in group:
                    pipe.scard(k.index(field, value))
        sizes = iter(await pipe.execute())
    totals = [0] * len(groups)
    for _k in parts:
        for g, group in enumerate(groups):
            totals[g] += sum(int(next(sizes)) for _ in group)
    smallest = min(range(len(groups)), key=totals.__getitem__)
    if totals[smallest] > small:
        return None
    async with redis.pipeline(transaction=False) as pipe:
        for k in parts:
            pipe.sunion([k.index(field, value) for field, value in groups[smallest]])
        members: set[bytes] = set().union(*await pipe.execute())
    return sorted(members)


async def _driver_page(
    store: Store, driver: list[bytes], *, limit: int, after: Position | None,
    due_by: float | None, filters: ConversationFilter | None, visibility: Visibility | None,
) -> DeadlinePage:
    redis: Any = store.redis
    cur = None if after is None else (float(after.score), after.id.encode())
    rows: list[tuple[float, bytes]] = []
    for lo in range(0, len(driver), 1000):
        batch = driver[lo:lo + 1000]
        for member, score in zip(batch, await redis.zmscore(keys.ROUTING_SLA_DUE, batch),
                                 strict=True):
            if score is None or (due_by is not None and score > due_by):
                continue
            if cur is None or (score, member) > cur:
                rows.append((float(score), member))
    rows.sort()
    found: list[tuple[str, float, Conversation]] = []
    for lo in range(0, len(rows), FIRST_CHUNK):
        chunk = rows[lo:lo + FIRST_CHUNK]
        picked = await store.pick_conversations(
            [(m.decode(), repr(s)) for s, m in chunk], filters=filters, visibility=visibility)
        for score, member in chunk:
            conversation = picked.get(member.decode())
            if conversation is not None:
                found.append((conversation.id, score, conversation))
        if len(found) > limit:
            last = found[limit - 1]
            return _page(found, limit, Position(repr(last[1]), last[0]))
    return _page(found, limit, None)


def _page(found: list[tuple[str, float, Conversation]], limit: int,
          nxt: Position | None) -> DeadlinePage:
    rows = found[:limit]
    return DeadlinePage([c for _, _, c in rows], {cid: s for cid, s, _ in rows}, nxt)


async def deadlines_of(store: Store, ids: list[str]) -> dict[str, float]:
    """The soonest running SLA deadline of each of ``ids`` that has a running clock (one
    ZMSCORE on the index routing keeps exact): what a list page shows as its countdown,
    without reading any conversation's routing state."""
    if not ids:
        return {}
    redis: Any = store.redis
    scores = await redis.zmscore(keys.ROUTING_SLA_DUE, ids)
    return {cid: float(score) for cid, score in zip(ids, scores, strict=True)
            if score is not None}


async def backfill(redis: Any) -> int:
    """Schema 5: index the running clocks of conversations an older release routed (which
    kept deadlines but not which clocks still run; routing.lua ``sla_adopt`` derives them in
    one atomic step each, and leaves alone what this release recorded). Returns how many
    conversations it listed."""
    state = RoutingStore(redis)
    listed = 0
    async for key in redis.scan_iter(match=keys.ROUTING_BASE + "rc:*", count=1000):
        match = _RC_KEY.fullmatch(key.decode() if isinstance(key, bytes) else str(key))
        if match is not None:
            listed += int(await state.decide("sla_adopt", match.group(1)))
    return listed
