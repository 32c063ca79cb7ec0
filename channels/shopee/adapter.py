"""Shopee Open Platform v2 seller chat (issue 16; CHANNELS.md §6.4; README.md here).

Inbound: Webchat push code 10 is only a hint. ``verify`` checks its ``Authorization`` HMAC over
``callback_url|raw_body`` (documented), ``parse`` turns it into a ``FetchNotice`` naming the
conversation and the hub answers an EMPTY 2xx (documented); ``fetch`` reads the conversation
through ``get_message`` with the shop's token. ``poll`` walks ``get_conversation_list`` as the
reconciliation path (Shopee never replays a dropped push). The chat endpoints are known only
by SDK names (CHANNELS.md §6.4 [S3]): every field read here beyond those names is INFERRED.

Images both ways (INFERRED shapes, README.md here): a buyer's ``message_type: "image"``
(``content.url``) is downloaded from Shopee's CDN (https only, no redirect, capped, timed, no
token sent) into the hub's attachment store, its type judged on the bytes; what cannot be
taken is kept as a refused attachment with the reason. A reply's images go through
``POST /api/v2/sellerchat/upload_image`` (multipart ``file``) and each is sent as its own
``message_type: "image"`` message before the reply's text.

Webchat push is only offered to Original, Seller In-house System and Customer Service apps,
not ERP apps (documented [S2]): an ERP partner_id gets no pushes and relies on the poll.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final

import aiohttp
import msgspec
import yarl
from aiohttp import web

from channels.attachments import AttachmentRefused, sniff
from channels.base import AdapterContext, Capabilities, IngestOutcome, Parsed
from channels.errors import (
    AuthError,
    ChannelError,
    InvalidSignature,
    MalformedPayload,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
    TokenExpired,
)
from channels.http import read_capped, retry_after_seconds
from channels.marketplace.base import MarketplaceChannel, MarketplaceSettings, error_code
from channels.marketplace.sites import SHOPEE_REGIONS, market_hints
from channels.models import Attachment, FetchNotice, InboundMessage, OutboundReply
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
UPLOAD_PATH: Final = "/api/v2/sellerchat/upload_image"
# Chat images (INFERRED from third-party SDK code, not an official reference): jpg/jpeg, png,
# gif, at most 2 MB each. Each image is its own chat message; 3 per reply is our choice.
MAX_IMAGE_BYTES: Final = 2 * 1024 * 1024
MAX_IMAGES: Final = 3
IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif")
# Our conservative send limits (UNVERIFIED: Shopee publishes none); settings may change them.
SENDS_PER_MINUTE: Final = 60
SENDS_PER_BUYER_PER_MINUTE: Final = 10
# Replies whose images went out in this process while a later part failed: a retry of the
# same reply skips them (the buyer never sees an image twice from one process's retries).
MAX_REMEMBERED_PARTS: Final = 4096
_EXTENSIONS: Final = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif"}
_BY_EXTENSION: Final = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                        ".gif": "image/gif", ".webp": "image/webp"}
_MIME: Final = re.compile(r"[A-Za-z0-9.+-]{1,40}/[A-Za-z0-9.+-]{1,60}")
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
    ``sends_per_minute`` / ``sends_per_buyer_per_minute``: the send limits the hub's limiter
    keeps (our conservative guesses; Shopee publishes none). ``max_attachment_bytes``: a
    lower image limit than Shopee's (inferred) 2 MB.
    """

    api_base_url: str = "https://partner.shopeemobile.com"
    partner_id: Annotated[int, msgspec.Meta(gt=0)]
    partner_key: Secret
    shop_id: Annotated[int, msgspec.Meta(gt=0)]
    region: str = ""
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = PAGE_SIZE
    # UNVERIFIED limits of ours (Shopee publishes none): a shop told its real quota sets it.
    sends_per_minute: Annotated[int, msgspec.Meta(ge=2, le=100_000)] = SENDS_PER_MINUTE
    sends_per_buyer_per_minute: Annotated[int, msgspec.Meta(ge=2, le=100_000)] = \
        SENDS_PER_BUYER_PER_MINUTE
    # Narrows the 2 MB image limit (never widens it); the hub's attachment cap applies too.
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None


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


