"""The shared rate limiter's Lua step (storage/lua/limiter.lua) on real Redis.

Decisions are checked on a pinned clock (``RedisLimiter(clock=...)``), so each expected wait is
exact; the kit's ``MemoryLimiter`` must take the same decision as the Lua step for any sequence
of calls (a property test), and without a pinned clock the step keeps to Redis's own TIME.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.crc import key_slot

from channels.services.limits import RateLimit
from channels.testing.limits import MemoryLimiter
from storage.limiter import RedisLimiter, decision_keys

PER_CHAT = RateLimit("recipient", 1.0)  # Telegram: about 1 message per second per chat
PER_BOT = RateLimit("account", 30.0, 30)  # ... and about 30 per second per bot
TELEGRAM = (PER_CHAT, PER_BOT)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(redis: Redis, clock: Clock) -> RedisLimiter:
    return RedisLimiter(redis, clock=clock, grace_seconds=30)


async def test_a_chat_gets_one_send_per_second_and_waiters_keep_their_places(
        limiter: RedisLimiter, clock: Clock) -> None:
    take = limiter.acquire
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r1") == 0
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r2") == pytest.approx(1)
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r3") == pytest.approx(2)
    # Another chat of the same bot is not held up by the first one's queue.
    assert await take("tg", TELEGRAM, recipient="chat-2", ticket="s1") == 0
    clock.now += 1
    # r3 comes back early (a skewed clock released it): told the time left, nothing charged.
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r3") == pytest.approx(1)
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r2") == 0
    # A newcomer queues behind r3, whose place was kept.
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r4") == pytest.approx(2)
    clock.now += 1.5  # r3 is late for its slot: still granted, without being charged twice
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r3") == 0
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r4") == pytest.approx(0.5)
    clock.now += 0.5
    # r4's slot (t+3) has come, but r3 really went at t+2.5: a full second after that.
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r4") == pytest.approx(0.5)
    clock.now += 0.5
    assert await take("tg", TELEGRAM, recipient="chat-1", ticket="r4") == 0


async def test_without_a_ticket_nothing_is_reserved(limiter: RedisLimiter, clock: Clock) -> None:
    per_seller = (RateLimit("account", 2.0),)
    assert await limiter.acquire("ebay", per_seller) == 0
    assert await limiter.acquire("ebay", per_seller) == pytest.approx(0.5)
    assert await limiter.acquire("ebay", per_seller) == pytest.approx(0.5)  # not 1.0
    clock.now += 0.5
    assert await limiter.acquire("ebay", per_seller) == 0


async def test_the_account_limit_spaces_chats_and_pushes_their_next_turns(
        limiter: RedisLimiter, clock: Clock) -> None:
    slow_bot = (RateLimit("recipient", 1.0), RateLimit("account", 1.0))
    take = limiter.acquire
    assert await take("tg", slow_bot, recipient="a", ticket="a1") == 0
    assert await take("tg", slow_bot, recipient="b", ticket="b1") == pytest.approx(1)
    assert await take("tg", slow_bot, recipient="a", ticket="a2") == pytest.approx(1)
    clock.now += 1
    assert await take("tg", slow_bot, recipient="b", ticket="b1") == 0
    # a2's turn came, but the account is busy until t+2: it goes then, charged now.
    assert await take("tg", slow_bot, recipient="a", ticket="a2") == pytest.approx(1)
    # The chat's next turn follows the send that really happened (t+2), not the plan (t+1).
    assert await take("tg", slow_bot, recipient="a", ticket="a3") == pytest.approx(2)
    clock.now += 1
    assert await take("tg", slow_bot, recipient="a", ticket="a2") == 0


async def test_a_burst_then_the_rate(limiter: RedisLimiter, clock: Clock) -> None:
    ebay = (RateLimit.within(75, 60),)  # never more than 75 calls in any 60 s
    grants = 0
    for second in range(120):
        clock.now = 1_000_000.0 + second
        while await limiter.acquire("ebay", ebay) == 0:
            grants += 1
        if second == 59:
            assert grants <= 75
    assert grants <= 75 + 74 * 60 / 60 + 1


async def test_an_abandoned_ticket_is_forgotten_after_the_grace(
        limiter: RedisLimiter, clock: Clock, redis: Redis) -> None:
    assert await limiter.acquire("tg", TELEGRAM, recipient="c", ticket="x1") == 0
    assert await limiter.acquire("tg", TELEGRAM, recipient="c", ticket="gone") == \
        pytest.approx(1)
    clock.now += 1 + 30 + 1  # past slot + grace: its reply was erased meanwhile
    assert await limiter.acquire("tg", TELEGRAM, recipient="other", ticket="y") == 0
    assert await redis.hlen("ih:{lim:tg}:tickets") == 0


async def test_one_slot_per_instance_and_no_buyer_data_in_keys(limiter: RedisLimiter,
                                                                redis: Redis) -> None:
    handle = "+34600111222"
    await limiter.acquire("tg", TELEGRAM, recipient=handle, ticket="0.0193abcd")
    await limiter.acquire("tg", TELEGRAM, recipient=handle, ticket="0.0193abce")
    names = decision_keys("tg", TELEGRAM, handle)
    assert len({key_slot(k.encode()) for k in names}) == 1
    stored = [k async for k in redis.scan_iter("ih:{lim:tg}:*")]
    assert stored
    for key in stored:
        values = [key]
        if await redis.type(key) == b"hash":
            values += list(await redis.hkeys(key))
        elif await redis.type(key) == b"zset":
            values += list(await redis.zrange(key, 0, -1))
        assert not any(b"600111222" in v or b"0193abc" in v for v in values)


async def test_redis_time_decides_for_every_process(redis_server: Any, redis: Redis) -> None:
    """Two clients (two hub processes) on Redis's own clock share one bucket."""
    other = Redis(unix_socket_path=redis_server.socket)
    try:
        one, two = RedisLimiter(redis), RedisLimiter(other)
        limit = (RateLimit("account", 20.0),)
        loop = asyncio.get_running_loop()
        start = loop.time()
        grants = 0

        async def hammer(limiter: RedisLimiter) -> None:
            nonlocal grants
            while loop.time() - start < 1.0:
                if await limiter.acquire("shared", limit) == 0:
                    grants += 1
                else:
                    await asyncio.sleep(0.005)

        await asyncio.gather(hammer(one), hammer(two))
        elapsed = loop.time() - start
        assert 1 <= grants <= 1 + 20 * elapsed + 1
        assert grants >= 10  # and the bucket did grant at its rate
    finally:
        await other.aclose()


