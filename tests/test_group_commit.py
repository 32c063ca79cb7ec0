"""Group commit (hub/group_commit.py): batching, per-item answers, errors, cancellation and
shutdown, with a write function that records what it was given. The ingest path through it
is covered end to end by test_pipeline, test_crash_recovery and test_redis_outage."""

from __future__ import annotations

import asyncio

import pytest

from hub.group_commit import GroupCommit, GroupCommitClosed


class Recorder:
    """A write that takes ``delay`` seconds and answers ``item * 10``; items listed in
    ``failing`` answer an error of their own, ``explode`` raises for the whole batch."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.batches: list[list[int]] = []
        self.failing: set[int] = set()
        self.explode = False
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await self.release.wait()
        await asyncio.sleep(self.delay)
        if self.explode:
            raise ConnectionError("redis went away")
        return [ValueError(f"bad {i}") if i in self.failing else i * 10 for i in items]


async def test_a_lone_write_starts_at_once_and_alone() -> None:
    write = Recorder(delay=0)
    commit = GroupCommit(write)
    assert await commit(1) == 10
    assert write.batches == [[1]]


async def test_writes_arriving_during_a_flight_go_together() -> None:
    write = Recorder()
    write.release.clear()
    commit = GroupCommit(write, max_in_flight=1)
    tasks = [asyncio.create_task(commit(i)) for i in range(20)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    write.release.set()
    assert await asyncio.gather(*tasks) == [i * 10 for i in range(20)]
    # the first flight took what was there when it started; the rest waited for it
    assert sum(len(b) for b in write.batches) == 20
    assert len(write.batches) == 2
    assert sorted(i for b in write.batches for i in b) == list(range(20))


async def test_batches_are_capped_and_flights_bounded() -> None:
    write = Recorder()
    commit = GroupCommit(write, max_batch=4, max_in_flight=2)
    tasks = [asyncio.create_task(commit(i)) for i in range(10)]
    await asyncio.sleep(0)
    assert commit.in_flight <= 2
    assert await asyncio.gather(*tasks) == [i * 10 for i in range(10)]
    assert all(len(b) <= 4 for b in write.batches)


async def test_an_item_error_fails_only_that_caller() -> None:
    write = Recorder()
    write.failing = {3}
    commit = GroupCommit(write, max_in_flight=1)
    results = await asyncio.gather(*(commit(i) for i in range(6)), return_exceptions=True)
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad 3"
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]


async def test_a_batch_error_fails_every_caller_of_that_batch_only() -> None:
    write = Recorder()
    write.explode = True
    commit = GroupCommit(write)
    results = await asyncio.gather(*(commit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    write.explode = False
    assert await commit(7) == 70  # the committer is not broken by a failed batch


async def test_a_cancelled_caller_does_not_cancel_the_write() -> None:
    write = Recorder(delay=0.05)
    commit = GroupCommit(write)
    waiter = asyncio.create_task(commit(1))
    other = asyncio.create_task(commit(2))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await other == 20
    assert [1] in write.batches or [1, 2] in write.batches


async def test_close_finishes_accepted_writes_and_refuses_new_ones() -> None:
    write = Recorder(delay=0.05)
    commit = GroupCommit(write, max_in_flight=1)
    tasks = [asyncio.create_task(commit(i)) for i in range(3)]
    await asyncio.sleep(0)
    await commit.aclose(timeout=5)
    assert [t.result() for t in tasks] == [0, 10, 20]
    with pytest.raises(GroupCommitClosed):
        await commit(9)


async def test_close_gives_up_on_a_hung_write_after_its_timeout() -> None:
    write = Recorder()
    write.release.clear()  # never returns
    commit = GroupCommit(write, max_in_flight=1)
    first = asyncio.create_task(commit(1))
    await asyncio.sleep(0)
    queued = asyncio.create_task(commit(2))
    await asyncio.sleep(0)
    await commit.aclose(timeout=0.05)
    for task in (first, queued):
        with pytest.raises(GroupCommitClosed):
            await task
    assert write.batches == [[1]]  # the queued one was never started


async def test_a_wrong_number_of_answers_is_an_error_not_a_mismatch() -> None:
    async def short(items: list[int]) -> list[int | Exception]:
        return [1] * (len(items) - 1)

    commit: GroupCommit[int, int] = GroupCommit(short, max_in_flight=1)
    results = await asyncio.gather(commit(1), commit(2), commit(3), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupCommit(Recorder(), max_batch=0)
    with pytest.raises(ValueError):
        GroupCommit(Recorder(), max_in_flight=0)
