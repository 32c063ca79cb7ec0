"""Mercado Libre runs the conformance kit's core, fetch and hostile-webhook batteries against
the local fake, on the kit's memory stores and on the hub's store and fetch worker on Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from channels.base import AdapterContext
from channels.mercadolibre.adapter import MercadoLibreChannel
from channels.services.attachments import AttachmentStore
from channels.services.fetches import FetchStore
from channels.services.limits import RateLimiter
from channels.services.tokens import TokenStore
from channels.testing import ChannelConformance, InboundCase, IngestGate, KitStore
from channels.testing.attachments import AttachmentBattery
from channels.testing.fetches import FetchBattery, FetchHarness, FetchKit
from channels.testing.limits import RateLimitBattery
from channels.testing.polling import MemoryCursorStore, MemoryLeaseManager
from channels.testing.tokens import KitOAuthServer, OAuthControl, TokenBattery
from channels.testing.webhooks import HostileWebhookBattery, KitQuarantine, MalformedCase
from storage.attachments import AttachmentService, FileBlobStore
from storage.fetches import RedisFetchQueue
from storage.kit import StoreKit, StoreQuarantine
from storage.limiter import RedisLimiter
from storage.store import Store
from storage.tokens import RedisTokenStore, load_token_cipher, new_key
from tests.channels.mercadolibre.harness import settings
from tests.channels.mercadolibre.provider import (
    APP,
    BUYER,
    CLIENT_SECRET,
    SELLER,
    KitMercadoLibre,
)
from tests.conftest import RedisServer
from tests.helpers import hub_fetch_worker

TOKEN_KEY = new_key()


def buyer_message(n: int, text: str, site: str = "MPE") -> InboundCase:
    """A buyer message on a site without the agent layer: the reply goes to the buyer."""
    mid = f"{n:032x}"
    pack = f"20000000890779{n:02d}"  # a pack each: a fetch stores its whole pack
    return InboundCase(
        name=f"message {n}",
        payload={"id": mid, "site_id": site, "from": {"user_id": BUYER},
                 "to": {"user_id": SELLER}, "text": text, "status": "available",
                 "message_date": {"created": f"2026-01-01T10:00:{n:02d}.000Z"},
                 "message_moderation": {"status": "clean"}, "message_attachments": [],
                 "message_resources": [{"id": pack, "name": "packs"}]},
        provider_message_id=mid, thread_id=pack, sender_handle=BUYER, text=text,
        sender_name="COMPRADOR_ANA")


class MercadoLibreOAuth(KitOAuthServer):
    """The kit's rotating OAuth server under Mercado Libre's numeric application id."""

    client_id = APP
    client_secret = CLIENT_SECRET


class TestMercadoLibreConformance(ChannelConformance, FetchBattery, HostileWebhookBattery,
                                  TokenBattery, RateLimitBattery, AttachmentBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return [buyer_message(1, "Hola, ¿dónde está mi pedido?"),
                buyer_message(2, "¿Me lo envían hoy?")]

    def attachment_case(self, name: str, content_type: str, data: bytes) -> InboundCase:
        """A buyer message with one file, in its own pack (documented ``message_attachments``;
        the entry's fields are inferred)."""
        self._files = getattr(self, "_files", 0) + 1
        case = buyer_message(40 + self._files, "Segue a foto")
        file_id = f"{BUYER}_{self._files:08x}.bin"
        payload = {**case.payload, "message_attachments": [
            {"filename": file_id, "original_filename": name, "type": content_type,
             "size": len(data)}], "kit_files": {file_id: data}}
        return msgspec.structs.replace(case, payload=payload)

    def valid_body(self, subpath: str = "") -> bytes:
        return KitMercadoLibre().notification(f"{1:032x}", 1)

    def malformed_bodies(self) -> list[MalformedCase]:
        fake = KitMercadoLibre()
        return [
            MalformedCase("not JSON", b"{broken", "not a Mercado Libre notification"),
            MalformedCase("no resource", b'{"id": "n-1", "topic": "messages"}'),
            MalformedCase("a path, not an id", fake.notification("../../users/1"),
                          "not a message id"),
            MalformedCase("another seller", fake.notification("a1", user_id=1),
                          "another seller"),
            MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000),
        ]

    async def test_send_reaches_provider(self, harness: Any, ingest_gate: IngestGate) -> None:
        """The core battery's text ends in an emoji, which Mercado Libre does not take
        (ISO-8859-1 only, no emoji list documented): the same check with Latin-1 text."""
        reply = await self._reply(harness, ingest_gate, "Gracias, su pedido sale hoy.")
        assert await harness.adapter.send(reply)
        [sent] = harness.sent()
        assert (sent.text, sent.recipient) == (reply.text, reply.recipient_handle)

    async def test_a_bad_or_missing_signature_is_refused_and_nothing_kept(
            self, harness: Any, ingest_gate: IngestGate, kit_quarantine: KitQuarantine) -> None:
        pytest.skip("Mercado Libre signs no notification (CHANNELS.md §6.1): authenticity is "
                    "the fetched resource's seller check (test_fetch_only_fetched_data_is_"
                    "stored, test_adapter.py::test_a_message_of_another_seller_is_refused)")

    @pytest.fixture
    async def kit_oauth(self) -> AsyncIterator[OAuthControl]:
        async with MercadoLibreOAuth() as server:
            yield server

    @pytest.fixture
    async def harness(self, fetch_kit: FetchKit, kit_tokens: TokenStore,
                      kit_oauth: MercadoLibreOAuth,
                      attachment_store: AttachmentStore) -> AsyncIterator[FetchHarness]:
        async with KitMercadoLibre() as provider:
            # The token battery's OAuth server issues and rotates the seller's tokens.
            provider.authorize = kit_oauth.authorized
            await kit_tokens.put("shop", kit_oauth.grant())

            def factory(context: AdapterContext) -> MercadoLibreChannel:
                # The kit's context has no token store, cursors or leases: add them.
                leases = MemoryLeaseManager()
                context.tokens = kit_tokens
                context.attachments = attachment_store
                context.leases = leases
                context.cursors = MemoryCursorStore(leases)
                return MercadoLibreChannel("shop", settings(
                    provider, token_url=kit_oauth.token_url), context)

            async with fetch_kit.run(_KitView(provider), factory) as harness:
                yield harness


class _KitView:
    """The fake under the names the kit calls (``sent()`` returns ``SentRecord``s)."""

    def __init__(self, fake: KitMercadoLibre) -> None:
        self._fake = fake

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fake, name)

    def sent(self) -> list[Any]:
        return self._fake.sent_records()

    def publish(self, case: InboundCase) -> None:
        self._fake.publish(case)


class TestMercadoLibreConformanceOnRedis(TestMercadoLibreConformance):
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
    def attachment_store(self, store: Store, tmp_path: Path) -> AttachmentStore:
        service = AttachmentService(store.redis, FileBlobStore(tmp_path / "attachments"),
                                    store.partition_keys())
        store.attachments = service  # the hub's files, referenced by the atomic ingest
        return service

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
