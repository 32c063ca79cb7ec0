"""The normalized message family shared from adapter to API.

Adapters produce ``InboundMessage``; the API and the web inbox read ``Conversation`` and
``MessageView``; the sender hands ``OutboundReply`` to an adapter. All are frozen msgspec Structs:
msgpack in Redis, JSON on the API, one schema published in the OpenAPI document.

Times are UNIX seconds (float, UTC). Mutable facts (status, assignee, delivery) live in the store
next to the frozen payload, never inside it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Direction = Literal["in", "out"]
DeliveryState = Literal["received", "queued", "sending", "sent", "delivered", "read", "failed"]
ConversationStatus = Literal["new", "queued", "assigned", "resolved"]


class Attachment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A file attached to a message; the bytes live elsewhere (``storage_ref``)."""

    name: str
    content_type: str
    size: int
    storage_ref: str | None = None


class ChannelHints(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the channel knows about the buyer before any text is read.

    Routing fuses these with text classification: a Telegram ``language_code``, a Mercado Libre
    site such as ``MLB``, an Amazon relay domain, a phone's country.
    """

    language: str | None = None
    market: str | None = None
    marketplace_site: str | None = None
    phone_country: str | None = None
    order_id: str | None = None


class InboundMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One buyer message as an adapter normalized it.

    ``(channel_instance, provider_message_id)`` is the idempotency key; ``thread_id`` groups
    messages into a conversation (email thread, chat id, Mercado Libre pack).
    """

    channel_type: str
    channel_instance: str
    provider_message_id: str
    thread_id: str
    sender_handle: str
    text: str
    sender_name: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    sent_at: float | None = None
    received_at: float = 0.0
    hints: ChannelHints = ChannelHints()
    raw_ref: str | None = None


class OutboundReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """An agent's reply on its way to the provider.

    ``reply_id`` is ours and stable across retries so a provider that supports idempotency (or an
    operator's endpoint) can drop a resend. ``last_inbound_at`` lets an adapter enforce its reply
    window without reading the store.
    """

    reply_id: str
    conversation_id: str
    channel_type: str
    channel_instance: str
    thread_id: str
    recipient_handle: str
    text: str
    author: str | None = None
    in_reply_to: str | None = None
    last_inbound_at: float | None = None
    attachments: tuple[Attachment, ...] = ()


class Contact(msgspec.Struct, frozen=True):
    """A buyer as seen on one channel instance."""

    id: str
    channel: str
    channel_instance: str
    handle: str
    name: str | None = None
    created_at: float = 0.0


class Agent(msgspec.Struct, frozen=True, omit_defaults=True):
    """A human who answers conversations; routing fills in its attributes."""

    id: str
    name: str
    languages: dict[str, int] = {}
    markets: tuple[str, ...] = ()
    skills: dict[str, int] = {}
    capacity: dict[str, int] = {}
    status: Literal["online", "away", "offline"] = "offline"
    timezone: str = "UTC"


class DeliveryStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where a message stands with its provider; ``error`` carries the provider's words."""

    state: DeliveryState
    attempts: int = 0
    provider_message_id: str | None = None
    error: str | None = None
    updated_at: float = 0.0


class MessageView(msgspec.Struct, frozen=True, omit_defaults=True):
    """A stored message as the API shows it: payload plus its delivery facts."""

    id: str
    conversation_id: str
    seq: int
    direction: Direction
    channel: str
    channel_instance: str
    text: str
    status: DeliveryState
    created_at: float
    sender_handle: str | None = None
    sender_name: str | None = None
    author: str | None = None
    provider_message_id: str | None = None
    sent_at: float | None = None
    attempts: int = 0
    error: str | None = None
    attachments: tuple[Attachment, ...] = ()


class Conversation(msgspec.Struct, frozen=True):
    """A thread with one buyer on one channel instance."""

    id: str
    channel: str
    channel_instance: str
    thread_id: str
    contact_id: str
    contact_handle: str
    contact_name: str | None
    status: ConversationStatus
    language: str | None
    market: str | None
    assignee: str | None
    queue: str | None
    created_at: float
    updated_at: float
    last_inbound_at: float | None
    message_count: int
    last_inbound_provider_id: str | None = None
    # How sure routing was of the language (0..1), and whether that is below
    # routing.min_language_confidence: the inbox offers a one-click correction then.
    language_confidence: float | None = None
    language_low_confidence: bool = False
    skill: str | None = None


class ConversationDetail(msgspec.Struct, frozen=True):
    """A conversation with a page of its messages in sequence order; ``next_cursor``
    continues the messages (null: there are no more)."""

    conversation: Conversation
    messages: list[MessageView]
    next_cursor: str | None = None


class QuarantineEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """Raw input we could not normalize, kept so that nothing is lost."""

    id: str
    channel_instance: str
    error: str
    received_at: float
    raw: str
    raw_truncated: bool = False


class DeadLetter(msgspec.Struct, frozen=True, omit_defaults=True):
    """A reply that exhausted its attempts; ``inboxhub dlq retry`` sends it again."""

    id: str
    message_id: str
    conversation_id: str
    channel_instance: str
    error: str
    attempts: int
    failed_at: float
