"""Provider rate limits, shared by every hub process.

An adapter declares what its provider allows in ``Capabilities.rate_limits`` (Telegram: about
30 messages/s per bot and 1/s per chat; eBay: 75 calls per 60 s per seller). Before every send
the hub takes a turn under each of them from one limiter shared by all processes
(``storage/limiter.py``, one Lua step in Redis): a send that has to wait is rescheduled, never
dropped and never counted as a failed attempt, and it waits in a retry set, not in a sender
slot, so a limited channel never holds up another channel's sends.

A limit is a token bucket: ``burst`` sends may go at once, then one every ``1 / rate`` seconds.
``scope`` says who shares a bucket: ``"account"`` is the whole channel instance (the bot, the
seller); ``"recipient"`` is one bucket per conversation partner as the provider addresses a
reply, i.e. the reply's ``thread_id`` (Telegram chat id, WhatsApp phone number).

A waiting send holds a *ticket* (its reply id): its place in line is reserved, so twenty replies
to one chat wake one per second in the order they were queued, rather than all retrying at once
and overtaking each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from channels.models import OutboundReply

Scope = Literal["account", "recipient"]

# Waits up to this long are slept where the send is (a sender slot, briefly); longer ones are
# handed back to be rescheduled, so a slot is never held for long.
MAX_INLINE_WAIT_SECONDS = 0.25
# A ticket presented again within this many inline rounds is granted; more means the clock or
# the limits moved under us, and the send is rescheduled instead of spinning here.
_INLINE_ROUNDS = 4


class RateLimit(msgspec.Struct, frozen=True):
    """``rate`` sends per second with bursts of ``burst``, per ``scope`` (see the module doc).

    A provider that states "N calls per W seconds" over a sliding window is met by
    ``RateLimit.within(N, W)``: a bucket never allows more than ``burst + rate * W`` sends in W
    seconds, so the rate is chosen to keep that at N.
    """

    scope: Scope
    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 sends per second, got {self.rate!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst!r}")

    @classmethod
    def within(cls, calls: int, seconds: float, scope: Scope = "account",
               burst: int = 1) -> RateLimit:
        """At most ``calls`` sends in any ``seconds``-long window (eBay: 75 per 60 s)."""
        if not 1 <= burst < calls:
            raise ValueError(f"burst must be between 1 and {calls - 1}, got {burst}")
        return cls(scope, (calls - burst) / seconds, burst)

    @property
    def name(self) -> str:
        """Stable per declared limit: a changed rate starts a fresh bucket."""
        return f"{self.scope[0]}{self.rate!r}x{self.burst}"


class RateLimiter(Protocol):
    async def acquire(self, instance: str, limits: Sequence[RateLimit], *,
                      recipient: str | None = None, ticket: str | None = None,
                      cost: float = 1.0) -> float:
        """Take ``cost`` tokens from every bucket ``limits`` name for ``instance`` (and
        ``recipient``, for recipient-scoped ones; they are skipped without one), all or none.

        Returns 0 when the send may go now. Otherwise the seconds to wait: with a ``ticket``
        the send's place is reserved and calling again with the same ticket once that time has
        passed grants it (never charging twice; before then it returns the time still left);
        without one nothing is taken and the caller simply asks again later. A ticket that is
        never presented again is forgotten after a grace period.
        """
        ...


async def pace(limiter: RateLimiter, reply: OutboundReply, limits: Sequence[RateLimit], *,
               max_inline_wait: float = MAX_INLINE_WAIT_SECONDS) -> float:
    """Take a reply's turn under its channel's limits: how the hub (and the kit) apply them.

    Returns 0 when the reply may be sent now; otherwise the seconds after which it must be
    presented again (its ticket, the reply id, holds its place meanwhile). Waits up to
    ``max_inline_wait`` are slept here so that a short pause does not cost a round trip
    through the retry set.
    """
    if not limits:
        return 0.0
    for _ in range(_INLINE_ROUNDS):
        wait = await limiter.acquire(reply.channel_instance, limits, recipient=reply.thread_id,
                                     ticket=reply.reply_id)
        if wait <= 0:
            return 0.0
        if wait > max_inline_wait:
            return wait
        await asyncio.sleep(wait)
    return await limiter.acquire(reply.channel_instance, limits, recipient=reply.thread_id,
                                 ticket=reply.reply_id)
