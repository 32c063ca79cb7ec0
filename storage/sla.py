"""The SLA-due list: conversations with a running SLA clock, soonest deadline first.

The index is ``ih:{r}:sla:due`` (``keys.ROUTING_SLA_DUE``): member = conversation, score = the
soonest deadline among its running clocks (``run:<clock>`` of its routing state). It lives under
the routing hash tag, not in the partitions, because the clocks do: routing.lua writes it in the
very step that starts a clock (enqueue, the buyer's follow-up), stops one (an agent's answer
stops first and next; release on resolve, erasure or a move stops all) or judges one (a breach
keeps the clock running, now overdue), so it can never disagree with the clocks, a crash
included. A breached conversation stays listed until its clock stops.

A page walks the index in (deadline, id) order and filters each chunk through the partitions'
own list predicates (``Store.pick_conversations``: the same filters and agent visibility as the
activity-ordered list), so the list is exact. Work is bounded: at most ``SCAN_BUDGET`` index
entries per page; a page that stops there is short but carries a cursor (rare: it takes that
many running clocks outside the caller's filters ahead of the next match).
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
    budget: int = SCAN_BUDGET,
) -> DeadlinePage:
    """Conversations with a running SLA clock due at or before ``due_by`` (None: any), that
    match ``filters`` and ``visibility``, in (deadline, id) order after ``after``."""
    redis: Any = store.redis
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


def _page(found: list[tuple[str, float, Conversation]], limit: int,
          nxt: Position | None) -> DeadlinePage:
    rows = found[:limit]
    return DeadlinePage([c for _, _, c in rows], {cid: s for cid, s, _ in rows}, nxt)


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
