"""The Telegram channel runs the conformance kit in both modes against the local Bot API
(``bot_api.py``): webhook mode with the core, hostile-webhook, rate-limit and attachment
batteries,
polling mode with the core and polling batteries; each on the kit's in-memory services and on
the hub's own store, quarantine, cursors and leases on real Redis.

The kit runs with ``long_messages = "refuse"``: its length test expects one message for a reply
of exactly the limit. Splitting is tested in ``test_outbound.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.services.cursors import CursorStore
from channels.services.leases import LeaseManager
from channels.services.limits import RateLimiter
from channels.telegram.adapter import SECRET_HEADER, TelegramChannel
from channels.telegram.settings import TelegramSettings
from channels.testing import ChannelConformance, InboundCase, IngestGate, KitStore
from channels.testing.attachments import AttachmentBattery
from channels.testing.limits import RateLimitBattery
from channels.testing.polling import PollingBattery, PollingHarness, PollingKit
from channels.testing.webhooks import (
    HostileWebhookBattery,
    KitQuarantine,
    MalformedCase,
    ServedWebhook,
    WebhookHarness,
    WebhookKit,
)
from storage.attachments import AttachmentService, FileBlobStore
from storage.cursors import RedisCursorStore
from storage.kit import StoreKit, StoreQuarantine
from storage.leases import RedisLeaseManager
from storage.limiter import RedisLimiter
from storage.store import Store
from tests.channels.telegram import updates
from tests.channels.telegram.bot_api import FakeBotApi

TOKEN = "7000000001:AAH-test-token-0123456789abcdefghijkl"
SECRET = "webhook-secret_0123456789-abcdef"


def settings(api: FakeBotApi, **overrides: Any) -> TelegramSettings:
    fields: dict[str, Any] = {
        "bot_token": Secret(TOKEN, "test"), "webhook_secret": Secret(SECRET, "test"),
        "api_base_url": api.base_url, "timeout_seconds": 2.0, "long_messages": "refuse",
        "long_poll_seconds": 1, "lease_seconds": 1.0, **overrides}
    return TelegramSettings(**fields)


def signed(body: bytes, subpath: str = "") -> dict[str, str]:
    """What Telegram sends with every update: the secret token, JSON."""
    return {SECRET_HEADER: SECRET, "Content-Type": "application/json"}


def cases() -> list[InboundCase]:
    joao = updates.buyer(555000111, "João", None, "pt-BR")
    text = "Olá, cadê meu pedido?"
    return [
        updates.case(1),
        InboundCase(name="no last name, pt-BR", payload=updates.text_update(
            841266100, 12, text, user=joao), provider_message_id="555000111:12",
            thread_id="555000111", sender_handle="555000111", text=text, sender_name="João"),
        InboundCase(name="a caption is the text", payload=updates.update(
            841266101, message=updates.message(13, caption="¿Este?", user=joao)),
            provider_message_id="555000111:13", thread_id="555000111",
            sender_handle="555000111", text="¿Este?"),
    ]


class TelegramServed(ServedWebhook):
    """The kit's webhook harness plus what the attachment battery reads."""

    provider: FakeBotApi

    async def deliver_answer(self, case: InboundCase) -> tuple[bool, str]:
        body = msgspec.json.encode(case.payload)
        answer = await self.request("POST", "", body, signed(body))
        return 200 <= answer.status < 300, answer.body.decode(errors="replace")

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        return [[document] for document in self.provider.documents]


