"""The conformance kit's services on real Redis: inboxhub's own channels run the kit through
the hub's ``Store`` (the same atomic ingest, quarantine and delivery index the service uses),
not the kit's in-memory ones."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from channels.base import IngestOutcome
from channels.models import InboundMessage, OutboundReply
from channels.testing import KitConversation
from channels.testing.receipts import KitDelivery
from channels.testing.webhooks import QuarantinedInput
from storage import keys
from storage.deliveries import RedisDeliveries
from storage.store import Store


class StoreKit:
    """``channels.testing.KitStore`` over ``storage.store.Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def ingest(self, message: InboundMessage) -> IngestOutcome:
        return await self.store.ingest(message)

    async def inbound(self, message_id: str) -> InboundMessage | None:
        return await self.store.load_inbound(message_id)

    async def conversation(self, conversation_id: str) -> KitConversation | None:
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            return None
        messages = await self.store.get_messages(conversation_id)
        return KitConversation(
            id=conversation.id, thread_id=conversation.thread_id,
            contact_handle=conversation.contact_handle,
            last_inbound_at=conversation.last_inbound_at,
            provider_message_ids=tuple(m.provider_message_id or "" for m in messages
                                       if m.direction == "in"))


class StoreQuarantine:
    """``channels.testing.webhooks.KitQuarantine`` over the hub's quarantine."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, channel_instance: str, raw: bytes, error: str, *,
                       headers: Mapping[str, str] | None = None) -> str:
        return await self.store.quarantine(channel_instance, raw, error, headers=headers)

    async def entries(self) -> list[QuarantinedInput]:
        log = self.store.quarantine_log
        found = []
        for entry in reversed(await self.store.list_quarantine(limit=1000)):
            kept = await log.get(entry.id)
            if kept is not None:
                found.append(QuarantinedInput(kept.channel_instance, kept.raw, kept.error,
                                              dict(kept.headers)))
        return found


class StoreDeliveries(RedisDeliveries):
    """``channels.testing.receipts.KitDeliveries``: the hub's delivery index and the store's
    side of a send (the reply is queued and claimed like the sender does)."""

    async def outbound(self, reply: OutboundReply) -> OutboundReply:
        k = self.store.keys_for(reply.conversation_id)
        assert k is not None, "the kit's conversation is not in this store"
        reply = msgspec.structs.replace(reply, reply_id=keys.new_id(k.partition))
        await self.store.enqueue_reply(reply)
        verdict, _attempts = await self.store.claim_send(reply.reply_id, lease_seconds=60,
                                                         owner="conformance-kit")
        assert verdict == "send", verdict
        return reply

    async def sent(self, message_id: str, provider_message_id: str) -> None:
        await self.store.mark_sent(message_id, provider_message_id)

    async def status(self, message_id: str) -> KitDelivery | None:
        view = await self.store.get_message(message_id)
        if view is None:
            return None
        return KitDelivery(view.status, view.error, view.status_at)
