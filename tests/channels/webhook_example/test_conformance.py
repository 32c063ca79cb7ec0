"""The example webhook channel runs the conformance kit: the core battery and the hostile-
webhook battery, on the kit's in-memory store (what a plugin author runs, no Redis) and on the
hub's atomic ingest and quarantine on real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from channels.secrets import Secret
from channels.testing import ChannelConformance, InboundCase, KitStore, fixtures
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
FIXTURES = Path(__file__).parent / "fixtures"


class TestExampleHookChannel(ChannelConformance, HostileWebhookBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return fixtures.inbound_cases(FIXTURES)  # recorded payloads, one file each

    def malformed_bodies(self) -> list[MalformedCase]:
        return [*fixtures.malformed_cases(FIXTURES),
                MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000)]

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
