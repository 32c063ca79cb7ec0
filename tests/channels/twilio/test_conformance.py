"""The Twilio SMS channel runs the conformance kit: the core battery, hostile webhooks (on the
message URL and the status sub-route) and delivery receipts, served behind a proxy whose
public address (``hub.public_url``) is what Twilio signed, with every request signed by
twilio-python's own ``RequestValidator`` and sends going to a local server that speaks
Twilio's REST API. Once on the kit's in-memory services, once on the hub's store, quarantine
and delivery index on real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from channels.models import DeliveryState
from channels.secrets import Secret
from channels.services.fetches import FetchStore
from channels.testing import ChannelConformance, InboundCase, KitStore
from channels.testing.attachments import MemoryAttachmentStore
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.receipts import KitDeliveries, ReceiptsBattery
from channels.testing.webhooks import (
    HostileWebhookBattery,
    KitQuarantine,
    MalformedCase,
    ServedWebhook,
    WebhookKit,
)
from channels.twilio.adapter import TwilioSettings, TwilioSmsChannel
from storage.fetches import RedisFetchQueue
from storage.kit import StoreDeliveries, StoreKit, StoreQuarantine
from storage.store import Store
from tests.channels.twilio.provider import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    TwilioFake,
    form_body,
    sid,
    sign_form,
)

PUBLIC_URL = "https://sms.example.com"
INSTANCE = "sms"
FORM = "application/x-www-form-urlencoded"


def inbound_form(n: int, sender: str, text: str, **extra: str) -> dict[str, str]:
    """An inbound SMS webhook, field for field as Twilio documents it (CHANNELS.md §3)."""
    message_sid = sid("SM", n)
    return {"ToCountry": "ES", "ToState": "", "SmsMessageSid": message_sid, "NumMedia": "0",
            "ToCity": "", "FromZip": "", "SmsSid": message_sid, "FromState": "",
            "SmsStatus": "received", "FromCity": "", "Body": text, "FromCountry": "ES",
            "To": OUR_NUMBER, "ToZip": "", "NumSegments": "1", "MessageSid": message_sid,
            "AccountSid": ACCOUNT_SID, "From": sender, "ApiVersion": "2010-04-01", **extra}


def status_form(message_sid: str, status: str, error_code: str | None = None) -> bytes:
    fields = {"SmsSid": message_sid, "SmsStatus": status, "MessageStatus": status,
              "To": "+34600111222", "MessageSid": message_sid, "AccountSid": ACCOUNT_SID,
              "From": OUR_NUMBER, "ApiVersion": "2010-04-01"}
    if error_code is not None:
        fields["ErrorCode"] = error_code
    return form_body(fields)


def signer(body: bytes, subpath: str) -> dict[str, str]:
    path, _, query = subpath.partition("?")
    url = (f"{PUBLIC_URL}/webhooks/twilio/{INSTANCE}" + (f"/{path}" if path else "")
           + (f"?{query}" if query else ""))
    return {"X-Twilio-Signature": sign_form(url, body), "Content-Type": FORM}


def settings(provider: TwilioFake, **overrides: object) -> TwilioSettings:
    values: dict[str, object] = {
        "account_sid": ACCOUNT_SID, "auth_token": Secret(AUTH_TOKEN, "test"),
        "from_number": OUR_NUMBER, "api_base_url": provider.url, "timeout_seconds": 5.0}
    values.update(overrides)
    return TwilioSettings(**values)  # type: ignore[arg-type]


class TestTwilioSmsChannel(ChannelConformance, HostileWebhookBattery, ReceiptsBattery):
    receipt_path = "status"
    receipt_states: tuple[DeliveryState, ...] = ("sent", "delivered", "read", "failed")
    failure_reason = "Unreachable destination handset"

    def inbound_cases(self) -> list[InboundCase]:
        spanish = "Hola, ¿dónde está mi pedido?"
        brazil = "Olá! Meu pedido 4521 ainda não chegou 📦 & já paguei = R$ 99,90"
        return [
            InboundCase(name="spanish SMS", payload=form_body(inbound_form(
                1, "+34600111222", spanish)), provider_message_id=sid("SM", 1),
                thread_id="+34600111222", sender_handle="+34600111222", text=spanish),
            InboundCase(name="brazilian SMS, emoji and form metacharacters",
                        payload=form_body(inbound_form(2, "+5511987654321", brazil,
                                                       FromCountry="BR")),
                        provider_message_id=sid("SM", 2), thread_id="+5511987654321",
                        sender_handle="+5511987654321", text=brazil),
        ]

    def valid_body(self, subpath: str = "") -> bytes:
        if subpath == "status":
            return status_form(sid("SM", 99), "delivered")
        return form_body(inbound_form(1, "+34600111222", "hola"))

    def receipt_body(self, provider_message_id: str, state: DeliveryState,
                     error: str | None = None) -> bytes:
        if state == "failed":
            return status_form(provider_message_id, "undelivered", "30003")
        return status_form(provider_message_id, state)

    def malformed_bodies(self) -> list[MalformedCase]:
        good = inbound_form(5, "+34600111222", "hola")
        without = {k: v for k, v in good.items() if k not in ("MessageSid", "SmsSid")}
        return [
            MalformedCase("no MessageSid", form_body(without), "MessageSid"),
            MalformedCase("no From", form_body({k: v for k, v in good.items() if k != "From"}),
                          "From"),
            MalformedCase("MessageSid not a SID",
                          form_body({**good, "MessageSid": "../../etc", "SmsSid": "x"}),
                          "MessageSid"),
            MalformedCase("NumMedia not a count", form_body({**good, "NumMedia": "lots"}),
                          "NumMedia"),
            MalformedCase("NumMedia a superscript digit", form_body({**good, "NumMedia": "²"}),
                          "NumMedia is not a count"),
            MalformedCase("NumMedia over Twilio's 10", form_body({**good, "NumMedia": "11"}),
                          "NumMedia is not a count"),
            MalformedCase("MessageSid twice", form_body([*good.items(),
                                                         ("MessageSid", sid("SM", 6))]),
                          "MessageSid"),
            MalformedCase("status without MessageStatus",
                          form_body({"MessageSid": sid("SM", 7), "AccountSid": ACCOUNT_SID}),
                          "MessageStatus", subpath="status"),
            MalformedCase("From empty", form_body({**good, "From": ""}), "From is empty"),
        ]

    @pytest.fixture
    def kit_fetches(self) -> FetchStore:
        return MemoryFetchQueue()

    @pytest.fixture
    async def harness(self, webhook_kit: WebhookKit, kit_deliveries: KitDeliveries,
                      kit_fetches: FetchStore) -> AsyncIterator[ServedWebhook]:
        async with TwilioFake() as provider, webhook_kit.run(
            provider, lambda context: TwilioSmsChannel(INSTANCE, settings(provider), context),
            sign=signer, deliveries=kit_deliveries, public_url=PUBLIC_URL,
            fetches=kit_fetches, attachments=MemoryAttachmentStore(),
        ) as harness:
            yield harness


class TestTwilioSmsChannelOnRedis(TestTwilioSmsChannel):
    """The same batteries on the hub's ingest, quarantine and delivery index (real Redis)."""

    @pytest.fixture
    def kit_store(self, store: Store) -> KitStore:
        return StoreKit(store)

    @pytest.fixture
    def kit_quarantine(self, store: Store) -> KitQuarantine:
        return StoreQuarantine(store)

    @pytest.fixture
    def kit_deliveries(self, store: Store) -> KitDeliveries:
        return StoreDeliveries(store)

    @pytest.fixture
    def kit_fetches(self, redis: Redis) -> FetchStore:
        return RedisFetchQueue(redis)
