"""Facebook Messenger and Instagram messaging: one webhook shape, two channels.

Both come through Meta's webhooks framework (``channels.meta``: the GET handshake and
``X-Hub-Signature-256``) as ``{"object": "page" | "instagram", "entry": [{"id", "time",
"messaging": [event, ...]}]}`` (CHANNELS.md §5). Each ``messaging`` event is one of:

* ``message``: a buyer's message (``mid``, ``text``, ``quick_reply.payload``,
  ``reply_to.mid``, ``attachments[{type, payload.url}]``), normalized with ``sender.id`` (the
  page-scoped PSID, or the IGSID) as handle and thread and ``timestamp`` (ms) as ``sent_at``.
  ``reply_to.mid`` is kept as ``reply_to``; a quick reply's ``payload`` (beside its text)
  has no field in ``InboundMessage`` and is not kept; a quick reply without text is stored as
  its payload. A message with attachments is not stored from the webhook: it becomes a
  ``FetchNotice`` for its ``mid`` and the fetch worker reads the message back from the Graph
  API (``GET /{mid}?fields=id,created_time,from,to,message,attachments``, the Conversations
  API's message node; not in CHANNELS.md), downloads its files into the attachment store and
  stores it whole (``fetch``): the CDN URLs in the webhook expire, the download must not hold
  up the acknowledgement, and only what the API returned is stored;
* ``message`` with ``is_echo``: our own send (or the page's, from Meta's inbox) coming back.
  Never a buyer message; its ``mid`` confirms our send (``sent``) and its exact timestamp
  feeds the watermark log (``channels.messenger.watermarks``);
* ``delivery`` (``mids``, ``watermark``) and ``read`` (``watermark``; Instagram sends
  ``read.mid``): ``DeliveryUpdate``s for our messages;
* ``postback``: a button tap, stored as a message whose text is the button's title;
* anything else (``is_deleted`` and ``is_unsupported`` messages, reactions, referrals,
  handovers, ``standby``): acknowledged, counted in the log by kind, not routed.

Replies go to ``POST {api_base_url}/me/messages`` (``/{page_id}/messages`` when ``page_id`` is
set) as ``{"recipient": {"id"}, "messaging_type": "RESPONSE", "message": {"text"}}`` within
24 h of the buyer's last message; from 24 h to 7 days, with ``human_agent_tag = true`` and a
reply that carries tag ``HUMAN_AGENT``, as ``"messaging_type": "MESSAGE_TAG", "tag":
"HUMAN_AGENT"``; later, refused before any request. The window is ``Capabilities``, so the API
shows it to the agent before they type (``ReplyWindow``, ``channels.windows``).
Text limits: Messenger 2000 characters, Instagram 1000. Graph errors: ``channels.messenger.
graph``.
"""

from __future__ import annotations

import datetime
import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Final

import aiohttp
import msgspec
from aiohttp import web

from channels.attachments import AttachmentRefused
from channels.base import AdapterContext, Capabilities, Parsed, ReplyWindow
from channels.errors import MalformedPayload, PermanentError, ReplyRejected, RetryableError
from channels.http import read_capped
from channels.messenger.graph import graph_request
from channels.messenger.watermarks import SentLog
from channels.meta import MetaWebhookAdapter
from channels.models import (
    Attachment,
    DeliveryUpdate,
    DeliveryWatermark,
    FetchNotice,
    InboundMessage,
    OutboundReply,
)
from channels.secrets import Secret

log = logging.getLogger(__name__)

DEFAULT_API_BASE_URL: Final = "https://graph.facebook.com/v23.0"
HUMAN_AGENT: Final = "HUMAN_AGENT"
DAY: Final = 86400.0
STANDARD_WINDOW: Final = 1 * DAY
HUMAN_AGENT_WINDOW: Final = 7 * DAY
MAX_ATTACHMENT_BYTES: Final = 25 * 1024 * 1024  # IG: audio/video up to 25 MB (§5)
MAX_ATTACHMENTS: Final = 10
MESSAGE_FIELDS: Final = "id,created_time,from,to,message,attachments"
DOWNLOAD_FACTOR: Final = 6  # a 25 MB file gets six times a Graph call's timeout

