"""Who a request acts as. Integrations send a bearer token (kept only as a SHA-256 digest in
memory; the config gives the token itself, from env/file, or just its digest). People who
signed in with a password (``hub/accounts_api.py``) send the session cookie, and on every
method that changes something the session's CSRF token in ``X-CSRF-Token``: a page on
another site can make the browser send the cookie, never read the token. Either way the
request gets the same ``Principal``, so scope (``hub/scope.py``) and roles apply unchanged."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from hub.config import TokenSettings
from hub.errors import ApiError, error_response, shape_errors
from storage.accounts import AccountStore, Session, csrf_matches

ROLE_RANK = {"agent": 1, "supervisor": 2, "admin": 3}
LOGIN_PATH = "/api/v1/auth/login"
UNAUTHENTICATED_PATHS = frozenset({"/api/v1/openapi.json", LOGIN_PATH})
SESSION_COOKIE = "inboxhub_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACCOUNTS = web.AppKey("accounts", AccountStore)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="inboxhub"'}


class Principal(msgspec.Struct, frozen=True):
    """Who a request acts as; for an agent token ``name`` is the agent id in routing."""

    name: str
    role: str

    def at_least(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class TokenIndex:
    def __init__(self, tokens: list[TokenSettings]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for t in tokens:
            digest = (
                hashlib.sha256(t.token.reveal_bytes()).digest() if t.token is not None
                else bytes.fromhex(t.token_sha256 or "")
            )
            self._entries.append((digest, Principal(t.name, t.role)))

    def authenticate(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for expected, principal in self._entries:  # no early exit: constant work per request
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


# aiohttp >= 3.14 wants typed request keys; older releases take a plain string.
PRINCIPAL: Any = (
    web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "inboxhub.principal"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION: Any = (
    web.RequestKey("session", tuple) if hasattr(web, "RequestKey") else "inboxhub.session"
)


def require_role(request: web.Request, role: str) -> Principal:
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        raise ApiError(401, "missing or invalid bearer token", headers=_CHALLENGE)
    if not principal.at_least(role):
        raise ApiError(403, f"requires role {role}")
    return principal


def make_auth_middleware(index: TokenIndex) -> Any:
    """The front door of every request: errors leave in one shape (``hub.errors``), and
    everything under ``/api/`` but the OpenAPI document needs a valid bearer token."""

    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.path not in UNAUTHENTICATED_PATHS:
            header = request.headers.get("Authorization", "")
            principal: Principal | None = None
            if header:
                scheme, _, token = header.partition(" ")
                if scheme.lower() == "bearer":
                    principal = index.authenticate(token.strip())
            elif SESSION_COOKIE in request.cookies and ACCOUNTS in request.app:
                session_id = request.cookies[SESSION_COOKIE]
                session = await request.app[ACCOUNTS].session(session_id)
                if session is not None:
                    if request.method not in SAFE_METHODS and not csrf_matches(
                            session.csrf_token, request.headers.get(CSRF_HEADER, "")):
                        return error_response(403, f"missing or wrong {CSRF_HEADER} for this "
                                              "session", "csrf")
                    principal = Principal(session.account, session.role)
                    request[SESSION] = (session_id, session)
            if principal is None:
                return error_response(401, "missing or invalid bearer token or session",
                                      headers=_CHALLENGE)
            request[PRINCIPAL] = principal
        return await handler(request)

    @web.middleware
    async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await shape_errors(request, lambda r: authenticate(r, handler))

    return front_door


def session_of(request: web.Request) -> tuple[str, Session] | None:
    """The cookie session a request came with (None for a bearer token)."""
    found: tuple[str, Session] | None = request.get(SESSION)
    return found