# -- the kit's MemoryLimiter takes the Lua step's decisions ----------------------------------

LIMIT_SETS = [
    (RateLimit("recipient", 1.0),),
    (RateLimit("recipient", 2.0, 2), RateLimit("account", 4.0, 3)),
    (RateLimit("account", 1.0),),
    (RateLimit("recipient", 1.0), RateLimit("account", 1.0)),
    (RateLimit("recipient", 0.5), RateLimit("recipient", 4.0, 4), RateLimit("account", 10.0)),
]

call = st.tuples(
    st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0]),  # clock advance before the call
    st.sampled_from(["chat-a", "chat-b", None]),
    st.sampled_from(["t1", "t2", "t3", "t4", None]),
    st.sampled_from([1.0, 1.0, 2.0]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(limit_set=st.integers(0, len(LIMIT_SETS) - 1), calls=st.lists(call, max_size=40))
def test_the_memory_limiter_decides_as_the_lua_step(
        redis_server: Any, limit_set: int, calls: list[tuple[float, str | None, str | None,
                                                             float]]) -> None:
    limits = LIMIT_SETS[limit_set]

    async def run() -> None:
        redis = Redis(unix_socket_path=redis_server.socket)
        try:
            await redis.flushall()
            clock = Clock()
            lua = RedisLimiter(redis, clock=clock)
            memory = MemoryLimiter(clock=clock)
            for i, (advance, recipient, ticket, cost) in enumerate(calls):
                clock.now += advance
                got = await lua.acquire("x", limits, recipient=recipient, ticket=ticket,
                                        cost=cost)
                want = await memory.acquire("x", limits, recipient=recipient, ticket=ticket,
                                            cost=cost)
                assert got == pytest.approx(want, abs=1e-5), (i, calls[:i + 1])
        finally:
            await redis.aclose()

    asyncio.run(run())