Handle = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Mid = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class MessengerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[channels.settings]`` of a ``messenger`` or ``instagram`` instance."""

    page_access_token: Secret
    app_secret: Secret
    verify_token: Secret
    api_base_url: str = DEFAULT_API_BASE_URL
    # Human replies from 24 h to 7 days after the buyer's last message (Meta must have
    # approved the page for the HUMAN_AGENT tag).
    human_agent_tag: bool = False
    # Send to /{page_id}/messages instead of /me/messages (the page the token belongs to).
    page_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")] | None = None
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_attachments: Annotated[int, msgspec.Meta(ge=0)] | None = None


# -- the webhook's shapes (only what is read; every other field is ignored) -------------------


class _Party(msgspec.Struct, frozen=True):
    id: Handle


class _QuickReply(msgspec.Struct, frozen=True):
    payload: str = ""


class _ReplyTo(msgspec.Struct, frozen=True):
    mid: str | None = None


class _WireAttachment(msgspec.Struct, frozen=True):
    type: str = ""


class _WireMessage(msgspec.Struct, frozen=True):
    mid: Mid
    text: str | None = None
    is_echo: bool = False
    is_deleted: bool = False
    is_unsupported: bool = False
    quick_reply: _QuickReply | None = None
    reply_to: _ReplyTo | None = None
    attachments: list[_WireAttachment] = []


class _Delivery(msgspec.Struct, frozen=True):
    mids: list[Mid] = []
    watermark: int | None = None


class _Read(msgspec.Struct, frozen=True):
    watermark: int | None = None
    mid: Mid | None = None


class _Postback(msgspec.Struct, frozen=True):
    title: str = ""
    payload: str = ""
    mid: Mid | None = None


class _Event(msgspec.Struct, frozen=True):
    sender: _Party | None = None
    recipient: _Party | None = None
    timestamp: int | None = None
    message: _WireMessage | None = None
    delivery: _Delivery | None = None
    read: _Read | None = None
    postback: _Postback | None = None


class _Entry(msgspec.Struct, frozen=True):
    id: str = ""
    messaging: list[_Event] = []
    standby: list[Any] = []


class _Envelope(msgspec.Struct, frozen=True):
    object: str
    entry: list[_Entry]


_envelope = msgspec.json.Decoder(_Envelope)


# -- the Graph API's message, as ``fetch`` reads it back -------------------------------------


class _Url(msgspec.Struct, frozen=True):
    url: str | None = None


class _GraphAttachment(msgspec.Struct, frozen=True):
    id: str | None = None
    mime_type: str | None = None
    name: str | None = None
    size: int | None = None
    image_data: _Url | None = None
    video_data: _Url | None = None
    file_url: str | None = None


class _AttachmentList(msgspec.Struct, frozen=True):
    data: list[_GraphAttachment] = []


class _GraphMessage(msgspec.Struct, frozen=True):
    id: Mid
    sender: _Party = msgspec.field(name="from")
    created_time: str | None = None
    message: str = ""
    attachments: _AttachmentList | None = None


def _graph_time(value: str | None) -> float | None:
    """Graph's ``2026-12-01T10:00:00+0000``."""
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


