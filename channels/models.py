"""The normalized contract types: what every channel adapter produces and consumes.

Adapters produce ``InboundMessage`` and receive ``OutboundReply``; everything above the channel
layer (storage, routing, the hub) reads them. These types are the plugin author's whole data
vocabulary, so they live in ``channels/`` and import nothing of the service: a plugin depends on
this package only. All are frozen msgspec Structs (msgpack in Redis, JSON on the API).

Times are UNIX seconds (float, UTC). Mutable facts (status, assignee, delivery) live in the store
next to the frozen payload, never inside it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

DeliveryState = Literal["sent", "delivered", "read", "failed"]


class Attachment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A file attached to a message; the bytes live elsewhere (``storage_ref``)."""

    name: str
    content_type: str
    size: int
    storage_ref: str | None = None
    # Why the hub did not keep the bytes (over the channel's size limit, a type it does not
    # take): the message is stored and the agent sees what was sent and why it is missing.
    refused: str | None = None


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
    # What the conversation is about for SLAs and rules when the instance alone does not say:
    # one mailbox gets Amazon's relay ("amazon", 24 h wall-clock duty) and ordinary mail.
    # Lower-case ``[a-z0-9_.-]{1,64}``; ``routing.sla.<label>`` applies to it.
    label: str | None = None
    # The sender cannot be answered on this channel (a no-reply notification address): the
    # reason, shown to the agent, and the replies endpoint refuses with it.
    replies_disabled: str | None = None
    # Where the agent answers instead (the platform's message centre), shown as a link.
    answer_url: str | None = None


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
    # The provider id of the message this one answers (a Telegram reply, Messenger's
    # ``reply_to.mid``): the inbox shows what the buyer quoted.
    reply_to: str | None = None
    # The marketplace moderated this message (Mercado Libre ``message_moderation``): its
    # status and reason as the marketplace names them (``rejected: PERSONAL_DATA``). It is
    # stored and shown with the mark, never dropped: the buyer did write it.
    moderation: str | None = None


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
    # An approved template (the channel's free-form window is closed, or the seller writes
    # first); when set, ``text`` is what the inbox showed the agent, not what is sent.
    template: TemplateRef | None = None
    # A tag that opens one of the channel's extended windows (Messenger's HUMAN_AGENT: a
    # human's reply up to 7 days after the buyer's last message); see Capabilities.
    tag: str | None = None


class TemplateRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """An approved message template (WhatsApp, Mercado Libre reason templates, Lazada template
    ids): what a reply carries when free text is not allowed."""

    name: str
    language: str | None = None
    parameters: tuple[str, ...] = ()


class DeliveryUpdate(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the provider says became of one of our outbound messages (Twilio StatusCallback,
    WhatsApp ``statuses[]``, Messenger delivery and read events).

    Applied monotonically through the provider id (a late ``delivered`` never overwrites
    ``read``); ``failed`` carries the provider's code and words in ``error``. A webhook's
    ``parse`` (or a poller) returns these beside inbound messages.
    """

    channel_instance: str
    provider_message_id: str
    state: DeliveryState
    at: float | None = None
    error: str | None = None


class DeliveryWatermark(msgspec.Struct, frozen=True, omit_defaults=True):
    """Everything we sent ``recipient_handle`` on this instance up to ``at`` reached ``state``
    (Messenger's and Instagram's ``delivery``/``read`` watermarks, which name no message).

    The hub keeps, per instance and recipient, the provider ids of our sends with the time
    each send was recorded (``DeliveryIndex.record_sent``), so any hub process, after any
    restart, turns a watermark into one ``DeliveryUpdate`` per send at or before ``at``.
    """

    channel_instance: str
    recipient_handle: str
    state: DeliveryState
    at: float


class MessageEdit(msgspec.Struct, frozen=True):
    """The buyer changed a message we stored (Telegram ``edited_message``).

    Applied to the stored message found by ``(channel_instance, thread_id,
    provider_message_id)``: the inbox shows the new text with ``edited_at``, the original is
    kept, an older edit arriving late changes nothing. When the original is not stored (never
    seen, or past the dedupe window) or the hub records no edits, ``fallback`` (the edit as a
    message of its own) is ingested instead, so the buyer's words are never lost.
    """

    channel_instance: str
    thread_id: str
    provider_message_id: str
    text: str
    edited_at: float
    fallback: InboundMessage


class FetchNotice(msgspec.Struct, frozen=True):
    """A notification that only names something to fetch: Mercado Libre's ``messages`` topic
    names a message id, Shopee's and eBay's pushes a conversation, WhatsApp a media id.

    ``parse`` returns it instead of a message. The hub stores it durably and acknowledges the
    provider at once (Mercado Libre allows 500 ms); a worker then calls the adapter's
    ``fetch(resource)``, which calls the provider's API with the account's token, and stores
    what that returns. Whatever else the notification body claims about the resource is never
    used: only fetched data is stored.

    ``resource`` is opaque to the hub (an id, an API path) and shown to operators: it names
    data, it never carries a body or a secret. ``dedupe_key`` identifies the notification (the
    provider's notification id, or resource + action): a repeat within the queue's dedupe
    window (7 days) is acknowledged and not fetched again.
    """

    resource: str
    dedupe_key: str


class DraftCheck(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the reply box shows under a draft before it is sent (``ChannelAdapter.
    check_draft``): its length as the channel counts it and whether it fits; ``problem`` is
    why the channel would refuse it (the refusal ``send`` would give), else None.

    Channels that split or bill by the piece say so: ``parts`` (Telegram: the messages a long
    reply goes out as); ``segments``, ``encoding`` (``GSM-7`` / ``UCS-2``), ``remaining``
    (units left in the last segment) and ``unicode_characters`` (what forced UCS-2) for SMS.
    """

    length: int
    max_length: int
    fits: bool
    problem: str | None = None
    parts: int | None = None
    segments: int | None = None
    encoding: str | None = None
    remaining: int | None = None
    unicode_characters: tuple[str, ...] = ()
