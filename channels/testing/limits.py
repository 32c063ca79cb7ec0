"""The rate-limit battery: a channel's declared limits are honoured without dropping a reply and
without holding up anyone else's.

Mix ``RateLimitBattery`` into a channel's conformance class when its provider limits sends
(``Capabilities.rate_limits``). It needs nothing beyond the core harness: replies go through
``channels.services.limits.pace`` (what the hub's sender does before every send) with the
``kit_limiter`` fixture, ``MemoryLimiter`` by default, so a plugin author runs it without Redis;
inboxhub's own channels override ``kit_limiter`` with ``storage.limiter.RedisLimiter``.

The battery checks, for the adapter's own declared limits:

* many replies to one recipient all reach the provider (none dropped), in the order they were
  queued, never faster than the recipient limit allows;
* meanwhile replies to another recipient (when only recipient limits bind) go straight through:
  a busy chat does not stall the others;
* two hub processes (two limiter clients on one backend) share one bucket.

``MemoryLimiter`` is the reference implementation of ``storage/lua/limiter.lua`` in Python, step
for step (the repository's tests run both on the same pinned clock and compare every decision).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import msgspec
import pytest

from channels.models import OutboundReply
from channels.services.limits import RateLimit, RateLimiter, pace
from channels.testing.core import ConformanceHarness, IngestGate

_EPS = 0.000001


class _Bucket:
    __slots__ = ("c", "earliest", "key", "rate", "tat")

    def __init__(self, key: str, rate: float, burst: int, tat: float, cost: float) -> None:
        self.key, self.rate = key, rate
        self.tat = tat
        self.c = min(cost, burst)
        self.earliest = tat + (self.c - burst) / rate


class MemoryLimiter:
    """``RateLimiter`` in one process's memory, with the same decisions as the Redis one."""

    def __init__(self, *, grace_seconds: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_seconds = grace_seconds
        self.clock = clock
        self._tat: dict[str, float] = {}  # bucket -> theoretical arrival time
        self._tickets: dict[str, tuple[str, float, float]] = {}  # -> (phase, slot, forget at)
        self._lock = asyncio.Lock()

    async def acquire(self, instance: str, limits: Sequence[RateLimit], *,
                      recipient: str | None = None, ticket: str | None = None,
                      cost: float = 1.0) -> float:
        async with self._lock:  # one decision at a time, as a Lua step is
            return self.decide(instance, limits, recipient=recipient, ticket=ticket,
                               cost=cost, now=self.clock())

    def decide(self, instance: str, limits: Sequence[RateLimit], *, recipient: str | None,
               ticket: str | None, cost: float, now: float) -> float:
        per_recipient = [lim for lim in limits if lim.scope == "recipient"] \
            if recipient is not None else []
        per_account = [lim for lim in limits if lim.scope == "account"]
        if not per_recipient and not per_account:
            return 0.0
        for key, (_phase, _slot, forget) in list(self._tickets.items()):
            if forget <= now:
                del self._tickets[key]
        tkey = f"{instance}\x00{ticket}" if ticket else ""

        if len(self._tat) > 10_000:  # full buckets carry no information (Redis expires them)
            self._tat = {k: v for k, v in self._tat.items() if v > now}

        def bucket(key: str, lim: RateLimit) -> _Bucket:
            return _Bucket(key, lim.rate, lim.burst, self._tat.get(key, now), cost)

        turns = [bucket(f"{instance}\x00{lim.name}\x00{recipient}\x00turn", lim)
                 for lim in per_recipient]
        sents = [bucket(f"{instance}\x00{lim.name}\x00{recipient}\x00sent", lim)
                 for lim in per_recipient]
        accounts = [bucket(f"{instance}\x00{lim.name}", lim) for lim in per_account]

        def store(b: _Bucket, tat: float) -> None:
            b.tat = tat = round(tat, 6)  # to the microsecond, as the Lua step keeps them
            self._tat[b.key] = tat

        def charge(b: _Bucket, at: float) -> None:
            store(b, max(b.tat, at) + b.c / b.rate)

        def latest(bs: list[_Bucket]) -> float:
            return max([now, *(b.earliest for b in bs)])

        phase: str | None = None
        slot: float | None = None
        if tkey in self._tickets:
            phase, slot, _ = self._tickets[tkey]

        def keep(p: str, at: float) -> float:
            at = round(at, 6)
            self._tickets[tkey] = (p, at, at + self.grace_seconds)
            return at - now

        def granted() -> float:
            self._tickets.pop(tkey, None)
            return 0.0

        if slot is not None and slot > now + _EPS:
            return slot - now
        if phase == "c":
            return granted()
        if phase is None:
            turn = latest(turns)
            if turn > now + _EPS:
                if not tkey:
                    return turn - now
                for b in turns:
                    charge(b, turn)
                return keep("w", turn)
        ready = latest(sents)
        if ready > now + _EPS:
            if not tkey:
                return ready - now
            if phase is None:
                for b in turns:
                    charge(b, ready)
            return keep("w", ready)
        go = latest(accounts)
        if go > now + _EPS and not tkey:
            return go - now
        if phase is None:
            for b in turns:
                charge(b, go)
        for turn_bucket, b in zip(turns, sents, strict=True):
            charge(b, go)
            if turn_bucket.tat < b.tat:
                store(turn_bucket, b.tat)
        for b in accounts:
            charge(b, go)
        if go > now + _EPS:
            return keep("c", go)
        return granted()


class PacedSend(msgspec.Struct, frozen=True):
    """One reply the kit's outbox handed to the adapter, and when (monotonic seconds)."""

    reply_id: str
    thread_id: str
    at: float


class KitOutbox:
    """The hub's outbound path in miniature: every reply is its own task, replies to one thread
    are first presented in queue order (the hub's per-conversation lanes), ``pace`` runs before
    every send, and a reply that must wait sleeps on its own (the hub's retry set) while the
    others go on. Nothing is ever dropped."""

    def __init__(self, limiter: RateLimiter, harness: ConformanceHarness) -> None:
        self.limiter = limiter
        self.harness = harness
        self.sends: list[PacedSend] = []
        self.deferrals = 0

    async def run(self, replies: Sequence[OutboundReply], timeout: float = 60.0) -> None:
        limits = self.harness.adapter.capabilities.rate_limits
        loop = asyncio.get_running_loop()
        lanes: dict[str, asyncio.Future[None]] = {}

        async def one(reply: OutboundReply, before: asyncio.Future[None] | None,
                      presented: asyncio.Future[None]) -> None:
            try:
                if before is not None:
                    await before
                wait = await pace(self.limiter, reply, limits)
            finally:
                presented.set_result(None)
            while wait > 0:
                self.deferrals += 1
                await asyncio.sleep(wait)
                wait = await pace(self.limiter, reply, limits)
            self.sends.append(PacedSend(reply.reply_id, reply.thread_id, time.monotonic()))
            await self.harness.adapter.send(reply)

        runs = []
        for reply in replies:
            presented: asyncio.Future[None] = loop.create_future()
            runs.append(one(reply, lanes.get(reply.thread_id), presented))
            lanes[reply.thread_id] = presented
        await asyncio.wait_for(asyncio.gather(*runs), timeout)


# Measurement slack: a send is timed when the limiter's answer arrives, a few ms after the
# decision, and a loaded machine can stretch that.
_SLACK_SECONDS = 0.1


def assert_paced(times: Sequence[float], limits: Sequence[RateLimit]) -> None:
    """No window holds more sends than any of ``limits`` allows: j - i + 1 sends need at least
    (j - i + 1 - burst) / rate seconds."""
    times = sorted(times)
    for lim in limits:
        for i in range(len(times)):
            for j in range(i + lim.burst, len(times)):
                need = (j - i + 1 - lim.burst) / lim.rate - _SLACK_SECONDS
                assert times[j] - times[i] >= need, (
                    f"{j - i + 1} sends within {times[j] - times[i]:.3f}s; {lim} allows "
                    f"that many only over {need + _SLACK_SECONDS:.3f}s")


class _Kit(Protocol):
    async def _reply(self, harness: ConformanceHarness, gate: IngestGate, text: str, *,
                     last_inbound_at: float | None = None) -> OutboundReply: ...


class RateLimitBattery:
    """Mix into a ``ChannelConformance`` subclass of a channel whose provider limits sends."""

    # Replies queued to one recipient beyond the smallest burst of the declared limits.
    paced_replies: int = 4

    @pytest.fixture
    def kit_limiter(self) -> RateLimiter:
        """Override to run the battery on the hub's limiter (inboxhub's channels do)."""
        return MemoryLimiter()

    @pytest.fixture
    def second_limiter(self, kit_limiter: RateLimiter) -> RateLimiter:
        """Another hub process's client of the same limiter (the memory one is shared as is)."""
        return kit_limiter

    def _limits(self, harness: ConformanceHarness) -> tuple[RateLimit, ...]:
        limits = harness.adapter.capabilities.rate_limits
        assert limits, "the adapter declares no rate_limits: do not mix in RateLimitBattery"
        return limits

    def _count(self, limits: Sequence[RateLimit]) -> int:
        return self.paced_replies + min(lim.burst for lim in limits)

    async def _limited_replies(self, harness: ConformanceHarness, gate: IngestGate, n: int, *,
                       thread: str | None = None, tag: str = "r") -> list[OutboundReply]:
        base = await cast(_Kit, self)._reply(harness, gate, "paced")
        return [msgspec.structs.replace(
            base, reply_id=f"{tag}-{time.time_ns()}-{i}", text=f"{tag} {i}",
            thread_id=thread or base.thread_id) for i in range(n)]

    async def test_limited_replies_are_paced_in_order_and_none_is_dropped(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_limiter: RateLimiter
    ) -> None:
        limits = self._limits(harness)
        replies = await self._limited_replies(harness, ingest_gate, self._count(limits))
        assert any(len(replies) > lim.burst for lim in limits), "too few replies to be limited"
        outbox = KitOutbox(kit_limiter, harness)
        await outbox.run(replies)
        assert [s.reply_id for s in outbox.sends] == [r.reply_id for r in replies], \
            "a limited reply was dropped, repeated or overtaken"
        assert sorted(s.text for s in harness.sent()) == sorted(r.text for r in replies)
        assert_paced([s.at for s in outbox.sends], limits)

    async def test_a_busy_recipient_does_not_stall_another(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_limiter: RateLimiter
    ) -> None:
        limits = self._limits(harness)
        if not any(lim.scope == "recipient" for lim in limits):
            pytest.skip("only account-wide limits: every send shares one bucket")
        busy = await self._limited_replies(harness, ingest_gate, self._count(limits), tag="busy")
        other = await self._limited_replies(harness, ingest_gate, 1, thread="kit-other-recipient",
                                    tag="other")
        outbox = KitOutbox(kit_limiter, harness)
        await outbox.run([*busy, *other])
        order = [s.reply_id for s in outbox.sends]
        assert sorted(order) == sorted(r.reply_id for r in (*busy, *other)), "a reply was lost"
        before_other = order.index(other[0].reply_id)
        assert before_other < len(busy), "the other recipient waited for the busy chat to drain"
        assert_paced([s.at for s in outbox.sends if s.thread_id == busy[0].thread_id], limits)

    async def test_two_processes_share_one_bucket(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_limiter: RateLimiter,
        second_limiter: RateLimiter,
    ) -> None:
        limits = self._limits(harness)
        replies = await self._limited_replies(harness, ingest_gate, self._count(limits),
                                              tag="shared")
        one, two = KitOutbox(kit_limiter, harness), KitOutbox(second_limiter, harness)
        await asyncio.gather(one.run(replies[0::2]), two.run(replies[1::2]))
        sends = [*one.sends, *two.sends]
        assert sorted(s.reply_id for s in sends) == sorted(r.reply_id for r in replies)
        assert_paced([s.at for s in sends], limits)
