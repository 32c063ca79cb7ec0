"""The API channel runs the conformance kit: on real Redis without and with a reply window, and
on the kit's in-memory store, as a plugin author without Redis would."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.api import ApiChannel, ApiChannelSettings
from channels.base import AdapterContext, ReplyWindow
from channels.models import TemplateRef
from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.testing import (
    ChannelConformance,
    FailureKind,
    InboundCase,
    IngestGate,
    KitStore,
    MemoryKitStore,
    SentRecord,
)
from channels.testing.attachments import AttachmentBattery, MemoryAttachmentStore
from channels.testing.windows import WindowBattery
from channels.windows import TemplateSpec
from storage.attachments import AttachmentService, FileBlobStore
from storage.kit import StoreKit
from storage.store import Store
from tests.conftest import TEST_SECRET
from tests.helpers import sign

FAILURES: dict[str, tuple[int, dict[str, str]]] = {
    "retryable": (503, {}),
    "rate_limited": (429, {"Retry-After": "7"}),
    "permanent": (400, {}),
    "auth": (401, {}),
}


class ApiHarness:
    """Webhook server with the adapter mounted + a fake operator endpoint for replies."""

    def __init__(self, adapter: ApiChannel, webhook: TestServer, operator: TestServer,
                 session: aiohttp.ClientSession) -> None:
        self.adapter = adapter
        self.webhook = webhook
        self.operator = operator
        self.session = session
        self.records: list[SentRecord] = []
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.templates: list[TemplateRef | None] = []
        self.files: list[list[tuple[str, str, bytes]]] = []

    async def deliver(self, case: InboundCase) -> bool:
        body = json.dumps(case.payload).encode()
        async with self.session.post(
            self.webhook.make_url("/webhooks/api/shop"), data=body,
            headers={"X-Inboxhub-Signature": sign(body)},
        ) as resp:
            return resp.status == 200

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])

    def sent_templates(self) -> list[TemplateRef | None]:
        return list(self.templates)

    async def deliver_answer(self, case: InboundCase) -> tuple[bool, str]:
        body = json.dumps(case.payload).encode()
        async with self.session.post(
            self.webhook.make_url("/webhooks/api/shop"), data=body,
            headers={"X-Inboxhub-Signature": sign(body)},
        ) as resp:
            return resp.status == 200, await resp.text()

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        return list(self.files)


class TestApiChannelConformance(ChannelConformance, WindowBattery, AttachmentBattery):
    window: float | None = None
    templates: tuple[TemplateSpec, ...] = ()
    extended: tuple[ReplyWindow, ...] = ()

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)  # the hub's own atomic ingest on real Redis

    @pytest.fixture
    def attachment_store(self, store: Store, tmp_path: Path) -> AttachmentStore:
        service = AttachmentService(store.redis, FileBlobStore(tmp_path / "attachments"),
                                    store.partition_keys())
        store.attachments = service  # the hub's files, referenced by the atomic ingest
        return service

    def attachment_case(self, name: str, content_type: str, data: bytes) -> InboundCase:
        return InboundCase(
            name=f"file {name}",
            payload={"id": f"file-{len(data)}-{name}", "sender": "buyer-77",
                     "text": "Mire la foto", "attachments": [
                         {"name": name, "content_type": content_type,
                          "data": base64.b64encode(data).decode()}]},
            provider_message_id=f"file-{len(data)}-{name}", thread_id="buyer-77",
            sender_handle="buyer-77", text="Mire la foto")

    def inbound_cases(self) -> list[InboundCase]:
        return [
            InboundCase(
                name="spanish buyer",
                payload={"id": "ext-1", "sender": "buyer-77", "name": "Ana Pérez",
                         "text": "Hola, ¿dónde está mi pedido?", "language": "es-MX"},
                provider_message_id="ext-1", thread_id="buyer-77", sender_handle="buyer-77",
                text="Hola, ¿dónde está mi pedido?", sender_name="Ana Pérez",
            ),
            InboundCase(
                name="explicit thread",
                payload={"id": "ext-2", "sender": "joao", "thread": "order-123",
                         "text": "Olá, cadê meu pedido?", "sent_at": "2026-11-20T10:00:00-03:00"},
                provider_message_id="ext-2", thread_id="order-123", sender_handle="joao",
                text="Olá, cadê meu pedido?",
            ),
        ]

    @pytest.fixture
    async def harness(self, ingest_gate: IngestGate,
                      attachment_store: AttachmentStore) -> AsyncIterator[ApiHarness]:
        holder: dict[str, Any] = {}

        async def operator(request: web.Request) -> web.Response:
            h: ApiHarness = holder["h"]
            body = await request.read()
            assert request.headers["X-Inboxhub-Signature"] == sign(body)
            if h.failures:
                status, headers = h.failures.pop(0)
                return web.json_response({"error": "injected"}, status=status, headers=headers)
            data = json.loads(body)
            h.records.append(SentRecord(recipient=data["recipient"], text=data["text"],
                                        thread_id=data["thread"]))
            h.files.append([(f["name"], f["content_type"], base64.b64decode(f["data"]))
                            for f in data.get("attachments", [])])
            template = data.get("template")
            h.templates.append(None if template is None else TemplateRef(
                template["name"], template["language"], tuple(template["parameters"])))
            return web.json_response({"id": f"op-{len(h.records)}"})

        operator_app = web.Application()
        operator_app.router.add_post("/replies", operator)
        operator_server = TestServer(operator_app)
        await operator_server.start_server()
        session = aiohttp.ClientSession()
        settings = ApiChannelSettings(
            secret=Secret(TEST_SECRET, "test"),
            outbound_url=str(operator_server.make_url("/replies")),
            max_text_length=500, reply_window_seconds=self.window, timeout_seconds=2,
            templates=self.templates, extended_windows=self.extended,
            max_attachment_bytes=4096, max_attachments=3,
        )

        async def quarantine(instance: str, raw: bytes, error: str) -> str:
            return "q-1"

        def spawn(coro: Any, name: str) -> Any:
            raise AssertionError("the API channel has no background tasks")

        adapter = ApiChannel("shop", settings, AdapterContext(
            http=session, quarantine=quarantine, spawn=spawn, attachments=attachment_store))
        await adapter.start(ingest_gate)
        webhook_app = web.Application()
        webhook_app.router.add_post("/webhooks/api/shop", adapter.handle_webhook)
        webhook_server = TestServer(webhook_app)
        await webhook_server.start_server()
        harness = ApiHarness(adapter, webhook_server, operator_server, session)
        holder["h"] = harness
        try:
            yield harness
        finally:
            # Client first, then servers: their keep-alive handlers end with the connections.
            await adapter.stop()
            await session.close()
            await webhook_server.close()
            await operator_server.close()


class TestApiChannelWithWindowConformance(TestApiChannelConformance):
    """A messaging-platform-like setup: 24 h window, a 7-day HUMAN_AGENT tag, templates."""

    window = 24 * 3600.0
    extended = (ReplyWindow(7 * 86400.0, "HUMAN_AGENT"),)
    templates = (
        TemplateSpec("order_update", "es", ("nombre", "pedido"),
                     "Hola {{1}}, su pedido {{2}} salió hoy."),
        TemplateSpec("order_update", "pt_BR", ("nome", "pedido")),
    )


class TestApiChannelOnTheKitsMemoryStore(TestApiChannelConformance):
    """What a plugin author runs: the same battery with no Redis at all."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def attachment_store(self) -> AttachmentStore:
        return MemoryAttachmentStore()
