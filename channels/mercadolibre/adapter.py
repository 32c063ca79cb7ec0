"""Mercado Libre post-sale messaging (CHANNELS.md §6.1), on the shared marketplace base.

Inbound:

* the ``messages`` notification (``POST /webhooks/mercadolibre/{instance}``) carries no
  signature (none is documented), so ``verify`` accepts any body and ``parse`` trusts nothing
  in it but a message id: it reads ``id``, ``topic``, ``resource``, ``user_id`` and
  ``application_id``, refuses another seller's or another application's notification
  (``MalformedPayload``: kept in quarantine, answered 400) and returns a ``FetchNotice``
  deduplicated by notification id + resource, so Mercado Libre's retries are fetched once.
  Only the notice is stored before the answer: 200 within the 500 ms budget however slow the
  API is;
* ``fetch`` reads ``GET /messages/{id}`` with the seller's token, checks the message involves
  our seller, finds its pack (or order) and reads the whole pack with
  ``mark_as_read=false`` (the default marks the buyer's messages read before an agent saw
  them), storing every buyer message of it with the conversation's blocked substatus;
* ``poll`` reconciles from ``GET /messages/unread?role=seller&tag=post_sale`` with a cursor of
  the newest message time seen per pack.

Outbound: ``POST /messages/packs/{pack}/sellers/{seller}?tag=post_sale``, to the country agent
id where Mercado Libre's agent layer is in force, after ``check_reply`` enforced 350
characters, ISO-8859-1, no seller-initiated free text and the blocked substatuses. Writing
first takes a reason from the action guide, sent as a template (``reasons.py``); the
conversation lists the pack's open reasons (``templates_for_thread``).
"""

from __future__ import annotations

import datetime
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final

import aiohttp
import msgspec
from aiohttp import web

from channels.attachments import AttachmentRefused
from channels.base import AdapterContext, Capabilities, Parsed
from channels.errors import (
    AuthError,
    ChannelError,
    MalformedPayload,
    PermanentError,
    ReplyRejected,
)
from channels.marketplace.base import (
    AnswerTooLarge,
    MarketplaceChannel,
    MarketplaceSettings,
    error_code,
)
from channels.marketplace.sites import MERCADOLIBRE_SITES, market_hints
from channels.mercadolibre import reasons
from channels.models import (
    Attachment,
    DraftCheck,
    FetchNotice,
    InboundMessage,
    OutboundReply,
    TemplateRef,
)
from channels.polling import Polled, PollItem
from channels.secrets import Secret
from channels.services.health import PushSubscriptionRule
from channels.services.limits import RateLimit
from channels.services.tokens import Refresher
from channels.tokens import OAuth2Refresher
from channels.windows import TemplateSpec

log = logging.getLogger(__name__)

LABEL: Final = "mercadolibre"
MAX_TEXT: Final = 350
MAX_ATTACHMENT_BYTES: Final = 25 * 1024 * 1024
ATTACHMENT_TYPES: Final = ("image/jpeg", "image/png", "application/pdf", "text/plain")
PAGE_LIMIT: Final = 50
MAX_PAGES: Final = 40  # 2,000 messages per pack read: a bound, not an expected size
MAX_CURSOR_PACKS: Final = 2000
MAX_NICKNAMES: Final = 4096
# Mercado Libre's agent layer (CHANNELS.md §6.1): replies on these sites go to the country
# agent, not the buyer.
AGENT_IDS: Final[Mapping[str, str]] = {
    "MLB": "3037675074", "MLC": "3020819166", "MLA": "3037674934", "MLM": "3037204279",
    "MCO": "3037204123", "MLU": "3037204685",
}
# Blocked conversation substatuses (CHANNELS.md §6.1, [L4]) and what the agent is told.
BLOCKED_REASONS: Final[Mapping[str, str]] = {
    "blocked_by_time": "Mercado Libre closed this conversation: the seller may answer only "
                       "until 30 days after the last message (blocked_by_time)",
    "blocked_by_buyer": "the buyer blocked messages from the seller (blocked_by_buyer)",
    "bloqued_by_mediation": "the order is in a Mercado Libre mediation; answer in the "
                            "mediation, not here (bloqued_by_mediation)",
    "blocked_by_fulfillment": "Mercado Libre handles this order's fulfillment; messages are "
                              "closed (blocked_by_fulfillment)",
    "blocked_by_payment": "the order's payment is not settled; messages are closed "
                          "(blocked_by_payment)",
}
BLOCKED_CODES: Final = frozenset({"blocked_conversation_send_message_forbidden",
                                  "blocked_by_conversation_started_by_seller"})
