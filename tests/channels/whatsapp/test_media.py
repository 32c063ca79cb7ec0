"""WhatsApp media through the fetch-after-notify stage: the webhook stores the message and
queues the media id and answers at once; the fetch worker asks ``GET /{media-id}`` for the URL
and downloads it with the access token; the file is stored as ``<wamid>/media`` in the same
conversation. Failures retry (5xx, a corrupt download) or stay failed for an operator (an
unknown media id); a file over the limit is kept as a placeholder with the reason."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from channels.models import InboundMessage
from channels.testing import IngestGate
from tests.channels.whatsapp import fixtures as f
from tests.channels.whatsapp.harness import WhatsAppHarness, WhatsAppKit
from tests.helpers import eventually

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 8
PDF = b"%PDF-1.7\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 20 + b"%%EOF\n"


async def messages(gate: IngestGate) -> list[InboundMessage]:
    found = []
    for result in gate.results:
        message = await gate.store.inbound(result.message_id)
        assert message is not None
        found.append(message)
    return found


async def stored_count(gate: IngestGate, n: int) -> list[InboundMessage]:
    async def check() -> list[InboundMessage] | None:
        found = await messages(gate)
        return found if len({m.provider_message_id for m in found}) >= n else None
    result: list[InboundMessage] = await eventually(check, timeout=10)
    return result


class TestMedia(WhatsAppKit):

    @pytest.fixture
    async def worker(self, harness: WhatsAppHarness) -> AsyncIterator[None]:
        async with harness.queue.running({harness.adapter.instance: harness.adapter}):
            yield

    async def test_an_image_is_acknowledged_first_then_fetched_with_the_token(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate) -> None:
        harness.graph.publish_media("1234567890", JPEG, "image/jpeg")
        harness.graph.hold.clear()  # Graph is slow: the webhook must not wait on it
        payload = f.image(f.BUYER_BR, "wamid.img-1", "1234567890", caption="Chegou quebrado",
                          sha256=hashlib.sha256(JPEG).hexdigest(), name="João")
        async with harness.queue.running({harness.adapter.instance: harness.adapter}):
            answer = await asyncio.wait_for(harness.post(payload), 5)
            assert answer.status == 200
            first = (await messages(ingest_gate))[0]
            assert (first.provider_message_id, first.text, first.attachments) == (
                "wamid.img-1", "Chegou quebrado", ())
            assert first.sender_name == "João"
            harness.graph.hold.set()
            found = await stored_count(ingest_gate, 2)
        media = found[-1]
        assert media.provider_message_id == "wamid.img-1/media"
        assert (media.thread_id, media.sender_handle, media.text) == (f.BUYER_BR, f.BUYER_BR,
                                                                      "")
        assert media.sent_at == float(f.TS)
        assert media.hints.phone_country == "BR"
        assert ingest_gate.results[0].conversation_id == ingest_gate.results[-1].conversation_id
        (attachment,) = media.attachments
        assert attachment.content_type == "image/jpeg" and attachment.size == len(JPEG)
        assert attachment.refused is None and attachment.storage_ref is not None
        assert await harness.attachments.get(attachment.storage_ref) == JPEG
        # The fake answers 401/404 without the bearer token, so both calls carried it.
        assert (harness.graph.media_requests, harness.graph.download_requests) == (1, 1)

    async def test_a_document_keeps_its_file_name(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate, worker: None) -> None:
        harness.graph.publish_media("99887766", PDF, "application/pdf")
        assert (await harness.post(f.document(f.BUYER_ES, "wamid.doc-1", "99887766",
                                              "factura-0042.pdf"))).status == 200
        found = await stored_count(ingest_gate, 2)
        assert found[0].text == "[document: factura-0042.pdf]"
        (attachment,) = found[-1].attachments
        assert (attachment.name, attachment.content_type) == ("factura-0042.pdf",
                                                              "application/pdf")

    async def test_a_long_non_ascii_file_name_still_fits_the_queue(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate, worker: None) -> None:
        harness.graph.publish_media("99887767", PDF, "application/pdf")
        name = "Fáctura " + "🧾" * 400 + ".pdf"
        assert (await harness.post(f.document(f.BUYER_ES, "wamid.doc-2", "99887767",
                                              name))).status == 200
        found = await stored_count(ingest_gate, 2)
        (attachment,) = found[-1].attachments
        assert attachment.name.startswith("Fáctura 🧾")
        assert attachment.size == len(PDF)

    async def test_a_redelivered_media_webhook_is_fetched_once(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate, worker: None) -> None:
        harness.graph.publish_media("555", JPEG, "image/jpeg")
        payload = f.image(f.BUYER_MX, "wamid.img-2", "555")
        for _ in range(5):
            assert (await harness.post(payload)).status == 200
        await stored_count(ingest_gate, 2)
        await asyncio.sleep(0.2)
        assert harness.graph.media_requests == 1
        ids = [m.provider_message_id for m in await messages(ingest_gate)]
        assert sorted(set(ids)) == ["wamid.img-2", "wamid.img-2/media"]

    async def test_metas_5xx_and_a_corrupt_download_are_retried(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate, worker: None) -> None:
        harness.graph.publish_media("556", JPEG, "image/jpeg")
        harness.graph.fail_next_media(500, 131000, "Something went wrong")
        harness.graph.fail_next_media(429, 130429, "Rate limit hit")
        harness.graph.corrupt_downloads = 1
        assert (await harness.post(f.image(f.BUYER_MX, "wamid.img-3", "556"))).status == 200
        found = await stored_count(ingest_gate, 2)
        assert found[-1].attachments[0].size == len(JPEG)
        assert harness.graph.media_requests == 4  # 500, 429, corrupt, good

    async def test_an_unknown_media_id_fails_and_is_kept_for_an_operator(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate, worker: None) -> None:
        assert (await harness.post(f.image(f.BUYER_MX, "wamid.img-4", "404404",
                                           caption="mire"))).status == 200

        async def failed() -> object:
            entries = await harness.queue.entries(harness.adapter.instance, "failed")
            return entries or None
        (entry,) = await eventually(failed)  # type: ignore[misc]
        assert "(#100) Invalid parameter" in (entry.last_error or "")
        assert "does not exist" in (entry.last_error or "")
        assert [m.text for m in await messages(ingest_gate)] == ["mire"]  # the message stays

    async def test_a_file_over_the_limit_is_a_placeholder_with_the_reason(
            self, harness: WhatsAppHarness, ingest_gate: IngestGate, worker: None) -> None:
        harness.graph.publish_media("557", JPEG, "image/jpeg", claimed_size=50 * 1024 * 1024)
        assert (await harness.post(f.image(f.BUYER_MX, "wamid.img-5", "557"))).status == 200
        found = await stored_count(ingest_gate, 2)
        (attachment,) = found[-1].attachments
        assert attachment.storage_ref is None
        assert attachment.refused is not None and "bytes" in attachment.refused
        assert harness.graph.download_requests == 0  # judged on Meta's file_size first
