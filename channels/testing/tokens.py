"""The token-refresh battery: an OAuth channel keeps working while its tokens rotate.

Mix ``TokenBattery`` into the conformance class of a channel whose provider calls carry OAuth
tokens (``ChannelAdapter.uses_oauth_tokens``) through ``channels.tokens.with_token``. The
battery gives two fixtures the test class's ``harness`` must use:

* ``kit_tokens``: the token store, ``MemoryTokenStore`` by default (no Redis needed);
  inboxhub's own tests override it with ``storage.tokens.RedisTokenStore`` (and
  ``second_tokens`` with a second Redis client: another hub process);
* ``kit_oauth``: ``KitOAuthServer``, a local OAuth 2.0 token endpoint that rotates refresh
  tokens the way Mercado Libre and Shopee do: each refresh invalidates the refresh token it
  used, so a second refresh with the old one fails (``invalid_grant``) and a broken
  single-flight loses the account, in the test as it would in production.

The harness builds its adapter with ``context.tokens = kit_tokens``, has the adapter refresh
through ``kit_oauth.token_url`` (client ``kit_oauth.client_id``/``client_secret``), has its
fake provider accept a call only when ``kit_oauth.authorized(authorization_header)`` (a 401
otherwise; its "auth" failure kind is a 403: a permission the token cannot fix), and loads
``kit_oauth.grant()`` for the adapter's instance before the first test runs. A provider with
its own token scheme overrides ``kit_oauth`` with an object satisfying ``OAuthControl``.

The battery checks: a token that expires between two sends is refreshed before it is used
(no request spent on a dead token); a 401 refreshes once and retries once, and a refusal of
the fresh token is not retried in a loop; concurrent sends and concurrent refreshes from two
clients of the store run the provider's refresh exactly once and all get the rotated token; a
refused refresh is an ``AuthError`` that leaves the instance ``needs_reauth`` with the old
refresh token kept, and nothing is sent until new tokens are loaded; no token ever appears in
a log line, a repr, an error or the state.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, cast

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.errors import AuthError, RetryableError, TokenExpired
from channels.models import OutboundReply
from channels.secrets import Secret
from channels.services.tokens import (
    DEFAULT_MARGIN_SECONDS,
    OAuthTokens,
    Refresher,
    TokenState,
    TokenStore,
    check_tokens,
    token_status,
)
from channels.testing.core import ConformanceHarness, IngestGate
from channels.tokens import (
    DEFAULT_REFRESH_TIMEOUT_SECONDS,
    OAuth2Refresher,
    call_refresher,
    scrub,
    with_token,
)

# -- the in-memory store ---------------------------------------------------------------------


class _Record:
    __slots__ = ("error", "failures", "generation", "loaded_at", "needs_reauth",
                 "refreshed_at", "tokens")

    def __init__(self, tokens: OAuthTokens, generation: int, loaded_at: float) -> None:
        self.tokens = tokens
        self.generation = generation
        self.failures = 0  # refreshes that ended in an error
        self.loaded_at: float | None = loaded_at
        self.refreshed_at: float | None = None
        self.error: str | None = None
        self.needs_reauth = False


class MemoryTokenStore:
    """``channels.services.tokens.TokenStore`` in one process, with the Redis store's rules:
    one refresh at a time per instance, waiters get its result (or its error), a refused
    refresh marks ``needs_reauth`` and keeps the tokens."""

    def __init__(self, *, margin_seconds: float = DEFAULT_MARGIN_SECONDS,
                 refresh_timeout_seconds: float = DEFAULT_REFRESH_TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.margin_seconds = margin_seconds
        self.refresh_timeout_seconds = refresh_timeout_seconds
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"MemoryTokenStore({len(self._records)} instances)"

    async def get(self, instance: str) -> OAuthTokens | None:
        record = self._records.get(instance)
        return None if record is None else record.tokens

    async def current(self, instance: str) -> OAuthTokens:
        record = self._records.get(instance)
        if record is None:
            raise AuthError(f"{instance}: no OAuth tokens loaded (inboxhub channels auth "
                            f"{instance})")
        if record.needs_reauth:
            raise AuthError(f"{instance} needs re-authorization: {record.error or 'refused'}")
        return record.tokens

    async def put(self, instance: str, tokens: OAuthTokens) -> TokenState:
        check_tokens(tokens)
        old = self._records.get(instance)
        generation = (old.generation if old else 0) + 1
        record = _Record(tokens, generation, self.clock())
        if old is not None:
            record.failures, record.refreshed_at = old.failures, old.refreshed_at
        self._records[instance] = record
        return await self.state(instance)

    async def refresh(self, instance: str, refresher: Refresher, *,
                      stale: OAuthTokens | None = None) -> OAuthTokens:
        seen = self._records.get(instance)
        if seen is None:
            await self.current(instance)  # raises: nothing to refresh
        assert seen is not None
        generation, failures = seen.generation, seen.failures
        async with self._locks.setdefault(instance, asyncio.Lock()):
            record = self._records[instance]
            if record.generation != generation or (
                    stale is not None and record.tokens.access_token != stale.access_token):
                return record.tokens  # rotated while we waited (or before we asked)
            if record.needs_reauth:
                raise AuthError(f"{instance} needs re-authorization: {record.error}")
            if record.failures != failures:  # a refresh under way when we came failed
                raise RetryableError(f"{instance}: token refresh failed: {record.error}")
            try:
                new = await call_refresher(refresher, record.tokens,
                                           self.refresh_timeout_seconds)
            except AuthError as exc:
                record.error, record.needs_reauth = scrub(str(exc), record.tokens), True
                record.failures += 1
                raise AuthError(f"{instance} needs re-authorization: {record.error}") from None
            except RetryableError as exc:
                record.error = scrub(str(exc), record.tokens)
                record.failures += 1
                raise
            fresh = _Record(new, record.generation + 1, 0.0)
            fresh.loaded_at, fresh.failures = record.loaded_at, record.failures
            fresh.refreshed_at = self.clock()
            self._records[instance] = fresh
            return new

    async def state(self, instance: str, *, now: float | None = None) -> TokenState:
        record = self._records.get(instance)
        at = self.clock() if now is None else now
        if record is None:
            return TokenState(instance=instance, status="missing")
        t = record.tokens
        refreshable = t.refresh_token is not None
        return TokenState(
            instance=instance,
            status=token_status(present=True, needs_reauth=record.needs_reauth,
                                refreshable=refreshable, expires_at=t.expires_at,
                                margin=self.margin_seconds, now=at),
            expires_at=t.expires_at, last_refresh_at=record.refreshed_at,
            loaded_at=record.loaded_at, last_error=record.error, refreshable=refreshable,
            scope=t.scope, generation=record.generation)


# -- the provider's token side ---------------------------------------------------------------


class OAuthControl(Protocol):
    """What the battery needs of the provider's token side (``KitOAuthServer`` has it all)."""

    refresh_calls: int  # requests to the token endpoint
    refused_calls: int  # API calls refused with a 401
    refuse_refresh: bool  # answer invalid_grant to every refresh
    refuse_access: bool  # refuse every access token, fresh ones too
    refresh_delay: float

    def grant(self, expires_in: float | None = None) -> OAuthTokens:
        """A new authorization: the tokens an operator would load."""
        ...

    def revoke_access(self) -> None:
        """Every access token issued so far is refused from now on (expired at the
        provider, whatever our clock says)."""
        ...

    def issued(self) -> list[str]:
        """Every token string handed out, to check none leaks."""
        ...

    def newest_access_token(self) -> str | None: ...

    def accepted_tokens(self) -> list[str]:
        """The access token of every API call accepted, in order."""
        ...

    def refresher(self, http: aiohttp.ClientSession) -> Refresher: ...


