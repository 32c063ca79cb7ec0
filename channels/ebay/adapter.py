"""eBay member messages (CHANNELS.md §6.2; README.md here), on the shared marketplace base.

Inbound:

* Platform Notifications POST ``MyMessagesM2MMessage`` (SOAP) to
  ``/webhooks/ebay/{instance}``. ``verify`` parses the envelope safely (``soap.py``), checks
  ``NotificationSignature`` = base64(md5(Timestamp + DevID + AppID + CertID)) in constant time
  and refuses a Timestamp more than ``notification_max_age_seconds`` (default 600 s) from now,
  so a captured notification cannot be replayed later. ``parse`` reads only who wrote
  (``Sender``), about what (``ItemID``) and to whom (``RecipientUserID``, which must be our
  seller) and returns a ``FetchNotice``: the hub answers 200 at once;
* ``fetch`` treats the notification as a hint only: the Trading notification names no REST
  conversation, so it looks the conversation up with the seller's token (``GET /conversation``
  filtered by the buyer and the listing), reads it (``GET /conversation/{id}?conversation_type=
  FROM_MEMBERS``) and checks every message is between our seller and someone else; another
  seller's conversation stores nothing;
* ``poll`` reconciles from ``GET /conversation`` pages (``limit``/``offset``) with a cursor of
  what each conversation's newest message was, so restarts lose and repeat nothing.

Outbound: ``POST /send_message {conversationId, messageText}`` after ``check_reply`` refused
HTML, more than 2000 characters and replies outside the 90-day window.

Every call goes through the shared limiter under one bucket of ``calls_per_minute`` (75 per
60 s per seller [B2]), reads and sends alike, and a 429 is honoured with its Retry-After.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final

import aiohttp
import msgspec
from aiohttp import web

from channels.base import AdapterContext, Capabilities, Parsed, map_http_error
from channels.ebay.soap import (
    UnsafeXml,
    read_notification,
    signature_matches,
    timestamp_seconds,
)
from channels.errors import (
    AuthError,
    ChannelError,
    InvalidSignature,
    MalformedPayload,
    PermanentError,
    ReplyRejected,
    RetryableError,
)
from channels.http import read_capped
from channels.marketplace.base import (
    MarketplaceChannel,
    MarketplaceSettings,
    check_api_base_url,
    error_code,
)
from channels.marketplace.sites import Market, market_hints
from channels.models import FetchNotice, InboundMessage, OutboundReply
from channels.polling import Polled, PollItem, Unusable
from channels.secrets import Secret
from channels.services.limits import RateLimit
from channels.services.tokens import OAuthTokens, Refresher

log = logging.getLogger(__name__)

LABEL: Final = "ebay"
API_PATH: Final = "/commerce/message/v1"
TOKEN_PATH: Final = "/identity/v1/oauth2/token"
MEMBERS: Final = "FROM_MEMBERS"
EVENT: Final = "MyMessagesM2MMessage"
# messageText's limit: the Trading API's member-message Body takes 2000 characters (a secondary
# source, [B3]); the Message API's own limit is not stated in what we have: INFERRED equal.
MAX_TEXT: Final = 2000
# Buyer and seller may message each other for 90 days after the order ([B3], [B9]).
WINDOW_SECONDS: Final = 90 * 86400.0
PAGE_LIMIT: Final = 50  # getConversations: default 25, maximum 50 (documented [B1])
MAX_PAGES: Final = 40
MAX_LOOKUPS: Final = 5  # conversations with one buyer about one listing read per fetch
MAX_CURSOR_CONVERSATIONS: Final = 500
# Conversations read per poll: at 75 calls a minute, 20 reads take about 20 s.
MAX_READS_PER_POLL: Final = 20
# Conversations whose newest message is this much older than the newest one a poll handled
# are still looked at: a message can show up in the list a little after its createdDate.
OVERLAP_SECONDS: Final = 600.0
# An HTML tag (eBay refuses HTML in bodies [B8]): ``<b>``, ``</p>``, ``<br/>``, ``<!-- -->``,
# ``<a href=...>``. A lone ``<`` ("< 5 days", "<3") is not one.
_HTML_TAG: Final = re.compile(r"<\s*(/\s*)?[A-Za-z][A-Za-z0-9-]*(\s[^<>]*)?/?\s*>|<!--")
# eBay user ids: letters, digits and . _ - * (INFERRED from eBay's username rules); they go
# into query strings and a resource name, so nothing else is accepted.
_USERNAME: Final = re.compile(r"[A-Za-z0-9._*@-]{1,64}")
_ITEM: Final = re.compile(r"[0-9]{1,19}")
_CONVERSATION: Final = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def _market(site: str, country: str, language: str) -> Market:
    return Market(site=site, country=country, language=language)


# eBay marketplace ids (the REST ``MarketplaceIdEnum``) → market and language hint. Kept here,
# not in channels/marketplace/sites.py: only this channel speaks them.
EBAY_SITES: Final[Mapping[str, Market]] = {
    site: _market(site, country, language) for site, (country, language) in {
        "EBAY_US": ("US", "en"), "EBAY_MOTORS_US": ("US", "en"), "EBAY_CA": ("CA", "en"),
        "EBAY_FRCA": ("CA", "fr"), "EBAY_GB": ("GB", "en"), "EBAY_IE": ("IE", "en"),
        "EBAY_AU": ("AU", "en"), "EBAY_DE": ("DE", "de"), "EBAY_AT": ("AT", "de"),
        "EBAY_CH": ("CH", "de"), "EBAY_ES": ("ES", "es"), "EBAY_FR": ("FR", "fr"),
        "EBAY_IT": ("IT", "it"), "EBAY_NL": ("NL", "nl"), "EBAY_NLBE": ("BE", "nl"),
        "EBAY_FRBE": ("BE", "fr"), "EBAY_PL": ("PL", "pl"), "EBAY_HK": ("HK", "zh"),
        "EBAY_SG": ("SG", "en"), "EBAY_MY": ("MY", "en"), "EBAY_PH": ("PH", "en"),
        "EBAY_IN": ("IN", "en"),
    }.items()
}


class EbaySettings(MarketplaceSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One eBay seller account.

    ``seller_username``: the seller's eBay user id (what ``RecipientUserID`` and the messages'
    usernames say). ``dev_id``/``app_id``/``cert_id``: the application's keys; the
    notification signature covers all three, and ``app_id``:``cert_id`` is the OAuth client of
    the refresh grant (``cert_id`` as ``env:``/``file:``). ``site``: the seller's marketplace
    id, the market and language hint of every message. ``token_url`` defaults to
    ``{api_base_url}/identity/v1/oauth2/token``.
    """

    api_base_url: str = "https://api.ebay.com"
    seller_username: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._*@-]{1,64}$")]
    dev_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    app_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    cert_id: Secret
    site: str = "EBAY_US"
    token_url: str | None = None
    # A notification whose Timestamp is further than this from now is refused (replay).
    notification_max_age_seconds: Annotated[float, msgspec.Meta(ge=30.0, le=86400.0)] = 600.0
    # 75 calls per 60 s per seller [B2]: every call of this instance shares that budget.
    calls_per_minute: Annotated[int, msgspec.Meta(ge=6, le=100_000)] = 75
    # Where the first poll of a new account starts: conversations active in the last N days.
    backfill_days: Annotated[float, msgspec.Meta(ge=0.0, le=365.0)] = 14.0
    page_limit: Annotated[int, msgspec.Meta(ge=1, le=PAGE_LIMIT)] = PAGE_LIMIT

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.token_url is not None:
            check_api_base_url(self.token_url)
        if self.site not in EBAY_SITES:
            known = ", ".join(sorted(EBAY_SITES))
            raise ValueError(f"site {self.site[:40]!r} is not an eBay marketplace id ({known})")


