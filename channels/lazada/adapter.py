"""Lazada IM Open API seller chat (issue 17; CHANNELS.md §6.6; README.md here).

Inbound, two paths that produce the same message ids (the ingest's idempotency key joins them):

* ``poll`` is the reliable path (Lazada advises long polling): ``/im/session/list`` from the
  newest session down to the cursor, then ``/im/message/list`` of each changed session down to
  the cursor. The cursor (newest ``send_time`` stored, and the message ids at exactly that
  time) is checkpointed through the contract's cursor store after ingest, by the one process
  holding the account's lease: nothing lost or stored twice across restarts;
* a push to ``/webhooks/lazada/{instance}`` is only a HINT. Lazada's push signature is not
  verified in our sources (CHANNELS.md §6.6: "unverified"), so nothing in its body is trusted
  but a session id: ``parse`` refuses a push naming another seller and queues a
  ``FetchNotice``; ``fetch`` reads the session with OUR token (``/im/session/get``), checks its
  seller is ours and stores what ``/im/message/list`` says.

A message with ``process_msg`` set was blocked by Lazada's moderation (visible only to the
seller): stored, with ``InboundMessage.moderation`` saying so.

Outbound: ``/im/message/send`` with ``template_id`` 1 (text) in the buyer's session. Image
replies (template 3) need a Lazada-hosted image URL and the IM API documents no upload, so
attachments are refused with that reason. A seller may open a chat only within 7 days after
the order (``/im/session/open``): a reply the seller writes first is the ``order_card``
template (Lazada template 10007), and ``order_window`` checks the 7 days through
``channels.windows`` before ``/im/session/open`` is called.

Every call is signed (``channels.lazada.signing``) and goes through ``call_api`` (timeout, no
redirect, capped answer); reads are paced by the shared limiter; the seller's tokens come from
the token store, refreshed before expiry and on ``IllegalAccessToken``.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final, Literal

import aiohttp
import msgspec
from aiohttp import web

from channels.base import AdapterContext, Capabilities, Parsed
from channels.errors import (
    AuthError,
    ChannelError,
    MalformedPayload,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
    TokenExpired,
)
from channels.http import read_capped, retry_after_seconds
from channels.lazada.signing import signed_params
from channels.marketplace.base import (
    MarketplaceChannel,
    MarketplaceSettings,
    check_api_base_url,
    error_code,
)
from channels.marketplace.sites import Market, market_hints
from channels.models import Attachment, FetchNotice, InboundMessage, OutboundReply
from channels.polling import Polled, PollItem, Unusable
from channels.secrets import Secret
from channels.services.limits import RateLimit
from channels.services.tokens import OAuthTokens, Refresher
from channels.windows import TemplateSpec, WindowClosed, window_state

log = logging.getLogger(__name__)

LABEL: Final = "lazada"
SESSION_LIST: Final = "/im/session/list"
SESSION_GET: Final = "/im/session/get"
SESSION_OPEN: Final = "/im/session/open"
MESSAGE_LIST: Final = "/im/message/list"
MESSAGE_SEND: Final = "/im/message/send"
# Not in CHANNELS.md: Lazada's order API (GetOrder), read for the order's creation time.
ORDER_GET: Final = "/order/get"
REFRESH_PATH: Final = "/auth/token/refresh"
DEFAULT_TOKEN_URL: Final = "https://auth.lazada.com/rest" + REFRESH_PATH
# Documented: page_size <= 20 for both lists (CHANNELS.md §6.6).
MAX_PAGE_SIZE: Final = 20
# INFERRED, our conservative choice: Lazada documents no text length for template 1.
MAX_TEXT_LENGTH: Final = 500
# Documented: a seller may open a chat only within 7 days after the order.
ORDER_WINDOW_SECONDS: Final = 7 * 86400.0
ORDER_TEMPLATE: Final = "order_card"
# Template ids (documented, CHANNELS.md §6.6).
TEXT, IMAGE, EMOJI, VIDEO, ITEM, ORDER, VOUCHER, FOLLOW = 1, 3, 4, 6, 10006, 10007, 10008, 10010
_SHOWN: Final[Mapping[int, str]] = {IMAGE: "image", EMOJI: "emoji", VIDEO: "video",
                                    ITEM: "item", ORDER: "order", VOUCHER: "voucher",
                                    FOLLOW: "follow"}
# INFERRED: ``from_account_type`` 1 is the buyer; 2 the seller; anything else is Lazada's.
BUYER_ACCOUNT: Final = 1
MAX_SESSION_PAGES: Final = 50  # 1,000 changed sessions per poll; the next poll walks on
MAX_MESSAGE_PAGES: Final = 250  # 5,000 new messages per session per poll: a bound
FETCH_PAGES: Final = 3  # a push hint reads the newest 60 messages of its session
MAX_REMEMBERED: Final = 4096
# Ids go into parameters and the fetch queue: what Lazada mints, never anything else.
_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,80}")
_ORDER_ID: Final = re.compile(r"[0-9]{1,24}")
_BAN: Final = re.compile(r"ban will last (\d{1,5})")
# Error codes (INFERRED names from Lazada's public error list; the shape is inferred too).
_TOKEN_CODES: Final = frozenset({"IllegalAccessToken", "InvalidAccessToken",
                                 "AccessTokenExpired", "MissingAccessToken"})
_RATE_CODES: Final = frozenset({"ApiCallLimit", "AppCallLimit", "SellerCallLimit"})
_GRANT_CODES: Final = frozenset({"InsufficientPermission", "InsufficientIsvPermissions",
                                 "AppWhiteIpLimit", "InvalidAppKey", "InvalidSignature",
                                 "IncompleteSignature", "IllegalRefreshToken"})


class Country(msgspec.Struct, frozen=True):
    """A Lazada venture: its API host and the buyer's market and language hint."""

    host: str
    market: Market
    # Languages buyers there also write in, for the README and the router's second guess.
    also: tuple[str, ...] = ()


