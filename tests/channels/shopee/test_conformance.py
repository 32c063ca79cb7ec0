"""Shopee runs the conformance kit's core, fetch, hostile-webhook, attachment, token and
rate-limit batteries (push → fetch) and the polling battery against the local fake (pushes
signed over ``callback_url|body``), on the kit's memory stores and on the hub's store, fetch
worker, attachment store, token store, limiter, cursors and leases on Redis.

The token battery runs against the fake itself (``KitShopee`` is its ``OAuthControl``): Shopee's
refresh is its own signed call, not an OAuth 2.0 token endpoint. The rate-limit battery runs
on faster limits than the defaults (the ``sends_per_*`` settings): the defaults' 10 per buyer
per minute would make each test wait half a minute; the pacing is the same code."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.base import AdapterContext
from channels.polling import Schedule
from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.services.cursors import CursorStore
from channels.services.fetches import FetchStore
from channels.services.leases import LeaseManager
from channels.services.limits import RateLimiter
from channels.services.tokens import OAuthTokens, TokenStore
from channels.shopee.adapter import ShopeeChannel, ShopeeSettings
from channels.testing import ChannelConformance, InboundCase, IngestGate, KitStore
from channels.testing.attachments import AttachmentBattery
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
from storage.attachments import AttachmentService, FileBlobStore
from storage.cursors import RedisCursorStore
from storage.fetches import RedisFetchQueue
from storage.kit import StoreKit, StoreQuarantine
from storage.leases import RedisLeaseManager
from storage.limiter import RedisLimiter
from storage.store import Store
from storage.tokens import RedisTokenStore, load_token_cipher, new_key
from tests.channels.shopee.provider import KitShopee
from tests.conftest import RedisServer
from tests.helpers import hub_fetch_worker

PARTNER_ID, SHOP_ID, BUYER = 2001234, 55501, 777
KEY = "shopee-partner-key-0123456789abcdef"
TOKEN_KEY = new_key()
_image_numbers = itertools.count(500)


def buyer_message(n: int, text: str) -> InboundCase:
    """A buyer's text in a conversation of its own (a fetch reads the whole conversation)."""
    mid, conversation = f"{n:06d}", f"90{n:04d}"
    return InboundCase(
        name=f"message {n}",
        payload={"message_id": mid, "message_type": "text", "from_id": BUYER,
                 "to_id": SHOP_ID, "conversation_id": conversation,
                 "created_timestamp": 1_767_261_600 + n, "content": {"text": text}},
        provider_message_id=mid, thread_id=conversation, sender_handle=str(BUYER), text=text)


def buyer_image(name: str, content_type: str, data: bytes) -> InboundCase:
    """A buyer's image message; the fake serves ``data`` at the ``content.url`` it names."""
    n = next(_image_numbers)
    mid, conversation = f"{n:06d}", f"90{n:04d}"
    return InboundCase(
        name=f"image {name}",
        payload={"message_id": mid, "message_type": "image", "from_id": BUYER,
                 "to_id": SHOP_ID, "conversation_id": conversation,
                 "created_timestamp": 1_767_261_600 + n,
                 "kit_file": (name, data, content_type)},
        provider_message_id=mid, thread_id=conversation, sender_handle=str(BUYER), text="")


def fake() -> KitShopee:
    return KitShopee(partner_id=PARTNER_ID, partner_key=KEY, shop_id=SHOP_ID)


async def load_tokens(tokens: MemoryTokenStore) -> None:
    await tokens.put("shop", OAuthTokens(access_token="at-0", refresh_token="rt-0",
                                         expires_at=time.time() + 4 * 3600))


def settings(provider: KitShopee, **extra: Any) -> ShopeeSettings:
    return ShopeeSettings(api_base_url=provider.url, partner_id=PARTNER_ID,
                          partner_key=Secret(KEY, "test"), shop_id=SHOP_ID, region="BR",
                          timeout_seconds=5, **extra)


class _KitView:
    """The fake under the names the kit calls (``sent()`` returns ``SentRecord``s)."""

    def __init__(self, provider: KitShopee) -> None:
        self._provider = provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    def sent(self) -> list[Any]:
        return self._provider.sent_records()

    def publish(self, case: InboundCase) -> None:
        self._provider.publish(case)


class ShopeeFetchHarness(FetchHarness):
    """The kit's fetch harness plus what the attachment battery reads. Shopee acknowledges a
    push before anything is fetched, so a refused image is never a refused delivery: the
    message is kept with the attachment marked ``refused``."""

    provider: Any

    async def deliver_answer(self, case: InboundCase) -> tuple[bool, str]:
        return await self.deliver(case), ""

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        provider: KitShopee = self.provider._provider
        return provider.sent_attachments()


