"""The example fetching channel runs the conformance kit: the core battery, the fetch battery
and hostile webhooks, on the kit's in-memory queue and stores (what a plugin author runs, no
Redis needed) and on the hub's own store, quarantine, fetch queue and fetch worker on real
Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from channels.secrets import Secret
from channels.services.fetches import FetchStore
from channels.testing import ChannelConformance, InboundCase, KitStore
from channels.testing.fetches import FetchBattery, FetchHarness, FetchKit
from channels.testing.webhooks import HostileWebhookBattery, KitQuarantine, MalformedCase
from storage.fetches import RedisFetchQueue
from storage.kit import StoreKit, StoreQuarantine
from storage.store import Store
from tests.channels.fetch_example.adapter import ExampleFetchChannel, ExampleFetchSettings
from tests.channels.fetch_example.provider import FetchProviderFake, notification_body
from tests.helpers import hub_fetch_worker

TOKEN = "example-fetch-token-0123456789"
SECRET = "example-fetch-secret-0123456789"


def buyer_message(n: int) -> InboundCase:
    text = f"Hola, ¿dónde está mi pedido {n}?"
    return InboundCase(
        name=f"message {n}",
        payload={"id": f"m-{n}", "from": "ana", "name": "Ana Pérez", "chat": "c-1",
                 "text": text, "sent_at": 1767225600 + n},
        provider_message_id=f"m-{n}", thread_id="c-1", sender_handle="ana", text=text,
        sender_name="Ana Pérez",
    )


class TestExampleFetchChannel(ChannelConformance, FetchBattery, HostileWebhookBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return [
            buyer_message(1),
            InboundCase(name="no chat: the sender is the thread",
                        payload={"id": "m-x", "from": "joao", "text": "Olá, cadê meu pedido?"},
                        provider_message_id="m-x", thread_id="joao", sender_handle="joao",
                        text="Olá, cadê meu pedido?"),
        ]

    def valid_body(self, subpath: str = "") -> bytes:
        return notification_body("m-1", 1)

    def malformed_bodies(self) -> list[MalformedCase]:
        return [
            MalformedCase("not JSON", b"{broken", "not a notification"),
            MalformedCase("no resource", b'{"id": "n-1", "topic": "messages"}', "resource"),
            MalformedCase("a path, not an id",
                          notification_body("../../admin", 1), "not a message id"),
            MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000),
        ]

    @pytest.fixture
    async def harness(self, fetch_kit: FetchKit) -> AsyncIterator[FetchHarness]:
        async with FetchProviderFake(TOKEN, SECRET) as provider:
            settings = ExampleFetchSettings(url=provider.url, token=Secret(TOKEN, "test"),
                                            secret=Secret(SECRET, "test"), timeout_seconds=5)
            async with fetch_kit.run(
                provider, lambda context: ExampleFetchChannel("shop", settings, context)
            ) as harness:
                yield harness


class TestExampleFetchChannelOnRedis(TestExampleFetchChannel):
    """inboxhub's own run of the same batteries: the hub's ingest, quarantine, fetch queue and
    fetch worker (consumer group, claim renewal, retry release) on real Redis."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def kit_quarantine(self, store: Store) -> KitQuarantine:
        return StoreQuarantine(store)

    @pytest.fixture
    def fetch_queue(self, redis: Redis) -> FetchStore:
        return RedisFetchQueue(redis)

    @pytest.fixture
    def fetch_worker(self, fetch_queue: RedisFetchQueue) -> object:
        return hub_fetch_worker(fetch_queue)
