"""Lazada's session/message poll (the path Lazada itself calls reliable) runs the kit's polling
battery: the cursor advances only after ingest, a restart resumes with no loss or duplicate,
one poller per account under the lease, takeover after the holder dies; on the kit's memory
stores and on the hub's store, cursors and leases on Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.base import AdapterContext
from channels.lazada.adapter import LazadaChannel
from channels.polling import Schedule
from channels.services.cursors import CursorStore
from channels.services.leases import LeaseManager
from channels.testing import InboundCase, IngestGate, KitStore
from channels.testing.core import MemoryKitStore
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.polling import PollingBattery, PollingHarness, PollingKit
from channels.testing.tokens import MemoryTokenStore
from storage.cursors import RedisCursorStore
from storage.kit import StoreKit
from storage.leases import RedisLeaseManager
from storage.store import Store
from tests.channels.lazada.harness import load_tokens, settings
from tests.channels.lazada.provider import LazadaFake, kit_case


class _PollView:
    def __init__(self, fake: LazadaFake) -> None:
        self._fake = fake

    def publish(self, case: InboundCase) -> None:
        self._fake.publish(case)

    def sent(self) -> list[Any]:
        return self._fake.sent_records()

    def fail_next_send(self, kind: Any) -> None:
        self._fake.fail_next_send(kind)


class TestLazadaPolling(PollingBattery):
    """Only the polling battery: the core battery runs on the push path
    (``test_conformance.py``)."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    def inbound_cases(self) -> list[InboundCase]:
        return [kit_case(1, "Hi"), kit_case(2, "Boleh hantar hari ini?")]

    def polling_case(self, n: int) -> InboundCase:
        # Every other case shares one session: a session that changes again is re-read
        # from the cursor, not from its start.
        return kit_case(n + 10, f"message {n}", session="1099999999" if n % 2 else None)

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit) -> AsyncIterator[PollingHarness]:
        async with LazadaFake() as provider:
            tokens = MemoryTokenStore()
            await load_tokens(provider, tokens)

            def factory(context: AdapterContext) -> LazadaChannel:
                context.tokens = tokens
                if context.fetches is None:  # the polling kit's context has no fetch queue
                    context.fetches = MemoryFetchQueue()
                adapter = LazadaChannel("shop", settings(provider, lease_seconds=1.0), context)
                adapter.schedule = Schedule(interval_seconds=0.02, timeout_seconds=5.0)
                return adapter

            async with polling_kit.run(_PollView(provider), factory) as harness:
                yield harness


class TestLazadaPollingOnRedis(TestLazadaPolling):
    """The same battery on the hub's store, cursors and leases on real Redis."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def lease_manager(self, redis: Redis) -> LeaseManager:
        return RedisLeaseManager(redis, owner="kit")

    @pytest.fixture
    def cursor_store(self, redis: Redis) -> CursorStore:
        return RedisCursorStore(redis)
