"""Shopee Open Platform v2 seller chat (issue 16; CHANNELS.md §6.4; README.md here).

Inbound: Webchat push code 10 is only a hint. ``verify`` checks its ``Authorization`` HMAC over
``callback_url|raw_body`` (documented), ``parse`` turns it into a ``FetchNotice`` naming the
conversation and the hub answers an EMPTY 2xx (documented); ``fetch`` reads the conversation
through ``get_message`` with the shop's token. ``poll`` walks ``get_conversation_list`` as the
reconciliation path (Shopee never replays a dropped push). The chat endpoints are known only
by SDK names (CHANNELS.md §6.4 [S3]): every field read here beyond those names is INFERRED.

Webchat push is only offered to Original, Seller In-house System and Customer Service apps,
not ERP apps (documented [S2]): an ERP partner_id gets no pushes and relies on the poll.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final

import msgspec
from aiohttp import web

from channels.base import Capabilities, IngestOutcome, Parsed
from channels.errors import (
    AuthError,
    ChannelError,
    InvalidSignature,
    MalformedPayload,
    PermanentError,
    RateLimited,
    RetryableError,
    TokenExpired,
)
from channels.http import retry_after_seconds
from channels.marketplace.base import MarketplaceChannel, MarketplaceSettings, error_code
from channels.marketplace.sites import SHOPEE_REGIONS, market_hints
from channels.models import FetchNotice, InboundMessage, OutboundReply
from channels.polling import Polled, PollItem
from channels.secrets import Secret
from channels.services.health import PushSubscriptionRule
from channels.services.limits import RateLimit
from channels.services.tokens import OAuthTokens, Refresher
from channels.shopee.signing import public_sign, shop_sign, verify_push

PUSH_HEADER: Final = "Authorization"
WEBCHAT_PUSH_CODE: Final = 10
REFRESH_PATH: Final = "/api/v2/auth/access_token/get"
CONVERSATIONS_PATH: Final = "/api/v2/sellerchat/get_conversation_list"
MESSAGES_PATH: Final = "/api/v2/sellerchat/get_message"
SEND_PATH: Final = "/api/v2/sellerchat/send_message"
# Shopee's reply length limit is UNVERIFIED; 600 characters is our conservative choice.
MAX_TEXT_LENGTH: Final = 600
PAGE_SIZE: Final = 50
# Error codes that mean "the access token is no good" (documented examples of the shape
# ``error_auth``/``invalid_access_token``; the exact list is INFERRED).
_TOKEN_CODES: Final = frozenset({"invalid_access_token", "error_auth", "invalid_acceess_token",
                                 "error_token_expired", "access_token_expired"})
_RATE_CODES: Final = frozenset({"error_rate_limit", "error_too_many_request",
                                "rate_limit_exceeded"})
_RETRY_CODES: Final = frozenset({"error_server", "error_inner", "error_busi_timeout",
                                 "error_network"})
# The grant does not cover the call (the shop revoked it, or the app lost the chat
# permission): no refresh mends that, an operator must re-authorize (INFERRED names).
_GRANT_CODES: Final = frozenset({"error_permission", "error_shop_unauthorized"})


class ShopeeSettings(MarketplaceSettings, frozen=True, kw_only=True,
                     forbid_unknown_fields=True):
    """One Shopee shop.

    ``partner_id``/``partner_key``: the app's credentials (``partner_key`` as ``env:``/``file:``).
    The app must be of type Original, Seller In-house System or Customer Service: ERP apps get no
    Webchat push (code 10) and then only the reconciliation poll finds messages.
    ``shop_id``: the shop authorized for this instance. ``region``: the shop's region code
    (``BR``, ``MX``, …), the market and language hint of every message.
    """

    api_base_url: str = "https://partner.shopeemobile.com"
    partner_id: Annotated[int, msgspec.Meta(gt=0)]
    partner_key: Secret
    shop_id: Annotated[int, msgspec.Meta(gt=0)]
    region: str = ""
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = PAGE_SIZE


# -- wire shapes (INFERRED beyond the SDK field names, CHANNELS.md §6.4) -----------------------

class _PushData(msgspec.Struct, frozen=True):
    conversation_id: str | int | None = None
    message_id: str | int | None = None


class _Push(msgspec.Struct, frozen=True):
    code: int
    shop_id: int | None = None
    timestamp: int | None = None
    data: Any = None


class _Content(msgspec.Struct, frozen=True):
    text: str | None = None
    url: str | None = None
    order_sn: str | None = None
    item_id: int | None = None


class _Message(msgspec.Struct, frozen=True):
    message_id: str | int
    from_id: int
    to_id: int
    conversation_id: str | int
    message_type: str = "text"
    created_timestamp: float | None = None
    content: _Content = _Content()
    from_shop_id: int | None = None


class _Conversation(msgspec.Struct, frozen=True):
    conversation_id: str | int
    to_id: int | None = None
    to_name: str | None = None
    last_message_timestamp: int = 0


class _Envelope(msgspec.Struct, frozen=True):
    error: str = ""
    message: str = ""
    request_id: str = ""
    response: Any = None


_push = msgspec.json.Decoder(_Push)
_envelope = msgspec.json.Decoder(_Envelope)


class _Cursor(msgspec.Struct, frozen=True):
    """Newest ``last_message_timestamp`` seen (ns, as the list pages by) and the conversations
    already handled at exactly that timestamp (ties)."""

    ts: int = 0
    ids: tuple[str, ...] = ()


def _seconds(value: float | None) -> float | None:
    """``created_timestamp`` in seconds; a value this large is nanoseconds (INFERRED)."""
    if value is None:
        return None
    if value > 1e17:
        return value / 1e9
    if value > 1e14:
        return value / 1e6
    if value > 1e11:
        return value / 1e3
    return float(value)


class ShopeeChannel(MarketplaceChannel):
    type_name: ClassVar[str] = "shopee"
    settings_type: ClassVar[type[ShopeeSettings]] = ShopeeSettings
    settings: ShopeeSettings
    marketplace: ClassVar[str] = "shopee"
    referable_settings: ClassVar[tuple[str, ...]] = ()
    unique_settings: ClassVar[tuple[str, ...]] = ("shop_id",)
    # UNVERIFIED: Shopee publishes no chat rate limits; conservative values of ours.
    read_limits: tuple[RateLimit, ...] = (RateLimit.within(300, 60.0),)
    capabilities = Capabilities(
        max_text_length=MAX_TEXT_LENGTH,
        # Conservative: we only answer buyers who wrote; seller-initiated chat is not assumed.
        can_initiate=False,
        threading=True,
        rate_limits=(RateLimit.within(60, 60.0), RateLimit.within(10, 60.0, "recipient")),
        fetch_after_notify=True,
        push_subscription=PushSubscriptionRule.shopee(),
    )

    # -- signing and calls --------------------------------------------------------------------

    def _shop_params(self, path: str, access_token: str) -> dict[str, str]:
        ts = int(time.time())
        s = self.settings
        return {"partner_id": str(s.partner_id), "timestamp": str(ts),
                "access_token": access_token, "shop_id": str(s.shop_id),
                "sign": shop_sign(s.partner_key.reveal_bytes(), partner_id=s.partner_id,
                                  path=path, timestamp=ts, access_token=access_token,
                                  shop_id=s.shop_id)}

    async def _shop_call(self, method: str, path: str, access_token: str, *,
                         query: Mapping[str, str] | None = None,
                         json_body: Any = None) -> Any:
        params = {**(query or {}), **self._shop_params(path, access_token)}
        data = None if json_body is None else msgspec.json.encode(json_body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        answer = await self.call_api(method, path, headers=headers, params=params, data=data)
        return self._unwrap(answer.status, answer.body, answer.headers)

    def _unwrap(self, status: int, body: bytes, headers: Mapping[str, str]) -> Any:
        try:
            env = _envelope.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise RetryableError(f"shopee HTTP {status}: unreadable answer") from None
        if env.error:
            raise self._error_for(env.error, status, headers)
        return env.response

    def _error_for(self, code: str, status: int, headers: Mapping[str, str]) -> ChannelError:
        """Shopee's ``error`` code → our error; the free-text ``message`` is never repeated."""
        named = error_code(code) or "unnamed"
        detail = f"shopee error {named} (HTTP {status})"
        lowered = code.lower()
        if lowered in _TOKEN_CODES or "access_token" in lowered:
            return TokenExpired(detail)
        if lowered in _GRANT_CODES:
            return AuthError(f"{detail}: the shop's authorization does not cover this call; "
                             "re-authorize with `inboxhub channels auth`")
        if lowered in _RATE_CODES or status == 429 or "rate_limit" in lowered:
            return RateLimited(detail,
                               retry_after=retry_after_seconds(headers.get("Retry-After")))
        if lowered in _RETRY_CODES or status >= 500:
            return RetryableError(detail)
        return PermanentError(detail)

    def api_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
        try:
            env = _envelope.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return super().api_error(status, body, headers)
        if env.error:
            return self._error_for(env.error, status, headers)
        return super().api_error(status, body, headers)

    @property
    def refresher(self) -> Refresher:
        return self._refresh

    async def _refresh(self, tokens: OAuthTokens) -> OAuthTokens:
        """``POST /api/v2/auth/access_token/get`` signed as a public call (documented). The
        refresh token rotates: the answer's replaces the old one, which is dead after use."""
        if not tokens.refresh_token:
            raise AuthError("shopee: no refresh token stored; run `inboxhub channels auth`")
        s = self.settings
        ts = int(time.time())
        params = {"partner_id": str(s.partner_id), "timestamp": str(ts),
                  "sign": public_sign(s.partner_key.reveal_bytes(), partner_id=s.partner_id,
                                      path=REFRESH_PATH, timestamp=ts)}
        body = msgspec.json.encode({"refresh_token": tokens.refresh_token,
                                    "partner_id": s.partner_id, "shop_id": s.shop_id})
        try:
            answer = await self.call_api("POST", REFRESH_PATH, params=params, data=body,
                                         headers={"Content-Type": "application/json"})
        except (TokenExpired, PermanentError) as exc:
            raise AuthError(f"shopee refused the token refresh: {exc}") from None
        try:
            got = msgspec.json.decode(answer.body)
        except msgspec.DecodeError:
            raise RetryableError("shopee token answer unreadable") from None
        if not isinstance(got, dict):
            raise RetryableError("shopee token answer unreadable")
        if got.get("error"):
            err = self._error_for(str(got["error"]), answer.status, answer.headers)
            if isinstance(err, (RetryableError)) and not isinstance(err, TokenExpired):
                raise err
            raise AuthError(f"shopee refused the token refresh: {err}")
        access, refresh = got.get("access_token"), got.get("refresh_token")
        if not isinstance(access, str) or not access:
            raise RetryableError("shopee token answer without access_token")
        expire_in = got.get("expire_in")
        expires_at = time.time() + float(expire_in) if isinstance(expire_in, int | float) \
            else None
        return OAuthTokens(access_token=access,
                           refresh_token=refresh if isinstance(refresh, str) else None,
                           expires_at=expires_at)

    # -- push ---------------------------------------------------------------------------------

    def verify(self, request: web.Request, body: bytes) -> None:
        if not verify_push(self.settings.partner_key.reveal_bytes(), self.signed_urls(request),
                           body, request.headers.get(PUSH_HEADER)):
            raise InvalidSignature(f"{PUSH_HEADER} is missing or does not sign this push")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            push = _push.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"not a Shopee push: {type(exc).__name__}") from None
        if push.shop_id != self.settings.shop_id:
            raise MalformedPayload("push names another shop")
        if push.code != WEBCHAT_PUSH_CODE:
            return []  # other push codes: acknowledged, ignored
        data = push.data if isinstance(push.data, dict) else {}
        # INFERRED data shape: {"conversation_id": ..., "message_id": ..., ...} (possibly
        # nested under "content"); only the conversation id is used, as a hint.
        content = data.get("content")
        inner: dict[str, Any] = content if isinstance(content, dict) else {}
        conversation = data.get("conversation_id", inner.get("conversation_id"))
        message_id = data.get("message_id", inner.get("message_id"))
        if not isinstance(conversation, str | int) or isinstance(conversation, bool) \
                or not str(conversation).isdigit() or len(str(conversation)) > 40:
            raise MalformedPayload("webchat push without a conversation id")
        if isinstance(message_id, str | int) and not isinstance(message_id, bool):
            key = f"m:{message_id}"
        else:
            key = "h:" + hashlib.sha256(body).hexdigest()
        return [FetchNotice(resource=str(conversation), dedupe_key=key)]

    def accepted(self, outcomes: Sequence[IngestOutcome]) -> web.StreamResponse:
        return web.Response(status=200, body=b"")  # Shopee wants an empty 2xx (documented)

    # -- fetch and poll -----------------------------------------------------------------------

    async def _messages(self, conversation: str, names: Mapping[str, str]) -> list[InboundMessage]:
        if not conversation.isdigit():
            raise PermanentError("conversation id is not numeric")
        await self.read_turn()
        query = {"conversation_id": conversation, "offset": "", "page_size": str(PAGE_SIZE)}

        async def call(token: str) -> Any:
            return await self._shop_call("GET", MESSAGES_PATH, token, query=query)

        response = await self.authorized(call)
        raw = response.get("messages", []) if isinstance(response, dict) else []
        messages = msgspec.convert(raw, list[_Message], strict=False)
        return self._normalize(messages, names)

    def _normalize(self, messages: Sequence[_Message],
                   names: Mapping[str, str]) -> list[InboundMessage]:
        """Buyer messages only: a message whose ``from_id`` is this shop (or whose
        ``from_shop_id`` is) is our own and skipped (INFERRED: Shopee's seller user id equals
        the shop id for chat). The latest order card's ``order_sn`` rides on every message."""
        shop = self.settings.shop_id
        market = SHOPEE_REGIONS.get(self.settings.region.upper())
        ordered = sorted(messages, key=lambda m: m.created_timestamp or 0)
        order_sn: str | None = None
        out: list[InboundMessage] = []
        for m in ordered:
            if m.content.order_sn:
                order_sn = m.content.order_sn
            if m.from_id == shop or m.from_shop_id == shop:
                continue
            text = m.content.text or ""
            if not text and m.content.url:
                text = f"[{m.message_type}] {m.content.url}"
            elif not text and m.content.order_sn:
                text = f"[order] {m.content.order_sn}"
            elif not text and m.content.item_id:
                text = f"[item] {m.content.item_id}"
            out.append(InboundMessage(
                channel_type=self.type_name, channel_instance=self.instance,
                provider_message_id=str(m.message_id), thread_id=str(m.conversation_id),
                sender_handle=str(m.from_id), sender_name=names.get(str(m.conversation_id)),
                text=text, sent_at=_seconds(m.created_timestamp),
                hints=market_hints(market, label="shopee", order_id=order_sn)))
        return out

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        return await self._messages(resource, {})

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        state = msgspec.json.decode(cursor, type=_Cursor) if cursor else _Cursor()
        changed: list[_Conversation] = []
        next_ts: str = ""
        for _ in range(100):  # at most 100 pages per poll
            await self.read_turn()
            query = {"direction": "older", "type": "all",
                     "page_size": str(self.settings.page_size)}
            if next_ts:
                query["next_timestamp_nano"] = next_ts

            async def call(token: str, q: dict[str, str] = query) -> Any:
                return await self._shop_call("GET", CONVERSATIONS_PATH, token, query=q)

            response = await self.authorized(call)
            if not isinstance(response, dict):
                break
            page = msgspec.convert(response.get("conversations", []), list[_Conversation],
                                   strict=False)
            stop = False
            for conv in page:
                cid = str(conv.conversation_id)
                if conv.last_message_timestamp < state.ts or (
                        conv.last_message_timestamp == state.ts and cid in state.ids):
                    stop = True
                    break
                changed.append(conv)
            more = response.get("page_result", {}) if isinstance(
                response.get("page_result"), dict) else {}
            nxt = more.get("next_cursor", {}) if isinstance(more.get("next_cursor"), dict) \
                else {}
            next_ts = str(nxt.get("next_message_time_nano") or "")
            if stop or not more.get("more") or not next_ts:
                break
        if not changed:
            return [], cursor or msgspec.json.encode(state)
        changed.sort(key=lambda c: c.last_message_timestamp)
        names = {str(c.conversation_id): c.to_name for c in changed if c.to_name}
        items: list[PollItem] = []
        for conv in changed:
            items.extend(await self._messages(str(conv.conversation_id), names))
        newest = changed[-1].last_message_timestamp
        tied = tuple(str(c.conversation_id) for c in changed
                     if c.last_message_timestamp == newest)
        if newest == state.ts:
            tied = tuple(sorted(set(state.ids) | set(tied)))
        return items, msgspec.json.encode(_Cursor(ts=newest, ids=tied))

    # -- replies ------------------------------------------------------------------------------

    async def deliver(self, reply: OutboundReply) -> str:
        if not reply.recipient_handle.isdigit():
            raise PermanentError("shopee recipient is not a buyer id")
        body = {"to_id": int(reply.recipient_handle), "message_type": "text",
                "content": {"text": reply.text}}

        async def call(token: str) -> Any:
            return await self._shop_call("POST", SEND_PATH, token, json_body=body)

        response = await self.authorized(call)
        if isinstance(response, dict) and response.get("message_id") is not None:
            return str(response["message_id"])
        return reply.reply_id
