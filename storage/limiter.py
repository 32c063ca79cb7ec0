"""The shared rate limiter on Redis: ``channels.services.limits.RateLimiter`` as one Lua step.

Every hub process asks the same buckets (``storage/lua/limiter.lua``), so the limits hold for
the whole deployment, not per process. The decision uses Redis's clock, never the caller's, so
hub hosts whose clocks disagree still share one timeline; the wait returned is a duration,
which each process adds to its own clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from channels.services.limits import RateLimit
from storage import keys
from storage.scripts import load_script

# How long a reservation is remembered after its slot. A reply comes back for its slot through
# the retry set within a fraction of a second; this covers a hub that crashed holding the reply
# (its lease and the outbox claim must run out first) without letting erased replies' tickets
# linger.
DEFAULT_GRACE_SECONDS = 600.0


def digest(value: str) -> str:
    """Recipients and tickets enter key names and fields only as this digest (no buyer data)."""
    return hashlib.blake2b(value.encode(), digest_size=10).hexdigest()


class RedisLimiter:
    """``RateLimiter`` shared by every process on one Redis (or Cluster)."""

    def __init__(self, redis: Redis, *, grace_seconds: float = DEFAULT_GRACE_SECONDS,
                 clock: Callable[[], float] | None = None) -> None:
        """``clock`` pins the decision's time (tests only); by default Redis's TIME decides."""
        self._script = load_script(redis, "limiter")
        self.grace_seconds = grace_seconds
        self._clock = clock

    async def acquire(self, instance: str, limits: Sequence[RateLimit], *,
                      recipient: str | None = None, ticket: str | None = None,
                      cost: float = 1.0) -> float:
        per_recipient, per_account = split(limits, recipient)
        if not per_recipient and not per_account:
            return 0.0
        args: list[Any] = [digest(ticket) if ticket else "", repr(float(cost)),
                           repr(self.grace_seconds), len(per_recipient), len(per_account),
                           repr(self._clock()) if self._clock else ""]
        for lim in (*per_recipient, *per_account):
            args += [repr(float(lim.rate)), lim.burst]
        wait = await self._script(keys=decision_keys(instance, limits, recipient), args=args)
        return max(0.0, float(wait))


def split(limits: Sequence[RateLimit],
          recipient: str | None) -> tuple[list[RateLimit], list[RateLimit]]:
    """(recipient-scoped, account-scoped) limits that apply; recipient ones need a recipient."""
    per_recipient = [lim for lim in limits if lim.scope == "recipient" and recipient is not None]
    return per_recipient, [lim for lim in limits if lim.scope == "account"]


def decision_keys(instance: str, limits: Sequence[RateLimit],
                  recipient: str | None) -> list[str]:
    """The KEYS of one decision (limiter.lua's header), all under the instance's hash tag."""
    per_recipient, per_account = split(limits, recipient)
    who = digest(recipient) if recipient is not None else ""
    names = [keys.limiter_tickets(instance), keys.limiter_ticket_expiry(instance)]
    for lim in per_recipient:
        names.append(keys.limiter_bucket(instance, lim.name, f"{who}:turn"))
        names.append(keys.limiter_bucket(instance, lim.name, f"{who}:sent"))
    return names + [keys.limiter_bucket(instance, lim.name) for lim in per_account]
