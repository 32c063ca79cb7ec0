"""The base every marketplace channel builds on: notify, fetch, reconcile, with the seller's
OAuth token.

Marketplaces push notifications that only name a resource and drop them for good after failures
(Mercado Libre retries for an hour, Shopee cuts a subscription under 30% success), so an adapter
here is both:

* a ``WebhookAdapter``: ``verify`` what the marketplace lets us verify (Shopee signs, Mercado
  Libre does not), ``parse`` the notification into a ``FetchNotice`` and answer at once; the
  hub's fetch worker later calls ``fetch``, which reads the resource with our token and checks
  that it belongs to this seller and application (a notification is only a hint);
* a ``PollingAdapter``: ``poll`` is the reconciliation path (unread conversations, the
  conversation list since a persisted cursor), run by one process per account under the lease,
  so what a dropped push never told us is still stored. Both paths produce the same
  ``InboundMessage`` ids, so the ingest's idempotency key makes them meet without duplicates.

Every provider call goes through ``call_api``: the base URL from ``api_base_url`` (a local
server in tests), a timeout, no redirects, a capped answer, and an error mapped by the class of
the answer (``api_error``: 401 refreshes the token once, 429 honours Retry-After, 5xx retries,
other 4xx are permanent with the marketplace's error code). ``authorized`` runs a call with a
fresh token from the store (``channels.tokens.with_token``); ``read_turn`` paces reads under
``read_limits`` through the hub's shared limiter (Mercado Libre: 500 GETs per minute per app),
so a burst of notifications never turns into a storm of 429s.
"""

from __future__ import annotations

import abc
import asyncio
import ipaddress
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, ClassVar, Final, TypeVar

import aiohttp
import msgspec

from channels.base import AdapterContext, WebhookAdapter
from channels.errors import (
    ChannelError,
    PermanentError,
    RateLimited,
    RetryableError,
    TokenExpired,
)
from channels.http import read_capped, retry_after_seconds
from channels.polling import PollingAdapter, PollingSettings, Schedule
from channels.services.limits import RateLimit
from channels.services.tokens import Refresher
from channels.tokens import with_token

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_API_ANSWER_BYTES: Final = 2 * 1024 * 1024
# A read that would wait longer than this for its turn is handed back as RateLimited: the fetch
# worker reschedules it, the poller backs off, neither holds a slot meanwhile.
MAX_READ_WAIT_SECONDS: Final = 2.0
# Error codes repeated in our messages: short ASCII words (``blocked_by_time``), nothing else
# of the answer, which may echo the buyer's text.
_CODE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,80}")
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class AnswerTooLarge(RetryableError):
    """A 2xx answer over the call's cap. Retryable for an API document (a passing fault);
    a file download catches it and refuses the file instead, since retrying cannot shrink
    it."""


