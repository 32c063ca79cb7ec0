"""The example polling channel runs the conformance kit: the core battery and the polling
battery, on the kit's in-memory stores (what a plugin author runs, no Redis needed) and on the
hub's own store, cursors and leases on real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from channels.secrets import Secret
from channels.services.cursors import CursorStore
from channels.services.leases import LeaseManager
from channels.testing import ChannelConformance, InboundCase, KitStore
from channels.testing.polling import PollingBattery, PollingHarness, PollingKit
from storage.cursors import RedisCursorStore
from storage.kit import StoreKit
from storage.leases import RedisLeaseManager
from storage.store import Store
from tests.channels.polling_example.adapter import ExampleChannel, ExampleSettings
from tests.channels.polling_example.provider import ExampleProvider

TOKEN = "example-token-0123456789"


def buyer_message(n: int) -> InboundCase:
    text = f"Hola, ¿dónde está mi pedido {n}?"
    return InboundCase(
        name=f"message {n}",
        payload={"id": f"m-{n}", "from": "ana", "name": "Ana Pérez", "chat": "c-1",
                 "text": text, "sent_at": 1767225600 + n},
        provider_message_id=f"m-{n}", thread_id="c-1", sender_handle="ana", text=text,
        sender_name="Ana Pérez",
    )


class TestExampleChannel(ChannelConformance, PollingBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return [
            buyer_message(1),
            InboundCase(name="no chat: the sender is the thread",
                        payload={"id": "m-x", "from": "joao", "text": "Olá, cadê meu pedido?"},
                        provider_message_id="m-x", thread_id="joao", sender_handle="joao",
                        text="Olá, cadê meu pedido?"),
        ]

    def polling_case(self, n: int) -> InboundCase:
        return buyer_message(n)

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit) -> AsyncIterator[PollingHarness]:
        async with ExampleProvider(TOKEN) as provider:
            settings = ExampleSettings(url=provider.url, token=Secret(TOKEN, "test"),
                                       poll_interval_seconds=0.02, lease_seconds=1.0)
            async with polling_kit.run(
                provider, lambda context: ExampleChannel("shop", settings, context)
            ) as harness:
                yield harness


class TestExampleChannelOnRedis(TestExampleChannel):
    """inboxhub's own run of the same battery: the hub's ingest, cursors and leases."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def lease_manager(self, redis: Redis) -> LeaseManager:
        return RedisLeaseManager(redis, owner="kit")

    @pytest.fixture
    def cursor_store(self, redis: Redis) -> CursorStore:
        return RedisCursorStore(redis)