# Moderation statuses that mean "nothing to mark" (inferred: the docs list reasons, and
# ``clean`` / ``non_moderated`` for an untouched message).
UNMODERATED: Final = frozenset({"clean", "non_moderated", "not_moderated", ""})
# A resource goes into a URL path: an id Mercado Libre mints (32 hex in the docs), never a path.
RESOURCE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PACK_IN_PATH: Final = re.compile(r"/packs/([0-9]{1,20})")
_ID: Final = re.compile(r"[0-9]{1,20}")


class MercadoLibreSettings(MarketplaceSettings, frozen=True, kw_only=True,
                           forbid_unknown_fields=True):
    """``seller_id``: the seller's user_id; ``client_id``/``client_secret``: the application;
    ``site_id``: the seller's site (``MLB``...), for the agent id and the attachment APIs when
    no fetched message named it yet; ``token_url`` defaults to ``{api_base_url}/oauth/token``."""

    api_base_url: str = "https://api.mercadolibre.com"
    seller_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}$")]
    client_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}$")]
    client_secret: Secret
    token_url: str | None = None
    site_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None
    # GETs per minute the application may make (Mercado Libre's default quota is 500, shared
    # by every GET of the app); paced through the shared limiter so no burst meets a 429.
    reads_per_minute: Annotated[int, msgspec.Meta(ge=20, le=1_000_000)] = 500


