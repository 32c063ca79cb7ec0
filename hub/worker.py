"""A consumer-group worker: read, handle, acknowledge each entry as it finishes.

One worker per process per stream family, run as a supervised loop (``channels.supervisor``): one
``iteration`` reads as many entries as there are free slots and starts them; it never waits for
a batch to finish, so one slow provider call holds only its own slot. Each entry is
acknowledged the moment its handler returns (acknowledgements that finish together share one
round trip). Entries of one conversation run one after another in the order they were read, so
a conversation's replies leave in the order they were queued.

While an entry is in flight its claim is renewed (XCLAIM ... JUSTID), so another process only
reclaims it once this one has really stopped working on it. An entry whose handler fails with an
unexpected error is quarantined and acknowledged so it cannot block the ones behind it; a Redis
or network failure leaves it pending, to be reclaimed once Redis is back. A handler that raises
``LeavePending`` (another process holds the work, see ``hub.sender``) is not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from channels.supervisor import describe
from hub.crashpoints import crash_point
from storage.streams import Entry, StreamGroup

log = logging.getLogger(__name__)

Handler = Callable[[Entry], Awaitable[None]]
PoisonHandler = Callable[[Entry, BaseException], Awaitable[None]]


class LeavePending(Exception):
    """The entry must stay pending: someone else is working on what it names."""


class StreamWorker:
    def __init__(
        self,
        name: str,
        group: StreamGroup,
        handler: Handler,
        on_poison: PoisonHandler,
        *,
        concurrency: int = 16,
        block_ms: int = 500,
    ) -> None:
        self.name = name
        self.group = group
        self.handler = handler
        self.on_poison = on_poison
        self.concurrency = concurrency
        self.block_ms = block_ms
        self.processed = 0
        self._inflight: dict[tuple[str, str], tuple[asyncio.Task[None], float]] = {}
        self._lanes: dict[bytes, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._acks: list[tuple[str, str]] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._claim_every = max(group.claim_idle_ms / 3000, 0.05)
        self._next_claim = 0.0
        self._last_warning = 0.0

    # -- the supervised loop's hooks -------------------------------------------------------

    async def prepare(self) -> None:
        await self.group.ensure()

    async def iteration(self) -> bool:
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self._claim_every
            await self._renew_claims()
            free = self.concurrency - len(self._inflight)
            if free > 0:
                reclaimed = [e for e in await self.group.reclaim(free)
                             if (e[0], e[1]) not in self._inflight]
                if reclaimed:
                    log.info("%s reclaimed %d pending entries", self.name, len(reclaimed))
                    self._start(reclaimed)
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), self.block_ms / 1000)
            return True
        self._start(await self.group.read(free, self.block_ms))
        return True

    async def drain(self) -> None:
        """Finish what was read (the caller bounds this with the shutdown deadline)."""
        while self._inflight:
            await asyncio.gather(*(t for t, _ in list(self._inflight.values())),
                                 return_exceptions=True)
        if self._ack_task is not None:
            await asyncio.gather(self._ack_task, return_exceptions=True)

    async def cancel(self) -> None:
        tasks = [t for t, _ in self._inflight.values()]
        if self._ack_task is not None:
            tasks.append(self._ack_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.group.close()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- entries -----------------------------------------------------------------------------

    def _start(self, entries: list[Entry]) -> None:
        for entry in entries:
            stream, entry_id, fields = entry
            lane = fields.get(b"conv", entry_id.encode())
            before = self._lanes.get(lane)
            task = asyncio.create_task(self._run(entry, before), name=f"{self.name}:{entry_id}")
            self._lanes[lane] = task
            key = (stream, entry_id)
            self._inflight[key] = (task, time.monotonic())
            task.add_done_callback(functools.partial(self._finished, key, lane))

    def _finished(self, key: tuple[str, str], lane: bytes, task: asyncio.Task[None]) -> None:
        self._inflight.pop(key, None)
        if self._lanes.get(lane) is task:
            del self._lanes[lane]
        self._slot_freed.set()

    async def _run(self, entry: Entry, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # the same conversation's earlier entry goes first
        stream, entry_id, _fields = entry
        try:
            await self.handler(entry)
        except LeavePending:
            return
        except (RedisError, OSError) as exc:
            self._warn(f"{self.name}: entry {entry_id} left pending: {describe(exc)}")
            return  # reclaimed once Redis answers again
        except Exception as exc:
            log.exception("%s: entry %s of %s failed; quarantining it", self.name, entry_id,
                          stream)
            try:
                await self.on_poison(entry, exc)
            except (RedisError, OSError) as failure:
                self._warn(f"{self.name}: could not quarantine {entry_id}: {describe(failure)}")
                return
        crash_point(f"{self.name}:before-ack")
        self._ack(stream, entry_id)

    def _ack(self, stream: str, entry_id: str) -> None:
        self._acks.append((stream, entry_id))
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._flush_acks(), name=f"{self.name}:ack")

    async def _flush_acks(self) -> None:
        """Group commit: every entry that finished while the last flush ran shares the next."""
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                await self.group.done_many(batch)
            except (RedisError, OSError) as exc:
                # Still pending: redelivered and recognised as done by the idempotent handlers.
                self._warn(f"{self.name}: acknowledgement failed: {describe(exc)}")
                return
            self.processed += len(batch)

    async def _renew_claims(self) -> None:
        """Reset the idle time of entries still in flight so no other process takes them."""
        horizon = time.monotonic() - self._claim_every
        old = [key for key, (_task, started) in self._inflight.items() if started <= horizon]
        if old:
            await self.group.renew(old)

    def _warn(self, message: str) -> None:
        """At most one line every 30 s: an outage is reported by the supervisor, not per entry."""
        now = time.monotonic()
        if now - self._last_warning >= 30:
            self._last_warning = now
            log.warning("%s", message)
