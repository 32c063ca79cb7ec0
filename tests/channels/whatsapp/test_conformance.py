"""The WhatsApp channel runs the conformance kit: the core battery, hostile webhooks (with
Meta's GET handshake), delivery receipts from ``statuses[]`` and the window/template battery,
on the hub's real Redis services and against the local Graph API."""

from __future__ import annotations

import pytest

from channels.models import DeliveryState
from channels.services.attachments import AttachmentStore
from channels.testing import ChannelConformance, InboundCase, KitStore, MemoryKitStore
from channels.testing.attachments import MemoryAttachmentStore
from channels.testing.receipts import KitDeliveries, MemoryDeliveries, ReceiptsBattery
from channels.testing.webhooks import (
    HandshakeCase,
    HostileWebhookBattery,
    KitQuarantine,
    MalformedCase,
    MemoryQuarantine,
)
from channels.testing.windows import WindowBattery
from tests.channels.whatsapp import fixtures as f
from tests.channels.whatsapp.graph import VERIFY_TOKEN, meta_json
from tests.channels.whatsapp.harness import WhatsAppKit


class TestWhatsAppConformance(WhatsAppKit, ChannelConformance, HostileWebhookBattery,
                              ReceiptsBattery, WindowBattery):

    def inbound_cases(self) -> list[InboundCase]:
        return [
            InboundCase(
                name="spanish text with the profile name",
                payload=f.text(f.BUYER_MX, "wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFjNFQjA=",
                               "Hola, ¿dónde está mi pedido? 📦", "Ana Pérez"),
                provider_message_id="wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFjNFQjA=",
                thread_id=f.BUYER_MX, sender_handle=f.BUYER_MX,
                text="Hola, ¿dónde está mi pedido? 📦", sender_name="Ana Pérez"),
            InboundCase(
                name="a quick-reply button of a list",
                payload=f.messages(f.message(f.BUYER_BR, "wamid.list-1", "interactive", {
                    "type": "list_reply", "list_reply": {
                        "id": "track", "title": "Rastrear pedido",
                        "description": "Onde está meu pacote"}}),
                    contacts=[f.contact(f.BUYER_BR, "João")]),
                provider_message_id="wamid.list-1", thread_id=f.BUYER_BR,
                sender_handle=f.BUYER_BR, text="Rastrear pedido (Onde está meu pacote)",
                sender_name="João"),
            InboundCase(
                name="a button reply",
                payload=f.messages(f.message(f.BUYER_ES, "wamid.button-1", "interactive", {
                    "type": "button_reply", "button_reply": {"id": "yes", "title": "Sí"}})),
                provider_message_id="wamid.button-1", thread_id=f.BUYER_ES,
                sender_handle=f.BUYER_ES, text="Sí"),
            InboundCase(
                name="a template's quick-reply button",
                payload=f.messages(f.message(f.BUYER_ES, "wamid.tbutton-1", "button", {
                    "payload": "STOP", "text": "No más mensajes"})),
                provider_message_id="wamid.tbutton-1", thread_id=f.BUYER_ES,
                sender_handle=f.BUYER_ES, text="No más mensajes"),
            InboundCase(
                name="a location",
                payload=f.messages(f.message(f.BUYER_MX, "wamid.loc-1", "location", {
                    "latitude": 19.4326, "longitude": -99.1332, "name": "Zócalo",
                    "address": "Plaza de la Constitución, CDMX"})),
                provider_message_id="wamid.loc-1", thread_id=f.BUYER_MX,
                sender_handle=f.BUYER_MX,
                text="[location] Zócalo, Plaza de la Constitución, CDMX "
                     "(19.432600, -99.133200)"),
            InboundCase(
                name="a reaction",
                payload=f.messages(f.message(f.BUYER_MX, "wamid.react-1", "reaction", {
                    "message_id": "wamid.ours-1", "emoji": "👍"})),
                provider_message_id="wamid.react-1", thread_id=f.BUYER_MX,
                sender_handle=f.BUYER_MX, text="[reaction 👍 to wamid.ours-1]"),
            InboundCase(
                name="an image with a caption (the file follows through the fetch stage)",
                payload=f.image(f.BUYER_BR, "wamid.img-1", "1234567890",
                                caption="Chegou quebrado"),
                provider_message_id="wamid.img-1", thread_id=f.BUYER_BR,
                sender_handle=f.BUYER_BR, text="Chegou quebrado"),
            InboundCase(
                name="a document without a caption",
                payload=f.document(f.BUYER_ES, "wamid.doc-1", "99887766", "factura.pdf"),
                provider_message_id="wamid.doc-1", thread_id=f.BUYER_ES,
                sender_handle=f.BUYER_ES, text="[document: factura.pdf]"),
        ]

    # -- HostileWebhookBattery -------------------------------------------------------------

    def valid_body(self, subpath: str = "") -> bytes:
        return meta_json(self.inbound_cases()[0].payload)

    def malformed_bodies(self) -> list[MalformedCase]:
        return [
            MalformedCase("not JSON", b'{"object": "whatsapp_business_account", "entry": [',
                          "not valid UTF-8 JSON"),
            MalformedCase("not UTF-8", b'{"object": "\xff\xfe"}', "UTF-8"),
            MalformedCase("another object", meta_json({"object": "page", "entry": []}),
                          "'page'"),
            MalformedCase("no entry", meta_json({"object": "whatsapp_business_account"}),
                          "entry"),
            MalformedCase("a message without an id", meta_json(f.messages(
                {"from": f.BUYER_MX, "timestamp": f.TS, "type": "text",
                 "text": {"body": "hola"}})), "id"),
            MalformedCase("a sender that is not a WhatsApp id", meta_json(
                f.text("+52 55 1234", "wamid.bad-from", "hola")), "from"),
            MalformedCase("a media id with a path in it", meta_json(
                f.image(f.BUYER_MX, "wamid.bad-media", "../../me/accounts")), "media id"),
            MalformedCase("nested 5,000 deep", b"[" * 5000 + b"]" * 5000),
        ]

    def handshake_cases(self) -> list[HandshakeCase]:
        ok = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
              "hub.challenge": "1158201444"}
        return [
            HandshakeCase("the right token", ok, 200, b"1158201444"),
            HandshakeCase("a wrong token", {**ok, "hub.verify_token": "guess"}, 403),
            HandshakeCase("no token", {k: v for k, v in ok.items()
                                       if k != "hub.verify_token"}, 403),
            HandshakeCase("not subscribe", {**ok, "hub.mode": "unsubscribe"}, 403),
            HandshakeCase("no challenge", {k: v for k, v in ok.items()
                                           if k != "hub.challenge"}, 400),
            HandshakeCase("an oversized challenge", {**ok, "hub.challenge": "9" * 257}, 400),
        ]

    # -- ReceiptsBattery -------------------------------------------------------------------

    def receipt_body(self, provider_message_id: str, state: DeliveryState,
                     error: str | None = None) -> bytes:
        errors = [f.failure(131026, error, "Message undeliverable")] if error else None
        return meta_json(f.statuses(f.status(provider_message_id, state, errors=errors)))


class TestWhatsAppOnTheKitsMemoryServices(TestWhatsAppConformance):
    """The same batteries with the kit's in-memory services, as a plugin author runs them."""

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
