"""OAuth credentials that rotate (Mercado Libre, Shopee, eBay): kept in Redis, never logged or
returned by the API, refreshed before expiry and after a 401 by one process at a time.

Mercado Libre and Shopee hand out a new refresh token with every refresh and invalidate the
old one: two processes refreshing at once with the same refresh token leave one of them with
a dead token, and if the dead one is what gets stored the account is lost until a human
authorizes the app again. So ``TokenStore.refresh`` is single-flight across every hub
process, and whoever waited gets the rotated tokens instead of refreshing again.

Adapters do not call the store directly: ``channels.tokens.with_token`` wraps a provider call
(refresh before expiry, refresh and retry once on a 401). An instance's state
(``TokenStore.state``) is what operators and channel health see: never a secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import msgspec

# Refresh this long before the access token expires (and report the instance as "expiring").
DEFAULT_MARGIN_SECONDS = 60.0
# Longest token we store: real ones are a few hundred bytes (eBay's ~2 KB).
MAX_TOKEN_LENGTH = 8192
# Visible ASCII only: a token goes into an HTTP header, where a CR/LF would inject one.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")

TokenStatus = Literal["ok", "expiring", "needs_reauth", "missing"]


class OAuthTokens(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None  # UNIX seconds; None: the provider gave no lifetime
    scope: str | None = None

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"OAuthTokens(expires_at={self.expires_at!r}, scope={self.scope!r})"

    __str__ = __repr__

    def expires_within(self, seconds: float, now: float) -> bool:
        """True when the access token is expired or will be within ``seconds``."""
        return self.expires_at is not None and self.expires_at - now <= seconds


def check_tokens(tokens: OAuthTokens) -> None:
    """Refuse tokens no provider would accept back (``ValueError`` naming the field, never the
    value): empty, oversized, or with characters that do not belong in an HTTP header."""
    for name in ("access_token", "refresh_token"):
        value = getattr(tokens, name)
        if value is None and name == "refresh_token":
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
        if len(value) > MAX_TOKEN_LENGTH:
            raise ValueError(f"{name} is longer than {MAX_TOKEN_LENGTH} characters")
        if _TOKEN_CHARS.fullmatch(value) is None:
            raise ValueError(f"{name} may hold only visible ASCII characters (no spaces or "
                             "control characters)")
    if tokens.expires_at is not None and not math.isfinite(tokens.expires_at):
        raise ValueError("expires_at must be a finite UNIX time")
    if tokens.scope is not None and (len(tokens.scope) > 1024 or not tokens.scope.isprintable()):
        raise ValueError("scope must be printable text of at most 1024 characters")


class TokenState(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator and channel health see of one instance's tokens (no secret in it).

    ``status``: ``ok``; ``expiring`` (the access token expires within the store's margin, or
    has expired: it is refreshed on next use); ``needs_reauth`` (the provider refused the
    refresh, or nothing can renew an expired token: a human has to load new tokens with
    ``inboxhub channels auth INSTANCE``); ``missing`` (none were ever loaded).
    ``generation`` counts the tokens stored (loads and refreshes); ``last_error`` says why
    the last refresh failed, cleared by the next success.
    """

    instance: str
    status: TokenStatus
    expires_at: float | None = None
    last_refresh_at: float | None = None
    loaded_at: float | None = None
    last_error: str | None = None
    refreshable: bool = False
    scope: str | None = None
    generation: int = 0


def token_status(*, present: bool, needs_reauth: bool, refreshable: bool,
                 expires_at: float | None, margin: float, now: float) -> TokenStatus:
    """The one rule both stores apply to their records."""
    if not present:
        return "missing"
    if needs_reauth:
        return "needs_reauth"
    if expires_at is not None and expires_at - now <= margin:
        return "expiring" if refreshable or expires_at > now else "needs_reauth"
    return "ok"


Refresher = Callable[[OAuthTokens], Awaitable[OAuthTokens]]
"""Calls the provider's token endpoint with the stored tokens' refresh token and returns the
new tokens (a missing ``refresh_token`` in the answer keeps the old one). Raises ``AuthError``
when the provider refused the refresh (``invalid_grant``), ``RetryableError`` for anything
that may pass (timeouts, 5xx); ``channels.tokens.OAuth2Refresher`` is the RFC 6749 one."""


class TokenStore(Protocol):
    """Where an instance's tokens live (``storage.tokens.RedisTokenStore``; the kit's
    ``channels.testing.tokens.MemoryTokenStore``)."""

    @property
    def margin_seconds(self) -> float:
        """Refresh this long before expiry; ``state`` reports ``expiring`` inside it."""
        ...

    async def get(self, instance: str) -> OAuthTokens | None:
        """The stored tokens, whatever their state (after a refused refresh too: the old
        refresh token is kept until a rotation succeeds); None when none were loaded."""
        ...

    async def current(self, instance: str) -> OAuthTokens:
        """The tokens to call the provider with: ``AuthError`` when none were loaded or the
        instance needs re-authorization."""
        ...

    async def put(self, instance: str, tokens: OAuthTokens) -> TokenState:
        """Store tokens an operator loaded (a new authorization): clears ``needs_reauth``."""
        ...

    async def refresh(self, instance: str, refresher: Refresher, *,
                      stale: OAuthTokens | None = None) -> OAuthTokens:
        """Single-flight across processes: one refresh runs, the others get its result.

        ``stale``: the tokens the caller found wanting (expiring, or refused with a 401);
        when the stored ones are already others, they are returned without a refresh. The
        refresher is always called with the stored tokens, read under the lock, never with
        a caller's copy. A refused refresh raises ``AuthError`` and leaves the instance in
        ``needs_reauth``; any other failure raises ``RetryableError`` (and the tasks that
        waited for that refresh get the same error, not a second attempt).
        """
        ...

    async def state(self, instance: str, *, now: float | None = None) -> TokenState:
        """What the operator and channel health see; never a secret."""
        ...
