"""OAuth credentials that rotate (Mercado Libre, Shopee, eBay): kept in Redis, never logged or
returned by the API, refreshed before expiry and after a 401 by one process at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec


class OAuthTokens(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None  # UNIX seconds
    scope: str | None = None

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"OAuthTokens(expires_at={self.expires_at!r}, scope={self.scope!r})"


Refresher = Callable[[OAuthTokens], Awaitable[OAuthTokens]]


class TokenStore(Protocol):
    async def get(self, instance: str) -> OAuthTokens | None: ...

    async def put(self, instance: str, tokens: OAuthTokens) -> None: ...

    async def refresh(self, instance: str, refresher: Refresher) -> OAuthTokens:
        """Single-flight across processes: one refresh runs, the others get its result."""
        ...