# RateLimitBattery before TokenBattery: both define a private ``_replies`` helper, and only
# the rate-limit one takes the other's call (``_replies(harness, gate, n)``) as well as its own.
class TestShopeeConformance(ChannelConformance, FetchBattery, HostileWebhookBattery,
                            AttachmentBattery, RateLimitBattery, TokenBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return [buyer_message(1, "Olá, cadê meu pedido?"), buyer_message(2, "Chega hoje? 📦")]

    def attachment_case(self, name: str, content_type: str, data: bytes) -> InboundCase:
        return buyer_image(name, content_type, data)

    def valid_body(self, subpath: str = "") -> bytes:
        return fake().notification(buyer_message(1, "Olá"), 1)

    def malformed_bodies(self) -> list[MalformedCase]:
        provider = fake()
        return [
            MalformedCase("not JSON", b"{broken", "not a Shopee push"),
            MalformedCase("another shop", provider.push_body("9001", "1", shop_id=1),
                          "another shop"),
            MalformedCase("no conversation", b'{"shop_id": 55501, "code": 10, "data": {}}',
                          "without a conversation id"),
            MalformedCase("a path, not an id", provider.push_body("../../shop/1", "1"),
                          "without a conversation id"),
            MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000),
        ]

    @pytest.fixture
    async def kit_oauth(self) -> AsyncIterator[OAuthControl]:
        """The fake is its own token side (module docstring)."""
        async with fake() as provider:
            yield provider

    @pytest.fixture
    async def harness(self, fetch_kit: FetchKit, kit_oauth: OAuthControl,
                      kit_tokens: TokenStore,
                      attachment_store: AttachmentStore) -> AsyncIterator[FetchHarness]:
        provider = kit_oauth
        assert isinstance(provider, KitShopee)
        provider.listing_enabled = False
        await kit_tokens.put("shop", provider.grant())  # the operator authorized the shop

        def factory(context: AdapterContext) -> ShopeeChannel:
            # The kit's context has no token store, cursors, leases or files: add them.
            leases = MemoryLeaseManager()
            context.tokens = kit_tokens
            context.leases = leases
            context.cursors = MemoryCursorStore(leases)
            context.attachments = attachment_store
            adapter = ShopeeChannel("shop", settings(provider, sends_per_minute=1200,
                                                     sends_per_buyer_per_minute=240), context)
            provider.refresher_of = adapter
            return adapter

        async with fetch_kit.run(_KitView(provider), factory) as h:
            yield ShopeeFetchHarness(h.adapter, h.provider, h.queue, h.gated, h.gate,
                                     h.stored_ids, h.http, h.server)


class TestShopeeConformanceOnRedis(TestShopeeConformance):
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
    def attachment_store(self, store: Store, tmp_path: Path) -> AttachmentStore:
        service = AttachmentService(store.redis, FileBlobStore(tmp_path / "attachments"),
                                    store.partition_keys())
        store.attachments = service  # the hub's files, referenced by the atomic ingest
        return service

    @pytest.fixture
    def kit_tokens(self, redis: Redis) -> TokenStore:
        return RedisTokenStore(redis, load_token_cipher(Path("unused"), TOKEN_KEY))

    @pytest.fixture
    async def second_tokens(self, redis_server: RedisServer) -> AsyncIterator[TokenStore]:
        """Another hub process: its own Redis client of the same store."""
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


class TestShopeePolling(PollingBattery):
    """The conversation-list poll (what stores a push Shopee dropped) under the polling
    battery: the cursor advances only after ingest, restarts lose and duplicate nothing, one
    poller per shop."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    def inbound_cases(self) -> list[InboundCase]:
        return [buyer_message(1, "Olá"), buyer_message(2, "Chega hoje?")]

    def polling_case(self, n: int) -> InboundCase:
        return buyer_message(n + 10, f"mensagem {n}")

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit) -> AsyncIterator[PollingHarness]:
        async with fake() as provider:
            tokens = MemoryTokenStore()
            await load_tokens(tokens)

            def factory(context: AdapterContext) -> ShopeeChannel:
                context.tokens = tokens
                if context.fetches is None:  # the polling kit's context has no fetch queue
                    context.fetches = MemoryFetchQueue()
                adapter = ShopeeChannel("shop", settings(provider, lease_seconds=1.0), context)
                adapter.schedule = Schedule(interval_seconds=0.02, timeout_seconds=5.0)
                return adapter

            async with polling_kit.run(_KitView(provider), factory) as harness:
                yield harness


class TestShopeePollingOnRedis(TestShopeePolling):
    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def lease_manager(self, redis: Redis) -> LeaseManager:
        return RedisLeaseManager(redis, owner="kit")

    @pytest.fixture
    def cursor_store(self, redis: Redis) -> CursorStore:
        return RedisCursorStore(redis)
