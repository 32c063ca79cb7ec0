"""The fetch-after-notify queue on Redis: ``channels.services.fetches.FetchStore``.

One queue per channel instance under the hash tag ``{fetch:<instance>}`` (``storage.keys``):
a stream of job ids for the consumer group ``fetcher`` (``hub/fetcher.py`` reads it with the
hub's ``StreamWorker``: per-entry acknowledgement, claims renewed while a fetch runs, entries
of a dead process reclaimed with XAUTOCLAIM), a hash per job, and zsets by state. Every
transition is one step of ``storage/lua/fetches.lua``.

Job ids are ``<notification time, ns, 16 hex><8 hex random>.<instance>``: unique, in arrival
order when compared as strings, and naming the instance (so the one slot) they belong to.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from channels.services.fetches import (
    DEFAULT_DEDUPE_TTL_SECONDS,
    FETCH_STATES,
    FetchBacklog,
    FetchEntry,
    FetchState,
    NotFailed,
    UnknownFetch,
    check_notice,
)
from storage import keys
from storage.scripts import load_script

_INSTANCE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_JOB_ID: Final = re.compile(r"([0-9a-f]{16})[0-9a-f]{8}\.([A-Za-z0-9_-]{1,64})")
_BATCH: Final = 200
DEFAULT_FAILED_RETENTION_SECONDS: Final = 14 * 86400


def check_instance(instance: str) -> None:
    if not _INSTANCE.fullmatch(instance):
        raise ValueError(f"channel instance names are 1-64 of A-Z a-z 0-9 _ -, got "
                         f"{instance[:80]!r}")


def new_job_id(instance: str) -> str:
    return f"{time.time_ns():016x}{os.urandom(4).hex()}.{instance}"


def parse_job_id(job_id: str) -> tuple[str, float] | None:
    """(instance, notification time) of one of our job ids; None for anything else."""
    match = _JOB_ID.fullmatch(job_id) if len(job_id) <= 100 else None
    if match is None:
        return None
    return match.group(2), int(match.group(1), 16) / 1e9


def is_job_id(value: str) -> bool:
    return parse_job_id(value) is not None


def dedupe_digest(dedupe_key: str) -> str:
    return hashlib.blake2b(dedupe_key.encode(), digest_size=16).hexdigest()


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _f(value: bytes | str | None) -> float | None:
    text = _s(value)
    return float(text) if text else None


class RedisFetchQueue:
    """``FetchStore`` shared by every hub process on one Redis."""

    def __init__(self, redis: Redis, *,
                 dedupe_ttl_seconds: int = DEFAULT_DEDUPE_TTL_SECONDS,
                 failed_retention_seconds: int = DEFAULT_FAILED_RETENTION_SECONDS) -> None:
        self.redis: Any = redis  # bytes replies; see storage.store
        self.dedupe_ttl_seconds = dedupe_ttl_seconds
        # A failed fetch waits this long for an operator, then its record expires: an account
        # whose fetches all fail (revoked access over a weekend) must not fill Redis.
        self.failed_retention_seconds = failed_retention_seconds
        self._script = load_script(redis, "fetches")
        self._registered: set[str] = set()

    # -- FetchQueue ------------------------------------------------------------------------

    async def notify(self, instance: str, resource: str, *, dedupe_key: str) -> bool:
        check_instance(instance)
        check_notice(resource, dedupe_key)
        if instance not in self._registered:
            await self.redis.sadd(keys.FETCH_INSTANCES, instance)
            self._registered.add(instance)
        job_id = new_job_id(instance)
        queued = await self._script(
            keys=[keys.fetch_seen(instance, dedupe_digest(dedupe_key)),
                  keys.fetch_job(instance, job_id), keys.fetch_state(instance, "queued"),
                  keys.fetch_stream(instance)],
            args=["notify", job_id, instance, resource, self.dedupe_ttl_seconds,
                  repr(time.time())])
        return bool(queued)

    async def backlog(self, instance: str) -> FetchBacklog:
        check_instance(instance)
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in FETCH_STATES:
                pipe.zcard(keys.fetch_state(instance, state))
            for state in ("queued", "retrying"):
                pipe.zrange(keys.fetch_state(instance, state), 0, 0)
            queued, retrying, failed, first_queued, first_retrying = await pipe.execute()
        firsts = [_s(ids[0]) or "" for ids in (first_queued, first_retrying) if ids]
        oldest = None
        if firsts:
            parsed = parse_job_id(min(firsts))
            if parsed is not None:
                oldest = max(0.0, time.time() - parsed[1])
        return FetchBacklog(instance=instance, queued=int(queued), retrying=int(retrying),
                            failed=int(failed), oldest_age_seconds=oldest)

    async def begin(self, job: FetchEntry) -> tuple[int, int]:
        """Record a worker's start of the job: ``(run, starts)``, the start's number (its
        settlement must carry it: a later start owns the job) and how many times the current
        attempt has started without an outcome, this one included; ``(-1, 0)`` when the job
        is no longer queued. The worker gives up on a fetch that keeps stopping the process
        (a resource that crashes the parser, OOM) instead of reclaiming it forever."""
        run, starts = await self._script(keys=[keys.fetch_job(job.instance, job.id)],
                                         args=["begin", job.id])
        return int(run), int(starts)

    # -- FetchSettlement -------------------------------------------------------------------

    async def done(self, job: FetchEntry) -> None:
        await self._script(keys=[keys.fetch_job(job.instance, job.id),
                                 keys.fetch_state(job.instance, "queued")],
                           args=["done", job.id, _run(job)])

    async def retry_later(self, job: FetchEntry, *, delay: float, error: str) -> None:
        i = job.instance
        await self._script(
            keys=[keys.fetch_job(i, job.id), keys.fetch_state(i, "queued"),
                  keys.fetch_state(i, "retrying"), keys.fetch_due(i)],
            args=["later", job.id, repr(time.time() + max(0.0, delay)), error[:500],
                  _run(job)])

    async def fail(self, job: FetchEntry, *, error: str) -> None:
        i = job.instance
        await self._script(
            keys=[keys.fetch_job(i, job.id), keys.fetch_state(i, "queued"),
                  keys.fetch_state(i, "failed")],
            args=["fail", job.id, error[:500], repr(time.time()), _run(job),
                  self.failed_retention_seconds])

    # -- the worker's other needs ----------------------------------------------------------

    def streams(self, instances: Iterable[str]) -> list[str]:
        return [keys.fetch_stream(i) for i in instances]

    async def release_due(self, instances: Sequence[str], now: float | None = None) -> int:
        """Queue retrying jobs whose next attempt is due; returns how many."""
        moment = time.time() if now is None else now
        total = 0
        for i in instances:
            while True:
                due = [_s(j) or "" for j in await self.redis.zrangebyscore(
                    keys.fetch_due(i), "-inf", repr(moment), start=0, num=_BATCH)]
                if not due:
                    break
                total += int(await self._script(
                    keys=[keys.fetch_due(i), keys.fetch_state(i, "retrying"),
                          keys.fetch_state(i, "queued"), keys.fetch_stream(i),
                          *(keys.fetch_job(i, j) for j in due)],
                    args=["release", repr(moment), *due]))
                if len(due) < _BATCH:
                    break
        return total

    async def forget_expired(self, instances: Iterable[str]) -> int:
        """Drop the failed-set members whose record has expired (``failed_retention``),
        oldest first, a batch per instance per call; returns how many."""
        dropped = 0
        for i in instances:
            ids = [_s(j) or "" for j in await self.redis.zrange(
                keys.fetch_state(i, "failed"), 0, _BATCH - 1)]
            if ids:
                dropped += int(await self._script(
                    keys=[keys.fetch_state(i, "failed"), *(keys.fetch_job(i, j) for j in ids)],
                    args=["forget", *ids]))
        return dropped

    # -- FetchAdmin ------------------------------------------------------------------------

    async def instances(self) -> list[str]:
        found = await self.redis.smembers(keys.FETCH_INSTANCES)
        return sorted(_s(i) or "" for i in found)

    async def get(self, job_id: str) -> FetchEntry | None:
        parsed = parse_job_id(job_id)
        if parsed is None:
            return None
        row = await self.redis.hgetall(keys.fetch_job(parsed[0], job_id))
        return _entry(job_id, row, parsed[1]) if row else None

    async def entries(self, instance: str | None = None, state: FetchState | None = None, *,
                      limit: int = 50, after: str | None = None) -> list[FetchEntry]:
        if instance is not None:
            check_instance(instance)
        instances = [instance] if instance is not None else await self.instances()
        states = [state] if state is not None else list(FETCH_STATES)
        top = f"({after}" if after else "+"
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in instances:
                for st in states:
                    pipe.zrevrangebylex(keys.fetch_state(i, st), top, "-", start=0, num=limit)
            pages = await pipe.execute()
        ids = sorted({_s(j) or "" for page in pages for j in page}, reverse=True)[:limit]
        parsed = [(j, parse_job_id(j)) for j in ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for j, p in parsed:
                pipe.hgetall(keys.fetch_job(p[0] if p else "-", j))
            rows = await pipe.execute()
        return [_entry(j, row, p[1]) for (j, p), row in zip(parsed, rows, strict=True)
                if row and p is not None]

    async def retry(self, job_id: str) -> None:
        parsed = parse_job_id(job_id)
        if parsed is None:
            raise UnknownFetch(job_id)
        i = parsed[0]
        try:
            await self._script(keys=[keys.fetch_job(i, job_id), keys.fetch_state(i, "failed"),
                                     keys.fetch_state(i, "queued"), keys.fetch_stream(i)],
                               args=["retry", job_id])
        except ResponseError as exc:
            if "NOFETCH" in str(exc):
                raise UnknownFetch(job_id) from None
            if "NOTFAILED" in str(exc):
                raise NotFailed(job_id) from None
            raise

    async def retry_all(self, instance: str) -> int:
        check_instance(instance)
        # Bounded by what was failed when asked: a fetch that fails again at once (credentials
        # still wrong) comes back to the set while this runs and must not keep it going.
        left = int(await self.redis.zcard(keys.fetch_state(instance, "failed")))
        total = 0
        while left > 0:
            ids = [_s(j) or "" for j in await self.redis.zrange(
                keys.fetch_state(instance, "failed"), 0, min(_BATCH, left) - 1)]
            if not ids:
                break
            total += int(await self._script(
                keys=[keys.fetch_state(instance, "failed"), keys.fetch_state(instance, "queued"),
                      keys.fetch_stream(instance), *(keys.fetch_job(instance, j) for j in ids)],
                args=["retry_failed", *ids]))
            left -= len(ids)
        return total


def _run(job: FetchEntry) -> str:
    return "" if job.run is None else str(job.run)


def _entry(job_id: str, row: dict[bytes, bytes], notified: float) -> FetchEntry:
    def get(name: str) -> str | None:
        return _s(row.get(name.encode()))

    state = get("state") or "queued"
    return FetchEntry(
        id=job_id, instance=get("instance") or "", resource=get("resource") or "",
        state=state if state in FETCH_STATES else "queued",  # type: ignore[arg-type]
        attempts=int(get("attempts") or 0),
        notified_at=_f(row.get(b"notified_at")) or notified,
        next_attempt_at=_f(row.get(b"next_attempt_at")),
        failed_at=_f(row.get(b"failed_at")), last_error=get("last_error"))
