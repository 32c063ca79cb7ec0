"""AliExpress buyer messages, EXPERIMENTAL: polling only (issue 17; CHANNELS.md §6.3).

No official message documentation was found: only auto-generated TOP SDK request classes and
the legacy relation-list result fields (CHANNELS.md §6.3). So the channel runs only with
``experimental = true``, and its README lists what is inferred.

Gateway: a signed form ``POST {api_base_url}{api_path}`` (legacy ``/router/rest``; the new
platform's ``/sync`` may differ) with ``method``, ``app_key``, ``session`` (the seller's access
token), ``timestamp``, ``format=json``, ``v=2.0``, ``sign_method=hmac-sha1`` and ``sign``
(``signing.py``). AliExpress pushes nothing, so inbound is the poll alone:

1. ``…versiontwo.querymsgrelationlist`` pages the relations (conversations) newest first by
   ``messageTime``. The cursor is the newest ``messageTime`` handled, plus the
   ``lastMessageId`` of each relation handled at exactly that time (ties);
2. ``…versiontwo.querymsgdetaillist`` reads each changed relation (``channelId``) newest first.
   Each message newer than the cursor, and not newer than the relation's listed
   ``messageTime``, becomes an ``InboundMessage`` keyed by its id. A later message belongs to
   the next poll, so nothing is stored twice. Our own messages are skipped. A message that
   does not involve our seller goes to the quarantine, never the store.

Replies: ``aliexpress.message.redefining.addmsg`` (``buyer_id``, ``channel_id``, ``content``,
``msg_sources``), after the checks: plain text (HTML refused) and at most ``MAX_TEXT``
characters (none documented: ours, conservative). Tokens: the OAuth2 refresh grant at
``token_url`` through the token store.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final

import msgspec
from aiohttp import web

from channels.aliexpress.signing import sign
from channels.base import AdapterContext, Capabilities, Parsed
from channels.errors import (
    AuthError,
    ChannelError,
    InvalidSignature,
    PermanentError,
    RateLimited,
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
from channels.marketplace.china import BEIJING, html_in, millis
from channels.marketplace.sites import Market, market_hints
from channels.models import InboundMessage, OutboundReply
from channels.polling import Polled, PollItem, Unusable
from channels.secrets import Secret
from channels.services.limits import RateLimit
from channels.services.tokens import Refresher
from channels.tokens import OAuth2Refresher

log = logging.getLogger(__name__)

LABEL: Final = "aliexpress"
RELATIONS: Final = "aliexpress.message.redefining.versiontwo.querymsgrelationlist"
DETAILS: Final = "aliexpress.message.redefining.versiontwo.querymsgdetaillist"
ADD_MSG: Final = "aliexpress.message.redefining.addmsg"
DEFAULT_TOKEN_URL: Final = "https://oauth.aliexpress.com/token"
# No reply length limit was found (CHANNELS.md §6.3): INFERRED, a conservative choice of ours.
MAX_TEXT: Final = 1000
# TOP gateway error codes (Taobao Open Platform conventions; INFERRED for AliExpress):
# 26 missing session, 27 invalid session, 53 session expired → refresh; 7 app call limited.
TOKEN_CODES: Final = frozenset({"26", "27", "53"})
RATE_CODES: Final = frozenset({"7"})
# A thread of an order relation: ``msg_sources`` for the reply is ``order_msg`` (§6.3).
ORDER_PREFIX: Final = "order-"
MAX_TIED: Final = 500
MAX_DETAIL_PAGES: Final = 20
_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class AliExpressSettings(MarketplaceSettings, frozen=True, kw_only=True,
                         forbid_unknown_fields=True):
    """One AliExpress seller account.

    ``experimental`` must be true (no official message documentation exists).
    ``app_key``/``app_secret``: the application (``app_secret`` as ``env:``/``file:``): it
    signs every call. ``seller_login_id``: the seller's login id, which every message must
    involve; ``seller_id``: its numeric id, sent with replies when set. ``api_path``: the
    gateway path (``/router/rest`` legacy, ``/sync`` on the new platform). ``token_url``: the
    OAuth2 token endpoint for refreshes. ``market``/``language``: optional hints for an account
    that sells into one market (cross-border: none by default). ``reads_per_second``: our
    conservative pace (no limit documented).
    """

    api_base_url: str = "https://gw.api.taobao.com"
    api_path: Annotated[str, msgspec.Meta(pattern=r"^/[A-Za-z0-9_/.-]{1,100}$")] = \
        "/router/rest"
    experimental: bool = False
    app_key: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    app_secret: Secret
    seller_login_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    seller_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}$")] | None = None
    token_url: str = DEFAULT_TOKEN_URL
    market: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")] | None = None
    language: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}$")] | None = None
    reads_per_second: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 5
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    max_pages: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.experimental:
            raise ValueError(
                "the aliexpress channel is EXPERIMENTAL and needs experimental = true in its "
                "settings: no official AliExpress message API documentation was found; the "
                "shapes come from auto-generated SDK classes and third-party code (CHANNELS.md "
                "§6.3). Set it only once you accept that the channel may stop working when "
                "AliExpress changes what it never documented")
        check_api_base_url(self.token_url)


# -- wire shapes: INFERRED beyond the §6.3 field names ------------------------------------------

class Relation(msgspec.Struct, frozen=True):
    """``querymsgrelationlist`` result fields (names from CHANNELS.md §6.3)."""

    channelId: str | int
    messageTime: int | str | None = None
    lastMessageId: str | int | None = None
    otherLoginId: str | None = None
    otherName: str | None = None
    unreadCount: int = 0
    lastMessageIsOwn: bool | None = None
    dealStat: str | None = None
    childId: str | int | None = None


class Detail(msgspec.Struct, frozen=True):
    """``querymsgdetaillist`` message (every name INFERRED)."""

    id: str | int
    content: str = ""
    gmtCreate: int | str | None = None
    senderLoginId: str | None = None
    senderName: str | None = None
    receiverLoginId: str | None = None
    messageType: str | None = None


class _TopError(msgspec.Struct, frozen=True):
    code: int | str | None = None
    sub_code: str | None = None


class _ErrorEnvelope(msgspec.Struct, frozen=True):
    error_response: _TopError | None = None


class Cursor(msgspec.Struct, frozen=True, omit_defaults=True):
    """``t``: the newest ``messageTime`` handled (ms); ``tied``: the ``lastMessageId`` of each
    relation handled at exactly ``t``; ``seen``: the ids of messages stored at exactly ``t``."""

    t: int = 0
    tied: dict[str, str] = {}
    seen: tuple[str, ...] = ()


_error = msgspec.json.Decoder(_ErrorEnvelope)
_cursor = msgspec.json.Decoder(Cursor)


def _result(decoded: Any, method: str) -> dict[str, Any]:
    """``{<method with _ for .>_response: {result: {...}}}`` → the result (INFERRED TOP
    envelope); an empty dict when absent."""
    if not isinstance(decoded, dict):
        return {}
    body = decoded.get(method.replace(".", "_") + "_response")
    if not isinstance(body, dict):
        return {}
    result = body.get("result", body)
    return result if isinstance(result, dict) else {}


class AliExpressChannel(MarketplaceChannel):
    """See the module docstring. Polling only: the webhook path answers 405 to every method."""

    type_name: ClassVar[str] = "aliexpress"
    settings_type: ClassVar[type[AliExpressSettings]] = AliExpressSettings
    settings: AliExpressSettings
    marketplace: ClassVar[str] = LABEL
    webhook_methods: ClassVar[frozenset[str]] = frozenset()
    referable_settings: ClassVar[tuple[str, ...]] = ("app_key", "seller_login_id",
                                                     "seller_id")
    unique_settings: ClassVar[tuple[str, ...]] = ("seller_login_id",)
    capabilities = Capabilities(
        max_text_length=MAX_TEXT, can_initiate=False, threading=True, html=False,
        # No limit is documented (CHANNELS.md §6.3): our conservative pace for replies.
        rate_limits=(RateLimit.within(5, 1.0, burst=2),),
    )
    experimental: ClassVar[bool] = True

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.read_limits = (RateLimit.within(settings.reads_per_second, 1.0, burst=1),)
        self._refresher: Refresher | None = None

    # -- no push ------------------------------------------------------------------------------

    def verify(self, request: web.Request, body: bytes) -> None:
        """AliExpress pushes no messages (CHANNELS.md §6.3): no body is authentic here."""
        raise InvalidSignature("aliexpress has no message push; this channel only polls")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        return []  # never reached: ``verify`` refuses every body

    # -- tokens and calls ---------------------------------------------------------------------

    @property
    def refresher(self) -> Refresher:
        """The OAuth2 refresh grant with ``client_id`` = ``app_key`` (legacy AliExpress OAuth;
        its answer's fields are INFERRED to be the standard ones)."""
        if self._refresher is None:
            self._refresher = OAuth2Refresher(
                self.context.http, self.settings.token_url, client_id=self.settings.app_key,
                client_secret=self.settings.app_secret,
                timeout=self.settings.timeout_seconds)
        return self._refresher

    def signed(self, method: str, token: str, params: Mapping[str, str]) -> dict[str, str]:
        """The full, signed form of one call."""
        s = self.settings
        form = {**params, "method": method, "app_key": s.app_key, "session": token,
                "timestamp": datetime.datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
                "format": "json", "v": "2.0", "sign_method": "hmac-sha1"}
        form["sign"] = sign(s.app_secret.reveal_bytes(), s.api_path, form)
        return form

    async def gateway(self, method: str, params: Mapping[str, str], *,
                      read: bool = True) -> Any:
        """One signed call with a fresh token (``read``: paced under ``read_limits``); the
        decoded answer, or the error its ``error_response`` stands for."""
        if read:
            await self.read_turn()

        async def call(token: str) -> Any:
            answer = await self.call_api(
                "POST", self.settings.api_path, data=self.signed(method, token, params),
                headers={"Accept": "application/json",
                         "Content-Type": "application/x-www-form-urlencoded"})
            try:
                decoded = msgspec.json.decode(answer.body)
                envelope = _error.decode(answer.body)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                raise RetryableError("aliexpress answered something that is not a gateway "
                                     "answer") from None
            if envelope.error_response is not None:
                raise self._error_for(envelope.error_response)
            return decoded

        return await self.authorized(call)

    def _error_for(self, error: _TopError) -> ChannelError:
        """A TOP ``error_response``: only ``code`` and ``sub_code`` are repeated, never
        ``msg``/``sub_msg`` (they may echo what was sent)."""
        code = error_code(str(error.code)) or "unnamed"
        sub = error_code(error.sub_code) or ""
        detail = f"aliexpress error {code}" + (f" ({sub})" if sub else "")
        if code in TOKEN_CODES:
            return TokenExpired(f"{detail}: session refused")
        if code in RATE_CODES or sub.startswith("accesscontrol.limited"):
            return RateLimited(f"{detail}: call limit reached")
        if sub.startswith("isp.") or (code == "15" and not sub.startswith("isv.")):
            return RetryableError(detail)
        if code == "11" or sub.startswith("isv.permission") or "insufficient" in sub:
            return AuthError(f"{detail}: the app or session lacks the permission")
        return PermanentError(detail)

    def api_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
        try:
            envelope = _error.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            envelope = _ErrorEnvelope()
        if envelope.error_response is not None and status not in (429, 403) and status < 500:
            return self._error_for(envelope.error_response)
        if status == 403:
            return AuthError("aliexpress HTTP 403: the seller's grant does not cover this call")
        return super().api_error(status, body, headers)

    # -- the poll -----------------------------------------------------------------------------

    def _market(self) -> Market | None:
        s = self.settings
        if s.market is None and s.language is None:
            return None
        return Market(site=s.market or "", country=s.market or "", language=s.language or "")

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        state = _cursor.decode(cursor) if cursor else Cursor()
        changed: dict[str, tuple[Relation, int]] = {}
        for page in range(1, self.settings.max_pages + 1):
            got = await self.gateway(RELATIONS, {"current_page": str(page),
                                                 "page_size": str(self.settings.page_size)})
            raw = _result(got, RELATIONS).get("relationList") or []
            relations = msgspec.convert(raw if isinstance(raw, list) else [], list[Relation],
                                        strict=False)
            reached = False
            for relation in relations:
                at = millis(relation.messageTime)
                if at is None:
                    continue
                key = str(relation.channelId)
                if at < state.t:
                    reached = True  # newest first: the rest is older
                    break
                if at == state.t and state.tied.get(key) == str(relation.lastMessageId):
                    continue  # handled at this very time, unchanged since
                changed.setdefault(key, (relation, at))
            if reached or len(relations) < self.settings.page_size:
                break
        else:
            log.warning("aliexpress %s: more than %d pages of changed relations in one poll; "
                        "the oldest of them are passed by", self.instance,
                        self.settings.max_pages)
        if not changed:
            return [], cursor or msgspec.json.encode(state)
        ordered = sorted(changed.values(), key=lambda pair: pair[1])
        items: list[PollItem] = []
        stored_at: dict[str, int] = {}
        for relation, at in ordered:
            for item, created in await self._details(relation, at, state):
                items.append(item)
                if isinstance(item, InboundMessage):
                    stored_at[item.provider_message_id] = created
        newest = ordered[-1][1]
        tied = {str(r.channelId): str(r.lastMessageId) for r, at in ordered if at == newest}
        seen = {mid for mid, created in stored_at.items() if created == newest}
        if newest == state.t:
            tied = {**state.tied, **tied}
            seen |= set(state.seen)
        if len(tied) > MAX_TIED or len(seen) > MAX_TIED:
            log.warning("aliexpress %s: over %d relations at one time; the cursor keeps the "
                        "newest of them", self.instance, MAX_TIED)
            tied = dict(list(tied.items())[-MAX_TIED:])
            seen = set(sorted(seen)[-MAX_TIED:])
        return items, msgspec.json.encode(Cursor(t=newest, tied=tied, seen=tuple(sorted(seen))))

    async def _details(self, relation: Relation, until: int,
                       state: Cursor) -> list[tuple[PollItem, int]]:
        """The relation's messages newer than the cursor and not newer than ``until``, oldest
        first, with their times; pages newest first until one reaches the cursor."""
        channel = str(relation.channelId)
        if not _ID.fullmatch(channel):
            return [(Unusable(msgspec.json.encode(relation), "aliexpress channelId is not an "
                              "id"), 0)]
        seen = set(state.seen)
        found: list[tuple[PollItem, int]] = []
        for page in range(1, MAX_DETAIL_PAGES + 1):
            got = await self.gateway(DETAILS, {"channel_id": channel,
                                               "current_page": str(page),
                                               "page_size": str(self.settings.page_size)})
            raw = _result(got, DETAILS).get("messageDetailList") or []
            entries = raw if isinstance(raw, list) else []
            older = False
            for entry in entries:
                try:
                    detail = msgspec.convert(entry, Detail, strict=False)
                except msgspec.ValidationError as exc:
                    found.append((Unusable(msgspec.json.encode(entry),
                                           f"aliexpress message unreadable: {str(exc)[:120]}"),
                                  until))
                    continue
                created = millis(detail.gmtCreate)
                if created is None:
                    found.append((Unusable(msgspec.json.encode(entry),
                                           "aliexpress message without a readable gmtCreate"),
                                  until))
                    continue
                if created < state.t:
                    older = True
                    continue
                if created > until or (created == state.t and str(detail.id) in seen):
                    continue
                item = self._normalize(relation, detail, entry, created)
                if item is not None:
                    found.append((item, created))
            if older or len(entries) < self.settings.page_size:
                break
        found.sort(key=lambda pair: pair[1])
        return found

    def _normalize(self, relation: Relation, detail: Detail, raw: Any,
                   created: int) -> PollItem | None:
        """The buyer's message; None for our seller's own; an ``Unusable`` (quarantined, never
        stored) for one that does not involve our seller."""
        seller = self.settings.seller_login_id
        sender, receiver = detail.senderLoginId, detail.receiverLoginId
        if sender == seller:
            return None
        if receiver is not None and receiver != seller:
            return Unusable(msgspec.json.encode(raw),
                            "aliexpress message names another seller (receiverLoginId is not "
                            "this instance's seller_login_id); not stored")
        buyer = sender or relation.otherLoginId
        if buyer is None or not _ID.fullmatch(buyer):
            return Unusable(msgspec.json.encode(raw), "aliexpress message without a sender")
        channel = str(relation.channelId)
        order = channel if relation.dealStat else None
        return InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=str(detail.id),
            thread_id=(ORDER_PREFIX + channel) if order else channel,
            sender_handle=buyer, sender_name=detail.senderName or relation.otherName,
            text=detail.content, sent_at=created / 1000,
            hints=market_hints(self._market(), label=LABEL, order_id=order))

    # -- replies ------------------------------------------------------------------------------

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        tag = html_in(reply.text)
        if tag is not None:
            raise ReplyRejected(f"aliexpress replies are plain text; remove the HTML ({tag!r})")
        super().check_reply(reply, now=now)

    async def deliver(self, reply: OutboundReply) -> str:
        order = reply.thread_id.startswith(ORDER_PREFIX)
        channel = reply.thread_id.removeprefix(ORDER_PREFIX)
        if not _ID.fullmatch(channel) or not _ID.fullmatch(reply.recipient_handle):
            raise ReplyRejected("the conversation names no AliExpress relation or buyer")
        params = {"buyer_id": reply.recipient_handle, "channel_id": channel,
                  "content": reply.text, "msg_sources": "order_msg" if order else
                  "message_center"}
        if self.settings.seller_id:
            params["seller_id"] = self.settings.seller_id
        got = await self.gateway(ADD_MSG, params, read=False)
        result = _result(got, ADD_MSG)
        sent = result.get("message_id") or result.get("messageId")
        if isinstance(sent, str | int) and not isinstance(sent, bool):
            return str(sent)
        if result.get("is_success") is False or result.get("isSuccess") is False:
            code = error_code(str(result.get("error_code") or result.get("errorCode") or ""))
            raise PermanentError(f"aliexpress refused the message ({code or 'no code'})")
        return reply.reply_id
