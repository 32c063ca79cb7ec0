"""An OAuth channel runs the conformance kit's token-refresh battery on the kit's in-memory
token store (what a plugin author runs, no Redis), plus the pieces under it: ``with_token``
and the RFC 6749 refresher against the kit's OAuth server.

``OAuthChannelKit`` is shared with ``test_tokens_redis.py``, which runs the same battery on the
hub's Redis token store."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from channels.base import AdapterContext
from channels.errors import AuthError, RetryableError, TokenExpired
from channels.secrets import Secret
from channels.services.tokens import OAuthTokens, TokenStore
from channels.testing import (
    HTTP_FAILURES,
    ChannelConformance,
    FailureKind,
    InboundCase,
    IngestGate,
    KitStore,
    MemoryKitStore,
    SentRecord,
)
from channels.testing.tokens import KitOAuthServer, MemoryTokenStore, OAuthControl, TokenBattery
from channels.testing.webhooks import mount
from channels.tokens import OAuth2Refresher, call_refresher, with_token
from tests.conftest import TEST_SECRET
from tests.helpers import sign
from tests.plugins.oauth_api import OAuthApiChannel, OAuthApiSettings

# 401 is what the battery's "token refused" means; a permission the token cannot fix is 403.
# A 401 is the expired-token signal here (refresh and retry), so "auth" is a 403.
FAILURES = {**HTTP_FAILURES, "auth": (403, {})}


class OAuthHarness:
    """The adapter's webhooks mounted as the hub mounts them, and the provider's send API,
    which takes a call only with a live bearer token from the kit's OAuth server."""

    def __init__(self, adapter: OAuthApiChannel, webhook: TestServer,
                 session: aiohttp.ClientSession) -> None:
        self.adapter = adapter
        self.webhook = webhook
        self.session = session
        self.records: list[SentRecord] = []
        self.failures: list[tuple[int, dict[str, str]]] = []

    async def deliver(self, case: InboundCase) -> bool:
        body = json.dumps(case.payload).encode()
        url = self.webhook.make_url(f"/webhooks/{self.adapter.type_name}/"
                                    f"{self.adapter.instance}")
        async with self.session.post(url, data=body, headers={
                "X-Inboxhub-Signature": sign(body), "Content-Type": "application/json"}) as r:
            return r.status == 200

    def sent(self) -> list[SentRecord]:
        return list(self.records)

    def fail_next_send(self, kind: FailureKind) -> None:
        self.failures.append(FAILURES[kind])


class OAuthChannelKit(ChannelConformance, TokenBattery):
    """The core battery and the token battery on the ``oauth-api`` test channel."""

    @pytest.fixture
    def kit_store(self) -> KitStore:
        return MemoryKitStore()

    def inbound_cases(self) -> list[InboundCase]:
        return [InboundCase(
            name="spanish buyer",
            payload={"id": "ml-1", "sender": "buyer-9", "name": "Ana Pérez",
                     "text": "Hola, ¿ya enviaron mi pedido?"},
            provider_message_id="ml-1", thread_id="buyer-9", sender_handle="buyer-9",
            text="Hola, ¿ya enviaron mi pedido?", sender_name="Ana Pérez")]

    @pytest.fixture
    async def harness(self, ingest_gate: IngestGate, kit_tokens: TokenStore,
                      kit_oauth: OAuthControl) -> AsyncIterator[OAuthHarness]:
        assert isinstance(kit_oauth, KitOAuthServer)
        holder: dict[str, OAuthHarness] = {}

        async def send(request: web.Request) -> web.Response:
            h = holder["h"]
            if not kit_oauth.authorized(request.headers.get("Authorization")):
                return web.json_response({"error": "invalid_token"}, status=401)
            if h.failures:
                status, headers = h.failures.pop(0)
                return web.json_response({"error": "injected"}, status=status, headers=headers)
            data = await request.json()
            h.records.append(SentRecord(recipient=data["recipient"], text=data["text"],
                                        thread_id=data["thread"]))
            return web.json_response({"id": f"ml-msg-{len(h.records)}"})

        provider_app = web.Application()
        provider_app.router.add_post("/messages", send)
        provider = TestServer(provider_app, host="127.0.0.1")
        await provider.start_server()
        session = aiohttp.ClientSession()
        settings = OAuthApiSettings(
            secret=Secret(TEST_SECRET, "test"), outbound_url=str(provider.make_url("/messages")),
            max_text_length=350, timeout_seconds=5, token_url=kit_oauth.token_url,
            client_id=kit_oauth.client_id,
            client_secret=Secret(kit_oauth.client_secret, "test"))

        def spawn(coro: Any, name: str) -> Any:
            raise AssertionError("the channel has no background tasks")

        async def quarantine(*args: Any, **kwargs: Any) -> str:
            return "q-1"

        adapter = OAuthApiChannel("meli", settings, AdapterContext(
            http=session, quarantine=quarantine, spawn=spawn, tokens=kit_tokens))
        await kit_tokens.put("meli", kit_oauth.grant())  # the operator authorized the app
        await adapter.start(ingest_gate)
        webhook_app = web.Application()
        mount(webhook_app, adapter)
        webhook = TestServer(webhook_app)
        await webhook.start_server()
        harness = OAuthHarness(adapter, webhook, session)
        holder["h"] = harness
        try:
            yield harness
        finally:
            await adapter.stop()
            await session.close()
            await webhook.close()
            await provider.close()