class KitOAuthServer:
    """A local OAuth 2.0 token endpoint (RFC 6749 §6) that rotates refresh tokens: a refresh
    invalidates the refresh token it used. Access tokens stay valid until revoked."""

    client_id = "kit-client"
    client_secret = "kit-client-secret-0123456789"

    def __init__(self, *, access_seconds: float = 6 * 3600.0) -> None:
        self.access_seconds = access_seconds
        self.refresh_calls = 0
        self.refused_calls = 0
        self.refused_refreshes = 0
        self.refuse_refresh = False
        self.refuse_access = False
        self.fail_refresh = 0  # answer the next N refreshes with a 503
        self.refresh_delay = 0.0
        self._live_access: set[str] = set()
        self._live_refresh: set[str] = set()
        self._issued: list[str] = []
        self._newest: str | None = None
        self._accepted: list[str] = []
        self._serial = 0
        self.server: TestServer | None = None

    @property
    def token_url(self) -> str:
        assert self.server is not None, "the kit's OAuth server is not started"
        return str(self.server.make_url("/oauth/token"))

    def _mint(self, kind: str) -> str:
        self._serial += 1
        token = f"{kind}-{self._serial}-{secrets.token_urlsafe(18)}"
        self._issued.append(token)
        return token

    scope = "offline_access read write"

    def _pair(self, expires_in: float) -> tuple[str, str]:
        access, refresh = self._mint("APP_USR"), self._mint("TG")
        self._live_access.add(access)
        self._live_refresh.add(refresh)
        self._newest = access
        return access, refresh

    def grant(self, expires_in: float | None = None) -> OAuthTokens:
        lifetime = self.access_seconds if expires_in is None else expires_in
        access, refresh = self._pair(lifetime)
        return OAuthTokens(access_token=access, refresh_token=refresh,
                           expires_at=time.time() + lifetime, scope=self.scope)

    def revoke_access(self) -> None:
        self._live_access.clear()

    def issued(self) -> list[str]:
        return list(self._issued)

    def newest_access_token(self) -> str | None:
        return self._newest

    def accepted_tokens(self) -> list[str]:
        return list(self._accepted)

    def refresh_token_live(self, refresh_token: str | None) -> bool:
        return refresh_token in self._live_refresh

    def authorized(self, header: str | None) -> bool:
        """For the provider's fake API: is this ``Authorization`` header a live token?"""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() == "bearer" and token in self._live_access and not self.refuse_access:
            self._accepted.append(token)
            return True
        self.refused_calls += 1
        return False

    def refresher(self, http: aiohttp.ClientSession) -> Refresher:
        return OAuth2Refresher(http, self.token_url, client_id=self.client_id,
                               client_secret=Secret(self.client_secret, "kit"), timeout=10.0)

    async def _token(self, request: web.Request) -> web.Response:
        self.refresh_calls += 1
        form = await request.post()
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        if form.get("client_id") != self.client_id or \
                form.get("client_secret") != self.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if self.fail_refresh:
            self.fail_refresh -= 1
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        used = form.get("refresh_token")
        if self.refuse_refresh or not isinstance(used, str) or used not in self._live_refresh:
            self.refused_refreshes += 1
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "refresh token not valid"},
                                     status=400)
        self._live_refresh.discard(used)  # rotation: the old refresh token is dead now
        access, refresh = self._pair(self.access_seconds)
        return web.json_response({"access_token": access, "refresh_token": refresh,
                                  "token_type": "bearer", "expires_in": self.access_seconds,
                                  "scope": self.scope})

    async def __aenter__(self) -> KitOAuthServer:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