# Hosts documented (CHANNELS.md §6.6); languages: the venture's site language first.
COUNTRIES: Final[Mapping[str, Country]] = {
    "MY": Country("api.lazada.com.my", Market("MY", "MY", "ms"), ("en",)),
    "SG": Country("api.lazada.sg", Market("SG", "SG", "en")),
    "TH": Country("api.lazada.co.th", Market("TH", "TH", "th")),
    "PH": Country("api.lazada.com.ph", Market("PH", "PH", "en"), ("fil",)),
    "VN": Country("api.lazada.vn", Market("VN", "VN", "vi")),
    "ID": Country("api.lazada.co.id", Market("ID", "ID", "id")),
}


def country_base_url(country: str) -> str:
    """The documented API base of a venture: ``https://{host}/rest``."""
    return f"https://{COUNTRIES[country].host}/rest"


class LazadaSettings(MarketplaceSettings, frozen=True, kw_only=True,
                     forbid_unknown_fields=True):
    """One Lazada seller account in one country.

    ``app_key``/``app_secret``: the app's credentials (``app_secret`` a secret: ``env:``/
    ``file:``). ``country``: the venture (``MY``, ``SG``, ``TH``, ``PH``, ``VN``, ``ID``), which
    picks the API host and the market and language hint. ``api_base_url`` (empty: the
    country's host) overrides it, e.g. for a local fake. ``seller_id``: the seller the tokens
    belong to; a session of any other seller is refused. ``token_url``: where the refresh
    (``/auth/token/refresh``) is posted. ``first_poll_days``: how far back the very first poll
    (no cursor yet) reads. ``reads_per_minute``: our pacing of reads (Lazada publishes no
    figure for the IM API; conservative).
    """

    api_base_url: str = ""
    app_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z]{1,32}$")]
    app_secret: Secret
    country: Literal["MY", "SG", "TH", "PH", "VN", "ID"]
    seller_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}$")]
    token_url: str = DEFAULT_TOKEN_URL
    page_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE
    first_poll_days: Annotated[float, msgspec.Meta(ge=0.0, le=90.0)] = 7.0
    reads_per_minute: Annotated[int, msgspec.Meta(ge=20, le=100_000)] = 120

    def __post_init__(self) -> None:
        if self.api_base_url:
            check_api_base_url(self.api_base_url)
        check_api_base_url(self.token_url)

    @property
    def base_url(self) -> str:
        return (self.api_base_url or country_base_url(self.country)).rstrip("/")


