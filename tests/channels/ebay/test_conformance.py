"""eBay runs the conformance kit against the local fake: the core, fetch-after-notify,
hostile-webhook, window and token batteries on the kit's memory stores, and again on the
hub's store, quarantine, fetch worker and token store on Redis (with the rate-limit battery on
the hub's limiter); the polling battery on memory and on Redis cursors and leases."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.base import AdapterContext
from channels.ebay.adapter import EbayChannel, EbaySettings
from channels.polling import Schedule
from channels.secrets import Secret
from channels.services.cursors import CursorStore
from channels.services.fetches import FetchStore
from channels.services.leases import LeaseManager
from channels.services.limits import RateLimiter
from channels.services.tokens import TokenStore
from channels.testing import ChannelConformance, InboundCase, IngestGate, KitStore
from channels.testing.core import MemoryKitStore
from channels.testing.fetches import FetchBattery, FetchHarness, FetchKit, MemoryFetchQueue
from channels.testing.limits import RateLimitBattery
from channels.testing.polling import (
    MemoryCursorStore,
    MemoryLeaseManager,
    PollingBattery,
    PollingHarness,
    PollingKit,
)
from channels.testing.tokens import MemoryTokenStore, OAuthControl, TokenBattery
from channels.testing.webhooks import HostileWebhookBattery, KitQuarantine, MalformedCase
from channels.testing.windows import WindowBattery
from storage.cursors import RedisCursorStore
from storage.fetches import RedisFetchQueue
from storage.kit import StoreKit, StoreQuarantine
from storage.leases import RedisLeaseManager
from storage.limiter import RedisLimiter
from storage.store import Store
from storage.tokens import RedisTokenStore, load_token_cipher, new_key
from tests.channels.ebay.provider import (
    APP_ID,
    BUYER,
    CERT_ID,
    DEV_ID,
    SELLER,
    EbayFake,
    KitEbay,
    iso,
)
from tests.conftest import RedisServer
from tests.helpers import hub_fetch_worker

# Buyer messages an hour old: inside the 90-day window and the first poll's backfill.
BASE = time.time() - 3600
TOKEN_KEY = new_key()


def buyer_message(n: int, text: str) -> InboundCase:
    """A buyer's message in a conversation of its own (a fetch reads the whole one)."""
    conversation, mid, item = f"C-{n:06d}", f"M{n:09d}", f"1101649675{n:02d}"
    return InboundCase(
        name=f"message {n}",
        payload={"conversationId": conversation, "buyer": BUYER, "itemId": item,
                 "message": {"messageId": mid, "createdDate": iso(BASE + n),
                             "messageBody": text, "messageMedia": [], "readStatus": False,
                             "recipientUsername": SELLER, "senderUsername": BUYER,
                             "subject": f"{BUYER} sent a message about item {item}"}},
        provider_message_id=mid, thread_id=conversation, sender_handle=BUYER, text=text,
        sender_name=BUYER)


def settings(provider: EbayFake, **extra: Any) -> EbaySettings:
    extra.setdefault("site", "EBAY_GB")
    return EbaySettings(api_base_url=provider.url, seller_username=SELLER, dev_id=DEV_ID,
                        app_id=APP_ID, cert_id=Secret(CERT_ID, "test"), timeout_seconds=5,
                        **extra)


class _KitView:
    """The fake under the names the kit calls (``sent()`` returns ``SentRecord``s)."""

    def __init__(self, provider: KitEbay) -> None:
        self._provider = provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    def sent(self) -> list[Any]:
        return self._provider.sent_records()

    def publish(self, case: InboundCase) -> None:
        self._provider.publish(case)