class TestOAuthChannelOnTheKitsMemoryStore(OAuthChannelKit):
    """What a plugin author runs: no Redis at all."""


# -- the pieces under the battery ---------------------------------------------------------------


@pytest.fixture
async def oauth() -> AsyncIterator[KitOAuthServer]:
    async with KitOAuthServer() as server:
        yield server


async def test_the_refresher_speaks_the_refresh_grant_and_rotates(
        oauth: KitOAuthServer) -> None:
    async with aiohttp.ClientSession() as http:
        refresher = oauth.refresher(http)
        granted = oauth.grant()
        new = await refresher(granted)
        assert new.access_token == oauth.newest_access_token() != granted.access_token
        assert new.refresh_token and new.refresh_token != granted.refresh_token
        assert new.expires_at is not None and new.scope == "offline_access read write"
        # The kit's server rotates like Mercado Libre: the old refresh token is dead now, so
        # a second refresh with it (what a broken single-flight does) loses the account.
        with pytest.raises(AuthError) as info:
            await refresher(granted)
        assert "invalid_grant" in str(info.value)
        assert granted.refresh_token not in str(info.value)


async def test_the_refresher_tells_a_refusal_from_a_passing_failure(
        oauth: KitOAuthServer) -> None:
    async with aiohttp.ClientSession() as http:
        granted = oauth.grant()
        oauth.fail_refresh = 1
        with pytest.raises(RetryableError):
            await oauth.refresher(http)(granted)
        wrong = OAuth2Refresher(http, oauth.token_url, client_id=oauth.client_id,
                                client_secret=Secret("not-the-secret", "test"))
        with pytest.raises(AuthError) as info:
            await wrong(granted)
        assert "invalid_client" in str(info.value)
        unreachable = OAuth2Refresher(http, "http://127.0.0.1:9/oauth/token",
                                      client_id="x", timeout=2)
        with pytest.raises(RetryableError):
            await unreachable(granted)
        with pytest.raises(AuthError):
            await oauth.refresher(http)(OAuthTokens(access_token="a" * 10))


@pytest.mark.parametrize("answer", [b"<html>gateway</html>", b'{"access_token": ""}',
                                    b'{"access_token": "' + b"a" * 70_000 + b'"}'])
async def test_a_200_without_usable_tokens_is_retryable_and_said_loudly(
        answer: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """The provider may have spent the old refresh token all the same: an operator hears of
    it at ERROR, before the next refresh is refused."""
    async def endpoint(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/token", endpoint)
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            refresher = OAuth2Refresher(http, str(server.make_url("/token")), client_id="c")
            with pytest.raises(RetryableError):
                await call_refresher(refresher, OAuthTokens("old-access", "old-refresh"), 5)
    finally:
        await server.close()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "re-authorization" in record.getMessage()
    assert "old-refresh" not in caplog.text


async def test_with_token_treats_a_plain_401_as_a_refused_token(oauth: KitOAuthServer) -> None:
    """An adapter may let aiohttp's 401 through (``raise_for_status``) instead of raising
    ``TokenExpired``: the same refresh and one retry."""
    store = MemoryTokenStore()
    await store.put("shop", oauth.grant())
    oauth.revoke_access()
    calls: list[str] = []

    async def call(token: str) -> str:
        calls.append(token)
        if not oauth.authorized(f"Bearer {token}"):
            url = URL("http://provider.invalid/messages")
            raise aiohttp.ClientResponseError(
                aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url), (),
                status=401)
        return "ok"

    async with aiohttp.ClientSession() as http:
        assert await with_token(store, "shop", oauth.refresher(http), call) == "ok"
        assert len(calls) == 2 and calls[1] == oauth.newest_access_token()

        async def forbidden(token: str) -> str:
            raise PermissionError("HTTP 403")

        # Any other failure is the adapter's to map: no refresh for it.
        with pytest.raises(PermissionError):
            await with_token(store, "shop", oauth.refresher(http), forbidden)
        assert oauth.refresh_calls == 1

        async def expired(token: str) -> str:
            raise TokenExpired("HTTP 401")

        with pytest.raises(TokenExpired):
            await with_token(store, "shop", oauth.refresher(http), expired)
        assert oauth.refresh_calls == 2  # one refresh, one retry, then the error


async def test_a_hanging_refresher_is_bounded_and_its_waiters_do_not_try_again() -> None:
    store = MemoryTokenStore(refresh_timeout_seconds=0.2)
    tokens = OAuthTokens(access_token="a" * 16, refresh_token="r" * 16, expires_at=1.0)
    await store.put("shop", tokens)
    started: list[int] = []

    async def hangs(t: OAuthTokens) -> OAuthTokens:
        started.append(1)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    results = await asyncio.gather(*(store.refresh("shop", hangs, stale=tokens)
                                     for _ in range(3)), return_exceptions=True)
    assert len(started) == 1
    assert all(isinstance(r, RetryableError) for r in results), results
    state = await store.state("shop")
    assert state.status == "expiring" and state.last_error and "timed out" in state.last_error
    assert await store.get("shop") == tokens  # nothing lost

    async def works(t: OAuthTokens) -> OAuthTokens:
        return OAuthTokens(access_token="b" * 16)  # eBay-like: no new refresh token

    fresh = await store.refresh("shop", works, stale=tokens)
    assert fresh.refresh_token == tokens.refresh_token, "a non-rotating answer kept the old one"
    assert (await store.state("shop")).last_error is None
