"""OAuth for adapters: call the provider with a fresh token, and refresh it the standard way.

An adapter wraps each provider call in ``with_token``::

    async def deliver(self, reply):
        async def call(access_token: str) -> str:
            ...  # the request, with "Authorization: Bearer <access_token>"
        return await with_token(self.context.tokens, self.instance, self.refresher, call)

``with_token`` refreshes the token when it expires within the store's margin, before the call
spends a request on it; when the provider refuses it anyway (``TokenExpired``, or an
``aiohttp.ClientResponseError`` with status 401) it refreshes once and retries once. Refreshes
are single-flight across hub processes (``TokenStore.refresh``). A refused refresh is an
``AuthError``: the instance shows ``needs_reauth`` until an operator loads new tokens.

``OAuth2Refresher`` is the refresh-token grant of RFC 6749 §6 (Mercado Libre, eBay, most
providers); a provider with its own scheme (Shopee signs the request) passes its own
``Refresher``. The helpers at the end are what both token stores share.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import msgspec

from channels.base import map_http_error
from channels.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RetryableError,
    TokenExpired,
)
from channels.http import read_capped
from channels.secrets import Secret
from channels.services.tokens import OAuthTokens, Refresher, TokenStore, check_tokens

log = logging.getLogger(__name__)

T = TypeVar("T")


def _refused(exc: BaseException) -> bool:
    """The provider refused the access token (as opposed to our permissions: 403)."""
    if isinstance(exc, TokenExpired):
        return True
    return isinstance(exc, aiohttp.ClientResponseError) and exc.status == 401


async def with_token(store: TokenStore | None, instance: str, refresher: Refresher,
                     call: Callable[[str], Awaitable[T]], *, margin: float | None = None,
                     now: Callable[[], float] = time.time) -> T:
    """Run ``call(access_token)`` with a token that is not about to expire; on a refusal,
    refresh once and retry once (a second refusal raises ``TokenExpired``: retryable)."""
    if store is None:
        raise AuthError(f"{instance}: this hub offers no token store for OAuth channels")
    tokens = await store.current(instance)
    ahead = store.margin_seconds if margin is None else margin
    if tokens.expires_within(ahead, now()):
        tokens = await store.refresh(instance, refresher, stale=tokens)
    try:
        return await call(tokens.access_token)
    except Exception as exc:
        if not _refused(exc):
            raise
    tokens = await store.refresh(instance, refresher, stale=tokens)
    try:
        return await call(tokens.access_token)
    except Exception as exc:
        if not _refused(exc):
            raise
        raise TokenExpired(f"{instance}: the provider refused the access token again right "
                           "after a refresh") from None


# -- the refresh-token grant (RFC 6749 §6) ---------------------------------------------------

MAX_TOKEN_ANSWER_BYTES = 64 * 1024
# OAuth error codes are short ASCII words ("invalid_grant"); nothing else of the answer is
# repeated, as a provider's description might echo what we sent.
_ERROR_CODE = re.compile(r"[a-z0-9_.\-]{1,64}", re.IGNORECASE)
# Answers that mean the grant itself is gone: retrying cannot succeed.
REFUSALS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client",
                      "invalid_scope", "unsupported_grant_type", "access_denied"})


class _TokenAnswer(msgspec.Struct):
    access_token: str
    refresh_token: str | None = None
    expires_in: float | None = None
    scope: str | None = None
    token_type: str | None = None


class _ErrorAnswer(msgspec.Struct):
    error: str | None = None


_answer = msgspec.json.Decoder(_TokenAnswer)
_error = msgspec.json.Decoder(_ErrorAnswer)


def _error_code(body: bytes) -> str | None:
    try:
        code = _error.decode(body).error
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return code if code is not None and _ERROR_CODE.fullmatch(code) else None


class OAuth2Refresher:
    """POSTs ``grant_type=refresh_token`` to ``token_url`` as a form and reads the standard
    JSON answer. The client's credentials go in the form (Mercado Libre) or, with
    ``basic_auth``, in an HTTP Basic header (eBay). A 400/401 answer whose ``error`` is one of
    ``REFUSALS`` (or any other 400/401/403) is an ``AuthError``; 429, 5xx, timeouts and
    connection failures are ``RetryableError``s. Redirects are not followed."""

    def __init__(self, http: aiohttp.ClientSession, token_url: str, *, client_id: str,
                 client_secret: Secret | None = None, basic_auth: bool = False,
                 timeout: float = 10.0, now: Callable[[], float] = time.time) -> None:
        self.http = http
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.basic_auth = basic_auth
        self.timeout = timeout
        self.now = now

    def __repr__(self) -> str:
        return f"OAuth2Refresher({self.token_url!r}, client_id={self.client_id!r})"

    async def __call__(self, tokens: OAuthTokens) -> OAuthTokens:
        if not tokens.refresh_token:
            raise AuthError("no refresh token is stored: load new tokens")
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        secret = self.client_secret.reveal() if self.client_secret is not None else None
        if self.basic_auth:
            pair = f"{self.client_id}:{secret or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form["client_id"] = self.client_id
            if secret is not None:
                form["client_secret"] = secret
        body = urllib.parse.urlencode(form).encode()
        try:
            async with self.http.post(self.token_url, data=body, headers=headers,
                                      allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status = resp.status
                answer, truncated = await read_capped(resp, MAX_TOKEN_ANSWER_BYTES)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise map_http_error(exc) from None
        if status == 200 and not truncated:
            return self._tokens(answer)
        if status == 200:
            _log_unusable(f"an answer over {MAX_TOKEN_ANSWER_BYTES} bytes")
        code = _error_code(answer)
        detail = f"token endpoint answered HTTP {status}" + (f" ({code})" if code else "")
        if status in (400, 401, 403) or (code or "").lower() in REFUSALS:
            raise AuthError(f"refresh refused: {detail}")
        if 300 <= status < 400:
            raise AuthError(f"{detail}: a redirect is not followed; check the token URL")
        raise RetryableError(detail)

    def _tokens(self, body: bytes) -> OAuthTokens:
        try:
            got = _answer.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            _log_unusable("a body that is not a token answer")
            raise RetryableError("token endpoint answered HTTP 200 without usable tokens") \
                from None
        expires_at = None
        if got.expires_in is not None and got.expires_in > 0:
            expires_at = self.now() + got.expires_in
        return OAuthTokens(access_token=got.access_token, refresh_token=got.refresh_token,
                           expires_at=expires_at, scope=got.scope)


# -- what both token stores share ------------------------------------------------------------

DEFAULT_REFRESH_TIMEOUT_SECONDS = 20.0


def scrub(text: str, *tokens: OAuthTokens | None) -> str:
    """``text`` without any of the tokens' secrets in it, cut to 300 characters: an error
    message may repeat what a provider answered, and a careless one echoes the token."""
    for t in tokens:
        if t is None:
            continue
        for secret in (t.access_token, t.refresh_token):
            if secret:
                text = text.replace(secret, "[redacted]")
    return text[:300]


def merge_refreshed(old: OAuthTokens, new: OAuthTokens) -> OAuthTokens:
    """A refresh answer without a refresh token keeps the old one (eBay does not rotate)."""
    if new.refresh_token is None and old.refresh_token is not None:
        return msgspec.structs.replace(new, refresh_token=old.refresh_token)
    return new


async def call_refresher(refresher: Refresher, tokens: OAuthTokens,
                         timeout: float) -> OAuthTokens:
    """Run one refresh, bounded by ``timeout``, and classify its outcome: the merged new tokens,
    or ``AuthError`` (refused: a human is needed) or ``RetryableError`` (anything else)."""
    if not tokens.refresh_token:
        raise AuthError("no refresh token is stored, so the expired access token cannot be "
                        "renewed: load new tokens")
    try:
        async with asyncio.timeout(timeout):
            new = await refresher(tokens)
    except AuthError as exc:
        raise AuthError(scrub(str(exc), tokens)) from None
    except PermanentError as exc:  # the grant cannot succeed: the same as refused
        raise AuthError(scrub(f"refresh refused: {exc}", tokens)) from None
    except RetryableError as exc:
        raise RetryableError(scrub(f"refresh failed: {exc}", tokens),
                             retry_after=exc.retry_after) from None
    except TimeoutError:
        raise RetryableError(f"refresh timed out after {timeout:g}s") from None
    except ChannelError as exc:
        raise RetryableError(scrub(f"refresh failed: {exc}", tokens)) from None
    except Exception as exc:  # a refresher that lets a transport error through
        if isinstance(exc, aiohttp.ClientResponseError) and exc.status in (400, 401, 403):
            raise AuthError(f"refresh refused: HTTP {exc.status}") from None
        raise RetryableError(scrub(f"refresh failed: {map_http_error(exc)}", tokens)) from None
    if not isinstance(new, OAuthTokens):
        raise RetryableError("the refresher returned no OAuthTokens")
    merged = merge_refreshed(tokens, new)
    try:
        check_tokens(merged)
    except ValueError as exc:
        _log_unusable(f"unusable tokens ({exc})")
        raise RetryableError(f"the token endpoint answered unusable tokens: {exc}") from None
    return merged


def _log_unusable(what: str) -> None:
    """A 200 whose tokens cannot be used: a rotating provider has spent the old refresh token
    all the same, so the next refresh is likely refused. Said loudly, once per answer."""
    log.error("token endpoint answered HTTP 200 with %s; if the provider rotated the refresh "
              "token, the channel will need re-authorization", what)