# -- wire shapes: parameter names documented (§6.6), the answer fields INFERRED -----------------

class _Envelope(msgspec.Struct, frozen=True):
    code: str | int = "0"
    type: str | None = None
    message: str | None = None
    request_id: str | None = None
    data: Any = None


class Session(msgspec.Struct, frozen=True):
    session_id: str
    seller_id: str | int | None = None
    buyer_id: str | int | None = None
    title: str | None = None  # the buyer's display name
    last_message_id: str | None = None
    last_message_time: int = 0


class _SessionPage(msgspec.Struct, frozen=True):
    session_list: list[Session] = []
    has_more: bool = False
    next_start_time: int | None = None
    last_session_id: str | None = None


class Message(msgspec.Struct, frozen=True):
    message_id: str
    session_id: str
    template_id: int
    send_time: int
    from_account_type: int = 0
    from_account_id: str | int | None = None
    to_account_id: str | int | None = None
    content: str = ""
    process_msg: str | None = None


class _MessagePage(msgspec.Struct, frozen=True):
    message_list: list[Any] = []
    has_more: bool = False
    next_start_time: int | None = None
    last_message_id: str | None = None


class _Push(msgspec.Struct, frozen=True):
    """A push as we read it: who it is for and which session; nothing else is trusted."""

    seller_id: str | int
    message_type: int | None = None
    timestamp: int | str | None = None
    data: Any = None


class _Cursor(msgspec.Struct, frozen=True, omit_defaults=True):
    """Newest ``send_time`` (ms) stored and the message ids at exactly that time (ties).

    A walk of the session list cut short by ``MAX_SESSION_PAGES`` leaves ``ts``/``ids`` where
    they were and says where to resume (the last session read, ``resume_*``) and what the
    walk has reached so far (``high_*``): the next poll walks on from there, so the older
    changed sessions are read before the cursor moves past them."""

    ts: int
    ids: tuple[str, ...] = ()
    resume_time: int | None = None
    resume_id: str | None = None
    high_ts: int | None = None
    high_ids: tuple[str, ...] = ()


class _Refreshed(msgspec.Struct, frozen=True):
    code: str | int = "0"
    type: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: float | None = None


_push = msgspec.json.Decoder(_Push)
_envelope = msgspec.json.Decoder(_Envelope)
_cursor = msgspec.json.Decoder(_Cursor)


def _ms() -> int:
    return int(time.time() * 1000)


def _content(raw: str) -> dict[str, Any]:
    """A message's ``content``: a JSON object in a string (INFERRED), else nothing."""
    try:
        value = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def message_text(message: Message) -> str:
    """What the agent reads: the text of template 1, a short tag for the others (an image's
    URL is shown as text; the IM API gives no way to fetch it into our store)."""
    body = _content(message.content)
    if message.template_id == TEXT:
        text = body.get("txt")
        return text if isinstance(text, str) else ""
    shown = _SHOWN.get(message.template_id, f"template {message.template_id}")
    for key in ("txt", "imgUrl", "url", "itemId", "orderId", "voucherId"):
        value = body.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return f"[{shown}] {str(value)[:500]}"
    return f"[{shown}]"


def order_of(message: Message) -> str | None:
    """The order an order card (template 10007) names."""
    if message.template_id != ORDER:
        return None
    value = _content(message.content).get("orderId")
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if _ORDER_ID.fullmatch(text) else None


