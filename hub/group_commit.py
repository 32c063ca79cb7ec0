"""Group commit: writes that arrive while one is in flight go to Redis together.

Each webhook stores its message before it answers (invariant 1), and under load the hub's own
cost per message was dominated by what one Redis round trip costs the client (a task for the
timeout, a write and a read system call, a reply parsed), not by Redis. Thirty-two concurrent
webhooks each paying that alone is what held acknowledged ingest at a fraction of the bare
handler's rate (bench/ingest.py). Here the first caller's write starts at once, nothing waits
for a timer; callers that arrive while it is in flight are sent together as the next batch the
moment it returns. At low load every batch is one message and the latency is unchanged; at high
load a batch is whatever arrived during one round trip.

The batch's tasks belong to the ``GroupCommit``: a caller that is cancelled (its client went
away) stops waiting, but the write it joined still completes, and ``aclose`` waits for every
write in flight on shutdown, so nothing accepted is abandoned half way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Answer = TypeVar("Answer")

#: One pipeline of this many ingest scripts is about a millisecond of Redis time: large enough
#: to absorb a burst, small enough that no caller waits behind a huge batch.
MAX_BATCH = 128
#: Writes in flight at once. Two keeps Redis busy with one batch while the next forms (the
#: hub and Redis share the machine's cores), without splitting a burst into many small ones.
MAX_IN_FLIGHT = 2


class GroupCommitClosed(RuntimeError):
    """A write was offered after shutdown began."""


class GroupCommit(Generic[Item, Answer]):
    """``await commit(item)`` returns what ``write`` answered for that item.

    ``write(items)`` stores a batch in one round trip and answers per item, in order, either a
    result or the exception for that item alone; if it raises, every caller of the batch gets
    that exception (a connection error: any prefix of the batch may be stored, which is why
    writes through here must be idempotent, as ingest is by provider message id).
    """

    def __init__(self, write: Callable[[list[Item]], Awaitable[Sequence[Answer | Exception]]],
                 *, max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT,
                 name: str = "group-commit") -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._write = write
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.name = name
        self._pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._abandoned = False  # aclose's timeout passed: start nothing more

    async def __call__(self, item: Item) -> Answer:
        if self._closed:
            raise GroupCommitClosed(f"{self.name} is shutting down")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._start_flushes()
        return await future

    @property
    def in_flight(self) -> int:
        return len(self._flushes)

    def _start_flushes(self) -> None:
        while (self._pending and not self._abandoned
               and len(self._flushes) < self.max_in_flight):
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            task = asyncio.create_task(self._flush(batch), name=f"{self.name}:flush")
            self._flushes.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if not task.cancelled() and task.exception() is not None:  # _flush never raises
            log.error("%s: flush failed", self.name, exc_info=task.exception())
        self._start_flushes()

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._write([item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{self.name}: {len(answers)} answers for {len(batch)} items")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(GroupCommitClosed(f"{self.name} was cancelled"))
            raise
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller was cancelled: the write happened all the same
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Refuse new writes, finish the ones accepted (in flight and queued); after
        ``timeout`` seconds cancel what is left (its callers get ``GroupCommitClosed``)."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._flushes:
            _, pending = await asyncio.wait(set(self._flushes),
                                            timeout=max(0.0, deadline - loop.time()))
            if pending:
                self._abandoned = True
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
        for _, future in self._pending:
            if not future.done():
                future.set_exception(GroupCommitClosed(f"{self.name} closed"))
        self._pending.clear()
