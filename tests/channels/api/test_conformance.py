"""The API channel runs the conformance kit: the core battery, hostile webhooks, delivery
receipts (its status callback), reply windows and templates, and attachments, on real Redis
without and with a reply window, and on the kit's in-memory services, as a plugin author
without Redis would. The rate-limit battery runs on a Telegram-like subclass
(``tests/plugins/paced.py``): the API channel itself declares no limits."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from channels.api import ApiChannel, ApiChannelSettings
from channels.base import AdapterContext, ReplyWindow
from channels.models import DeliveryState, TemplateRef
from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.services.limits import RateLimiter
from channels.testing import (
    HTTP_FAILURES,
    ChannelConformance,
    FailureKind,
    InboundCase,
    IngestGate,
    KitStore,
    MemoryKitStore,
    SentRecord,
)
from channels.testing.attachments import AttachmentBattery, MemoryAttachmentStore
from channels.testing.limits import MemoryLimiter, RateLimitBattery
from channels.testing.receipts import KitDeliveries, MemoryDeliveries, ReceiptsBattery
from channels.testing.webhooks import (
    HostileWebhookBattery,
    KitQuarantine,
    MalformedCase,
    MemoryQuarantine,
    WebhookAnswer,
    mount,
)
from channels.testing.windows import WindowBattery
from channels.windows import TemplateSpec
from storage.attachments import AttachmentService, FileBlobStore
from storage.kit import StoreDeliveries, StoreKit, StoreQuarantine
from storage.limiter import RedisLimiter
from storage.store import Store
from tests.conftest import TEST_SECRET, RedisServer
from tests.helpers import sign
from tests.plugins.paced import PacedApiChannel, PacedSettings

FAILURES = HTTP_FAILURES
MAX_BODY = 64 * 1024


class ApiHarness:
    """Webhook server with the adapter mounted as the hub mounts it + a fake operator endpoint
    for replies."""

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
        answer = await self.request("POST", "", body, self.signed_headers(body))
        return answer.status == 200

    async def request(self, method: str, subpath: str, body: bytes,
                      headers: Mapping[str, str]) -> WebhookAnswer:
        path, _, query = subpath.partition("?")
        url = self.webhook.make_url(f"/webhooks/{self.adapter.type_name}/{self.adapter.instance}"
                                    + (f"/{path}" if path else "") + (f"?{query}" if query else ""))
        async with self.session.request(method, url, data=body or None,
                                        headers=dict(headers)) as resp:
            return WebhookAnswer(resp.status, await resp.read(), dict(resp.headers))

    def signed_headers(self, body: bytes, subpath: str = "") -> dict[str, str]:
        return {"X-Inboxhub-Signature": sign(body), "Content-Type": "application/json"}

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])

    def sent_templates(self) -> list[TemplateRef | None]:
        return list(self.templates)

    async def deliver_answer(self, case: InboundCase) -> tuple[bool, str]:
        body = json.dumps(case.payload).encode()
        answer = await self.request("POST", "", body, self.signed_headers(body))
        return answer.status == 200, answer.body.decode()

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        return list(self.files)


class ApiKit:
    """The harness and the services of the API channel's test classes; real Redis by default."""

    adapter_class: ClassVar[type[ApiChannel]] = ApiChannel
    settings_class: ClassVar[type[ApiChannelSettings]] = ApiChannelSettings
    extra_settings: ClassVar[dict[str, Any]] = {}
    window: float | None = None
    templates: tuple[TemplateSpec, ...] = ()
    extended: tuple[ReplyWindow, ...] = ()

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)  # the hub's own atomic ingest on real Redis

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
    async def harness(self, ingest_gate: IngestGate, kit_quarantine: KitQuarantine,
                      kit_deliveries: KitDeliveries, kit_limiter: RateLimiter,
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
            return web.json_response({"id": f"op-{len(h.records)}-{data['reply_id']}"})

        operator_app = web.Application()
        operator_app.router.add_post("/replies", operator)
        operator_server = TestServer(operator_app)
        await operator_server.start_server()
        session = aiohttp.ClientSession()
        settings = self.settings_class(
            secret=Secret(TEST_SECRET, "test"),
            outbound_url=str(operator_server.make_url("/replies")),
            max_text_length=500, reply_window_seconds=self.window, timeout_seconds=2,
            templates=self.templates, extended_windows=self.extended,
            max_attachment_bytes=4096, max_attachments=3,
            **self.extra_settings,
        )

        def spawn(coro: Any, name: str) -> Any:
            raise AssertionError("the API channel has no background tasks")

        adapter = self.adapter_class("shop", settings, AdapterContext(
            http=session, quarantine=kit_quarantine, spawn=spawn, max_body_bytes=MAX_BODY,
            deliveries=kit_deliveries, limiter=kit_limiter, attachments=attachment_store))
        await adapter.start(ingest_gate)
        webhook_app = web.Application()
        mount(webhook_app, adapter)
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

    @pytest.fixture
    def kit_limiter(self) -> RateLimiter:
        return MemoryLimiter()

    # -- HostileWebhookBattery -------------------------------------------------------------

    def malformed_bodies(self) -> list[MalformedCase]:
        return [
            MalformedCase("not JSON", b"{broken", "not valid UTF-8 JSON"),
            MalformedCase("a field missing", b'{"id": "m-1", "text": "hola"}', "sender"),
            MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000),
            MalformedCase("status not JSON", b"<xml/>", "not valid UTF-8 JSON", "status"),
            MalformedCase("unknown status", b'{"id": "op-1", "status": "bounced"}', "status",
                          "status"),
            MalformedCase("error on a delivery", b'{"id": "op-1", "status": "delivered", '
                          b'"error": "x"}', "only for status 'failed'", "status"),
        ]

    def valid_body(self, subpath: str = "") -> bytes:
        if subpath == "status":
            return self.receipt_body("op-1", "delivered")
        return json.dumps(self.inbound_cases()[0].payload).encode()

    # -- ReceiptsBattery ------------------------------------------------------------------

    receipt_path = "status"

    def receipt_body(self, provider_message_id: str, state: DeliveryState,
                     error: str | None = None) -> bytes:
        body: dict[str, Any] = {"id": provider_message_id, "status": state,
                                "at": round(time.time(), 3)}
        if error is not None:
            body["error"] = error
        return json.dumps(body).encode()


