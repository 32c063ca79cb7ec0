"""Stored records as the hub reads them back: conversations, message views, quarantine and
dead-letter entries. They are the store's vocabulary (built from Redis hashes and streams in
``storage/store.py``) and what the API returns; the contract types they embed come from
``channels.models``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from channels.models import Attachment

Direction = Literal["in", "out"]
DeliveryState = Literal["received", "queued", "sending", "sent", "delivered", "read", "failed"]
ConversationStatus = Literal["new", "queued", "assigned", "resolved"]
# The agent's view of the work (hub/workflow_api.py): beside routing's ``status``, which says
# where the conversation is in the routing machine, not whether someone must act on it.
WorkStatus = Literal["open", "pending", "snoozed", "resolved"]
Priority = Literal["low", "normal", "high", "urgent"]


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
    # When ``status`` last changed for an outbound message: the send returned ("sent"), or the
    # provider's time of a receipt (delivered, read, failed; ours when it gave none).
    status_at: float | None = None
    # The provider id of the message this one answers (inbound: what the buyer quoted;
    # outbound: the buyer's message the reply was threaded to).
    reply_to: str | None = None
    # The buyer edited the message: ``text`` is the newest words, ``original_text`` what
    # first arrived.
    edited_at: float | None = None
    original_text: str | None = None
    # The marketplace moderated or blocked this message: its status and reason (shown as such).
    moderation: str | None = None


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
    # When the buyer last wrote, by the provider's clock where the message has one (its
    # ``sent_at``, never later than its arrival): reply windows count from here.
    last_inbound_at: float | None
    message_count: int
    last_inbound_provider_id: str | None = None
    # How sure routing was of the language (0..1), and whether that is below
    # routing.min_language_confidence: the inbox offers a one-click correction then.
    language_confidence: float | None = None
    language_low_confidence: bool = False
    skill: str | None = None
    # From the channel's hints (``ChannelHints``): what the conversation is about for SLAs
    # ("amazon"), and, for a sender that cannot be answered here, why and where instead.
    label: str | None = None
    replies_disabled: str | None = None
    answer_url: str | None = None
    # The channel could not reach the buyer (they blocked the bot): why, until they write again.
    unreachable: str | None = None
    # Set by agents (hub/workflow_api.py). ``work_status`` is "resolved" whenever ``status``
    # is; a buyer's new message makes a pending or snoozed conversation open again
    # (ingest.lua), and a snoozed one wakes at ``snoozed_until``. ``spam``: an agent marked it;
    # ``blocked``: its sender is blocked, so their messages are stored but not routed. KPIs
    # leave both out.
    work_status: WorkStatus = "open"
    snoozed_until: float | None = None
    priority: Priority = "normal"
    spam: bool = False
    blocked: bool = False
    # Agents' labels (storage/tags.py: case-folded, trimmed), in the order they were added.
    tags: list[str] = []


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
