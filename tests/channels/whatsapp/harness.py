"""The WhatsApp channel's harness: the adapter served as the hub serves it, pointed at the
local Graph API (``graph.py``) through ``api_base_url``, on the hub's real Redis services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from channels.base import AdapterContext
from channels.models import TemplateRef
from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.testing import FailureKind, InboundCase, IngestGate, KitStore, SentRecord
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.receipts import KitDeliveries
from channels.testing.webhooks import (
    KitQuarantine,
    ServedWebhook,
    WebhookAnswer,
    WebhookKit,
)
from channels.whatsapp import WhatsAppChannel, WhatsAppSettings
from channels.windows import TemplateSpec
from storage.attachments import AttachmentService, FileBlobStore
from storage.kit import StoreDeliveries, StoreKit, StoreQuarantine
from storage.store import Store
from tests.channels.whatsapp.graph import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    TOKEN,
    VERIFY_TOKEN,
    FakeGraph,
    meta_json,
    meta_signature,
)

INSTANCE = "wa-shop"
MAX_BODY = 64 * 1024
TEMPLATES = (
    TemplateSpec("order_update", "es", ("nombre", "pedido"),
                 "Hola {{1}}, su pedido {{2}} salió hoy."),
    TemplateSpec("order_update", "pt_BR", ("nome", "pedido")),
    TemplateSpec("follow_up", "en_US"),
)


def settings(base_url: str, **overrides: Any) -> WhatsAppSettings:
    fields: dict[str, Any] = {
        "access_token": Secret(TOKEN, "test"), "app_secret": Secret(APP_SECRET, "test"),
        "verify_token": Secret(VERIFY_TOKEN, "test"), "phone_number_id": PHONE_NUMBER_ID,
        "api_base_url": base_url, "templates": TEMPLATES, "timeout_seconds": 5.0,
        "max_attachment_bytes": 256 * 1024}
    fields.update(overrides)
    return WhatsAppSettings(**fields)


def sign_headers(body: bytes, subpath: str = "") -> dict[str, str]:
    return {"X-Hub-Signature-256": meta_signature(body), "Content-Type": "application/json"}


class WhatsAppHarness:
    """``ServedWebhook`` (core + hostile batteries) plus what the window, receipts and media
    tests read: the templates sent, the fake Graph API, the fetch queue."""

    def __init__(self, served: ServedWebhook, graph: FakeGraph, queue: MemoryFetchQueue,
                 attachments: AttachmentStore) -> None:
        self.served = served
        self.adapter: WhatsAppChannel = served.adapter  # type: ignore[assignment]
        self.graph = graph
        self.queue = queue
        self.attachments = attachments

    async def deliver(self, case: InboundCase) -> bool:
        return await self.served.deliver(case)

    async def post(self, payload: Any) -> WebhookAnswer:
        body = payload if isinstance(payload, bytes) else meta_json(payload)
        return await self.served.request("POST", "", body, sign_headers(body))

    async def request(self, method: str, subpath: str, body: bytes,
                      headers: Mapping[str, str]) -> WebhookAnswer:
        return await self.served.request(method, subpath, body, headers)

    def signed_headers(self, body: bytes, subpath: str = "") -> dict[str, str]:
        return sign_headers(body, subpath)

    def sent(self) -> list[SentRecord]:
        return self.graph.sent()

    def sent_templates(self) -> list[TemplateRef | None]:
        return self.graph.sent_templates()

    def fail_next_send(self, kind: FailureKind) -> None:
        self.graph.fail_next_send(kind)


class WhatsAppKit:
    """Fixtures shared by the WhatsApp test classes: real Redis for the store, quarantine,
    delivery index and attachments; the kit's in-memory fetch queue."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    @pytest.fixture
    def kit_quarantine(self, store: Store) -> KitQuarantine:
        return StoreQuarantine(store)

    @pytest.fixture
    def kit_deliveries(self, store: Store) -> KitDeliveries:
        return StoreDeliveries(store)

    @pytest.fixture
    def attachment_store(self, store: Store, tmp_path: Path) -> AttachmentStore:
        service = AttachmentService(store.redis, FileBlobStore(tmp_path / "attachments"),
                                    store.partition_keys())
        store.attachments = service
        return service

    @pytest.fixture
    def fetch_queue(self) -> MemoryFetchQueue:
        return MemoryFetchQueue()

    def settings_overrides(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    async def harness(self, ingest_gate: IngestGate, kit_quarantine: KitQuarantine,
                      kit_deliveries: KitDeliveries, attachment_store: AttachmentStore,
                      fetch_queue: MemoryFetchQueue) -> AsyncIterator[WhatsAppHarness]:
        graph = FakeGraph()
        await graph.start()
        kit = WebhookKit(ingest_gate, kit_quarantine)

        def factory(context: AdapterContext) -> WhatsAppChannel:
            return WhatsAppChannel(INSTANCE, settings(graph.base_url,
                                                      **self.settings_overrides()), context)

        try:
            async with kit.run(graph, factory, sign=sign_headers, encode=meta_json,
                               max_body_bytes=MAX_BODY, deliveries=kit_deliveries,
                               attachments=attachment_store, fetches=fetch_queue) as served:
                yield WhatsAppHarness(served, graph, fetch_queue, attachment_store)
        finally:
            await graph.close()
