"""Password sign-in for people (the web inbox) and the accounts admins manage.

``POST /api/v1/auth/login`` is the one unauthenticated write: it takes JSON only (a form on
another site cannot post JSON without a CORS preflight this hub never grants, so nobody can
sign a victim's browser into the attacker's account), counts failures per account and per
client address (429 with Retry-After past ``[api] login_failures_per_*`` within
``login_window_minutes``), and answers an unknown account exactly like a wrong password.
The cookie is HttpOnly and SameSite=Strict, Secure when the request came over https or
``hub.public_url`` is https (the hub behind a TLS proxy).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from aiohttp import web

from hub import keys as K
from hub.api import decode_body, json_response, principal_of
from hub.auth import ACCOUNTS, LOGIN_PATH, SESSION_COOKIE, require_role, session_of
from hub.errors import ApiError
from hub.openapi import operation
from storage.accounts import (
    ACCOUNT_ID_PATTERN,
    MAX_PASSWORD,
    Account,
    AccountExists,
    AccountStore,
    Role,
    UnknownAccount,
    WeakPassword,
)

routes = web.RouteTableDef()
# Above the largest valid body even fully \u-escaped (the fields are capped in characters).
MAX_BODY_BYTES = 64 * 1024
AccountId = Annotated[str, msgspec.Meta(pattern=ACCOUNT_ID_PATTERN)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD)]
ACCOUNT_PATH = {"id": "account id (the agent id in routing)"}


class LoginRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Password


class Me(msgspec.Struct, frozen=True):
    """Who the caller is; ``csrf_token`` (cookie sessions only) goes in X-CSRF-Token."""

    agent_id: str
    role: str
    csrf_token: str | None = None
    session_expires_at: float | None = None


class NewAccount(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: AccountId
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    role: Role
    password: Password


class PasswordChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    password: Password
    # Required when people change their own password: a borrowed open session is not enough.
    current_password: Password | None = None


class AccountList(msgspec.Struct, frozen=True):
    accounts: list[Account]


class SignedOut(msgspec.Struct, frozen=True):
    signed_out: bool = True


async def accounts_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[K.CONFIG].config.api
    app[ACCOUNTS] = AccountStore(app[K.REDIS], idle_seconds=settings.session_idle_minutes * 60,
                                 max_seconds=settings.session_max_hours * 3600)
    yield


async def _body(request: web.Request) -> bytes:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    return body


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def _secure(request: web.Request) -> bool:
    public_url = request.app[K.CONFIG].config.hub.public_url or ""
    return request.secure or public_url.startswith("https://")


@routes.post(LOGIN_PATH)
@operation("Sign in with a password (sets the session cookie)",
           {200: Me, 401: None, 415: None, 429: None}, role=None, tag="sign-in",
           body=LoginRequest,
           description="JSON only (415 otherwise). Sets the HttpOnly, SameSite=Strict cookie "
                       f"`{SESSION_COOKIE}`; send `csrf_token` back as X-CSRF-Token on every "
                       "POST/PUT/DELETE. 401 for a wrong password, an unknown or a disabled "
                       "account alike; 429 with Retry-After after too many failures for the "
                       "account or from this address.")
async def login(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        raise ApiError(415, "sign-in takes application/json", "unsupported_media_type")
    credentials = decode_body(await _body(request), LoginRequest)
    settings = request.app[K.CONFIG].config.api
    accounts = request.app[ACCOUNTS]
    client = _client(request)
    by_account, by_client = await accounts.failures(credentials.username, client)
    if (by_account >= settings.login_failures_per_account
            or by_client >= settings.login_failures_per_ip):
        wait = await accounts.retry_after(credentials.username, client)
        raise ApiError(429, "too many failed sign-ins; try again later", "rate_limited",
                       headers={"Retry-After": str(wait)})
    account = await accounts.verify(credentials.username, credentials.password)
    if account is None:
        await accounts.record_failure(credentials.username, client,
                                      settings.login_window_minutes * 60)
        raise ApiError(401, "wrong username or password", "invalid_credentials")
    await accounts.clear_failures(account.id)
    session_id, session = await accounts.open_session(account)
    response = json_response(Me(account.id, account.role, session.csrf_token,
                                session.created_at + accounts.max_seconds))
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Strict",
                        secure=_secure(request), path="/",
                        max_age=int(accounts.max_seconds))
    return response


@routes.post("/api/v1/auth/logout")
@operation("Sign out this session", {200: SignedOut}, tag="sign-in",
           description="Ends the cookie session the request came with and clears the cookie; "
                       "with a bearer token it does nothing (tokens are revoked in the config).")
async def logout(request: web.Request) -> web.Response:
    found = session_of(request)
    if found is not None:
        await request.app[ACCOUNTS].close_session(found[0])
    response = json_response(SignedOut())
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.post("/api/v1/auth/logout-everywhere")
@operation("Sign out every session of the caller's account", {200: SignedOut},
           tag="sign-in", description="Every browser the account is signed in on must sign "
                                      "in again (a lost laptop, a shared computer).")
async def logout_everywhere(request: web.Request) -> web.Response:
    await request.app[ACCOUNTS].close_all(principal_of(request).name)
    response = json_response(SignedOut())
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/api/v1/me")
@operation("Who the caller is", {200: Me}, tag="sign-in",
           description="For a cookie session also its CSRF token (a reloaded page gets it "
                       "here) and when it ends at the latest.")
async def me(request: web.Request) -> web.Response:
    principal = principal_of(request)
    found = session_of(request)
    if found is None:
        return json_response(Me(principal.name, principal.role))
    session = found[1]
    return json_response(Me(principal.name, principal.role, session.csrf_token,
                            session.created_at + request.app[ACCOUNTS].max_seconds))


@routes.get("/api/v1/accounts")
@operation("Every sign-in account", {200: AccountList}, role="admin", tag="sign-in")
async def list_accounts(request: web.Request) -> web.Response:
    require_role(request, "admin")
    return json_response(AccountList(await request.app[ACCOUNTS].list()))


@routes.post("/api/v1/accounts")
@operation("Create a sign-in account", {201: Account, 409: None}, role="admin",
           tag="sign-in", body=NewAccount,
           description="`id` is the agent id routing knows (`[[routing.agents]] id`), so the "
                       "person is scoped as that agent. The password: 12 to 1,024 characters. "
                       "409 when the id exists.")
async def create_account(request: web.Request) -> web.Response:
    require_role(request, "admin")
    new = decode_body(await _body(request), NewAccount)
    try:
        account = await request.app[ACCOUNTS].create(new.id, name=new.name, role=new.role,
                                                     password=new.password)
    except WeakPassword as exc:
        raise ApiError(400, str(exc), "weak_password") from None
    except AccountExists as exc:
        raise ApiError(409, str(exc), "exists") from None
    return json_response(account, 201)


async def _account_or_404(request: web.Request) -> Account:
    account_id = request.match_info["id"]
    account = (await request.app[ACCOUNTS].get(account_id)
               if len(account_id) <= 64 else None)
    if account is None:
        raise ApiError(404, "no such account")
    return account


@routes.post("/api/v1/accounts/{id}/password")
@operation("Set an account's password", {200: Account, 403: None, 404: None},
           tag="sign-in", body=PasswordChange, path_params=ACCOUNT_PATH,
           description="Admins set anyone's; everybody else only their own, with "
                       "`current_password`. Every session of the account ends.")
async def set_password(request: web.Request) -> web.Response:
    principal = principal_of(request)
    change = decode_body(await _body(request), PasswordChange)
    account_id = request.match_info["id"]
    accounts = request.app[ACCOUNTS]
    if not principal.at_least("admin"):
        if principal.name != account_id:
            raise ApiError(403, "only admins change another account's password")
        if change.current_password is None or await accounts.verify(
                account_id, change.current_password) is None:
            raise ApiError(403, "the current password is wrong", "invalid_credentials")
    account = await _account_or_404(request)
    try:
        await accounts.set_password(account.id, change.password)
    except WeakPassword as exc:
        raise ApiError(400, str(exc), "weak_password") from None
    except UnknownAccount:
        raise ApiError(404, "no such account") from None
    return json_response(await _account_or_404(request))


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    require_role(request, "admin")
    account = await _account_or_404(request)
    return json_response(await request.app[ACCOUNTS].set_enabled(account.id, enabled))


@routes.post("/api/v1/accounts/{id}/disable")
@operation("Disable an account (its sessions end at once)", {200: Account, 404: None},
           role="admin", tag="sign-in", path_params=ACCOUNT_PATH)
async def disable_account(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


@routes.post("/api/v1/accounts/{id}/enable")
@operation("Enable an account again", {200: Account, 404: None}, role="admin",
           tag="sign-in", path_params=ACCOUNT_PATH)
async def enable_account(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)