class TestTelegramWebhook(ChannelConformance, HostileWebhookBattery, RateLimitBattery,
                          AttachmentBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return cases()

    def files(self) -> dict[str, tuple[str, bytes]]:
        """The Bot API's files for this test (the fake serves this very dict)."""
        found: dict[str, tuple[str, bytes]] = self.__dict__.setdefault("_files", {})
        return found

    def attachment_case(self, name: str, content_type: str, data: bytes) -> InboundCase:
        files = self.files()
        file_id = f"doc-{len(files) + 1}"
        files[file_id] = (f"documents/file_{len(files) + 1}.bin", data)
        n = 500 + len(files)
        user = updates.buyer()
        return InboundCase(
            name=f"document {name}",
            payload=updates.document_update(841266500 + n, n, file_id, name, content_type,
                                            len(data)),
            provider_message_id=f"{user.id}:{n}", thread_id=str(user.id),
            sender_handle=str(user.id), text="")

    def malformed_bodies(self) -> list[MalformedCase]:
        return [
            MalformedCase("not JSON", b'{"update_id": 1, "message": ', "not JSON"),
            MalformedCase("not an object", b"[1, 2, 3]", "JSON object"),
            MalformedCase("no update_id", b'{"message": {"text": "hola"}}', "update_id"),
            MalformedCase("update_id is text", b'{"update_id": "7"}', "update_id"),
            MalformedCase("message without chat", msgspec.json.encode(
                {"update_id": 9, "message": {"message_id": 1, "date": 1, "text": "x"}}),
                "not a Bot API Update"),
            MalformedCase("nested 5,000 deep", b'{"update_id": 1, "x": ' + b"[" * 5000
                          + b"]" * 5000 + b"}"),
        ]

    @pytest.fixture
    async def harness(self, webhook_kit: WebhookKit, kit_limiter: RateLimiter,
                      attachment_store: AttachmentStore) -> AsyncIterator[ServedWebhook]:
        config = {"max_attachment_bytes": 100_000}
        async with FakeBotApi(TOKEN) as api, webhook_kit.run(
            api, lambda context: TelegramChannel("shop", settings(api, **config), context),
            sign=signed, limiter=kit_limiter, attachments=attachment_store,
        ) as served:
            api.files = self.files()
            yield TelegramServed(served.adapter, served.server, served.session, api, signed,
                                 msgspec.json.encode)

    async def test_a_bad_or_missing_signature_is_refused_and_nothing_kept(
        self, harness: WebhookHarness, ingest_gate: IngestGate, kit_quarantine: KitQuarantine
    ) -> None:
        """Telegram's secret token is not bound to the body (no HMAC), so the kit's forgery,
        headers signed for other bytes, is the genuine header here: the wrong token is tried
        instead (and a near miss, and the right token in another header)."""
        body = self.valid_body()
        json_type = {"Content-Type": "application/json"}
        for name, headers in (
            ("missing", json_type),
            ("wrong", {**json_type, SECRET_HEADER: "not-the-secret"}),
            ("one character off", {**json_type, SECRET_HEADER: SECRET[:-1] + "g"}),
            ("a prefix", {**json_type, SECRET_HEADER: SECRET[:8]}),
            ("empty", {**json_type, SECRET_HEADER: ""}),
            ("other header", {**json_type, "X-Telegram-Secret": SECRET}),
        ):
            answer = await harness.request("POST", "", body, headers)
            assert answer.status == 403, f"{name}: got {answer.status}"
        assert ingest_gate.results == [], "an unauthenticated body was stored"
        assert await kit_quarantine.entries() == [], "an unauthenticated body was kept"


class TestTelegramWebhookOnRedis(TestTelegramWebhook):
    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def kit_quarantine(self, store: Store) -> KitQuarantine:
        return StoreQuarantine(store)

    @pytest.fixture
    def kit_limiter(self, redis: Redis) -> RateLimiter:
        return RedisLimiter(redis)

    @pytest.fixture
    def attachment_store(self, store: Store, tmp_path: Path) -> AttachmentStore:
        service = AttachmentService(store.redis, FileBlobStore(tmp_path / "attachments"),
                                    store.partition_keys())
        store.attachments = service  # the hub's files, referenced by the atomic ingest
        return service


class TestTelegramPolling(ChannelConformance, PollingBattery):
    def inbound_cases(self) -> list[InboundCase]:
        return cases()

    def polling_case(self, n: int) -> InboundCase:
        return updates.case(n)

    @pytest.fixture
    async def harness(self, polling_kit: PollingKit) -> AsyncIterator[PollingHarness]:
        async with FakeBotApi(TOKEN) as api:
            config = settings(api, mode="polling", webhook_secret=None)
            async with polling_kit.run(
                api, lambda context: TelegramChannel("shop", config, context)
            ) as harness:
                yield harness
            assert api.max_in_flight <= 1, "two getUpdates ran at once for one bot"


class TestTelegramPollingOnRedis(TestTelegramPolling):
    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def lease_manager(self, redis: Redis) -> LeaseManager:
        return RedisLeaseManager(redis, owner="kit")

    @pytest.fixture
    def cursor_store(self, redis: Redis) -> CursorStore:
        return RedisCursorStore(redis)