def check_api_base_url(url: str) -> str:
    """``url`` without its trailing slash, or ``ValueError`` saying what is wrong.

    https only, except to a loopback host (a local fake of the marketplace or a local proxy):
    the seller's token travels in every request. No credentials, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"api_base_url must be an https:// URL, got {url[:100]!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("api_base_url must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError("api_base_url must use https (http only to a loopback host): the "
                         "seller's token is sent with every call")
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MarketplaceSettings(PollingSettings, frozen=True, kw_only=True,
                          forbid_unknown_fields=True):
    """What every marketplace channel lets operators set.

    ``api_base_url``: where the marketplace's API is (each adapter defaults to the real one).
    ``poll_interval_seconds``: how often the reconciliation poll looks for what no
    notification announced. ``timeout_seconds``: per provider call.
    """

    api_base_url: str
    poll_interval_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=86400.0)] = 60.0
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=120.0)] = 10.0

    def __post_init__(self) -> None:
        check_api_base_url(self.api_base_url)

    @property
    def base_url(self) -> str:
        return self.api_base_url.rstrip("/")


class ApiAnswer(msgspec.Struct, frozen=True):
    """A 2xx answer of the marketplace's API, read up to the cap."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class MarketplaceChannel(WebhookAdapter, PollingAdapter):
    """Base of marketplace adapters (module docstring). Subclasses set ``marketplace`` (the
    SLA label their messages carry), ``read_limits``, implement ``refresher``, ``verify``,
    ``parse``, ``fetch``, ``poll`` and ``deliver``, and extend ``api_error`` for their error
    bodies."""

    uses_oauth_tokens: ClassVar[bool] = True
    marketplace: ClassVar[str]
    # Per instance: an application's quota is a setting where the marketplace varies it.
    read_limits: tuple[RateLimit, ...] = ()
    settings: MarketplaceSettings

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self.schedule = Schedule(interval_seconds=settings.poll_interval_seconds,
                                 timeout_seconds=max(60.0, 6 * settings.timeout_seconds))

    @property
    @abc.abstractmethod
    def refresher(self) -> Refresher:
        """How this marketplace refreshes the seller's tokens (the store calls it, one
        process at a time)."""

    async def authorized(self, call: Callable[[str], Awaitable[T]]) -> T:
        """``call(access_token)`` with a token that is not about to expire; a 401 refreshes
        it once and retries once (``channels.tokens.with_token``)."""
        return await with_token(self.context.tokens, self.instance, self.refresher, call)

    async def read_turn(self, *, cost: float = 1.0,
                        max_wait: float = MAX_READ_WAIT_SECONDS) -> None:
        """Wait for a read's turn under ``read_limits`` (shared by every hub process); a wait
        longer than ``max_wait`` raises ``RateLimited`` with the time to come back."""
        limiter = self.context.limiter
        if limiter is None or not self.read_limits:
            return
        deadline = time.monotonic() + max_wait
        while True:
            wait = await limiter.acquire(self.instance, self.read_limits, cost=cost)
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise RateLimited(f"{self.marketplace} read budget spent; next turn in "
                                  f"{wait:.1f} s", retry_after=wait)
            await asyncio.sleep(wait)

    async def call_api(self, method: str, path: str, *, headers: Mapping[str, str],
                       params: Mapping[str, str] | None = None, data: Any = None,
                       max_bytes: int = MAX_API_ANSWER_BYTES) -> ApiAnswer:
        """One call to ``api_base_url + path``: timeout, no redirect, capped answer; an error
        answer raises ``api_error``'s verdict (a 401 a ``TokenExpired``, which ``authorized``
        answers with one refresh). A 2xx answer over the cap is a ``RetryableError``: a
        truncated JSON document cannot be read."""
        url = self.settings.base_url + path
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        async with self.context.http.request(method, url, params=params, data=data,
                                             headers=dict(headers), timeout=timeout,
                                             allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                raise PermanentError(f"{self.marketplace} answered {path.split('?')[0][:80]} "
                                     f"with a {resp.status} redirect; not followed")
            body, truncated = await read_capped(resp, max_bytes)
            answer_headers = {name: value for name, value in resp.headers.items()}
        if resp.status >= 400:
            raise self.api_error(resp.status, body, answer_headers)
        if truncated:
            raise AnswerTooLarge(f"{self.marketplace} answer larger than {max_bytes} bytes")
        return ApiAnswer(status=resp.status, body=body, headers=answer_headers)

    def api_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChannelError:
        """The error an answer ``status`` stands for; subclasses read their error body first
        (``error_code`` extracts a safe code to name) and fall back to this."""
        detail = f"{self.marketplace} HTTP {status}"
        if status == 401:
            return TokenExpired(f"{detail}: access token refused")
        if status == 429:
            return RateLimited(f"{detail}: rate limited",
                               retry_after=retry_after_seconds(headers.get("Retry-After")))
        if status in (408, 409, 425) or status >= 500:
            return RetryableError(detail)
        return PermanentError(detail)


def error_code(value: object) -> str | None:
    """A marketplace error code fit to repeat in logs and agent-facing errors, else None."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else None