# -- wire shapes (documented field names [B1]; envelopes beyond them INFERRED) ------------------

class _Message(msgspec.Struct, frozen=True):
    messageId: str
    createdDate: str | None = None
    messageBody: str | None = None
    senderUsername: str | None = None
    recipientUsername: str | None = None
    subject: str | None = None


class _ConversationDetail(msgspec.Struct, frozen=True):
    conversationId: str
    conversationType: str | None = None
    conversationStatus: str | None = None
    createdDate: str | None = None
    latestMessage: _Message | None = None
    referenceId: str | None = None
    referenceType: str | None = None


class _ConversationList(msgspec.Struct, frozen=True):
    conversations: list[_ConversationDetail] = []
    total: int | None = None
    next: str | None = None


class _ConversationPage(msgspec.Struct, frozen=True):
    messages: list[_Message] = []
    conversationType: str | None = None
    conversationStatus: str | None = None
    total: int | None = None
    next: str | None = None


class _Sent(msgspec.Struct, frozen=True):
    messageId: str | None = None


class _ErrorItem(msgspec.Struct, frozen=True):
    errorId: int | str | None = None


class _Errors(msgspec.Struct, frozen=True):
    errors: list[_ErrorItem] = []


class _Seen(msgspec.Struct, frozen=True, array_like=True):
    """A conversation's newest message time handled and the message ids at exactly then."""

    at: float
    ids: tuple[str, ...] = ()


