"""Mercado Libre's reconciliation poll runs the kit's polling battery: the cursor advances only
after ingest, a restart resumes with no loss or duplicate, one poller per account, takeover
after the holder dies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.base import AdapterContext
from channels.mercadolibre.adapter import MercadoLibreChannel
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
from tests.channels.mercadolibre.harness import load_tokens, settings
from tests.channels.mercadolibre.provider import KitMercadoLibre
from tests.channels.mercadolibre.test_conformance import buyer_message


class _PollView:
    def __init__(self, fake: KitMercadoLibre) -> None:
        self._fake = fake

    def publish(self, case: InboundCase) -> None:
        self._fake.publish(case)

    def sent(self) -> list[Any]:
        return self._fake.sent_records()

    def fail_next_send(self, kind: str) -> None:
        self._fake.fail_next_send(kind)


class TestMercadoLibrePolling(PollingBattery):
    """Only the polling battery: the core battery runs on the notify path
    (``test_conformance.py``); a redelivered message is not polled again here by design
    (the cursor skips what it stored), so the core battery's redelivery check does not apply."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    def inbound_cases(self) -> list[InboundCase]:
        return [buyer_message(1, "Hola"), buyer_message(2, "¿Me lo envían hoy?")]

    def polling_case(self, n: int) -> InboundCase:
        return buyer_message(n + 10, f"mensaje {n}")

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit) -> AsyncIterator[PollingHarness]:
        async with KitMercadoLibre() as provider:
            provider.unread_enabled = True
            tokens = MemoryTokenStore()
            await load_tokens(provider, tokens)

            def factory(context: AdapterContext) -> MercadoLibreChannel:
                context.tokens = tokens
                if context.fetches is None:  # the polling kit's context has no fetch queue
                    context.fetches = MemoryFetchQueue()
                adapter = MercadoLibreChannel("shop", settings(provider, lease_seconds=1.0),
                                              context)
                adapter.schedule = Schedule(interval_seconds=0.02, timeout_seconds=5.0)
                return adapter

            async with polling_kit.run(_PollView(provider), factory) as harness:
                yield harness


class TestMercadoLibrePollingOnRedis(TestMercadoLibrePolling):
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