class TestApiChannelConformance(ApiKit, ChannelConformance, HostileWebhookBattery,
                                ReceiptsBattery, WindowBattery, AttachmentBattery):
    pass


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
    """What a plugin author runs: the same batteries with no Redis at all."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def kit_quarantine(self) -> KitQuarantine:
        return MemoryQuarantine()

    @pytest.fixture
    def kit_deliveries(self) -> KitDeliveries:
        return MemoryDeliveries()

    @pytest.fixture
    def attachment_store(self) -> AttachmentStore:
        return MemoryAttachmentStore()


class TestPacedApiChannelRateLimits(ApiKit, ChannelConformance, RateLimitBattery):
    """A channel with per-chat (4/s) and per-account (6/s, bursts of 2) limits, on the hub's
    Redis limiter; the second process is a second Redis client."""

    adapter_class = PacedApiChannel
    settings_class = PacedSettings
    extra_settings: ClassVar[dict[str, Any]] = {
        "per_chat_rate": 4.0, "per_account_rate": 6.0, "per_account_burst": 2}

    @pytest.fixture
    def kit_limiter(self, redis: Redis) -> RateLimiter:
        return RedisLimiter(redis)

    @pytest.fixture
    async def second_limiter(self, redis: Redis,
                             redis_server: RedisServer) -> AsyncIterator[RateLimiter]:
        other = Redis(unix_socket_path=redis_server.socket)
        try:
            yield RedisLimiter(other)
        finally:
            await other.aclose()


class TestPacedApiChannelRateLimitsInMemory(TestPacedApiChannelRateLimits):
    """The rate-limit battery as a plugin author runs it: no Redis."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    @pytest.fixture
    def kit_limiter(self) -> RateLimiter:
        return MemoryLimiter()

    @pytest.fixture
    def attachment_store(self) -> AttachmentStore:
        return MemoryAttachmentStore()

    @pytest.fixture
    async def second_limiter(self, kit_limiter: RateLimiter) -> AsyncIterator[RateLimiter]:
        yield kit_limiter
