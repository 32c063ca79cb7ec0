"""A consumer-group worker: read, handle, acknowledge; reclaim what dead consumers left.

One loop per process per stream family. Entries are handled in order within a batch, so the
replies of one conversation go out in the order they were queued. An entry whose handler fails
with an unexpected error is quarantined and acknowledged so it cannot block the ones behind it;
a Redis outage leaves the entry pending, to be reclaimed once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from storage.streams import Entry, StreamGroup

log = logging.getLogger(__name__)

Handler = Callable[[Entry], Awaitable[None]]
PoisonHandler = Callable[[Entry, BaseException], Awaitable[None]]

# Test hook: with INBOXHUB_TEST_CRASH_POINT=<worker name>:before-ack the process SIGKILLs itself
# after handling an entry and before acknowledging it (tests prove nothing is lost).
_CRASH_POINT = os.environ.get("INBOXHUB_TEST_CRASH_POINT", "")


class StreamWorker:
    def __init__(
        self,
        name: str,
        group: StreamGroup,
        handler: Handler,
        on_poison: PoisonHandler,
        stop: asyncio.Event,
        *,
        batch: int = 100,
        block_ms: int = 500,
        concurrency: int = 16,
    ) -> None:
        self.name = name
        self.group = group
        self.handler = handler
        self.on_poison = on_poison
        self.stop = stop
        self.batch = batch
        self.block_ms = block_ms
        self.concurrency = concurrency
        self.processed = 0

    async def run(self) -> None:
        await self.group.ensure()
        claim_every = max(self.group.claim_idle_ms / 2000, 0.05)
        next_claim = 0.0
        failures = 0
        while not self.stop.is_set():
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + claim_every
                    reclaimed = await self.group.reclaim(self.batch)
                    if reclaimed:
                        log.info("%s reclaimed %d pending entries", self.name, len(reclaimed))
                    await self._handle_all(reclaimed)
                entries = await self.group.read(self.batch, self.block_ms)
                await self._handle_all(entries)
                failures = 0
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning("%s: redis unavailable (%s), retrying in %.1fs",
                            self.name, type(exc).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)

    async def _handle_all(self, entries: list[Entry]) -> None:
        """Handle a batch: conversations concurrently, each conversation's entries in order.

        Entries already read are ours, so they are finished even if stop was requested
        (drain). Acknowledgement happens once for the whole batch, after every entry was
        handled: a crash before it redelivers the batch, and handlers are idempotent.
        """
        if not entries:
            return
        groups: dict[bytes, list[Entry]] = {}
        for entry in entries:
            groups.setdefault(entry[2].get(b"conv", entry[1].encode()), []).append(entry)
        limit = asyncio.Semaphore(self.concurrency)

        async def run(group: list[Entry]) -> None:
            async with limit:
                for entry in group:
                    await self._handle(entry)

        await asyncio.gather(*(run(g) for g in groups.values()))
        if f"{self.name}:before-ack" == _CRASH_POINT:
            os.kill(os.getpid(), signal.SIGKILL)
        await self.group.done_many([(stream, entry_id) for stream, entry_id, _ in entries])
        self.processed += len(entries)

    async def _handle(self, entry: Entry) -> None:
        stream, entry_id, _fields = entry
        try:
            await self.handler(entry)
        except (RedisConnectionError, RedisTimeoutError):
            raise  # leave it pending; reclaimed when Redis is back
        except Exception as exc:
            log.exception("%s: entry %s of %s failed; quarantining it", self.name, entry_id, stream)
            await self.on_poison(entry, exc)