class MetaMessagingChannel(MetaWebhookAdapter):
    """What Messenger and Instagram share; the subclasses name the object and the limit."""

    settings_type: ClassVar[type[MessengerSettings]] = MessengerSettings
    settings: MessengerSettings
    webhook_object: ClassVar[str]
    text_limit: ClassVar[int]
    platform: ClassVar[str]

    def __init__(self, instance: str, settings: MessengerSettings,
                 context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.capabilities = Capabilities(
            max_text_length=self.text_limit,
            reply_window_seconds=STANDARD_WINDOW,
            extended_windows=((ReplyWindow(HUMAN_AGENT_WINDOW, HUMAN_AGENT),)
                              if settings.human_agent_tag else ()),
            # Meta lets a page answer people who wrote to it, never write first.
            can_initiate=False,
            attachments=True, max_attachment_bytes=MAX_ATTACHMENT_BYTES,
            max_attachments=MAX_ATTACHMENTS, watermark_receipts=True,
            delivery_receipts=True, fetch_after_notify=True,
        )
        self.sent_log = SentLog()
        self._api = settings.api_base_url.rstrip("/")

    # -- inbound -----------------------------------------------------------------------------

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            envelope = _envelope.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"not a {self.platform} webhook: {exc}") from None
        if envelope.object != self.webhook_object:
            raise MalformedPayload(
                f"webhook object is {envelope.object[:40]!r}, expected "
                f"{self.webhook_object!r}: is the app's {self.platform} webhook pointed at "
                "the right channel?")
        items: list[Parsed] = []
        ignored: Counter[str] = Counter()
        for entry in envelope.entry:
            if entry.standby:
                ignored["standby"] += len(entry.standby)
            for event in entry.messaging:
                items.extend(self._event(event, ignored))
        if ignored:
            # Kinds and counts only: no ids, no text.
            log.info("channel %s: acknowledged, not routed: %s", self.instance,
                     ", ".join(f"{kind} x{n}" for kind, n in sorted(ignored.items())))
        return items

    def _event(self, event: _Event, ignored: Counter[str]) -> list[Parsed]:
        if event.sender is None or event.recipient is None:
            raise MalformedPayload("a messaging event has no sender or recipient")
        at = event.timestamp / 1000 if event.timestamp is not None else None
        if event.message is not None:
            return self._message(event, event.message, at, ignored)
        if event.delivery is not None:
            return self._receipts(event.sender.id, event.delivery.mids,
                                  event.delivery.watermark, "delivered")
        if event.read is not None:
            mids = [event.read.mid] if event.read.mid else []
            return self._receipts(event.sender.id, mids, event.read.watermark, "read")
        if event.postback is not None and event.postback.mid and event.postback.title:
            return [self._inbound(event.postback.mid, event.sender.id,
                                  event.postback.title, at)]
        ignored["postback without mid" if event.postback is not None else "other event"] += 1
        return []

    def _message(self, event: _Event, message: _WireMessage, at: float | None,
                 ignored: Counter[str]) -> list[Parsed]:
        assert event.sender is not None and event.recipient is not None
        if message.is_echo:
            # Our send (or the page's, from Meta's own inbox) coming back: the recipient is
            # the buyer. It confirms the send; it is never a buyer message.
            if event.timestamp is not None:
                self.sent_log.record(event.recipient.id, message.mid, event.timestamp,
                                     exact=True)
            ignored["echo"] += 1
            return [DeliveryUpdate(self.instance, message.mid, "sent", at=at)]
        if message.is_deleted:
            ignored["deleted message"] += 1
            return []
        if message.is_unsupported:
            ignored["unsupported message"] += 1
            return []
        if message.attachments:
            # Read back and downloaded by the fetch worker (see the module docstring).
            return [FetchNotice(resource=message.mid, dedupe_key=f"message:{message.mid}")]
        text = message.text
        if not text and message.quick_reply is not None:
            text = message.quick_reply.payload
        if not text:
            ignored["message without text"] += 1
            return []
        return [self._inbound(message.mid, event.sender.id, text, at,
                              reply_to=message.reply_to.mid if message.reply_to else None)]

    def _inbound(self, mid: str, sender: str, text: str, at: float | None,
                 attachments: tuple[Attachment, ...] = (), *,
                 reply_to: str | None = None) -> InboundMessage:
        return InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=mid, thread_id=sender, sender_handle=sender, text=text,
            attachments=attachments, sent_at=at, reply_to=reply_to)

    def _receipts(self, buyer: str, mids: Sequence[str], watermark: int | None,
                  state: str) -> list[Parsed]:
        at = watermark / 1000 if watermark is not None else None
        read = state == "read"
        named = list(dict.fromkeys(mids))
        if watermark is not None:
            # this process's own sends, at once (and without a hub index: the kit)...
            named += [m for m in self.sent_log.below(buyer, watermark, read=read)
                      if m not in named]
        items: list[Parsed] = [DeliveryUpdate(self.instance, mid, "read" if read else
                                              "delivered", at=at) for mid in named]
        if at is not None:
            # ...and every process's, through the hub's index of sends per recipient
            items.append(DeliveryWatermark(self.instance, buyer,
                                           "read" if read else "delivered", at))
        return items

    # -- fetch after notify: a message with attachments ---------------------------------------

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        answer = await graph_request(
            self.context.http, "GET", f"{self._api}/{urllib.parse.quote(resource, safe='')}",
            params={"fields": MESSAGE_FIELDS}, token=self.settings.page_access_token.reveal(),
            timeout=self.settings.timeout_seconds, channel=self.type_name)
        if answer is None:
            raise RetryableError("the Graph API's message answer was not readable JSON")
        try:
            message = msgspec.convert(answer, _GraphMessage)
        except msgspec.ValidationError as exc:
            raise PermanentError(f"the Graph API's message is not usable: {exc}") from None
        if message.id != resource:
            raise PermanentError("the Graph API answered with another message than asked")
        files = message.attachments.data if message.attachments else []
        attachments = [await self._download(item, i) for i, item in enumerate(files, 1)]
        policy = self.attachment_policy
        if len(attachments) > policy.max_count:
            attachments = attachments[:policy.max_count]
        return [self._inbound(message.id, message.sender.id, message.message,
                              _graph_time(message.created_time), tuple(attachments))]

    async def _download(self, item: _GraphAttachment, number: int) -> Attachment:
        url = (item.image_data.url if item.image_data else None) or \
            (item.video_data.url if item.video_data else None) or item.file_url
        name = item.name or f"attachment-{number}"
        declared = item.mime_type or "application/octet-stream"
        if not url or not url.startswith(("https://", "http://")):
            return self.refused_attachment(name, declared, item.size or 0, AttachmentRefused(
                "the Graph API gave no download URL for this file", 415))
        limit = self.attachment_policy.max_bytes
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds * DOWNLOAD_FACTOR)
        async with self.context.http.get(url, timeout=timeout, allow_redirects=False) as resp:
            if resp.status >= 500 or resp.status == 429:
                raise RetryableError(f"attachment download answered HTTP {resp.status}")
            if resp.status != 200:
                return self.refused_attachment(name, declared, item.size or 0,
                                               AttachmentRefused(
                                                   f"download answered HTTP {resp.status}",
                                                   415))
            data, truncated = await read_capped(resp, limit)
        if truncated:
            return self.refused_attachment(name, declared, item.size or limit + 1,
                                           AttachmentRefused(
                                               f"over this channel's limit of {limit} bytes",
                                               413))
        try:
            return await self.store_attachment(data, name=name)
        except AttachmentRefused as exc:
            return self.refused_attachment(name, declared, len(data), exc)

    # -- outbound ----------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        if reply.attachments:
            raise ReplyRejected(f"sending files on {self.type_name} is not supported yet; "
                                "send the text alone")
        super().check_reply(reply, now=now)

    async def deliver(self, reply: OutboundReply) -> str:
        body: dict[str, Any] = {"recipient": {"id": reply.recipient_handle},
                                "messaging_type": "RESPONSE",
                                "message": {"text": reply.text}}
        inside = (reply.last_inbound_at is not None
                  and time.time() <= reply.last_inbound_at + STANDARD_WINDOW)
        if reply.tag is not None and not inside:
            # check_reply let it through: the tag's window is open and the channel has it.
            body["messaging_type"] = "MESSAGE_TAG"
            body["tag"] = reply.tag
        path = f"/{self.settings.page_id}/messages" if self.settings.page_id else "/me/messages"
        answer = await graph_request(
            self.context.http, "POST", self._api + path, json=body,
            token=self.settings.page_access_token.reveal(),
            timeout=self.settings.timeout_seconds, channel=self.type_name)
        message_id = answer.get("message_id") if isinstance(answer, dict) else None
        if not isinstance(message_id, str) or not message_id:
            # Sent (a 2xx) but without an id: never retried, receipts cannot find it.
            log.warning("channel %s: send answered without a message_id", self.instance)
            return reply.reply_id
        self.sent_log.record(reply.recipient_handle, message_id, int(time.time() * 1000),
                             exact=False)
        return message_id


class MessengerChannel(MetaMessagingChannel):
    type_name: ClassVar[str] = "messenger"
    webhook_object: ClassVar[str] = "page"
    text_limit: ClassVar[int] = 2000
    platform: ClassVar[str] = "Messenger"


class InstagramChannel(MetaMessagingChannel):
    type_name: ClassVar[str] = "instagram"
    webhook_object: ClassVar[str] = "instagram"
    text_limit: ClassVar[int] = 1000
    platform: ClassVar[str] = "Instagram"
