"""The core battery of the conformance kit: what every channel adapter must pass.

A channel's test module subclasses ``ChannelConformance`` and supplies two things:

* ``inbound_cases()``: provider payloads with the normalized fields they must produce;
* a ``harness`` fixture: an async context that runs the adapter against the provider's real
  transport (a webhook POST, a local IMAP server, a fake Bot API server) and a fake provider
  endpoint for sends. It receives ``ingest_gate`` (the kit's ingest callback) and must start
  the adapter with it.

The kit stores what the adapter ingests in a ``kit_store`` fixture (a ``KitStore``). By default
it is ``MemoryKitStore``, so a plugin author runs the kit with nothing but pytest; inboxhub's
own channels override the fixture with the real Redis-backed store (``storage.kit.StoreKit``,
see ``tests/channels/conftest.py``).

Every test in the battery runs for every adapter: normalization, dedupe on redelivery,
acknowledge-only-after-store, send, error mapping to retryable/permanent, length limit and the
reply-window rule. Example: ``tests/channels/api/test_conformance.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import msgspec
import pytest

from channels.base import ChannelAdapter, IngestOutcome
from channels.errors import AuthError, PermanentError, RateLimited, ReplyRejected, RetryableError
from channels.models import InboundMessage, OutboundReply

FailureKind = Literal["retryable", "rate_limited", "permanent", "auth"]

HTTP_FAILURES: dict[str, tuple[int, dict[str, str]]] = {
    "retryable": (503, {}),
    "rate_limited": (429, {"Retry-After": "7"}),
    "permanent": (400, {}),
    "auth": (401, {}),
}
"""What each ``FailureKind`` looks like from an HTTP provider (status, headers), for the
fake provider's ``fail_next_send``: ``map_http_error`` turns each back into its error class."""


class InboundCase(msgspec.Struct, frozen=True):
    """One provider delivery and what it must normalize to."""

    name: str
    payload: Any
    provider_message_id: str
    thread_id: str
    sender_handle: str
    text: str
    sender_name: str | None = None
    # The provider id of the message this one answers, when the provider says (a reply).
    reply_to: str | None = None


class SentRecord(msgspec.Struct, frozen=True):
    """What the fake provider received for one send."""

    recipient: str
    text: str
    thread_id: str | None = None


class ConformanceHarness(Protocol):
    adapter: ChannelAdapter

    async def deliver(self, case: InboundCase) -> bool:
        """Deliver over the real transport; True when the provider saw an acknowledgement."""
        ...

    def sent(self) -> list[SentRecord]:
        """Everything the fake provider accepted, in order."""
        ...

    def fail_next_send(self, kind: FailureKind) -> None:
        """Make the provider answer the next send with that kind of failure."""
        ...


class KitConversation(msgspec.Struct, frozen=True):
    """What the kit needs to know about a stored conversation."""

    id: str
    thread_id: str
    contact_handle: str
    last_inbound_at: float | None
    provider_message_ids: tuple[str, ...]


class KitStore(Protocol):
    """Where the kit's ingest puts messages: the hub's store, or ``MemoryKitStore``."""

    async def ingest(self, message: InboundMessage) -> IngestOutcome: ...

    async def inbound(self, message_id: str) -> InboundMessage | None: ...

    async def conversation(self, conversation_id: str) -> KitConversation | None: ...


class MemoryOutcome(msgspec.Struct, frozen=True):
    message_id: str
    conversation_id: str
    duplicate: bool


