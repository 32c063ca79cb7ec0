"""The conformance kit's store on real Redis: inboxhub's own channels run the kit through the
hub's ``Store`` (the same atomic ingest the service uses), not the kit's in-memory one."""

from __future__ import annotations

from channels.base import IngestOutcome
from channels.models import InboundMessage
from channels.testing import KitConversation
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
