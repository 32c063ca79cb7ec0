"""The supervised-loop helper: every background loop survives Redis and network errors, recreates
its consumer groups on NOGROUP, reports its health, and is logged once per outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from channels.supervisor import CRASH_MARK, Backoff, Supervisor, TaskHealth
from hub.metrics import Metrics

FAST = Backoff(base=0.001, cap=0.005)


class Script:
    """An iteration that raises the queued errors one per call, then counts successes."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.successes = 0

    async def __call__(self) -> bool:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.successes += 1
        return False


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("error", [
    RedisConnectionError("Connection reset by peer"),
    RedisTimeoutError("Timeout reading from socket"),
    OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
    ReadOnlyError("You can't write against a read only replica."),
    ConnectionRefusedError(111, "Connection refused"),
    OSError(104, "reset"),
], ids=lambda e: type(e).__name__)
async def test_loop_survives_every_redis_and_network_error(error: BaseException) -> None:
    # redis-py's ConnectionError/TimeoutError are not the built-ins: the old loops caught those
    # and died on the first Redis stall.
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        assert not isinstance(error, ConnectionError | TimeoutError)
    metrics = Metrics()
    health = TaskHealth(metrics)
    supervisor = Supervisor("t", health, backoff=FAST)
    body = Script([error, error, error])
    supervisor.loop("loop", body, idle_seconds=0.001)
    try:
        await until(lambda: body.successes >= 3)
        [state] = health.snapshot()
        assert state.status == "running" and state.restarts == 3
        assert type(error).__name__ in (state.last_error or "")
        assert metrics.task_restarts.labels("loop", "redis")._value.get() == 3
        assert metrics.task_up.labels("loop")._value.get() == 1
    finally:
        await supervisor.cancel_all()
    assert health.snapshot()[0].status == "stopped"


async def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    health = TaskHealth()
    supervisor = Supervisor("t", health, backoff=FAST)
    body = Script([RedisConnectionError("down")] * 25)
    caplog.set_level(logging.INFO, logger="channels.supervisor")
    supervisor.loop("quiet", body, idle_seconds=0.001)
    try:
        await until(lambda: body.successes >= 1)
    finally:
        await supervisor.cancel_all()
    lines = [r for r in caplog.records if r.name == "channels.supervisor"]
    assert [r.levelname for r in lines] == ["WARNING", "INFO"], [r.getMessage() for r in lines]
    assert "recovered after 25 failed attempts" in lines[1].getMessage()


async def test_backing_off_loop_is_unhealthy_by_name() -> None:
    health = TaskHealth()
    supervisor = Supervisor("t", health, backoff=Backoff(base=5, cap=5))
    supervisor.loop("sender", Script([RedisTimeoutError("stalled")]), idle_seconds=0.01)
    try:
        await until(lambda: bool(health.unhealthy()))
        assert list(health.unhealthy()) == ["sender"]
        assert health.unhealthy()["sender"].status == "backing_off"
    finally:
        await supervisor.cancel_all()


async def test_nogroup_recreates_groups_and_carries_on() -> None:
    prepared = 0

    async def prepare() -> None:
        nonlocal prepared
        prepared += 1

    metrics = Metrics()
    supervisor = Supervisor("t", TaskHealth(metrics), backoff=Backoff(base=5, cap=5))
    body = Script([ResponseError("NOGROUP No such key 'ih:{p0}:outbox' or consumer group "
                                 "'sender' in XREADGROUP with GROUP option")])
    supervisor.loop("sender", body, idle_seconds=0.001, prepare=prepare)
    try:
        # No backoff for the first NOGROUP (the base here is 5 s): recreated and on at once.
        await until(lambda: body.successes >= 2, timeout=2)
        assert prepared == 2
        assert metrics.task_restarts.labels("sender", "nogroup")._value.get() == 1
    finally:
        await supervisor.cancel_all()


@pytest.mark.allow_task_crash
async def test_a_bug_is_logged_as_a_crash_and_the_loop_restarts(
        caplog: pytest.LogCaptureFixture) -> None:
    health = TaskHealth()
    supervisor = Supervisor("t", health, backoff=FAST)
    body = Script([KeyError("conv"), KeyError("conv")])
    supervisor.loop("router", body, idle_seconds=0.001)
    try:
        await until(lambda: body.successes >= 1)
    finally:
        await supervisor.cancel_all()
    crashes = [r for r in caplog.records if getattr(r, CRASH_MARK, None) == "router"]
    assert len(crashes) == 1 and crashes[0].exc_info is not None  # once per streak
    assert health.snapshot()[0].restarts == 2


async def test_stop_lets_the_loop_drain_then_stops() -> None:
    drained = asyncio.Event()

    async def drain() -> None:
        drained.set()

    health = TaskHealth()
    supervisor = Supervisor("t", health)
    supervisor.loop("w", Script([]), idle_seconds=10, on_stop=drain)
    await asyncio.sleep(0.01)
    supervisor.stop.set()
    assert await supervisor.wait(2.0)
    assert drained.is_set()
    assert health.snapshot()[0].status == "stopped"


async def test_two_live_loops_may_not_share_a_name() -> None:
    supervisor = Supervisor("t", TaskHealth())
    supervisor.loop("same", Script([]), idle_seconds=1)
    try:
        with pytest.raises(ValueError, match="already running"):
            supervisor.loop("same", Script([]), idle_seconds=1)
    finally:
        await supervisor.cancel_all()


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(base=0.1, cap=2.0)
    delays: list[Any] = [backoff.delay(n) for n in range(1, 30)]
    assert all(0 < d <= 2.0 for d in delays)
    assert max(delays) > 1.0 and min(delays) < 0.1
    assert len({round(backoff.delay(8), 6) for _ in range(20)}) > 1