class Notification(msgspec.Struct, frozen=True):
    """The fields of a notification we read; anything else it says is not trusted."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    topic: str
    resource: str
    user_id: int | str
    application_id: int | str


class _User(msgspec.Struct, frozen=True):
    user_id: int | str | None = None


class _Date(msgspec.Struct, frozen=True):
    created: str | None = None
    received: str | None = None


class _Moderation(msgspec.Struct, frozen=True):
    status: str | None = None
    reason: str | None = None


class _Resource(msgspec.Struct, frozen=True):
    id: int | str
    name: str


class _FileRef(msgspec.Struct, frozen=True):
    filename: str
    original_filename: str | None = None
    type: str | None = None
    size: int = 0


class Message(msgspec.Struct, frozen=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    sender: _User = msgspec.field(name="from", default_factory=_User)
    to: _User = msgspec.field(default_factory=_User)
    text: str = ""
    site_id: str | None = None
    message_date: _Date = msgspec.field(default_factory=_Date)
    message_moderation: _Moderation | None = None
    message_attachments: list[_FileRef] | None = None
    message_resources: list[_Resource] | None = None


class _Status(msgspec.Struct, frozen=True):
    status: str | None = None
    substatus: str | None = None


class _Paging(msgspec.Struct, frozen=True):
    limit: int = PAGE_LIMIT
    offset: int = 0
    total: int = 0


class Pack(msgspec.Struct, frozen=True):
    messages: list[Message] = []
    paging: _Paging = msgspec.field(default_factory=_Paging)
    conversation_status: _Status | None = None


class _OneMessage(msgspec.Struct, frozen=True):
    """``GET /messages/{id}``: the docs do not show its envelope; the message itself or a
    ``messages`` list of one are both read (inferred)."""

    messages: list[Message] | None = None


class _Unread(msgspec.Struct, frozen=True):
    resource: str
    count: int = 0


class Unread(msgspec.Struct, frozen=True):
    results: list[_Unread] = []


class _ApiError(msgspec.Struct, frozen=True):
    error: Any = None
    status: Any = None


class _Nick(msgspec.Struct, frozen=True):
    nickname: str | None = None


class _Sent(msgspec.Struct, frozen=True):
    id: int | str | None = None


class _Uploaded(msgspec.Struct, frozen=True):
    id: int | str | None = None


_notification = msgspec.json.Decoder(Notification)
_cursor = msgspec.msgpack.Decoder(dict[str, float])


def _when(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _str_id(value: int | str | None) -> str | None:
    return None if value is None else str(value)


def latin1_outsiders(text: str) -> list[str]:
    """The distinct characters of ``text`` ISO-8859-1 cannot carry, in order."""
    seen: dict[str, None] = {}
    for char in text:
        if ord(char) > 0xFF:
            seen.setdefault(char, None)
    return list(seen)


class MercadoLibreChannel(MarketplaceChannel):
    type_name: ClassVar[str] = "mercadolibre"
    settings_type: ClassVar[type[MercadoLibreSettings]] = MercadoLibreSettings
    settings: MercadoLibreSettings
    marketplace: ClassVar[str] = LABEL
    referable_settings: ClassVar[tuple[str, ...]] = ("seller_id", "client_id")
    unique_settings: ClassVar[tuple[str, ...]] = ("seller_id",)
    # GETs share 500 per minute per application (CHANNELS.md §6.1).
    read_limits: tuple[RateLimit, ...] = (RateLimit.within(500, 60, burst=10),)
    capabilities = Capabilities(
        max_text_length=MAX_TEXT, can_initiate=False, templates=True, threading=True,
        attachments=True,
        max_attachment_bytes=MAX_ATTACHMENT_BYTES, max_attachments=5,
        attachment_types=ATTACHMENT_TYPES, fetch_after_notify=True,
        push_subscription=PushSubscriptionRule.mercadolibre(),
        # POST/PUT share 500 per minute (CHANNELS.md §6.1).
        rate_limits=(RateLimit.within(500, 60, burst=10),),
    )

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.read_limits = (RateLimit.within(settings.reads_per_minute, 60, burst=10),)
        self._refresher: Refresher | None = None
        self._nicknames: OrderedDict[str, str | None] = OrderedDict()
        # What the last read of each pack said, for replies refused before sending: its site
        # and a blocked reason. Bounded; the conversation's hints say it across processes.
        self._packs: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()

    # -- tokens ------------------------------------------------------------------------------

    @property
    def refresher(self) -> Refresher:
        if self._refresher is None:
            url = self.settings.token_url or f"{self.settings.base_url}/oauth/token"
            self._refresher = OAuth2Refresher(
                self.context.http, url, client_id=self.settings.client_id,
                client_secret=self.settings.client_secret,
                timeout=self.settings.timeout_seconds)
        return self._refresher

    async def _get(self, path: str, params: Mapping[str, str] | None = None,
                   max_bytes: int | None = None) -> bytes:
        """One paced, authorized GET; the answer's body."""
        await self.read_turn()

        async def call(token: str) -> bytes:
            kwargs: dict[str, Any] = {}
            if max_bytes is not None:
                kwargs["max_bytes"] = max_bytes
            answer = await self.call_api("GET", path, params=params,
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Accept": "application/json"}, **kwargs)
            return answer.body
        return await self.authorized(call)

    # -- errors ------------------------------------------------------------------------------

    def api_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
        """``{message, error, status, cause[]}`` (CHANNELS.md §6.1, [L7]): only the ``error``
        code is repeated; ``message`` may echo the buyer's text and is never kept."""
        try:
            code = error_code(msgspec.json.decode(body, type=_ApiError).error)
        except (msgspec.DecodeError, msgspec.ValidationError):
            code = None
        if status == 403 and code in BLOCKED_CODES:
            return ReplyRejected(f"mercadolibre refused the message: {code}")
        if code == reasons.EXCEPTED_CODE:
            return reasons.NotInActionGuide(f"mercadolibre: {code}")
        if status in (400, 403) and code in reasons.REFUSED_CODES:
            return ReplyRejected(f"mercadolibre refused the reason: {code}")
        if status == 403:
            # Our seller's token was refused for our seller's resource: the grant no longer
            # covers it (scopes, a revoked app); no refresh mends that, an operator does.
            return AuthError(f"mercadolibre HTTP 403 ({code or 'forbidden'}): the seller's "
                             "grant does not cover this call")
        base = super().api_error(status, body, headers)
        if code is not None and type(base) is PermanentError:
            return PermanentError(f"{base} ({code})")
        return base

    # -- inbound: notifications --------------------------------------------------------------

    def verify(self, request: web.Request, body: bytes) -> None:
        """Mercado Libre signs nothing (no signature header is documented, CHANNELS.md §6.1):
        any body passes. A notification is only a hint; ``fetch`` reads the resource with our
        token and checks it is our seller's, so a forged one stores nothing."""

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            note = _notification.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"not a Mercado Libre notification: {str(exc)[:120]}"
                                   ) from None
        if note.topic != "messages":
            return []  # a topic we do not read: acknowledged, ignored
        if str(note.user_id) != self.settings.seller_id:
            raise MalformedPayload("notification for another seller (user_id is not this "
                                   "instance's seller_id)")
        if str(note.application_id) != self.settings.client_id:
            raise MalformedPayload("notification for another application (application_id is "
                                   "not this instance's client_id)")
        resource = note.resource.removeprefix("/messages/")
        if not RESOURCE.fullmatch(resource):
            raise MalformedPayload("resource is not a message id")
        return [FetchNotice(resource=resource, dedupe_key=f"{note.id}:{resource}"[:200])]

    # -- inbound: fetch ----------------------------------------------------------------------

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        if not RESOURCE.fullmatch(resource):
            raise PermanentError("resource is not a message id")
        body = await self._get(f"/messages/{resource}", {"tag": "post_sale"})
        envelope = msgspec.json.decode(body, type=_OneMessage)
        message = (envelope.messages[0] if envelope.messages
                   else msgspec.json.decode(body, type=Message))
        seller = self.settings.seller_id
        if seller not in (_str_id(message.sender.user_id), _str_id(message.to.user_id)):
            raise PermanentError(f"message {message.id[:64]} does not involve seller {seller}; "
                                 "not stored")
        thread = self._thread_of(message)
        if thread is None:
            raise PermanentError(f"message {message.id[:64]} names no pack or order")
        pack = await self.read_pack(thread)
        return await self._normalize(thread, pack, since=None)

    @staticmethod
    def _thread_of(message: Message) -> str | None:
        for name in ("packs", "orders"):
            for item in message.message_resources or ():
                if item.name == name and _ID.fullmatch(str(item.id)):
                    return str(item.id)
        return None

    async def read_pack(self, pack_id: str) -> Pack:
        """Every message of a pack, pages of ``PAGE_LIMIT``, never marking them read."""
        path = f"/messages/packs/{pack_id}/sellers/{self.settings.seller_id}"
        messages: list[Message] = []
        status: _Status | None = None
        offset = 0
        for _ in range(MAX_PAGES):
            page = msgspec.json.decode(await self._get(path, {
                "tag": "post_sale", "mark_as_read": "false", "limit": str(PAGE_LIMIT),
                "offset": str(offset)}), type=Pack)
            status = page.conversation_status or status
            messages.extend(page.messages)
            offset += len(page.messages)
            if not page.messages or offset >= page.paging.total:
                break
        return Pack(messages=messages, paging=_Paging(total=len(messages)),
                    conversation_status=status)

    def _is_ours(self, message: Message) -> bool:
        sender = _str_id(message.sender.user_id)
        return sender == self.settings.seller_id or sender in AGENT_IDS.values()

    async def _normalize(self, thread: str, pack: Pack, since: float | None
                         ) -> list[InboundMessage]:
        status = pack.conversation_status
        blocked = None
        if status is not None and (status.substatus in BLOCKED_REASONS
                                   or status.status == "blocked"):
            blocked = BLOCKED_REASONS.get(status.substatus or "",
                                          "Mercado Libre blocked this conversation")
        site = next((m.site_id for m in pack.messages if m.site_id), self.settings.site_id)
        self._remember(thread, site, blocked)
        hints = market_hints(MERCADOLIBRE_SITES.get(site or ""), label=LABEL, order_id=thread)
        if blocked is not None:
            hints = msgspec.structs.replace(hints, replies_disabled=blocked)
        out: list[InboundMessage] = []
        for message in pack.messages:
            if self._is_ours(message):
                continue
            sent = _when(message.message_date.created) or _when(message.message_date.received)
            if since is not None and sent is not None and sent <= since:
                continue
            buyer = _str_id(message.sender.user_id) or "unknown"
            out.append(InboundMessage(
                channel_type=self.type_name, channel_instance=self.instance,
                provider_message_id=message.id, thread_id=thread, sender_handle=buyer,
                sender_name=await self.nickname(buyer), text=message.text, sent_at=sent,
                hints=hints, attachments=await self._attachments(message, site),
                moderation=self._moderation(message)))
        out.sort(key=lambda m: m.sent_at or 0.0)
        return out

    def _remember(self, thread: str, site: str | None, blocked: str | None) -> None:
        self._packs[thread] = (site, blocked)
        self._packs.move_to_end(thread)
        while len(self._packs) > MAX_CURSOR_PACKS:
            self._packs.popitem(last=False)

    @staticmethod
    def _moderation(message: Message) -> str | None:
        mod = message.message_moderation
        if mod is None or (mod.status or "").lower() in UNMODERATED:
            return None
        return f"{mod.status}: {mod.reason}" if mod.reason else str(mod.status)

    async def nickname(self, user_id: str) -> str | None:
        """The buyer's public nickname (``GET /users/{id}``), cached in this process; a
        failure costs the name, never the message."""
        if user_id in self._nicknames:
            self._nicknames.move_to_end(user_id)
            return self._nicknames[user_id]
        if not _ID.fullmatch(user_id):
            return None
        try:
            name = msgspec.json.decode(await self._get(f"/users/{user_id}"), type=_Nick).nickname
        except (ChannelError, msgspec.DecodeError, msgspec.ValidationError):
            return None  # not cached: the next message asks again
        self._nicknames[user_id] = name
        while len(self._nicknames) > MAX_NICKNAMES:
            self._nicknames.popitem(last=False)
        return name

    async def _attachments(self, message: Message, site: str | None) -> tuple[Attachment, ...]:
        found: list[Attachment] = []
        for ref in message.message_attachments or ():
            name = ref.original_filename or ref.filename
            declared = ref.type or "application/octet-stream"
            policy = self.attachment_policy
            if self.context.attachments is None:
                found.append(self.refused_attachment(name, declared, ref.size, AttachmentRefused(
                    "this hub stores no attachments", 415)))
                continue
            over = AttachmentRefused(f"the file is over the {policy.max_bytes} byte limit", 413)
            if not RESOURCE.fullmatch(ref.filename.replace(".", "_")):
                found.append(self.refused_attachment(name, declared, ref.size, AttachmentRefused(
                    "Mercado Libre named the file with an unusable id", 415)))
                continue
            if ref.size > policy.max_bytes:
                found.append(self.refused_attachment(name, declared, ref.size, over))
                continue
            params = {"tag": "post_sale"}
            if site:
                params["site_id"] = site
            try:
                data = await self._get(f"/messages/attachments/{ref.filename}", params,
                                       max_bytes=policy.max_bytes + 1)
            except AnswerTooLarge:  # its declared size was wrong: still over the limit
                found.append(self.refused_attachment(name, declared, ref.size, over))
                continue
            try:
                found.append(await self.store_attachment(data, name=name))
            except AttachmentRefused as exc:
                found.append(self.refused_attachment(name, declared, len(data), exc))
        return tuple(found)

    # -- inbound: reconciliation -------------------------------------------------------------

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        """Unread conversations, each pack read with ``mark_as_read=false``; the cursor maps
        pack → newest buyer message time stored, so a pack still unread (we never mark it)
        yields only what is newer, across restarts."""
        seen: dict[str, float] = _cursor.decode(cursor) if cursor else {}
        unread = msgspec.json.decode(await self._get(
            "/messages/unread", {"role": "seller", "tag": "post_sale"}), type=Unread)
        items: list[PollItem] = []
        for entry in unread.results:
            match = _PACK_IN_PATH.search(entry.resource)
            if match is None:
                continue
            pack_id = match.group(1)
            messages = await self._normalize(pack_id, await self.read_pack(pack_id),
                                             since=seen.get(pack_id))
            items.extend(messages)
            newest = max((m.sent_at for m in messages if m.sent_at is not None), default=None)
            if newest is not None:
                seen.pop(pack_id, None)
                seen[pack_id] = newest
        while len(seen) > MAX_CURSOR_PACKS:
            seen.pop(next(iter(seen)))
        return items, msgspec.msgpack.encode(seen) if seen else (cursor or b"\x80")

    # -- outbound ----------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        blocked = self._packs.get(reply.thread_id, (None, None))[1]
        if blocked is not None:
            raise ReplyRejected(blocked)
        if reply.template is None and reply.last_inbound_at is None:
            raise ReplyRejected(
                "mercadolibre sellers cannot start a conversation with free text; pick a "
                "reason from the action guide (the conversation's templates: OTHER takes "
                "your text, the others send Mercado Libre's fixed text)")
        texts = [reply.text] if reply.template is None else list(reply.template.parameters)
        for text in texts:
            if len(text) > MAX_TEXT:
                raise ReplyRejected(f"the text is {len(text)} characters; mercadolibre "
                                    f"allows {MAX_TEXT}")
            outside = latin1_outsiders(text)
            if outside:
                shown = " ".join(f"{c!r} (U+{ord(c):04X})" for c in outside[:10])
                raise ReplyRejected(
                    f"mercadolibre takes ISO-8859-1 text only; these characters are outside "
                    f"it: {shown}")
        if reply.template is not None and reply.attachments:
            raise ReplyRejected("a Mercado Libre reason carries no attachments")
        super().check_reply(reply, now=now)

    def check_draft(self, draft: OutboundReply, *, now: float) -> DraftCheck:
        problem = self.draft_problem(draft, now=now)
        return DraftCheck(length=len(draft.text), max_length=MAX_TEXT, fits=problem is None,
                          problem=problem,
                          unicode_characters=tuple(latin1_outsiders(draft.text)[:20]))

    def _site(self, thread: str) -> str | None:
        return self._packs.get(thread, (None, None))[0] or self.settings.site_id

    # -- reasons (the action guide: reasons.py) ----------------------------------------------

    async def _guide(self, pack: str) -> reasons.Guide | None:
        """The pack's open reasons; None for a pack outside the action guide."""
        try:
            body = await self._get(f"/messages/action_guide/packs/{pack}", {"tag": "post_sale"})
        except reasons.NotInActionGuide:
            return None
        try:
            return msgspec.json.decode(body, type=reasons.Guide)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise PermanentError("mercadolibre answered the action guide in an unknown "
                                 "shape") from None

    async def templates_for_thread(self, thread_id: str,
                                   language: str | None) -> tuple[TemplateSpec, ...]:
        if not _ID.fullmatch(thread_id):
            return ()
        guide = await self._guide(thread_id)
        return reasons.EXCEPTED_TEMPLATES if guide is None else reasons.templates(guide)

    async def _send_reason(self, reply: OutboundReply, template: TemplateRef) -> str:
        guide = await self._guide(reply.thread_id)
        if guide is None:
            # Outside the action guide the plain reply POST is open: OTHER's text goes so.
            if template.name != "OTHER" or len(template.parameters) != 1:
                raise ReplyRejected("this order is outside Mercado Libre's action guide: "
                                    "write with the reason OTHER and your text")
            return await self._post_text(msgspec.structs.replace(
                reply, text=template.parameters[0], template=None), [])
        body = reasons.payload(guide, template, MAX_TEXT)

        async def call(token: str) -> bytes:
            answer = await self.call_api(
                "POST", f"/messages/action_guide/packs/{reply.thread_id}/option",
                params={"tag": "post_sale"}, data=msgspec.json.encode(body),
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"})
            return answer.body
        sent = msgspec.json.decode(await self.authorized(call), type=_Sent)
        return str(sent.id) if sent.id is not None else reply.reply_id

    # -- replies ------------------------------------------------------------------------------

    async def deliver(self, reply: OutboundReply) -> str:
        if not _ID.fullmatch(reply.thread_id):
            raise ReplyRejected("the conversation names no Mercado Libre pack")
        if reply.template is not None:
            return await self._send_reason(reply, reply.template)
        site = self._site(reply.thread_id)
        ids = [await self._upload(item, site) for item in reply.attachments]
        return await self._post_text(reply, ids)

    async def _post_text(self, reply: OutboundReply, ids: list[str]) -> str:
        to = AGENT_IDS.get(self._site(reply.thread_id) or "", reply.recipient_handle)
        payload: dict[str, Any] = {"from": {"user_id": self.settings.seller_id},
                                   "to": {"user_id": to}, "text": reply.text}
        if ids:
            payload["attachments"] = ids
        path = f"/messages/packs/{reply.thread_id}/sellers/{self.settings.seller_id}"

        async def call(token: str) -> bytes:
            answer = await self.call_api(
                "POST", path, params={"tag": "post_sale"}, data=msgspec.json.encode(payload),
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"})
            return answer.body
        sent = msgspec.json.decode(await self.authorized(call), type=_Sent)
        return str(sent.id) if sent.id is not None else reply.reply_id

    async def _upload(self, item: Attachment, site: str | None) -> str:
        store = self.context.attachments
        data = await store.get(item.storage_ref) if store and item.storage_ref else None
        if data is None:
            raise ReplyRejected(f"attachment {item.name!r} is no longer stored")
        params = {"tag": "post_sale"}
        if site:
            params["site_id"] = site

        async def call(token: str) -> bytes:
            form = aiohttp.FormData()
            form.add_field("file", data, filename=item.name, content_type=item.content_type)
            answer = await self.call_api("POST", "/messages/attachments", params=params,
                                         data=form, headers={"Authorization": f"Bearer {token}"})
            return answer.body
        uploaded = msgspec.json.decode(await self.authorized(call), type=_Uploaded)
        if uploaded.id is None:
            raise PermanentError("mercadolibre accepted the attachment but named no id")
        return str(uploaded.id)
