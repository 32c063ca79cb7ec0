"""Messenger and Instagram run the conformance kit: the core battery, hostile webhooks (with
Meta's GET handshake), delivery receipts and reply windows, against the local Graph fake
(``provider.py``), with and without the ``HUMAN_AGENT`` tag, on the kit's in-memory services
and on the hub's store, quarantine and delivery index on real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from channels.messenger.adapter import (
    InstagramChannel,
    MessengerChannel,
    MessengerSettings,
    MetaMessagingChannel,
)
from channels.models import DeliveryState
from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.services.fetches import FetchStore
from channels.testing import ChannelConformance, InboundCase, KitStore, fixtures
from channels.testing.attachments import MemoryAttachmentStore
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.receipts import KitDeliveries, ReceiptsBattery
from channels.testing.webhooks import (
    HandshakeCase,
    HostileWebhookBattery,
    KitQuarantine,
    MalformedCase,
    ServedWebhook,
    WebhookKit,
)
from channels.testing.windows import WindowBattery
from storage.kit import StoreDeliveries, StoreKit, StoreQuarantine
from storage.store import Store
from tests.channels.messenger import payloads as p
from tests.channels.messenger.behaviour import MetaMessagingBehaviour
from tests.channels.messenger.provider import GraphFake

TOKEN = "EAAGm0PX4ZCpsBAtest-page-token-0123456789"
APP_SECRET = "meta-app-secret-0123456789abcdef"
VERIFY_TOKEN = "inboxhub-verify-token-42"
BUYER = "6789012345678901"
FIXTURES = Path(__file__).parent / "fixtures"
STRANGER = "1111111111111111"


class MessengerKit(ChannelConformance, HostileWebhookBattery, ReceiptsBattery, WindowBattery,
                   MetaMessagingBehaviour):
    adapter_class: ClassVar[type[MetaMessagingChannel]] = MessengerChannel
    kind: ClassVar[str] = "page"
    human_agent_tag: ClassVar[bool] = True
    receipt_states: tuple[DeliveryState, ...] = ("delivered", "read")

    def inbound_cases(self) -> list[InboundCase]:
        k = self.kind
        spanish = "Hola, ¿cuándo llega mi pedido? Gracias 😊"
        return [
            InboundCase("spanish text", p.envelope([p.message("m_in001", BUYER, spanish,
                                                              kind=k)], k),
                        "m_in001", BUYER, BUYER, spanish),
            InboundCase("quick reply", p.envelope([p.message(
                "m_in002", BUYER, "Sí, cambiar talla", kind=k,
                quick_reply={"payload": "CHANGE_SIZE"})], k),
                "m_in002", BUYER, BUYER, "Sí, cambiar talla"),
            InboundCase("a reply to an earlier message", p.envelope([p.message(
                "m_in003", "2222222222222222", "Olá, e o rastreio?", kind=k,
                reply_to={"mid": "m_sent000001"})], k),
                "m_in003", "2222222222222222", "2222222222222222", "Olá, e o rastreio?",
                reply_to="m_sent000001"),
            *fixtures.inbound_cases(FIXTURES / self.adapter_class.type_name),
        ]

    def malformed_bodies(self) -> list[MalformedCase]:
        k = self.kind
        wrong = "instagram" if k == "page" else "page"
        return [
            MalformedCase("not JSON", b"{broken", "webhook"),
            MalformedCase("no entry", b'{"object": "%s"}' % k.encode(), "entry"),
            MalformedCase("the other platform's object", p.encode(p.envelope(
                [p.message("m_x", BUYER, "hola", kind=wrong)], wrong)), "expected"),
            MalformedCase("an event without a sender", p.encode(
                {"object": k, "entry": [{"id": "1", "messaging": [
                    {"recipient": {"id": "1"}, "message": {"mid": "m_y", "text": "x"}}]}]}),
                "sender"),
            *fixtures.malformed_cases(FIXTURES / self.adapter_class.type_name),
            MalformedCase("a message without mid", p.encode(p.envelope(
                [{"sender": {"id": BUYER}, "recipient": {"id": "1"},
                  "message": {"text": "x"}}], k)), "mid"),
            MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000),
        ]

    def handshake_cases(self) -> list[HandshakeCase]:
        good = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                "hub.challenge": "1158201444"}
        return [
            HandshakeCase("subscribe", good, 200, b"1158201444"),
            HandshakeCase("wrong token", {**good, "hub.verify_token": "guess"}, 403),
            HandshakeCase("wrong mode", {**good, "hub.mode": "unsubscribe"}, 403),
            HandshakeCase("no challenge", {k: v for k, v in good.items()
                                           if k != "hub.challenge"}, 400),
        ]

    # -- ReceiptsBattery ----------------------------------------------------------------------

    def receipt_body(self, provider_message_id: str, state: DeliveryState,
                     error: str | None = None) -> bytes:
        graph: GraphFake = self._graph  # type: ignore[attr-defined]
        buyer = graph.recipients.get(provider_message_id, STRANGER)
        later = int(time.time() * 1000) + 5000  # the buyer acts after our send
        if state == "delivered":
            event = p.delivery(buyer, [provider_message_id], later, kind=self.kind)
        else:
            # Messenger's read names no message: everything before the watermark is read.
            event = p.read(buyer, watermark=later, kind=self.kind, at=later)
        return p.encode(p.envelope([event], self.kind))

    # -- the harness --------------------------------------------------------------------------

    @pytest.fixture
    def fetch_queue(self) -> FetchStore:
        return MemoryFetchQueue()

    @pytest.fixture
    def attachment_store(self) -> AttachmentStore:
        return MemoryAttachmentStore()

    @pytest.fixture
    async def graph(self) -> AsyncIterator[GraphFake]:
        limit = self.adapter_class.text_limit
        async with GraphFake(TOKEN, APP_SECRET, text_limit=limit) as graph:
            self._graph = graph
            yield graph

    def settings(self, graph: GraphFake, **overrides: Any) -> MessengerSettings:
        fields: dict[str, Any] = {
            "page_access_token": Secret(TOKEN, "test"), "app_secret": Secret(APP_SECRET, "test"),
            "verify_token": Secret(VERIFY_TOKEN, "test"), "api_base_url": graph.url,
            "human_agent_tag": self.human_agent_tag, "timeout_seconds": 2.0}
        return MessengerSettings(**{**fields, **overrides})

    @pytest.fixture
    async def harness(self, webhook_kit: WebhookKit, graph: GraphFake,
                      kit_deliveries: KitDeliveries, fetch_queue: FetchStore,
                      attachment_store: AttachmentStore) -> AsyncIterator[ServedWebhook]:
        settings = self.settings(graph)
        async with webhook_kit.run(
            graph, lambda context: self.adapter_class("shop", settings, context),
            sign=graph.sign, encode=p.encode, deliveries=kit_deliveries,
            fetches=fetch_queue, attachments=attachment_store,
        ) as harness:
            yield harness


class TestMessengerChannel(MessengerKit):
    pass


class TestMessengerWithoutHumanAgentTag(MessengerKit):
    """Without the tag the window ends at 24 h: the window battery's refusals say so."""

    human_agent_tag = False


class TestInstagramChannel(MessengerKit):
    adapter_class = InstagramChannel
    kind = "instagram"
    # Instagram reports reads of one message (``read.mid``) and no deliveries.
    receipt_states = ("read",)

    def receipt_body(self, provider_message_id: str, state: DeliveryState,
                     error: str | None = None) -> bytes:
        graph: GraphFake = self._graph  # type: ignore[attr-defined]
        buyer = graph.recipients.get(provider_message_id, STRANGER)
        event = p.read(buyer, mid=provider_message_id, kind="instagram")
        return p.encode(p.envelope([event], "instagram"))


class TestMessengerChannelOnRedis(MessengerKit):
    """inboxhub's own run: the hub's ingest, quarantine and delivery index on real Redis."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def kit_quarantine(self, store: Store) -> KitQuarantine:
        return StoreQuarantine(store)

    @pytest.fixture
    def kit_deliveries(self, store: Store) -> KitDeliveries:
        return StoreDeliveries(store)
