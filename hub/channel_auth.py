"""Operators load a channel's first OAuth tokens and see each instance's token state: the
admin API (``PUT``/``GET /api/v1/channels/{instance}/auth``) and what ``inboxhub channels auth``
shares with it. Tokens go in; only their state (``TokenState``) ever comes out.

The body is what a provider's token endpoint answers, so an operator can pipe it through::

    {"access_token": "...", "refresh_token": "...", "expires_in": 21600, "scope": "..."}

``expires_at`` (UNIX seconds) may stand instead of ``expires_in`` (Shopee's ``expire_in`` is
read as it); the other fields of Mercado Libre's, eBay's and Shopee's answers are accepted and
ignored; anything else is a 400.
Registered in ``hub.app.build_app``.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

import msgspec
from aiohttp import web

from channels.registry import ChannelRegistryError, load_adapter_class
from channels.services.tokens import MAX_TOKEN_LENGTH, OAuthTokens, TokenState, check_tokens
from hub import keys as K
from hub.api import json_response
from hub.auth import require_role
from hub.config import Config
from hub.errors import ApiError
from hub.openapi import operation

MAX_BODY_BYTES = 64 * 1024
TEN_YEARS = 10 * 366 * 86400.0

Token = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN_LENGTH)]


class TokenLoad(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Tokens an operator loads for an instance (a new authorization). ``expires_in``: seconds
    from now, as token endpoints answer (Shopee spells it ``expire_in``); or ``expires_at``:
    UNIX seconds; neither: the provider gave no lifetime (refreshed only after a 401). The
    other fields of Mercado Libre's, eBay's and Shopee's token answers are accepted and never
    stored, so an answer can be piped in as it came; anything else is refused, because a
    misspelt ``refresh_token`` silently dropped would lose the account at the first expiry."""

    access_token: Token
    refresh_token: Token | None = None
    expires_in: Annotated[float, msgspec.Meta(gt=0, le=TEN_YEARS)] | None = None
    expires_at: Annotated[float, msgspec.Meta(gt=0)] | None = None
    scope: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    expire_in: Annotated[float, msgspec.Meta(gt=0, le=TEN_YEARS)] | None = None  # Shopee
    # Accepted and ignored: Mercado Libre (token_type, user_id), eBay
    # (refresh_token_expires_in), Shopee (request_id, error, message, *_id_list).
    token_type: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    user_id: int | str | None = None
    refresh_token_expires_in: float | None = None
    request_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    error: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    merchant_id_list: Annotated[list[int], msgspec.Meta(max_length=10_000)] | None = None
    shop_id_list: Annotated[list[int], msgspec.Meta(max_length=10_000)] | None = None


class ChannelTokenStates(msgspec.Struct, frozen=True):
    """Every configured OAuth channel instance's token state."""

    channels: list[TokenState]


class NotAnOAuthChannel(LookupError):
    pass


def parse_token_load(body: bytes, *, now: float | None = None) -> OAuthTokens:
    """The tokens in a load request, or ``ValueError`` saying what is wrong (never a token:
    msgspec names the field, not its value)."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"the tokens are larger than {MAX_BODY_BYTES} bytes")
    try:
        load = msgspec.json.decode(body, type=TokenLoad)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)[:300]) from None
    if load.error:  # Shopee answers errors with a 200 and a body like this one
        raise ValueError(f"the provider's answer is an error: {load.error[:100]}")
    if load.expire_in is not None:
        if load.expires_in is not None:
            raise ValueError("give expires_in or expire_in, not both")
        load = msgspec.structs.replace(load, expires_in=load.expire_in)
    if load.expires_in is not None and load.expires_at is not None:
        raise ValueError("give expires_in or expires_at, not both")
    at = time.time() if now is None else now
    expires_at = load.expires_at
    if load.expires_in is not None:
        expires_at = at + load.expires_in
    if expires_at is not None and (not math.isfinite(expires_at) or expires_at > at + TEN_YEARS):
        raise ValueError("expires_at must be a UNIX time within ten years")
    tokens = OAuthTokens(access_token=load.access_token, refresh_token=load.refresh_token,
                         expires_at=expires_at, scope=load.scope or None)
    check_tokens(tokens)
    return tokens


def oauth_channel(config: Config, instance: str) -> str:
    """The type of configured channel ``instance``, if it uses OAuth tokens; ``LookupError``
    when no such channel is configured, ``NotAnOAuthChannel`` when it takes no tokens."""
    for channel in config.channels:
        if channel.name == instance:
            try:
                uses = load_adapter_class(channel.type).oauth_for(channel.settings)
            except ChannelRegistryError:
                uses = False
            if not uses:
                raise NotAnOAuthChannel(f"channel {instance} ({channel.type}) does not use "
                                        "OAuth tokens")
            return channel.type
    raise LookupError(f"no channel instance {instance!r} is configured")


def oauth_instances(config: Config) -> list[str]:
    """Configured instances (enabled or not) whose channel uses OAuth tokens."""
    found = []
    for channel in config.channels:
        try:
            if load_adapter_class(channel.type).oauth_for(channel.settings):
                found.append(channel.name)
        except ChannelRegistryError:
            continue
    return found


# -- the admin API -----------------------------------------------------------------------------

routes = web.RouteTableDef()
_INSTANCE = {"instance": "channel instance name"}


def _instance(request: web.Request) -> str:
    instance = request.match_info["instance"]
    try:
        oauth_channel(request.app[K.CONFIG].config, instance)
    except NotAnOAuthChannel as exc:
        raise ApiError(422, str(exc), "not_oauth") from None
    except LookupError:
        raise ApiError(404, "no such channel instance") from None
    return instance


@routes.put("/api/v1/channels/{instance}/auth")
@operation("Load a channel instance's OAuth tokens (a new authorization)",
           {200: TokenState, 404: None, 422: None}, role="admin", tag="channels",
           body=TokenLoad, path_params=_INSTANCE,
           description="The body is the provider's token answer: `access_token`, "
                       "`refresh_token`, `expires_in` (or `expires_at`), `scope`. Answers the "
                       "instance's token state, never the tokens. Clears needs_reauth. 404 "
                       "unknown instance, 422 a channel that uses no OAuth tokens, 400 "
                       "malformed, 413 over 64 KiB.")
async def put_auth(request: web.Request) -> web.Response:
    require_role(request, "admin")
    instance = _instance(request)
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, f"the tokens are larger than {MAX_BODY_BYTES} bytes")
    body = await request.read()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"the tokens are larger than {MAX_BODY_BYTES} bytes")
    try:
        tokens = parse_token_load(body)
    except ValueError as exc:
        raise ApiError(400, f"invalid tokens: {exc}", "invalid_body") from None
    state = await request.app[K.OAUTH].put(instance, tokens)
    return json_response(state)


@routes.get("/api/v1/channels/{instance}/auth")
@operation("A channel instance's OAuth token state (never the tokens)",
           {200: TokenState, 404: None, 422: None}, role="admin", tag="channels",
           path_params=_INSTANCE,
           description="`status`: ok, expiring (refreshed on next use), needs_reauth (load "
                       "new tokens) or missing; with expires_at, last_refresh_at, loaded_at "
                       "and last_error.")
async def get_auth(request: web.Request) -> web.Response:
    require_role(request, "admin")
    return json_response(await request.app[K.OAUTH].state(_instance(request)))