def _stamp(item: Any) -> tuple[int, str] | None:
    """``(send_time, message_id)`` of a raw list entry, when it has both."""
    if not isinstance(item, dict):
        return None
    when, mid = item.get("send_time"), item.get("message_id")
    if isinstance(when, int) and not isinstance(when, bool) and isinstance(mid, str | int) \
            and not isinstance(mid, bool):
        return when, str(mid)
    return None


def _order_time(value: object) -> float | None:
    """GetOrder's ``created_at`` (``2026-01-01 10:00:00 +0800``, INFERRED format)."""
    if not isinstance(value, str):
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.datetime.strptime(value, fmt).timestamp()
        except ValueError:
            continue
    return None


def _str(value: str | int | None) -> str | None:
    return None if value is None else str(value)


ORDER_WINDOW: Final = Capabilities(max_text_length=MAX_TEXT_LENGTH,
                                   reply_window_seconds=ORDER_WINDOW_SECONDS, can_initiate=False)


def order_window(order_id: str, ordered_at: float, now: float) -> None:
    """Raise ``WindowClosed`` unless a chat about ``order_id`` may be opened now: the window
    of ``channels.windows``, anchored at the order instead of a buyer's message."""
    state = window_state(ORDER_WINDOW, ordered_at, now)
    if state.open:
        return
    closed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.closes_at or 0))
    raise WindowClosed(f"lazada lets a seller open a chat only within 7 days after the order; "
                       f"order {order_id} was placed more than 7 days ago (the window closed "
                       f"at {closed}). Wait for the buyer to write.")


