"""Bearer-token auth for the API. Tokens are kept only as SHA-256 digests in memory; the
config may give the token itself (from env/file) or just its digest."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from hub.config import TokenSettings
from hub.errors import ApiError, error_response, shape_errors

ROLE_RANK = {"agent": 1, "supervisor": 2, "admin": 3}
UNAUTHENTICATED_PATHS = frozenset({"/api/v1/openapi.json"})
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
            scheme, _, token = header.partition(" ")
            principal = index.authenticate(token.strip()) if scheme.lower() == "bearer" else None
            if principal is None:
                return error_response(401, "missing or invalid bearer token",
                                      headers=_CHALLENGE)
            request[PRINCIPAL] = principal
        return await handler(request)

    @web.middleware
    async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await shape_errors(request, lambda r: authenticate(r, handler))

    return front_door
