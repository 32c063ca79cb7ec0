"""The fetch stage of fetch-after-notify: notifications that only named a resource, stored and
acknowledged by the webhook, are fetched here with the account's token and ingested.

Each hub process runs one ``StreamWorker`` (``hub.worker``) over the fetch streams of the
configured channel instances that declare ``Capabilities.fetch_after_notify``: at most
``fetches.concurrency`` fetches in flight, each entry acknowledged once its job is settled,
claims renewed while a fetch runs, and entries of a process that died mid-fetch reclaimed by
another (XAUTOCLAIM after ``storage.claim_idle_seconds``). The fetch and the decision on its
outcome are ``channels.fetching.run_fetch``, the same code the conformance kit runs; a second
supervised loop moves retrying jobs back to their stream when their backoff has run out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

import msgspec

from channels.base import ChannelAdapter
from channels.fetching import FetchPolicy, run_fetch
from channels.supervisor import Backoff, Supervisor, describe
from hub.config import FetchSettings
from hub.metrics import Metrics
from hub.worker import StreamWorker
from storage import keys
from storage.fetches import RedisFetchQueue
from storage.streams import Entry, StreamGroup

log = logging.getLogger(__name__)
FORGET_EVERY_SECONDS = 60.0

# Starts of one attempt that ended with no outcome (the process died mid-fetch) before the
# job is failed for an operator; ordinary restarts and deploys stay well below it.
MAX_INTERRUPTED_STARTS = 3


def policy_of(settings: FetchSettings) -> FetchPolicy:
    return FetchPolicy(max_attempts=settings.max_attempts,
                       backoff=Backoff(base=settings.backoff_base_seconds,
                                       cap=settings.backoff_max_seconds),
                       timeout_seconds=settings.timeout_seconds)


def fetching_instances(adapters: Mapping[str, ChannelAdapter]) -> list[str]:
    return sorted(name for name, adapter in adapters.items()
                  if adapter.capabilities.fetch_after_notify)


class Fetcher:
    """Runs the fetches of ``adapters``' instances (those that fetch after notify)."""

    def __init__(self, queue: RedisFetchQueue, adapters: Mapping[str, ChannelAdapter],
                 policy: FetchPolicy, *, consumer: str, claim_idle_ms: int, concurrency: int,
                 metrics: Metrics | None = None, block_ms: int = 500) -> None:
        self.queue = queue
        self.adapters = adapters
        self.policy = policy
        self.metrics = metrics
        self.instances = fetching_instances(adapters)
        self._next_forget = 0.0
        group = StreamGroup(queue.redis, queue.streams(self.instances), keys.FETCH_GROUP,
                            consumer, claim_idle_ms=claim_idle_ms)
        self.worker = StreamWorker("fetcher", group, self.handle, self.poisoned,
                                   concurrency=concurrency, block_ms=block_ms)

    def start(self, supervisor: Supervisor) -> None:
        """Register the loops; nothing runs in a hub without a fetching channel."""
        if not self.instances:
            return
        supervisor.loop("fetcher", self.worker.iteration, idle_seconds=0,
                        prepare=self.worker.prepare, on_stop=self.worker.drain)
        supervisor.loop("fetch-retry-release", self.release, idle_seconds=0.1)

    async def cancel(self) -> None:
        await self.worker.cancel()

    async def handle(self, entry: Entry) -> None:
        job = await self.queue.get(entry[2].get(b"job", b"").decode(errors="replace"))
        if job is None or job.state != "queued":
            return  # settled already: redelivered after a crash, or an operator's doing
        run, starts = await self.queue.begin(job)
        if run < 0:
            return
        job = msgspec.structs.replace(job, run=run)  # its settlement names this start
        if starts > MAX_INTERRUPTED_STARTS:
            # Every earlier start ended with the process (kill, OOM, a crash in the parser):
            # another reclaim would only stop the next process too.
            await self.queue.fail(job, error=(
                f"the fetch was interrupted {starts - 1} times without an outcome (the hub "
                "process stopped, or lost Redis, during it each time)"))
            log.warning("fetch %s of %s given up: interrupted %d times", job.id, job.instance,
                        starts - 1)
            if self.metrics is not None:
                self.metrics.fetches.labels(job.instance, "failed").inc()
            return
        outcome = await run_fetch(self.adapters.get(job.instance), job, self.queue, self.policy)
        if self.metrics is not None:
            self.metrics.fetches.labels(job.instance, outcome).inc()

    async def poisoned(self, entry: Entry, exc: BaseException) -> None:
        """``handle`` failed in a way ``run_fetch`` does not classify (a bug): the job is kept
        as failed with the reason, visible to operators, instead of blocking the stream."""
        job = await self.queue.get(entry[2].get(b"job", b"").decode(errors="replace"))
        if job is not None and job.state == "queued":
            await self.queue.fail(job, error=f"internal error: {describe(exc)}")
            if self.metrics is not None:
                self.metrics.fetches.labels(job.instance, "failed").inc()

    async def release(self) -> bool:
        now = time.monotonic()
        if now >= self._next_forget:  # failed records past their retention leave the views
            self._next_forget = now + FORGET_EVERY_SECONDS
            await self.queue.forget_expired(self.instances)
        return await self.queue.release_due(self.instances) > 0


async def export_backlog(queue: RedisFetchQueue, instances: Iterable[str],
                         metrics: Metrics) -> None:
    """Set ``inboxhub_fetch_backlog`` and ``inboxhub_fetch_oldest_age_seconds`` for the
    configured fetching instances and every instance that ever queued a fetch."""
    for instance in sorted({*instances, *await queue.instances()}):
        backlog = await queue.backlog(instance)
        metrics.fetch_backlog.labels(instance, "queued").set(backlog.queued)
        metrics.fetch_backlog.labels(instance, "retrying").set(backlog.retrying)
        metrics.fetch_backlog.labels(instance, "failed").set(backlog.failed)
        metrics.fetch_oldest_age.labels(instance).set(backlog.oldest_age_seconds or 0.0)