class _Cursor(msgspec.Struct, frozen=True):
    """``since``: conversations whose newest message is older (less the overlap) were all
    handled; ``seen``: per conversation, its newest message handled."""

    since: float
    seen: dict[str, _Seen] = {}


_list = msgspec.json.Decoder(_ConversationList)
_page = msgspec.json.Decoder(_ConversationPage)
_cursor = msgspec.msgpack.Decoder(_Cursor)


def _when(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def html_in(text: str) -> str | None:
    """The first HTML tag in ``text`` (cut to 40 characters), else None."""
    found = _HTML_TAG.search(text)
    return found.group(0)[:40] if found else None


class EbayRefresher:
    """eBay's refresh grant: ``POST /identity/v1/oauth2/token`` with ``Authorization: Basic
    base64(AppID:CertID)``, form ``grant_type=refresh_token``, the refresh token and the
    scopes it was granted (eBay wants the scope list again). The answer has no new refresh
    token (eBay's lasts 18 months); ``channels.tokens.merge_refreshed`` keeps the old one, and
    should eBay start rotating it, the new one is kept: the token store's single flight makes
    either safe across processes. 400/401/403 are refusals (``AuthError``), the rest retried."""

    def __init__(self, http: aiohttp.ClientSession, token_url: str, *, app_id: str,
                 cert_id: Secret, timeout: float, now: Callable[[], float] = time.time) -> None:
        self.http = http
        self.token_url = token_url
        self.app_id = app_id
        self.cert_id = cert_id
        self.timeout = timeout
        self.now = now

    def __repr__(self) -> str:
        return f"EbayRefresher({self.token_url!r}, app_id={self.app_id!r})"

    async def __call__(self, tokens: OAuthTokens) -> OAuthTokens:
        if not tokens.refresh_token:
            raise AuthError("no refresh token is stored: load new tokens")
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        if tokens.scope:
            form["scope"] = tokens.scope
        pair = f"{self.app_id}:{self.cert_id.reveal()}".encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json",
                   "Authorization": "Basic " + base64.b64encode(pair).decode()}
        try:
            async with self.http.post(self.token_url, data=urllib.parse.urlencode(form),
                                      headers=headers, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status = resp.status
                body, truncated = await read_capped(resp, 64 * 1024)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise map_http_error(exc) from None
        if status == 200 and not truncated:
            try:
                got = msgspec.json.decode(body, type=_TokenAnswer)
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise RetryableError("eBay token answer unreadable") from None
            expires_at = self.now() + got.expires_in if got.expires_in else None
            return OAuthTokens(access_token=got.access_token, refresh_token=got.refresh_token,
                               expires_at=expires_at, scope=tokens.scope)
        code = _oauth_error(body)
        detail = f"eBay token endpoint answered HTTP {status}" + (f" ({code})" if code else "")
        if status in (400, 401, 403) or 300 <= status < 400:
            raise AuthError(f"refresh refused: {detail}")
        raise RetryableError(detail)


class _TokenAnswer(msgspec.Struct, frozen=True):
    access_token: Annotated[str, msgspec.Meta(min_length=1)]
    expires_in: float | None = None
    refresh_token: str | None = None


class _OAuthError(msgspec.Struct, frozen=True):
    error: str | None = None


def _oauth_error(body: bytes) -> str | None:
    try:
        return error_code(msgspec.json.decode(body, type=_OAuthError).error)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class EbayChannel(MarketplaceChannel):
    type_name: ClassVar[str] = "ebay"
    settings_type: ClassVar[type[EbaySettings]] = EbaySettings
    settings: EbaySettings
    marketplace: ClassVar[str] = LABEL
    referable_settings: ClassVar[tuple[str, ...]] = ("seller_username", "dev_id", "app_id")
    unique_settings: ClassVar[tuple[str, ...]] = ("seller_username",)
    capabilities = Capabilities(
        max_text_length=MAX_TEXT, reply_window_seconds=WINDOW_SECONDS,
        # Replies go into the buyer's conversation; starting one (otherPartyUsername) is not
        # offered here.
        can_initiate=False, threading=True, html=False, fetch_after_notify=True,
        rate_limits=(RateLimit.within(75, 60.0, burst=5),),
    )

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        # One bucket for every call of this seller: reads (``read_turn``) and sends (the hub's
        # sender paces ``capabilities.rate_limits``) name the same limit, so they share it.
        budget = RateLimit.within(settings.calls_per_minute, 60.0, burst=5)
        self.read_limits = (budget,)
        self.capabilities = msgspec.structs.replace(type(self).capabilities,
                                                    rate_limits=(budget,))
        self._refresher: EbayRefresher | None = None
        self._seller = settings.seller_username.casefold()

    # -- tokens and calls --------------------------------------------------------------------

    @property
    def refresher(self) -> Refresher:
        if self._refresher is None:
            url = self.settings.token_url or self.settings.base_url + TOKEN_PATH
            self._refresher = EbayRefresher(self.context.http, url, app_id=self.settings.app_id,
                                            cert_id=self.settings.cert_id,
                                            timeout=self.settings.timeout_seconds)
        return self._refresher

    async def _get(self, path: str, params: Mapping[str, str]) -> bytes:
        """One paced, authorized GET under the Message API; the answer's body."""
        await self.read_turn()

        async def call(token: str) -> bytes:
            answer = await self.call_api("GET", API_PATH + path, params=params,
                                         headers=self._headers(token))
            return answer.body
        return await self.authorized(call)

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "application/json",
                "X-EBAY-C-MARKETPLACE-ID": self.settings.site}

    def api_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
        """eBay REST errors are ``{"errors": [{"errorId", "domain", "category", "message",
        ...}]}``: only the numeric ``errorId`` is repeated (``message`` may echo what the buyer
        wrote). 403: the grant does not cover the call, which no refresh mends."""
        try:
            errors = msgspec.json.decode(body, type=_Errors).errors
        except (msgspec.DecodeError, msgspec.ValidationError):
            errors = []
        code = next((error_code(str(e.errorId)) for e in errors if e.errorId is not None), None)
        if status == 403:
            return AuthError(f"ebay HTTP 403 (errorId {code or 'none'}): the seller's grant "
                             "does not cover this call")
        base = super().api_error(status, body, headers)
        if code is not None and type(base) is PermanentError:
            return PermanentError(f"{base} (errorId {code})")
        return base

    # -- inbound: notifications --------------------------------------------------------------

    def verify(self, request: web.Request, body: bytes) -> None:
        """The signature is inside the body: a body that cannot be read safely, names no
        Timestamp or signature, is signed wrongly or is stale is refused (401, not kept)."""
        try:
            note = read_notification(body)
        except (UnsafeXml, ValueError) as exc:
            raise InvalidSignature(f"not a signed eBay notification: {str(exc)[:120]}") \
                from None
        if not note.signature or not note.timestamp:
            raise InvalidSignature("NotificationSignature or Timestamp is missing")
        s = self.settings
        if not signature_matches(note.signature, note.timestamp, s.dev_id, s.app_id,
                                 s.cert_id.reveal()):
            raise InvalidSignature("NotificationSignature does not sign this Timestamp")
        sent = timestamp_seconds(note.timestamp)
        if sent is None or abs(time.time() - sent) > s.notification_max_age_seconds:
            raise InvalidSignature(f"notification Timestamp is more than "
                                   f"{s.notification_max_age_seconds:g} s from now (replay?)")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            note = read_notification(body)
        except (UnsafeXml, ValueError) as exc:
            raise MalformedPayload(f"not an eBay notification: {str(exc)[:120]}") from None
        if note.event != EVENT:
            return []  # another event: acknowledged, ignored
        if (note.recipient or "").casefold() != self._seller:
            raise MalformedPayload("notification for another seller (RecipientUserID is not "
                                   "this instance's seller_username)")
        if not note.sender or not _USERNAME.fullmatch(note.sender):
            raise MalformedPayload("notification names no usable Sender")
        if note.item_id and not _ITEM.fullmatch(note.item_id):
            raise MalformedPayload("notification's ItemID is not an item id")
        resource = f"{note.sender}|{note.item_id or ''}"
        identity = f"{note.message_id or ''}@{note.timestamp or ''}"
        key = identity if note.message_id else "h:" + hashlib.sha256(body).hexdigest()
        return [FetchNotice(resource=resource, dedupe_key=key[:200])]

    # -- inbound: fetch ----------------------------------------------------------------------

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        """The buyer's conversations about the listing the notification named (at most
        ``MAX_LOOKUPS``), each read and checked to be our seller's."""
        buyer, _, item = resource.partition("|")
        if not _USERNAME.fullmatch(buyer) or (item and not _ITEM.fullmatch(item)):
            raise PermanentError("resource is not a buyer and listing")
        params = {"conversation_type": MEMBERS, "other_party_username": buyer,
                  "limit": str(MAX_LOOKUPS), "offset": "0"}
        if item:
            params.update(reference_id=item, reference_type="LISTING")
        found = _list.decode(await self._get("/conversation", params)).conversations
        if not found:
            # The list may lag the notification; the reconciliation poll covers it as well.
            raise RetryableError("no conversation with that buyer about that listing is "
                                 "listed yet", retry_after=30.0)
        out: list[InboundMessage] = []
        for conversation in found[:MAX_LOOKUPS]:
            messages = await self.read_conversation(conversation.conversationId)
            out.extend(self._normalize(conversation, messages))
        out.sort(key=lambda m: m.sent_at or 0.0)
        return out

    async def read_conversation(self, conversation_id: str) -> list[_Message]:
        """Every message of a conversation, pages of ``PAGE_LIMIT``, checked to be between our
        seller and another member (``PermanentError`` otherwise: nothing of it is stored)."""
        if not _CONVERSATION.fullmatch(conversation_id):
            raise PermanentError("conversation id is not an eBay id")
        path = "/conversation/" + urllib.parse.quote(conversation_id, safe="")
        messages: list[_Message] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = _page.decode(await self._get(path, {
                "conversation_type": MEMBERS, "limit": str(PAGE_LIMIT), "offset": str(offset)}))
            if page.conversationType not in (None, MEMBERS):
                raise PermanentError(f"conversation {conversation_id[:40]} is not between "
                                     "members; not stored")
            messages.extend(page.messages)
            offset += len(page.messages)
            if not page.messages or not page.next or (page.total is not None
                                                      and offset >= page.total):
                break
        for message in messages:
            people = {(message.senderUsername or "").casefold(),
                      (message.recipientUsername or "").casefold()}
            if self._seller not in people:
                raise PermanentError(f"conversation {conversation_id[:40]} is not seller "
                                     f"{self.settings.seller_username}'s; not stored")
        return messages

    def _normalize(self, conversation: _ConversationDetail, messages: Sequence[_Message],
                   seen: _Seen | None = None) -> list[InboundMessage]:
        """The buyer's messages (ours skipped; with ``seen``, only those newer than it)."""
        reference = conversation.referenceId if conversation.referenceType == "LISTING" \
            else None
        hints = market_hints(EBAY_SITES.get(self.settings.site), label=LABEL,
                             order_id=f"listing:{reference}" if reference else None)
        out: list[InboundMessage] = []
        for message in messages:
            sender = message.senderUsername or ""
            if sender.casefold() == self._seller or not sender:
                continue
            sent = _when(message.createdDate)
            if seen is not None and sent is not None and (
                    sent < seen.at or (sent == seen.at and message.messageId in seen.ids)):
                continue
            text = message.messageBody or message.subject or ""
            out.append(InboundMessage(
                channel_type=self.type_name, channel_instance=self.instance,
                provider_message_id=message.messageId,
                thread_id=conversation.conversationId, sender_handle=sender,
                sender_name=sender, text=text, sent_at=sent, hints=hints))
        return out

    # -- inbound: reconciliation -------------------------------------------------------------

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        """``GET /conversation`` newest first (INFERRED order), page by page, until a
        conversation older than the cursor's ``since`` (less ``OVERLAP_SECONDS``); each one
        with a message newer than the cursor's record of it is read and its new buyer
        messages returned. A new account starts ``backfill_days`` back."""
        state = _cursor.decode(cursor) if cursor else _Cursor(
            since=time.time() - self.settings.backfill_days * 86400)
        limit = self.settings.page_limit
        changed: list[tuple[_ConversationDetail, float]] = []
        complete = False
        offset = 0
        for _ in range(MAX_PAGES):
            page = _list.decode(await self._get("/conversation", {
                "conversation_type": MEMBERS, "limit": str(limit), "offset": str(offset)}))
            for conversation in page.conversations:
                latest = _when(conversation.latestMessage.createdDate
                               if conversation.latestMessage else None) \
                    or _when(conversation.createdDate) or 0.0
                if latest < state.since - OVERLAP_SECONDS:
                    complete = True
                    break
                known = state.seen.get(conversation.conversationId)
                last = conversation.latestMessage
                if known is None or latest > known.at or (
                        latest == known.at and last is not None
                        and last.messageId not in known.ids):
                    changed.append((conversation, latest))
            offset += len(page.conversations)
            if complete or not page.conversations or not page.next or (
                    page.total is not None and offset >= page.total):
                complete = True
                break
        if not changed:
            return [], cursor if cursor else msgspec.msgpack.encode(state)
        if len(changed) > MAX_READS_PER_POLL:
            # A backfill or a burst: the oldest first, the rest next poll (the cursor's
            # ``seen`` skips what was read), so one poll stays well inside its timeout and
            # the call budget instead of timing out and starting over for ever.
            changed.sort(key=lambda pair: pair[1])
            del changed[MAX_READS_PER_POLL:]
            complete = False
        seen = dict(state.seen)
        items: list[PollItem] = []
        for conversation, latest in changed:
            cid = conversation.conversationId
            try:
                messages = await self.read_conversation(cid)
            except PermanentError as exc:
                # Not ours (or not between members): nothing of it is stored, the id and the
                # reason are kept for an operator, and the poll moves on past it.
                log.warning("channel %s: conversation refused: %s", self.instance, exc)
                items.append(Unusable(raw=f"ebay conversation {cid}".encode(),
                                      reason=str(exc)))
                messages = []
            items.extend(self._normalize(conversation, messages, seen.get(cid)))
            times = [t for m in messages if (t := _when(m.createdDate)) is not None]
            newest = max(times, default=latest)
            ids = {m.messageId for m in messages if _when(m.createdDate) == newest}
            if conversation.latestMessage is not None and newest == latest:
                ids.add(conversation.latestMessage.messageId)  # a refused one has no messages
            seen.pop(cid, None)
            seen[cid] = _Seen(newest, tuple(sorted(ids)))
        since = state.since
        if complete:  # every conversation newer than ``since`` was looked at
            since = max(since, max(latest for _, latest in changed))
        horizon = since - OVERLAP_SECONDS
        kept = {cid: s for cid, s in seen.items() if s.at >= horizon}
        while len(kept) > MAX_CURSOR_CONVERSATIONS:
            kept.pop(min(kept, key=lambda c: kept[c].at))
        items.sort(key=lambda m: getattr(m, "sent_at", None) or 0.0)
        return items, msgspec.msgpack.encode(_Cursor(since=since, seen=kept))

    # -- outbound ----------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        """No HTML (eBay refuses it [B8]), then the base's length and window checks. eBay
        counts the 90 days from the order; the Message API names no order date, so the window
        runs from the buyer's last message (``reply_window_seconds``) and a reply eBay still
        refuses comes back as its error."""
        tag = html_in(reply.text)
        if tag is not None and reply.template is None:
            raise ReplyRejected(f"ebay does not accept HTML in messages; remove {tag!r} and "
                                "send plain text")
        super().check_reply(reply, now=now)

    async def deliver(self, reply: OutboundReply) -> str:
        if not _CONVERSATION.fullmatch(reply.thread_id):
            raise ReplyRejected("the conversation names no eBay conversation id")
        payload = msgspec.json.encode({"conversationId": reply.thread_id,
                                       "messageText": reply.text})
        # Not paced here: the hub's sender took this send's turn under ``rate_limits`` (the
        # same bucket as the reads) before calling us.

        async def call(token: str) -> bytes:
            answer = await self.call_api("POST", API_PATH + "/send_message", data=payload,
                                         headers={**self._headers(token),
                                                  "Content-Type": "application/json"})
            return answer.body
        try:
            sent = msgspec.json.decode(await self.authorized(call), type=_Sent)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return reply.reply_id
        return sent.messageId or reply.reply_id
