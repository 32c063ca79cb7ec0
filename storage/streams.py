"""Consumer-group mechanics for the work streams (inbound, outbox).

Every entry is read by one consumer of the group, acknowledged and deleted when its work is
done, and reclaimed with XAUTOCLAIM by any live consumer once it has been pending longer than
``claim_idle_ms``: a consumer killed mid-work loses nothing (invariant 5).

On Redis Cluster the partitions' streams live in different slots, which one XREADGROUP cannot
name together: there each stream has its own blocking read in flight, and ``read`` returns
what the first ones to answer brought, leaving the others in flight for the next call (so an
entry in any partition wakes the consumer at once, and no answer is thrown away).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage.cluster import is_cluster

Entry = tuple[str, str, dict[bytes, bytes]]  # (stream, entry id, fields)


def consumer_name() -> str:
    """Unique per process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class StreamGroup:
    """One consumer's view of a group spread over one stream per partition."""

    def __init__(
        self, redis: Redis, streams: Sequence[str], group: str, consumer: str,
        *, claim_idle_ms: int = 30_000,
    ) -> None:
        self.redis: Any = redis  # bytes replies; see storage.store
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        # Cluster only: the blocking read in flight on each stream (see the module docstring).
        self._per_stream = is_cluster(redis) and len(self.streams) > 1
        self._reads: dict[str, asyncio.Task[list[Entry]]] = {}

    async def ensure(self) -> None:
        """Create the group (and stream) if missing; safe to race with other processes."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer, waiting up to ``block_ms`` when there are none."""
        if self._per_stream:
            return await self._read_each(count, block_ms)
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {s: ">" for s in self.streams},
            count=count, block=block_ms,
        )
        return _flatten(reply)

    async def _read_each(self, count: int, block_ms: int) -> list[Entry]:
        for stream in self.streams:
            if stream not in self._reads:
                self._reads[stream] = asyncio.create_task(
                    self._read_one(stream, count, block_ms),
                    name=f"xreadgroup:{self.group}:{stream}")
        await asyncio.wait(self._reads.values(), return_when=asyncio.FIRST_COMPLETED)
        out: list[Entry] = []
        error: BaseException | None = None
        for stream, task in list(self._reads.items()):
            if task.done():
                del self._reads[stream]
                try:
                    out.extend(task.result())
                except Exception as exc:  # the others' entries are handed out first
                    error = error or exc
        if error is not None and not out:
            raise error
        return out

    async def _read_one(self, stream: str, count: int, block_ms: int) -> list[Entry]:
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {stream: ">"}, count=count, block=block_ms)
        return _flatten(reply)

    async def close(self) -> None:
        """Cancel the reads still in flight (cluster only). What Redis had already handed to
        one of them stays pending and is reclaimed, as after a crash."""
        reads, self._reads = list(self._reads.values()), {}
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)

    async def reclaim(self, count: int = 100) -> list[Entry]:
        """Take over entries a dead (or stuck) consumer left pending for too long."""
        out: list[Entry] = []
        for stream in self.streams:
            start = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, self.claim_idle_ms,
                    start_id=start, count=count,
                )
                next_start, claimed = reply[0], reply[1]
                out.extend(
                    (stream, _text(eid), fields) for eid, fields in claimed if fields is not None
                )
                start = _text(next_start)
                if start == "0-0" or len(out) >= count:
                    break
        return out

    async def renew(self, entries: list[tuple[str, str]]) -> None:
        """Reset the idle time of entries this consumer is still working on (a heartbeat), so
        XAUTOCLAIM elsewhere only takes entries whose consumer has stopped."""
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xclaim(stream, self.group, self.consumer, 0, ids, justid=True)
            await pipe.execute()

    async def done(self, stream: str, entry_id: str) -> None:
        """Acknowledge and delete: each stream has exactly one group, so nothing else needs it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, self.group, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def done_many(self, entries: list[tuple[str, str]]) -> None:
        """``done`` for a whole batch in one round trip."""
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.group, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()

    async def pending_count(self) -> int:
        total = 0
        for stream in self.streams:
            info = await self.redis.xpending(stream, self.group)
            total += int(info["pending"])
        return total

    async def backlog(self) -> int:
        """Entries present in the streams (queued + pending), for /metrics."""
        total = 0
        for stream in self.streams:
            total += int(await self.redis.xlen(stream))
        return total


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _flatten(reply: list[list[object]] | None) -> list[Entry]:
    out: list[Entry] = []
    for stream, entries in reply or []:
        for eid, fields in entries:  # type: ignore[attr-defined]
            if fields is not None:
                out.append((_text(stream), _text(eid), fields))  # type: ignore[arg-type]
    return out
