"""The fetch-after-notify battery: a channel whose notifications only name a resource
acknowledges them before fetching, retries failed fetches, keeps permanent failures visible,
fetches a repeated notification once and stores only what it fetched.

Mix ``FetchBattery`` into the conformance class of an adapter with
``Capabilities.fetch_after_notify``. The test class supplies, besides ``inbound_cases()`` (the
resources and the messages they must normalize to), a ``harness`` fixture that starts the
provider's fake and yields ``fetch_kit.run(provider, factory)``:

* ``provider`` is a ``FetchProvider``: a local server speaking the provider's API that serves
  each published case as a resource, writes the provider's notifications about it, can hold
  resource requests until released and fail the next ones;
* ``factory`` builds the adapter from the ``AdapterContext`` the kit gives it (its ``fetches``
  is the kit's queue; set other services on it before building, e.g. ``tokens``).

The kit mounts the adapter the way the hub does (``channels.testing.webhooks.mount``) and runs
a fetch worker beside it. Its ``FetchHarness`` is the core battery's harness (``deliver(case)``
publishes the resource, posts a notification about it and returns True once the fetched
message is stored, False once the kit's ingest refused it; a case not stored yet is notified
again with the same notification, as a provider redelivers) and a
``channels.testing.webhooks.WebhookHarness``, so ``HostileWebhookBattery`` mixes in as well.

The queue is the ``fetch_queue`` fixture, ``MemoryFetchQueue`` by default, and the worker the
``fetch_worker`` fixture, which runs ``channels.fetching.run_fetch`` over it (a plugin author
needs no Redis); inboxhub's own channels override both with ``storage.fetches.RedisFetchQueue``
and the hub's fetcher. Example: ``tests/channels/fetch_example/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.base import AdapterContext, ChannelAdapter, IngestOutcome
from channels.fetching import FetchPolicy, run_fetch
from channels.models import InboundMessage
from channels.services.fetches import (
    DEFAULT_DEDUPE_TTL_SECONDS,
    FETCH_STATES,
    FetchBacklog,
    FetchEntry,
    FetchQueue,
    FetchState,
    FetchStore,
    NotFailed,
    UnknownFetch,
    check_notice,
)
from channels.supervisor import Backoff, Supervisor, TaskHealth
from channels.testing.core import FailureKind, InboundCase, IngestGate, SentRecord
from channels.testing.webhooks import KitQuarantine, MemoryQuarantine, WebhookAnswer, mount

# Kit workers retry within milliseconds, not the hub's seconds.
KIT_POLICY: Final = FetchPolicy(max_attempts=5, backoff=Backoff(base=0.01, cap=0.05),
                                timeout_seconds=10.0)


# -- the in-memory queue -------------------------------------------------------------------------


class _Job(msgspec.Struct):
    id: str
    instance: str
    resource: str
    notified_at: float
    state: FetchState = "queued"
    attempts: int = 0
    next_attempt_at: float | None = None
    failed_at: float | None = None
    last_error: str | None = None

    def entry(self) -> FetchEntry:
        return FetchEntry(id=self.id, instance=self.instance, resource=self.resource,
                          state=self.state, attempts=self.attempts,
                          notified_at=self.notified_at, next_attempt_at=self.next_attempt_at,
                          failed_at=self.failed_at, last_error=self.last_error)


class MemoryFetchQueue:
    """``FetchStore`` in one process's memory, with the Redis queue's rules (dedupe window,
    states, settlements that change nothing on a job no longer queued, operator retry), and
    ``running`` to fetch from it."""

    def __init__(self, *, dedupe_ttl_seconds: float = DEFAULT_DEDUPE_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dedupe_ttl_seconds = dedupe_ttl_seconds
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}  # -> forget at
        self._jobs: dict[str, _Job] = {}
        self._ready: deque[str] = deque()
        self._taken: set[str] = set()
        self._instances: set[str] = set()
        self._next = 0
        self._changed = asyncio.Event()

    # -- FetchQueue ------------------------------------------------------------------------

    async def notify(self, instance: str, resource: str, *, dedupe_key: str) -> bool:
        check_notice(resource, dedupe_key)
        now = self._clock()
        self._seen = {k: t for k, t in self._seen.items() if t > now}
        if (instance, dedupe_key) in self._seen:
            return False
        self._seen[(instance, dedupe_key)] = now + self.dedupe_ttl_seconds
        self._next += 1
        job_id = f"{time.time_ns():016x}{self._next:08x}.{instance}"
        self._jobs[job_id] = _Job(job_id, instance, resource, time.time())
        self._instances.add(instance)
        self._ready.append(job_id)
        self._changed.set()
        return True

    async def backlog(self, instance: str) -> FetchBacklog:
        jobs = [j for j in self._jobs.values() if j.instance == instance]
        waiting = [j.notified_at for j in jobs if j.state != "failed"]
        return FetchBacklog(
            instance=instance, queued=sum(1 for j in jobs if j.state == "queued"),
            retrying=sum(1 for j in jobs if j.state == "retrying"),
            failed=sum(1 for j in jobs if j.state == "failed"),
            oldest_age_seconds=max(0.0, time.time() - min(waiting)) if waiting else None)

    # -- FetchSettlement -------------------------------------------------------------------

    def _queued(self, job: FetchEntry) -> _Job | None:
        found = self._jobs.get(job.id)
        self._taken.discard(job.id)
        return found if found is not None and found.state == "queued" else None

    async def done(self, job: FetchEntry) -> None:
        if self._queued(job) is not None:
            del self._jobs[job.id]

    async def retry_later(self, job: FetchEntry, *, delay: float, error: str) -> None:
        found = self._queued(job)
        if found is not None:
            found.state, found.attempts = "retrying", found.attempts + 1
            found.next_attempt_at, found.last_error = time.time() + max(0.0, delay), error
            self._changed.set()

    async def fail(self, job: FetchEntry, *, error: str) -> None:
        found = self._queued(job)
        if found is not None:
            found.state, found.attempts = "failed", found.attempts + 1
            found.failed_at, found.last_error, found.next_attempt_at = time.time(), error, None

    # -- FetchAdmin ------------------------------------------------------------------------

    async def instances(self) -> list[str]:
        return sorted(self._instances)

    async def entries(self, instance: str | None = None, state: FetchState | None = None, *,
                      limit: int = 50, after: str | None = None) -> list[FetchEntry]:
        found = [j for j in self._jobs.values()
                 if (instance is None or j.instance == instance)
                 and (state is None or j.state == state) and (after is None or j.id < after)]
        return [j.entry() for j in sorted(found, key=lambda j: j.id, reverse=True)[:limit]]

    async def get(self, job_id: str) -> FetchEntry | None:
        found = self._jobs.get(job_id)
        return found.entry() if found is not None else None

    async def retry(self, job_id: str) -> None:
        found = self._jobs.get(job_id)
        if found is None:
            raise UnknownFetch(job_id)
        if found.state != "failed":
            raise NotFailed(job_id)
        found.state, found.attempts, found.failed_at = "queued", 0, None
        self._ready.append(job_id)
        self._changed.set()

    async def retry_all(self, instance: str) -> int:
        failed = [j.id for j in self._jobs.values()
                  if j.instance == instance and j.state == "failed"]
        for job_id in sorted(failed):
            await self.retry(job_id)
        return len(failed)

    # -- the kit's worker --------------------------------------------------------------------

    def _release_due(self) -> None:
        now = time.time()
        for job in self._jobs.values():
            if job.state == "retrying" and (job.next_attempt_at or 0) <= now:
                job.state, job.next_attempt_at = "queued", None
                self._ready.append(job.id)

    def _take(self) -> FetchEntry | None:
        self._release_due()
        while self._ready:
            job = self._jobs.get(self._ready.popleft())
            if job is not None and job.state == "queued" and job.id not in self._taken:
                self._taken.add(job.id)
                return job.entry()
        return None

    def _give_back(self, job: FetchEntry) -> None:
        """A fetch interrupted before it was settled (the worker stopped) is fetched again."""
        if job.id in self._taken:
            self._taken.discard(job.id)
            self._ready.appendleft(job.id)

    def _next_due(self) -> float:
        due = [j.next_attempt_at or 0 for j in self._jobs.values() if j.state == "retrying"]
        return max(0.0, min(due) - time.time()) if due else 1.0

    @contextlib.asynccontextmanager
    async def running(self, adapters: Mapping[str, ChannelAdapter],
                      policy: FetchPolicy = KIT_POLICY) -> AsyncIterator[None]:
        """Fetch queued jobs of ``adapters``' instances, one at a time, until the block ends."""
        loops = Supervisor("kit-fetcher", TaskHealth(), backoff=policy.backoff)

        async def iteration() -> bool:
            job = self._take()
            if job is None:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(self._next_due(), 0.05))
                return True
            try:
                await run_fetch(adapters.get(job.instance), job, self, policy)
            except BaseException:
                self._give_back(job)
                raise
            return True

        loops.loop("kit-fetcher", iteration, idle_seconds=0.0)
        try:
            yield
        finally:
            loops.stop.set()
            await loops.cancel_all()


