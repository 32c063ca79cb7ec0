"""What supervisors watch that routing does not keep as a figure: how long the oldest
conversation of a queue step has been waiting.

A waiting set's score is ``-priority * 1e10 + enqueued_at`` (storage/lua/routing.lua), so its
head is the most urgent, not the oldest. Within one priority the lowest score is the oldest,
so the oldest overall is found by reading the head of each priority band: one ZRANGEBYSCORE
per band present, at most ``MAX_BANDS`` (priorities are a handful of small integers; a boost
per SLA breach or requeue adds a few).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from storage import keys

BAND = 1e10
MAX_BANDS = 32


def wait_set(pool: str, kind: str) -> str:
    return f"{keys.ROUTING_BASE}pool:{pool}:wait:{kind}"


async def oldest_enqueued(redis: Any, pool: str, kinds: Iterable[str]) -> float | None:
    """When the longest-waiting conversation of ``pool`` (any kind) entered it; None when
    nobody waits."""
    oldest: float | None = None
    for kind in kinds:
        low = "-inf"
        for _ in range(MAX_BANDS):
            head = await redis.zrangebyscore(wait_set(pool, kind), low, "+inf", start=0, num=1,
                                             withscores=True)
            if not head:
                break
            score = float(head[0][1])
            band = math.floor(score / BAND)
            enqueued = score - band * BAND
            oldest = enqueued if oldest is None else min(oldest, enqueued)
            low = repr((band + 1) * BAND)
    return oldest