class TestEbayConformance(ChannelConformance, FetchBattery, HostileWebhookBattery,
                          WindowBattery, TokenBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return [buyer_message(1, "Hi, where is my parcel?"),
                buyer_message(2, "¿Me lo envían hoy? 📦")]

    def valid_body(self, subpath: str = "") -> bytes:
        return KitEbay().soap_notification()

    def malformed_bodies(self) -> list[MalformedCase]:
        fake = KitEbay()
        return [
            MalformedCase("another seller", fake.soap_notification(recipient="other_seller"),
                          "another seller"),
            MalformedCase("no sender", fake.soap_notification(buyer=""), "no usable Sender"),
            MalformedCase("a path as the sender", fake.soap_notification(buyer="../../x/y"),
                          "no usable Sender"),
            MalformedCase("an item that is no id", fake.soap_notification(item="12; DROP"),
                          "not an item id"),
        ]

    async def test_a_bad_or_missing_signature_is_refused_and_nothing_kept(
            self, harness: Any, ingest_gate: IngestGate, kit_quarantine: KitQuarantine) -> None:
        """eBay signs inside the body (SOAP ``NotificationSignature``), not in a header: the
        battery's header variants become bodies without, with a wrong and with a stale
        signature, and bodies that cannot be read safely (a DOCTYPE, not XML)."""
        fake = KitEbay()
        stale = iso(time.time() - 3600)
        bodies = {
            "missing": fake.soap_notification(signature=""),
            "wrong": fake.soap_notification(signature="dw6CaxfcizXKA/XR3PvigQ=="),
            "other cert": fake.soap_notification(cert_id="not-our-cert"),
            "stale": fake.soap_notification(timestamp=stale),
            "entities": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
            "not xml": b"{broken",
        }
        for name, body in bodies.items():
            answer = await harness.request("POST", "", body, fake.signed_headers(body))
            assert answer.status in (401, 403), f"{name}: got {answer.status}"
        assert ingest_gate.results == [], "an unauthenticated body was stored"
        assert await kit_quarantine.entries() == [], "an unauthenticated body was kept"

    @pytest.fixture
    async def provider(self) -> AsyncIterator[KitEbay]:
        async with KitEbay(rotate=True) as running:
            yield running

    @pytest.fixture
    def kit_oauth(self, provider: KitEbay) -> OAuthControl:
        return provider  # eBay's own token endpoint (Basic AppID:CertID) is the kit's

    @pytest.fixture
    async def harness(self, fetch_kit: FetchKit, provider: KitEbay,
                      kit_tokens: TokenStore) -> AsyncIterator[FetchHarness]:
        await kit_tokens.put("shop", provider.grant())

        def factory(context: AdapterContext) -> EbayChannel:
            # The kit's context has no token store, cursors or leases: add them.
            leases = MemoryLeaseManager()
            context.tokens = kit_tokens
            context.leases = leases
            context.cursors = MemoryCursorStore(leases)
            return EbayChannel("shop", settings(provider), context)

        async with fetch_kit.run(_KitView(provider), factory) as harness:
            yield harness


class TestEbayConformanceOnRedis(TestEbayConformance, RateLimitBattery):
    paced_replies = 3

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

    @pytest.fixture
    def kit_tokens(self, redis: Redis) -> TokenStore:
        return RedisTokenStore(redis, load_token_cipher(Path("unused"), TOKEN_KEY))

    @pytest.fixture
    async def second_tokens(self, redis_server: RedisServer) -> AsyncIterator[TokenStore]:
        other = Redis(unix_socket_path=redis_server.socket)
        try:
            yield RedisTokenStore(other, load_token_cipher(Path("unused"), TOKEN_KEY))
        finally:
            await other.aclose()

    @pytest.fixture
    def kit_limiter(self, redis: Redis) -> RateLimiter:
        return RedisLimiter(redis)

    @pytest.fixture
    async def second_limiter(self, redis_server: RedisServer) -> AsyncIterator[RateLimiter]:
        other = Redis(unix_socket_path=redis_server.socket)
        try:
            yield RedisLimiter(other)
        finally:
            await other.aclose()


class TestEbayPolling(PollingBattery):
    """The ``GET /conversation`` reconciliation (what stores a notification eBay dropped)
    under the polling battery: the cursor advances only after ingest, restarts lose and
    duplicate nothing, one poller per seller."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    def inbound_cases(self) -> list[InboundCase]:
        return [buyer_message(1, "Hello"), buyer_message(2, "Is it shipped?")]

    def polling_case(self, n: int) -> InboundCase:
        return buyer_message(n + 10, f"message {n}")

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit) -> AsyncIterator[PollingHarness]:
        async with KitEbay() as provider:
            provider.listing_enabled = True
            tokens = MemoryTokenStore()  # one store for every simulated process
            await tokens.put("shop", provider.grant())

            def factory(context: AdapterContext) -> EbayChannel:
                context.tokens = tokens
                if context.fetches is None:  # the polling kit's context has no fetch queue
                    context.fetches = MemoryFetchQueue()
                adapter = EbayChannel("shop", settings(provider, lease_seconds=1.0), context)
                adapter.schedule = Schedule(interval_seconds=0.02, timeout_seconds=5.0)
                return adapter

            async with polling_kit.run(_KitView(provider), factory) as harness:
                yield harness


class TestEbayPollingOnRedis(TestEbayPolling):
    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def lease_manager(self, redis: Redis) -> LeaseManager:
        return RedisLeaseManager(redis, owner="kit")

    @pytest.fixture
    def cursor_store(self, redis: Redis) -> CursorStore:
        return RedisCursorStore(redis)
