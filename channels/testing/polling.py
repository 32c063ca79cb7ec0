"""The polling battery: what every ``PollingAdapter`` must pass, with no Redis needed.

A polling channel's test class mixes ``PollingBattery`` into its ``ChannelConformance``
subclass and supplies, besides ``inbound_cases()``:

* ``polling_case(n)``: a distinct buyer message for each ``n`` (its own provider message id);
* a ``harness`` fixture that starts the provider's fake and yields
  ``polling_kit.run(provider, factory)``: ``provider`` is a ``PollingProvider`` (publish a
  message, record sends), ``factory`` builds the adapter from the ``AdapterContext`` the kit
  gives it (one per simulated process, all sharing the same cursor store and lease manager).

The kit's ``PollingHarness`` is the core battery's harness for pollers: ``deliver(case)``
publishes the message at the provider (unless the provider still holds it unacknowledged, as a
real provider redelivers by itself) and returns True once the adapter stored it *and*
checkpointed a cursor after it, False once the kit's ingest refused it.

The battery: the cursor advances only after ingest (closed ingest: the cursor stays and the next
poll returns the message again); resume after a restart with no loss or duplicate; one poller
per account with two adapters running (and a standby that takes over on a clean stop); takeover
after the holder dies, with the dead holder's fence refused. By default the cursors and leases
are ``MemoryCursorStore``/``MemoryLeaseManager`` here; inboxhub's own channels override the
``cursor_store``/``lease_manager`` fixtures with the Redis ones (``storage.cursors``,
``storage.leases``). Example: ``tests/channels/polling_example/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, Literal, Protocol

import aiohttp
import msgspec
import pytest

from channels.base import AdapterContext, IngestOutcome
from channels.models import InboundMessage
from channels.polling import PollingAdapter
from channels.services.cursors import CursorStore, check_cursor, cursor_lease_name
from channels.services.leases import LeaseInfo, LeaseManager
from channels.supervisor import Backoff, Supervisor, TaskHealth
from channels.testing.core import FailureKind, InboundCase, IngestGate, SentRecord

# Kit pollers retry a refused ingest within milliseconds, not the hub's seconds.
KIT_BACKOFF: Final = Backoff(base=0.01, cap=0.1)


# -- in-memory services: what the hub gives a poller, without Redis ----------------------------


class MemoryLease:
    def __init__(self, manager: MemoryLeaseManager, name: str, fence: int, ttl: float) -> None:
        self._manager = manager
        self._name = name
        self._fence = fence
        self._ttl = ttl

    @property
    def name(self) -> str:
        return self._name

    @property
    def fence(self) -> int:
        return self._fence

    async def renew(self) -> bool:
        return self._manager._renew(self._name, self._fence, self._ttl)

    async def release(self) -> None:
        self._manager._release(self._name, self._fence)


class MemoryLeaseManager:
    """``channels.services.leases.LeaseManager`` in one process, with the Redis semantics:
    strictly increasing fences per name, expiry after the TTL, a lapsed lease taken back by
    its holder while nobody else was granted it."""

    def __init__(self, owner: str = "memory", clock: Callable[[], float] = time.monotonic):
        self.owner = owner
        self._clock = clock
        self._held: dict[str, tuple[int, float]] = {}  # name -> (fence, expires at)
        self._fences: dict[str, int] = {}

    def current_fence(self, name: str) -> int:
        """The last fence granted for ``name`` (0: never granted)."""
        return self._fences.get(name, 0)

    def _holding(self, name: str) -> tuple[int, float] | None:
        held = self._held.get(name)
        if held is not None and held[1] <= self._clock():
            del self._held[name]
            held = None
        return held

    async def acquire(self, name: str, ttl_seconds: float) -> MemoryLease | None:
        if not name or not ttl_seconds > 0:
            raise ValueError("a lease needs a name and a positive TTL")
        if self._holding(name) is not None:
            return None
        fence = self._fences[name] = self.current_fence(name) + 1
        self._held[name] = (fence, self._clock() + ttl_seconds)
        return MemoryLease(self, name, fence, ttl_seconds)

    async def holder(self, name: str) -> LeaseInfo | None:
        held = self._holding(name)
        if held is None:
            return None
        return LeaseInfo(fence=held[0], owner=self.owner, expires_in=held[1] - self._clock())

    def _renew(self, name: str, fence: int, ttl: float) -> bool:
        held = self._holding(name)
        if (held is not None and held[0] == fence) or (
                held is None and self.current_fence(name) == fence):
            self._held[name] = (fence, self._clock() + ttl)
            return True
        return False

    def _release(self, name: str, fence: int) -> None:
        held = self._holding(name)
        if held is not None and held[0] == fence:
            del self._held[name]


class MemoryCursorStore:
    """``channels.services.cursors.CursorStore`` fenced by a ``MemoryLeaseManager``."""

    def __init__(self, leases: MemoryLeaseManager) -> None:
        self.leases = leases
        self._values: dict[str, bytes] = {}

    async def load(self, instance: str, name: str) -> bytes | None:
        return self._values.get(cursor_lease_name(instance, name))

    async def save(self, instance: str, name: str, value: bytes, *, fence: int) -> bool:
        check_cursor(value)
        lease_name = cursor_lease_name(instance, name)
        if self.leases.current_fence(lease_name) != fence:
            return False
        self._values[lease_name] = value
        return True


# -- the harness ---------------------------------------------------------------------------------


class PollingProvider(Protocol):
    """The fake provider a polling adapter's test runs against: a local server speaking the
    provider's documented API. ``publish`` makes a message available to the next poll
    (publishing the same case again is the provider sending that message again)."""

    def publish(self, case: InboundCase) -> Awaitable[None] | None: ...

    def sent(self) -> list[SentRecord]: ...

    def fail_next_send(self, kind: FailureKind) -> None: ...


AdapterFactory = Callable[[AdapterContext], PollingAdapter]


class KitEvent(msgspec.Struct, frozen=True):
    """What one of the kit's pollers did, in order: stored a message or moved its cursor."""

    kind: Literal["stored", "checkpoint", "refused"]
    poller: int
    provider_message_id: str = ""
    duplicate: bool = False