class MemoryKitStore:
    """An in-memory store with the hub's ingest semantics: one message per
    ``(channel instance, provider message id)``, one conversation per ``(instance, thread)``."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], MemoryOutcome] = {}
        self._threads: dict[tuple[str, str], str] = {}
        self._messages: dict[str, InboundMessage] = {}
        self._conversations: dict[str, list[str]] = {}
        self._next = 0

    def _id(self, kind: str) -> str:
        self._next += 1
        return f"{kind}-{self._next}"

    async def ingest(self, message: InboundMessage) -> IngestOutcome:
        key = (message.channel_instance, message.provider_message_id)
        if key in self._seen:
            return msgspec.structs.replace(self._seen[key], duplicate=True)
        if not message.received_at:
            message = msgspec.structs.replace(message, received_at=time.time())
        thread = (message.channel_instance, message.thread_id)
        conversation_id = self._threads.setdefault(thread, self._id("conversation"))
        message_id = self._id("message")
        self._messages[message_id] = message
        self._conversations.setdefault(conversation_id, []).append(message_id)
        outcome = MemoryOutcome(message_id, conversation_id, duplicate=False)
        self._seen[key] = outcome
        return outcome

    async def inbound(self, message_id: str) -> InboundMessage | None:
        return self._messages.get(message_id)

    async def conversation(self, conversation_id: str) -> KitConversation | None:
        ids = self._conversations.get(conversation_id)
        if not ids:
            return None
        messages = [self._messages[i] for i in ids]
        return KitConversation(
            id=conversation_id, thread_id=messages[0].thread_id,
            contact_handle=messages[0].sender_handle,
            last_inbound_at=max(_inbound_at(m) for m in messages),
            provider_message_ids=tuple(m.provider_message_id for m in messages))


def _inbound_at(message: InboundMessage) -> float:
    """When the buyer wrote, as the hub's store counts it: the provider's time of the message
    (``sent_at``), never later than its arrival."""
    sent = message.sent_at
    if sent is None or not math.isfinite(sent) or sent <= 0:
        return message.received_at
    return min(sent, message.received_at)


class IngestGate:
    """The kit's ingest callback: stores through the kit's store, or fails when closed."""

    def __init__(self, store: KitStore) -> None:
        self.store = store
        self.open = True
        self.results: list[IngestOutcome] = []
        self.refused = 0

    async def __call__(self, message: InboundMessage) -> IngestOutcome:
        if not self.open:
            self.refused += 1
            raise ConnectionError("store unavailable (closed by the conformance kit)")
        result = await self.store.ingest(message)
        self.results.append(result)
        return result


class ChannelConformance:
    """Subclass in ``tests/channels/<name>/test_conformance.py``; see the module docstring."""

    def inbound_cases(self) -> list[InboundCase]:
        raise NotImplementedError("return at least one InboundCase")

    @pytest.fixture
    async def harness(self, ingest_gate: IngestGate) -> AsyncIterator[ConformanceHarness]:
        raise NotImplementedError("provide a harness fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def kit_store(self) -> KitStore:
        """Override to run the kit on a real store (inboxhub's channels do)."""
        return MemoryKitStore()

    @pytest.fixture
    def ingest_gate(self, kit_store: KitStore) -> IngestGate:
        return IngestGate(kit_store)

    # -- helpers ---------------------------------------------------------------------------

    async def _reply(self, harness: ConformanceHarness, gate: IngestGate, text: str,
                     *, last_inbound_at: float | None = None) -> OutboundReply:
        case = self.inbound_cases()[0]
        if not gate.results:
            assert await harness.deliver(case), "first delivery was not acknowledged"
        result = gate.results[0]
        conversation = await gate.store.conversation(result.conversation_id)
        assert conversation is not None
        return OutboundReply(
            reply_id=f"kit-{time.time_ns()}",
            conversation_id=conversation.id,
            channel_type=harness.adapter.type_name,
            channel_instance=harness.adapter.instance,
            thread_id=conversation.thread_id,
            recipient_handle=conversation.contact_handle,
            text=text,
            in_reply_to=case.provider_message_id,
            last_inbound_at=(
                conversation.last_inbound_at if last_inbound_at is None else last_inbound_at
            ),
        )

    # -- the battery -----------------------------------------------------------------------

    async def test_normalizes_inbound(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        for case in self.inbound_cases():
            before = len(ingest_gate.results)
            assert await harness.deliver(case), f"{case.name}: not acknowledged"
            assert len(ingest_gate.results) == before + 1, f"{case.name}: not ingested once"
            stored = await ingest_gate.store.inbound(ingest_gate.results[-1].message_id)
            assert stored is not None, f"{case.name}: not in the store"
            assert stored.channel_type == harness.adapter.type_name
            assert stored.channel_instance == harness.adapter.instance
            assert stored.provider_message_id == case.provider_message_id
            assert stored.thread_id == case.thread_id
            assert stored.sender_handle == case.sender_handle
            assert stored.text == case.text
            if case.sender_name is not None:
                assert stored.sender_name == case.sender_name
            if case.reply_to is not None:
                assert stored.reply_to == case.reply_to, f"{case.name}: reply_to"
            assert stored.received_at > 0

    async def test_redelivery_is_deduplicated(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        case = self.inbound_cases()[0]
        for _ in range(3):
            assert await harness.deliver(case), "a redelivery must still be acknowledged"
        first, *repeats = ingest_gate.results
        assert not first.duplicate
        assert repeats and all(r.duplicate for r in repeats)
        assert {r.message_id for r in ingest_gate.results} == {first.message_id}
        conversation = await ingest_gate.store.conversation(first.conversation_id)
        assert conversation is not None
        assert conversation.provider_message_ids == (case.provider_message_id,)

    async def test_acknowledges_only_after_store(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        case = self.inbound_cases()[0]
        ingest_gate.open = False
        assert not await harness.deliver(case), "acknowledged a message that was not stored"
        assert ingest_gate.refused >= 1 and not ingest_gate.results
        ingest_gate.open = True
        assert await harness.deliver(case), "the provider's redelivery was not acknowledged"
        assert len(ingest_gate.results) == 1 and not ingest_gate.results[0].duplicate

    async def test_send_reaches_provider(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        reply = await self._reply(harness, ingest_gate, "Gracias, su pedido sale hoy. 📦")
        provider_id = await harness.adapter.send(reply)
        assert isinstance(provider_id, str) and provider_id
        sent = harness.sent()
        assert len(sent) == 1
        assert sent[0].text == reply.text
        assert sent[0].recipient == reply.recipient_handle

    @pytest.mark.parametrize(
        ("kind", "expected", "not_expected"),
        [
            ("retryable", RetryableError, PermanentError),
            ("rate_limited", RateLimited, PermanentError),
            ("permanent", PermanentError, RetryableError),
            ("auth", AuthError, RetryableError),
        ],
    )
    async def test_error_mapping(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kind: FailureKind,
        expected: type[Exception], not_expected: type[Exception],
    ) -> None:
        reply = await self._reply(harness, ingest_gate, "hello")
        harness.fail_next_send(kind)
        with pytest.raises(expected) as info:
            await harness.adapter.send(reply)
        assert not isinstance(info.value, not_expected)
        if kind == "rate_limited":
            assert isinstance(info.value, RateLimited) and info.value.retry_after is not None
        assert harness.sent() == []
        # The failure was one-off: the same reply goes through afterwards.
        assert await harness.adapter.send(reply)
        assert len(harness.sent()) == 1

    async def test_length_limit(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        limit = harness.adapter.capabilities.max_text_length
        too_long = await self._reply(harness, ingest_gate, "a" * (limit + 1))
        with pytest.raises(ReplyRejected):
            await harness.adapter.send(too_long)
        assert harness.sent() == [], "an over-long reply reached the provider"
        exact = msgspec.structs.replace(too_long, text="a" * limit)
        assert await harness.adapter.send(exact)
        assert len(harness.sent()) == 1

    async def test_reply_window(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        window = harness.adapter.capabilities.reply_window_seconds
        now = time.time()
        if window is None:
            old = await self._reply(harness, ingest_gate, "late but allowed",
                                    last_inbound_at=now - 90 * 86400)
            assert await harness.adapter.send(old)
            assert len(harness.sent()) == 1
            return
        closed = await self._reply(harness, ingest_gate, "too late",
                                   last_inbound_at=now - window - 60)
        with pytest.raises(ReplyRejected):
            await harness.adapter.send(closed)
        assert harness.sent() == []
        inside = msgspec.structs.replace(closed, last_inbound_at=now - window + 60)
        assert await harness.adapter.send(inside)
        assert len(harness.sent()) == 1
