"""The attachment battery: mix ``AttachmentBattery`` into a ``ChannelConformance`` subclass.

Inbound, through the real transport: an image is stored (its type judged on the bytes, its
name stripped of any path) and can be read back; a file over the channel's limit and a file
whose bytes are not an allowed type (a Windows executable declared ``image/png``) are refused
with the reason, either by refusing the delivery (a 413/415 the sender sees) or by keeping the
message with the attachment marked ``refused``; nothing of the refused file is stored.
Outbound: a reply's attachment reaches the provider byte for byte where the channel takes
attachments, and one over the limit, of a refused type or one too many is refused before any
request (or every attachment is refused where the channel takes none).

The test class provides ``attachment_case(name, content_type, data)`` (a provider delivery
carrying that file) and a harness that is an ``AttachmentHarness``; the adapter's context
gets the ``attachment_store`` fixture, ``MemoryAttachmentStore`` unless overridden (inboxhub's
own channels run it on ``storage.attachments``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol, runtime_checkable

import msgspec
import pytest

from channels.attachments import safe_name
from channels.errors import ReplyRejected
from channels.models import Attachment, OutboundReply
from channels.services.attachments import AttachmentStore
from channels.testing.core import ConformanceHarness, InboundCase, IngestGate

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
EXECUTABLE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(512)


class MemoryAttachmentStore:
    """Content-addressed bytes in a dict: the kit's attachment store, no disk, no Redis."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    async def put(self, data: bytes, *, name: str, content_type: str) -> Attachment:
        ref = "mem:" + hashlib.sha256(data).hexdigest()
        self.files[ref] = data
        return Attachment(name=safe_name(name), content_type=content_type, size=len(data),
                          storage_ref=ref)

    async def get(self, storage_ref: str) -> bytes | None:
        return self.files.get(storage_ref)

    async def delete(self, storage_ref: str) -> None:
        self.files.pop(storage_ref, None)


@runtime_checkable
class AttachmentHarness(Protocol):
    async def deliver_answer(self, case: InboundCase) -> tuple[bool, str]:
        """Deliver; (acknowledged, the answer's body as text)."""
        ...

    def sent_attachments(self) -> list[list[tuple[str, str, bytes]]]:
        """Per accepted send, its files as (name, content type, bytes)."""
        ...