def _refused_refresh(error: ChannelError) -> AuthError:
    """A refresh Shopee refused: the grant is gone and only a new authorization mends it.
    Named with OAuth's word for that (``invalid_grant``, RFC 6749 §5.2) next to Shopee's own
    code, so an operator reads every marketplace's refusal the same way."""
    return AuthError(f"shopee refused the token refresh (invalid_grant): {error}")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def image_url_problem(url: str, *, local_api: bool) -> str | None:
    """Why the hub will not download ``url`` (a chat image's ``content.url``), else None.

    https only, to a host name or a public address; no credentials in it. Plain http only to
    a loopback host, and only while ``api_base_url`` is itself a loopback fake: the URL comes
    from Shopee's answer, but nothing in our network is fetched on its say-so."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not a URL"
    if not host or parts.username or parts.password:
        return "not a usable URL"
    if parts.scheme == "http":
        return None if local_api and _loopback(host) else "not an https URL"
    if parts.scheme != "https":
        return "not an https URL"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_global and not (local_api and address.is_loopback):
        return "an https URL to a non-public address"
    return None


def _image_name(url: str) -> str:
    """The file name the URL's last path segment gives (``safe_name`` strips any path the
    decoded segment names); Shopee CDN ids have no extension (added from the bytes)."""
    try:
        segment = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    except ValueError:
        segment = ""
    return urllib.parse.unquote(segment)[:200] or "image"


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

    def __init__(self, instance: str, settings: ShopeeSettings, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.capabilities = Capabilities(
            max_text_length=MAX_TEXT_LENGTH,
            # Conservative: we only answer buyers who wrote; seller-initiated chat is not
            # assumed.
            can_initiate=False,
            threading=True,
            # Charged per reply: a reply with images is several Shopee messages.
            rate_limits=(RateLimit.within(settings.sends_per_minute, 60.0),
                         RateLimit.within(settings.sends_per_buyer_per_minute, 60.0,
                                          "recipient")),
            attachments=True, max_attachment_bytes=MAX_IMAGE_BYTES, max_attachments=MAX_IMAGES,
            attachment_types=IMAGE_TYPES,
            fetch_after_notify=True,
            push_subscription=PushSubscriptionRule.shopee(),
        )
        # reply id + part index -> Shopee message id, for parts sent before a later one failed
        self._sent_parts: OrderedDict[str, str] = OrderedDict()

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
                         json_body: Any = None, form: aiohttp.FormData | None = None) -> Any:
        """One signed shop-level call: a JSON body, or a multipart ``form`` (upload_image)
        whose boundary aiohttp sets in the Content-Type itself."""
        params = {**(query or {}), **self._shop_params(path, access_token)}
        data: Any = form
        headers: dict[str, str] = {}
        if json_body is not None:
            data = msgspec.json.encode(json_body)
            headers["Content-Type"] = "application/json"
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
            raise _refused_refresh(exc) from None
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
            raise _refused_refresh(err)
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
        return await self._normalize(messages, names)

    async def _normalize(self, messages: Sequence[_Message],
                         names: Mapping[str, str]) -> list[InboundMessage]:
        """Buyer messages only: a message whose ``from_id`` is this shop (or whose
        ``from_shop_id`` is) is our own and skipped (INFERRED: Shopee's seller user id equals
        the shop id for chat). The latest order card's ``order_sn`` rides on every message.
        An image message carries its picture as an attachment (``_image``) and no text."""
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
            attachments: tuple[Attachment, ...] = ()
            if m.message_type == "image" and not text:
                attachments = (await self._image(m.content.url or ""),)
            elif not text and m.content.url:
                text = f"[{m.message_type}] {m.content.url}"
            elif not text and m.content.order_sn:
                text = f"[order] {m.content.order_sn}"
            elif not text and m.content.item_id:
                text = f"[item] {m.content.item_id}"
            out.append(InboundMessage(
                channel_type=self.type_name, channel_instance=self.instance,
                provider_message_id=str(m.message_id), thread_id=str(m.conversation_id),
                sender_handle=str(m.from_id), sender_name=names.get(str(m.conversation_id)),
                text=text, sent_at=_seconds(m.created_timestamp), attachments=attachments,
                hints=market_hints(market, label="shopee", order_id=order_sn)))
        return out

    async def _image(self, url: str) -> Attachment:
        """A buyer's chat image from Shopee's CDN into the attachment store, or a refused
        placeholder saying why (the message is kept either way: Shopee got its 2xx long ago).

        Never sends our token or signature (the URL is fetched as is), never follows a
        redirect, reads at most the policy's limit plus one byte, within ``timeout_seconds``.
        A 429/5xx, a timeout or a broken connection is a ``RetryableError``: the fetch (or the
        poll) runs again later and the image is not lost to a passing outage. The URL is never
        repeated in an error or a log."""
        name = _image_name(url)
        policy = self.attachment_policy
        guessed = _BY_EXTENSION.get(name[name.rfind("."):].lower() if "." in name else "",
                                    "application/octet-stream")
        if self.context.attachments is None:
            return self.refused_attachment(name, guessed, 0, AttachmentRefused(
                "this hub stores no attachments", 415))
        local = _loopback(urllib.parse.urlsplit(self.settings.base_url).hostname or "")
        problem = image_url_problem(url, local_api=local) if url else "no image URL"
        if problem is not None:
            return self.refused_attachment(name, guessed, 0, AttachmentRefused(
                f"image not downloaded: {problem}", 415))
        too_big = AttachmentRefused(f"image {name!r} is over this channel's limit of "
                                    f"{policy.max_bytes} bytes; not downloaded")
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with self.context.http.get(yarl.URL(url, encoded=True), timeout=timeout,
                                             allow_redirects=False) as resp:
                declared = resp.headers.get("Content-Type", "").split(";")[0].strip()
                if not _MIME.fullmatch(declared):
                    declared = guessed
                if resp.status == 429 or resp.status >= 500:
                    raise RetryableError(f"shopee image download answered HTTP {resp.status}")
                if 300 <= resp.status < 400:
                    return self.refused_attachment(name, declared, 0, AttachmentRefused(
                        f"image not downloaded: Shopee answered a {resp.status} redirect, "
                        "not followed", 415))
                if resp.status >= 400 or resp.status < 200:
                    return self.refused_attachment(name, declared, 0, AttachmentRefused(
                        f"image unavailable at Shopee (HTTP {resp.status})", 415))
                length = resp.content_length
                if length is not None and length > policy.max_bytes:
                    return self.refused_attachment(name, declared, length, too_big)
                data, truncated = await read_capped(resp, policy.max_bytes)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"shopee image download failed: {type(exc).__name__}"
                                 ) from None
        if truncated:
            return self.refused_attachment(name, declared, policy.max_bytes + 1, too_big)
        if "." not in name:
            name += _EXTENSIONS.get(sniff(data), "")
        try:
            return await self.store_attachment(data, name=name)
        except AttachmentRefused as exc:
            return self.refused_attachment(name, declared, len(data), exc)

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
        """Images first, then the text, each a Shopee message of its own (Shopee's image
        message carries no caption, INFERRED): the text reads as the caption under the
        pictures, and an image refused by Shopee stops the reply before the buyer reads a
        text about a picture that never came. Every image is uploaded before anything is
        sent, so a failed upload sends nothing. A part sent before a later one failed is
        remembered by reply id and part, so the hub's retry of the same reply (in this
        process) sends only what is missing. Returns the text's message id (the last
        image's for an image-only reply)."""
        if not reply.recipient_handle.isdigit():
            raise PermanentError("shopee recipient is not a buyer id")
        to_id = int(reply.recipient_handle)
        parts: list[tuple[str, dict[str, Any]]] = []
        for index, item in enumerate(reply.attachments):
            key = f"{reply.reply_id}\x00{index}"
            if key not in self._sent_parts:
                url = await self._upload(item)
                parts.append((key, {"to_id": to_id, "message_type": "image",
                                    "content": {"image_url": url}}))
        if reply.text.strip():
            key = f"{reply.reply_id}\x00{len(reply.attachments)}"
            parts.append((key, {"to_id": to_id, "message_type": "text",
                                "content": {"text": reply.text}}))
        last = reply.reply_id
        for key, body in parts:
            self._sent_parts[key] = last = await self._send(body, reply.reply_id)
            while len(self._sent_parts) > MAX_REMEMBERED_PARTS:
                self._sent_parts.popitem(last=False)
        for index in range(len(reply.attachments) + 1):
            last = self._sent_parts.pop(f"{reply.reply_id}\x00{index}", last)
        return last

    async def _send(self, body: dict[str, Any], fallback: str) -> str:
        async def call(token: str) -> Any:
            return await self._shop_call("POST", SEND_PATH, token, json_body=body)

        response = await self.authorized(call)
        if isinstance(response, dict) and response.get("message_id") is not None:
            return str(response["message_id"])
        return fallback

    async def _upload(self, item: Attachment) -> str:
        """``POST upload_image`` (multipart ``file``, signed like every shop call); the
        answer's ``response.url`` (INFERRED) is what ``send_message`` then names."""
        store = self.context.attachments
        data = await store.get(item.storage_ref) if store and item.storage_ref else None
        if data is None:
            raise ReplyRejected(f"attachment {item.name!r} is no longer stored")

        async def call(token: str) -> Any:
            form = aiohttp.FormData()  # built per attempt: a sent form cannot be sent again
            form.add_field("file", data, filename=item.name, content_type=item.content_type)
            return await self._shop_call("POST", UPLOAD_PATH, token, form=form)

        response = await self.authorized(call)
        url = response.get("url") if isinstance(response, dict) else None
        if not isinstance(url, str) or not url:
            raise PermanentError("shopee accepted the image but named no url")
        return url