class _RecordingIngest:
    def __init__(self, gate: IngestGate, poller: int, events: list[KitEvent]) -> None:
        self.gate = gate
        self.poller = poller
        self.events = events

    async def __call__(self, message: InboundMessage) -> IngestOutcome:
        outcome = await self.gate(message)
        self.events.append(KitEvent("stored", self.poller, message.provider_message_id,
                                    outcome.duplicate))
        return outcome


class _RecordingCursors:
    def __init__(self, inner: CursorStore, poller: int, events: list[KitEvent]) -> None:
        self.inner = inner
        self.poller = poller
        self.events = events

    async def load(self, instance: str, name: str) -> bytes | None:
        return await self.inner.load(instance, name)

    async def save(self, instance: str, name: str, value: bytes, *, fence: int) -> bool:
        saved = await self.inner.save(instance, name, value, fence=fence)
        self.events.append(KitEvent("checkpoint" if saved else "refused", self.poller))
        return saved


class PollingHarness:
    """The core battery's ``ConformanceHarness`` for a polling adapter, plus what the polling
    battery needs: more adapters of the same instance (other processes), stop and kill."""

    ack_timeout = 10.0

    def __init__(self, provider: PollingProvider, factory: AdapterFactory, gate: IngestGate,
                 cursors: CursorStore, leases: LeaseManager,
                 http: aiohttp.ClientSession) -> None:
        self.provider = provider
        self.factory = factory
        self.gate = gate
        self.cursors = cursors
        self.leases = leases
        self.http = http
        self.events: list[KitEvent] = []
        self.quarantined: list[tuple[bytes, str]] = []
        self.adapters: list[PollingAdapter] = []
        self._loops: list[Supervisor] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[str, int] = {}

    @property
    def adapter(self) -> PollingAdapter:
        """The first adapter started (the one the core battery sends through)."""
        return self.adapters[0]

    async def start_adapter(self) -> PollingAdapter:
        """Build and start another adapter of the same instance, as another hub process (or
        the same one after a restart) would: its own loops, the shared cursors and leases."""
        number = len(self.adapters)
        loops = Supervisor(f"kit-{number}", TaskHealth(), backoff=KIT_BACKOFF)
        self._loops.append(loops)
        context = AdapterContext(
            http=self.http, quarantine=self._quarantine, spawn=self._spawn, loops=loops,
            cursors=_RecordingCursors(self.cursors, number, self.events), leases=self.leases)
        adapter = self.factory(context)
        self.adapters.append(adapter)
        await adapter.start(_RecordingIngest(self.gate, number, self.events))
        return adapter

    async def stop(self, adapter: PollingAdapter) -> None:
        await adapter.stop()

    async def kill(self, adapter: PollingAdapter) -> None:
        """As SIGKILL would: the loops vanish, the leases stay until they expire."""
        await adapter.abandon()

    async def publish(self, case: InboundCase) -> None:
        published = self.provider.publish(case)
        if inspect.isawaitable(published):
            await published

    # -- ConformanceHarness ----------------------------------------------------------------

    async def deliver(self, case: InboundCase) -> bool:
        key = case.provider_message_id
        if key not in self._pending:
            self._pending[key] = len(self.events)
            await self.publish(case)
        since, refused = self._pending[key], self.gate.refused
        deadline = time.monotonic() + self.ack_timeout
        while time.monotonic() < deadline:
            if self._acknowledged(key, since):
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

    # -- observations ----------------------------------------------------------------------

    def stored(self) -> list[KitEvent]:
        return [e for e in self.events if e.kind == "stored"]

    async def wait_stored(self, provider_message_ids: Iterable[str],
                          timeout: float | None = None) -> None:
        wanted = set(provider_message_ids)
        await self.wait_until(
            lambda: wanted <= {e.provider_message_id for e in self.stored()},
            timeout, f"messages {sorted(wanted)} were not all stored")

    async def wait_until(self, check: Callable[[], bool], timeout: float | None = None,
                         what: str = "condition not met") -> None:
        deadline = time.monotonic() + (self.ack_timeout if timeout is None else timeout)
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} (kit events: {self.events[-20:]})")
            await asyncio.sleep(0.005)

    def _acknowledged(self, key: str, since: int) -> bool:
        stored_by: set[int] = set()
        for event in self.events[since:]:
            if event.kind == "stored" and event.provider_message_id == key:
                stored_by.add(event.poller)
            elif event.kind == "checkpoint" and event.poller in stored_by:
                return True
        return False

    async def _quarantine(self, channel_instance: str, raw: bytes, error: str, *,
                          headers: Any = None) -> str:
        self.quarantined.append((raw, error))
        return f"kit-q-{len(self.quarantined)}"

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"kit:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for adapter in self.adapters:
            await adapter.stop()
        for loops in self._loops:
            await loops.cancel_all()
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class PollingKit:
    """What the battery hands the author's ``harness`` fixture."""

    def __init__(self, gate: IngestGate, cursors: CursorStore, leases: LeaseManager) -> None:
        self.gate = gate
        self.cursors = cursors
        self.leases = leases

    @contextlib.asynccontextmanager
    async def run(self, provider: PollingProvider,
                  factory: AdapterFactory) -> AsyncIterator[PollingHarness]:
        """Start one adapter against ``provider``; everything the kit started stops on exit."""
        async with aiohttp.ClientSession() as http:
            harness = PollingHarness(provider, factory, self.gate, self.cursors, self.leases,
                                     http)
            try:
                await harness.start_adapter()
                yield harness
            finally:
                await harness.close()


