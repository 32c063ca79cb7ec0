"""Messenger/Instagram specifics beyond the kit's batteries, mixed into every conformance
variant (``test_conformance.py``): redelivery storms, ``\\uXXXX``-escaped signatures, echoes,
watermark receipts out of order, events that are acknowledged but not routed, attachments
through the fetch worker, the messaging type of each window, and Graph's refusals."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any, ClassVar

import msgspec
import pytest

from channels.errors import PermanentError, ReplyRejected
from channels.messenger.adapter import HUMAN_AGENT, MetaMessagingChannel
from channels.models import DeliveryUpdate, OutboundReply
from channels.services.attachments import AttachmentStore
from channels.services.fetches import FetchStore
from channels.testing import IngestGate
from channels.testing.attachments import PNG
from channels.testing.receipts import KitDeliveries
from channels.testing.webhooks import KitQuarantine, ServedWebhook
from channels.windows import WindowClosed
from tests.channels.messenger import payloads as p
from tests.channels.messenger.provider import GraphFake

DAY = 86400.0
BUYER = "6789012345678901"


class MetaMessagingBehaviour:
    kind: ClassVar[str]
    human_agent_tag: ClassVar[bool]
    adapter_class: ClassVar[type[MetaMessagingChannel]]
    receipt_states: tuple[str, ...]

    async def _post(self, harness: ServedWebhook, payload: Any) -> int:
        body = p.encode(payload)
        return (await harness.request("POST", "", body, harness.signed_headers(body))).status

    def _buyer_reply(self, harness: ServedWebhook, conversation_id: str, text: str,
               age: float, tag: str | None = None) -> OutboundReply:
        return OutboundReply(
            reply_id=f"r-{time.time_ns()}", conversation_id=conversation_id,
            channel_type=harness.adapter.type_name, channel_instance=harness.adapter.instance,
            thread_id=BUYER, recipient_handle=BUYER, text=text,
            last_inbound_at=time.time() - age, tag=tag)

    async def _conversation(self, harness: ServedWebhook, gate: IngestGate) -> str:
        assert await self._post(harness, p.envelope(
            [p.message("m_first", BUYER, "hola", kind=self.kind)], self.kind)) == 200
        return gate.results[-1].conversation_id

    # -- inbound ----------------------------------------------------------------------------

    async def test_a_redelivery_storm_stores_one_message(
            self, harness: ServedWebhook, ingest_gate: IngestGate) -> None:
        payload = p.envelope([p.message("m_storm", BUYER, "¿Hay talla M?", kind=self.kind)],
                             self.kind)
        statuses = await asyncio.gather(*(self._post(harness, payload) for _ in range(50)))
        assert statuses == [200] * 50
        assert len(ingest_gate.results) == 50
        assert sum(not r.duplicate for r in ingest_gate.results) == 1
        assert len({r.message_id for r in ingest_gate.results}) == 1

    async def test_the_signature_is_over_the_escaped_bytes_as_sent(
            self, harness: ServedWebhook, ingest_gate: IngestGate,
            kit_quarantine: KitQuarantine) -> None:
        text = "Olá, não recebi — ¿dónde está? 📦"
        payload = p.envelope([p.message("m_esc", BUYER, text, kind=self.kind)], self.kind)
        escaped = json.dumps(payload).encode("ascii")
        assert b"\\u00e1" in escaped and b"\\ud83d\\udce6" in escaped
        headers = harness.signed_headers(escaped)
        assert (await harness.request("POST", "", escaped, headers)).status == 200
        stored = await ingest_gate.store.inbound(ingest_gate.results[-1].message_id)
        assert stored is not None and stored.text == text
        # The same JSON re-serialized unescaped is other bytes: the signature no longer fits.
        raw = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        assert (await harness.request("POST", "", raw, headers)).status == 403
        assert (await harness.request("POST", "", escaped, {})).status == 401
        digest = hmac.new(b"not-the-app-secret", escaped, hashlib.sha256).hexdigest()
        assert (await harness.request("POST", "", escaped,
                                      {"X-Hub-Signature-256": f"sha256={digest}"})).status == 403
        assert len(ingest_gate.results) == 1 and await kit_quarantine.entries() == []

    async def test_events_not_for_the_inbox_are_acknowledged_and_not_routed(
            self, harness: ServedWebhook, ingest_gate: IngestGate,
            kit_quarantine: KitQuarantine) -> None:
        k = self.kind
        events = [
            p.message("m_del", BUYER, None, kind=k, is_deleted=True),
            p.message("m_uns", BUYER, None, kind=k, is_unsupported=True),
            {"sender": {"id": BUYER}, "recipient": {"id": p.owner(k)}, "timestamp": p.T0,
             "reaction": {"mid": "m_x", "action": "react", "reaction": "love",
                          "emoji": "❤"}},
            {"sender": {"id": BUYER}, "recipient": {"id": p.owner(k)}, "timestamp": p.T0,
             "referral": {"ref": "ad-7", "source": "ADS", "type": "OPEN_THREAD"}},
            {"sender": {"id": BUYER}, "recipient": {"id": p.owner(k)}, "timestamp": p.T0,
             "some_future_event": {"x": 1}},
        ]
        body = p.envelope(events, k)
        body["entry"][0]["standby"] = [p.message("m_sb", BUYER, "hola", kind=k)]
        assert await self._post(harness, body) == 200
        assert ingest_gate.results == [] and await kit_quarantine.entries() == []

    async def test_a_postback_is_a_buyer_message_with_the_buttons_title(
            self, harness: ServedWebhook, ingest_gate: IngestGate) -> None:
        event = {"sender": {"id": BUYER}, "recipient": {"id": p.owner(self.kind)},
                 "timestamp": p.T0 + 5,
                 "postback": {"mid": "m_pb", "title": "Rastrear pedido", "payload": "TRACK"}}
        assert await self._post(harness, p.envelope([event], self.kind)) == 200
        stored = await ingest_gate.store.inbound(ingest_gate.results[-1].message_id)
        assert stored is not None
        assert (stored.provider_message_id, stored.text, stored.sent_at) == \
            ("m_pb", "Rastrear pedido", (p.T0 + 5) / 1000)

    async def test_a_batch_keeps_every_message_and_the_timestamps(
            self, harness: ServedWebhook, ingest_gate: IngestGate) -> None:
        events = [p.message(f"m_b{i}", f"90000000000{i:05d}", f"mensaje {i}",
                            at=p.T0 + i, kind=self.kind) for i in range(20)]
        assert await self._post(harness, p.envelope(events, self.kind)) == 200
        stored = [await ingest_gate.store.inbound(r.message_id) for r in ingest_gate.results]
        assert [(m.provider_message_id, m.sender_handle, m.thread_id, m.sent_at)
                for m in stored if m] == [
            (f"m_b{i}", f"90000000000{i:05d}", f"90000000000{i:05d}", (p.T0 + i) / 1000)
            for i in range(20)]

    # -- echoes and receipts ------------------------------------------------------------------

    async def test_an_echo_confirms_our_send_and_is_never_a_buyer_message(
            self, harness: ServedWebhook, ingest_gate: IngestGate, graph: GraphFake,
            kit_deliveries: KitDeliveries) -> None:
        conversation = await self._conversation(harness, ingest_gate)
        reply = await kit_deliveries.outbound(
            self._buyer_reply(harness, conversation, "Sale hoy", 60))
        mid = await harness.adapter.send(reply)
        stored = len(ingest_gate.results)
        echo = p.echo(mid, BUYER, "Sale hoy", at=int(time.time() * 1000), kind=self.kind)
        # Meta's echo can beat Graph's answer to us: it is kept and applied with the send.
        assert await self._post(harness, p.envelope([echo], self.kind)) == 200
        await kit_deliveries.sent(reply.reply_id, mid)
        found = await kit_deliveries.status(reply.reply_id)
        assert found is not None and found.state == "sent"
        # An echo of what someone typed in Meta's own inbox: acknowledged, nothing stored.
        other = p.echo("m_from_meta_inbox", BUYER, "te escribo desde Meta",
                       kind=self.kind)
        assert await self._post(harness, p.envelope([other], self.kind)) == 200
        assert len(ingest_gate.results) == stored
        adapter: Any = harness.adapter
        parsed = adapter.parse(None, p.encode(p.envelope([echo], self.kind)))
        assert parsed == [DeliveryUpdate("shop", mid, "sent", at=echo["timestamp"] / 1000)]

    async def test_watermarks_out_of_order_end_in_the_right_states(
            self, harness: ServedWebhook, ingest_gate: IngestGate,
            kit_deliveries: KitDeliveries) -> None:
        if self.kind != "page":
            pytest.skip("Instagram names the message it reports read (read.mid)")
        conversation = await self._conversation(harness, ingest_gate)
        sent: list[tuple[str, str]] = []
        for text in ("primero", "segundo", "tercero"):
            reply = await kit_deliveries.outbound(
                self._buyer_reply(harness, conversation, text, 60))
            mid = await harness.adapter.send(reply)
            await kit_deliveries.sent(reply.reply_id, mid)
            sent.append((reply.reply_id, mid))
        t = int(time.time() * 1000)
        # Meta's echoes give each send its exact time on Meta's clock.
        echoes = [p.echo(mid, BUYER, "x", at=t + 1000 * i) for i, (_, mid) in enumerate(sent)]
        assert await self._post(harness, p.envelope(echoes)) == 200

        async def states() -> list[str]:
            found = [await kit_deliveries.status(r) for r, _ in sent]
            return [f.state if f else "?" for f in found]

        # Read up to the first, then (late) delivered up to the second, by watermark only.
        assert await self._post(harness, p.envelope(
            [p.read(BUYER, watermark=t + 500, at=t + 600)])) == 200
        assert await states() == ["read", "sent", "sent"]
        assert await self._post(harness, p.envelope([p.delivery(BUYER, None, t + 1500)])) == 200
        assert await states() == ["read", "delivered", "sent"]
        # A delivery naming all three by mid, arriving after the read: read stays read.
        assert await self._post(harness, p.envelope(
            [p.delivery(BUYER, [m for _, m in sent], t + 2500)])) == 200
        assert await states() == ["read", "delivered", "delivered"]
        # Another buyer's read changes nothing of ours.
        assert await self._post(harness, p.envelope(
            [p.read("1111111111111111", watermark=t + 99_000)])) == 200
        assert await states() == ["read", "delivered", "delivered"]
        assert await self._post(harness, p.envelope([p.read(BUYER, watermark=t + 9000)])) == 200
        assert await states() == ["read", "read", "read"]

    # -- attachments through the fetch worker --------------------------------------------------

    async def test_attachments_are_downloaded_by_the_fetch_worker(
            self, harness: ServedWebhook, ingest_gate: IngestGate, graph: GraphFake,
            fetch_queue: FetchStore, attachment_store: AttachmentStore) -> None:
        pdf = b"%PDF-1.4\n" + b"0" * 2000
        graph.publish("m_att", BUYER, "Foto del paquete dañado", p.T0 / 1000,
                      [("image", "paquete.png", "image/png", PNG),
                       ("file", "factura.pdf", "application/pdf", pdf)])
        hook = p.envelope([p.message(
            "m_att", BUYER, "Foto del paquete dañado", kind=self.kind,
            attachments=[{"type": "image", "payload": {"url": f"{graph.url}/cdn/paquete.png"}},
                         {"type": "file", "payload": {"url": f"{graph.url}/cdn/factura.pdf"}}],
        )], self.kind)
        for _ in range(5):  # redelivered: one fetch
            assert await self._post(harness, hook) == 200
        assert ingest_gate.results == [] and graph.message_requests == 0  # answered first
        queue: Any = fetch_queue
        async with queue.running({"shop": harness.adapter}):
            for _ in range(200):
                if ingest_gate.results:
                    break
                await asyncio.sleep(0.01)
        assert len(ingest_gate.results) == 1 and graph.message_requests == 1
        stored = await ingest_gate.store.inbound(ingest_gate.results[0].message_id)
        assert stored is not None
        assert (stored.provider_message_id, stored.sender_handle, stored.text) == \
            ("m_att", BUYER, "Foto del paquete dañado")
        assert stored.sent_at == p.T0 / 1000
        assert [(a.name, a.content_type, a.size) for a in stored.attachments] == \
            [("paquete.png", "image/png", len(PNG)), ("factura.pdf", "application/pdf",
                                                      len(pdf))]
        refs = [a.storage_ref for a in stored.attachments]
        assert all(refs)
        assert [await attachment_store.get(r) for r in refs if r] == [PNG, pdf]

    async def test_a_file_that_cannot_be_downloaded_leaves_the_message_with_a_reason(
            self, harness: ServedWebhook, ingest_gate: IngestGate, graph: GraphFake) -> None:
        graph.publish("m_gone", BUYER, "", p.T0 / 1000, [("video", "v.mp4", "video/mp4",
                                                           b"")])
        graph.files.clear()  # the CDN link has expired
        items = await harness.adapter.fetch("m_gone")
        assert len(items) == 1
        message: Any = items[0]
        assert [(a.name, a.refused is not None) for a in message.attachments] == \
            [("v.mp4", True)]
        assert "404" in (message.attachments[0].refused or "")
        with pytest.raises(PermanentError, match="100"):
            await harness.adapter.fetch("m_never_published")

    # -- replies and windows ------------------------------------------------------------------

    async def test_the_messaging_type_follows_the_window(
            self, harness: ServedWebhook, ingest_gate: IngestGate, graph: GraphFake) -> None:
        conversation = await self._conversation(harness, ingest_gate)
        adapter = harness.adapter
        assert await adapter.send(self._buyer_reply(harness, conversation, "dentro", 3600))
        assert (graph.bodies[-1].messaging_type, graph.bodies[-1].tag) == ("RESPONSE", None)
        if self.human_agent_tag:
            # A tag inside 24 h is not needed: it goes as a plain response.
            assert await adapter.send(self._buyer_reply(harness, conversation, "dentro", 3600,
                                                        HUMAN_AGENT))
            assert graph.bodies[-1].messaging_type == "RESPONSE"
        now = time.time()
        window = adapter.reply_window(now - 2 * DAY, now)
        assert not window.open
        late = self._buyer_reply(harness, conversation, "dos días después", 2 * DAY)
        if self.human_agent_tag:
            # The agent sees the tag's window before typing.
            assert [w.tag for w in window.extended] == [HUMAN_AGENT]
            assert window.extended[0].closes_at == pytest.approx(now - 2 * DAY + 7 * DAY)
            with pytest.raises(WindowClosed, match=HUMAN_AGENT):
                await adapter.send(late)
            assert await adapter.send(msgspec.structs.replace(late, tag=HUMAN_AGENT))
            assert (graph.bodies[-1].messaging_type, graph.bodies[-1].tag) == \
                ("MESSAGE_TAG", HUMAN_AGENT)
        else:
            assert window.extended == () and window.template_required
            with pytest.raises(WindowClosed, match="nothing can be sent"):
                await adapter.send(late)
            with pytest.raises(ReplyRejected, match="takes no reply tag"):
                await adapter.send(msgspec.structs.replace(late, tag=HUMAN_AGENT))
        expired = self._buyer_reply(harness, conversation, "ocho días", 8 * DAY, HUMAN_AGENT
                              if self.human_agent_tag else None)
        with pytest.raises(WindowClosed, match="closed at"):
            await adapter.send(expired)
        assert len(graph.bodies) == (3 if self.human_agent_tag else 1)

    async def test_graphs_own_window_refusal_is_a_closed_window(
            self, harness: ServedWebhook, ingest_gate: IngestGate, graph: GraphFake) -> None:
        conversation = await self._conversation(harness, ingest_gate)
        # Meta's record of the buyer's last message is older than ours (a clock, a lost
        # webhook): Graph refuses with 10/2018278, and the agent gets the same refusal.
        graph.last_user_message[BUYER] = time.time() - 2 * DAY
        with pytest.raises(WindowClosed, match="2018278"):
            await harness.adapter.send(self._buyer_reply(harness, conversation, "hola", 60))
        assert graph.bodies == []

    async def test_the_text_limit_is_the_platforms(self, harness: ServedWebhook) -> None:
        assert harness.adapter.capabilities.max_text_length == \
            (2000 if self.kind == "page" else 1000)

    async def test_files_are_refused_before_any_request(
            self, harness: ServedWebhook, ingest_gate: IngestGate, graph: GraphFake) -> None:
        from channels.models import Attachment
        conversation = await self._conversation(harness, ingest_gate)
        reply = msgspec.structs.replace(
            self._buyer_reply(harness, conversation, "adjunto", 60),
            attachments=(Attachment("a.png", "image/png", 10, storage_ref="mem:x"),))
        with pytest.raises(ReplyRejected, match="not supported"):
            await harness.adapter.send(reply)
        assert graph.bodies == []

    async def test_a_file_over_the_limit_is_kept_as_a_refused_placeholder(
            self, harness: ServedWebhook, graph: GraphFake) -> None:
        settings = self.settings(graph, max_attachment_bytes=100)  # type: ignore[attr-defined]
        small = self.adapter_class("shop", settings, harness.adapter.context)
        graph.publish("m_big", BUYER, "mire", p.T0 / 1000,
                      [("image", "grande.png", "image/png", PNG)])
        items = await small.fetch("m_big")
        message: Any = items[0]
        assert message.text == "mire"
        [attachment] = message.attachments
        assert attachment.storage_ref is None and "100 bytes" in (attachment.refused or "")

    async def test_graph_trouble_during_a_fetch_is_retried(
            self, harness: ServedWebhook, graph: GraphFake) -> None:
        from channels.errors import AuthError, RetryableError
        graph.publish("m_r", BUYER, "hola", p.T0 / 1000, [])
        graph.token = "rotated"
        with pytest.raises(AuthError, match="190"):
            await harness.adapter.fetch_resource("m_r")
        await graph.server.close()  # type: ignore[union-attr]
        with pytest.raises(RetryableError):
            await harness.adapter.fetch_resource("m_r")

    async def test_a_send_graph_answered_without_an_id_is_not_sent_twice(
            self, harness: ServedWebhook, ingest_gate: IngestGate, graph: GraphFake) -> None:
        from aiohttp import web
        conversation = await self._conversation(harness, ingest_gate)
        graph.failures.append(web.Response(status=200, text="OK"))
        reply = self._buyer_reply(harness, conversation, "hola", 60)
        assert await harness.adapter.send(reply) == reply.reply_id
        graph.failures.append(web.Response(status=307, headers={"Location": "http://x/"}))
        with pytest.raises(PermanentError, match="redirect"):
            await harness.adapter.send(reply)