# -- the harness ---------------------------------------------------------------------------------


class FetchProvider(Protocol):
    """The fake provider a fetching adapter's test runs against (a local server speaking the
    provider's documented API)."""

    def publish(self, case: InboundCase) -> None:
        """Serve ``case.payload`` as the resource ``case`` names (again: replace it)."""
        ...

    def notification(self, case: InboundCase, number: int) -> bytes:
        """The provider's notification number ``number`` about ``case``'s resource: another
        number is another notification (a new action on the resource), the same number the
        same notification sent again."""
        ...

    def forged_notification(self, case: InboundCase, number: int) -> bytes | None:
        """A notification about ``case``'s resource whose body also claims data (a text, a
        sender) that differs from the resource; None when the provider's notifications
        carry no data at all."""
        ...

    def signed_headers(self, body: bytes) -> dict[str, str]:
        """The headers the provider sends with ``body``. A provider that signs the URL as well
        (Shopee: ``callback_url|body``) also defines ``signed_headers_for(body, url)``, which
        the harness then calls with the exact URL it posts to."""
        ...

    def hold_fetches(self) -> None:
        """Resource requests wait, unanswered, until ``release_fetches``."""
        ...

    def release_fetches(self) -> None: ...

    def fail_next_fetch(self, kind: FailureKind) -> None:
        """Answer the next resource request with that kind of failure."""
        ...

    @property
    def fetch_requests(self) -> int:
        """Resource requests received so far, whatever they were answered."""
        ...

    def sent(self) -> list[SentRecord]: ...

    def fail_next_send(self, kind: FailureKind) -> None: ...