class LazadaRefresher:
    """``/auth/token/refresh`` (signed like every call, no access token; INFERRED answer
    fields ``access_token``, ``refresh_token``, ``expires_in``). Lazada rotates the refresh
    token: the store keeps the new one and runs one refresh at a time across processes."""

    def __init__(self, http: aiohttp.ClientSession, token_url: str, *, app_key: str,
                 app_secret: Secret, timeout: float) -> None:
        self.http = http
        self.token_url = token_url
        self.app_key = app_key
        self.app_secret = app_secret
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"LazadaRefresher({self.token_url!r}, app_key={self.app_key!r})"

    async def __call__(self, tokens: OAuthTokens) -> OAuthTokens:
        if not tokens.refresh_token:
            raise AuthError("lazada: no refresh token stored; run `inboxhub channels auth`")
        form = signed_params(self.app_secret.reveal_bytes(), REFRESH_PATH,
                             {"refresh_token": tokens.refresh_token}, app_key=self.app_key,
                             timestamp_ms=_ms(), access_token=None)
        try:
            async with self.http.post(self.token_url, data=urllib.parse.urlencode(form),
                                      headers={"Content-Type":
                                               "application/x-www-form-urlencoded"},
                                      allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status = resp.status
                body, truncated = await read_capped(resp, 64 * 1024)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RetryableError(f"lazada token refresh failed: {type(exc).__name__}") from None
        if truncated or status >= 500 or status == 429:
            raise RetryableError(f"lazada token endpoint answered HTTP {status}")
        try:
            got = msgspec.json.decode(body, type=_Refreshed)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            raise RetryableError(f"lazada token endpoint answered HTTP {status} without "
                                 "usable tokens") from None
        code = str(got.code)
        if code != "0" or status >= 300:
            named = error_code(code) or "unnamed"
            if got.type in ("ISP", "SYSTEM") or named in _RATE_CODES:
                raise RetryableError(f"lazada token endpoint failed ({named})")
            raise AuthError(f"lazada refused the token refresh (invalid_grant: {named}); "
                            "re-authorize with `inboxhub channels auth`")
        if not got.access_token:
            raise RetryableError("lazada token answer without access_token")
        expires = time.time() + got.expires_in if got.expires_in and got.expires_in > 0 \
            else None
        return OAuthTokens(access_token=got.access_token,
                           refresh_token=got.refresh_token or tokens.refresh_token,
                           expires_at=expires)


class LazadaChannel(MarketplaceChannel):
    type_name: ClassVar[str] = "lazada"
    settings_type: ClassVar[type[LazadaSettings]] = LazadaSettings
    settings: LazadaSettings
    marketplace: ClassVar[str] = LABEL
    referable_settings: ClassVar[tuple[str, ...]] = ("app_key", "seller_id")
    unique_settings: ClassVar[tuple[str, ...]] = ("seller_id",)
    read_limits: tuple[RateLimit, ...] = (RateLimit.within(120, 60, burst=10),)
    capabilities = Capabilities(
        max_text_length=MAX_TEXT_LENGTH,
        # No reply window inside a session the buyer opened is documented; writing first is
        # the order card, within 7 days of the order (``order_window``).
        can_initiate=False,
        templates=True,
        approved_templates=(TemplateSpec(name=ORDER_TEMPLATE, parameters=("order_id",),
                                         body="[order {{1}}]"),),
        threading=True,
        # INFERRED, conservative: Lazada publishes no IM send limits.
        rate_limits=(RateLimit.within(60, 60.0, burst=5),
                     RateLimit.within(10, 60.0, "recipient", burst=3)),
        fetch_after_notify=True,
    )

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.read_limits = (RateLimit.within(settings.reads_per_minute, 60, burst=10),)
        self.market = COUNTRIES[settings.country].market
        self._refresher: LazadaRefresher | None = None
        # Bounded memories of this process: the order a session is about, when orders were
        # placed (so a refused opening is refused synchronously the next time).
        self._orders: OrderedDict[str, str] = OrderedDict()
        self._ordered_at: OrderedDict[str, float] = OrderedDict()

    # -- calls -------------------------------------------------------------------------------

    @property
    def refresher(self) -> Refresher:
        if self._refresher is None:
            self._refresher = LazadaRefresher(
                self.context.http, self.settings.token_url, app_key=self.settings.app_key,
                app_secret=self.settings.app_secret, timeout=self.settings.timeout_seconds)
        return self._refresher

    async def _call(self, path: str, token: str, params: Mapping[str, str]) -> Any:
        """One signed call; ``data`` of a ``code`` "0" answer, else the mapped error.

        Every call is a POST with a form body (the Lazop SDK's default method), reads too:
        the access token and the signature then never sit in a URL, where proxies and access
        logs keep them."""
        signed = signed_params(self.settings.app_secret.reveal_bytes(), path, params,
                               app_key=self.settings.app_key, timestamp_ms=_ms(),
                               access_token=token)
        answer = await self.call_api(
            "POST", path, data=urllib.parse.urlencode(signed),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            envelope = _envelope.decode(answer.body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            raise RetryableError(f"lazada {path}: unreadable answer") from None
        if str(envelope.code) != "0":
            raise self._error_for(envelope, answer.status, answer.headers)
        return envelope.data

    async def _read(self, path: str, params: Mapping[str, str]) -> Any:
        await self.read_turn()

        async def call(token: str) -> Any:
            return await self._call(path, token, params)
        return await self.authorized(call)

    async def _write(self, path: str, params: Mapping[str, str]) -> Any:
        async def call(token: str) -> Any:
            return await self._call(path, token, params)
        return await self.authorized(call)

    def _error_for(self, envelope: _Envelope, status: int,
                   headers: Mapping[str, str]) -> ChannelError:
        """Lazada's ``{code, type, message, request_id}`` → our error. Only the code is
        repeated; ``message`` may echo what was sent."""
        code = str(envelope.code)
        named = error_code(code) or "unnamed"
        detail = f"lazada error {named} (HTTP {status})"
        if code in _TOKEN_CODES:
            return TokenExpired(detail)
        if code in _RATE_CODES or status == 429:
            wait = retry_after_seconds(headers.get("Retry-After"))
            if wait is None:
                ban = _BAN.search(envelope.message or "")
                wait = float(ban.group(1)) if ban else 1.0
            return RateLimited(detail, retry_after=wait)
        if code in _GRANT_CODES or status == 403:
            return AuthError(f"{detail}: the app or the seller's grant does not cover this "
                             "call; check the app's permissions or re-authorize")
        if envelope.type in ("ISP", "SYSTEM") or status >= 500:
            return RetryableError(detail)
        return PermanentError(detail)

    def api_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
        try:
            envelope = _envelope.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            return super().api_error(status, body, headers)
        if str(envelope.code) == "0":
            return super().api_error(status, body, headers)
        return self._error_for(envelope, status, headers)

    # -- push: a hint ------------------------------------------------------------------------

    def verify(self, request: web.Request, body: bytes) -> None:
        """Nothing to verify: our sources do not confirm how Lazada signs a push
        (CHANNELS.md §6.6, "unverified"), so a push is untrusted. ``parse`` takes only a
        session id from it and ``fetch`` reads that session with our token and checks its
        seller: a forged push stores nothing that Lazada did not say."""

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            push = _push.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"not a Lazada push: {str(exc)[:120]}") from None
        if str(push.seller_id) != self.settings.seller_id:
            raise MalformedPayload("push for another seller (seller_id is not this "
                                   "instance's seller_id)")
        data = push.data if isinstance(push.data, dict) else {}
        session = data.get("session_id")
        if not isinstance(session, str | int) or isinstance(session, bool) \
                or not _ID.fullmatch(str(session)):
            raise MalformedPayload("push without a usable session id")
        # One push, sent again, is fetched once: its message (or session) and its timestamp
        # name it (INFERRED: a redelivery repeats the body as it was).
        message = data.get("message_id")
        when = str(push.timestamp)[:20]
        if isinstance(message, str | int) and not isinstance(message, bool) \
                and _ID.fullmatch(str(message)):
            key = f"m:{session}:{message}:{when}"
        else:  # SESSION_UPDATE and the like
            key = f"s:{session}:{when}"
        return [FetchNotice(resource=str(session), dedupe_key=key[:200])]

    # -- fetch -------------------------------------------------------------------------------

    async def session(self, session_id: str) -> Session:
        """``/im/session/get`` with our token, refused unless the session is our seller's."""
        if not _ID.fullmatch(session_id):
            raise PermanentError("session id is not a Lazada id")
        data = await self._read(SESSION_GET, {"session_id": session_id})
        try:
            found = msgspec.convert(data, Session, strict=False)
        except msgspec.ValidationError:
            raise PermanentError(f"lazada session {session_id} unreadable") from None
        if _str(found.seller_id) != self.settings.seller_id or found.session_id != session_id:
            raise PermanentError(f"lazada session {session_id} is not seller "
                                 f"{self.settings.seller_id}'s; not stored")
        return found

    async def fetch(self, resource: str) -> Sequence[Parsed]:
        found = await self.session(resource)
        raw = [item for item, _ in await self._messages(found, None, pages=FETCH_PAGES)]
        out: list[Parsed] = []
        for item in self._normalize(found, raw):
            if isinstance(item, Unusable):  # kept with its reason, as the poller would
                await self.context.quarantine(self.instance, item.raw, item.reason)
            elif isinstance(item, InboundMessage):
                out.append(item)
        return out

    async def _messages(self, session: Session, since: _Cursor | None, *,
                        pages: int) -> list[tuple[Message | Unusable, tuple[int, str] | None]]:
        """The session's messages newer than ``since`` (all of ``pages`` pages without),
        oldest first, each with its ``(send_time, message_id)`` where the answer gave them
        (an unreadable one too, so the cursor moves past it and it is quarantined once)."""
        found: list[tuple[Message | Unusable, tuple[int, str] | None]] = []
        start, last_id = str(_ms() + 1000), ""
        for _ in range(pages):
            params = {"session_id": session.session_id, "start_time": start,
                      "page_size": str(self.settings.page_size)}
            if last_id:
                params["last_message_id"] = last_id
            page = msgspec.convert(await self._read(MESSAGE_LIST, params) or {}, _MessagePage,
                                   strict=False)
            done = False
            for item in page.message_list:
                stamp = _stamp(item)
                if since is not None and stamp is not None and (stamp[0] < since.ts or (
                        stamp[0] == since.ts and stamp[1] in since.ids)):
                    done = True
                    break
                found.append((self._read_message(session, item), stamp))
            if done or not page.has_more or not page.message_list:
                break
            tail = _stamp(page.message_list[-1])
            start = str(page.next_start_time or (tail[0] if tail else ""))
            last_id = page.last_message_id or (tail[1] if tail else "")
            if not start.isdigit():
                break
        else:
            log.warning("lazada %s: a session has more than %d new pages; the rest waits for "
                        "the next poll", self.instance, pages)
        found.reverse()
        return found

    @staticmethod
    def _read_message(session: Session, item: Any) -> Message | Unusable:
        raw = msgspec.json.encode(item)[:65536]
        try:
            message = msgspec.convert(item, Message, strict=False)
        except msgspec.ValidationError as exc:
            return Unusable(raw, f"lazada message unreadable: {str(exc)[:200]}")
        if message.session_id != session.session_id:
            return Unusable(raw, "lazada message of another session in the list")
        return message

    def _normalize(self, session: Session,
                   items: Sequence[Message | Unusable]) -> list[PollItem]:
        """Buyer messages (``from_account_type`` 1) with the session's order, market and
        buyer; what cannot be read stays an ``Unusable`` (quarantined, never dropped)."""
        out: list[PollItem] = []
        order = self._orders.get(session.session_id)
        for item in items:
            if isinstance(item, Unusable):
                out.append(item)
                continue
            order = order_of(item) or order
            if item.from_account_type != BUYER_ACCOUNT:
                continue
            moderation = None
            if item.process_msg:
                moderation = f"blocked by Lazada moderation: {item.process_msg[:200]}"
            out.append(InboundMessage(
                channel_type=self.type_name, channel_instance=self.instance,
                provider_message_id=item.message_id, thread_id=session.session_id,
                sender_handle=_str(item.from_account_id) or _str(session.buyer_id) or "unknown",
                sender_name=session.title, text=message_text(item),
                sent_at=item.send_time / 1000.0 if item.send_time > 0 else None,
                hints=market_hints(self.market, label=LABEL, order_id=order),
                moderation=moderation))
        if order is not None:
            _remember(self._orders, session.session_id, order)
        return out

    # -- poll --------------------------------------------------------------------------------

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        """Sessions changed since the cursor (newest first, down to it), then each one's new
        messages; the cursor moves to the newest message seen (ours included, so our own
        replies do not make a session look changed again)."""
        if cursor:
            state = _cursor.decode(cursor)
        else:
            state = _Cursor(ts=_ms() - int(self.settings.first_poll_days * 86_400_000))
        changed: list[Session] = []
        start, last_id = str(_ms() + 1000), ""
        if state.resume_time is not None:
            start, last_id = str(state.resume_time), state.resume_id or ""
        cut: Session | None = None
        for _ in range(MAX_SESSION_PAGES):
            params = {"start_time": start, "page_size": str(self.settings.page_size)}
            if last_id:
                params["last_session_id"] = last_id
            page = msgspec.convert(await self._read(SESSION_LIST, params) or {}, _SessionPage,
                                   strict=False)
            stop = False
            for entry in page.session_list:
                if entry.last_message_time < state.ts or (
                        entry.last_message_time == state.ts
                        and entry.last_message_id in state.ids):
                    stop = True
                    break
                changed.append(entry)
            if stop or not page.has_more or not page.session_list:
                cut = None
                break
            cut = tail = page.session_list[-1]
            start = str(page.next_start_time or tail.last_message_time)
            last_id = page.last_session_id or tail.session_id
        items: list[PollItem] = []
        if state.high_ts is not None:
            newest, tied = state.high_ts, set(state.high_ids)
        else:
            newest, tied = state.ts, set(state.ids)
        for entry in sorted(changed, key=lambda s: s.last_message_time):
            if _str(entry.seller_id) not in (None, self.settings.seller_id):
                continue  # a session list entry of another seller: never ours to store
            found = await self._messages(entry, state, pages=MAX_MESSAGE_PAGES)
            items.extend(self._normalize(entry, [item for item, _ in found]))
            for _, stamp in found:
                if stamp is None:
                    continue
                if stamp[0] > newest:
                    newest, tied = stamp[0], {stamp[1]}
                elif stamp[0] == newest:
                    tied.add(stamp[1])
        if cut is not None:
            log.info("lazada %s: more than %d changed sessions; the next poll walks on",
                     self.instance, len(changed))
            return items, msgspec.json.encode(msgspec.structs.replace(
                state, resume_time=cut.last_message_time, resume_id=cut.session_id,
                high_ts=newest, high_ids=tuple(sorted(tied))))
        done = _Cursor(ts=newest, ids=tuple(sorted(tied)))
        if done == state:
            return items, cursor or msgspec.json.encode(state)
        return items, msgspec.json.encode(done)

    # -- replies -----------------------------------------------------------------------------

    def _check_outbound_attachments(self, attachments: Sequence[Attachment]) -> None:
        raise ReplyRejected(
            "lazada image replies (template 3) need an image hosted by Lazada, and the IM "
            "Open API documents no upload (CHANNELS.md §6.6): attachments cannot be sent on "
            "this channel; send the image from Lazada Seller Center")

    def check_reply(self, reply: OutboundReply, *, now: float) -> None:
        super().check_reply(reply, now=now)
        if reply.template is not None:
            order_id = reply.template.parameters[0]
            if not _ORDER_ID.fullmatch(order_id):
                raise ReplyRejected(f"lazada order ids are digits; got {order_id[:40]!r}")
            ordered_at = self._ordered_at.get(order_id)
            if ordered_at is not None:
                order_window(order_id, ordered_at, now)

    async def deliver(self, reply: OutboundReply) -> str:
        if reply.template is not None:
            return await self._open_with_order(reply.template.parameters[0])
        if not _ID.fullmatch(reply.thread_id):
            raise ReplyRejected("the conversation names no Lazada session")
        data = await self._write(MESSAGE_SEND, {"session_id": reply.thread_id,
                                                "template_id": str(TEXT), "txt": reply.text})
        return self._sent_id(data, reply)

    async def _open_with_order(self, order_id: str) -> str:
        """The seller writes first: the order's age is checked (7 days), then
        ``/im/session/open`` and the order card (template 10007) in that session."""
        ordered_at = self._ordered_at.get(order_id)
        if ordered_at is None:
            order = await self._read(ORDER_GET, {"order_id": order_id})
            ordered_at = _order_time(order.get("created_at") if isinstance(order, dict)
                                     else None)
            if ordered_at is None:
                raise PermanentError(f"lazada order {order_id} gave no creation time; the "
                                     "7-day rule cannot be checked, nothing sent")
            _remember(self._ordered_at, order_id, ordered_at)
        order_window(order_id, ordered_at, time.time())
        opened = await self._write(SESSION_OPEN, {"order_id": order_id})
        session = opened.get("session_id") if isinstance(opened, dict) else None
        if not isinstance(session, str | int) or not _ID.fullmatch(str(session)):
            raise PermanentError("lazada opened no session for the order")
        data = await self._write(MESSAGE_SEND, {"session_id": str(session),
                                                "template_id": str(ORDER),
                                                "order_id": order_id})
        return self._sent_id(data, None)

    @staticmethod
    def _sent_id(data: Any, reply: OutboundReply | None) -> str:
        sent = data.get("message_id") if isinstance(data, dict) else None
        if isinstance(sent, str | int) and not isinstance(sent, bool) and str(sent):
            return str(sent)
        if reply is None:
            raise PermanentError("lazada accepted the message but named no message id")
        return reply.reply_id


def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > MAX_REMEMBERED:
        memory.popitem(last=False)
