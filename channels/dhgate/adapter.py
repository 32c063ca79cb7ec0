"""DHgate station messages (站内信), EXPERIMENTAL: polling only (issue 17; CHANNELS.md §6.5).

No official message documentation was found. Every shape here comes from third-party
integration code (CHANNELS.md §6.5 and the open-platform API index it cites), so the channel
runs only with ``experimental = true`` in its settings, and its README lists what is inferred.

Gateway: ``POST {api_base_url}/dop/router`` with ``access_token``, ``method``, ``timestamp`` (ms)
and ``v=2.0`` (no ``sign`` parameter seen). DHgate pushes nothing, so inbound is the poll alone:

1. ``dh.message.list`` pages newest first (``pageNo``/``pageSize``, ``beforeDay`` bounding the
   range); the cursor is the newest ``lastReplyTime`` handled plus the reply count of each
   topic handled at exactly that time (ties: a topic that changes within the same second
   changes its count);
2. only buyer–seller topics (``msgType`` ``001`` inquiry, ``002`` order, ``003`` other) are read
   further; system messages (``004``–``009``) and announcements (``010``–``013``) are passed by
   (acknowledged: the cursor moves past them) and never stored as buyer messages;
3. ``dh.message.get`` (``msgId``) gives the topic's replies; each one newer than the cursor and
   not newer than the topic's listed ``lastReplyTime`` (a later one is the next poll's, so no
   reply is handed out twice) becomes an ``InboundMessage`` keyed by ``detailId``. Our own
   replies are skipped; a reply between two parties neither of which is our seller goes to the
   quarantine, not the store.

Replies: ``dh.message.info.reply`` (``msgId``, ``content``, ``receiverId``) after the checks:
plain text only (HTML refused), at most ``MAX_TEXT`` characters (no limit is documented: ours,
conservative). Tokens: the OAuth2 refresh grant at ``token_url`` through the token store.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec
from aiohttp import web

from channels.base import AdapterContext, Capabilities, Parsed
from channels.errors import (
    AuthError,
    ChannelError,
    InvalidSignature,
    PermanentError,
    ReplyRejected,
    RetryableError,
    TokenExpired,
)
from channels.marketplace.base import (
    MarketplaceChannel,
    MarketplaceSettings,
    check_api_base_url,
    error_code,
)
from channels.marketplace.china import html_in, millis
from channels.marketplace.sites import Market, market_hints
from channels.models import InboundMessage, OutboundReply
from channels.polling import Polled, PollItem, Unusable
from channels.secrets import Secret
from channels.services.limits import RateLimit
from channels.services.tokens import Refresher
from channels.tokens import OAuth2Refresher

log = logging.getLogger(__name__)

LABEL: Final = "dhgate"
ROUTER_PATH: Final = "/dop/router"
API_VERSION: Final = "2.0"
DEFAULT_TOKEN_URL: Final = "https://secure.dhgate.com/dop/oauth2/access_token"
LIST_METHOD: Final = "dh.message.list"
GET_METHOD: Final = "dh.message.get"
# The reply method: DHgate's open-platform API index and third-party code call it
# ``dh.message.info.reply``; CHANNELS.md §6.5 writes ``dh.msg.info.reply``. Either may be set.
REPLY_METHODS: Final = ("dh.message.info.reply", "dh.msg.info.reply")
# Buyer–seller topics (CHANNELS.md §6.5); 004–009 are system messages, 010–013 announcements.
BUYER_TYPES: Final = frozenset({"001", "002", "003"})
ORDER_TYPE: Final = "002"
# No reply length limit is documented: INFERRED, a conservative choice of ours.
MAX_TEXT: Final = 1000
# Business status code of success in third-party code; 109 is treated as success there too
# (INFERRED: an empty result).
OK_CODES: Final = frozenset({"00000000", "109"})
# Gateway-level ``code`` 40: "access token expired or missing" (third-party code).
TOKEN_CODES: Final = frozenset({"40"})
MAX_TIED: Final = 500
_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def experimental_refusal(channel: str, section: str, why: str) -> str:
    return (f"the {channel} channel is EXPERIMENTAL and needs experimental = true in its "
            f"settings: {why} (CHANNELS.md {section}); set it only once you accept that the "
            "channel may stop working when the marketplace changes what it never documented")


class DHgateSettings(MarketplaceSettings, frozen=True, kw_only=True,
                     forbid_unknown_fields=True):
    """One DHgate seller account.

    ``experimental`` must be true (no official message documentation exists). ``client_id``/
    ``client_secret``: the DOP application (``client_secret`` as ``env:``/``file:``);
    ``seller_id``: the seller's DHgate user id, which every message must involve;
    ``token_url``: the OAuth2 token endpoint (DHgate's auth host by default). ``market``/
    ``language``: optional hints when the account sells into one market (DHgate is
    cross-border: none by default). ``reads_per_second``: the gateway's limit (10 QPS in one
    third-party config: UNVERIFIED). ``first_poll_days``: how far back the first poll reads
    (``beforeDay``, 1–366).
    """

    api_base_url: str = "https://api.dhgate.com"
    experimental: bool = False
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    client_secret: Secret
    seller_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    token_url: str = DEFAULT_TOKEN_URL
    market: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")] | None = None
    language: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}$")] | None = None
    reply_method: Literal["dh.message.info.reply", "dh.msg.info.reply"] = REPLY_METHODS[0]
    reads_per_second: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 10
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    max_pages: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    first_poll_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 7

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.experimental:
            raise ValueError(experimental_refusal(
                "dhgate", "§6.5", "DHgate publishes no message API documentation; its "
                "shapes come from third-party integration code"))
        check_api_base_url(self.token_url)


# -- wire shapes: every field INFERRED from third-party code (CHANNELS.md §6.5) -----------------

class _Status(msgspec.Struct, frozen=True):
    code: str | int | None = None


class _Envelope(msgspec.Struct, frozen=True):
    """A gateway answer: a top-level ``code`` is a gateway error (40: token); otherwise a
    ``status.code`` of ``00000000`` is success. ``message`` fields are never repeated: they may
    echo what was sent."""

    code: str | int | None = None
    status: _Status | None = None


class Topic(msgspec.Struct, frozen=True):
    msgId: str | int
    msgType: str = ""
    msgTitle: str | None = None
    msgReplyCount: int = 0
    senderId: str | int | None = None
    senderNickName: str | None = None
    lastReplyTime: str | int | None = None
    param: str | int | None = None


class _TopicPage(msgspec.Struct, frozen=True):
    msgList: list[Topic] | None = None
    totalPage: int | None = None


class Detail(msgspec.Struct, frozen=True):
    detailId: str | int
    senderId: str | int | None = None
    senderNickName: str | None = None
    receiverId: str | int | None = None
    content: str = ""
    attUrls: str | list[str] | None = None
    attNames: str | list[str] | None = None
    createTime: str | int | None = None


class _Details(msgspec.Struct, frozen=True):
    msgDetailList: list[Any] | None = None


class _Replied(msgspec.Struct, frozen=True):
    detailId: str | int | None = None
    msgId: str | int | None = None


class Cursor(msgspec.Struct, frozen=True, omit_defaults=True):
    """``t``: the newest ``lastReplyTime`` handled (ms); ``tied``: the reply count of every
    topic handled at exactly ``t``; ``seen``: the reply ids stored with a time of exactly
    ``t``. Together they say what is new at the same second without storing it twice."""

    t: int = 0
    tied: dict[str, int] = {}
    seen: tuple[str, ...] = ()


_envelope = msgspec.json.Decoder(_Envelope)
_cursor = msgspec.json.Decoder(Cursor)


def _str(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _names(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    parts = value if isinstance(value, list) else value.split(",")
    return [p.strip()[:200] for p in parts if isinstance(p, str) and p.strip()]


class DHgateChannel(MarketplaceChannel):
    """See the module docstring. Polling only: the webhook path answers 405 to every method."""

    type_name: ClassVar[str] = "dhgate"
    settings_type: ClassVar[type[DHgateSettings]] = DHgateSettings
    settings: DHgateSettings
    marketplace: ClassVar[str] = LABEL
    webhook_methods: ClassVar[frozenset[str]] = frozenset()
    referable_settings: ClassVar[tuple[str, ...]] = ("client_id", "seller_id")
    unique_settings: ClassVar[tuple[str, ...]] = ("seller_id",)
    capabilities = Capabilities(
        max_text_length=MAX_TEXT, can_initiate=False, threading=True, html=False,
        # UNVERIFIED: "10 QPS" in one third-party config; replies share it.
        rate_limits=(RateLimit.within(10, 1.0, burst=2),),
    )
    experimental: ClassVar[bool] = True

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.read_limits = (RateLimit.within(settings.reads_per_second, 1.0, burst=1),)
        self._refresher: Refresher | None = None

    # -- no push ------------------------------------------------------------------------------

    def verify(self, request: web.Request, body: bytes) -> None:
        """DHgate pushes nothing (CHANNELS.md §6.5): no body is ever authentic here."""
        raise InvalidSignature("dhgate has no push notifications; this channel only polls")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        return []  # never reached: ``verify`` refuses every body

    # -- tokens and calls ---------------------------------------------------------------------

    @property
    def refresher(self) -> Refresher:
        """The OAuth2 refresh grant (form ``grant_type=refresh_token``, client credentials in
        the form): DHgate's token endpoint is OAuth2 (CHANNELS.md §6.5), its answer's fields
        are INFERRED to be the standard ones."""
        if self._refresher is None:
            self._refresher = OAuth2Refresher(
                self.context.http, self.settings.token_url, client_id=self.settings.client_id,
                client_secret=self.settings.client_secret,
                timeout=self.settings.timeout_seconds)
        return self._refresher

    async def gateway(self, method: str, params: Mapping[str, str], *,
                      read: bool = True) -> Any:
        """One gateway call with a fresh token (``read``: paced under ``read_limits``); the
        decoded answer, or the error its ``code``/``status.code`` stands for."""
        if read:
            await self.read_turn()

        async def call(token: str) -> Any:
            form = {**params, "access_token": token, "method": method,
                    "timestamp": str(int(time.time() * 1000)), "v": API_VERSION}
            answer = await self.call_api(
                "POST", ROUTER_PATH, data=form,
                headers={"Accept": "application/json",
                         "Content-Type": "application/x-www-form-urlencoded"})
            return self._unwrap(answer.body)

        return await self.authorized(call)

    def _unwrap(self, body: bytes) -> Any:
        try:
            envelope = _envelope.decode(body)
            decoded = msgspec.json.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            raise RetryableError("dhgate answered something that is not a gateway answer") \
                from None
        error = self._error_for(envelope)
        if error is not None:
            raise error
        return decoded

    def _error_for(self, envelope: _Envelope) -> ChannelError | None:
        if envelope.code not in (None, "", 0, "0"):
            code = error_code(str(envelope.code)) or "unnamed"
            if code in TOKEN_CODES:
                return TokenExpired(f"dhgate gateway code {code}: access token expired")
            return PermanentError(f"dhgate gateway code {code}")
        status = envelope.status
        if status is not None and status.code is not None and str(status.code) not in OK_CODES:
            code = error_code(str(status.code)) or "unnamed"
            return PermanentError(f"dhgate refused the call (status {code})")
        return None

    def api_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
        """An HTTP error answer: a gateway ``code`` 40 in it is an expired token; a 403 is a
        grant that does not cover the call (no refresh mends it); the rest by the base's
        classes (429 honours Retry-After; what DHgate answers when its QPS is exceeded is
        INFERRED to be a 429)."""
        try:
            error = self._error_for(_envelope.decode(body))
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            error = None
        if isinstance(error, TokenExpired):
            return error
        if status == 403:
            return AuthError("dhgate HTTP 403: the seller's grant does not cover this call")
        return super().api_error(status, body, headers)

    # -- the poll -----------------------------------------------------------------------------

    def _hints_market(self) -> Market | None:
        s = self.settings
        if s.market is None and s.language is None:
            return None
        return Market(site=s.market or "", country=s.market or "", language=s.language or "")

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        state = _cursor.decode(cursor) if cursor else Cursor()
        now_ms = int(time.time() * 1000)
        if state.t:
            days = min(366, max(1, (now_ms - state.t) // 86_400_000 + 2))
        else:
            days = self.settings.first_poll_days
        changed: dict[str, tuple[Topic, int]] = {}
        for page in range(1, self.settings.max_pages + 1):
            got = await self.gateway(LIST_METHOD, {
                "beforeDay": str(days), "pageNo": str(page),
                "pageSize": str(self.settings.page_size)})
            listed = msgspec.convert(got, _TopicPage, strict=False)
            topics = listed.msgList or []
            reached = False
            for topic in topics:
                at = millis(topic.lastReplyTime)
                if at is None:
                    continue
                key = str(topic.msgId)
                if at < state.t:
                    reached = True  # newest first: everything after this is older
                    break
                if at == state.t and state.tied.get(key) == topic.msgReplyCount:
                    continue  # handled at this very time, unchanged since
                if key not in changed:  # a topic that moved up while we paged: seen once
                    changed[key] = (topic, at)
            if reached or not topics or len(topics) < self.settings.page_size or (
                    listed.totalPage is not None and page >= listed.totalPage):
                break
        else:
            log.warning("dhgate %s: more than %d pages of changed topics in one poll; the "
                        "oldest of them are passed by", self.instance, self.settings.max_pages)
        if not changed:
            return [], cursor or msgspec.json.encode(state)
        ordered = sorted(changed.values(), key=lambda pair: pair[1])
        items: list[PollItem] = []
        stored_at: dict[str, int] = {}
        for topic, at in ordered:
            if topic.msgType not in BUYER_TYPES:
                continue  # system message or announcement: passed by, not a buyer message
            for item, created in await self._details(topic, at, state):
                items.append(item)
                if isinstance(item, InboundMessage):
                    stored_at[item.provider_message_id] = created
        newest = ordered[-1][1]
        tied = {str(t.msgId): t.msgReplyCount for t, at in ordered if at == newest}
        seen = {mid for mid, created in stored_at.items() if created == newest}
        if newest == state.t:
            tied = {**state.tied, **tied}
            seen |= set(state.seen)
        if len(tied) > MAX_TIED or len(seen) > MAX_TIED:
            log.warning("dhgate %s: over %d topics at one second; the cursor keeps the "
                        "newest of them", self.instance, MAX_TIED)
            tied = dict(list(tied.items())[-MAX_TIED:])
            seen = set(sorted(seen)[-MAX_TIED:])
        return items, msgspec.json.encode(Cursor(t=newest, tied=tied, seen=tuple(sorted(seen))))

    async def _details(self, topic: Topic, until: int,
                       state: Cursor) -> list[tuple[PollItem, int]]:
        """The topic's replies newer than the cursor and not newer than ``until`` (its listed
        ``lastReplyTime``), oldest first, with their times."""
        msg_id = str(topic.msgId)
        if not _ID.fullmatch(msg_id):
            return [(Unusable(msgspec.json.encode(topic), "dhgate topic id is not an id"), 0)]
        got = await self.gateway(GET_METHOD, {"msgId": msg_id})
        raw = msgspec.convert(got, _Details, strict=False).msgDetailList or []
        seen = set(state.seen)
        found: list[tuple[PollItem, int]] = []
        for entry in raw:
            try:
                detail = msgspec.convert(entry, Detail, strict=False)
            except msgspec.ValidationError as exc:
                found.append((Unusable(msgspec.json.encode(entry),
                                       f"dhgate reply unreadable: {str(exc)[:120]}"), until))
                continue
            created = millis(detail.createTime)
            if created is None:
                found.append((Unusable(msgspec.json.encode(entry),
                                       "dhgate reply without a readable createTime"), until))
                continue
            detail_id = str(detail.detailId)
            if created > until or created < state.t or (
                    created == state.t and detail_id in seen):
                continue
            item = self._normalize(topic, detail, entry, created)
            if item is not None:
                found.append((item, created))
        found.sort(key=lambda pair: pair[1])
        return found

    def _normalize(self, topic: Topic, detail: Detail, raw: Any,
                   created: int) -> PollItem | None:
        """The buyer's reply as an ``InboundMessage``; None for our seller's own reply; an
        ``Unusable`` (quarantined, never stored) for one that does not involve our seller."""
        seller = self.settings.seller_id
        sender, receiver = _str(detail.senderId), _str(detail.receiverId)
        if sender == seller:
            return None
        if receiver != seller:
            return Unusable(msgspec.json.encode(raw),
                            "dhgate reply names another seller (receiverId is not this "
                            "instance's seller_id); not stored")
        if sender is None or not _ID.fullmatch(sender):
            return Unusable(msgspec.json.encode(raw), "dhgate reply without a sender id")
        order = _str(topic.param) if topic.msgType == ORDER_TYPE else None
        if order is not None and not _ID.fullmatch(order):
            order = None
        text = detail.content
        files = _names(detail.attNames) or _names(detail.attUrls)
        if files:
            shown = ", ".join(files[:10])
            text = f"{text}\n[attachments: {shown}]" if text else f"[attachments: {shown}]"
        return InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=str(detail.detailId), thread_id=str(topic.msgId),
            sender_handle=sender, sender_name=detail.senderNickName or topic.senderNickName,
            text=text, sent_at=created / 1000,
            hints=market_hints(self._hints_market(), label=LABEL, order_id=order))

    # -- replies ------------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        tag = html_in(reply.text)
        if tag is not None:
            raise ReplyRejected(f"dhgate replies are plain text; remove the HTML ({tag!r})")
        super().check_reply(reply, now=now)

    async def deliver(self, reply: OutboundReply) -> str:
        if not _ID.fullmatch(reply.thread_id) or not _ID.fullmatch(reply.recipient_handle):
            raise ReplyRejected("the conversation names no DHgate topic or buyer")
        got = await self.gateway(self.settings.reply_method, {
            "msgId": reply.thread_id, "content": reply.text,
            "receiverId": reply.recipient_handle}, read=False)
        replied = msgspec.convert(got, _Replied, strict=False) if isinstance(got, dict) \
            else _Replied()
        for value in (replied.detailId, replied.msgId):
            if value is not None and str(value) != reply.thread_id:
                return str(value)
        return reply.reply_id