AdapterFactory = Callable[[AdapterContext], ChannelAdapter]
FetchWorkerFactory = Callable[[ChannelAdapter], AbstractAsyncContextManager[None]]


class GatedFetchQueue:
    """The queue as the adapter sees it, with a switch: closed, ``notify`` fails as a Redis
    outage would (to prove the webhook then does not acknowledge)."""

    def __init__(self, inner: FetchQueue) -> None:
        self.inner = inner
        self.open = True
        self.refused = 0

    async def notify(self, instance: str, resource: str, *, dedupe_key: str) -> bool:
        if not self.open:
            self.refused += 1
            raise ConnectionError("fetch queue unavailable (closed by the conformance kit)")
        return await self.inner.notify(instance, resource, dedupe_key=dedupe_key)

    async def backlog(self, instance: str) -> FetchBacklog:
        return await self.inner.backlog(instance)


class _RecordingIngest:
    def __init__(self, gate: IngestGate, stored: list[str]) -> None:
        self.gate = gate
        self.stored = stored

    async def __call__(self, message: InboundMessage) -> IngestOutcome:
        outcome = await self.gate(message)
        self.stored.append(message.provider_message_id)
        return outcome


class FetchHarness:
    """The core battery's ``ConformanceHarness`` and a ``WebhookHarness`` for a fetching
    adapter, plus what the fetch battery observes."""

    ack_timeout = 10.0

    def __init__(self, adapter: ChannelAdapter, provider: FetchProvider, queue: FetchStore,
                 gated: GatedFetchQueue, gate: IngestGate, stored: list[str],
                 http: aiohttp.ClientSession, server: TestServer) -> None:
        self.adapter = adapter
        self.provider = provider
        self.queue = queue
        self.gated = gated
        self.gate = gate
        self.stored_ids = stored
        self.http = http
        self.server = server
        self._pending: dict[str, tuple[int, int]] = {}  # case -> (notification, stored since)
        self._numbers = 0

    # -- WebhookHarness ----------------------------------------------------------------------

    def url(self, subpath: str = "") -> str:
        """The webhook URL the harness posts ``subpath`` to (what a URL-signing provider signs)."""
        path, _, query = subpath.partition("?")
        return str(self.server.make_url(
            f"/webhooks/{self.adapter.type_name}/{self.adapter.instance}"
            + (f"/{path}" if path else "") + (f"?{query}" if query else "")))

    async def request(self, method: str, subpath: str, body: bytes,
                      headers: Mapping[str, str]) -> WebhookAnswer:
        url = self.url(subpath)
        async with self.http.request(method, url, data=body or None, headers=dict(headers),
                                     timeout=aiohttp.ClientTimeout(total=self.ack_timeout)
                                     ) as resp:
            return WebhookAnswer(resp.status, await resp.read(), dict(resp.headers))

    def signed_headers(self, body: bytes, subpath: str = "") -> dict[str, str]:
        signed_for: Callable[[bytes, str], dict[str, str]] | None = getattr(
            self.provider, "signed_headers_for", None)
        if signed_for is not None:
            return signed_for(body, self.url(subpath))
        return self.provider.signed_headers(body)

    # -- ConformanceHarness ------------------------------------------------------------------

    def new_number(self) -> int:
        self._numbers += 1
        return self._numbers

    async def post(self, body: bytes) -> WebhookAnswer:
        return await self.request("POST", "", body, self.signed_headers(body))

    async def notify(self, case: InboundCase, number: int | None = None) -> WebhookAnswer:
        """Publish ``case``'s resource and post notification ``number`` (default: a new one)."""
        self.provider.publish(case)
        return await self.post(self.provider.notification(
            case, self.new_number() if number is None else number))

    async def deliver(self, case: InboundCase) -> bool:
        key = case.provider_message_id
        if key not in self._pending:
            self.provider.publish(case)
            self._pending[key] = (self.new_number(), len(self.stored_ids))
        number, since = self._pending[key]
        refused = self.gate.refused
        answer = await self.post(self.provider.notification(case, number))
        if not 200 <= answer.status < 300:
            return False
        deadline = time.monotonic() + self.ack_timeout
        while time.monotonic() < deadline:
            if key in self.stored_ids[since:]:
                del self._pending[key]
                return True
            if self.gate.refused > refused:
                return False
            await asyncio.sleep(0.005)
        return False

    def sent(self) -> list[SentRecord]:
        return self.provider.sent()

    def fail_next_send(self, kind: FailureKind) -> None:
        self.provider.fail_next_send(kind)

    # -- AttachmentHarness (channels.testing.attachments) ------------------------------------

    async def deliver_answer(self, case: InboundCase) -> tuple[bool, str]:
        """A fetching channel acknowledges before it reads a file, so a file over its limits
        is never refused in the answer: "acknowledged" here is "the fetched message was
        stored", with a refused file marked on it."""
        return await self.deliver(case), ""

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        """The provider's ``sent_attachments()``: per accepted send, its files as (name,
        content type, bytes)."""
        files: Callable[[], list[list[tuple[str, str, bytes]]]] | None = getattr(
            self.provider, "sent_attachments", None)
        if files is None:
            raise AssertionError("the fake provider records no sent_attachments()")
        return files()

    # -- observations ----------------------------------------------------------------------

    async def backlog(self) -> FetchBacklog:
        return await self.queue.backlog(self.adapter.instance)

    async def wait_until(self, check: Callable[[], Any], timeout: float | None = None,
                         what: str = "condition not met") -> None:
        """Until ``check()`` (or the coroutine it returns) is truthy."""
        deadline = time.monotonic() + (self.ack_timeout if timeout is None else timeout)
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} (stored: {self.stored_ids[-20:]}, backlog: "
                                     f"{await self.backlog()})")
            await asyncio.sleep(0.005)

    async def wait_stored(self, provider_message_ids: Iterable[str]) -> None:
        wanted = set(provider_message_ids)
        await self.wait_until(lambda: wanted <= set(self.stored_ids),
                              what=f"messages {sorted(wanted)} were not all stored")

    async def wait_settled(self) -> FetchBacklog:
        """Until nothing is queued or retrying: every notification fetched or failed."""
        async def settled() -> bool:
            backlog = await self.backlog()
            return backlog.queued == 0 and backlog.retrying == 0
        await self.wait_until(settled, what="fetches still queued or retrying")
        return await self.backlog()