# -- the battery ---------------------------------------------------------------------------------


def _ids(cases: Sequence[InboundCase]) -> list[str]:
    return [c.provider_message_id for c in cases]


class PollingBattery:
    """Mix into a ``ChannelConformance`` subclass whose adapter is a ``PollingAdapter``."""

    def polling_case(self, n: int) -> InboundCase:
        raise NotImplementedError("return a distinct InboundCase for each n (its own provider "
                                  "message id)")

    @pytest.fixture
    def lease_manager(self) -> LeaseManager:
        """Override (with ``cursor_store``) to run the battery on real leases."""
        return MemoryLeaseManager()

    @pytest.fixture
    def cursor_store(self, lease_manager: LeaseManager) -> CursorStore:
        if not isinstance(lease_manager, MemoryLeaseManager):
            raise TypeError("override cursor_store along with lease_manager")
        return MemoryCursorStore(lease_manager)

    @pytest.fixture
    def polling_kit(self, ingest_gate: IngestGate, cursor_store: CursorStore,
                    lease_manager: LeaseManager) -> PollingKit:
        return PollingKit(ingest_gate, cursor_store, lease_manager)

    def _cases(self, first: int, count: int) -> list[InboundCase]:
        cases = [self.polling_case(n) for n in range(first, first + count)]
        assert len(set(_ids(cases))) == count, "polling_case(n) must give distinct message ids"
        return cases

    # -- the battery -----------------------------------------------------------------------

    async def test_poll_cursor_advances_only_after_ingest(
        self, harness: PollingHarness, ingest_gate: IngestGate, cursor_store: CursorStore
    ) -> None:
        adapter = harness.adapter
        account = adapter.accounts()[0]
        stored, refused = self._cases(1, 2)
        assert await harness.deliver(stored)
        before = await cursor_store.load(adapter.instance, account)
        assert before is not None, "no cursor was checkpointed after a stored message"
        ingest_gate.open = False
        assert not await harness.deliver(refused), "acknowledged a message that was not stored"
        # The next poll returns the same message again: the cursor did not move past it.
        await harness.wait_until(lambda: ingest_gate.refused >= 2,
                                 what="the refused message was not polled again")
        assert await cursor_store.load(adapter.instance, account) == before
        ingest_gate.open = True
        assert await harness.deliver(refused)
        assert [e.provider_message_id for e in harness.stored()] == _ids([stored, refused])
        assert not any(e.duplicate for e in harness.stored())
        assert await cursor_store.load(adapter.instance, account) not in (None, before)

    async def test_poll_resumes_after_restart_without_loss_or_duplicate(
        self, harness: PollingHarness
    ) -> None:
        before = self._cases(1, 3)
        for case in before:
            assert await harness.deliver(case)
        await harness.stop(harness.adapter)
        during = self._cases(4, 3)  # published while no poller runs
        for case in during:
            await harness.publish(case)
        await harness.start_adapter()
        await harness.wait_stored(_ids(during))
        after = self._cases(7, 1)
        assert await harness.deliver(after[0])
        stored = harness.stored()
        assert [e.provider_message_id for e in stored] == _ids(before + during + after)
        assert not any(e.duplicate for e in stored), "a restarted poller fetched old messages"
        assert {e.poller for e in stored if e.provider_message_id in _ids(during)} == {1}

    async def test_poll_lease_is_exclusive(
        self, harness: PollingHarness, lease_manager: LeaseManager
    ) -> None:
        holder = harness.adapter
        assert await harness.deliver(self.polling_case(1))
        await harness.start_adapter()  # a standby: another process polling the same account
        name = cursor_lease_name(holder.instance, holder.accounts()[0])
        # Both run; only the holder polls: nothing is fetched twice.
        cases = self._cases(2, 10)
        for case in cases:
            await harness.publish(case)
        await harness.wait_stored(_ids(cases))
        assert {e.poller for e in harness.stored()} == {0}
        held = await lease_manager.holder(name)
        assert held is not None
        # A clean stop releases the lease: the standby takes over without waiting for the TTL.
        await harness.stop(holder)
        more = self._cases(12, 3)
        for case in more:
            await harness.publish(case)
        await harness.wait_stored(_ids(more))
        stored = harness.stored()
        assert {e.poller for e in stored if e.provider_message_id in _ids(more)} == {1}
        assert not any(e.duplicate for e in stored), "two pollers fetched the same messages"
        taken = await lease_manager.holder(name)
        assert taken is not None and taken.fence > held.fence

    async def test_poll_takeover_after_holder_dies(
        self, harness: PollingHarness, lease_manager: LeaseManager, cursor_store: CursorStore
    ) -> None:
        dead = harness.adapter
        account = dead.accounts()[0]
        name = cursor_lease_name(dead.instance, account)
        assert await harness.deliver(self.polling_case(1))
        held = await lease_manager.holder(name)
        assert held is not None
        survivor = await harness.start_adapter()
        await harness.kill(dead)
        cases = self._cases(2, 3)
        for case in cases:
            await harness.publish(case)
        await harness.wait_stored(_ids(cases),
                                  timeout=survivor.lease_seconds + harness.ack_timeout)
        stored = harness.stored()
        assert {e.poller for e in stored if e.provider_message_id in _ids(cases)} == {1}
        assert not any(e.duplicate for e in stored)
        taken = await lease_manager.holder(name)
        assert taken is not None and taken.fence > held.fence
        # Whatever the dead holder might still write is refused by its fence.
        cursor = await cursor_store.load(dead.instance, account)
        assert not await cursor_store.save(dead.instance, account, b"stale", fence=held.fence)
        assert await cursor_store.load(dead.instance, account) == cursor

    async def test_poll_stop_releases_the_lease(
        self, harness: PollingHarness, lease_manager: LeaseManager
    ) -> None:
        adapter = harness.adapter
        name = cursor_lease_name(adapter.instance, adapter.accounts()[0])
        assert await harness.deliver(self.polling_case(1))
        assert await lease_manager.holder(name) is not None
        await harness.stop(adapter)
        assert await lease_manager.holder(name) is None
