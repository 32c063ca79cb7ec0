"""The delivery-receipts battery: a channel's status callbacks end in the right state.

Mix ``ReceiptsBattery`` into the conformance class of a channel whose provider reports what
became of a message (``Capabilities.delivery_receipts``). Besides the core harness the test
class provides:

* ``receipt_body(provider_message_id, state, error)``: the provider's status callback for one
  of our messages, as bytes (built from a recorded payload in ``fixtures/``, with the id and
  state put in), and ``receipt_path``, the sub-path it is posted to ("" for the main URL);
* a harness that also satisfies ``channels.testing.webhooks.WebhookHarness`` (``request`` and
  ``signed_headers``), its adapter's ``context.deliveries`` being the ``kit_deliveries``
  fixture.

``kit_deliveries`` is ``MemoryDeliveries`` by default: the hub's rules (``channels.services.
receipts``) in memory, so a plugin author needs no Redis; inboxhub's channels override it with
``storage.kit.StoreDeliveries`` (the hub's index and Lua step on real Redis).

The battery checks that receipts out of order end in the latest state (a late ``delivered``
never overwrites ``read``), that a receipt which beats the send is applied once the send is
recorded, that ``failed`` shows the provider's reason, that a failure after ``delivered`` is
stale, and that a receipt for a message nobody knows is acknowledged and changes nothing.
"""

from __future__ import annotations

import time
from typing import Protocol, cast

import msgspec
import pytest

from channels.models import DeliveryState, DeliveryUpdate, OutboundReply
from channels.services.receipts import DeliveryIndex, supersedes
from channels.testing.core import ConformanceHarness, IngestGate
from channels.testing.webhooks import WebhookHarness


class KitDelivery(msgspec.Struct, frozen=True):
    """What the inbox shows for an outbound message."""

    state: str
    error: str | None = None
    at: float | None = None


class KitDeliveries(DeliveryIndex, Protocol):
    """The delivery index plus the hub's side of a send, so the kit can play the sender."""

    async def outbound(self, reply: OutboundReply) -> OutboundReply:
        """Store ``reply`` as being sent (the hub's store may give it a new id)."""
        ...

    async def sent(self, message_id: str, provider_message_id: str) -> None:
        """The send returned ``provider_message_id`` (``Store.mark_sent``)."""
        ...

    async def status(self, message_id: str) -> KitDelivery | None: ...


class _Message(msgspec.Struct):
    instance: str
    state: str = "sending"
    provider_id: str | None = None
    error: str | None = None
    at: float | None = None


class MemoryDeliveries:
    """``KitDeliveries`` in memory, with the hub's rules; parked receipts never expire here."""

    def __init__(self) -> None:
        self._messages: dict[str, _Message] = {}
        self._index: dict[tuple[str, str], str] = {}
        self._parked: dict[tuple[str, str], list[DeliveryUpdate]] = {}

    async def outbound(self, reply: OutboundReply) -> OutboundReply:
        self._messages[reply.reply_id] = _Message(reply.channel_instance)
        return reply

    async def sent(self, message_id: str, provider_message_id: str) -> None:
        message = self._messages[message_id]
        message.state, message.provider_id = "sent", provider_message_id
        message.error, message.at = None, time.time()
        self._index[(message.instance, provider_message_id)] = message_id
        for ref in dict.fromkeys((provider_message_id, message_id)):
            for update in self._parked.pop((message.instance, ref), []):
                self._advance(message_id, update)

    async def status(self, message_id: str) -> KitDelivery | None:
        message = self._messages.get(message_id)
        if message is None:
            return None
        return KitDelivery(message.state, message.error, message.at)

    async def apply(self, update: DeliveryUpdate) -> bool:
        key = (update.channel_instance, update.provider_message_id)
        message_id = self._index.get(key)
        if message_id is None:
            mine = self._messages.get(update.provider_message_id)
            if mine is not None and mine.instance == update.channel_instance:
                message_id = update.provider_message_id
                if mine.provider_id is None:
                    self._parked.setdefault(key, []).append(update)
                    return False
        if message_id is None:
            self._parked.setdefault(key, []).append(update)
            return False
        return self._advance(message_id, update)

    def _advance(self, message_id: str, update: DeliveryUpdate) -> bool:
        message = self._messages[message_id]
        if update.provider_message_id not in (message.provider_id, message_id):
            return False  # about an earlier attempt
        if not supersedes(update.state, message.state):
            return False
        message.state = update.state
        message.at = update.at if update.at is not None else time.time()
        message.error = (update.error or "the provider reported the message as not "
                         "delivered") if update.state == "failed" else None
        return True


class _Kit(Protocol):
    async def _reply(self, harness: ConformanceHarness, gate: IngestGate, text: str, *,
                     last_inbound_at: float | None = None) -> OutboundReply: ...


