"""The example webhook channel runs the conformance kit: the core battery and the hostile-
webhook battery, on the kit's in-memory store (what a plugin author runs, no Redis) and on the
hub's atomic ingest and quarantine on real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from channels.secrets import Secret
from channels.testing import ChannelConformance, InboundCase, KitStore
from channels.testing.webhooks import (
    HostileWebhookBattery,
    KitQuarantine,
    MalformedCase,
    ServedWebhook,
    WebhookKit,
)
from storage.kit import StoreKit, StoreQuarantine
from storage.store import Store
from tests.channels.webhook_example.adapter import ExampleHookChannel, ExampleHookSettings
from tests.channels.webhook_example.provider import ExampleHookProvider

SECRET = "example-webhook-secret-0123"


class TestExampleHookChannel(ChannelConformance, HostileWebhookBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return [
            InboundCase(name="spanish buyer",
                        payload={"id": "m-1", "from": "ana", "name": "Ana Pérez", "chat": "c-1",
                                 "text": "Hola, ¿dónde está mi pedido?", "sent_at": 1767225600},
                        provider_message_id="m-1", thread_id="c-1", sender_handle="ana",
                        text="Hola, ¿dónde está mi pedido?", sender_name="Ana Pérez"),
            InboundCase(name="no chat: the sender is the thread",
                        payload={"id": "m-2", "from": "joao", "text": "Olá, cadê meu pedido?"},
                        provider_message_id="m-2", thread_id="joao", sender_handle="joao",
                        text="Olá, cadê meu pedido?"),
        ]

    def malformed_bodies(self) -> list[MalformedCase]:
        return [
            MalformedCase("not JSON", b"{broken", "not a message"),
            MalformedCase("no sender", b'{"id": "m-9", "text": "hola"}', "from"),
            MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000),
        ]

    @pytest.fixture
    async def harness(self, webhook_kit: WebhookKit) -> AsyncIterator[ServedWebhook]:
        async with ExampleHookProvider(SECRET) as provider:
            settings = ExampleHookSettings(secret=Secret(SECRET, "test"),
                                           send_url=provider.send_url, timeout_seconds=2)
            async with webhook_kit.run(
                provider, lambda context: ExampleHookChannel("shop", settings, context),
                sign=provider.sign,
            ) as harness:
                yield harness


class TestExampleHookChannelOnRedis(TestExampleHookChannel):
    """inboxhub's own run of the same batteries: the hub's ingest and quarantine."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def kit_quarantine(self, store: Store) -> KitQuarantine:
        return StoreQuarantine(store)