# -- the battery -----------------------------------------------------------------------------


class _Kit(Protocol):
    async def _reply(self, harness: ConformanceHarness, gate: IngestGate, text: str, *,
                     last_inbound_at: float | None = None) -> OutboundReply: ...


class TokenBattery:
    """Mix into a ``ChannelConformance`` subclass of an OAuth channel (see the module doc)."""

    concurrent_sends: int = 6

    @pytest.fixture
    def kit_tokens(self) -> TokenStore:
        """Override to run the battery on the hub's token store (inboxhub's channels do)."""
        return MemoryTokenStore()

    @pytest.fixture
    def second_tokens(self, kit_tokens: TokenStore) -> TokenStore:
        """Another hub process's client of the same store (the memory one is shared as is)."""
        return kit_tokens

    @pytest.fixture
    async def kit_oauth(self) -> AsyncIterator[OAuthControl]:
        async with KitOAuthServer() as server:
            yield server

    async def _token_replies(self, harness: ConformanceHarness, gate: IngestGate,
                       n: int) -> list[OutboundReply]:
        base = await cast(_Kit, self)._reply(harness, gate, "token")
        return [msgspec.structs.replace(base, reply_id=f"tok-{time.time_ns()}-{i}",
                                        text=f"su pedido {i} sale hoy") for i in range(n)]

    async def _load(self, store: TokenStore, harness: ConformanceHarness,
                    tokens: OAuthTokens) -> None:
        state = await store.put(harness.adapter.instance, tokens)
        assert state.status in ("ok", "expiring"), state

    @staticmethod
    def _expiring(tokens: OAuthTokens) -> OAuthTokens:
        """The same tokens, one second from expiry by our clock: time has passed."""
        return msgspec.structs.replace(tokens, expires_at=time.time() + 1)

    async def test_tokens_expiring_mid_run_are_refreshed_before_use(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_tokens: TokenStore,
        kit_oauth: OAuthControl,
    ) -> None:
        first, second = await self._token_replies(harness, ingest_gate, 2)
        granted = kit_oauth.grant()
        await self._load(kit_tokens, harness, granted)
        await harness.adapter.send(first)
        assert kit_oauth.refresh_calls == 0, "a fresh token was refreshed"
        # Between the two sends the token runs out, at the provider and by our clock.
        await self._load(kit_tokens, harness, self._expiring(granted))
        kit_oauth.revoke_access()
        refused = kit_oauth.refused_calls
        await harness.adapter.send(second)
        assert kit_oauth.refresh_calls == 1
        assert kit_oauth.refused_calls == refused, "a request was spent on the expired token"
        assert [s.text for s in harness.sent()] == [first.text, second.text]
        instance = harness.adapter.instance
        stored = await kit_tokens.get(instance)
        assert stored is not None and stored.access_token == kit_oauth.newest_access_token()
        assert stored.refresh_token != granted.refresh_token, "the rotated token was not kept"
        state = await kit_tokens.state(instance)
        assert state.status == "ok" and state.last_refresh_at is not None

    async def test_a_refused_token_is_refreshed_and_the_call_retried_once(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_tokens: TokenStore,
        kit_oauth: OAuthControl,
    ) -> None:
        [reply] = await self._token_replies(harness, ingest_gate, 1)
        await self._load(kit_tokens, harness, kit_oauth.grant())
        kit_oauth.revoke_access()  # expired at the provider before our clock says so
        refused = kit_oauth.refused_calls
        assert await harness.adapter.send(reply)
        assert (kit_oauth.refresh_calls, kit_oauth.refused_calls - refused) == (1, 1)
        assert [s.text for s in harness.sent()] == [reply.text]
        assert kit_oauth.accepted_tokens()[-1] == kit_oauth.newest_access_token()

    async def test_a_token_refused_after_a_refresh_is_not_retried_in_a_loop(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_tokens: TokenStore,
        kit_oauth: OAuthControl,
    ) -> None:
        [reply] = await self._token_replies(harness, ingest_gate, 1)
        await self._load(kit_tokens, harness, kit_oauth.grant())
        kit_oauth.refuse_access = True
        refused = kit_oauth.refused_calls
        with pytest.raises(RetryableError) as info:
            await harness.adapter.send(reply)
        assert isinstance(info.value, TokenExpired), info.value
        assert kit_oauth.refresh_calls == 1, "refreshed more than once for one call"
        assert kit_oauth.refused_calls - refused == 2, "not exactly one retry"
        assert harness.sent() == []
        assert (await kit_tokens.state(harness.adapter.instance)).status == "ok"

    async def test_concurrent_sends_refresh_once_and_all_use_the_rotated_token(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_tokens: TokenStore,
        kit_oauth: OAuthControl,
    ) -> None:
        replies = await self._token_replies(harness, ingest_gate, self.concurrent_sends)
        await self._load(kit_tokens, harness, self._expiring(kit_oauth.grant()))
        kit_oauth.revoke_access()
        kit_oauth.refresh_delay = 0.05  # every sender finds the refresh under way
        await asyncio.gather(*(harness.adapter.send(r) for r in replies))
        assert kit_oauth.refresh_calls == 1, "the refresh ran more than once"
        assert sorted(s.text for s in harness.sent()) == sorted(r.text for r in replies)
        newest = kit_oauth.newest_access_token()
        assert kit_oauth.accepted_tokens()[-len(replies):] == [newest] * len(replies)

    async def test_concurrent_refreshes_from_two_processes_run_once(
        self, harness: ConformanceHarness, kit_tokens: TokenStore, second_tokens: TokenStore,
        kit_oauth: OAuthControl,
    ) -> None:
        instance = harness.adapter.instance
        granted = kit_oauth.grant()
        await self._load(kit_tokens, harness, granted)
        refresher = kit_oauth.refresher(harness.adapter.context.http)
        kit_oauth.refresh_delay = 0.05
        stores = [kit_tokens, second_tokens] * 4
        got = await asyncio.gather(*(s.refresh(instance, refresher, stale=granted)
                                     for s in stores))
        assert kit_oauth.refresh_calls == 1
        assert {t.access_token for t in got} == {kit_oauth.newest_access_token()}
        assert len({t.refresh_token for t in got}) == 1
        for store in (kit_tokens, second_tokens):
            assert await store.get(instance) == got[0]
        # What was stored is the live rotated pair: it refreshes again.
        stored = got[0]
        kit_oauth.revoke_access()
        again = await kit_tokens.refresh(instance, refresher, stale=stored)
        assert again.access_token == kit_oauth.newest_access_token() != stored.access_token
        assert kit_oauth.refresh_calls == 2

    async def test_a_refused_refresh_needs_reauthorization(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_tokens: TokenStore,
        kit_oauth: OAuthControl,
    ) -> None:
        first, second = await self._token_replies(harness, ingest_gate, 2)
        instance = harness.adapter.instance
        granted = self._expiring(kit_oauth.grant())
        await self._load(kit_tokens, harness, granted)
        kit_oauth.refuse_refresh = True  # the seller revoked the app
        with pytest.raises(AuthError):
            await harness.adapter.send(first)
        state = await kit_tokens.state(instance)
        assert state.status == "needs_reauth", state
        assert state.last_error and "invalid_grant" in state.last_error
        assert await kit_tokens.get(instance) == granted, "the old refresh token was lost"
        calls = kit_oauth.refresh_calls
        with pytest.raises(AuthError):
            await harness.adapter.send(first)
        assert kit_oauth.refresh_calls == calls, "a refused grant was tried again"
        assert harness.sent() == []
        # An operator authorizes again: the channel works at once.
        kit_oauth.refuse_refresh = False
        await self._load(kit_tokens, harness, kit_oauth.grant())
        assert (await kit_tokens.state(instance)).status == "ok"
        assert await harness.adapter.send(second)
        assert [s.text for s in harness.sent()] == [second.text]

    async def test_no_tokens_or_dead_ones_are_an_auth_error(
        self, harness: ConformanceHarness, kit_tokens: TokenStore, kit_oauth: OAuthControl,
    ) -> None:
        refresher = kit_oauth.refresher(harness.adapter.context.http)
        calls: list[str] = []

        async def call(token: str) -> str:
            calls.append(token)
            return "sent"

        missing = f"{harness.adapter.instance}-never-authorized"
        assert (await kit_tokens.state(missing)).status == "missing"
        with pytest.raises(AuthError):
            await with_token(kit_tokens, missing, refresher, call)
        # Expired and nothing to renew it with: a human is needed, before any request.
        dead = f"{harness.adapter.instance}-expired"
        await kit_tokens.put(dead, OAuthTokens(access_token="x" * 20, refresh_token=None,
                                               expires_at=time.time() - 60))
        assert (await kit_tokens.state(dead)).status == "needs_reauth"
        with pytest.raises(AuthError):
            await with_token(kit_tokens, dead, refresher, call)
        assert calls == [] and kit_oauth.refresh_calls == 0

    async def test_tokens_never_appear_in_logs_reprs_errors_or_state(
        self, harness: ConformanceHarness, ingest_gate: IngestGate, kit_tokens: TokenStore,
        kit_oauth: OAuthControl, caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        instance = harness.adapter.instance
        first, second = await self._token_replies(harness, ingest_gate, 2)
        granted = kit_oauth.grant()
        await self._load(kit_tokens, harness, self._expiring(granted))
        await harness.adapter.send(first)  # refreshed on the way
        kit_oauth.refuse_refresh = True
        kit_oauth.revoke_access()
        errors: list[BaseException] = []
        try:
            await harness.adapter.send(second)
        except AuthError as exc:
            errors.append(exc)
        assert errors, "a refused refresh did not fail the send"
        stored = await kit_tokens.get(instance)
        state = await kit_tokens.state(instance)
        seen = "\n".join([
            caplog.text, repr(granted), str(granted), repr(stored), repr(state),
            msgspec.json.encode(state).decode(), repr(kit_tokens),
            *(f"{type(e).__name__}: {e!s} {e!r}" for e in errors),
        ])
        leaked = [t for t in kit_oauth.issued() if t in seen]
        assert not leaked, f"{len(leaked)} token(s) appeared in logs, reprs, errors or state"