class ReceiptsBattery:
    """Mix into a ``ChannelConformance`` subclass (see the module doc)."""

    receipt_path: str = ""
    # States the provider reports; the cases that need another one are skipped.
    receipt_states: tuple[DeliveryState, ...] = ("sent", "delivered", "read", "failed")
    failure_reason: str = "the handset is unreachable"

    def receipt_body(self, provider_message_id: str, state: DeliveryState,
                     error: str | None = None) -> bytes:
        raise NotImplementedError("return the provider's status callback for this message")

    @pytest.fixture
    def kit_deliveries(self) -> KitDeliveries:
        """Override to run on the hub's delivery index (inboxhub's channels do)."""
        return MemoryDeliveries()

    def _need(self, *states: DeliveryState) -> None:
        missing = [s for s in states if s not in self.receipt_states]
        if missing:
            pytest.skip(f"the provider reports no {', '.join(missing)}")

    async def _sent_reply(self, harness: ConformanceHarness, gate: IngestGate,
                          deliveries: KitDeliveries, *, record: bool = True) -> tuple[str, str]:
        """A reply sent through the adapter: (our message id, the provider's id)."""
        reply = await cast(_Kit, self)._reply(harness, gate, "¿Le llegó el paquete?")
        reply = await deliveries.outbound(reply)
        provider_id = await harness.adapter.send(reply)
        if record:
            await deliveries.sent(reply.reply_id, provider_id)
        return reply.reply_id, provider_id

    async def _report(self, harness: ConformanceHarness, provider_id: str,
                      state: DeliveryState, error: str | None = None) -> None:
        body = self.receipt_body(provider_id, state, error)
        web = cast(WebhookHarness, harness)
        answer = await web.request("POST", self.receipt_path, body,
                                   web.signed_headers(body, self.receipt_path))
        assert 200 <= answer.status < 300, f"{state} receipt answered {answer.status}"

    async def _state(self, deliveries: KitDeliveries, message_id: str) -> KitDelivery:
        found = await deliveries.status(message_id)
        assert found is not None, "the sent message is gone"
        return found

    async def test_receipts_out_of_order_end_in_the_latest_state(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        kit_deliveries: KitDeliveries,
    ) -> None:
        self._need("delivered", "read")
        mid, pid = await self._sent_reply(harness, ingest_gate, kit_deliveries)
        await self._report(harness, pid, "read")
        await self._report(harness, pid, "delivered")  # late: must not overwrite read
        if "sent" in self.receipt_states:
            await self._report(harness, pid, "sent")
        assert (await self._state(kit_deliveries, mid)).state == "read"

    async def test_a_receipt_before_the_send_returned_is_applied_with_it(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        kit_deliveries: KitDeliveries,
    ) -> None:
        self._need("delivered")
        mid, pid = await self._sent_reply(harness, ingest_gate, kit_deliveries, record=False)
        await self._report(harness, pid, "delivered")  # the hub has not recorded the id yet
        assert (await self._state(kit_deliveries, mid)).state not in ("delivered", "read")
        await kit_deliveries.sent(mid, pid)
        assert (await self._state(kit_deliveries, mid)).state == "delivered"

    async def test_failed_shows_the_providers_reason(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        kit_deliveries: KitDeliveries,
    ) -> None:
        self._need("failed")
        mid, pid = await self._sent_reply(harness, ingest_gate, kit_deliveries)
        await self._report(harness, pid, "failed", self.failure_reason)
        found = await self._state(kit_deliveries, mid)
        assert found.state == "failed"
        assert found.error is not None and self.failure_reason in found.error

    async def test_a_failure_after_delivered_is_stale(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        kit_deliveries: KitDeliveries,
    ) -> None:
        self._need("delivered", "failed")
        mid, pid = await self._sent_reply(harness, ingest_gate, kit_deliveries)
        await self._report(harness, pid, "delivered")
        await self._report(harness, pid, "failed", self.failure_reason)
        found = await self._state(kit_deliveries, mid)
        assert (found.state, found.error) == ("delivered", None)

    async def test_a_receipt_for_an_unknown_message_is_acknowledged_and_changes_nothing(
        self, harness: ConformanceHarness, ingest_gate: IngestGate,
        kit_deliveries: KitDeliveries,
    ) -> None:
        mid, _pid = await self._sent_reply(harness, ingest_gate, kit_deliveries)
        before, stored = await self._state(kit_deliveries, mid), len(ingest_gate.results)
        state = self.receipt_states[-1]
        await self._report(harness, "never-sent-by-this-hub", state,
                           self.failure_reason if state == "failed" else None)
        assert await self._state(kit_deliveries, mid) == before
        assert len(ingest_gate.results) == stored, "a receipt was stored as a buyer message"
