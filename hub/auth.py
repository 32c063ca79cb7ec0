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

ROLE_RANK = {"agent": 1, "supervisor": 2, "admin": 3}


class Principal(msgspec.Struct, frozen=True):
    name: str
    role: str


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
        raise web.HTTPUnauthorized(
            text='{"error": "missing or invalid bearer token"}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="inboxhub"'},
        )
    if ROLE_RANK[principal.role] < ROLE_RANK[role]:
        raise web.HTTPForbidden(
            text=f'{{"error": "requires role {role}"}}', content_type="application/json"
        )
    return principal


def make_auth_middleware(index: TokenIndex) -> Any:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.path != "/api/v1/openapi.json":
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            principal = index.authenticate(token.strip()) if scheme.lower() == "bearer" else None
            if principal is None:
                return web.json_response(
                    {"error": "missing or invalid bearer token"}, status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="inboxhub"'},
                )
            request[PRINCIPAL] = principal
        return await handler(request)

    return auth_middleware
