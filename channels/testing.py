"""Conformance kit: the behavioural tests every channel adapter must pass.

A channel's test module subclasses ``ChannelConformance`` and supplies two things:

* ``inbound_cases()``: provider payloads with the normalized fields they must produce;
* a ``harness`` fixture: an async context that runs the adapter against the provider's real
  transport (a webhook POST, a local IMAP server, a fake Bot API server) and a fake provider
  endpoint for sends. It receives ``ingest_gate`` (the kit's ingest callback) and must start
  the adapter with it.

The test module must also provide a ``store`` fixture (a ``storage.store.Store`` on a real,
empty Redis); inboxhub's ``tests/conftest.py`` shows one.

Every test in the battery runs for every adapter: normalization, dedupe on redelivery,
acknowledge-only-after-store, send, error mapping to retryable/permanent, length limit and the
reply-window rule. Example: ``tests/channels/api/test_conformance.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import msgspec
import pytest

from channels.base import ChannelAdapter
from channels.errors import AuthError, PermanentError, RateLimited, ReplyRejected, RetryableError
from hub.models import InboundMessage, OutboundReply
from storage.store import IngestResult, Store

FailureKind = Literal["retryable", "rate_limited", "permanent", "auth"]


class InboundCase(msgspec.Struct, frozen=True):
    """One provider delivery and what it must normalize to."""

    name: str
    payload: Any
    provider_message_id: str
    thread_id: str
    sender_handle: str
    text: str
    sender_name: str | None = None


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


class IngestGate:
    """The kit's ingest callback: stores through the real Store, or fails when closed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.open = True
        self.results: list[IngestResult] = []
        self.refused = 0

    async def __call__(self, message: InboundMessage) -> IngestResult:
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
    def ingest_gate(self, store: Store) -> IngestGate:
        return IngestGate(store)

    # -- helpers ---------------------------------------------------------------------------

    async def _reply(self, harness: ConformanceHarness, gate: IngestGate, text: str,
                     *, last_inbound_at: float | None = None) -> OutboundReply:
        case = self.inbound_cases()[0]
        if not gate.results:
            assert await harness.deliver(case), "first delivery was not acknowledged"
        result = gate.results[0]
        conversation = await gate.store.get_conversation(result.conversation_id)
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
            stored = await ingest_gate.store.load_inbound(ingest_gate.results[-1].message_id)
            assert stored is not None, f"{case.name}: not in the store"
            assert stored.channel_type == harness.adapter.type_name
            assert stored.channel_instance == harness.adapter.instance
            assert stored.provider_message_id == case.provider_message_id
            assert stored.thread_id == case.thread_id
            assert stored.sender_handle == case.sender_handle
            assert stored.text == case.text
            if case.sender_name is not None:
                assert stored.sender_name == case.sender_name
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
        messages = await ingest_gate.store.get_messages(first.conversation_id)
        assert [m.provider_message_id for m in messages] == [case.provider_message_id]

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