class AttachmentBattery:
    """Inbound and outbound attachments, limits and types."""

    @pytest.fixture
    def attachment_store(self) -> AttachmentStore:
        """Override to run the battery on a real store."""
        return MemoryAttachmentStore()

    def attachment_case(self, name: str, content_type: str, data: bytes) -> InboundCase:
        raise NotImplementedError("return a delivery that carries this file")

    def _harness(self, harness: ConformanceHarness) -> AttachmentHarness:
        assert isinstance(harness, AttachmentHarness), \
            "the attachment battery needs deliver_answer() and sent_attachments()"
        return harness

    async def _stored_files(self, store: AttachmentStore, refs: list[str]) -> list[bytes]:
        return [data for ref in refs if (data := await store.get(ref)) is not None]

    async def _refused(self, harness: ConformanceHarness, gate: IngestGate,
                       case: InboundCase) -> str:
        """The reason the file was refused, however the channel says it."""
        acknowledged, answer = await self._harness(harness).deliver_answer(case)
        if not acknowledged:
            assert not gate.results, "a refused delivery was stored"
            return answer
        stored = await gate.store.inbound(gate.results[-1].message_id)
        assert stored is not None and stored.attachments, "the attachment vanished"
        [attachment] = stored.attachments
        assert attachment.storage_ref is None and attachment.refused, \
            "an attachment over the limits was kept"
        return attachment.refused

    async def test_inbound_image_is_stored(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        attachment_store: AttachmentStore,
    ) -> None:
        if not harness.adapter.capabilities.attachments:
            pytest.skip("the channel takes no attachments")
        case = self.attachment_case("../../etc/foto del pedido.png", "image/png", PNG)
        acknowledged, answer = await self._harness(harness).deliver_answer(case)
        assert acknowledged, answer
        stored = await ingest_gate.store.inbound(ingest_gate.results[-1].message_id)
        assert stored is not None
        [attachment] = stored.attachments
        assert attachment.name == "foto del pedido.png"  # no path from the sender's name
        assert attachment.content_type == "image/png" and attachment.size == len(PNG)
        assert attachment.storage_ref is not None and attachment.refused is None
        assert await attachment_store.get(attachment.storage_ref) == PNG

    async def test_oversized_file_is_refused_with_the_reason(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        attachment_store: AttachmentStore,
    ) -> None:
        policy = harness.adapter.attachment_policy
        if not harness.adapter.capabilities.attachments:
            pytest.skip("the channel takes no attachments")
        big = PNG + bytes(policy.max_bytes + 1 - len(PNG))
        reason = await self._refused(
            harness, ingest_gate, self.attachment_case("big.png", "image/png", big))
        assert str(policy.max_bytes) in reason and "limit" in reason, reason
        assert await attachment_store.get(
            "sha256:" + hashlib.sha256(big).hexdigest()) is None
        assert await attachment_store.get("mem:" + hashlib.sha256(big).hexdigest()) is None

    async def test_wrong_type_is_refused_with_the_reason(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        attachment_store: AttachmentStore,
    ) -> None:
        policy = harness.adapter.attachment_policy
        if not harness.adapter.capabilities.attachments or not policy.types:
            pytest.skip("the channel takes no attachments, or any type")
        reason = await self._refused(
            harness, ingest_gate, self.attachment_case("photo.png", "image/png", EXECUTABLE))
        assert "application/octet-stream" in reason, reason  # judged on the bytes
        assert await attachment_store.get(
            "sha256:" + hashlib.sha256(EXECUTABLE).hexdigest()) is None

    async def _file_reply(self, harness: ConformanceHarness, gate: IngestGate,
                          files: tuple[Attachment, ...]) -> OutboundReply:
        if not gate.results:
            assert await harness.deliver(self.attachment_case("a.txt", "text/plain", b"hi"))
        conversation = await gate.store.conversation(gate.results[0].conversation_id)
        assert conversation is not None
        return OutboundReply(
            reply_id=f"kit-{time.time_ns()}", conversation_id=conversation.id,
            channel_type=harness.adapter.type_name, channel_instance=harness.adapter.instance,
            thread_id=conversation.thread_id, recipient_handle=conversation.contact_handle,
            text="Adjunto la etiqueta", last_inbound_at=time.time(), attachments=files)

    async def test_outbound_attachment_reaches_the_provider(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        attachment_store: AttachmentStore,
    ) -> None:
        stored = await attachment_store.put(PNG, name="etiqueta.png", content_type="image/png")
        reply = await self._file_reply(harness, ingest_gate, (stored,))
        if not harness.adapter.capabilities.attachments:
            with pytest.raises(ReplyRejected, match="does not accept attachments"):
                await harness.adapter.send(reply)
            assert harness.sent() == []
            return
        assert await harness.adapter.send(reply)
        assert self._harness(harness).sent_attachments() == [
            [("etiqueta.png", "image/png", PNG)]]

    async def test_outbound_attachments_over_the_limits_are_refused(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        attachment_store: AttachmentStore,
    ) -> None:
        adapter = harness.adapter
        if not adapter.capabilities.attachments:
            pytest.skip("the channel takes no attachments (see the test above)")
        policy = adapter.attachment_policy
        stored = await attachment_store.put(PNG, name="ok.png", content_type="image/png")
        wrong = [
            (msgspec.structs.replace(stored, size=policy.max_bytes + 1),),
            (stored,) * (policy.max_count + 1),
            (msgspec.structs.replace(stored, storage_ref=None),),
        ]
        if policy.types:
            wrong.append((msgspec.structs.replace(stored,
                                                  content_type="application/x-msdownload"),))
        for files in wrong:
            reply = await self._file_reply(harness, ingest_gate, files)
            with pytest.raises(ReplyRejected):
                await adapter.send(reply)
        assert harness.sent() == []