class FetchKit:
    """What the battery hands the author's ``harness`` fixture."""

    def __init__(self, gate: IngestGate, queue: FetchStore, worker: FetchWorkerFactory,
                 quarantine: KitQuarantine, max_body_bytes: int = 64 * 1024) -> None:
        self.gate = gate
        self.queue = queue
        self.worker = worker
        self.quarantine = quarantine
        self.max_body_bytes = max_body_bytes

    @contextlib.asynccontextmanager
    async def run(self, provider: FetchProvider,
                  factory: AdapterFactory) -> AsyncIterator[FetchHarness]:
        """Start the adapter behind a webhook server, with a fetch worker; all stopped on exit."""
        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
            task = asyncio.create_task(coro, name=f"kit:{name}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return task

        loops = Supervisor("kit-channel", TaskHealth())
        gated = GatedFetchQueue(self.queue)
        stored: list[str] = []
        async with aiohttp.ClientSession() as http:
            adapter = factory(AdapterContext(
                http=http, quarantine=self.quarantine, spawn=spawn, loops=loops,
                fetches=gated, max_body_bytes=self.max_body_bytes))
            await adapter.start(_RecordingIngest(self.gate, stored))
            app = web.Application()
            mount(app, adapter)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            try:
                async with self.worker(adapter):
                    yield FetchHarness(adapter, provider, self.queue, gated, self.gate, stored,
                                       http, server)
                    provider.release_fetches()  # a held fetch must not outlast the test
            finally:
                provider.release_fetches()
                await adapter.stop()
                await loops.cancel_all()
                for task in set(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await server.close()


# -- the battery ---------------------------------------------------------------------------------


class FetchBattery:
    """Mix into a ``ChannelConformance`` subclass whose adapter fetches after notify."""

    @pytest.fixture
    def fetch_queue(self) -> FetchStore:
        """Override (with ``fetch_worker``) to run the battery on the hub's queue."""
        return MemoryFetchQueue()

    @pytest.fixture
    def fetch_worker(self, fetch_queue: FetchStore) -> FetchWorkerFactory:
        if not isinstance(fetch_queue, MemoryFetchQueue):
            raise TypeError("override fetch_worker along with fetch_queue")
        return lambda adapter: fetch_queue.running({adapter.instance: adapter})

    @pytest.fixture
    def kit_quarantine(self) -> KitQuarantine:
        return MemoryQuarantine()

    @pytest.fixture
    def fetch_kit(self, ingest_gate: IngestGate, fetch_queue: FetchStore,
                  fetch_worker: FetchWorkerFactory, kit_quarantine: KitQuarantine) -> FetchKit:
        return FetchKit(ingest_gate, fetch_queue, fetch_worker, kit_quarantine)

    def _case(self) -> InboundCase:
        return self.inbound_cases()[0]  # type: ignore[attr-defined,no-any-return]

    @staticmethod
    def _ok(answer: WebhookAnswer, what: str) -> None:
        assert 200 <= answer.status < 300, f"{what} was answered {answer.status}: " \
                                           f"{answer.body[:200]!r}"

    async def test_fetch_the_notification_is_acknowledged_before_the_fetch(
        self, harness: FetchHarness
    ) -> None:
        assert harness.adapter.capabilities.fetch_after_notify
        case = self._case()
        harness.provider.hold_fetches()
        # The resource cannot be fetched until released: an answer now came before the fetch.
        self._ok(await harness.notify(case), "the notification")
        assert harness.stored_ids == [], "stored before the resource was fetched"
        assert (await harness.backlog()).queued == 1, "acknowledged but not queued"
        await harness.wait_until(lambda: harness.provider.fetch_requests >= 1,
                                 what="the worker did not fetch the resource")
        assert harness.stored_ids == []
        harness.provider.release_fetches()
        await harness.wait_stored([case.provider_message_id])
        backlog = await harness.wait_settled()
        assert (backlog.queued, backlog.retrying, backlog.failed) == (0, 0, 0)
        assert backlog.oldest_age_seconds is None

    async def test_fetch_a_notification_that_cannot_be_stored_is_not_acknowledged(
        self, harness: FetchHarness
    ) -> None:
        case = self._case()
        harness.gated.open = False
        answer = await harness.notify(case, 1)
        assert not 200 <= answer.status < 300, "acknowledged a notification that was not stored"
        assert harness.gated.refused == 1
        assert (await harness.backlog()).queued == 0
        harness.gated.open = True
        self._ok(await harness.notify(case, 1), "the provider's redelivery")
        await harness.wait_stored([case.provider_message_id])
        assert harness.stored_ids == [case.provider_message_id]

    async def test_fetch_a_failed_fetch_is_retried_until_it_succeeds(
        self, harness: FetchHarness
    ) -> None:
        case = self._case()
        harness.provider.fail_next_fetch("retryable")
        harness.provider.fail_next_fetch("retryable")
        self._ok(await harness.notify(case), "the notification")
        await harness.wait_stored([case.provider_message_id])
        assert harness.provider.fetch_requests == 3, "two failures, then the fetch that worked"
        assert harness.stored_ids == [case.provider_message_id]
        backlog = await harness.wait_settled()
        assert (backlog.retrying, backlog.failed) == (0, 0)

    @pytest.mark.parametrize("kind", ["permanent", "auth"])
    async def test_fetch_a_permanent_failure_is_kept_visible_for_an_operator(
        self, harness: FetchHarness, kind: FailureKind
    ) -> None:
        case = self._case()
        harness.provider.fail_next_fetch(kind)
        self._ok(await harness.notify(case), "the notification")
        backlog = await harness.wait_settled()
        assert backlog.failed == 1, backlog
        assert harness.provider.fetch_requests == 1, "a permanent failure was retried"
        assert harness.stored_ids == []
        [entry] = await harness.queue.entries(harness.adapter.instance, "failed")
        assert entry.state == "failed" and entry.attempts == 1
        assert entry.last_error, "failed without the reason"
        expected = "AuthError" if kind == "auth" else "PermanentError"
        assert expected in entry.last_error, entry.last_error
        # The cause is fixed (credentials renewed): the operator's retry fetches it.
        harness.provider.hold_fetches()
        await harness.queue.retry(entry.id)
        with pytest.raises(NotFailed):
            await harness.queue.retry(entry.id)  # queued now, not failed: once is enough
        harness.provider.release_fetches()
        await harness.wait_stored([case.provider_message_id])
        backlog = await harness.wait_settled()
        assert backlog.failed == 0
        assert await harness.queue.get(entry.id) is None
        with pytest.raises(UnknownFetch):
            await harness.queue.retry(entry.id)

    async def test_fetch_duplicate_notifications_give_one_fetch_and_one_message(
        self, harness: FetchHarness
    ) -> None:
        case = self._case()
        harness.provider.publish(case)
        body = harness.provider.notification(case, harness.new_number())
        for _ in range(2):
            self._ok(await harness.post(body), "a repeated notification")
        answers = await asyncio.gather(*(harness.post(body) for _ in range(4)))
        for answer in answers:
            self._ok(answer, "a repeated notification")
        await harness.wait_stored([case.provider_message_id])
        await harness.wait_settled()
        assert harness.provider.fetch_requests == 1, "a repeated notification was fetched"
        assert harness.stored_ids == [case.provider_message_id]
        assert len(harness.gate.results) == 1 and not harness.gate.results[0].duplicate

    async def test_fetch_only_fetched_data_is_stored(self, harness: FetchHarness) -> None:
        case = self._case()
        harness.provider.publish(case)
        forged = harness.provider.forged_notification(case, harness.new_number())
        if forged is None:
            pytest.skip("the provider's notifications carry no data to distrust")
        self._ok(await harness.post(forged), "the notification")
        await harness.wait_stored([case.provider_message_id])
        stored = await harness.gate.store.inbound(harness.gate.results[-1].message_id)
        assert stored is not None
        assert (stored.text, stored.sender_handle, stored.thread_id) == \
            (case.text, case.sender_handle, case.thread_id), \
            "the notification's claims were stored instead of the fetched resource"
        assert harness.provider.fetch_requests == 1

    async def test_fetch_backlog_counts_each_state(self, harness: FetchHarness) -> None:
        cases = self.inbound_cases()  # type: ignore[attr-defined]
        assert len(cases) >= 2, "list at least two inbound cases"
        harness.provider.fail_next_fetch("permanent")
        self._ok(await harness.notify(cases[0]), "the notification")
        await harness.wait_settled()
        harness.provider.hold_fetches()
        self._ok(await harness.notify(cases[1]), "the notification")
        backlog = await harness.backlog()
        assert (backlog.queued, backlog.retrying, backlog.failed) == (1, 0, 1), backlog
        assert backlog.oldest_age_seconds is not None and backlog.oldest_age_seconds >= 0
        assert [e.state for e in await harness.queue.entries(harness.adapter.instance)] == \
            ["queued", "failed"], "entries are listed newest first"
        harness.provider.release_fetches()
        await harness.wait_stored([cases[1].provider_message_id])
        assert await harness.queue.retry_all(harness.adapter.instance) == 1
        await harness.wait_stored([cases[0].provider_message_id])
        backlog = await harness.wait_settled()
        assert (backlog.queued, backlog.retrying, backlog.failed) == (0, 0, 0)


__all__ = [
    "FETCH_STATES",
    "KIT_POLICY",
    "FetchBattery",
    "FetchHarness",
    "FetchKit",
    "FetchProvider",
    "FetchWorkerFactory",
    "GatedFetchQueue",
    "MemoryFetchQueue",
]
