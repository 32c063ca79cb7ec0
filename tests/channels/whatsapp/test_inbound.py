"""What the WhatsApp channel stores of Meta's webhooks beyond the kit's cases: the provider's
timestamp, the phone's country, redelivery storms, batched bodies, receipts out of order in
one body, change fields and message types the inbox does not route, and hostile sizes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from channels.models import InboundMessage, OutboundReply
from channels.testing import IngestGate
from channels.testing.receipts import KitDeliveries
from channels.testing.webhooks import KitQuarantine
from channels.whatsapp.adapter import phone_country
from channels.windows import WindowClosed
from tests.channels.whatsapp import fixtures as f
from tests.channels.whatsapp.graph import meta_json
from tests.channels.whatsapp.harness import MAX_BODY, WhatsAppHarness, WhatsAppKit


async def stored(gate: IngestGate, index: int = -1) -> InboundMessage:
    message = await gate.store.inbound(gate.results[index].message_id)
    assert message is not None
    return message


@pytest.mark.parametrize(("wa_id", "country"), [
    (f.BUYER_MX, "MX"), (f.BUYER_BR, "BR"), (f.BUYER_ES, "ES"), ("14155550123", "US"),
    ("447400123456", "GB"), ("4915123456789", "DE"), ("5491123456789", "AR"),
    ("12", None), ("not-digits", None), ("999999999999", None),
])
def test_phone_country(wa_id: str, country: str | None) -> None:
    assert phone_country(wa_id) == country


class TestInbound(WhatsAppKit):

    async def test_the_providers_timestamp_name_and_country(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        answer = await harness.post(f.text(f.BUYER_BR, "wamid.ts-1", "Oi", "Maria Souza",
                                           timestamp="1767139200"))
        assert answer.status == 200
        message = await stored(ingest_gate)
        assert message.sent_at == 1767139200.0  # Meta's timestamp, not the arrival
        assert message.received_at > message.sent_at
        assert message.sender_name == "Maria Souza"
        assert message.hints.phone_country == "BR"
        assert (message.thread_id, message.sender_handle) == (f.BUYER_BR, f.BUYER_BR)
        assert message.channel_type == "whatsapp"

    async def test_the_window_counts_from_metas_timestamp_not_the_arrival(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        # Meta retried this webhook for a day (it retries for up to 7): the buyer wrote 25 h
        # ago, so free text is refused now and the agent is told to send a template.
        wrote = int(time.time()) - 25 * 3600
        body = f.text(f.BUYER_MX, "wamid.late-1", "¿Sigue disponible?", "Ana",
                      timestamp=str(wrote))
        assert (await harness.post(body)).status == 200
        conversation = await ingest_gate.store.conversation(
            ingest_gate.results[0].conversation_id)
        assert conversation is not None and conversation.last_inbound_at == float(wrote)
        now = time.time()
        state = harness.adapter.reply_window(conversation.last_inbound_at, now)
        assert (state.open, state.template_required) == (False, True)
        reply = OutboundReply(
            reply_id="r-late", conversation_id=conversation.id, channel_type="whatsapp",
            channel_instance=harness.adapter.instance, thread_id=conversation.thread_id,
            recipient_handle=conversation.contact_handle, text="Sí, todavía",
            last_inbound_at=conversation.last_inbound_at)
        with pytest.raises(WindowClosed, match="order_update"):
            await harness.adapter.send(reply)
        assert harness.sent() == []

    async def test_a_late_older_message_does_not_move_the_window_back(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        recent = int(time.time()) - 60
        for wamid, ts in (("wamid.new-1", recent), ("wamid.old-1", recent - 30 * 3600)):
            body = f.text(f.BUYER_MX, wamid, "hola", timestamp=str(ts))
            assert (await harness.post(body)).status == 200
        conversation = await ingest_gate.store.conversation(
            ingest_gate.results[0].conversation_id)
        assert conversation is not None and conversation.last_inbound_at == float(recent)

    async def test_a_timestamp_from_the_future_counts_as_the_arrival(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        before = time.time()
        body = f.text(f.BUYER_MX, "wamid.future-ts", "hola",
                      timestamp=str(int(before) + 10 * 86400))
        assert (await harness.post(body)).status == 200
        conversation = await ingest_gate.store.conversation(
            ingest_gate.results[0].conversation_id)
        assert conversation is not None and conversation.last_inbound_at is not None
        assert before <= conversation.last_inbound_at <= time.time()

    async def test_a_redelivery_storm_stores_one_message(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        payload = f.text(f.BUYER_MX, "wamid.storm-1", "¿Hay stock?", "Ana")
        answers = await asyncio.gather(*(harness.post(payload) for _ in range(50)))
        assert [a.status for a in answers] == [200] * 50
        assert len(ingest_gate.results) == 50
        assert len({r.message_id for r in ingest_gate.results}) == 1
        assert sum(not r.duplicate for r in ingest_gate.results) == 1
        conversation = await ingest_gate.store.conversation(
            ingest_gate.results[0].conversation_id)
        assert conversation is not None
        assert conversation.provider_message_ids == ("wamid.storm-1",)

    async def test_a_media_redelivery_storm_queues_one_fetch(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        payload = f.image(f.BUYER_MX, "wamid.storm-img", "5550001", caption="mire")
        for _ in range(50):
            assert (await harness.post(payload)).status == 200
        backlog = await harness.queue.backlog(harness.adapter.instance)
        assert backlog.queued == 1
        assert len({r.message_id for r in ingest_gate.results}) == 1

    async def test_a_batch_of_messages_and_contacts(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        body = f.messages(
            f.message(f.BUYER_MX, "wamid.b-1", "text", {"body": "uno"}),
            f.message(f.BUYER_BR, "wamid.b-2", "text", {"body": "dois"}),
            contacts=[f.contact(f.BUYER_MX, "Ana"), f.contact(f.BUYER_BR, "João")])
        assert (await harness.post(body)).status == 200
        first, second = await stored(ingest_gate, 0), await stored(ingest_gate, 1)
        assert (first.text, first.sender_name, first.thread_id) == ("uno", "Ana", f.BUYER_MX)
        assert (second.text, second.sender_name, second.thread_id) == (
            "dois", "João", f.BUYER_BR)
        assert ingest_gate.results[0].conversation_id != ingest_gate.results[1].conversation_id

    async def test_two_entries_in_one_body(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        one = f.text(f.BUYER_MX, "wamid.e-1", "uno")
        two = f.text(f.BUYER_ES, "wamid.e-2", "dos")
        body = {"object": one["object"], "entry": one["entry"] + two["entry"]}
        assert (await harness.post(body)).status == 200
        assert [(await stored(ingest_gate, i)).text for i in (0, 1)] == ["uno", "dos"]

    @pytest.mark.parametrize(("kind", "content", "extra", "text"), [
        ("sticker", {"id": "777", "mime_type": "image/webp", "animated": False}, {},
         "[sticker]"),
        ("audio", {"id": "778", "mime_type": "audio/ogg; codecs=opus", "voice": True}, {},
         "[voice message]"),
        ("video", {"id": "779", "mime_type": "video/mp4", "caption": "assim chegou"}, {},
         "assim chegou"),
        ("reaction", {"message_id": "wamid.ours-9"}, {}, "[removed a reaction to wamid.ours-9]"),
        ("contacts", None, {"contacts": [{"name": {"formatted_name": "Luis Gómez"},
                                          "phones": [{"phone": "+52 55 1111 2222"}]}]},
         "[contact] Luis Gómez +52 55 1111 2222"),
        ("unsupported", None, {"errors": [f.failure(131051, "Message type unknown",
                                                    "Message type is not currently supported")]},
         "[unsupported message: 131051 Message type unknown: Message type is not currently "
         "supported]"),
        ("order", None, {"order": {"catalog_id": "1", "product_items": []}}, "[order message]"),
        ("system", {"body": "User A changed from 521 to 522", "type": "user_changed_number"},
         {}, "[system] User A changed from 521 to 522"),
    ])
    async def test_other_message_types_are_kept_with_a_readable_text(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate, kind: str,
            content: dict[str, Any] | None, extra: dict[str, Any], text: str) -> None:
        body = f.messages(f.message(f.BUYER_MX, f"wamid.{kind}-1", kind, content, **extra))
        assert (await harness.post(body)).status == 200
        assert (await stored(ingest_gate)).text == text

    async def test_a_quoted_and_forwarded_text_keeps_its_text(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        body = f.messages(f.message(f.BUYER_MX, "wamid.q-1", "text", {"body": "¿y esto?"},
                                    context={"from": "15550783881", "id": "wamid.ours-3",
                                             "forwarded": True}))
        assert (await harness.post(body)).status == 200
        assert (await stored(ingest_gate)).text == "¿y esto?"

    async def test_unknown_change_fields_and_keys_are_acknowledged_and_ignored(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate,
            kit_quarantine: KitQuarantine) -> None:
        for field, value in (
                ("message_template_status_update", {"event": "APPROVED",
                                                     "message_template_id": 1,
                                                     "message_template_name": "x"}),
                ("account_update", {"phone_number": "15550783881", "event": "VERIFIED"}),
                ("a_field_from_2030", [1, 2, {"deep": None}])):
            answer = await harness.post(f.envelope(value, field=field))  # type: ignore[arg-type]
            assert answer.status == 200, field
        future = f.text(f.BUYER_MX, "wamid.future-1", "hola")
        value = future["entry"][0]["changes"][0]["value"]
        value["a_new_key"] = {"nested": ["x"]}
        value["messages"][0]["another_new_key"] = 7
        assert (await harness.post(future)).status == 200
        assert len(ingest_gate.results) == 1
        assert await kit_quarantine.entries() == []

    async def test_a_change_for_an_unconfigured_number_is_kept_not_dropped(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate,
            kit_quarantine: KitQuarantine) -> None:
        body = f.messages(f.message(f.BUYER_MX, "wamid.other-1", "text", {"body": "hola"}),
                          phone_number_id="999000111")
        assert (await harness.post(body)).status == 200  # Meta must not retry it for days
        assert ingest_gate.results == []
        [kept] = await kit_quarantine.entries()
        assert "999000111" in kept.error and b"wamid.other-1" in kept.raw

    async def test_statuses_out_of_order_in_one_body_end_in_read(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate,
            kit_deliveries: KitDeliveries) -> None:
        assert (await harness.post(f.text(f.BUYER_MX, "wamid.in-1", "hola"))).status == 200
        conversation = await ingest_gate.store.conversation(
            ingest_gate.results[0].conversation_id)
        assert conversation is not None
        reply = await kit_deliveries.outbound(OutboundReply(
            reply_id="r-1", conversation_id=conversation.id, channel_type="whatsapp",
            channel_instance=harness.adapter.instance, thread_id=f.BUYER_MX,
            recipient_handle=f.BUYER_MX, text="¡Ya salió!", in_reply_to="wamid.in-1",
            last_inbound_at=conversation.last_inbound_at))
        wamid = await harness.adapter.send(reply)
        await kit_deliveries.sent(reply.reply_id, wamid)
        body = f.statuses(f.status(wamid, "read", timestamp="1767225700"),
                          f.status(wamid, "delivered", timestamp="1767225650"),
                          f.status(wamid, "sent", timestamp="1767225610"),
                          f.status(wamid, "deleted"))
        assert (await harness.post(body)).status == 200
        found = await kit_deliveries.status(reply.reply_id)
        assert found is not None and found.state == "read"
        assert len(ingest_gate.results) == 1, "a receipt was stored as a buyer message"

    async def test_a_failed_status_carries_the_code_title_and_details(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate,
            kit_deliveries: KitDeliveries) -> None:
        assert (await harness.post(f.text(f.BUYER_MX, "wamid.in-2", "hola"))).status == 200
        conversation = await ingest_gate.store.conversation(
            ingest_gate.results[0].conversation_id)
        assert conversation is not None
        reply = await kit_deliveries.outbound(OutboundReply(
            reply_id="r-2", conversation_id=conversation.id, channel_type="whatsapp",
            channel_instance=harness.adapter.instance, thread_id=f.BUYER_MX,
            recipient_handle=f.BUYER_MX, text="hola", last_inbound_at=conversation.last_inbound_at))
        wamid = await harness.adapter.send(reply)
        await kit_deliveries.sent(reply.reply_id, wamid)
        body = f.statuses(f.status(wamid, "failed", errors=[f.failure(
            131026, "Message undeliverable",
            "Recipient phone number is not a WhatsApp phone number")]))
        assert (await harness.post(body)).status == 200
        found = await kit_deliveries.status(reply.reply_id)
        assert found is not None and found.state == "failed"
        assert found.error == ("131026 Message undeliverable: Recipient phone number is not a "
                               "WhatsApp phone number")

    async def test_a_giant_body_is_413_and_nothing_is_kept(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate,
            kit_quarantine: KitQuarantine) -> None:
        giant = meta_json(f.text(f.BUYER_MX, "wamid.giant", "a" * (MAX_BODY + 10)))
        assert (await harness.post(giant)).status == 413
        many = meta_json(f.messages(*(f.message(f.BUYER_MX, f"wamid.m{i}", "text",
                                                {"body": "x"}) for i in range(1500))))
        if len(many) <= MAX_BODY:
            assert (await harness.post(many)).status == 400  # over 1000 messages
        else:
            assert (await harness.post(many)).status == 413
        assert ingest_gate.results == []
