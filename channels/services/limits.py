"""Provider rate limits, shared by every hub process: a token bucket in Redis per key (account,
or account + recipient), declared by each adapter in its capabilities."""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec


class RateLimit(msgspec.Struct, frozen=True):
    """``rate`` sends per second with bursts of ``burst``; ``scope`` says what shares a bucket:
    the whole account (Telegram ~30/s per bot) or one recipient (1/s per chat)."""

    scope: Literal["account", "recipient"]
    rate: float
    burst: int = 1


class RateLimiter(Protocol):
    async def acquire(self, key: str, limit: RateLimit, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0 when granted, else the seconds until they would be
        (nothing is taken then: the caller reschedules, it never drops)."""
        ...
